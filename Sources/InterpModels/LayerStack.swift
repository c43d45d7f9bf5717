import InterpCore

/// The one layer stack: every forward pass of a model goes through it — the hooked forward, the base runs and
/// continued runs of patching, and the clean and corrupted runs ACDC's graph forward starts from.
///
/// Its entry points are parameters: a batch of sequences each entering at a layer of its own, from the embeddings
/// or from a residual stream kept from an earlier run, computing its positions from `start` on and attending to the
/// earlier run's keys and values before that; after the last layer's attention, optionally only each sequence's last
/// position (the rows the logits are read at); the unembedding of some of the vocabulary only; and an observer that
/// reads or edits the activations at the hook points through views of the stack's own buffers, or stops the pass.
public final class LayerStack {
    /// One sequence of the stack: positions `start..<positions` of `prompt` (a row of the token batch or of the
    /// earlier run), entering at `layer`.
    public struct Sequence: Sendable {
        public var prompt: Int
        public var start: Int
        public var layer: Int

        public init(prompt: Int, start: Int, layer: Int) {
            self.prompt = prompt
            self.start = start
            self.layer = layer
        }
    }

    /// Where a sequence's residual stream entering its first layer comes from.
    public enum Entry {
        /// The embeddings of these tokens (every sequence enters at layer 0).
        case tokens(TokenBatch)
        /// The residual stream entering each layer, `[prompts, positions, d_model]` per layer, and each layer's keys and
        /// values `[prompts, positions, H·d]` for the positions before a sequence's start.
        case earlierRun(residPre: [Tensor], keys: [Tensor], values: [Tensor])
    }

    /// What the stack shows an observer at a hook point: `rows` rows of `width` floats, `stride` apart, from `base`.
    /// Rows are the sequences' rows one after another (`offsets`); after the last layer's attention, when `pruned`,
    /// one row per sequence. Attention patterns and scores are laid out as `patternLayout` says.
    public struct View {
        public let base: UnsafeMutablePointer<Float>
        public let rows: Int
        public let width: Int
        public let stride: Int
        public let pruned: Bool
        public let patternLayout: PatternLayout?
    }

    public enum PatternLayout: Sendable {
        /// `[batch, head, query, key]`, every sequence whole.
        case batchHeadQueryKey
        /// Per row of the sequence (its query position), every head's row of `positions` keys.
        case rowHeadKey
    }

    public let model: TransformerModel
    let c: ModelConfig
    public let sequences: [Sequence]
    public let entry: Entry
    public let positions: Int
    /// First row of each sequence; `offsets[sequences.count]` is the rows of all.
    public let offsets: [Int]
    public let lastRowsOnly: Bool
    public let unembedding: Unembedding
    /// Whether the pass runs from the tokens, every sequence whole (from position 0, entering at layer 0): attention
    /// then runs as matrix products per (sequence, head), with scores and pattern `[batch, head, query, key]`; a pass
    /// from an earlier run attends one row at a time, over that run's keys and values before each sequence's start.
    let whole: Bool

    /// Whether the observer looks at a hook point (asked before the stack computes anything only a hook needs), and
    /// what it does there: read or edit the view in place, or throw to end the pass.
    let wants: (HookName) -> Bool
    let visit: (HookName, View) throws -> Void

    /// Whether the pass keeps what a backward pass needs (`retained`); off, it costs nothing.
    public let retain: Bool
    /// Filled by a retaining pass.
    public private(set) var retained = RetainedActivations()

    private let work: Buffers

    /// `sequences` must be ordered by entry layer (the rows of the sequences in a layer are then a prefix of the
    /// buffers); a pass from the tokens runs every prompt whole, in order. `lastRowsOnly`: after the last layer's
    /// attention, compute each sequence's last position only. `logitIndices`: the vocabulary entries to unembed, in
    /// that order (nil: all). `retain`: keep per layer what a backward pass needs (a pass from the tokens only). A
    /// view is valid only during the `visit` call that shows it.
    public init(model: TransformerModel, entry: Entry, positions: Int, sequences: [Sequence], lastRowsOnly: Bool,
                logitIndices: [Int]?, retain: Bool = false, wants: @escaping (HookName) -> Bool,
                visit: @escaping (HookName, View) throws -> Void) throws {
        try Self.check(model: model, entry: entry, positions: positions, sequences: sequences, lastRowsOnly: lastRowsOnly,
                       logitIndices: logitIndices, retain: retain)
        self.model = model
        c = model.config
        self.entry = entry
        self.positions = positions
        self.sequences = sequences
        var offsets = [0]
        for s in sequences { offsets.append(offsets.last! + positions - s.start) }
        self.offsets = offsets
        self.lastRowsOnly = lastRowsOnly
        unembedding = model.unembedding.selecting(logitIndices)
        if case .tokens = entry { whole = true } else { whole = false }
        self.wants = wants
        self.visit = visit
        self.retain = retain
        work = Buffers(rows: offsets.last!, sequences: sequences.count, positions: positions, config: model.config,
                       whole: whole, lastRowsOnly: lastRowsOnly)
    }

    /// What a stack can be asked to run: every sequence and buffer inside the model and the entry's runs, so the
    /// stack reads and writes nothing outside them.
    private static func check(model: TransformerModel, entry: Entry, positions P: Int, sequences: [Sequence], lastRowsOnly: Bool,
                              logitIndices: [Int]?, retain: Bool) throws {
        let c = model.config, L = c.nLayers, D = c.dModel, hd = c.nHeads * c.dHead
        guard P > 0, P <= c.nCtx else { throw InterpError("a layer stack of \(P) positions: the model's context is 1...\(c.nCtx)") }
        guard !sequences.isEmpty else { throw InterpError("a layer stack needs at least one sequence") }
        guard zip(sequences, sequences.dropFirst()).allSatisfy({ $0.layer <= $1.layer }) else {
            throw InterpError("layer stack sequences must be ordered by entry layer")
        }
        if let bad = logitIndices?.first(where: { !(0..<c.dVocabOut).contains($0) }) {
            throw InterpError("logit index \(bad) is outside the output vocabulary (0..<\(c.dVocabOut))")
        }
        switch entry {
        case let .tokens(tokens):
            guard tokens.positions == P, sequences.count == tokens.batch,
                  sequences.enumerated().allSatisfy({ $1.prompt == $0 && $1.start == 0 && $1.layer == 0 }) else {
                throw InterpError("a pass from the tokens runs every prompt whole, in order, from layer 0")
            }
            guard !lastRowsOnly else { throw InterpError("a pass from the tokens computes every row") }
        case let .earlierRun(residPre, keys, values):
            guard !retain else { throw InterpError("a retaining pass runs from the tokens") }
            guard residPre.count == L, keys.count == L, values.count == L, let prompts = residPre.first?.shape.first else {
                throw InterpError("an earlier run needs the residual stream, keys and values of each of the \(L) layers")
            }
            for l in 0..<L {
                guard residPre[l].shape == [prompts, P, D], keys[l].count == prompts * P * hd, values[l].count == prompts * P * hd else {
                    throw InterpError("the earlier run's layer \(l) does not hold \(prompts) prompts × \(P) positions")
                }
            }
            for s in sequences {
                guard (0..<prompts).contains(s.prompt), (0..<P).contains(s.start), (0..<L).contains(s.layer) else {
                    throw InterpError("layer stack sequence (prompt \(s.prompt), start \(s.start), layer \(s.layer)) is outside the earlier run's \(prompts) prompts × \(P) positions × \(L) layers")
                }
                guard c.attentionDir == .causal || s.start == 0 else {
                    throw InterpError("sequences of a bidirectional model must start at position 0")
                }
            }
        }
    }

    /// Runs the stack. Returns the logits `[rows read, logits read]`: every row, or one per sequence when
    /// `lastRowsOnly`, in sequence order.
    public func run() throws -> [Float] {
        let L = c.nLayers, D = c.dModel
        var active = 0
        for layer in 0..<L {
            let joinFirst = active
            while active < sequences.count && sequences[active].layer == layer { active += 1 }
            guard active > 0 else { continue }
            if active > joinFirst { try join(joinFirst..<active, layer: layer) }
            let rows = offsets[active], block = model.blocks[layer]
            let pruned = lastRowsOnly && layer == L - 1
            try show(.block(layer, .residPre), work.resid, rows: rows, width: D)
            if retain {
                retained.layers.append(RetainedActivations.Layer())
                retained.layers[layer].residPre = keep(work.resid, rows * D)
            }
            let attnIn = try normalize(work.resid, rows: rows, block.ln1, .block(layer, .ln1Scale), .block(layer, .ln1Normalized))
            if retain && !block.ln1.isIdentity {
                (retained.layers[layer].ln1Mean, retained.layers[layer].ln1Scale) = (keep(work.mean, rows), keep(work.scale, rows))
            }
            try attention(layer: layer, block.attention, input: attnIn, active: active, pruned: pruned)

            // From here on, one row per sequence when pruned (its last position), else every row.
            let n = pruned ? active : rows
            let stream: UnsafeMutablePointer<Float>
            if pruned {
                for i in 0..<active { (work.lastResid + i * D).update(from: work.resid + (offsets[i + 1] - 1) * D, count: D) }
                stream = work.lastResid
            } else {
                stream = work.resid
            }
            try show(.block(layer, .attnOut), work.attnOut, rows: n, width: D, pruned: pruned)
            add(work.attnOut, into: stream, count: n * D)
            guard let ln2 = block.ln2, let mlp = block.mlp else {
                try show(.block(layer, .residPost), stream, rows: n, width: D, pruned: pruned)
                continue
            }
            try show(.block(layer, .residMid), stream, rows: n, width: D, pruned: pruned)
            if retain { retained.layers[layer].residMid = keep(stream, n * D) }
            let mlpIn = try normalize(stream, rows: n, ln2, .block(layer, .ln2Scale), .block(layer, .ln2Normalized), pruned: pruned)
            if retain && !ln2.isIdentity {
                (retained.layers[layer].ln2Mean, retained.layers[layer].ln2Scale) = (keep(work.mean, n), keep(work.scale, n))
            }
            // The pre-activations are made apart from the activation when a hook or a backward pass needs them.
            let preHook = HookName.block(layer, .mlpPre), hookPre = wants(preHook)
            mlp.hidden(mlpIn, rows: n, into: work.hidden, activate: !hookPre && !retain)
            if hookPre || retain {
                try show(preHook, work.hidden, rows: n, width: mlp.width, pruned: pruned)
                if retain { retained.layers[layer].mlpPre = keep(work.hidden, n * mlp.width) }
                mlp.activate(work.hidden, rows: n)
            }
            try show(.block(layer, .mlpPost), work.hidden, rows: n, width: mlp.width, pruned: pruned)
            mlp.project(work.hidden, rows: n, into: work.mlpOut)
            try show(.block(layer, .mlpOut), work.mlpOut, rows: n, width: D, pruned: pruned)
            add(work.mlpOut, into: stream, count: n * D)
            try show(.block(layer, .residPost), stream, rows: n, width: D, pruned: pruned)
        }
        let rows = lastRowsOnly ? sequences.count : offsets.last!
        let stream = lastRowsOnly ? work.lastResid : work.resid
        if retain { retained.residFinal = keep(stream, rows * D) }
        let final = try normalize(stream, rows: rows, model.lnFinal, HookName(.lnFinalScale), HookName(.lnFinalNormalized),
                                  pruned: lastRowsOnly)
        if retain && !model.lnFinal.isIdentity { (retained.finalMean, retained.finalScale) = (keep(work.mean, rows), keep(work.scale, rows)) }
        let width = unembedding.width
        // Filled by the bias rows before the product accumulates into it, so no zero fill is needed first.
        return [Float](unsafeUninitializedCapacity: rows * width) { out, initialized in
            unembedding.forward(final, rows: rows, into: out.baseAddress!)
            initialized = rows * width
        }
    }

    // MARK: - Pieces

    /// The residual stream entering `layer` for the sequences joining there.
    private func join(_ joining: Range<Int>, layer: Int) throws {
        let D = c.dModel, P = positions
        switch entry {
        case let .tokens(tokens):
            precondition(layer == 0 && whole, "token entry is for whole sequences from layer 0")
            let embedHook = HookName(.embed), posHook = HookName(.posEmbed)
            let rows = offsets[joining.upperBound], embedding = model.embedding
            let hooked = wants(embedHook) || wants(posHook)
            tokens.ids.withUnsafeBufferPointer { all in
                let ids = UnsafeBufferPointer(rebasing: all[0..<rows])
                if hooked {
                    embedding.tokenRows(ids, into: work.normed)
                    embedding.positionRows(rows: rows, sequenceLength: P, into: work.attnOut)
                } else {
                    // Without hooks the two embeddings are summed straight into the residual stream.
                    embedding.forward(ids, sequenceLength: P, into: work.resid)
                }
            }
            guard hooked else { return }
            try show(embedHook, work.normed, rows: rows, width: D)
            try show(posHook, work.attnOut, rows: rows, width: D)
            for i in 0..<(rows * D) { work.resid[i] = work.normed[i] + work.attnOut[i] }
        case let .earlierRun(residPre, _, _):
            residPre[layer].withUnsafeBufferPointer { source in
                for i in joining {
                    let s = sequences[i]
                    (work.resid + offsets[i] * D).update(from: source.baseAddress! + (s.prompt * P + s.start) * D, count: (P - s.start) * D)
                }
            }
        }
    }

    /// A normalisation with its two hooks, into the `normed` buffer. Returns the buffer the next component reads:
    /// `normed`, or `input` itself when the layer is the identity.
    private func normalize(_ input: UnsafeMutablePointer<Float>, rows: Int, _ norm: Norm, _ scaleHook: HookName,
                           _ normalizedHook: HookName, pruned: Bool = false) throws -> UnsafeMutablePointer<Float> {
        guard !norm.isIdentity else { return input }
        let out = work.normed
        norm.statistics(input, rows: rows, mean: work.mean, scale: work.scale)
        try show(scaleHook, work.scale, rows: rows, width: 1, pruned: pruned)
        let hookNormalized = wants(normalizedHook)
        norm.normalize(input, rows: rows, mean: work.mean, scale: work.scale, affine: !hookNormalized, out: out)
        if hookNormalized {
            try show(normalizedHook, out, rows: rows, width: c.dModel, pruned: pruned)
            norm.applyAffine(out, rows: rows)
        }
        return out
    }

    private func attention(layer: Int, _ attention: SelfAttention, input: UnsafeMutablePointer<Float>, active: Int, pruned: Bool) throws {
        let H = attention.heads, hd = attention.zWidth, D = c.dModel, P = positions, rows = offsets[active]
        attention.project(input, rows: rows, into: work.qkv)
        for (site, projection) in [(HookName.Site.q, SelfAttention.Projection.q), (.k, .k), (.v, .v)] {
            try show(.block(layer, site), work.qkv + attention.columns(projection, head: 0).lowerBound, rows: rows, width: hd,
                     stride: attention.qkvWidth)
        }
        if retain { retained.layers[layer].qkv = keep(work.qkv, rows * attention.qkvWidth) }
        let patternHook = HookName.block(layer, .pattern)
        if whole {
            let B = active, scoresHook = HookName.block(layer, .attnScores)
            attention.scores(work.qkv, batch: B, positions: P, into: work.scores)
            try show(scoresHook, work.scores, rows: B * H * P, width: P, layout: .batchHeadQueryKey)
            // The causal shortcut skips the masked columns; a hook on the scores may have changed them, so not then.
            attention.softmax(work.scores, batch: B, positions: P, maskIntact: !wants(scoresHook))
            try show(patternHook, work.scores, rows: B * H * P, width: P, layout: .batchHeadQueryKey)
            if retain { retained.layers[layer].pattern = keep(work.scores, B * H * P * P) }
            attention.mix(pattern: work.scores, work.qkv, batch: B, positions: P, into: work.z)
        } else {
            try attendOverEarlierRun(layer: layer, attention, active: active, pruned: pruned, showPattern: wants(patternHook))
        }
        let n = pruned ? active : rows
        try show(.block(layer, .z), work.z, rows: n, width: hd, pruned: pruned)
        if retain { retained.layers[layer].z = keep(work.z, n * hd) }

        let resultHook = HookName.block(layer, .result)
        guard wants(resultHook) else {
            attention.project(z: work.z, rows: n, into: work.attnOut)
            return
        }
        // Per-head outputs [rows, head, d_model], then attn_out = Σ_h result + b_O, as TL does with use_attn_result.
        let result = UnsafeMutablePointer<Float>.allocate(capacity: n * H * D)
        defer { result.deallocate() }
        for h in 0..<H {
            attention.headOutput(work.z + h * attention.headDim, rows: n, head: h, into: result + h * D, ldo: H * D)
        }
        try show(resultHook, result, rows: n, width: H * D, pruned: pruned)
        attention.output.bias!.withUnsafeBufferPointer { bO in
            for r in 0..<n {
                let out = work.attnOut + r * D
                for i in 0..<D { out[i] = bO[i] }
                for h in 0..<H {
                    let head = result + (r * H + h) * D
                    for i in 0..<D { out[i] += head[i] }
                }
            }
        }
    }

    /// Attention of sequences that start in the middle: keys and values before a sequence's start are the earlier
    /// run's. One row at a time per (sequence, head); the pattern is kept (`[row, head, key]`) only for an observer.
    private func attendOverEarlierRun(layer: Int, _ attention: SelfAttention, active: Int, pruned: Bool, showPattern: Bool) throws {
        guard case let .earlierRun(_, keys, values) = entry else { preconditionFailure("sequences from the middle need an earlier run") }
        let (P, H, hd) = (positions, attention.heads, attention.zWidth)
        let (qkv, pattern, z, offsets, sequences) = (work.qkv, work.pattern, work.z, self.offsets, self.sequences)
        try keys[layer].withUnsafeBufferPointer { baseKeys in try values[layer].withUnsafeBufferPointer { baseValues in
            // Sequence i's rows: its own q|k|v from its start on, its pattern and z rows (one, the last position's, when pruned).
            func sequence(_ i: Int) -> AttentionSequence {
                let s = sequences[i], own = qkv + offsets[i] * 3 * hd, prefix = s.prompt * P * hd
                let first = pruned ? P - 1 : s.start, outRow = pruned ? i : offsets[i]
                return AttentionSequence(
                    keyValues: KeyValueSource(prefixKeys: baseKeys.baseAddress! + prefix, prefixValues: baseValues.baseAddress! + prefix,
                                              prefixStride: hd, split: s.start, keys: own + hd, values: own + 2 * hd, stride: 3 * hd),
                    queries: PositionRows(own, first: s.start, stride: 3 * hd),
                    output: PositionRows(z + outRow * hd, first: first, stride: hd),
                    pattern: PositionRows(pattern + outRow * H * P, first: first, stride: H * P),
                    queryRange: first..<P)
            }
            guard showPattern else {
                attention.attend(sequences: active, positions: P, step: .all, minimumChunk: 8, sequence: sequence)
                return
            }
            attention.attend(sequences: active, positions: P, step: .pattern, minimumChunk: 8, sequence: sequence)
            try show(.block(layer, .pattern), pattern, rows: (pruned ? active : offsets[active]) * H, width: P,
                     pruned: pruned, layout: .rowHeadKey)
            attention.attend(sequences: active, positions: P, step: .mix, minimumChunk: 8, sequence: sequence)
        } }
    }

    // MARK: - Helpers

    private func keep(_ source: UnsafePointer<Float>, _ count: Int) -> [Float] {
        Array(UnsafeBufferPointer(start: source, count: count))
    }

    private func add(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { target[i] += source[i] }
    }

    @inline(__always)
    private func show(_ name: HookName, _ base: UnsafeMutablePointer<Float>, rows: Int, width: Int, stride: Int? = nil,
                      pruned: Bool = false, layout: PatternLayout? = nil) throws {
        guard wants(name) else { return }
        try visit(name, View(base: base, rows: rows, width: width, stride: stride ?? width, pruned: pruned, patternLayout: layout))
    }
}

/// The stack's scratch buffers, allocated once and reused by every layer.
private final class Buffers {
    let resid, normed, attnOut, mlpOut, qkv, scores, pattern, z, hidden, mean, scale, lastResid: UnsafeMutablePointer<Float>
    private var all: [UnsafeMutablePointer<Float>] = []

    init(rows: Int, sequences: Int, positions: Int, config c: ModelConfig, whole: Bool, lastRowsOnly: Bool) {
        var all: [UnsafeMutablePointer<Float>] = []
        func make(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            all.append(p)
            return p
        }
        let hd = c.nHeads * c.dHead
        resid = make(rows * c.dModel)
        normed = make(rows * c.dModel)
        attnOut = make(rows * c.dModel)
        mlpOut = make(c.attnOnly ? 0 : rows * c.dModel)
        qkv = make(rows * 3 * hd)
        // Whole sequences: scores and pattern [batch, head, q, k]; else pattern rows [row, head, k].
        scores = make(whole ? sequences * c.nHeads * positions * positions : 0)
        pattern = make(whole ? 0 : rows * c.nHeads * positions)
        z = make(rows * hd)
        hidden = make(c.attnOnly ? 0 : rows * c.dMLP)
        mean = make(rows)
        scale = make(rows)
        lastResid = make(lastRowsOnly ? sequences * c.dModel : 0)
        self.all = all
    }

    deinit { all.forEach { $0.deallocate() } }
}

/// What a backward pass through the layer stack needs, kept by a retaining pass (whole sequences, every row; `rows`
/// = batch · positions, row-major by prompt then position). Empty arrays where the model has no such step (no
/// normalisation, attention-only).
public struct RetainedActivations: Sendable {
    public struct Layer: Sendable {
        /// The residual stream entering the layer and entering its MLP, `[rows, d_model]`.
        public var residPre: [Float] = [], residMid: [Float] = []
        /// ln1's and ln2's per-row mean and scale, `[rows]`.
        public var ln1Mean: [Float] = [], ln1Scale: [Float] = [], ln2Mean: [Float] = [], ln2Scale: [Float] = []
        /// q|k|v `[rows, 3·H·d]` (columns as `SelfAttention.columns` says), the pattern `[batch, head, q, k]`, z
        /// `[rows, H·d]`.
        public var qkv: [Float] = [], pattern: [Float] = [], z: [Float] = []
        /// The MLP's pre-activations `[rows, d_mlp]`.
        public var mlpPre: [Float] = []
    }

    public var layers: [Layer] = []
    /// The residual stream after the last layer `[rows, d_model]`, and ln_final's per-row mean and scale.
    public var residFinal: [Float] = [], finalMean: [Float] = [], finalScale: [Float] = []
}
