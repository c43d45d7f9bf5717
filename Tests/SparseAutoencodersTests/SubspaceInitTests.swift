import ActivationStore
import Foundation
import InterpCore
import InterpTestSupport
import SparseAutoencoders
import Testing

/// `--init subspace` on activations confined to a known low-dimensional subspace, as attention outputs are.
@Suite struct SubspaceInitTests {
    /// Rows in an r-dimensional subspace of d dimensions (each the sum of 3 of `features` unit directions inside it,
    /// with Exponential(1) magnitudes), plus noise far below the 1% variance cut.
    static func makeStore(_ path: String, d: Int = 64, r: Int = 6, features: Int = 24, rows: Int = 4096) throws -> [Float] {
        var rng = SeededRandom(seed: 77)
        // An orthonormal basis of the subspace (Gram–Schmidt on Gaussian vectors).
        var basis = [Float]()
        for _ in 0..<r {
            var v = (0..<d).map { _ in rng.nextNormal() }
            for k in 0..<(basis.count / d) {
                let dot = (0..<d).reduce(Float(0)) { $0 + v[$1] * basis[k * d + $1] }
                for j in 0..<d { v[j] -= dot * basis[k * d + j] }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            basis += v.map { $0 / norm }
        }
        let directions = (0..<features).map { _ in
            let v = (0..<r).map { _ in rng.nextNormal() }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return v.map { $0 / norm }
        }
        var values = [Float](repeating: 0, count: rows * d)
        for row in 0..<rows {
            for _ in 0..<3 {
                let f = directions[Int(rng.nextUniform() * Float(features)) % features], m = -log(max(rng.nextUniform(), 1e-7))
                for k in 0..<r { for j in 0..<d { values[row * d + j] += m * f[k] * basis[k * d + j] } }
            }
            for j in 0..<d { values[row * d + j] += 0.001 * rng.nextNormal() }
        }
        let file = try HDF5File(creating: path)
        let dataset = try HDF5Dataset(creating: "acts", in: file, type: .float32, rowShape: [d], chunkRows: 256)
        try values.withUnsafeBytes { try dataset.append($0.baseAddress!, rows: rows, type: .float32) }
        return basis
    }

    @Test func findsTheSubspaceAndDrawsDecoderRowsInIt() throws {
        let path = try Fixtures.temporaryDirectory() + "/low-rank.h5"
        let basis = try Self.makeStore(path)
        let reader = try ActivationReader(path: path, dataset: "acts")
        let subspace = try SubspaceInitialization.activeSubspace(of: try SubspaceInitialization.sample(reader))
        #expect(subspace.rank == 6 && subspace.dimension == 64 && subspace.varianceCovered >= 0.99)
        // Every decoder row lies in the true subspace: its projection onto the basis keeps all of its norm.
        let p = SubspaceInitialization.parameters(dSAE: 40, subspace: subspace, seed: 1)
        for i in 0..<40 {
            let row = Array(p.wDec.scalars[(i * 64)..<((i + 1) * 64)])
            let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            let projected = (0..<6).reduce(Float(0)) { acc, k in
                let dot = (0..<64).reduce(Float(0)) { $0 + row[$1] * basis[k * 64 + $1] }
                return acc + dot * dot
            }.squareRoot()
            #expect(Swift.abs(norm - 0.1) < 1e-5 && projected > 0.99 * norm, "row \(i): \(projected) of \(norm)")
        }
        #expect(p.wEnc.scalars[3 * 40 + 7] == p.wDec.scalars[7 * 64 + 3])
    }

    /// The effect that motivates it: TopK latents that start outside the active subspace mostly never fire; started
    /// inside it, they do.
    @Test func keepsLatentsAliveWhereTheDefaultInitLeavesThemDead() throws {
        let dir = try Fixtures.temporaryDirectory()
        _ = try Self.makeStore(dir + "/low-rank.h5", d: 128, r: 12, features: 2048, rows: 8192)
        func deadLatents(_ initialization: String) throws -> (dead: Int, ev: Float, rank: Int?) {
            let settings = SAETrainingSettings(architecture: "topk", dSAE: 256, k: 4, learningRate: 2e-3, batchSize: 256, steps: 300,
                                               deadFeatureWindow: 50, logEvery: 50, activations: dir + "/low-rank.h5", dataset: "acts",
                                               initialization: initialization)
            let summary = try SAETrainer(settings: settings).train(output: dir + "/" + initialization, resume: false)
            return (summary.deadLatents, summary.finalExplainedVariance, summary.subspaceRank)
        }
        let standard = try deadLatents("default"), subspace = try deadLatents("subspace")
        #expect(subspace.rank == 12 && standard.rank == nil)
        #expect(Double(subspace.dead) <= 0.85 * Double(standard.dead), "dead latents: subspace \(subspace.dead), default \(standard.dead)")
        #expect(subspace.ev >= standard.ev - 0.02, "explained variance: subspace \(subspace.ev), default \(standard.ev)")
        let cfg = try String(contentsOfFile: dir + "/subspace/cfg.json", encoding: .utf8)
        #expect(cfg.contains("\"interp_subspace_rank\":12") && cfg.contains("\"initialization\":\"subspace\""))
        print("subspace init on 12-of-128-dimensional data, TopK k=4, 256 latents, 300 steps: dead latents default \(standard.dead), subspace \(subspace.dead); EV \(standard.ev) vs \(subspace.ev)")
    }
}
