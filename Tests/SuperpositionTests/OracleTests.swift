import ActivationStore
import Foundation
import InterpCore
import InterpTestSupport
import SparseAutoencoders
import Superposition
import Testing

/// F measured through a trained SAE against F known in closed form: rows built from a known dictionary of 128 unit
/// directions in 64 dimensions, feature f firing independently with probability p_f ∝ (f + 1)^−0.7 (4 active per row on
/// average) with an Exponential(1) magnitude. The true codes' mass shares are q_f ∝ p_f · E|a| = p_f, so
/// F_true = exp(−Σ q ln q).
@Suite struct OracleTests {
    @Test func saeCountMatchesTheClosedForm() throws {
        let (d, features, rows) = (64, 128, 16384)
        var rng = SeededRandom(seed: 21)
        var directions = (0..<(features * d)).map { _ in rng.nextNormal() }
        for f in 0..<features {
            let norm = (0..<d).reduce(Float(0)) { $0 + directions[f * d + $1] * directions[f * d + $1] }.squareRoot()
            for j in 0..<d { directions[f * d + j] /= norm }
        }
        let weights = (0..<features).map { pow(Double($0 + 1), -0.7) }
        let probabilities = weights.map { 4 * $0 / weights.reduce(0, +) }
        let truth = try #require(EffectiveFeatures(mass: probabilities)).effectiveFeatures
        var x = [Float](repeating: 0, count: rows * d)
        var trueCodes = [Float](repeating: 0, count: rows * features)
        for r in 0..<rows {
            for f in 0..<features where Double(rng.nextUniform()) < probabilities[f] {
                let m = Float(-Foundation.log(max(1 - Double(rng.nextUniform()), 1e-12)))
                trueCodes[r * features + f] = m
                for j in 0..<d { x[r * d + j] += m * directions[f * d + j] }
            }
            for j in 0..<d { x[r * d + j] += 0.01 * rng.nextNormal() }
        }
        // The oracle: the true codes themselves give F_true up to sampling error.
        let oracle = try FeatureCount.measure(codes: Tensor(shape: [rows, features], scalars: trueCodes), neurons: d)
        #expect(Swift.abs(oracle.effectiveFeatures - truth) < 0.02 * truth, "oracle \(oracle.effectiveFeatures) vs \(truth)")

        let dir = try Fixtures.temporaryDirectory()
        do {
            let file = try HDF5File(creating: dir + "/oracle.h5")
            let dataset = try HDF5Dataset(creating: "acts", in: file, type: .float32, rowShape: [d], chunkRows: 512)
            try x.withUnsafeBytes { try dataset.append($0.baseAddress!, rows: rows, type: .float32) }
        }
        let settings = SAETrainingSettings(architecture: "batchtopk", dSAE: 2 * features, k: 4, learningRate: 3e-3, batchSize: 512,
                                           steps: 1200, logEvery: 400, activations: dir + "/oracle.h5", dataset: "acts")
        _ = try SAETrainer(settings: settings).train(output: dir + "/sae", resume: false)
        let measured = try FeatureCount.measure(try SparseAutoencoder.load(directory: dir + "/sae"),
                                                reader: try ActivationReader(path: dir + "/oracle.h5", dataset: "acts"))
        print("oracle: F_true \(truth), from true codes \(oracle.effectiveFeatures), through the SAE \(measured.effectiveFeatures) (decoder-weighted \(measured.variants.decoderWeighted)), ψ \(measured.superposition)")
        #expect(Swift.abs(measured.effectiveFeatures - truth) < 0.1 * truth, "SAE \(measured.effectiveFeatures) vs \(truth)")
    }
}
