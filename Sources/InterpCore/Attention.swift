/// Shape of one attention layer's work: `qkv` rows are `[batch·pos]`, columns `[Q heads | K heads | V heads]`,
/// each head `headDim` wide, so `hook_q/k/v` `[batch, pos, head, d_head]` are column blocks of it.
public struct AttentionShape: Equatable, Sendable {
    public var batch: Int
    public var positions: Int
    public var heads: Int
    public var headDim: Int
    public var causal: Bool

    public init(batch: Int, positions: Int, heads: Int, headDim: Int, causal: Bool) {
        self.batch = batch
        self.positions = positions
        self.heads = heads
        self.headDim = headDim
        self.causal = causal
    }

    /// Width of one `qkv` row: `3 · heads · headDim`.
    public var qkvWidth: Int { 3 * heads * headDim }
    /// Width of one `z` row: `heads · headDim`.
    public var zWidth: Int { heads * headDim }
    /// Elements of `[batch, head, q_pos, k_pos]`.
    public var patternCount: Int { batch * heads * positions * positions }
}

/// Scaled dot-product attention in three steps, so hooks can sit between them as in TransformerLens:
/// scores (masked with −∞, `hook_attn_scores`) → softmax (`hook_pattern`) → mix values (`hook_z`).
public enum Attention {
    /// `scores[b, h, q, k] = Q[b,q,h]·K[b,k,h] / attnScale`, and −∞ where `k > q` in causal attention.
    public static func scores(qkv: UnsafePointer<Float>, _ shape: AttentionShape, attnScale: Float,
                              into scores: UnsafeMutablePointer<Float>) {
        let p = shape.positions, d = shape.headDim, ld = shape.qkvWidth, keyOffset = shape.zWidth
        for b in 0..<shape.batch {
            for h in 0..<shape.heads {
                let q = qkv + b * p * ld + h * d
                let block = scores + (b * shape.heads + h) * p * p
                GEMM.multiply(m: p, n: p, k: d, q, lda: ld, q + keyOffset, ldb: ld, transposeB: true,
                              block, ldc: p, alpha: 1 / attnScale)
                if shape.causal {
                    for row in 0..<p {
                        for col in (row + 1)..<max(p, row + 1) { block[row * p + col] = -.infinity }
                    }
                }
            }
        }
    }

    /// Row-wise softmax over the last axis, in place. A row of only −∞ becomes zeros (as TL turns NaN into 0).
    /// With `causalBlock` = p, rows are taken as `[…, p, p]` blocks whose row q is −∞ after column q: only the
    /// first q + 1 entries are computed and the rest set to 0 (the same result, half the work).
    public static func softmax(_ scores: UnsafeMutablePointer<Float>, rows: Int, width: Int, causalBlock: Int? = nil) {
        parallelChunks(rows, minimumChunk: 256) { range in
            for r in range {
                softmaxRow(scores + r * width, valid: causalBlock.map { min(r % $0 + 1, width) } ?? width, width: width)
            }
        }
    }

    /// Softmax of one row over its first `valid` entries, in place; entries from `valid` to `width` become 0, and so
    /// does a row of only −∞.
    @inline(__always)
    public static func softmaxRow(_ row: UnsafeMutablePointer<Float>, valid: Int, width: Int) {
        var maximum = -Float.infinity
        for i in 0..<valid { maximum = max(maximum, row[i]) }
        if maximum == -.infinity {
            for i in 0..<width { row[i] = 0 }
            return
        }
        let m = Lanes(repeating: maximum)
        mapInPlace(row, valid, vector: { vectorExp($0 - m) }, scalar: { expf($0 - maximum) })
        let inverse = 1 / vectorSum(row, valid)
        for i in 0..<valid { row[i] *= inverse }
        for i in valid..<width { row[i] = 0 }
    }

    /// `z[b, q, h] = Σ_k pattern[b, h, q, k] · V[b, k, h]`, written as `[batch·pos, heads·headDim]`.
    public static func mix(pattern: UnsafePointer<Float>, qkv: UnsafePointer<Float>, _ shape: AttentionShape,
                           into z: UnsafeMutablePointer<Float>) {
        let p = shape.positions, d = shape.headDim, ld = shape.qkvWidth, valueOffset = 2 * shape.zWidth
        for b in 0..<shape.batch {
            for h in 0..<shape.heads {
                GEMM.multiply(m: p, n: d, k: p, pattern + (b * shape.heads + h) * p * p, lda: p,
                              qkv + b * p * ld + valueOffset + h * d, ldb: ld,
                              z + b * p * shape.zWidth + h * d, ldc: shape.zWidth)
            }
        }
    }

    /// All three steps at once, `z` from `qkv`, one (batch, head) at a time across cores: for short sequences and
    /// small heads, where a matrix product per (batch, head) costs more in calls than in arithmetic. No hooks can sit
    /// between the steps.
    /// `heads` restricts the work to some heads (their z columns only are written), `queries` to some query
    /// positions (their z rows only).
    public static func fused(qkv: UnsafePointer<Float>, _ shape: AttentionShape, attnScale: Float, into z: UnsafeMutablePointer<Float>,
                             heads: [Int]? = nil, queries: [Int]? = nil) {
        let p = shape.positions, d = shape.headDim, ld = shape.qkvWidth, hd = shape.zWidth
        let which = heads ?? Array(0..<shape.heads), H = which.count
        let inverseScale = 1 / attnScale
        parallelChunks(shape.batch * H, minimumChunk: max(1, 4096 / max(p * p * d, 1))) { items in
            let row = UnsafeMutablePointer<Float>.allocate(capacity: p)
            defer { row.deallocate() }
            for item in items {
                let b = item / H, h = which[item % H]
                let base = qkv + b * p * ld
                for q in queries ?? Array(0..<p) {
                    let query = base + q * ld + h * d
                    let valid = shape.causal ? q + 1 : p
                    for k in 0..<valid { row[k] = vectorDot(query, base + k * ld + hd + h * d, d) * inverseScale }
                    softmaxRow(row, valid: valid, width: p)
                    let out = z + (b * p + q) * hd + h * d
                    out.update(repeating: 0, count: d)
                    for k in 0..<valid { vectorAddScaled(out, row[k], base + k * ld + 2 * hd + h * d, d) }
                }
            }
        }
    }

    /// Reference: all three steps with loops in Double.
    public static func naive(qkv: [Float], _ shape: AttentionShape, attnScale: Float)
        -> (scores: [Float], pattern: [Float], z: [Float]) {
        let p = shape.positions, d = shape.headDim, ld = shape.qkvWidth, hd = shape.zWidth
        var scores = [Float](repeating: 0, count: shape.patternCount)
        var pattern = scores
        var z = [Float](repeating: 0, count: shape.batch * p * hd)
        for b in 0..<shape.batch {
            for h in 0..<shape.heads {
                let base = (b * shape.heads + h) * p * p
                for q in 0..<p {
                    var row = [Double](repeating: -.infinity, count: p)
                    for k in 0..<p where !(shape.causal && k > q) {
                        var dot = 0.0
                        for i in 0..<d {
                            dot += Double(qkv[(b * p + q) * ld + h * d + i]) * Double(qkv[(b * p + k) * ld + hd + h * d + i])
                        }
                        row[k] = dot / Double(attnScale)
                    }
                    let maximum = row.max()!
                    let exps = row.map { $0 == -.infinity ? 0 : Foundation.exp($0 - maximum) }
                    let total = exps.reduce(0, +)
                    for k in 0..<p {
                        scores[base + q * p + k] = Float(row[k])
                        pattern[base + q * p + k] = Float(exps[k] / total)
                    }
                    for i in 0..<d {
                        var sum = 0.0
                        for k in 0..<p { sum += exps[k] / total * Double(qkv[(b * p + k) * ld + 2 * hd + h * d + i]) }
                        z[(b * p + q) * hd + h * d + i] = Float(sum)
                    }
                }
            }
        }
        return (scores, pattern, z)
    }
}

import Foundation
