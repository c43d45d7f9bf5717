import ArgumentParser
import Foundation
import Interp

struct CacheCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Cache a model's activations at chosen hooks into an HDF5 store (readable by h5py).",
        discussion: """
        With --tokens, each JSON list is one sequence, stored as given. With --text-file, each line is a document; \\
        documents are tokenized, joined with BOS between them and cut into windows of --context-length tokens, \\
        each starting with BOS, as SAELens does (a last incomplete window is dropped).

        The store has one float32 dataset per hook, named by its TransformerLens name, [n_tokens, d] (per-head \\
        hooks [n_tokens, n_heads, d_head]), plus int32 tokens, sequence and position for every row. Interrupted runs \\
        (Ctrl-C, kill, a crash) continue with --resume and give the same store as an uninterrupted run.

        Examples:
          interp cache --model fixtures/models/gpt2-tl --tokens fixtures/reference/gpt2.tokens.json \\
              --hooks 'blocks.*.hook_resid_post' --out acts.h5
          interp cache --model fixtures/models/text-tiny --text-file corpus.txt --context-length 32 \\
              --hooks blocks.0.hook_mlp_out --exclude-bos --out mlp.h5
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: ArgumentHelp("JSON list of lists of token ids; one sequence each.", valueName: "file")) var tokens: String?
    @Option(name: .long, help: ArgumentHelp("Text, one document per line (needs the model's tokenizer).", valueName: "file")) var textFile: String?
    @Option(name: .long, help: ArgumentHelp("Hooks to cache: comma-separated names or glob patterns.", valueName: "patterns")) var hooks: String
    @Option(name: .long, help: ArgumentHelp("The HDF5 store to write.", valueName: "file")) var out: String
    @Option(name: .long, help: "Tokens per window for --text-file.") var contextLength = 128
    @Option(name: .long, help: "Sequences per forward pass.") var batchSize = 16
    @Option(name: .long, help: ArgumentHelp("Stop after this many tokens.", valueName: "n")) var maxTokens: Int?
    @Flag(name: .long, help: "Leave out the rows of BOS tokens (their activations are outliers).") var excludeBos = false
    @Option(name: .long, help: "Compress the datasets; gzip (with byte shuffle) gains little on float activations and costs much write speed.") var compression = Compression.none
    @Flag(name: .long, help: "Continue an interrupted run of the same command.") var resume = false
    @Flag(name: .long, help: "Replace an existing store (or abandon an interrupted run).") var overwrite = false

    enum Compression: String, CaseIterable, ExpressibleByArgument { case none, gzip }

    func validate() throws {
        if (tokens == nil) == (textFile == nil) { throw ValidationError("give the input one way: --tokens or --text-file") }
        if resume && overwrite { throw ValidationError("--resume and --overwrite exclude each other") }
        if batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws {
        let input: CacheInput = tokens.map { .tokens(path: $0) } ?? .textFile(path: textFile!, contextLength: contextLength)
        let job = try ActivationCacheJob.prepare(
            modelDirectory: modelOptions.model, input: input, hookPatterns: hooks.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) },
            output: out, batchSize: batchSize, maxTokens: maxTokens, excludeBOS: excludeBos, gzipLevel: compression == .gzip ? 4 : nil)
        let meter = ProgressLine()
        let summary = try job.run(mode: resume ? .resume : overwrite ? .overwrite : .create) { meter.update($0) }
        meter.finish()
        let resumed = summary.resumedFrom > 0 ? " (resumed at \(summary.resumedFrom))" : ""
        print("wrote \(summary.path): \(summary.tokens) tokens from \(summary.sequences) sequences\(resumed), hooks \(summary.hooks.joined(separator: ", "))")
    }
}

/// A progress line on stderr, redrawn at most a few times a second.
final class ProgressLine {
    private var last = Date.distantPast
    private var shown = false

    func update(_ p: CacheProgress) {
        guard Date().timeIntervalSince(last) > 0.25 || p.tokensDone == p.tokensTotal else { return }
        last = Date()
        let eta = p.secondsLeft.map { String(format: "%d:%02d", Int($0) / 60, Int($0) % 60) } ?? "-"
        let line = "\rcached \(p.tokensDone) / \(p.tokensTotal) tokens · \(Int(p.tokensPerSecond)) tokens/s · ETA \(eta)   "
        FileHandle.standardError.write(Data(line.utf8))
        shown = true
    }

    func finish() {
        if shown { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
