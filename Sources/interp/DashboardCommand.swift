import ArgumentParser
import Foundation
import Interp

struct SAEDashboardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Feature dashboards: static HTML pages showing what each SAE latent fires on and what it does.",
        discussion: """
        The model (--model) is the one the SAE was trained on, with its tokenizer.json. The text is tokenized and cut \
        into windows as `interp cache --text-file` does; the model runs up to the SAE's hook (cfg.json's \
        metadata.hook_name) and the SAE encodes every token there (BOS tokens left out). For each latent that fires, a \
        page shows its density, a histogram of its activations, the tokens whose logits its decoder direction raises \
        and lowers most (W_dec · W_U, for SAEs on the residual stream, attention or MLP output), and the contexts \
        where it fires most strongly, every token shaded by its activation. DIR/index.html lists all latents by \
        density. No scripts: the pages open from disk in any browser.

        Example:
          interp sae dashboard --sae sae-topk --model fixtures/models/text-tiny \\
              --text-file fixtures/english/slice.txt --context-length 32 --out dashboard
        """)

    @Option(name: .long, help: ArgumentHelp("SAE directory (cfg.json + sae_weights.safetensors).", valueName: "dir")) var sae: String
    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: ArgumentHelp("Text, one document per line.", valueName: "file")) var textFile: String
    @Option(name: .long, help: ArgumentHelp("Output directory.", valueName: "dir")) var out: String
    @Option(name: .long, help: ArgumentHelp("Tokens per window (default: the SAE's context_size, else 128 or the model's context).", valueName: "n")) var contextLength: Int?
    @Option(name: .long, help: ArgumentHelp("Read at most this many tokens of the text.", valueName: "n")) var maxTokens: Int?
    @Option(name: .long, help: ArgumentHelp("Pages only for these latents, comma-separated (default: every latent that fires).", valueName: "i,j")) var latents: String?
    @Option(name: .long, help: "Strongest contexts per latent.") var examples = 12
    @Option(name: .long, help: "Sequences per forward pass.") var batchSize = 16

    func validate() throws {
        if let latents, latents.split(separator: ",").contains(where: { Int($0) == nil }) {
            throw ValidationError("--latents is a comma-separated list of latent indices")
        }
        if examples < 1 { throw ValidationError("--examples must be at least 1") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws {
        let start = Date()
        let autoencoder = try SparseAutoencoder.load(directory: sae)
        guard let hookName = autoencoder.config.metadata?.hookName else {
            throw InterpError("cfg.json names no metadata.hook_name, so the SAE's place in the model is unknown", file: sae + "/cfg.json")
        }
        let transformer = try modelOptions.load()
        guard let tokenizer = try BPETokenizer.load(modelDirectory: modelOptions.model) else {
            throw InterpError("the model has no tokenizer.json, which dashboards need to read the text and show tokens", file: modelOptions.model)
        }
        let length = contextLength ?? autoencoder.config.metadata?.contextSize ?? min(128, transformer.config.nCtx)
        guard length <= transformer.config.nCtx else {
            throw InterpError("the context length \(length) is more than the model's context of \(transformer.config.nCtx)")
        }
        let chosen = latents.map { $0.split(separator: ",").map { Int($0)! } }
        if let bad = chosen?.first(where: { $0 < 0 || $0 >= autoencoder.config.dSAE }) {
            throw InterpError("--latents \(bad) is outside the SAE's \(autoencoder.config.dSAE) latents")
        }
        let sequences = try FeatureDashboard.windows(textFile: textFile, tokenizer: tokenizer, contextLength: length, maxTokens: maxTokens)
        var settings = FeatureDashboard.Settings()
        settings.examples = examples
        settings.batchSize = batchSize
        let dashboard = try FeatureDashboard.gather(sae: autoencoder, model: transformer, sequences: sequences,
                                                    hook: try HookName(parsing: hookName), settings: settings) { done, total in
            FileHandle.standardError.write(Data(String(format: "\rscanned %d/%d batches (%.1f s)", done, total, Date().timeIntervalSince(start)).utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        let html = DashboardHTML(dashboard: dashboard, subtitle: "SAE \(sae) on \(transformer.config.modelName), text \(textFile)",
                                 tokenText: { (try? tokenizer.decode([$0])) ?? "#\($0)" })
        let pages = try html.write(to: out, latents: chosen)
        let alive = dashboard.features.filter { !$0.isDead }.count
        print("wrote \(out)/index.html and \(pages - 1) latent pages: \(alive) of \(dashboard.features.count) latents fire on \(dashboard.tokens) tokens")
    }
}
