import Foundation
import InterpCore
import Tokenization
import InterpModels
import ActivationStore
import SparseAutoencoders
import Plots
import Superposition
import ActivationPatching
import Circuits
import Dashboards

/// The whole toolkit on one small language model, as a researcher would run it: cache the residual stream of a middle
/// layer, train a TopK SAE on it, evaluate it, count its features, patch activations on an induction prompt, find
/// the induction circuit with ACDC, build feature dashboards, and write an HTML report linking all of it.
/// `interp demo` is this function with the bundled model and text.
public enum Demo {
    public struct Settings: Sendable {
        public var modelDirectory: String
        /// Text, one document per line.
        public var textFile: String
        public var output: String
        /// Layer whose hook_resid_post is cached (default: the middle, ⌊n_layers / 2⌋ − 1 … for 4 layers, 1).
        public var layer: Int?
        /// Length of the text windows (at most the model's context).
        public var contextLength = 128
        public var expansionFactor = 4
        public var k = 16
        public var saeSteps = 1500
        public var saeBatchSize = 512
        public var saeLearningRate: Float = 2e-3
        /// Induction prompts: this many, each a run of `inductionLength` tokens of the text shown twice.
        public var inductionPrompts = 8
        public var inductionLength = 16
        /// ACDC's τ (KL on the second copy).
        public var threshold = 0.02
        public init(modelDirectory: String, textFile: String, output: String) {
            self.modelDirectory = modelDirectory
            self.textFile = textFile
            self.output = output
        }
    }

    /// The figures of a run (also written as DIR/report.json).
    public struct Report: Encodable, Sendable {
        public struct Stage: Encodable, Sendable { public let name: String; public let seconds: Double }
        public var model = "", hook = "", textFile = ""
        public var tokens = 0, contextLength = 0
        /// Mean next-token loss of the model over every target position of every window of the text.
        public var textLoss = 0.0
        /// Mean loss on the first and second copy of the induction prompts' repeated runs.
        public var firstCopyLoss = 0.0, secondCopyLoss = 0.0
        public var explainedVariance = 0.0, l0 = 0.0, deadLatents = 0, latents = 0, mse = 0.0
        public var ceClean = 0.0, ceSpliced = 0.0, ceZero = 0.0, ceRecovered = 0.0
        public var effectiveFeatures = 0.0, superposition = 0.0, neurons = 0
        public var patchCleanLogitDiff = 0.0, patchCorruptedLogitDiff = 0.0
        /// The resid_pre cell that restores most, and the head whose output restores most.
        public var bestResidCell = "", bestResidValue = 0.0, bestHead = "", bestHeadValue = 0.0
        public var circuitEdges = 0, graphEdges = 0, circuitHeads: [String] = []
        public var fullKL = 0.0, circuitKL = 0.0, emptyKL = 0.0, threshold = 0.0
        public var aliveLatents = 0
        public var stages: [Stage] = []
        public var seconds = 0.0
    }

    /// Runs every stage, writing into `settings.output` (created if needed; earlier results there are replaced).
    /// `log` hears one line per stage start and end; `progress` a transient status line (a stage's progress).
    public static func run(_ settings: Settings, log: (String) -> Void = { _ in }, progress: @escaping (String) -> Void = { _ in }) throws -> Report {
        let start = Date()
        let demo = try DemoStages(settings: settings, progress: progress)
        // The inputs are good: only now is anything written.
        try FileManager.default.createDirectory(atPath: settings.output, withIntermediateDirectories: true)
        func stage(_ name: String, _ body: () throws -> String) throws {
            let stageStart = Date()
            log("· \(name) …")
            let summary = try body()
            let seconds = Date().timeIntervalSince(stageStart)
            demo.report.stages.append(.init(name: name, seconds: seconds))
            log(String(format: "  %@ (%.1f s)", summary, seconds))
        }
        try stage("model: loss on the text and on repeated runs", demo.modelLoss)
        try stage("cache \(demo.hook) to HDF5", demo.cache)
        try stage("train a TopK SAE", demo.trainSAE)
        try stage("evaluate the SAE", demo.evaluate)
        try stage("effective feature count", demo.featureCount)
        try stage("activation patching on \(demo.prompts.clean.batch) induction prompts", demo.patching)
        try stage("ACDC circuit discovery", demo.circuit)
        try stage("feature dashboards", demo.dashboards)

        var report = demo.report
        report.seconds = Date().timeIntervalSince(start)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(report), to: settings.output + "/report.json")
        try AtomicFile.write(Data(DemoPage(report: report, settings: settings).html().utf8), to: settings.output + "/index.html")
        return report
    }

    /// Mean next-token loss over `sequences` (all of one length), the targets being the positions `targets`.
    static func meanLoss(_ model: TransformerModel, _ sequences: [[Int32]], targets: Range<Int>) throws -> Double {
        var total = 0.0, count = 0
        for first in stride(from: 0, to: sequences.count, by: 16) {
            let batch = try TokenBatch(sequences[first..<min(sequences.count, first + 16)].map { $0.map(Int.init) }, config: model.config)
            let part = NextTokenLoss.sum(try model.run(batch), batch, targets: targets)
            total += part.sum
            count += part.count
        }
        return total / Double(max(count, 1))
    }
}

/// Induction prompts from a text: BOS, a run `s` of `length` tokens, then `s` again without its last token. The
/// answer is that last token (the model can only know it from the first copy). Patching's corrupted prompts change
/// the first copy's last token to `wrong`; ACDC's replace the whole first copy by another prompt's run.
struct InductionPrompts {
    let clean: TokenBatch, corrupted: TokenBatch, acdcCorrupted: TokenBatch
    let answers: [Int], wrongs: [Int]

    init(textFile: String, tokenizer: BPETokenizer, count: Int, length: Int, config: ModelConfig) throws {
        guard let bos = tokenizer.bosTokenID else { throw InterpError("the tokenizer has no BOS token", file: tokenizer.source) }
        guard count >= 2, length >= 4, 2 * length <= config.nCtx else {
            throw InterpError("induction prompts need at least 2 prompts of 4 tokens, twice within the context")
        }
        let stream = try TextLines.read(textFile).flatMap { tokenizer.encode($0) }.filter { $0 != bos }
        // Runs whose last two tokens appear nowhere else in the run: the continuation is unambiguous.
        var runs: [[Int32]] = []
        var offset = 0
        while runs.count < count && offset + length <= stream.count {
            let run = Array(stream[offset..<(offset + length)])
            let last = run[length - 1], before = run[length - 2]
            if run.filter({ $0 == last }).count == 1 && run.filter({ $0 == before }).count == 1 {
                runs.append(run)
                offset += 7 * length          // spread the prompts over the text
            } else {
                offset += 1
            }
        }
        guard runs.count == count else { throw InterpError("the text has too few usable runs for \(count) induction prompts", file: textFile) }
        func prompt(_ first: [Int32], _ second: [Int32]) -> [Int] { ([bos] + first + second.dropLast()).map(Int.init) }
        var corrupted: [[Int]] = [], acdc: [[Int]] = [], wrongs: [Int] = []
        for (i, run) in runs.enumerated() {
            // The wrong token: the last token of the next run that does not occur in this one.
            let wrong = (1..<count).lazy.map { runs[(i + $0) % count][length - 1] }.first { !run.contains($0) } ?? (run[length - 1] == 1 ? 2 : 1)
            var changed = run
            changed[length - 1] = wrong
            corrupted.append(prompt(changed, run))
            acdc.append(prompt(runs[(i + 1) % count], run))
            wrongs.append(Int(wrong))
        }
        clean = try TokenBatch(runs.map { prompt($0, $0) }, config: config)
        self.corrupted = try TokenBatch(corrupted, config: config)
        acdcCorrupted = try TokenBatch(acdc, config: config)
        answers = runs.map { Int($0[length - 1]) }
        self.wrongs = wrongs
    }
}
