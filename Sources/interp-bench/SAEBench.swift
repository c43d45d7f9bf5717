import ArgumentParser
import Foundation
import Interp

struct SAEBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sae",
        abstract: "The sae-relu / sae-topk workloads: 409,600 × 512 synthetic activations, d_sae 4,096, batch 4,096, 100 steps.",
        discussion: """
        The data: 2,048 random unit directions in 512 dimensions; each row sums 20 of them (drawn with replacement), \\
        each scaled by an Exponential(1) magnitude, plus N(0, 0.01²) noise; stored as `activations` in 4,096-row chunks. \\
        It is made once at --data and reused.
        """)
    @Option(help: "standard (sae-relu: L1 5.0), topk (sae-topk: k 32), or batchtopk / jumprelu for comparison.") var architecture = "standard"
    @Option(help: "L1 coefficient (standard).") var l1: Float = 5.0
    @Option(help: "Learning rate.") var lr: Float = 4e-4
    @Option(help: "Seed (initialisation and data order).") var seed: UInt64 = 0
    @Option(help: "Where the synthetic store lives (made if missing).") var data = (NSTemporaryDirectory() as NSString).appendingPathComponent("interp-bench-sae-data.h5")
    @Option(help: "Training steps.") var steps = 100
    @Option(help: "Rows in the synthetic store.") var rows = 409_600

    func run() throws {
        if !FileManager.default.fileExists(atPath: data) { try makeData() }
        let directionsFile = data + ".directions.f32"    // the true directions, raw float32 [2048 × 512], for peer scripts
        if !FileManager.default.fileExists(atPath: directionsFile) {
            try trueDirections().withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: directionsFile)) }
        }
        let out = (NSTemporaryDirectory() as NSString).appendingPathComponent("interp-bench-sae-\(getpid())")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let settings = SAETrainingSettings(architecture: architecture, dSAE: 4096, k: ["topk", "batchtopk"].contains(architecture) ? 32 : nil,
                                           l1Coefficient: l1, learningRate: lr, batchSize: 4096, steps: steps, seed: seed,
                                           logEvery: steps, activations: data, dataset: "activations")
        let trainer = try SAETrainer(settings: settings)
        let start = Date()
        let summary = try trainer.train(output: out, resume: false)
        let seconds = Date().timeIntervalSince(start)
        let tokens = Double(steps * 4096)
        print("sae-\(architecture == "standard" ? "relu" : architecture): \(steps) steps × 4096 rows in \(String(format: "%.2f", seconds)) s = \(String(format: "%.0f", tokens / seconds)) tokens/s; explained variance \(String(format: "%.4f", summary.finalExplainedVariance)), L0 \(String(format: "%.1f", summary.finalL0))")
        print("  recovered directions (max cosine with a decoder row > 0.9): \(try recovered(out)) of 2048")
        print("  peak RSS: \(String(format: "%.0f", peakRSSMegabytes())) MB; BLAS: \(BLASInfo.coreName), \(BLASInfo.threads) threads")
    }

    /// The synthetic data's true directions, regenerated from the same seed as `makeData`.
    func trueDirections() -> [Float] {
        let d = 512, features = 2048
        var rng = SeededRandom(seed: 42)
        var directions = [Float](repeating: 0, count: features * d)
        for f in 0..<features {
            var norm: Float = 0
            for j in 0..<d { let v = rng.nextNormal(); directions[f * d + j] = v; norm += v * v }
            for j in 0..<d { directions[f * d + j] /= norm.squareRoot() }
        }
        return directions
    }

    /// True directions whose best cosine with a (normalised) decoder row exceeds 0.9.
    func recovered(_ directory: String) throws -> Int {
        let sae = try SparseAutoencoder.load(directory: directory)
        let d = 512, features = 2048, S = sae.config.dSAE
        var decoder = sae.parameters.wDec.scalars
        let norms = sae.parameters.decoderNorms
        for i in 0..<S { for j in 0..<d { decoder[i * d + j] /= max(norms[i], 1e-12) } }
        let truth = trueDirections()
        var cosines = [Float](repeating: 0, count: features * S)
        truth.withUnsafeBufferPointer { t in decoder.withUnsafeBufferPointer { w in cosines.withUnsafeMutableBufferPointer { c in
            GEMM.multiply(m: features, n: S, k: d, t.baseAddress!, lda: d, w.baseAddress!, ldb: d, transposeB: true, c.baseAddress!, ldc: S)
        } } }
        return (0..<features).filter { f in (0..<S).contains { cosines[f * S + $0] > 0.9 } }.count
    }

    func makeData() throws {
        let d = 512, features = 2048, chunk = 4096
        let directions = trueDirections()
        var rng = SeededRandom(seed: 43)
        let file = try HDF5File(creating: data, truncate: true)
        let dataset = try HDF5Dataset(creating: "activations", in: file, type: .float32, rowShape: [d], chunkRows: chunk)
        var block = [Float](repeating: 0, count: chunk * d)
        var written = 0
        while written < rows {
            let count = min(chunk, rows - written)
            for r in 0..<count {
                let row = r * d
                for j in 0..<d { block[row + j] = rng.nextNormal() * 0.01 }
                for _ in 0..<20 {
                    let f = Int(rng.next() % UInt64(features))
                    let magnitude = -Foundation.log(max(Float(1) - rng.nextUniform(), 1e-12))
                    for j in 0..<d { block[row + j] += magnitude * directions[f * d + j] }
                }
            }
            try block.withUnsafeBytes { try dataset.append($0.baseAddress!, rows: count, type: .float32) }
            written += count
        }
        FileHandle.standardError.write(Data("made \(rows) synthetic rows at \(data)\n".utf8))
    }
}
