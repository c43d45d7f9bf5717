import ArgumentParser
import Foundation
import Interp

struct PatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "patch",
        abstract: "Activation patching: how much of the clean behaviour one activation brings back into the corrupted run.",
        discussion: """
        For every cell of an index space (e.g. layer × position) the corrupted prompts are run with that slice of \
        one activation taken from the clean run (--direction denoise, TransformerLens's patching), or the clean \
        prompts with it taken from the corrupted run (noise), and the metric of the output is recorded. The numbers \
        are TransformerLens's `get_act_patch_*` (checked within 1e-4).

        Sites and index spaces (--by, first = default):
          resid_pre, resid_mid, resid_post, attn_out, mlp_out   layer,pos
          head_out (z), q, k, v                                 layer,pos,head | layer,head
          pattern                                               layer,head,dest | layer,head,dest,src | layer,head
        Metrics at the last position, averaged over prompts: logit-diff (answer − wrong), logprob and prob of the \
        answer, kl (KL(clean ‖ patched)). --normalize reports (m − m_corrupted) / (m_clean − m_corrupted): 1 = fully \
        restored.

        Example:
          interp patch --model fixtures/models/induction-2l --clean clean.json --corrupted corrupted.json \\
              --answer 41 --wrong 42 --site resid_pre --normalize --out patch.json --svg patch.svg
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: ArgumentHelp("Clean prompts: JSON list of equal-length token-id lists.", valueName: "file")) var clean: String?
    @Option(name: .long, help: ArgumentHelp("Corrupted prompts, same shape.", valueName: "file")) var corrupted: String?
    @Option(name: .long, help: ArgumentHelp("A clean text prompt (repeatable; needs the model's tokenizer).", valueName: "text")) var cleanText: [String] = []
    @Option(name: .long, help: ArgumentHelp("A corrupted text prompt (repeatable).", valueName: "text")) var corruptedText: [String] = []
    @Option(name: .long, help: ArgumentHelp("Answer token per prompt, or one for all: an id, or a string that is one token.", valueName: "token")) var answer: [String] = []
    @Option(name: .long, help: ArgumentHelp("Wrong token per prompt, or one for all (logit-diff).", valueName: "token")) var wrong: [String] = []
    @Option(name: .long, help: "What to patch (see above).", completion: .list(PatchSite.allValueStrings), transform: PatchSite.parser(naming: "site"))
    var site: PatchSite
    @Option(name: .long, help: ArgumentHelp("Index space (see above).", valueName: "axes")) var by: PatchIndexing?
    @Option(name: .long, help: "The metric (see above).") var metric = PatchMetricKind.logitDifference
    @Option(name: .long, help: "denoise: clean into corrupted; noise: corrupted into clean.") var direction = PatchDirection.denoise
    @Flag(name: .long, help: "Report (m − m_corrupted) / (m_clean − m_corrupted).") var normalize = false
    @Option(name: .long, help: ArgumentHelp("Where to write the result (JSON).", valueName: "file")) var out: String
    @Option(name: .long, help: ArgumentHelp("Also draw the table as an SVG heatmap.", valueName: "file")) var svg: String?

    func validate() throws {
        if (clean == nil) == cleanText.isEmpty { throw ValidationError("give the clean prompts one way: --clean or --clean-text") }
        if (corrupted == nil) == corruptedText.isEmpty { throw ValidationError("give the corrupted prompts one way: --corrupted or --corrupted-text") }
        if metric.readsAnswers && answer.isEmpty { throw ValidationError("--metric \(metric.rawValue) needs --answer") }
        if metric.readsWrongs && wrong.isEmpty { throw ValidationError("--metric \(metric.rawValue) needs --wrong") }
    }

    func run() throws {
        let transformer = try modelOptions.load()
        let tokenizer = try BPETokenizer.load(modelDirectory: modelOptions.model)
        func prompts(_ file: String?, _ texts: [String]) throws -> TokenBatch {
            if let file { return try TokenFile.batch(file, config: transformer.config) }
            guard let tokenizer else { throw InterpError("the model has no tokenizer.json, so give token ids (--clean, --corrupted)", file: modelOptions.model) }
            return try TokenBatch(texts: texts, tokenizer: tokenizer, prependBOS: true, config: transformer.config)
        }
        let cleanBatch = try prompts(clean, cleanText), corruptedBatch = try prompts(corrupted, corruptedText)
        func tokens(_ values: [String], _ option: String) throws -> [Int] {
            try PatchRequest.tokenIDs(values, option: option, tokenizer: tokenizer, config: transformer.config, prompts: cleanBatch.batch)
        }
        let request = PatchRequest(model: transformer, clean: cleanBatch, corrupted: corruptedBatch, answers: try tokens(answer, "--answer"),
                                   wrongs: try tokens(wrong, "--wrong"), site: site, indexing: by, metric: metric, direction: direction,
                                   normalize: normalize, tokenizer: tokenizer)
        let start = Date()
        let result = try request.run { done, total in
            FileHandle.standardError.write(Data(String(format: "\rpatched %d/%d cells (%.1f s)", done, total, Date().timeIntervalSince(start)).utf8))
            if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
        }
        try AtomicFile.write(try result.json(), to: out)
        if let svg {
            let title = "\(direction.rawValue) patching of \(site.rawValue) (\(metric.rawValue)\(normalize ? ", normalised" : ""))"
            try AtomicFile.write(Data(result.heatmap(title: title).svg().utf8), to: svg)
        }
        print(String(format: "wrote %@: %@ by %@, %d cells; %@ clean %.4f, corrupted %.4f", out, site.rawValue, request.indexing.rawValue,
                     result.values.count, metric.rawValue, result.cleanMetric, result.corruptedMetric))
    }
}
