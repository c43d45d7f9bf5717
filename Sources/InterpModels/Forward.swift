import InterpCore

extension TransformerModel {
    /// Logits `[batch, pos, d_vocab_out]`.
    public func run(_ tokens: TokenBatch) throws -> Tensor {
        try forward(tokens, hooks: .none).logits
    }

    /// Logits and the activations at `names`.
    public func runWithCache(_ tokens: TokenBatch, names: [HookName]) throws -> (logits: Tensor, cache: ActivationCache) {
        try forward(tokens, hooks: Hooks(cache: Set(names)))
    }

    /// Logits with `functions` run at their hook points (to read or overwrite activations, as patching does).
    public func runWithHooks(_ tokens: TokenBatch, functions: [(HookName, HookFunction)]) throws -> Tensor {
        try forward(tokens, hooks: Hooks(functions: functions)).logits
    }

    /// The one forward pass. Hooks are parameters of it, not a second code path; with no hooks no activation is
    /// copied, and each hook point costs one check of an empty set.
    ///
    /// With `stopAfter`, the pass ends once that hook point has run and returns empty logits (`[batch, pos, 0]`):
    /// caching a middle layer need not pay for the layers above it or the unembedding.
    public func forward(_ tokens: TokenBatch, hooks: Hooks, stopAfter: HookName? = nil) throws -> (logits: Tensor, cache: ActivationCache) {
        let available = Set(config.hookPoints)
        if let missing = (hooks.names.union(stopAfter.map { [$0] } ?? [])).sorted().first(where: { !available.contains($0) }) {
            throw InterpError("hook '\(missing)' does not exist in this model (see `interp info` for its hooks)")
        }
        let pass = ForwardPass(model: self, tokens: tokens, hooks: hooks, stopAfter: stopAfter)
        do {
            return try pass.run()
        } catch is ForwardPass.Stopped {
            return (Tensor(zeros: [tokens.batch, tokens.positions, 0]), pass.cache)
        }
    }
}

/// Scratch buffers for one forward pass, allocated once and reused by every layer.
private final class Workspace {
    let resid, normed, attnOut, mlpOut, qkv, scores, z, mlpHidden, mean, scale: UnsafeMutablePointer<Float>
    private var all: [UnsafeMutablePointer<Float>] = []

    init(rows: Int, config c: ModelConfig, batch: Int, positions: Int) {
        func make(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            return p
        }
        let hd = c.nHeads * c.dHead
        resid = make(rows * c.dModel)
        normed = make(rows * c.dModel)
        attnOut = make(rows * c.dModel)
        mlpOut = make(c.attnOnly ? 0 : rows * c.dModel)
        qkv = make(rows * 3 * hd)
        scores = make(batch * c.nHeads * positions * positions)
        z = make(rows * hd)
        mlpHidden = make(c.attnOnly ? 0 : rows * c.dMLP)
        mean = make(rows)
        scale = make(rows)
        all = [resid, normed, attnOut, mlpOut, qkv, scores, z, mlpHidden, mean, scale]
    }

    deinit { all.forEach { $0.deallocate() } }
}

private final class ForwardPass {
    /// Thrown by `visit` after the `stopAfter` hook point, to end the pass early.
    struct Stopped: Error {}

    let model: TransformerModel
    let stopAfter: HookName?
    let c: ModelConfig
    let tokens: TokenBatch
    let hooks: Hooks
    let rows: Int
    let work: Workspace
    var cache = ActivationCache()

    init(model: TransformerModel, tokens: TokenBatch, hooks: Hooks, stopAfter: HookName?) {
        self.model = model
        self.stopAfter = stopAfter
        self.c = model.config
        self.tokens = tokens
        self.hooks = hooks
        rows = tokens.batch * tokens.positions
        work = Workspace(rows: rows, config: model.config, batch: tokens.batch, positions: tokens.positions)
    }

    func run() throws -> (logits: Tensor, cache: ActivationCache) {
        let D = c.dModel
        try embed()
        for layer in 0..<c.nLayers {
            let weights = model.layers[layer]
            try visit(.block(layer, .residPre), work.resid)
            let attnIn = try normalize(work.resid, parameters: weights.ln1,
                                       scaleHook: .block(layer, .ln1Scale), normalizedHook: .block(layer, .ln1Normalized))
            try attention(layer: layer, weights: weights, input: attnIn)
            try visit(.block(layer, .attnOut), work.attnOut)
            Dense.add(work.attnOut, into: work.resid, count: rows * D)
            if c.attnOnly {
                try visit(.block(layer, .residPost), work.resid)
                continue
            }
            try visit(.block(layer, .residMid), work.resid)
            let mlpIn = try normalize(work.resid, parameters: weights.ln2,
                                      scaleHook: .block(layer, .ln2Scale), normalizedHook: .block(layer, .ln2Normalized))
            try mlp(layer: layer, weights: weights, input: mlpIn)
            try visit(.block(layer, .mlpOut), work.mlpOut)
            Dense.add(work.mlpOut, into: work.resid, count: rows * D)
            try visit(.block(layer, .residPost), work.resid)
        }
        let final = try normalize(work.resid, parameters: model.lnFinal,
                                  scaleHook: HookName(.lnFinalScale), normalizedHook: HookName(.lnFinalNormalized))
        // Filled by the bias rows before the GEMM accumulates into it, so no zero fill is needed first.
        let scalars = [Float](unsafeUninitializedCapacity: rows * c.dVocabOut) { out, initialized in
            linear(final, width: D, weight: model.wU, bias: model.bU, outWidth: c.dVocabOut, into: out.baseAddress!)
            initialized = rows * c.dVocabOut
        }
        return (Tensor(shape: [tokens.batch, tokens.positions, c.dVocabOut], scalars: scalars), cache)
    }

    // MARK: - Pieces

    private func embed() throws {
        let D = c.dModel, P = tokens.positions
        let embedHook = HookName(.embed), posHook = HookName(.posEmbed)
        let hooked = hooks.isActive(embedHook) || hooks.isActive(posHook)
        // Without hooks the two embeddings are summed straight into the residual stream.
        let tokenPart = hooked ? work.normed : work.resid
        let positionPart = hooked ? work.attnOut : work.resid
        model.wE.withUnsafeBufferPointer { wE in
            model.wPos.withUnsafeBufferPointer { wPos in
                for r in 0..<rows {
                    let token = Int(tokens.ids[r]), position = r % P
                    let e = wE.baseAddress! + token * D, p = wPos.baseAddress! + position * D
                    if hooked {
                        (tokenPart + r * D).update(from: e, count: D)
                        (positionPart + r * D).update(from: p, count: D)
                    } else {
                        let out = work.resid + r * D
                        for i in 0..<D { out[i] = e[i] + p[i] }
                    }
                }
            }
        }
        guard hooked else { return }
        try visit(embedHook, tokenPart)
        try visit(posHook, positionPart)
        for i in 0..<(rows * D) { work.resid[i] = tokenPart[i] + positionPart[i] }
    }

    /// TL's layer norm of `input` with its two hooks, into the `normed` buffer. Returns the buffer the next
    /// component reads: `normed`, or `input` itself when the model has no normalisation.
    private func normalize(_ input: UnsafeMutablePointer<Float>, parameters: (w: [Float], b: [Float])?,
                           scaleHook: HookName, normalizedHook: HookName) throws -> UnsafeMutablePointer<Float> {
        guard c.normalization != .none else { return input }
        let D = c.dModel, out = work.normed
        LayerNorm.statistics(input, rows: rows, width: D, eps: c.eps, mean: work.mean, scale: work.scale)
        try visit(scaleHook, work.scale)
        let hookNormalized = hooks.isActive(normalizedHook)
        if let parameters, !hookNormalized {
            parameters.w.withUnsafeBufferPointer { w in
                parameters.b.withUnsafeBufferPointer { b in
                    LayerNorm.normalize(input, rows: rows, width: D, mean: work.mean, scale: work.scale,
                                        weight: w.baseAddress, bias: b.baseAddress, out: out)
                }
            }
            return out
        }
        LayerNorm.normalize(input, rows: rows, width: D, mean: work.mean, scale: work.scale, weight: nil, bias: nil, out: out)
        try visit(normalizedHook, out)
        if let parameters {
            for r in 0..<rows {
                let row = out + r * D
                for i in 0..<D { row[i] = row[i] * parameters.w[i] + parameters.b[i] }
            }
        }
        return out
    }

    private func attention(layer: Int, weights: TransformerModel.Layer, input: UnsafeMutablePointer<Float>) throws {
        let H = c.nHeads, d = c.dHead, hd = H * d, D = c.dModel
        let shape = AttentionShape(batch: tokens.batch, positions: tokens.positions, heads: H, headDim: d,
                                   causal: c.attentionDir == .causal)
        linear(input, width: D, weight: weights.wQKV, bias: weights.bQKV, outWidth: 3 * hd, into: work.qkv)
        try visit(.block(layer, .q), work.qkv, width: hd, stride: 3 * hd)
        try visit(.block(layer, .k), work.qkv + hd, width: hd, stride: 3 * hd)
        try visit(.block(layer, .v), work.qkv + 2 * hd, width: hd, stride: 3 * hd)

        Attention.scores(qkv: work.qkv, shape, attnScale: c.effectiveAttnScale, into: work.scores)
        let patternRows = tokens.batch * H * tokens.positions
        let scoresHook = HookName.block(layer, .attnScores)
        try visit(scoresHook, work.scores, rows: patternRows, width: tokens.positions)
        // The causal shortcut skips the masked columns; a hook on the scores may have changed them, so not then.
        let causalBlock = shape.causal && !hooks.isActive(scoresHook) ? tokens.positions : nil
        Attention.softmax(work.scores, rows: patternRows, width: tokens.positions, causalBlock: causalBlock)
        try visit(.block(layer, .pattern), work.scores, rows: patternRows, width: tokens.positions)
        Attention.mix(pattern: work.scores, qkv: work.qkv, shape, into: work.z)
        try visit(.block(layer, .z), work.z, width: hd)

        let resultHook = HookName.block(layer, .result)
        weights.wO.withUnsafeBufferPointer { wO in
            weights.bO.withUnsafeBufferPointer { bO in
                if !hooks.isActive(resultHook) {
                    Dense.fillRows(work.attnOut, rows: rows, with: bO.baseAddress!, width: D)
                    GEMM.multiply(m: rows, n: D, k: hd, work.z, lda: hd, wO.baseAddress!, ldb: D,
                                  work.attnOut, ldc: D, beta: 1)
                }
            }
        }
        guard hooks.isActive(resultHook) else { return }
        // Per-head outputs [batch·pos, head, d_model], then attn_out = Σ_h result + b_O, as TL does with use_attn_result.
        let result = UnsafeMutablePointer<Float>.allocate(capacity: rows * H * D)
        defer { result.deallocate() }
        weights.wO.withUnsafeBufferPointer { wO in
            for h in 0..<H {
                GEMM.multiply(m: rows, n: D, k: d, work.z + h * d, lda: hd, wO.baseAddress! + h * d * D, ldb: D,
                              result + h * D, ldc: H * D)
            }
        }
        try visit(resultHook, result)
        for r in 0..<rows {
            let out = work.attnOut + r * D
            for i in 0..<D { out[i] = weights.bO[i] }
            for h in 0..<H {
                let head = result + (r * H + h) * D
                for i in 0..<D { out[i] += head[i] }
            }
        }
    }

    private func mlp(layer: Int, weights: TransformerModel.Layer, input: UnsafeMutablePointer<Float>) throws {
        let F = c.dMLP, D = c.dModel
        let preHook = HookName.block(layer, .mlpPre)
        weights.wIn.withUnsafeBufferPointer { w in
            GEMM.multiply(m: rows, n: F, k: D, input, lda: D, w.baseAddress!, ldb: F, work.mlpHidden, ldc: F)
        }
        weights.bIn.withUnsafeBufferPointer { b in
            if hooks.isActive(preHook) {
                Dense.addRows(b.baseAddress!, to: work.mlpHidden, rows: rows, width: F)
            } else {
                c.actFn!.apply(work.mlpHidden, rows: rows, width: F, bias: b.baseAddress!)
            }
        }
        if hooks.isActive(preHook) {
            try visit(preHook, work.mlpHidden)
            c.actFn!.apply(work.mlpHidden, count: rows * F)
        }
        try visit(.block(layer, .mlpPost), work.mlpHidden)
        linear(work.mlpHidden, width: F, weight: weights.wOut, bias: weights.bOut, outWidth: D, into: work.mlpOut)
    }

    // MARK: - Helpers

    private func linear(_ input: UnsafePointer<Float>, width: Int, weight: [Float], bias: [Float], outWidth: Int,
                        into out: UnsafeMutablePointer<Float>) {
        Dense.linear(input, rows: rows, width: width, weight: weight, bias: bias, outWidth: outWidth, into: out)
    }

    /// Runs the hook point `name` over the activation stored as `rows` rows of `width` floats, `stride` apart
    /// (defaults: the hook's natural shape, contiguous). The activation is copied into a tensor only if hooked.
    private func visit(_ name: HookName, _ base: UnsafeMutablePointer<Float>, rows: Int? = nil, width: Int? = nil,
                       stride: Int? = nil) throws {
        if name == stopAfter && !hooks.isActive(name) { throw Stopped() }
        guard hooks.isActive(name) else { return }
        let shape = name.shape(for: c, batch: tokens.batch, positions: tokens.positions)
        let count = shape.reduce(1, *)
        let rowCount = rows ?? (width.map { count / $0 } ?? 1)
        let rowWidth = width ?? count / rowCount
        let rowStride = stride ?? rowWidth
        var tensor = Tensor(zeros: shape)
        tensor.withUnsafeMutableBufferPointer { t in
            for r in 0..<rowCount { (t.baseAddress! + r * rowWidth).update(from: base + r * rowStride, count: rowWidth) }
        }
        if let functions = hooks.functions[name] {
            for function in functions {
                try function(name, &tensor)
                guard tensor.shape == shape else {
                    throw InterpError("a hook function at '\(name)' changed the activation's shape from \(shape) to \(tensor.shape)")
                }
            }
            tensor.withUnsafeBufferPointer { t in
                for r in 0..<rowCount { (base + r * rowStride).update(from: t.baseAddress! + r * rowWidth, count: rowWidth) }
            }
        }
        if hooks.cached.contains(name) { cache.activations[name] = tensor }
        if name == stopAfter { throw Stopped() }
    }
}
