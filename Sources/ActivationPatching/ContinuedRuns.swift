import InterpCore
import InterpModels

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
        let extra = ActivationCache(Dictionary(uniqueKeysWithValues: Set(names).map { ($0, cache[$0]!) }))
        return BaseRun(tokens: tokens, cache: extra,
                       residPre: layers.map { cache[HookName(.residPre, layer: $0)]! },
                       keys: layers.map { cache[HookName(.k, layer: $0)]! },
                       values: layers.map { cache[HookName(.v, layer: $0)]! })
    }

    /// The base run's own logits `[batch, positions read, logits read]`, computed as unedited continued runs: in a
    /// causal model, reading the last position costs one row per prompt.
    /// `prompts` picks some of the base run's prompts (default all).
    public func logits(of base: BaseRun, prompts: Range<Int>? = nil, positions: MetricPositions = .last,
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
    /// layer. Returns per run its logits `[positions read, logits read]`: the last position (`.last`), or every position
    /// from its start on (`.all`, and `.these`, which the caller cuts down); all of the vocabulary, or the entries
    /// `logitIndices` names, in that order.
    ///
    /// Equal, up to float rounding, to a full forward of the prompt with the edit made by a hook, at the positions
    /// returned. In a causal model that holds when the edit changes nothing before `start`; a bidirectional model
    /// has every position depend on every other, so its runs must start at 0.
    public func continueRuns(from base: BaseRun, _ runs: [ContinuedRun], positions: MetricPositions = .last,
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
        return try continueSorted(from: base, runs, readLast: positions == .last, logitIndices: logitIndices)
    }
}

extension TransformerModel {
    /// The batched continuation on the layer stack. Runs are ordered by entry layer, so the runs active in a layer
    /// hold a prefix of the stack's rows and a joining run only adds rows after them; each run's edit is called at its
    /// site in its entry layer, through a slice of the stack's buffer there.
    private func continueSorted(from base: BaseRun, _ unordered: [ContinuedRun], readLast: Bool, logitIndices: [Int]?) throws -> [Tensor] {
        let order = unordered.indices.sorted { (unordered[$0].layer, $0) < (unordered[$1].layer, $1) }
        let runs = order.map { unordered[$0] }
        let P = base.tokens.positions, H = config.nHeads
        var offsets = [0]
        for run in runs { offsets.append(offsets.last! + P - run.start) }
        // The runs edited at each hook point.
        var editedAt: [HookName: [Int]] = [:]
        for (i, run) in runs.enumerated() { editedAt[HookName(run.site, layer: run.layer), default: []].append(i) }
        let stack = try LayerStack(
            model: self, entry: .earlierRun(residPre: base.residPre, keys: base.keys, values: base.values), positions: P,
            sequences: runs.map { LayerStack.Sequence(prompt: $0.prompt, start: $0.start, layer: $0.layer) },
            lastRowsOnly: readLast, logitIndices: logitIndices,
            wants: { editedAt[$0] != nil },
            visit: { name, view in
                for i in editedAt[name] ?? [] {
                    let run = runs[i], row = view.pruned ? i : offsets[i]
                    let positions = view.pruned ? (P - 1)..<P : run.start..<P
                    if view.patternLayout == .rowHeadKey {
                        runs[i].edit(RunSlice(site: run.site, positions: positions, width: P, base: view.base + row * H * P,
                                              rowStride: H * P, heads: H))
                    } else {
                        runs[i].edit(RunSlice(site: run.site, positions: positions, width: view.width,
                                              base: view.base + row * view.stride, rowStride: view.stride, heads: H))
                    }
                }
            })
        let logits = try stack.run(), width = stack.unembedding.width
        var out = [Tensor](repeating: Tensor(zeros: [0]), count: runs.count)
        for i in runs.indices {
            let first = readLast ? i : offsets[i], count = readLast ? 1 : offsets[i + 1] - offsets[i]
            out[order[i]] = Tensor(shape: [count, width], scalars: Array(logits[(first * width)..<((first + count) * width)]))
        }
        return out
    }
}
