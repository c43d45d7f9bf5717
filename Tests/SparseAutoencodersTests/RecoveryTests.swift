import ActivationStore
import Foundation
import InterpCore
import InterpTestSupport
import SparseAutoencoders
import Testing

/// Dictionary recovery on synthetic data with a known dictionary, against SAELens trained on the same rows with the
/// same settings (fixtures/make_recovery.py, which regenerates these rows from the same SplitMix64 sequence).
@Suite struct RecoveryTests {
    struct Reference: Decodable {
        struct DataInfo: Decodable { let first_row_head: [Float]; let mean_row_norm: Double }
        struct Outcome: Decodable { let explained_variance: Double; let recovered: Double }
        let data: DataInfo
        let topk: Outcome
        let standard: Outcome
    }

    static let (d, features, active, rows, seed) = (64, 256, 5, 32768, UInt64(5))

    /// 256 unit directions in 64 dimensions; each row sums 5 of them with Exponential(1) magnitudes, plus N(0, 0.01²).
    static func makeData() -> (directions: [Float], rows: [Float]) {
        var rng = SeededRandom(seed: seed)
        var directions = (0..<(features * d)).map { _ in rng.nextNormal() }
        for f in 0..<features {
            let norm = (0..<d).reduce(0.0) { $0 + Double(directions[f * d + $1]) * Double(directions[f * d + $1]) }.squareRoot()
            for j in 0..<d { directions[f * d + j] = Float(Double(directions[f * d + j]) / norm) }
        }
        var x = [Float](repeating: 0, count: rows * d)
        for r in 0..<rows {
            for _ in 0..<active {
                let f = Int(rng.next() % UInt64(features))
                let m = Float(-Foundation.log(1 - Double(rng.nextUniform())))
                for j in 0..<d { x[r * d + j] += m * directions[f * d + j] }
            }
            for j in 0..<d { x[r * d + j] += 0.01 * rng.nextNormal() }
        }
        return (directions, x)
    }

    @Test func topKAndStandardRecoverTheDictionaryAsWellAsSAELens() throws {
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/sae/recovery-saelens.json")))
        let (truth, x) = Self.makeData()
        // The same rows SAELens trained on.
        #expect(compare(Array(x[0..<4]), reference.data.first_row_head, atol: 1e-5).passed)
        let norms = (0..<Self.rows).map { r in (0..<Self.d).reduce(0.0) { $0 + Double(x[r * Self.d + $1]) * Double(x[r * Self.d + $1]) }.squareRoot() }
        #expect(Swift.abs(norms.reduce(0, +) / Double(Self.rows) - reference.data.mean_row_norm) < 1e-4)

        let dir = try Fixtures.temporaryDirectory()
        do {
            let file = try HDF5File(creating: dir + "/dictionary.h5")
            let dataset = try HDF5Dataset(creating: "acts", in: file, type: .float32, rowShape: [Self.d], chunkRows: 512)
            try x.withUnsafeBytes { try dataset.append($0.baseAddress!, rows: Self.rows, type: .float32) }
        }
        let reader = try ActivationReader(path: dir + "/dictionary.h5", dataset: "acts")
        for (architecture, expected) in [("topk", reference.topk), ("standard", reference.standard)] {
            let settings = SAETrainingSettings(architecture: architecture, dSAE: 512, k: 8, l1Coefficient: 1.0, learningRate: 3e-3,
                                               batchSize: 512, steps: 600, logEvery: 100, activations: dir + "/dictionary.h5", dataset: "acts")
            _ = try SAETrainer(settings: settings).train(output: dir + "/" + architecture, resume: false)
            let sae = try SparseAutoencoder.load(directory: dir + "/" + architecture)
            let ev = try SAEEvaluation.evaluate(sae, reader: reader).explainedVariance
            // Fraction of true directions with a decoder row at cosine > 0.9.
            let decoder = sae.parameters.wDec.scalars, dNorms = sae.parameters.decoderNorms
            var found = 0
            for f in 0..<Self.features {
                var best: Float = -1
                for i in 0..<512 {
                    var dot: Float = 0
                    for j in 0..<Self.d { dot += truth[f * Self.d + j] * decoder[i * Self.d + j] }
                    best = max(best, dot / max(dNorms[i], 1e-12))
                }
                if best > 0.9 { found += 1 }
            }
            let recovered = Double(found) / Double(Self.features)
            print("recovery \(architecture): interp EV \(ev), recovered \(recovered); SAELens EV \(expected.explained_variance), recovered \(expected.recovered)")
            #expect(recovered >= 0.95, "\(architecture): recovered \(recovered)")
            #expect(ev >= expected.explained_variance - 0.005, "\(architecture): EV \(ev) vs SAELens \(expected.explained_variance)")
        }
    }
}
