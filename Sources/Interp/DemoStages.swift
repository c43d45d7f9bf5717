import Foundation
import InterpCore
import Tokenization
import InterpModels
import ActivationStore
import SparseAutoencoders
import Superposition
import ActivationPatching
import Circuits
import Dashboards

/// The stages of `Demo.run`, one method each, over what they share: the model and its tokenizer, the text windows,
/// the induction prompts, the store and the SAE. Each fills its part of `report` and returns its summary line.
final class DemoStages {
    let settings: Demo.Settings
    let progress: (String) -> Void
    let model: TransformerModel
    let config: ModelConfig
    let tokenizer: BPETokenizer
    let hook: HookName
    /// Tokens per text window: the settings' length, or the model's context if that is shorter.
    let contextLength: Int
    let windows: [[Int32]]
    let prompts: InductionPrompts
    let out: String
    let store: String
    let saeDirectory: String
    /// Set by `trainSAE`.
    private(set) var trainedSAE: SparseAutoencoder?
    var report = Demo.Report()

    /// Loads and checks every input; writes nothing.
    init(settings: Demo.Settings, progress: @escaping (String) -> Void) throws {
        self.settings = settings
        self.progress = progress
        model = try ModelLoader.load(directory: settings.modelDirectory)
        guard let tokenizer = try BPETokenizer.load(modelDirectory: settings.modelDirectory) else {
            throw InterpError("the model has no tokenizer.json; the demo reads text", file: settings.modelDirectory)
        }
        self.tokenizer = tokenizer
        config = model.config
        let layer = settings.layer ?? max(0, config.nLayers / 2 - 1)
        guard layer >= 0 && layer < config.nLayers else { throw InterpError("layer \(layer) is outside the model's \(config.nLayers) layers") }
        hook = HookName.block(layer, .residPost)
        contextLength = min(settings.contextLength, config.nCtx)
        windows = try FeatureDashboard.windows(textFile: settings.textFile, tokenizer: tokenizer, contextLength: contextLength)
        prompts = try InductionPrompts(textFile: settings.textFile, tokenizer: tokenizer, count: settings.inductionPrompts,
                                       length: settings.inductionLength, config: config)
        out = settings.output
        store = out + "/activations.h5"
        saeDirectory = out + "/sae"
        (report.model, report.hook, report.textFile, report.contextLength) = (config.modelName, hook.description, settings.textFile, contextLength)
    }

    private func sae() throws -> SparseAutoencoder {
        guard let trainedSAE else { throw InterpError("the SAE stage has not run") }
        return trainedSAE
    }

    /// The model on its text, and on repeated text (induction: the second copy is predicted from the first).
    func modelLoss() throws -> String {
        report.textLoss = try Demo.meanLoss(model, windows, targets: 1..<contextLength)
        let n = settings.inductionLength
        report.firstCopyLoss = try Demo.meanLoss(model, prompts.clean.rows.map { $0.map(Int32.init) }, targets: 2..<(n + 1))
        report.secondCopyLoss = try Demo.meanLoss(model, prompts.clean.rows.map { $0.map(Int32.init) }, targets: (n + 2)..<(2 * n))
        return String(format: "loss %.3f on %d windows of %d tokens; repeated runs: first copy %.3f, second copy %.3f",
                      report.textLoss, windows.count, contextLength, report.firstCopyLoss, report.secondCopyLoss)
    }

    /// Caches the hook's activations over the text windows to HDF5.
    func cache() throws -> String {
        let job = try ActivationCacheJob.prepare(modelDirectory: settings.modelDirectory,
                                                 input: .textFile(path: settings.textFile, contextLength: contextLength),
                                                 hookPatterns: [hook.description], output: store, excludeBOS: true)
        let summary = try job.run(mode: .overwrite) { p in progress("cached \(p.tokensDone)/\(p.tokensTotal) tokens") }
        report.tokens = summary.tokens
        return "\(summary.tokens) tokens from \(summary.sequences) windows → activations.h5"
    }

    /// Trains a TopK SAE on the store, and loads it for the stages after.
    func trainSAE() throws -> String {
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
        trainedSAE = try SparseAutoencoder.load(directory: saeDirectory)
        return String(format: "%d latents, k %d, %d steps of %d → sae/ (EV %.3f on the last batch)", width, settings.k,
                      summary.steps, settings.saeBatchSize, summary.finalExplainedVariance)
    }

    /// Reconstruction figures and the cross-entropy recovered when the SAE is spliced in.
    func evaluate() throws -> String {
        let sae = try sae()
        let evaluation = try SAEEvaluation.evaluate(sae, reader: try ActivationReader(path: store, dataset: hook.description))
        let ce = try CrossEntropyRecovered.measure(sae, model: model, hook: hook, sequences: try StoreSequences.read(path: store))
        (report.explainedVariance, report.l0, report.deadLatents, report.latents, report.mse) =
            (evaluation.explainedVariance, evaluation.l0, evaluation.deadLatents, evaluation.latents, evaluation.mse)
        (report.ceClean, report.ceSpliced, report.ceZero, report.ceRecovered) = (ce.clean, ce.spliced, ce.zeroAblation, ce.recovered)
        return String(format: "explained variance %.3f, L0 %.1f, dead %d of %d; CE %.3f clean, %.3f spliced, %.3f zeroed: %.1f%% recovered",
                      evaluation.explainedVariance, evaluation.l0, evaluation.deadLatents, evaluation.latents,
                      ce.clean, ce.spliced, ce.zeroAblation, 100 * ce.recovered)
    }

    /// The effective feature count and its convergence plot.
    func featureCount() throws -> String {
        let sae = try sae()
        let result = try FeatureCount.measure(sae, reader: try ActivationReader(path: store, dataset: hook.description))
        (report.effectiveFeatures, report.superposition, report.neurons) = (result.effectiveFeatures, result.superposition, result.neurons)
        try AtomicFile.write(Data(result.convergencePlot(label: hook.description).svg().utf8), to: out + "/feature-count.svg")
        return String(format: "F = %.1f features on N = %d dimensions: ψ = %.2f → feature-count.svg",
                      result.effectiveFeatures, result.neurons, result.superposition)
    }

    /// Activation patching on the induction prompts: resid_pre by layer and position, head outputs by layer and head.
    func patching() throws -> String {
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

    /// ACDC on the induction task (KL on the second copy).
    func circuit() throws -> String {
        let task = CircuitTask(clean: prompts.clean, corrupted: prompts.acdcCorrupted, positions: .from(settings.inductionLength + 1))
        let metric = try task.metric("kl", model: model)
        let result = try ACDC.run(model: model, clean: task.clean, corrupted: task.corrupted, metric: metric,
                                  settings: ACDC.Settings(threshold: settings.threshold)) { [progress] done, total in
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

    /// Feature dashboards over the text windows.
    func dashboards() throws -> String {
        let sae = try sae()
        let dashboard = try FeatureDashboard.gather(sae: sae, model: model, sequences: windows, hook: hook) { done, total in
            progress("scanned \(done)/\(total) batches")
        }
        report.aliveLatents = dashboard.features.filter { !$0.isDead }.count
        let html = DashboardHTML(dashboard: dashboard, subtitle: "TopK SAE (k = \(settings.k)) on \(config.modelName), \(settings.textFile)",
                                 tokenText: { [tokenizer] in (try? tokenizer.decode([$0])) ?? "#\($0)" })
        let pages = try html.write(to: out + "/dashboard")
        return "\(report.aliveLatents) latents fire; \(pages) pages → dashboard/index.html"
    }
}
