import ActivationStore
import Foundation
import InterpCore
import Plots
import SparseAutoencoders

/// The effective number of features of a mass distribution over latents (Bereska et al., "Superposition as Lossy
/// Compression"): `p_i = m_i / Σ m`, `H = −Σ p_i ln p_i` (latents with zero mass dropped, no ε added),
/// `F = e^H`; with Hill numbers of order 0 (latents with mass) and 2 (`1 / Σ p²`).
public struct EffectiveFeatures: Encodable, Equatable, Sendable {
    public let entropy: Double
    public let effectiveFeatures: Double
    public let hill0: Int
    public let hill2: Double

    /// nil when the total mass is zero (the count is undefined).
    public init?(mass: [Double]) {
        let total = mass.reduce(0) { $0 + max($1, 0) }
        guard total > 0, total.isFinite else { return nil }
        var h = 0.0, sumSquares = 0.0, alive = 0
        for m in mass where m > 0 {
            let p = m / total
            h -= p * Foundation.log(p)
            sumSquares += p * p
            alive += 1
        }
        entropy = max(h, 0)
        effectiveFeatures = Foundation.exp(entropy)
        hill0 = alive
        hill2 = 1 / sumSquares
    }

    enum CodingKeys: String, CodingKey { case entropy, effectiveFeatures = "effective_features", hill0 = "hill_0", hill2 = "hill_2" }
}

/// `interp sae feature-count`: the effective feature count of a layer, read through an SAE's codes.
public struct FeatureCountResult: Encodable, Sendable {
    public struct Variants: Encodable, Sendable {
        /// `p_i ∝ Σ_s |z_is|·‖W_dec,i‖`: invariant to trading a latent's scale against its decoder row.
        public let decoderWeighted: Double
        /// Latents that fired at least once (Hill number of order 0).
        public let hill0: Int
        /// `1 / Σ p_i²` (Hill number of order 2, the participation ratio).
        public let hill2: Double
        /// `p_i ∝` how often latent i fires.
        public let firingFrequency: Double

        enum CodingKeys: String, CodingKey {
            case decoderWeighted = "decoder_weighted", hill0 = "hill_0", hill2 = "hill_2", firingFrequency = "firing_frequency"
        }
    }

    public struct Point: Encodable, Sendable {
        public let samples: Int
        public let effectiveFeatures: Double
        enum CodingKeys: String, CodingKey { case samples, effectiveFeatures = "effective_features" }
    }

    public let effectiveFeatures: Double
    public let entropy: Double
    /// ψ = F / N.
    public let superposition: Double
    public let latents: Int
    public let neurons: Int
    public let samples: Int
    public let variants: Variants
    /// 95% interval from a block bootstrap over the samples (blocks of consecutive rows, which keeps tokens of one
    /// sequence together); nil with fewer than 2 blocks.
    public let ci95: [Double]?
    /// F on the first n samples, for n growing geometrically up to all of them: the plug-in estimate is biased low on
    /// few samples, so a flat tail says it has converged.
    public let convergence: [Point]

    enum CodingKeys: String, CodingKey {
        case effectiveFeatures = "effective_features", entropy, superposition, latents = "n_latents", neurons = "n_neurons"
        case samples = "n_samples", variants, ci95, convergence
    }
}

/// Streaming accumulation of SAE codes, one pass, O(blocks × d_sae) memory in float64.
public final class FeatureCountAccumulator {
    public let latents: Int
    public let expectedSamples: Int
    public let blocks: Int
    private let blockMass: UnsafeMutablePointer<Double>      // [blocks × latents] Σ|z| per block
    private let fired: UnsafeMutablePointer<Double>
    private let running: UnsafeMutablePointer<Double>
    public private(set) var samples = 0
    private var checkpoints: [Int]
    public private(set) var convergence: [FeatureCountResult.Point] = []

    /// `expectedSamples` fixes the bootstrap blocks and the convergence checkpoints.
    public init(latents: Int, expectedSamples: Int, blocks: Int = 32) {
        self.latents = latents
        self.expectedSamples = expectedSamples
        self.blocks = max(1, min(blocks, expectedSamples))
        blockMass = .allocate(capacity: max(self.blocks * latents, 1))
        blockMass.initialize(repeating: 0, count: max(self.blocks * latents, 1))
        fired = .allocate(capacity: max(latents, 1))
        fired.initialize(repeating: 0, count: max(latents, 1))
        running = .allocate(capacity: max(latents, 1))
        running.initialize(repeating: 0, count: max(latents, 1))
        var points: [Int] = []
        var n = 100.0
        while Int(n) < expectedSamples { points.append(Int(n)); n *= 2 }
        checkpoints = points + [expectedSamples]
    }

    deinit { blockMass.deallocate(); fired.deallocate(); running.deallocate() }

    /// Adds codes `z [rows × latents]`.
    public func add(_ z: UnsafePointer<Float>, rows: Int) {
        for r in 0..<rows {
            let block = min(samples * blocks / max(expectedSamples, 1), blocks - 1)
            let row = z + r * latents
            let m = blockMass + block * latents
            for i in 0..<latents where row[i] != 0 {
                let a = Double(abs(row[i]))
                m[i] += a
                running[i] += a
                fired[i] += 1
            }
            samples += 1
            if let next = checkpoints.first, samples == next {
                checkpoints.removeFirst()
                if let e = EffectiveFeatures(mass: Array(UnsafeBufferPointer(start: running, count: latents))) { convergence.append(.init(samples: samples, effectiveFeatures: e.effectiveFeatures)) }
            }
        }
    }

    /// The result, with `neurons` the layer's width and the SAE's decoder row norms for the weighted variant.
    public func result(neurons: Int, decoderNorms: [Float], bootstrap: Int = 200, seed: UInt64 = 0) throws -> FeatureCountResult {
        guard samples > 0 else { throw InterpError("no samples: the effective feature count needs at least one row") }
        let mass = Array(UnsafeBufferPointer(start: running, count: latents))
        guard let plain = EffectiveFeatures(mass: mass) else {
            throw InterpError("every SAE code is zero on these \(samples) rows: no latent is active, so the effective feature count is undefined")
        }
        let weighted = EffectiveFeatures(mass: (0..<latents).map { mass[$0] * Double(decoderNorms[$0]) })
        let frequency = EffectiveFeatures(mass: Array(UnsafeBufferPointer(start: fired, count: latents)))
        var ci: [Double]? = nil
        let used = min(blocks, samples)
        if used >= 2 && bootstrap > 0 {
            var rng = SeededRandom(seed: seed)
            var estimates: [Double] = []
            var resampled = [Double](repeating: 0, count: latents)
            for _ in 0..<bootstrap {
                for i in 0..<latents { resampled[i] = 0 }
                for _ in 0..<used {
                    let b = Int(rng.next() % UInt64(used))
                    for i in 0..<latents { resampled[i] += blockMass[b * latents + i] }
                }
                if let e = EffectiveFeatures(mass: resampled) { estimates.append(e.effectiveFeatures) }
            }
            estimates.sort()
            if estimates.count >= 2 {
                func quantile(_ q: Double) -> Double { estimates[min(estimates.count - 1, Int((q * Double(estimates.count - 1)).rounded()))] }
                ci = [quantile(0.025), quantile(0.975)]
            }
        }
        return FeatureCountResult(effectiveFeatures: plain.effectiveFeatures, entropy: plain.entropy,
                                  superposition: plain.effectiveFeatures / Double(neurons), latents: latents, neurons: neurons,
                                  samples: samples,
                                  variants: .init(decoderWeighted: weighted?.effectiveFeatures ?? .nan, hill0: plain.hill0, hill2: plain.hill2,
                                                  firingFrequency: frequency?.effectiveFeatures ?? .nan),
                                  ci95: ci, convergence: convergence)
    }
}

public enum FeatureCount {
    /// Runs `sae` over the first `samples` rows (default all) of a dataset and measures the effective feature count
    /// of its codes, in one streaming pass.
    public static func measure(_ sae: SparseAutoencoder, reader: ActivationReader, samples: Int? = nil, batchSize: Int = 4096,
                               bootstrap: Int = 200, seed: UInt64 = 0) throws -> FeatureCountResult {
        guard sae.config.dIn == reader.width else {
            throw InterpError("the SAE's d_in (\(sae.config.dIn)) does not match dataset '\(reader.dataset.name)' (rows of \(reader.width))", file: reader.path)
        }
        guard reader.rows > 0 else { throw InterpError("dataset '\(reader.dataset.name)' has no rows", file: reader.path) }
        if let samples, samples < 1 { throw InterpError("--samples must be positive") }
        let n = min(samples ?? reader.rows, reader.rows)
        let accumulator = FeatureCountAccumulator(latents: sae.config.dSAE, expectedSamples: n)
        var start = 0
        while start < n {
            let end = min(start + batchSize, n)
            let x = try reader.read(rows: start..<end)
            guard x.scalars.allSatisfy(\.isFinite) else {
                throw InterpError("rows \(start)..<\(end) of dataset '\(reader.dataset.name)' contain NaN or infinite values", file: reader.path)
            }
            let z = try sae.encode(x)
            z.withUnsafeBufferPointer { accumulator.add($0.baseAddress!, rows: end - start) }
            start = end
        }
        return try accumulator.result(neurons: reader.width, decoderNorms: sae.parameters.decoderNorms, bootstrap: bootstrap, seed: seed)
    }

    /// One layer of a sweep: an SAE and the activations it was trained on.
    public struct Layer {
        public let label: String
        public let sae: SparseAutoencoder
        public let reader: ActivationReader
        public init(label: String, sae: SparseAutoencoder, reader: ActivationReader) {
            self.label = label
            self.sae = sae
            self.reader = reader
        }
    }

    public struct LayerResult: Encodable, Sendable {
        public let label: String
        public let result: FeatureCountResult
    }

    /// F and ψ for each layer (the paper's layer-wise figure).
    public static func layers(_ items: [Layer], samples: Int? = nil, batchSize: Int = 4096) throws -> [LayerResult] {
        try items.map { LayerResult(label: $0.label, result: try measure($0.sae, reader: $0.reader, samples: samples, batchSize: batchSize)) }
    }

    /// The same measure for codes already in memory, `z [samples × latents]`.
    public static func measure(codes z: Tensor, neurons: Int, decoderNorms: [Float]? = nil, bootstrap: Int = 200, seed: UInt64 = 0) throws -> FeatureCountResult {
        let rows = z.shape[0], latents = z.count / max(rows, 1)
        let accumulator = FeatureCountAccumulator(latents: latents, expectedSamples: rows)
        z.withUnsafeBufferPointer { accumulator.add($0.baseAddress!, rows: rows) }
        return try accumulator.result(neurons: neurons, decoderNorms: decoderNorms ?? [Float](repeating: 1, count: latents),
                                      bootstrap: bootstrap, seed: seed)
    }
}

extension FeatureCountResult {
    /// F against the samples it was measured on (log axis), with the layer's width N as a reference line: the
    /// estimate should flatten before it is trusted.
    public func convergencePlot(label: String) -> LinePlot {
        var plot = LinePlot(title: "Effective features vs samples (\(label))", xLabel: "samples", yLabel: "effective features F", logX: true,
                            series: [.init(name: "F", points: convergence.map { (Double($0.samples), $0.effectiveFeatures) },
                                           color: LinePlot.palette[0])])
        plot.references = [(Double(neurons), "N = \(neurons) neurons")]
        return plot
    }
}
