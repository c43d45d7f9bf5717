import ActivationStore
import Foundation
import InterpCore
import SafeTensors
import Tokenization

/// Everything that determines a training run. Saved in checkpoints; a resume must use the same settings.
public struct SAETrainingSettings: Codable, Equatable, Sendable {
    public var architecture: String            // "standard", "topk", "batchtopk" or "jumprelu"
    public var dSAE: Int
    /// Active latents per row (topk: an integer), or on average over the batch (batchtopk).
    public var k: Double?
    public var l1Coefficient: Float
    public var l1WarmUpSteps: Int
    public var auxCoefficient: Float
    /// JumpReLU: the L0 coefficient, its warm-up, the estimator's bandwidth and the initial threshold.
    public var l0Coefficient: Float
    public var l0WarmUpSteps: Int
    public var bandwidth: Float
    public var initialThreshold: Float
    /// BatchTopK: the rate of the threshold's moving average.
    public var thresholdRate: Double
    public var learningRate: Float
    public var lrWarmUpSteps: Int
    public var lrDecaySteps: Int
    /// "constant" or "cosine" (SAELens's cosineannealing from lr to `lrEnd` between warm-up and decay).
    public var lrSchedule: String
    /// Where cosine annealing ends and the final decay starts; nil: SAELens's default, lr / 10.
    public var lrEnd: Float?
    public var batchSize: Int
    public var steps: Int
    public var seed: UInt64
    public var deadFeatureWindow: Int           // steps without firing before a latent counts as dead (SAELens: 1000)
    public var logEvery: Int
    public var checkpointEvery: Int
    public var activations: String
    public var dataset: String
    /// "none", or "expected-average": inputs scaled by √d_in / mean‖x‖ during training, folded into the weights at the end
    /// (SAELens's `expected_average_only_in`).
    public var normalize: String
    /// "default" (SAELens's Kaiming-uniform decoder rows), or "subspace": rows drawn in the principal subspace
    /// covering 99% of the variance of a sample of the activations.
    public var initialization: String

    public init(architecture: String, dSAE: Int, k: Double? = nil, l1Coefficient: Float = 1, l1WarmUpSteps: Int = 0,
                auxCoefficient: Float = 1, l0Coefficient: Float = 1, l0WarmUpSteps: Int = 0, bandwidth: Float = 0.05,
                initialThreshold: Float = 0.01, thresholdRate: Double = 0.01, learningRate: Float = 3e-4, lrWarmUpSteps: Int = 0, lrDecaySteps: Int = 0,
                lrSchedule: String = "constant", lrEnd: Float? = nil,
                batchSize: Int = 4096, steps: Int, seed: UInt64 = 0, deadFeatureWindow: Int = 1000, logEvery: Int = 10,
                checkpointEvery: Int = 0, activations: String, dataset: String, normalize: String = "none",
                initialization: String = "default") {
        self.architecture = architecture
        self.dSAE = dSAE
        self.k = k
        self.l1Coefficient = l1Coefficient
        self.l1WarmUpSteps = l1WarmUpSteps
        self.auxCoefficient = auxCoefficient
        self.l0Coefficient = l0Coefficient
        self.l0WarmUpSteps = l0WarmUpSteps
        self.bandwidth = bandwidth
        self.initialThreshold = initialThreshold
        self.thresholdRate = thresholdRate
        self.learningRate = learningRate
        self.lrWarmUpSteps = lrWarmUpSteps
        self.lrDecaySteps = lrDecaySteps
        self.lrSchedule = lrSchedule
        self.lrEnd = lrEnd
        self.batchSize = batchSize
        self.steps = steps
        self.seed = seed
        self.deadFeatureWindow = deadFeatureWindow
        self.logEvery = logEvery
        self.checkpointEvery = checkpointEvery
        self.activations = activations
        self.dataset = dataset
        self.normalize = normalize
        self.initialization = initialization
    }

    /// Checks the settings every architecture shares, then the architecture's own (`SAERegistry.training`).
    func validated() throws -> any SAETrainingArchitecture {
        guard dSAE > 0 else { throw InterpError("--d-sae must be positive") }
        guard batchSize > 0, steps > 0 else { throw InterpError("the batch size and the number of steps must be positive") }
        guard learningRate > 0, learningRate.isFinite else { throw InterpError("the learning rate must be positive") }
        guard lrWarmUpSteps + lrDecaySteps <= steps else { throw InterpError("LR warm-up and decay steps exceed the number of steps") }
        guard ["constant", "cosine"].contains(lrSchedule) else { throw InterpError("--lr-schedule is constant or cosine") }
        if let lrEnd { guard lrEnd >= 0, lrEnd <= learningRate else { throw InterpError("--lr-end must be between 0 and the learning rate") } }
        guard ["none", "expected-average"].contains(normalize) else { throw InterpError("--normalize is none or expected-average") }
        guard ["default", "subspace"].contains(initialization) else { throw InterpError("--init is default or subspace") }
        guard let kind = SAERegistry.training(named: architecture) else {
            throw InterpError("unknown architecture '\(architecture)' (\(SAERegistry.training.map { $0.name }.joined(separator: ", ")))")
        }
        return try kind.init(settings: self)
    }

    /// SAELens's schedule: linear warm-up from lr/W to lr over W steps, then constant lr or cosine annealing from lr to
    /// lr_end (default lr / 10), then over the last D steps a linear decay to 0 (from lr_end; for constant, lr_end = lr).
    public func learningRate(at step: Int) -> Float {
        let cosine = lrSchedule == "cosine"
        let end = cosine ? Double(lrEnd ?? learningRate / 10) : Double(learningRate)
        let lr = Double(learningRate)
        let decayStart = steps - lrDecaySteps
        if lrDecaySteps > 0 && step >= decayStart {
            return Float(end * max(0, 1 - Double(step - decayStart) / Double(lrDecaySteps)))
        }
        if lrWarmUpSteps > 0 && step < lrWarmUpSteps {
            let w = Double(lrWarmUpSteps)
            return Float(lrWarmUpSteps == 1 ? lr : lr * (1 / w + (1 - 1 / w) * Double(step) / (w - 1)))
        }
        guard cosine else { return learningRate }
        let main = Double(steps - lrWarmUpSteps - lrDecaySteps), t = Double(step - lrWarmUpSteps)
        return Float(end + (lr - end) * (1 + Foundation.cos(Double.pi * t / main)) / 2)
    }
}

public struct TrainingProgress: Sendable {
    public let step: Int
    public let steps: Int
    public let tokensPerSecond: Double
    public let loss: Float
    public let mse: Float
    public let l0: Float
    public let explainedVariance: Float
    public let deadLatents: Int
    public let batchSize: Int
    public var secondsLeft: Double? { tokensPerSecond > 0 ? Double((steps - step) * batchSize) / tokensPerSecond : nil }
}

public struct TrainingSummary: Sendable {
    public let directory: String
    public let steps: Int
    public let resumedFrom: Int
    public let finalExplainedVariance: Float
    public let finalL0: Float
    public let deadLatents: Int
    /// With `--init subspace`: the dimension of the subspace the decoder rows started in.
    public let subspaceRank: Int?
}

/// Trains an SAE on one dataset of an activation store as SAELens's trainer does (Adam, β 0.9/0.999, gradient norm
/// clipped to 1.0, sparsity-coefficient and LR schedules, dead latents = not fired for `deadFeatureWindow` steps),
/// and writes a SAELens inference directory. Checkpoints hold everything an exact resume needs: parameters, Adam
/// moments and step, firing counters and the number of batches read (the shuffled order is replayed from the seed).
public final class SAETrainer {
    public let settings: SAETrainingSettings
    public let reader: ActivationReader
    /// The store's attributes: the saved SAE's hook, model and context come from them.
    public let store: StoreMetadata
    let architecture: any SAETrainingArchitecture

    public init(settings: SAETrainingSettings) throws {
        self.settings = settings
        architecture = try settings.validated()
        reader = try ActivationReader(path: settings.activations, dataset: settings.dataset)
        store = try StoreMetadata.read(path: settings.activations)
        guard reader.rows >= settings.batchSize else {
            throw InterpError("dataset '\(settings.dataset)' has \(reader.rows) rows, fewer than one batch of \(settings.batchSize)", file: settings.activations)
        }
    }

    private struct State {
        var parameters: SAEParameters
        var adam: AdamOptimizer
        var step: Int
        var sinceFired: [Float]
        var firings: [Float]
        var samples: Int
        /// BatchTopK's moving threshold (in double precision, as SAELens keeps it).
        var topkThreshold: Double
        var subspaceRank: Int?
    }

    /// `progress` is called at every logging step, after the log line is written; an error it throws stops training
    /// there (the last checkpoint stays, and `--resume` continues from it).
    public func train(output: String, resume: Bool, progress: (TrainingProgress) throws -> Void = { _ in }) throws -> TrainingSummary {
        let checkpointPath = output + "/checkpoint.safetensors", logPath = output + "/train_log.jsonl"
        var state = try resume ? resumedState(output: output, checkpoint: checkpointPath, log: logPath)
                               : initialState(output: output, checkpoint: checkpointPath, log: logPath)
        let startStep = state.step
        let scale = try scalingFactor()
        let batches = try BatchIterator(reader: reader, options: .init(batchSize: settings.batchSize, shuffle: true, seed: settings.seed,
                                                                        epochs: Int.max, keepLastPartialBatch: false))
        for _ in 0..<state.step { _ = try batches.next() }    // replay the shuffled order up to the checkpoint
        let prefetcher = PrefetchingBatches(batches)          // the next batch is read while a step computes
        defer { prefetcher.stop() }
        guard let log = FileHandle(forWritingAtPath: logPath) else { throw InterpError("cannot open the training log", file: logPath) }
        defer { try? log.close() }
        try log.seekToEnd()
        let start = Date()
        var last = (ev: Float.nan, l0: Float.nan)
        let workspace = SAEWorkspace()
        while state.step < settings.steps {
            guard let batch = try prefetcher.next() else { break }
            var x = batch.values
            if let scale { x.withUnsafeMutableBufferPointer { for k in $0.indices { $0[k] *= scale } } }
            let taken = try step(&state, x: x, workspace: workspace, output: output)
            if state.step % max(settings.logEvery, 1) == 0 || state.step == settings.steps {
                let rate = Double((state.step - startStep) * settings.batchSize) / max(Date().timeIntervalSince(start), 1e-9)
                let line = logLine(taken, state: state, x: x, tokensPerSecond: rate)
                last = (line.progress.explainedVariance, line.progress.l0)
                try log.write(contentsOf: Data(line.json.utf8))
                try progress(line.progress)
            }
            if settings.checkpointEvery > 0 && state.step % settings.checkpointEvery == 0 && state.step < settings.steps {
                try log.synchronize()
                try saveCheckpoint(state, to: checkpointPath)
            }
        }
        prefetcher.stop()
        try log.synchronize()
        if let scale {
            Self.foldScaling(&state.parameters, by: scale)
            // BatchTopK's threshold is in units of pre·‖W_dec,i‖, and the fold divided W_dec by the scale.
            state.topkThreshold /= Double(scale)
        }
        try writeInferenceDirectory(state, output: output)
        try? FileManager.default.removeItem(atPath: checkpointPath)
        return TrainingSummary(directory: output, steps: state.step, resumedFrom: startStep, finalExplainedVariance: last.ev,
                               finalL0: last.l0, deadLatents: state.sinceFired.filter { $0 > Float(settings.deadFeatureWindow) }.count,
                               subspaceRank: state.subspaceRank)
    }

    /// A new run: the output directory made, the parameters initialised, an empty log.
    private func initialState(output: String, checkpoint: String, log: String) throws -> State {
        let fm = FileManager.default
        if fm.fileExists(atPath: output + "/sae_weights.safetensors") || fm.fileExists(atPath: checkpoint) {
            throw InterpError("already holds an SAE or a checkpoint; use --resume to continue, or another directory", file: output)
        }
        do { try fm.createDirectory(atPath: output, withIntermediateDirectories: true) } catch {
            throw InterpError("cannot create the directory (\(error.localizedDescription))", file: output)
        }
        let threshold = architecture.hasThreshold ? settings.initialThreshold : nil
        var subspaceRank: Int?
        let p: SAEParameters
        if settings.initialization == "subspace" {
            let subspace = try SubspaceInitialization.activeSubspace(of: SubspaceInitialization.sample(reader))
            subspaceRank = subspace.rank
            p = SubspaceInitialization.parameters(dSAE: settings.dSAE, subspace: subspace, threshold: threshold, seed: settings.seed)
        } else {
            p = initialSAEParameters(dIn: reader.width, dSAE: settings.dSAE, threshold: threshold, seed: settings.seed)
        }
        guard fm.createFile(atPath: log, contents: nil) else { throw InterpError("cannot create the training log", file: log) }
        return State(parameters: p, adam: AdamOptimizer(dIn: reader.width, dSAE: settings.dSAE, threshold: architecture.hasThreshold,
                                                        learningRate: settings.learningRate),
                     step: 0, sinceFired: [Float](repeating: 0, count: settings.dSAE),
                     firings: [Float](repeating: 0, count: settings.dSAE), samples: 0, topkThreshold: 0, subspaceRank: subspaceRank)
    }

    /// The checkpoint's state, with the log cut back to its step.
    private func resumedState(output: String, checkpoint: String, log: String) throws -> State {
        let fm = FileManager.default
        guard fm.fileExists(atPath: checkpoint) else {
            throw InterpError(fm.fileExists(atPath: output + "/sae_weights.safetensors") ? "training is already complete; nothing to resume" : "no checkpoint to resume from", file: output)
        }
        let state = try loadCheckpoint(checkpoint)
        try truncateLog(log, toStep: state.step)
        return state
    }

    /// What one step leaves for the log.
    private struct TakenStep {
        var result: SAETrainingStep
        var loss: Float
        var deadLatents: Int
        var active: Int
    }

    /// One step as SAELens takes it: the threshold projected to ≥ 0, loss and gradients, firing statistics, the
    /// tracked threshold, and Adam at this step's learning rate with the gradient norm clipped.
    private func step(_ state: inout State, x: Tensor, workspace: SAEWorkspace, output: String) throws -> TakenStep {
        let dead = state.sinceFired.map { $0 > Float(settings.deadFeatureWindow) }
        if architecture.hasThreshold {
            state.parameters.modify("threshold") { t in t.withUnsafeMutableBufferPointer { for i in $0.indices { $0[i] = max($0[i], 0) } } }
        }
        let result = architecture.lossAndGradients(state.parameters, x: x, step: state.step, deadMask: dead, workspace: workspace)
        let loss = result.losses.values.reduce(0, +)
        let gradientNorm = AdamOptimizer.globalNorm(result.gradients)
        guard loss.isFinite, gradientNorm.isFinite else {
            throw InterpError("training diverged at step \(state.step): the loss or a gradient is not finite; the last checkpoint is intact (lower --lr)", file: output)
        }
        let B = x.shape[0]
        let counts = result.firingCounts ?? Self.firingCounts(result.featureActs, rows: B, width: settings.dSAE)
        let active = Self.recordFirings(counts, firings: &state.firings, sinceFired: &state.sinceFired)
        state.samples += B
        state.topkThreshold = architecture.updatedThreshold(state.topkThreshold, after: result)
        state.adam.learningRate = settings.learningRate(at: state.step)
        state.adam.update(&state.parameters, gradients: result.gradients, norm: gradientNorm)
        state.step += 1
        return TakenStep(result: result, loss: loss, deadLatents: dead.filter { $0 }.count, active: active)
    }

    /// The train_log.jsonl line after a step (SAELens's loss names, then interp's figures) and its progress report.
    private func logLine(_ taken: TakenStep, state: State, x: Tensor, tokensPerSecond rate: Double) -> (json: String, progress: TrainingProgress) {
        let ev = explainedVariance(x, taken.result.reconstruction)
        let l0 = Float(taken.active) / Float(x.shape[0])
        let losses = taken.result.losses
        var fields = losses.keys.sorted().map { "\(JSONText.quote($0)):\(losses[$0]!)" }
        fields += ["\"step\":\(state.step)", "\"tokens\":\(state.step * settings.batchSize)", "\"loss\":\(taken.loss)",
                   "\"l0\":\(l0)", "\"explained_variance\":\(ev)", "\"dead_latents\":\(taken.deadLatents)",
                   "\"lr\":\(state.adam.learningRate)", "\"tokens_per_second\":\(Int(rate))"]
        if architecture.tracksThreshold { fields.append("\"topk_threshold\":\(state.topkThreshold)") }
        let progress = TrainingProgress(step: state.step, steps: settings.steps, tokensPerSecond: rate, loss: taken.loss,
                                        mse: losses["mse_loss"] ?? 0, l0: l0, explainedVariance: ev, deadLatents: taken.deadLatents,
                                        batchSize: settings.batchSize)
        return ("{" + fields.joined(separator: ",") + "}\n", progress)
    }

    /// SAELens's `expected_average_only_in` factor `√d_in / mean‖x‖`, the mean taken over the first 1,000 batches' worth of
    /// rows (in stored order), or nil without normalisation.
    public func scalingFactor() throws -> Float? {
        guard settings.normalize == "expected-average" else { return nil }
        let rows = min(reader.rows, 1000 * settings.batchSize)
        let meanNorm = try reader.statistics(rows: 0..<rows).meanNorm
        guard meanNorm > 0, meanNorm.isFinite else {
            throw InterpError("cannot normalise: the mean row norm is \(meanNorm)", file: settings.activations)
        }
        return Float(Double(reader.width).squareRoot() / meanNorm)
    }

    /// Folds an input scaling `s` into the weights so the SAE takes unscaled inputs: `W_enc·s`, `W_dec/s`, `b_dec/s`
    /// (SAELens `fold_activation_norm_scaling_factor`).
    public static func foldScaling(_ p: inout SAEParameters, by s: Float) {
        p.wEnc.scalars = p.wEnc.scalars.map { $0 * s }
        p.wDec.scalars = p.wDec.scalars.map { $0 / s }
        p.bDec.scalars = p.bDec.scalars.map { $0 / s }
    }

    /// Rows of `acts [rows, width]` in which each latent is non-zero.
    static func firingCounts(_ acts: Tensor, rows: Int, width: Int) -> [Float] {
        var fired = [Float](repeating: 0, count: width)
        acts.withUnsafeBufferPointer { a in
            fired.withUnsafeMutableBufferPointer { f in
                for b in 0..<rows {
                    let row = a.baseAddress! + b * width
                    for i in 0..<width where row[i] != 0 { f[i] += 1 }
                }
            }
        }
        return fired
    }

    /// Adds a step's firing counts to `firings`, resets `sinceFired` for latents that fired and counts one more step
    /// for the others. Returns the number of non-zero activations.
    static func recordFirings(_ fired: [Float], firings: inout [Float], sinceFired: inout [Float]) -> Int {
        var active = 0
        for i in fired.indices {
            firings[i] += fired[i]
            active += Int(fired[i])
            sinceFired[i] = fired[i] > 0 ? 0 : sinceFired[i] + 1
        }
        return active
    }

    /// `1 − mean‖x − x̂‖² / mean‖x − mean(x)‖²` over the batch (SAELens's logged explained variance).
    func explainedVariance(_ x: Tensor, _ xhat: Tensor) -> Float {
        let B = x.shape[0], D = x.shape[1]
        var mean = [Double](repeating: 0, count: D)
        for b in 0..<B { for j in 0..<D { mean[j] += Double(x.scalars[b * D + j]) / Double(B) } }
        var residual = 0.0, total = 0.0
        for b in 0..<B {
            for j in 0..<D {
                let v = Double(x.scalars[b * D + j])
                residual += (v - Double(xhat.scalars[b * D + j])) * (v - Double(xhat.scalars[b * D + j]))
                total += (v - mean[j]) * (v - mean[j])
            }
        }
        return total > 0 ? Float(1 - residual / total) : 0
    }

    // MARK: Checkpoints

    private func saveCheckpoint(_ s: State, to path: String) throws {
        var tensors: [String: SafeTensorsWriter.Payload] = [:]
        for name in s.parameters.names {
            tensors["param." + name] = .float(s.parameters[name])
            tensors["adam_m." + name] = .float(s.adam.firstMoment[name])
            tensors["adam_v." + name] = .float(s.adam.secondMoment[name])
        }
        tensors["since_fired"] = .float(Tensor(shape: [s.sinceFired.count], scalars: s.sinceFired))
        tensors["firings"] = .float(Tensor(shape: [s.firings.count], scalars: s.firings))
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let metadata = ["settings": String(decoding: try encoder.encode(settings), as: UTF8.self), "step": String(s.step),
                        "adam_step": String(s.adam.step), "samples": String(s.samples), "interp_version": InterpVersion.current,
                        "topk_threshold": String(s.topkThreshold), "subspace_rank": s.subspaceRank.map(String.init) ?? ""]
        try SafeTensorsWriter.write(payloads: tensors, metadata: metadata, to: path)
    }

    private func loadCheckpoint(_ path: String) throws -> State {
        let file = try SafeTensorsFile(path: path)
        guard let text = file.metadata["settings"],
              let saved = try? JSONDecoder().decode(SAETrainingSettings.self, from: Data(text.utf8)) else {
            throw InterpError("not an interp training checkpoint", file: path)
        }
        if saved != settings {
            let encoder = JSONEncoder()
            let old = try JSONValue.parse(encoder.encode(saved)).objectValue ?? [:], new = try JSONValue.parse(encoder.encode(settings)).objectValue ?? [:]
            let field = Set(old.keys).union(new.keys).sorted().first { old[$0] != new[$0] } ?? "settings"
            throw InterpError("the checkpoint was made with different settings (\(field) differs)", file: path)
        }
        func params(_ prefix: String) throws -> SAEParameters {
            let p = SAEParameters(wEnc: try file.tensor(prefix + "W_enc"), bEnc: try file.tensor(prefix + "b_enc"),
                                  wDec: try file.tensor(prefix + "W_dec"), bDec: try file.tensor(prefix + "b_dec"),
                                  threshold: architecture.hasThreshold ? try file.tensor(prefix + "threshold") : nil)
            guard p.dIn == reader.width, p.dSAE == settings.dSAE else {
                throw InterpError("the checkpoint's SAE has d_in \(p.dIn), but dataset '\(settings.dataset)' has width \(reader.width)", file: path)
            }
            return p
        }
        guard let step = Int(file.metadata["step"] ?? ""), let adamStep = Int(file.metadata["adam_step"] ?? ""),
              let samples = Int(file.metadata["samples"] ?? ""),
              let topkThreshold = Double(file.metadata["topk_threshold"] ?? "") else { throw InterpError("checkpoint metadata is incomplete", file: path) }
        let adam = AdamOptimizer(learningRate: settings.learningRate, step: adamStep, firstMoment: try params("adam_m."), secondMoment: try params("adam_v."))
        return State(parameters: try params("param."), adam: adam, step: step, sinceFired: try file.tensor("since_fired").scalars,
                     firings: try file.tensor("firings").scalars, samples: samples, topkThreshold: topkThreshold,
                     subspaceRank: Int(file.metadata["subspace_rank"] ?? ""))
    }

    private func truncateLog(_ path: String, toStep step: Int) throws {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let kept = TextLines.splitScalars(text, on: "\n").filter { line in
            guard let value = try? JSONValue.parse(Data(line.utf8)), let s = value.objectValue?["step"]?.integerValue else { return false }
            return s <= step
        }
        try AtomicFile.write(Data(kept.map { $0 + "\n" }.joined().utf8), to: path)
    }

    // MARK: Output

    /// cfg.json (through `SAELensConfig`), sae_weights.safetensors (as the architecture saves them: TopK with its
    /// norms folded in, BatchTopK as JumpReLU) and sparsity.safetensors (log10 firing density over the whole run).
    private func writeInferenceDirectory(_ s: State, output: String) throws {
        var config = SAELensConfig(architecture: "", dIn: reader.width, dSAE: settings.dSAE,
                                   reshapeActivations: reader.shape.count == 3 ? "hook_z" : "none")
        let p = architecture.saved(s.parameters, trackedThreshold: s.topkThreshold, config: &config)
        var metadata = SAELensConfig.Metadata(hookName: store.hookName(ofDataset: settings.dataset),
                                              modelName: store.modelName, contextSize: store.contextLength.flatMap { $0 > 0 ? $0 : nil },
                                              prependBOS: store.prependBOS, saeLensVersion: "6.0.0")
        metadata.interpVersion = InterpVersion.current
        metadata.trainingArchitecture = settings.architecture
        metadata.interpTraining = settings
        metadata.interpSubspaceRank = s.subspaceRank
        config.metadata = metadata
        var weights = ["W_enc": p.wEnc, "b_enc": p.bEnc, "W_dec": p.wDec, "b_dec": p.bDec]
        if let threshold = p.threshold { weights["threshold"] = threshold }
        try SafeTensorsWriter.write(weights, to: output + "/sae_weights.safetensors")
        let density = s.firings.map { log10($0 / Float(max(s.samples, 1)) + 1e-10) }
        try SafeTensorsWriter.write(["sparsity": Tensor(shape: [density.count], scalars: density)], to: output + "/sparsity.safetensors")
        try AtomicFile.write(try config.jsonData(), to: output + "/cfg.json")
    }
}
