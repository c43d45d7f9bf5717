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

    /// All three steps at once over a batch's own keys and values, `z` from `qkv`, one (batch, head) at a time
    /// across cores: for short sequences and small heads, where a matrix product per (batch, head) costs more in calls
    /// than in arithmetic. No hooks can sit between the steps. `heads` restricts the work to some heads (their z columns
    /// only are written), `queries` to some query positions (their z rows only).
    public static func fused(qkv: UnsafePointer<Float>, _ shape: AttentionShape, attnScale: Float, into z: UnsafeMutablePointer<Float>,
                             heads: [Int]? = nil, queries: [Int]? = nil) {
        let p = shape.positions, ld = shape.qkvWidth, hd = shape.zWidth
        attend(sequences: shape.batch, heads: heads ?? Array(0..<shape.heads), headDim: shape.headDim, positions: p,
               causal: shape.causal, attnScale: attnScale, queryList: queries,
               minimumChunk: max(1, 4096 / max(p * p * shape.headDim, 1))) { b in
            let base = qkv + b * p * ld
            return AttentionSequence(keyValues: KeyValueSource(keys: base + hd, values: base + 2 * hd, stride: ld),
                                     queries: PositionRows(base, stride: ld),
                                     output: PositionRows(z + b * p * hd, stride: hd), queryRange: 0..<p)
        }
    }

    /// What `attend` does: everything (scores, softmax and the mix, one row at a time, nothing kept), or one half of
    /// it, so that the pattern can be read or changed in between.
    public enum Step: Sendable {
        case all
        /// Scores and softmax into each sequence's `pattern` rows.
        case pattern
        /// The mix of the `pattern` rows as they are (over every key position, since an edited pattern may weigh
        /// positions the causal mask had zeroed).
        case mix
    }

    /// Attention of chosen query positions over a key/value source, per (sequence, head) across cores:
    /// `out[q, h] = Σ_k softmax_k(Q[q, h] · K[k, h] / attnScale) · V[k, h]`, keys `k ≤ q` when causal.
    ///
    /// Each sequence says where its queries, keys, values and outputs are (`sequence(i)`); its keys may come from
    /// two places (a prefix kept from another run, then its own rows). The heads are `heads` of `headDim` floats
    /// each, at column `h · headDim` of the query and output rows and at column `(h / groupSize) · headDim` of the
    /// key and value rows (`groupSize` query heads share a key/value head). `queryList`, when given, replaces every
    /// sequence's `queryRange`.
    public static func attend(sequences count: Int, heads: [Int], headDim d: Int, positions: Int, causal: Bool,
                              attnScale: Float, groupSize: Int = 1, queryList: [Int]? = nil, step: Step = .all,
                              minimumChunk: Int = 1, sequence: (Int) -> AttentionSequence) {
        let H = heads.count, inverseScale = 1 / attnScale
        guard H > 0, count > 0 else { return }
        parallelChunks(count * H, minimumChunk: minimumChunk) { items in
            let scratch = step == .all ? UnsafeMutablePointer<Float>.allocate(capacity: max(positions, 1)) : nil
            defer { scratch?.deallocate() }
            var current = -1
            var s = sequence(items.lowerBound / H)
            for item in items {
                let i = item / H, h = heads[item % H], kvColumn = (h / groupSize) * d
                if i != current { s = sequence(i); current = i }
                let source = s.keyValues
                func attendRow(_ q: Int) {
                    let valid = causal ? q + 1 : positions
                    let row = step == .all ? scratch! : s.pattern!.row(q) + h * positions
                    if step != .mix {
                        let query = s.queries.row(q) + h * d
                        source.forEachKey(upTo: valid, column: kvColumn) { k, key in row[k] = vectorDot(query, key, d) * inverseScale }
                        softmaxRow(row, valid: valid, width: positions)
                        if step == .pattern { return }
                    }
                    let out = s.output.row(q) + h * d
                    out.update(repeating: 0, count: d)
                    if step == .all {
                        source.forEachValue(upTo: valid, column: kvColumn) { k, value in vectorAddScaled(out, row[k], value, d) }
                    } else {
                        source.forEachValue(upTo: positions, column: kvColumn) { k, value in
                            if row[k] != 0 { vectorAddScaled(out, row[k], value, d) }
                        }
                    }
                }
                if let queryList { for q in queryList { attendRow(q) } } else { for q in s.queryRange { attendRow(q) } }
            }
        }
    }

    /// Reference for `attend`: one sequence, one head, every step in Double from the key and value rows as the
    /// source gives them. Returns the pattern `[queries.count, positions]` and the output `[queries.count, d]`.
    public static func attendNaive(queries: [[Float]], queryPositions: [Int], keys: [[Float]], values: [[Float]],
                                   causal: Bool, attnScale: Float) -> (pattern: [[Float]], out: [[Float]]) {
        let positions = keys.count, d = values.first?.count ?? 0
        var patterns: [[Float]] = [], outs: [[Float]] = []
        for (query, q) in zip(queries, queryPositions) {
            let valid = causal ? q + 1 : positions
            let scores = (0..<valid).map { k in zip(query, keys[k]).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } / Double(attnScale) }
            let maximum = scores.max() ?? 0
            let exps = scores.map { Foundation.exp($0 - maximum) }
            let total = exps.reduce(0, +)
            let weights = exps.map { $0 / total } + [Double](repeating: 0, count: positions - valid)
            patterns.append(weights.map(Float.init))
            outs.append((0..<d).map { i in Float((0..<positions).reduce(0.0) { $0 + weights[$1] * Double(values[$1][i]) }) })
        }
        return (patterns, outs)
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

/// Rows of floats indexed by sequence position: position `p`'s row is at `base + (p − first) · stride`.
public struct PositionRows {
    public var base: UnsafeMutablePointer<Float>
    public var first: Int
    public var stride: Int

    public init(_ base: UnsafeMutablePointer<Float>, first: Int = 0, stride: Int) {
        self.base = base
        self.first = first
        self.stride = stride
    }

    public init(_ base: UnsafePointer<Float>, first: Int = 0, stride: Int) {
        self.init(UnsafeMutablePointer(mutating: base), first: first, stride: stride)
    }

    @inline(__always) public func row(_ position: Int) -> UnsafeMutablePointer<Float> { base + (position - first) * stride }
}

/// Where one sequence's keys and values are: positions before `split` in a prefix (kept from another run, or a
/// cache), positions from `split` on in the sequence's own rows, whose first row is position `split`.
public struct KeyValueSource {
    public var prefixKeys: UnsafePointer<Float>?, prefixValues: UnsafePointer<Float>?, prefixStride: Int
    public var keys: UnsafePointer<Float>, values: UnsafePointer<Float>, stride: Int
    public var split: Int

    /// Keys and values all in the sequence's own rows.
    public init(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, stride: Int) {
        self.init(prefixKeys: nil, prefixValues: nil, prefixStride: 0, split: 0, keys: keys, values: values, stride: stride)
    }

    public init(prefixKeys: UnsafePointer<Float>?, prefixValues: UnsafePointer<Float>?, prefixStride: Int, split: Int,
                keys: UnsafePointer<Float>, values: UnsafePointer<Float>, stride: Int) {
        precondition(split == 0 || (prefixKeys != nil && prefixValues != nil), "a key/value prefix needs its rows")
        self.prefixKeys = prefixKeys
        self.prefixValues = prefixValues
        self.prefixStride = prefixStride
        self.keys = keys
        self.values = values
        self.stride = stride
        self.split = split
    }

    /// `body(k, key k + column)` for k in 0..<end: the prefix's rows, then the sequence's own, with no test per key.
    @inline(__always) func forEachKey(upTo end: Int, column: Int, _ body: (Int, UnsafePointer<Float>) -> Void) {
        walk(prefixKeys, keys, upTo: end, column: column, body)
    }

    /// `body(k, value k + column)` for k in 0..<end.
    @inline(__always) func forEachValue(upTo end: Int, column: Int, _ body: (Int, UnsafePointer<Float>) -> Void) {
        walk(prefixValues, values, upTo: end, column: column, body)
    }

    @inline(__always) private func walk(_ prefix: UnsafePointer<Float>?, _ own: UnsafePointer<Float>, upTo end: Int, column: Int,
                                        _ body: (Int, UnsafePointer<Float>) -> Void) {
        var k = 0
        if let prefix {
            var p = prefix + column
            while k < min(split, end) {
                body(k, p)
                p += prefixStride
                k += 1
            }
        }
        guard k < end else { return }
        var p = own + column + (k - split) * stride
        while k < end {
            body(k, p)
            p += stride
            k += 1
        }
    }
}

/// One sequence of an `Attention.attend` call: its keys and values, its query rows, its output rows, its pattern rows
/// (for the split steps: per query position, the heads' rows `positions` floats each, one after another) and the
/// query positions it attends from.
public struct AttentionSequence {
    public var keyValues: KeyValueSource
    public var queries: PositionRows
    public var output: PositionRows
    public var pattern: PositionRows?
    public var queryRange: Range<Int>

    public init(keyValues: KeyValueSource, queries: PositionRows, output: PositionRows, pattern: PositionRows? = nil,
                queryRange: Range<Int>) {
        self.keyValues = keyValues
        self.queries = queries
        self.output = output
        self.pattern = pattern
        self.queryRange = queryRange
    }
}
