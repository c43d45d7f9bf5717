import InterpCore

/// TransformerLens's `Attention` with its weights in the layout the forward pass uses: `W_Q`, `W_K`, `W_V` packed as
/// one `[d_model, 3·n_heads·d_head]` layer (Q heads | K heads | V heads, each `d_head` wide), so one product makes the
/// rows of `hook_q`, `hook_k` and `hook_v` and each is a column block of them; `W_O` `[n_heads·d_head, d_model]` and
/// `b_O`.
public struct SelfAttention: Sendable {
    /// Which of a head's three projections.
    public enum Projection: Int, CaseIterable, Sendable {
        case q, k, v
    }

    public let heads: Int
    public let headDim: Int
    public let dModel: Int
    public let causal: Bool
    /// Scores are divided by this.
    public let attnScale: Float
    /// `[d_model, 3·H·d]`.
    public let qkv: Linear
    /// `[H·d, d_model]` and `b_O`.
    public let output: Linear

    public init(qkv: Linear, output: Linear, heads: Int, headDim: Int, causal: Bool, attnScale: Float) {
        precondition(qkv.outWidth == 3 * heads * headDim && output.inWidth == heads * headDim && qkv.inWidth == output.outWidth)
        self.qkv = qkv
        self.output = output
        self.heads = heads
        self.headDim = headDim
        self.dModel = qkv.inWidth
        self.causal = causal
        self.attnScale = attnScale
    }

    /// Packs TransformerLens's per-head weights: `W_Q/K/V` `[H, d_model, d_head]`, `b_Q/K/V` `[H, d_head]`.
    public init(wQ: [Float], wK: [Float], wV: [Float], bQ: [Float], bK: [Float], bV: [Float], wO: [Float], bO: [Float],
                heads H: Int, headDim d: Int, dModel D: Int, causal: Bool, attnScale: Float) {
        let hd = H * d
        var w = [Float](repeating: 0, count: D * 3 * hd), b = [Float](repeating: 0, count: 3 * hd)
        for (block, (weight, bias)) in [(wQ, bQ), (wK, bK), (wV, bV)].enumerated() {
            for h in 0..<H {
                for i in 0..<D {
                    for j in 0..<d { w[i * 3 * hd + block * hd + h * d + j] = weight[(h * D + i) * d + j] }
                }
                for j in 0..<d { b[block * hd + h * d + j] = bias[h * d + j] }
            }
        }
        self.init(qkv: Linear(weight: w, bias: b, inWidth: D, outWidth: 3 * hd),
                  output: Linear(weight: wO, bias: bO, inWidth: hd, outWidth: D),
                  heads: H, headDim: d, causal: causal, attnScale: attnScale)
    }

    /// Width of a q|k|v row.
    public var qkvWidth: Int { 3 * heads * headDim }
    /// Width of a `z` row: `H·d`.
    public var zWidth: Int { heads * headDim }

    /// The columns of a q|k|v row holding `projection` of `head`.
    public func columns(_ projection: Projection, head: Int) -> Range<Int> {
        let start = projection.rawValue * zWidth + head * headDim
        return start..<(start + headDim)
    }

    /// q|k|v rows `[rows, 3·H·d]` of the normalised input `x` `[rows, d_model]`.
    public func project(_ x: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>,
                        schedule: ProductSchedule = .library) {
        qkv.forward(x, rows: rows, into: out, schedule: schedule)
    }

    /// Only the chosen (projection, head) blocks of the q|k|v rows, one product per run of adjacent blocks; the other
    /// columns of `out` are left as they are.
    public func project(_ x: UnsafePointer<Float>, rows: Int, only chosen: [(Projection, head: Int)],
                        into out: UnsafeMutablePointer<Float>, schedule: ProductSchedule = .library) {
        if chosen.count == 3 * heads && Set(chosen.map { columns($0.0, head: $0.head).lowerBound }).count == 3 * heads {
            return project(x, rows: rows, into: out, schedule: schedule)
        }
        var runs: [Range<Int>] = []
        for start in chosen.map({ columns($0.0, head: $0.head).lowerBound }).sorted() {
            if let last = runs.last, last.upperBound == start {
                runs[runs.count - 1] = last.lowerBound..<(start + headDim)
            } else if runs.last.map({ $0.contains(start) }) != true {
                runs.append(start..<(start + headDim))
            }
        }
        for run in runs { qkv.forward(x, rows: rows, columns: run, into: out, ldo: qkvWidth, schedule: schedule) }
    }

    /// The attention shape of a batch of `batch` sequences of `positions`, for the three-step kernels.
    public func shape(batch: Int, positions: Int) -> AttentionShape {
        AttentionShape(batch: batch, positions: positions, heads: heads, headDim: headDim, causal: causal)
    }

    /// Step 1 of 3: `hook_attn_scores` `[batch, head, q, k]` from q|k|v rows (−∞ above the diagonal when causal).
    public func scores(_ qkvRows: UnsafePointer<Float>, batch: Int, positions: Int, into scores: UnsafeMutablePointer<Float>) {
        Attention.scores(qkv: qkvRows, shape(batch: batch, positions: positions), attnScale: attnScale, into: scores)
    }

    /// Step 2 of 3: the softmax of the scores in place (`hook_pattern`). `maskIntact`: nothing has changed the masked
    /// scores since step 1, so the masked half need not be read.
    public func softmax(_ scores: UnsafeMutablePointer<Float>, batch: Int, positions: Int, maskIntact: Bool) {
        Attention.softmax(scores, rows: batch * heads * positions, width: positions,
                          causalBlock: causal && maskIntact ? positions : nil)
    }

    /// Step 3 of 3: `z` `[batch·pos, H·d]` from the pattern and the values.
    public func mix(pattern: UnsafePointer<Float>, _ qkvRows: UnsafePointer<Float>, batch: Int, positions: Int,
                    into z: UnsafeMutablePointer<Float>) {
        Attention.mix(pattern: pattern, qkv: qkvRows, shape(batch: batch, positions: positions), into: z)
    }

    /// All three steps at once, one row at a time (no pattern kept), for some heads and query positions.
    public func fused(_ qkvRows: UnsafePointer<Float>, batch: Int, positions: Int, into z: UnsafeMutablePointer<Float>,
                      heads chosen: [Int]? = nil, queries: [Int]? = nil) {
        Attention.fused(qkv: qkvRows, shape(batch: batch, positions: positions), attnScale: attnScale, into: z,
                        heads: chosen, queries: queries)
    }

    /// Attention over key/value sources given per sequence (a kept prefix, another run's rows); see `Attention.attend`.
    public func attend(sequences: Int, positions: Int, heads chosen: [Int]? = nil, queries: [Int]? = nil,
                       step: Attention.Step = .all, minimumChunk: Int = 1, sequence: (Int) -> AttentionSequence) {
        Attention.attend(sequences: sequences, heads: chosen ?? Array(0..<heads), headDim: headDim, positions: positions,
                         causal: causal, attnScale: attnScale, queryList: queries, step: step, minimumChunk: minimumChunk,
                         sequence: sequence)
    }

    /// `attn_out = z · W_O + b_O` `[rows, d_model]`.
    public func project(z: UnsafePointer<Float>, rows: Int, ldz: Int? = nil, into out: UnsafeMutablePointer<Float>,
                        schedule: ProductSchedule = .library) {
        output.forward(z, rows: rows, ldx: ldz, into: out, schedule: schedule)
    }

    /// One head's output `z_h · W_O[h]` (no bias) `[rows, d_model]`, rows `ldo` apart. `zHead` points at the head's
    /// `d_head` columns of the first z row, rows `ldz` apart (default `H·d`, the z rows as the attention writes them).
    public func headOutput(_ zHead: UnsafePointer<Float>, rows: Int, ldz: Int? = nil, head: Int, into out: UnsafeMutablePointer<Float>,
                           ldo: Int? = nil, schedule: ProductSchedule = .library) {
        output.multiply(zHead, rows: rows, ldx: ldz ?? zWidth, inputs: (head * headDim)..<((head + 1) * headDim),
                        into: out, ldo: ldo, schedule: schedule)
    }
}
