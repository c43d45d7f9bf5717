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
        let out = settings.output
        var report = Report()
        var stageStart = Date()
        func stage(_ name: String, _ body: () throws -> String) throws {
            stageStart = Date()
            log("· \(name) …")
            let summary = try body()
            let seconds = Date().timeIntervalSince(stageStart)
            report.stages.append(.init(name: name, seconds: seconds))
            log(String(format: "  %@ (%.1f s)", summary, seconds))
        }

        let model = try ModelLoader.load(directory: settings.modelDirectory)
        guard let tokenizer = try BPETokenizer.load(modelDirectory: settings.modelDirectory) else {
            throw InterpError("the model has no tokenizer.json; the demo reads text", file: settings.modelDirectory)
        }
        let config = model.config
        let layer = settings.layer ?? max(0, config.nLayers / 2 - 1)
        guard layer >= 0 && layer < config.nLayers else { throw InterpError("layer \(layer) is outside the model's \(config.nLayers) layers") }
        let hook = HookName.block(layer, .residPost)
        (report.model, report.hook, report.textFile) = (config.modelName, hook.description, settings.textFile)
        // Windows of the text: the settings' length, or the model's context if that is shorter.
        let contextLength = min(settings.contextLength, config.nCtx)
        report.contextLength = contextLength
        let windows = try FeatureDashboard.windows(textFile: settings.textFile, tokenizer: tokenizer, contextLength: contextLength)
        let prompts = try InductionPrompts(textFile: settings.textFile, tokenizer: tokenizer, count: settings.inductionPrompts,
                                           length: settings.inductionLength, config: config)
        // The inputs are good: only now is anything written.
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)

        // 0. The model on its text, and on repeated text (induction: the second copy is predicted from the first).
        try stage("model: loss on the text and on repeated runs") {
            report.textLoss = try meanLoss(model, windows, targets: 1..<contextLength)
            let n = settings.inductionLength
            report.firstCopyLoss = try meanLoss(model, prompts.clean.rows.map { $0.map(Int32.init) }, targets: 2..<(n + 1))
            report.secondCopyLoss = try meanLoss(model, prompts.clean.rows.map { $0.map(Int32.init) }, targets: (n + 2)..<(2 * n))
            return String(format: "loss %.3f on %d windows of %d tokens; repeated runs: first copy %.3f, second copy %.3f",
                          report.textLoss, windows.count, contextLength, report.firstCopyLoss, report.secondCopyLoss)
        }

        // 1. Cache.
        let store = out + "/activations.h5"
        try stage("cache \(hook) to HDF5") {
            let job = try ActivationCacheJob.prepare(modelDirectory: settings.modelDirectory,
                                                     input: .textFile(path: settings.textFile, contextLength: contextLength),
                                                     hookPatterns: [hook.description], output: store, excludeBOS: true)
            let summary = try job.run(mode: .overwrite) { p in progress("cached \(p.tokensDone)/\(p.tokensTotal) tokens") }
            report.tokens = summary.tokens
            return "\(summary.tokens) tokens from \(summary.sequences) windows → activations.h5"
        }

        // 2. Train a TopK SAE.
        let saeDirectory = out + "/sae"
        try stage("train a TopK SAE") {
            let width = config.dModel * settings.expansionFactor
            let trainer = try SAETrainer(settings: SAETrainingSettings(
                architecture: "topk", dSAE: width, k: Double(settings.k), learningRate: settings.saeLearningRate,
                lrDecaySteps: settings.saeSteps / 5, batchSize: settings.saeBatchSize, steps: settings.saeSteps, seed: 0,
                deadFeatureWindow: 400, logEvery: 50, checkpointEvery: 0, activations: store, dataset: hook.description))
            let summary = try trainer.train(output: saeDirectory, resume: false) { p in
                if p.step % 25 == 0 || p.step == p.steps {
                    progress(String(format: "step %d/%d · EV %.3f · L0 %.1f · dead %d", p.step, p.steps, p.explainedVariance, p.l0, p.deadLatents))
                }
            }
            return String(format: "%d latents, k %d, %d steps of %d → sae/ (EV %.3f on the last batch)", width, settings.k,
                          summary.steps, settings.saeBatchSize, summary.finalExplainedVariance)
        }
        let sae = try SparseAutoencoder.load(directory: saeDirectory)

        // 3. Evaluate it.
        try stage("evaluate the SAE") {
            let evaluation = try SAEEvaluation.evaluate(sae, reader: try ActivationReader(path: store, dataset: hook.description))
            let ce = try CrossEntropyRecovered.measure(sae, model: model, hook: hook, sequences: try StoreSequences.read(path: store))
            (report.explainedVariance, report.l0, report.deadLatents, report.latents, report.mse) =
                (evaluation.explainedVariance, evaluation.l0, evaluation.deadLatents, evaluation.latents, evaluation.mse)
            (report.ceClean, report.ceSpliced, report.ceZero, report.ceRecovered) = (ce.clean, ce.spliced, ce.zeroAblation, ce.recovered)
            return String(format: "explained variance %.3f, L0 %.1f, dead %d of %d; CE %.3f clean, %.3f spliced, %.3f zeroed: %.1f%% recovered",
                          evaluation.explainedVariance, evaluation.l0, evaluation.deadLatents, evaluation.latents,
                          ce.clean, ce.spliced, ce.zeroAblation, 100 * ce.recovered)
        }

        // 4. Effective feature count.
        try stage("effective feature count") {
            let result = try FeatureCount.measure(sae, reader: try ActivationReader(path: store, dataset: hook.description))
            (report.effectiveFeatures, report.superposition, report.neurons) = (result.effectiveFeatures, result.superposition, result.neurons)
            try AtomicFile.write(Data(result.convergencePlot(label: hook.description).svg().utf8), to: out + "/feature-count.svg")
            return String(format: "F = %.1f features on N = %d dimensions: ψ = %.2f → feature-count.svg",
                          result.effectiveFeatures, result.neurons, result.superposition)
        }

        // 5. Activation patching on the induction prompts.
        try stage("activation patching on \(prompts.clean.batch) induction prompts") {
            var request = PatchRequest(model: model, clean: prompts.clean, corrupted: prompts.corrupted, answers: prompts.answers,
                                       wrongs: prompts.wrongs, site: .residPre, normalize: true, tokenizer: tokenizer)
            var best: [String: (String, Double)] = [:]
            for (site, indexing, name) in [(PatchSite.residPre, PatchIndexing.layerPos, "patch-resid-pre"), (.headOut, .layerHead, "patch-heads")] {
                (request.site, request.indexing) = (site, indexing)
                let result = try request.run()
                (report.patchCleanLogitDiff, report.patchCorruptedLogitDiff) = (result.cleanMetric, result.corruptedMetric)
                try AtomicFile.write(try result.json(), to: out + "/\(name).json")
                let title = site == .residPre ? "Restoring the clean resid_pre at one layer and position" : "Restoring one head's clean output"
                try AtomicFile.write(Data(result.heatmap(title: title).svg().utf8), to: out + "/\(name).svg")
                let top = result.values.indices.max { result.values[$0] < result.values[$1] }!
                let layerIndex = top / result.shape[1], other = top % result.shape[1]
                best[name] = (site == .residPre ? "L\(layerIndex) pos \(other)" : "L\(layerIndex)H\(other)", result.values[top])
            }
            (report.bestResidCell, report.bestResidValue) = best["patch-resid-pre"]!
            (report.bestHead, report.bestHeadValue) = best["patch-heads"]!
            return String(format: "logit diff clean %.2f, corrupted %.2f; most restored by %@ (%.2f) and head %@ (%.2f) → patch-*.svg",
                          report.patchCleanLogitDiff, report.patchCorruptedLogitDiff, report.bestResidCell, report.bestResidValue,
                          report.bestHead, report.bestHeadValue)
        }

        // 6. ACDC on the induction task.
        try stage("ACDC circuit discovery") {
            let task = CircuitTask(clean: prompts.clean, corrupted: prompts.acdcCorrupted, positions: .from(settings.inductionLength + 1))
            let metric = try task.metric("kl", model: model)
            let result = try ACDC.run(model: model, clean: task.clean, corrupted: task.corrupted, metric: metric,
                                      settings: ACDC.Settings(threshold: settings.threshold)) { done, total in
                progress("receiver \(done)/\(total)")
            }
            let title = String(format: "ACDC on induction (KL, τ = %g): %d of %d edges", settings.threshold, result.keptCount, result.graph.edges.count)
            let dot = result.dot(title: title)
            try AtomicFile.write(try JSONSerialization.data(withJSONObject: result.jsonObject(extra: ["model": config.modelName]),
                                                            options: [.prettyPrinted, .sortedKeys]), to: out + "/circuit.json")
            try AtomicFile.write(Data(dot.utf8), to: out + "/circuit.dot")
            try AtomicFile.write(try Graphviz.svg(fromDOT: dot), to: out + "/circuit.svg")
            (report.circuitEdges, report.graphEdges, report.threshold) = (result.keptCount, result.graph.edges.count, settings.threshold)
            (report.fullKL, report.circuitKL, report.emptyKL) = (result.fullMetric, result.circuitMetric, result.emptyMetric)
            report.circuitHeads = Array(Set(result.keptEdges.flatMap { [$0.source, $0.destination] }
                .filter { $0.hasPrefix("a") }.map { $0.split(separator: ".").prefix(2).joined(separator: ".") })).sorted()
            return String(format: "kept %d of %d edges (KL %.3f; full model %.3g, no edges %.3f); heads %@ → circuit.svg",
                          result.keptCount, result.graph.edges.count, result.circuitMetric, result.fullMetric, result.emptyMetric,
                          report.circuitHeads.isEmpty ? "none" : report.circuitHeads.joined(separator: ", "))
        }

        // 7. Feature dashboards.
        try stage("feature dashboards") {
            let dashboard = try FeatureDashboard.gather(sae: sae, model: model, sequences: windows, hook: hook) { done, total in
                progress("scanned \(done)/\(total) batches")
            }
            report.aliveLatents = dashboard.features.filter { !$0.isDead }.count
            let html = DashboardHTML(dashboard: dashboard, subtitle: "TopK SAE (k = \(settings.k)) on \(config.modelName), \(settings.textFile)",
                                     tokenText: { (try? tokenizer.decode([$0])) ?? "#\($0)" })
            let pages = try html.write(to: out + "/dashboard")
            return "\(report.aliveLatents) latents fire; \(pages) pages → dashboard/index.html"
        }

        report.seconds = Date().timeIntervalSince(start)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(report), to: out + "/report.json")
        try AtomicFile.write(Data(DemoPage(report: report, settings: settings).html().utf8), to: out + "/index.html")
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
