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

    /// Logits, and per layer what a backward pass needs (normalisation statistics, q|k|v, attention patterns, z, MLP
    /// pre-activations and the residual streams), kept as the pass goes instead of overwritten.
    public func runRetaining(_ tokens: TokenBatch) throws -> (logits: Tensor, retained: RetainedActivations) {
        let stack = try LayerStack(model: self, entry: .tokens(tokens), positions: tokens.positions,
                               sequences: (0..<tokens.batch).map { LayerStack.Sequence(prompt: $0, start: 0, layer: 0) },
                               lastRowsOnly: false, logitIndices: nil, retain: true, wants: { _ in false }, visit: { _, _ in })
        let logits = try stack.run()
        return (Tensor(shape: [tokens.batch, tokens.positions, stack.unembedding.width], scalars: logits), stack.retained)
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
        let observer = HookObserver(config: config, hooks: hooks, stopAfter: stopAfter, batch: tokens.batch, positions: tokens.positions)
        let idle = hooks.isEmpty && stopAfter == nil
        let stack = try LayerStack(model: self, entry: .tokens(tokens), positions: tokens.positions,
                               sequences: (0..<tokens.batch).map { LayerStack.Sequence(prompt: $0, start: 0, layer: 0) },
                               lastRowsOnly: false, logitIndices: nil,
                               wants: { name in !idle && (hooks.isActive(name) || name == stopAfter) },
                               visit: observer.visit)
        do {
            let logits = try stack.run()
            return (Tensor(shape: [tokens.batch, tokens.positions, stack.unembedding.width], scalars: logits), observer.cache)
        } catch is HookObserver.Stopped {
            return (Tensor(zeros: [tokens.batch, tokens.positions, 0]), observer.cache)
        }
    }
}

/// The hooked forward's observer: at each hook point it copies the activation into a tensor of the hook's shape, runs
/// the hook functions on it, writes back what they leave, records it when cached, and ends the pass after
/// `stopAfter`.
private final class HookObserver {
    /// Thrown after the `stopAfter` hook point, to end the pass early.
    struct Stopped: Error {}

    let config: ModelConfig
    let hooks: Hooks
    let stopAfter: HookName?
    let batch: Int, positions: Int
    var cache = ActivationCache()

    init(config: ModelConfig, hooks: Hooks, stopAfter: HookName?, batch: Int, positions: Int) {
        self.config = config
        self.hooks = hooks
        self.stopAfter = stopAfter
        self.batch = batch
        self.positions = positions
    }

    func visit(_ name: HookName, _ view: LayerStack.View) throws {
        if name == stopAfter && !hooks.isActive(name) { throw Stopped() }
        let shape = name.shape(for: config, batch: batch, positions: positions)
        precondition(view.rows * view.width == shape.reduce(1, *) && !view.pruned && view.patternLayout != .rowHeadKey,
                     "the hooked forward sees whole sequences")
        let (rows, width, stride, base) = (view.rows, view.width, view.stride, view.base)
        var tensor = Tensor(zeros: shape)
        tensor.withUnsafeMutableBufferPointer { t in
            for r in 0..<rows { (t.baseAddress! + r * width).update(from: base + r * stride, count: width) }
        }
        if let functions = hooks.functions[name] {
            for function in functions {
                try function(name, &tensor)
                guard tensor.shape == shape else {
                    throw InterpError("a hook function at '\(name)' changed the activation's shape from \(shape) to \(tensor.shape)")
                }
            }
            tensor.withUnsafeBufferPointer { t in
                for r in 0..<rows { (base + r * stride).update(from: t.baseAddress! + r * width, count: width) }
            }
        }
        if hooks.cached.contains(name) { cache.activations[name] = tensor }
        if name == stopAfter { throw Stopped() }
    }
}
