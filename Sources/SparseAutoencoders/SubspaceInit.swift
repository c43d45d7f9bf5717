import ActivationStore
import Foundation
import InterpCore

/// interp's `--init subspace`: decoder directions drawn inside the active subspace of the activations, the principal
/// directions of a sample that cover 99% of its variance. "Attention Layers Add Into Low-Dimensional Residual
/// Subspaces" reports that attention outputs occupy such a subspace and that SAEs whose latents start outside it
/// leave most of them dead; starting inside it keeps them alive.
public enum SubspaceInitialization {
    public struct Subspace: Sendable {
        /// Orthonormal rows `[rank × dimension]`, largest variance first.
        public let basis: [Float]
        public let rank: Int
        public let dimension: Int
        /// The fraction of the sample's variance the basis covers.
        public let varianceCovered: Double
    }

    /// The principal directions of the centred rows of `sample [rows × d]` covering at least `fraction` of the variance.
    public static func activeSubspace(of sample: Tensor, fraction: Double = 0.99) throws -> Subspace {
        let rows = sample.shape[0], d = sample.count / max(rows, 1)
        guard rows >= 2, d > 0 else { throw InterpError("the subspace needs at least two sample rows") }
        var mean = [Float](repeating: 0, count: d)
        var centred = sample.scalars
        centred.withUnsafeMutableBufferPointer { c in
            GEMM.columnSums(c.baseAddress!, rows: rows, cols: d, into: &mean)
            for j in 0..<d { mean[j] /= Float(rows) }
            for r in 0..<rows { for j in 0..<d { c[r * d + j] -= mean[j] } }
        }
        var covariance = [Float](repeating: 0, count: d * d)
        centred.withUnsafeBufferPointer { c in covariance.withUnsafeMutableBufferPointer { cov in
            GEMM.multiply(m: d, n: d, k: rows, c.baseAddress!, lda: d, transposeA: true, c.baseAddress!, ldb: d, cov.baseAddress!, ldc: d,
                          alpha: 1 / Float(rows - 1))
        } }
        let (values, vectors) = try SymmetricEigen.decompose(covariance, n: d)
        let total = values.reduce(0.0) { $0 + Double(max($1, 0)) }
        guard total > 0, total.isFinite else { throw InterpError("the activations sampled for --init subspace have no variance") }
        var covered = 0.0, rank = 0
        for k in stride(from: d - 1, through: 0, by: -1) where covered < fraction * total {
            covered += Double(max(values[k], 0))
            rank += 1
        }
        let basis = (0..<rank).flatMap { r in vectors[((d - 1 - r) * d)..<((d - r) * d)] }
        return Subspace(basis: Array(basis), rank: rank, dimension: d, varianceCovered: covered / total)
    }

    /// Up to `maxRows` rows spread over the dataset: 16 evenly spaced contiguous blocks.
    public static func sample(_ reader: ActivationReader, maxRows: Int = 16_384) throws -> Tensor {
        let rows = min(reader.rows, maxRows), blocks = min(16, rows)
        var values: [Float] = []
        values.reserveCapacity(rows * reader.width)
        for b in 0..<blocks {
            let count = rows * (b + 1) / blocks - rows * b / blocks
            let start = (reader.rows - count) * b / max(blocks - 1, 1)
            values += try reader.read(rows: start..<(start + count)).scalars
        }
        return Tensor(shape: [rows, reader.width], scalars: values)
    }

    /// SAELens's initialisation with the decoder rows drawn in the subspace: each row a standard-normal combination of
    /// the basis, scaled to `decoderInitNorm`; `W_enc = W_decᵀ`, biases zero, thresholds at `threshold` if given.
    public static func parameters(dSAE: Int, subspace: Subspace, decoderInitNorm: Float = 0.1, threshold: Float? = nil,
                                  seed: UInt64) -> SAEParameters {
        let d = subspace.dimension, r = subspace.rank
        var rng = SeededRandom(seed: seed)
        var directions = Tensor(zeros: [dSAE, d])
        var coefficients = [Float](repeating: 0, count: r)
        for i in 0..<dSAE {
            for k in 0..<r { coefficients[k] = rng.nextNormal() }
            for j in 0..<d {
                var w: Float = 0
                for k in 0..<r { w += coefficients[k] * subspace.basis[k * d + j] }
                directions.scalars[i * d + j] = w
            }
        }
        return parametersFromDecoderDirections(directions, decoderInitNorm: decoderInitNorm, threshold: threshold)
    }
}
