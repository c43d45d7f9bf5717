import ArgumentParser
import Foundation
import Interp

struct SAECommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sae",
        abstract: "Sparse autoencoders: train them on an activation store, SAELens-compatible.",
        subcommands: [SAETrainCommand.self, SAEEvalCommand.self, SAEFeatureCountCommand.self, SAEDashboardCommand.self])
}

struct SAETrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train an SAE (standard, topk, batchtopk or jumprelu) on one dataset of an HDF5 activation store.",
        discussion: """
        The math is SAELens v6's (checked step by step against it):
          standard   ReLU, with L1 on z·‖W_dec,i‖ (--l1-coefficient)
          topk       the k largest pre-activations per row (rescaled by decoder norms), AuxK loss on dead latents
          batchtopk  the k·batch largest over the whole batch (k per row on average); saved as a jumprelu SAE with \
        the threshold learned along the way
          jumprelu   z = pre·[pre > θ] with a learned threshold per latent, L0 penalty (--l0-coefficient) through a \
        straight-through estimator of width --bandwidth
        Adam (β 0.9/0.999), gradient norm clipped to 1.0, decoder rows initialised to norm 0.1 with W_enc = W_decᵀ.

        DIR becomes a SAELens inference directory (cfg.json, sae_weights.safetensors, sparsity.safetensors) with \
        train_log.jsonl. With --checkpoint-every N a checkpoint is written atomically every N steps; --resume \
        continues from it and ends with the same weights as an uninterrupted run.

        Example:
          interp sae train --activations acts.h5 --dataset blocks.0.hook_resid_post --architecture topk \\
              --k 32 --expansion-factor 8 --steps 2000 --batch-size 1024 --out sae-topk
        """)

    @Option(name: .long, help: ArgumentHelp("The HDF5 store.", valueName: "file")) var activations: String
    @Option(name: .long, help: ArgumentHelp("Dataset in the store (any float dataset [n, d] or [n, heads, d_head]).", valueName: "name")) var dataset: String
    @Option(name: .long, help: "The SAE's architecture (see above).") var architecture = Architecture.standard
    @Option(name: .long, help: ArgumentHelp("Number of latents.", valueName: "n")) var dSae: Int?
    @Option(name: .long, help: ArgumentHelp("Latents as a multiple of d_in (instead of --d-sae).", valueName: "e")) var expansionFactor: Int?
    @Option(name: .long, help: "Active latents per row (topk; batchtopk: on average, may be fractional).") var k: Double?
    @Option(name: .long, help: "L1 coefficient (standard).") var l1Coefficient: Float = 1
    @Option(name: .long, help: "Steps over which the L1 coefficient rises linearly from 0 (standard).") var l1WarmUpSteps = 0
    @Option(name: .long, help: "AuxK loss coefficient (topk, batchtopk).") var auxCoefficient: Float = 1
    @Option(name: .long, help: "L0 coefficient (jumprelu).") var l0Coefficient: Float = 1
    @Option(name: .long, help: "Steps over which the L0 coefficient rises linearly from 0 (jumprelu).") var l0WarmUpSteps = 0
    @Option(name: .long, help: "Width of the threshold's straight-through estimator (jumprelu).") var bandwidth: Float = 0.05
    @Option(name: .long, help: "Initial threshold of every latent (jumprelu).") var initialThreshold: Float = 0.01
    @Option(name: .long, help: "Learning rate.") var lr: Float = 3e-4
    @Option(name: .long, help: "Linear LR warm-up steps.") var lrWarmUpSteps = 0
    @Option(name: .long, help: "Linear LR decay steps at the end.") var lrDecaySteps = 0
    @Option(name: .long, help: "cosine: annealing from --lr to --lr-end between warm-up and decay (SAELens's cosineannealing).") var lrSchedule = LRSchedule.constant
    @Option(name: .long, help: "Where cosine annealing ends and the final decay starts (default --lr / 10).") var lrEnd: Float?
    @Option(name: .long, help: "Rows per step.") var batchSize = 4096
    @Option(name: .long, help: "Training steps.") var steps: Int?
    @Option(name: .long, help: ArgumentHelp("Training tokens (instead of --steps).", valueName: "n")) var tokens: Int?
    @Option(name: .long, help: "Random seed (initialisation and data order).") var seed: UInt64 = 0
    @Option(name: .long, help: "Steps without firing after which a latent counts as dead (SAELens's dead_feature_window; default 1000).") var deadFeatureWindow: Int?
    @Option(name: .long, help: ArgumentHelp("The same window in training tokens (instead of --dead-feature-window), e.g. 10000000 as in OpenAI's TopK SAEs.", valueName: "n")) var deadFeatureTokens: Int?
    @Option(name: .long, help: "Write a log line every N steps.") var logEvery = 10
    @Option(name: .long, help: "Checkpoint every N steps (0: never).") var checkpointEvery = 0
    @Option(name: .long, help: "expected-average: scale inputs to mean norm √d_in while training, folded into the weights at the end.") var normalize = Normalization.none
    @Option(name: .customLong("init"), help: "default: SAELens's; subspace: decoder rows start inside the principal subspace holding 99% of the activations' variance (fewer dead latents on attention outputs).") var initialization = Initialization.saeLens
    @Flag(name: .long, help: "Continue from DIR's checkpoint.") var resume = false
    @Option(name: .long, help: ArgumentHelp("Output directory.", valueName: "dir")) var out: String

    /// A name from `SAERegistry.training`, so that a new architecture needs no line here.
    struct Architecture: ExpressibleByArgument {
        let kind: any SAETrainingArchitecture.Type
        init?(argument: String) {
            guard let kind = SAERegistry.training(named: argument) else { return nil }
            self.kind = kind
        }
        static var allValueStrings: [String] { SAERegistry.training.map { $0.name } }
        var defaultValueDescription: String { kind.name }
        static let standard = Architecture(argument: StandardSAE.Training.name)!
    }

    // The words of SAETrainingSettings' other string fields (strings there, as checkpoints store them).
    enum LRSchedule: String, CaseIterable, ExpressibleByArgument { case constant, cosine }
    enum Normalization: String, CaseIterable, ExpressibleByArgument { case none, expectedAverage = "expected-average" }
    enum Initialization: String, CaseIterable, ExpressibleByArgument { case saeLens = "default", subspace }

    func validate() throws {
        if (dSae == nil) == (expansionFactor == nil) { throw ValidationError("give the SAE's width one way: --d-sae or --expansion-factor") }
        if (steps == nil) == (tokens == nil) { throw ValidationError("give the training length one way: --steps or --tokens") }
        if deadFeatureWindow != nil && deadFeatureTokens != nil { throw ValidationError("give the dead-latent window one way: --dead-feature-window or --dead-feature-tokens") }
        if architecture.kind.needsK && k == nil { throw ValidationError("--architecture \(architecture.kind.name) needs --k") }
    }

    func run() throws {
        // d_in comes from the dataset, so an expansion factor needs the store opened first.
        let width = try expansionFactor.map { try ActivationReader(path: activations, dataset: dataset).width * $0 } ?? dSae!
        let settings = SAETrainingSettings(
            architecture: architecture.kind.name, dSAE: width, k: k, l1Coefficient: l1Coefficient, l1WarmUpSteps: l1WarmUpSteps,
            auxCoefficient: auxCoefficient, l0Coefficient: l0Coefficient, l0WarmUpSteps: l0WarmUpSteps, bandwidth: bandwidth,
            initialThreshold: initialThreshold, learningRate: lr, lrWarmUpSteps: lrWarmUpSteps, lrDecaySteps: lrDecaySteps,
            lrSchedule: lrSchedule.rawValue, lrEnd: lrEnd,
            batchSize: batchSize, steps: steps ?? max(1, tokens! / batchSize), seed: seed,
            deadFeatureWindow: deadFeatureWindow ?? deadFeatureTokens.map { max(1, ($0 + batchSize - 1) / batchSize) } ?? 1000,
            logEvery: logEvery, checkpointEvery: checkpointEvery, activations: activations, dataset: dataset, normalize: normalize.rawValue,
            initialization: initialization.rawValue)
        let trainer = try SAETrainer(settings: settings)
        var lastDraw = Date.distantPast
        let summary = try trainer.train(output: out, resume: resume) { p in
            guard Date().timeIntervalSince(lastDraw) > 0.25 || p.step == p.steps else { return }
            lastDraw = Date()
            let eta = p.secondsLeft.map { String(format: "%d:%02d", Int($0) / 60, Int($0) % 60) } ?? "-"
            let line = String(format: "\rstep %d/%d · %.0f tokens/s · loss %.4g · mse %.4g · L0 %.1f · EV %.3f · dead %d · ETA %@   ",
                              p.step, p.steps, p.tokensPerSecond, p.loss, p.mse, p.l0, p.explainedVariance, p.deadLatents, eta)
            FileHandle.standardError.write(Data(line.utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        let resumed = summary.resumedFrom > 0 ? " (resumed at step \(summary.resumedFrom))" : ""
        let subspace = summary.subspaceRank.map { ", decoder initialised in a \($0)-dimensional subspace" } ?? ""
        print("wrote \(summary.directory): \(summary.steps) steps\(resumed)\(subspace), explained variance \(String(format: "%.4f", summary.finalExplainedVariance)), L0 \(String(format: "%.2f", summary.finalL0)), dead latents \(summary.deadLatents)")
    }
}

struct SAEEvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Measure an SAE on a dataset: MSE, explained variance, L0, L1, dead latents, density histogram.",
        discussion: """
        MSE follows SAELens (sum over features, mean over rows) and is also given per element; explained variance is \
        1 − SSE / Σ‖x − mean(x)‖² over the rows. The SAE may come from interp or SAELens (standard, topk, jumprelu).

        With --model (the model the store was cached from), the first --ce-sequences sequences of the store are run \
        three ways: clean, with the SAE's reconstruction spliced in at its hook (cfg.json's metadata.hook_name), and \
        with zeros there; CE recovered = (CE_zero − CE_spliced) / (CE_zero − CE_clean).

        Example:
          interp sae eval --sae sae-topk --activations acts.h5 --dataset blocks.0.hook_resid_post --json
        """)

    @Option(name: .long, help: ArgumentHelp("SAE directory (cfg.json + sae_weights.safetensors).", valueName: "dir")) var sae: String
    @Option(name: .long, help: ArgumentHelp("The HDF5 store.", valueName: "file")) var activations: String
    @Option(name: .long, help: ArgumentHelp("Dataset in the store.", valueName: "name")) var dataset: String
    @Option(name: .long, help: "Rows per batch.") var batchSize = 4096
    // Not ModelOptions, whose --model is required: here it is optional, for the cross-entropy only.
    @Option(name: .long, help: ArgumentHelp("Also measure the cross-entropy recovered with this model.", valueName: "dir")) var model: String?
    @Option(name: .long, help: "Sequences of the store used for the cross-entropy.") var ceSequences = 64
    @Flag(name: .long, help: "Print JSON.") var json = false

    struct Report: Encodable {
        let reconstruction: SAEEvaluation
        let crossEntropy: CrossEntropyRecovered?
        enum CodingKeys: String, CodingKey { case reconstruction, crossEntropy = "cross_entropy" }
    }

    func run() throws {
        let loaded = try SparseAutoencoder.load(directory: sae)
        let result = try SAEEvaluation.evaluate(loaded, reader: try ActivationReader(path: activations, dataset: dataset), batchSize: batchSize)
        var ce: CrossEntropyRecovered?
        if let model {
            guard let hookName = loaded.config.metadata?.hookName else {
                throw InterpError("cfg.json names no metadata.hook_name, so the SAE's place in the model is unknown", file: sae + "/cfg.json")
            }
            let transformer = try ModelLoader.load(directory: model)
            ce = try CrossEntropyRecovered.measure(loaded, model: transformer, hook: try HookName(parsing: hookName),
                                                   sequences: try StoreSequences.read(path: activations, limit: ceSequences))
        }
        if json {
            try printJSON(Report(reconstruction: result, crossEntropy: ce))
            return
        }
        print(result.text, terminator: "")
        if let ce {
            print(String(format: "CE loss             clean %.5f · spliced %.5f · zero-ablated %.5f at %@ (%d tokens)", ce.clean, ce.spliced, ce.zeroAblation, ce.hook, ce.tokens))
            print(String(format: "CE recovered        %.4f", ce.recovered))
        }
    }
}
