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

    @Option(name: .long, help: ArgumentHelp("Model directory.", valueName: "dir")) var model: String
    @Option(name: .long, help: ArgumentHelp("Clean prompts: JSON list of equal-length token-id lists.", valueName: "file")) var clean: String?
    @Option(name: .long, help: ArgumentHelp("Corrupted prompts, same shape.", valueName: "file")) var corrupted: String?
    @Option(name: .long, help: ArgumentHelp("A clean text prompt (repeatable; needs the model's tokenizer).", valueName: "text")) var cleanText: [String] = []
    @Option(name: .long, help: ArgumentHelp("A corrupted text prompt (repeatable).", valueName: "text")) var corruptedText: [String] = []
    @Option(name: .long, help: ArgumentHelp("Answer token per prompt, or one for all: an id, or a string that is one token.", valueName: "token")) var answer: [String] = []
    @Option(name: .long, help: ArgumentHelp("Wrong token per prompt, or one for all (logit-diff).", valueName: "token")) var wrong: [String] = []
    @Option(name: .long, help: "What to patch (see above).") var site: String
    @Option(name: .long, help: ArgumentHelp("Index space (see above).", valueName: "axes")) var by: String?
    @Option(name: .long, help: "logit-diff, logprob, prob or kl.") var metric = "logit-diff"
    @Option(name: .long, help: "denoise (clean into corrupted) or noise (corrupted into clean).") var direction = "denoise"
    @Flag(name: .long, help: "Report (m − m_corrupted) / (m_clean − m_corrupted).") var normalize = false
    @Option(name: .long, help: ArgumentHelp("Where to write the result (JSON).", valueName: "file")) var out: String
    @Option(name: .long, help: ArgumentHelp("Also draw the table as an SVG heatmap.", valueName: "file")) var svg: String?

    func validate() throws {
        if (clean == nil) == cleanText.isEmpty { throw ValidationError("give the clean prompts one way: --clean or --clean-text") }
        if (corrupted == nil) == corruptedText.isEmpty { throw ValidationError("give the corrupted prompts one way: --corrupted or --corrupted-text") }
        if PatchSite(rawValue: site) == nil { throw ValidationError("unknown site '\(site)' (\(PatchSite.allCases.map(\.rawValue).joined(separator: ", ")))") }
        if let by, PatchIndexing(rawValue: by) == nil { throw ValidationError("unknown index space '\(by)' (\(PatchIndexing.allCases.map(\.rawValue).joined(separator: ", ")))") }
        if !["logit-diff", "logprob", "prob", "kl"].contains(metric) { throw ValidationError("--metric is logit-diff, logprob, prob or kl") }
        if PatchDirection(rawValue: direction) == nil { throw ValidationError("--direction is denoise or noise") }
        if metric != "kl" && answer.isEmpty { throw ValidationError("--metric \(metric) needs --answer") }
        if metric == "logit-diff" && wrong.isEmpty { throw ValidationError("--metric logit-diff needs --wrong") }
    }

    func run() throws {
        let transformer = try ModelLoader.load(directory: model)
        let tokenizer = try BPETokenizer.load(modelDirectory: model)
        func prompts(_ file: String?, _ texts: [String]) throws -> TokenBatch {
            if let file { return try TokenFile.batch(file, config: transformer.config) }
            guard let tokenizer else { throw InterpError("the model has no tokenizer.json, so give token ids (--clean, --corrupted)", file: model) }
            return try TokenBatch(texts: texts, tokenizer: tokenizer, prependBOS: true, config: transformer.config)
        }
        let cleanBatch = try prompts(clean, cleanText), corruptedBatch = try prompts(corrupted, corruptedText)
        func tokens(_ values: [String], _ option: String) throws -> [Int] {
            let ids = try values.map { value -> Int in
                let id: Int
                if let n = Int(value) { id = n } else {
                    guard let tokenizer, case let only = tokenizer.encode(value), only.count == 1 else {
                        throw InterpError("\(option) '\(value)' is not a token id\(tokenizer == nil ? "" : " or a string of one token")")
                    }
                    id = Int(only[0])
                }
                guard id >= 0 && id < transformer.config.dVocab else {
                    throw InterpError("\(option) \(id) is outside the vocabulary (0..<\(transformer.config.dVocab))")
                }
                return id
            }
            guard ids.count == 1 || ids.count == cleanBatch.batch else {
                throw InterpError("\(option) gives \(ids.count) tokens for \(cleanBatch.batch) prompts (give one, or one per prompt)")
            }
            return ids.count == 1 ? Array(repeating: ids[0], count: cleanBatch.batch) : ids
        }
        let answers = answer.isEmpty ? [] : try tokens(answer, "--answer"), wrongs = wrong.isEmpty ? [] : try tokens(wrong, "--wrong")
        let cleanLogits = try transformer.run(cleanBatch), corruptedLogits = try transformer.run(corruptedBatch)
        var measure: PatchingMetric
        switch metric {
        case "logit-diff": measure = PatchingMetric.logitDifference(answers: answers, wrongs: wrongs)
        case "logprob": measure = PatchingMetric.logProbability(answers: answers)
        case "prob": measure = PatchingMetric.probability(answers: answers)
        default: measure = PatchingMetric.kl(cleanLogits: cleanLogits)
        }
        let cleanMetric = try measure(cleanLogits), corruptedMetric = try measure(corruptedLogits)
        if normalize {
            guard cleanMetric != corruptedMetric else { throw InterpError("the clean and corrupted metrics are equal (\(cleanMetric)); nothing to normalise by") }
            measure = PatchingMetric.normalized(measure, clean: cleanMetric, corrupted: corruptedMetric)
        }
        let patchSite = PatchSite(rawValue: site)!
        let indexing = by.flatMap(PatchIndexing.init(rawValue:)) ?? patchSite.indexings[0]
        let start = Date()
        let table = try ActivationPatching.table(model: transformer, clean: cleanBatch, corrupted: corruptedBatch, site: patchSite,
                                                 indexing: indexing, direction: PatchDirection(rawValue: direction)!, metric: measure) { done, total in
            FileHandle.standardError.write(Data(String(format: "\rpatched %d/%d cells (%.1f s)", done, total, Date().timeIntervalSince(start)).utf8))
            if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
        }
        // Labels: positions with the clean tokens (strings when the model has a tokenizer).
        let firstPrompt = cleanBatch.rows[0]
        let positionLabels = firstPrompt.enumerated().map { position, id in
            "\(position): " + ((tokenizer.flatMap { try? $0.decode([Int32(id)]) }).map { "\"\($0)\"" } ?? String(id))
        }
        let labels = PatchingResult.labels(axes: indexing.axes, config: transformer.config, positions: positionLabels)
        let result = PatchingResult(site: patchSite.rawValue, axes: indexing.axes, shape: table.shape, values: table.values,
                                    cleanMetric: cleanMetric, corruptedMetric: corruptedMetric, metric: metric, normalized: normalize,
                                    direction: direction, labels: labels)
        try AtomicFile.write(try result.json(), to: out)
        if let svg {
            try AtomicFile.write(Data(result.heatmap(title: "\(direction) patching of \(patchSite.rawValue) (\(metric)\(normalize ? ", normalised" : ""))").svg().utf8), to: svg)
        }
        print(String(format: "wrote %@: %@ by %@, %d cells; %@ clean %.4f, corrupted %.4f", out, patchSite.rawValue, indexing.rawValue,
                     table.values.count, metric, cleanMetric, corruptedMetric))
    }
}
