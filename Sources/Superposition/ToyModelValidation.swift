import ActivationStore
import Foundation
import InterpCore
import SparseAutoencoders

/// The paper's validation of the effective feature count: toy models trained over a sweep of input sparsity, each
/// measured two ways — from its weights (the reference) and from an SAE trained on its hidden activations with
/// interp's trainer — and the two compared by Pearson correlation.
public enum ToyModelValidation {
    public struct Settings: Sendable {
        public var models: Int = 40
        public var features = 20
        public var hidden = 5
        public var toySteps = 5000
        public var toyBatchSize = 1024
        public var samples = 10_000
        public var saeLatents = 40
        /// JumpReLU by default: its L0 penalty charges for every active latent, so a feature is not split across
        /// duplicate latents. A standard (untied) L1 SAE can split one feature over several latents at no cost (the
        /// L1 of z·‖W_dec,i‖ is the same), and its count then runs near d_sae whatever the toy model does.
        public var architecture = "jumprelu"
        public var l1Coefficient: Float = 1
        public var l0Coefficient: Float = 0.1
        public var saeSteps = 2000
        public var saeBatchSize = 256
        public var saeLearningRate: Float = 3e-3
        public var seed: UInt64 = 0
        public init() {}

        /// Input sparsities S spread over [0.001, 0.999], evenly in log feature density (1 − S).
        public var sparsities: [Double] {
            let (hi, lo) = (log10(0.999), log10(0.001))
            return (0..<models).map { 1 - pow(10, hi + (lo - hi) * Double($0) / Double(max(models - 1, 1))) }
        }
    }

    public struct Row: Encodable, Sendable {
        public let sparsity: Double
        public let toyLoss: Double
        /// From the weights: `p_i ∝ ‖W[:, i]‖`.
        public let weightEffectiveFeatures: Double
        /// `‖W‖²_F / N`.
        public let frobeniusSuperposition: Double
        /// From the SAE's codes on the toy model's hidden activations.
        public let saeEffectiveFeatures: Double
        public let saeSuperposition: Double
        /// The decoder-norm-weighted count from the same codes.
        public let saeDecoderWeighted: Double
        enum CodingKeys: String, CodingKey {
            case sparsity, toyLoss = "toy_loss", weightEffectiveFeatures = "weight_effective_features"
            case frobeniusSuperposition = "frobenius_superposition", saeEffectiveFeatures = "sae_effective_features"
            case saeSuperposition = "sae_superposition", saeDecoderWeighted = "sae_decoder_weighted"
        }
    }

    public struct Report: Encodable, Sendable {
        public let rows: [Row]
        /// Pearson r between the SAE-based and the weight-based counts.
        public let pearson: Double
        /// The same with the decoder-norm-weighted count.
        public let pearsonDecoderWeighted: Double
        public let features: Int
        public let hidden: Int
    }

    /// Runs the sweep; `directory` holds the temporary stores and SAEs. `progress(done, total)` after each model.
    public static func run(_ s: Settings, directory: String, progress: (Int, Int) -> Void = { _, _ in }) throws -> Report {
        var rows: [Row] = []
        for (index, sparsity) in s.sparsities.enumerated() {
            let seed = s.seed &+ UInt64(index) &* 1000
            let (toy, loss) = ToyModel.train(.init(features: s.features, hidden: s.hidden, sparsity: sparsity, batchSize: s.toyBatchSize,
                                                   steps: s.toySteps, seed: seed))
            var rng = SeededRandom(seed: seed &+ 7)
            // Samples with at least one feature present: an empty input carries nothing to count, and at high
            // sparsity it would be almost every sample.
            var x: [Float] = []
            while x.count < s.samples * s.features {
                let batch = ToyModel.sample(rows: 1024, features: s.features, sparsity: sparsity, rng: &rng)
                for r in 0..<1024 where x.count < s.samples * s.features {
                    let row = batch[(r * s.features)..<((r + 1) * s.features)]
                    if row.contains(where: { $0 != 0 }) { x += row }
                }
            }
            let h = toy.hiddenActivations(x, rows: s.samples)
            let store = directory + "/toy-\(index).h5", out = directory + "/toy-sae-\(index)"
            try? FileManager.default.removeItem(atPath: store)
            try? FileManager.default.removeItem(atPath: out)
            do {
                let file = try HDF5File(creating: store)
                let dataset = try HDF5Dataset(creating: "hidden", in: file, type: .float32, rowShape: [s.hidden], chunkRows: 1024)
                try h.withUnsafeBytes { try dataset.append($0.baseAddress!, rows: s.samples, type: .float32) }
            }
            let settings = SAETrainingSettings(architecture: s.architecture, dSAE: s.saeLatents, l1Coefficient: s.l1Coefficient,
                                               l0Coefficient: s.l0Coefficient,
                                               learningRate: s.saeLearningRate, batchSize: s.saeBatchSize, steps: s.saeSteps, seed: seed,
                                               logEvery: s.saeSteps, activations: store, dataset: "hidden", normalize: "expected-average")
            _ = try SAETrainer(settings: settings).train(output: out, resume: false)
            let count = try FeatureCount.measure(try SparseAutoencoder.load(directory: out),
                                                 reader: try ActivationReader(path: store, dataset: "hidden"), bootstrap: 0)
            let reference = toy.weightReference
            rows.append(Row(sparsity: sparsity, toyLoss: Double(loss), weightEffectiveFeatures: reference.effectiveFeatures,
                            frobeniusSuperposition: reference.frobeniusSuperposition, saeEffectiveFeatures: count.effectiveFeatures,
                            saeSuperposition: count.superposition, saeDecoderWeighted: count.variants.decoderWeighted))
            progress(index + 1, s.models)
        }
        return Report(rows: rows, pearson: pearson(rows.map(\.saeEffectiveFeatures), rows.map(\.weightEffectiveFeatures)),
                      pearsonDecoderWeighted: pearson(rows.map(\.saeDecoderWeighted), rows.map(\.weightEffectiveFeatures)),
                      features: s.features, hidden: s.hidden)
    }

    public static func pearson(_ a: [Double], _ b: [Double]) -> Double {
        let n = Double(a.count), ma = a.reduce(0, +) / n, mb = b.reduce(0, +) / n
        var sab = 0.0, saa = 0.0, sbb = 0.0
        for i in a.indices { sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) * (a[i] - ma); sbb += (b[i] - mb) * (b[i] - mb) }
        return sab / (saa * sbb).squareRoot()
    }
}
