import InterpCore

/// Which positions of the logits a caller reads.
public enum LogitPositions: String, Sendable {
    /// The last position only.
    case last
    /// Every position.
    case all
}

/// One run of a batch of prompts, kept so that edited copies of it can continue from the middle: per layer the
/// residual stream entering the layer and the attention keys and values. It stops after the last layer; its logits,
/// where wanted, come from `logits(of:)`.
public struct BaseRun: @unchecked Sendable {
    public let tokens: TokenBatch
    /// The further activations asked for when it was made.
    public let cache: ActivationCache
    let residPre: [Tensor]
    let keys: [Tensor]
    let values: [Tensor]
}

/// A run that continues a `BaseRun` from the middle: one prompt of it, recomputed from `start` on (earlier positions
/// are the base run's, which is exact in a causal model as long as the edit leaves them alone), entering the model at
/// `layer`, where `edit` changes the activation at `site` in that layer.
public struct ContinuedRun {
    public var prompt: Int
    public var start: Int
    public var layer: Int
    public var site: HookName.Site
    /// Called once, at `site` of `layer`, with the positions the run holds there.
    public var edit: (RunSlice) -> Void

    public init(prompt: Int, start: Int, layer: Int, site: HookName.Site, edit: @escaping (RunSlice) -> Void) {
        self.prompt = prompt
        self.start = start
        self.layer = layer
        self.site = site
        self.edit = edit
    }

    /// The sites a run can be edited at.
    public static let sites: Set<HookName.Site> = [.residPre, .q, .k, .v, .pattern, .z, .attnOut, .residMid, .mlpOut, .residPost]
}

/// A continued run's activation at its edit site, valid only during the edit call. Rows are per position:
/// `[d_model]` for the residual sites, attn_out and mlp_out, `[heads·d_head]` for q, k, v and z; the pattern is
/// per (head, query position) over all key positions.
public struct RunSlice {
    public let site: HookName.Site
    /// The positions held. After the last layer's attention, when only the last position's logits are read, that
    /// position alone: editing any other there cannot change the result.
    public let positions: Range<Int>
    /// Floats per row (row sites), or key positions per pattern row.
    public let width: Int
    let base: UnsafeMutablePointer<Float>
    let rowStride: Int
    let heads: Int

    /// The activation at `position`, or nil if the slice does not hold it.
    public func row(_ position: Int) -> UnsafeMutableBufferPointer<Float>? {
        guard site != .pattern, positions.contains(position) else { return nil }
        return UnsafeMutableBufferPointer(start: base + (position - positions.lowerBound) * rowStride, count: width)
    }

    /// The attention pattern of `head` from query `position` over all key positions, or nil if not held.
    public func patternRow(head: Int, query position: Int) -> UnsafeMutableBufferPointer<Float>? {
        guard site == .pattern, positions.contains(position), (0..<heads).contains(head) else { return nil }
        return UnsafeMutableBufferPointer(start: base + ((position - positions.lowerBound) * heads + head) * width, count: width)
    }
}

extension TransformerModel {
    /// Runs `tokens` through every layer keeping what continued runs need, plus the activations at `names` (which
    /// must not be after the last layer's `hook_resid_post`).
    public func baseRun(_ tokens: TokenBatch, caching names: [HookName] = []) throws -> BaseRun {
        let layers = 0..<config.nLayers
        let needed = layers.flatMap { [HookName(.residPre, layer: $0), HookName(.k, layer: $0), HookName(.v, layer: $0)] }
        let last = HookName(.residPost, layer: config.nLayers - 1)
        if let late = names.first(where: { $0 > last }) {
            throw InterpError("a base run stops after \(last); it cannot cache \(late)")
        }
        let cache = try forward(tokens, hooks: Hooks(cache: Set(needed + names)), stopAfter: last).cache
        var extra = ActivationCache()
        for name in names { extra.activations[name] = cache[name] }
        return BaseRun(tokens: tokens, cache: extra,
                       residPre: layers.map { cache[HookName(.residPre, layer: $0)]! },
                       keys: layers.map { cache[HookName(.k, layer: $0)]! },
                       values: layers.map { cache[HookName(.v, layer: $0)]! })
    }

    /// The base run's own logits `[batch, positions read, logits read]`, computed as unedited continued runs: in a
    /// causal model, reading the last position costs one row per prompt.
    /// `prompts` picks some of the base run's prompts (default all).
    public func logits(of base: BaseRun, prompts: Range<Int>? = nil, positions: LogitPositions = .last,
                       logitIndices: [Int]? = nil) throws -> Tensor {
        let prompts = prompts ?? 0..<base.tokens.batch, P = base.tokens.positions
        let start = positions == .last && config.attentionDir == .causal ? P - 1 : 0
        let runs = prompts.map { ContinuedRun(prompt: $0, start: start, layer: 0, site: .residPre) { _ in } }
        let rows = try continueRuns(from: base, runs, positions: positions, logitIndices: logitIndices)
        guard let perPrompt = rows.first?.shape[0] else { throw InterpError("no prompts to read the logits of") }
        return Tensor(shape: [prompts.count, perPrompt, rows[0].shape[1]], scalars: rows.flatMap(\.scalars))
    }

    /// Continues `runs` from `base` as one batch: the rows of all runs go through each layer's matrix products
    /// together, each run's attention reads the base run's keys and values before its start, and a run joins at its
    /// layer. Returns per run its logits `[positions read, logits read]`: the last position, or every position from
    /// its start on; all of the vocabulary, or the entries `logitIndices` names, in that order.
    ///
    /// Equal, up to float rounding, to a full forward of the prompt with the edit made by a hook, at the positions
    /// returned. In a causal model that holds when the edit changes nothing before `start`; a bidirectional model
    /// has every position depend on every other, so its runs must start at 0.
    public func continueRuns(from base: BaseRun, _ runs: [ContinuedRun], positions: LogitPositions = .last,
                             logitIndices: [Int]? = nil) throws -> [Tensor] {
        let P = base.tokens.positions
        for run in runs {
            guard (0..<base.tokens.batch).contains(run.prompt) else { throw InterpError("continued run of prompt \(run.prompt): the base run has \(base.tokens.batch) prompts") }
            guard (0..<P).contains(run.start) else { throw InterpError("continued run starting at position \(run.start): the prompts have \(P) positions") }
            guard (0..<config.nLayers).contains(run.layer) else { throw InterpError("continued run entering at layer \(run.layer): the model has \(config.nLayers) layers") }
            guard ContinuedRun.sites.contains(run.site), run.site.exists(in: config) else {
                throw InterpError("a continued run cannot be edited at \(run.site.rawValue) in this model")
            }
            guard config.attentionDir == .causal || run.start == 0 else {
                throw InterpError("continued runs of a bidirectional model must start at position 0")
            }
        }
        if let bad = logitIndices?.first(where: { !(0..<config.dVocabOut).contains($0) }) {
            throw InterpError("logit index \(bad) is outside the output vocabulary (0..<\(config.dVocabOut))")
        }
        guard !runs.isEmpty else { return [] }
        return ContinuationPass(model: self, base: base, runs: runs, readLast: positions == .last, logitIndices: logitIndices).run()
    }
}

/// The batched continuation. Runs are ordered by entry layer, so the runs active in a layer hold a prefix of the
/// row buffers and a joining run only adds rows after them.
private final class ContinuationPass {
    let model: TransformerModel
    let c: ModelConfig
    let base: BaseRun
    let runs: [ContinuedRun]         // by entry layer
    let order: [Int]                 // original index of each run in `runs`
    let offsets: [Int]               // first row of each run; offsets[runs.count] = rows in all
    let readLast: Bool
    let logitIndices: [Int]?
    let P, H, d, hd, D: Int
    private var buffers: [UnsafeMutablePointer<Float>] = []
    let resid, normed, qkv, z, attnOut, hidden, mlpOut, mean, scale, pattern, lastResid: UnsafeMutablePointer<Float>

    init(model: TransformerModel, base: BaseRun, runs unordered: [ContinuedRun], readLast: Bool, logitIndices: [Int]?) {
        self.model = model
        c = model.config
        self.base = base
        order = unordered.indices.sorted { (unordered[$0].layer, $0) < (unordered[$1].layer, $1) }
        runs = order.map { unordered[$0] }
        P = base.tokens.positions
        H = c.nHeads
        d = c.dHead
        hd = H * d
        D = c.dModel
        var offsets = [0]
        for run in runs { offsets.append(offsets.last! + P - run.start) }
        self.offsets = offsets
        self.readLast = readLast
        self.logitIndices = logitIndices
        let rows = offsets.last!, n = runs.count
        var all: [UnsafeMutablePointer<Float>] = []
        func make(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            all.append(p)
            return p
        }
        resid = make(rows * D)
        normed = make(rows * D)
        qkv = make(rows * 3 * hd)
        z = make(rows * hd)
        attnOut = make(rows * D)
        hidden = make(c.attnOnly ? 0 : rows * c.dMLP)
        mlpOut = make(c.attnOnly ? 0 : rows * D)
        mean = make(rows)
        scale = make(rows)
        pattern = make(rows * H * P)
        lastResid = make(readLast ? n * D : 0)
        buffers = all
    }

    deinit { buffers.forEach { $0.deallocate() } }

    func run() -> [Tensor] {
        let L = c.nLayers
        var active = 0
        for layer in 0..<L {
            let joinFirst = active
            while active < runs.count && runs[active].layer == layer { active += 1 }
            let joining = joinFirst..<active
            guard active > 0 else { continue }
            let rows = offsets[active], weights = model.layers[layer]
            // Only the last position reaches the logits after the last layer's keys and values are made.
            let pruned = readLast && layer == L - 1

            base.residPre[layer].withUnsafeBufferPointer { source in
                for i in joining {
                    let run = runs[i]
                    (resid + offsets[i] * D).update(from: source.baseAddress! + (run.prompt * P + run.start) * D, count: (P - run.start) * D)
                }
            }
            edit(.residPre, joining, resid, width: D, stride: D, pruned: false)
            let attnIn = Dense.normalize(resid, rows: rows, config: c, parameters: weights.ln1, mean: mean, scale: scale, out: normed)
            Dense.linear(attnIn, rows: rows, width: D, weight: weights.wQKV, bias: weights.bQKV, outWidth: 3 * hd, into: qkv)
            edit(.q, joining, qkv, width: hd, stride: 3 * hd, pruned: false)
            edit(.k, joining, qkv + hd, width: hd, stride: 3 * hd, pruned: false)
            edit(.v, joining, qkv + 2 * hd, width: hd, stride: 3 * hd, pruned: false)
            attention(layer: layer, active: active, joining: joining, pruned: pruned)

            // From here on, one row per run when pruned (its last position), else every row.
            let n = pruned ? active : rows
            let stream: UnsafeMutablePointer<Float>
            if pruned {
                for i in 0..<active { (lastResid + i * D).update(from: resid + (offsets[i + 1] - 1) * D, count: D) }
                stream = lastResid
            } else {
                stream = resid
            }
            Dense.linear(z, rows: n, width: hd, weight: weights.wO, bias: weights.bO, outWidth: D, into: attnOut)
            edit(.attnOut, joining, attnOut, width: D, stride: D, pruned: pruned)
            Dense.add(attnOut, into: stream, count: n * D)
            if c.attnOnly {
                edit(.residPost, joining, stream, width: D, stride: D, pruned: pruned)
                continue
            }
            edit(.residMid, joining, stream, width: D, stride: D, pruned: pruned)
            let mlpIn = Dense.normalize(stream, rows: n, config: c, parameters: weights.ln2, mean: mean, scale: scale, out: normed)
            weights.wIn.withUnsafeBufferPointer { w in
                GEMM.multiply(m: n, n: c.dMLP, k: D, mlpIn, lda: D, w.baseAddress!, ldb: c.dMLP, hidden, ldc: c.dMLP)
            }
            weights.bIn.withUnsafeBufferPointer { b in c.actFn!.apply(hidden, rows: n, width: c.dMLP, bias: b.baseAddress!) }
            Dense.linear(hidden, rows: n, width: c.dMLP, weight: weights.wOut, bias: weights.bOut, outWidth: D, into: mlpOut)
            edit(.mlpOut, joining, mlpOut, width: D, stride: D, pruned: pruned)
            Dense.add(mlpOut, into: stream, count: n * D)
            edit(.residPost, joining, stream, width: D, stride: D, pruned: pruned)
        }
        return readout()
    }

    /// Calls the edits of the joining runs at `site`: rows of `width` floats, `stride` apart, from each run's first
    /// row (or its only row when pruned).
    private func edit(_ site: HookName.Site, _ joining: Range<Int>, _ buffer: UnsafeMutablePointer<Float>, width: Int, stride: Int, pruned: Bool) {
        for i in joining where runs[i].site == site {
            let positions = pruned ? (P - 1)..<P : runs[i].start..<P
            runs[i].edit(RunSlice(site: site, positions: positions, width: width,
                                  base: buffer + (pruned ? i : offsets[i]) * stride, rowStride: stride, heads: H))
        }
    }

    /// Scores, softmax, the pattern edits, then the mix into `z`, per (run, head) in parallel. A key before the run's
    /// start is the base run's.
    private func attention(layer: Int, active: Int, joining: Range<Int>, pruned: Bool) {
        let causal = c.attentionDir == .causal, inverseScale = 1 / c.effectiveAttnScale
        let (P, H, d, hd) = (self.P, self.H, self.d, self.hd)
        let (qkv, pattern, z, offsets, runs) = (self.qkv, self.pattern, self.z, self.offsets, self.runs)
        base.keys[layer].withUnsafeBufferPointer { baseKeys in base.values[layer].withUnsafeBufferPointer { baseValues in
            let baseK = baseKeys.baseAddress!, baseV = baseValues.baseAddress!
            // Row (in pattern and z) of run i's query position q.
            func outRow(_ i: Int, _ q: Int) -> Int { pruned ? i : offsets[i] + q - runs[i].start }
            func key(_ i: Int, _ k: Int, _ h: Int) -> UnsafePointer<Float> {
                let run = runs[i]
                return k < run.start ? baseK + (run.prompt * P + k) * hd + h * d
                                     : UnsafePointer(qkv + (offsets[i] + k - run.start) * 3 * hd + hd + h * d)
            }
            func value(_ i: Int, _ k: Int, _ h: Int) -> UnsafePointer<Float> {
                let run = runs[i]
                return k < run.start ? baseV + (run.prompt * P + k) * hd + h * d
                                     : UnsafePointer(qkv + (offsets[i] + k - run.start) * 3 * hd + 2 * hd + h * d)
            }
            func queries(_ i: Int) -> Range<Int> { pruned ? (P - 1)..<P : runs[i].start..<P }

            parallelChunks(active * H, minimumChunk: 8) { items in
                for item in items {
                    let i = item / H, h = item % H
                    for q in queries(i) {
                        let query = qkv + (offsets[i] + q - runs[i].start) * 3 * hd + h * d
                        let row = pattern + (outRow(i, q) * H + h) * P
                        let valid = causal ? q + 1 : P
                        for k in 0..<valid { row[k] = vectorDot(query, key(i, k, h), d) * inverseScale }
                        Attention.softmaxRow(row, valid: valid, width: P)
                    }
                }
            }
            for i in joining where runs[i].site == .pattern {
                let positions = queries(i)
                runs[i].edit(RunSlice(site: .pattern, positions: positions, width: P,
                                      base: pattern + outRow(i, positions.lowerBound) * H * P, rowStride: H * P, heads: H))
            }
            parallelChunks(active * H, minimumChunk: 8) { items in
                for item in items {
                    let i = item / H, h = item % H
                    for q in queries(i) {
                        let row = pattern + (outRow(i, q) * H + h) * P
                        let out = z + outRow(i, q) * hd + h * d
                        out.update(repeating: 0, count: d)
                        // Every key: an edited pattern may weigh positions the causal mask had zeroed.
                        for k in 0..<P where row[k] != 0 { vectorAddScaled(out, row[k], value(i, k, h), d) }
                    }
                }
            }
        } }
        edit(.z, joining, z, width: hd, stride: hd, pruned: pruned)
    }

    /// The final normalisation and the unembedding of the rows read, split per run, in the caller's order.
    private func readout() -> [Tensor] {
        let rows = readLast ? runs.count : offsets.last!
        let stream = readLast ? lastResid : resid
        let final = Dense.normalize(stream, rows: rows, config: c, parameters: model.lnFinal, mean: mean, scale: scale, out: normed)
        let V = c.dVocabOut
        let (weight, bias, width): ([Float], [Float], Int)
        if let indices = logitIndices {
            var w = [Float](repeating: 0, count: D * indices.count)
            for i in 0..<D { for (j, v) in indices.enumerated() { w[i * indices.count + j] = model.wU[i * V + v] } }
            (weight, bias, width) = (w, indices.map { model.bU[$0] }, indices.count)
        } else {
            (weight, bias, width) = (model.wU, model.bU, V)
        }
        let logits = UnsafeMutablePointer<Float>.allocate(capacity: max(rows * width, 1))
        defer { logits.deallocate() }
        Dense.linear(final, rows: rows, width: D, weight: weight, bias: bias, outWidth: width, into: logits)
        var out = [Tensor](repeating: Tensor(zeros: [0]), count: runs.count)
        for i in runs.indices {
            let first = readLast ? i : offsets[i], count = readLast ? 1 : offsets[i + 1] - offsets[i]
            out[order[i]] = Tensor(shape: [count, width], scalars: Array(UnsafeBufferPointer(start: logits + first * width, count: count * width)))
        }
        return out
    }
}
