import Foundation
import InterpCore
import InterpModels

/// What `interp patch` can patch: TransformerLens's activation names for `get_act_patch_*`.
public enum PatchSite: String, CaseIterable, Sendable {
    case residPre = "resid_pre", residMid = "resid_mid", residPost = "resid_post", attnOut = "attn_out", mlpOut = "mlp_out"
    case headOut = "head_out", q, k, v, pattern

    public var hookSite: HookName.Site {
        switch self {
        case .residPre: return .residPre
        case .residMid: return .residMid
        case .residPost: return .residPost
        case .attnOut: return .attnOut
        case .mlpOut: return .mlpOut
        case .headOut: return .z
        case .q: return .q
        case .k: return .k
        case .v: return .v
        case .pattern: return .pattern
        }
    }

    /// The index spaces each site can be patched over (TransformerLens's setters), the first being the default.
    public var indexings: [PatchIndexing] {
        switch self {
        case .residPre, .residMid, .residPost, .attnOut, .mlpOut: return [.layerPos]
        case .headOut, .q, .k, .v: return [.layerPosHead, .layerHead]
        case .pattern: return [.layerHeadDest, .layerHeadDestSrc, .layerHead]
        }
    }
}

/// The axes one table of patching results runs over.
public enum PatchIndexing: String, CaseIterable, Sendable {
    case layerPos = "layer,pos", layerPosHead = "layer,pos,head", layerHead = "layer,head"
    case layerHeadDest = "layer,head,dest", layerHeadDestSrc = "layer,head,dest,src"

    public var axes: [String] { rawValue.split(separator: ",").map(String.init) }
}

public enum PatchDirection: String, CaseIterable, Sendable {
    /// Source activations from the clean run, written into the corrupted run (TransformerLens's patching).
    case denoise
    /// Source activations from the corrupted run, written into the clean run.
    case noise
}

/// A patching table: one metric value per index tuple, row-major over `shape`.
public struct PatchingTable: Sendable {
    public let site: PatchSite
    public let indexing: PatchIndexing
    public let shape: [Int]
    public var values: [Double]

    public subscript(_ index: [Int]) -> Double {
        var flat = 0
        for (i, n) in zip(index, shape) { flat = flat * n + i }
        return values[flat]
    }
}

public enum ActivationPatching {
    /// The sizes of the axes of `indexing` for a model and prompt length.
    public static func shape(_ indexing: PatchIndexing, config: ModelConfig, positions: Int) -> [Int] {
        indexing.axes.map { axis in
            switch axis {
            case "layer": return config.nLayers
            case "head": return config.nHeads
            default: return positions       // pos, dest, src
            }
        }
    }

    /// The hook name of `site` in `layer`.
    public static func hook(_ site: PatchSite, layer: Int) -> HookName { HookName(site.hookSite, layer: layer) }

    /// Copies, from `source` into `target` (same shape), the slice one index tuple names (the layer excluded):
    /// TransformerLens's patch setters. Activations are `[batch, pos, …]`, heads `[batch, pos, head, …]`, patterns
    /// `[batch, head, dest, src]`.
    public static func copySlice(_ site: PatchSite, _ indexing: PatchIndexing, index: [Int], from source: Tensor, into target: inout Tensor) {
        // Which tensor dimension each index axis after the layer fixes.
        let fixed: [(dim: Int, value: Int)]
        switch (site, indexing) {
        case (_, .layerPos): fixed = [(1, index[1])]
        case (_, .layerPosHead): fixed = [(1, index[1]), (2, index[2])]
        case (.pattern, .layerHead): fixed = [(1, index[1])]
        case (_, .layerHead): fixed = [(2, index[1])]
        case (_, .layerHeadDest): fixed = [(1, index[1]), (2, index[2])]
        case (_, .layerHeadDestSrc): fixed = [(1, index[1]), (2, index[2]), (3, index[3])]
        }
        let shape = target.shape
        var strides = [Int](repeating: 1, count: shape.count)
        for d in stride(from: shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * shape[d + 1] }
        // Walk the free dimensions; the innermost free run is contiguous when the fixed dims are all outer.
        source.withUnsafeBufferPointer { src in target.withUnsafeMutableBufferPointer { dst in
            func visit(_ d: Int, _ offset: Int) {
                if d == shape.count { dst[offset] = src[offset]; return }
                if let f = fixed.first(where: { $0.dim == d }) { return visit(d + 1, offset + f.value * strides[d]) }
                if fixed.allSatisfy({ $0.dim < d }) {
                    let count = shape[d] * strides[d]
                    (dst.baseAddress! + offset).update(from: src.baseAddress! + offset, count: count)
                    return
                }
                for i in 0..<shape[d] { visit(d + 1, offset + i * strides[d]) }
            }
            visit(0, 0)
        } }
    }

    /// Activation patching the way TransformerLens's `generic_activation_patch` does it, one full forward per index
    /// tuple: the base run (corrupted for denoise, clean for noise) with one slice of one activation replaced by the
    /// source run's, and `metric` of its logits.
    public static func reference(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch, site: PatchSite,
                                 indexing: PatchIndexing, direction: PatchDirection = .denoise,
                                 metric: PatchingMetric) throws -> PatchingTable {
        try validate(model: model, clean: clean, corrupted: corrupted, site: site, indexing: indexing)
        let (base, source) = direction == .denoise ? (corrupted, clean) : (clean, corrupted)
        let hooks = (0..<model.config.nLayers).map { hook(site, layer: $0) }
        let sourceCache = try model.runWithCache(source, names: hooks).cache
        let shape = shape(indexing, config: model.config, positions: clean.positions)
        let count = shape.reduce(1, *)
        var values = [Double](repeating: 0, count: count)
        for flat in 0..<count {
            var index = [Int](repeating: 0, count: shape.count), rest = flat
            for d in stride(from: shape.count - 1, through: 0, by: -1) { index[d] = rest % shape[d]; rest /= shape[d] }
            let name = hooks[index[0]]
            let sourceActivation = sourceCache[name]!
            let logits = try model.runWithHooks(base, functions: [(name, { _, activation in
                copySlice(site, indexing, index: index, from: sourceActivation, into: &activation)
            })])
            values[flat] = try metric(logits)
        }
        return PatchingTable(site: site, indexing: indexing, shape: shape, values: values)
    }

    /// The patching table, fast: equal to `reference` (up to float rounding) at a fraction of its cost.
    ///
    /// A cell whose source slice equals the base run's there changes nothing and gets the base run's metric without
    /// a run. Every other cell becomes one continued run per prompt it changes: it enters at the patched layer from
    /// the base run's cached residual stream, recomputes only positions from the first one the patch changes (earlier
    /// ones, and their keys and values, are the base run's: causal attention cannot carry a change backwards), and
    /// produces only the logits the metric reads. Cells are batched into runs of at most `maxRows` rows in all, so
    /// memory stays bounded; `progress` hears (cells done, cells) after each batch and at the end.
    public static func table(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch, site: PatchSite,
                             indexing: PatchIndexing, direction: PatchDirection = .denoise, metric: PatchingMetric,
                             maxRows: Int = 4096, progress: ((Int, Int) -> Void)? = nil) throws -> PatchingTable {
        try validate(model: model, clean: clean, corrupted: corrupted, site: site, indexing: indexing)
        let (baseTokens, sourceTokens) = direction == .denoise ? (corrupted, clean) : (clean, corrupted)
        let c = model.config, B = clean.batch, P = clean.positions
        let hooks = (0..<c.nLayers).map { hook(site, layer: $0) }
        // One forward for both: prompts 0..<B are the base run, B..<2B the source.
        let both = try TokenBatch(baseTokens.rows + sourceTokens.rows, config: c)
        let base = try model.baseRun(both, caching: hooks)
        let shape = shape(indexing, config: c, positions: P)
        let count = shape.reduce(1, *)

        // The continued runs of every cell that changes something.
        let causal = c.attentionDir == .causal
        var cells: [(cell: Int, runs: [ContinuedRun], rows: Int)] = []
        for flat in 0..<count {
            var index = [Int](repeating: 0, count: shape.count), rest = flat
            for d in stride(from: shape.count - 1, through: 0, by: -1) { index[d] = rest % shape[d]; rest /= shape[d] }
            let activation = base.cache[hooks[index[0]]]!
            var runs: [ContinuedRun] = []
            for b in 0..<B {
                guard let first = firstChange(site, indexing, index: index, in: activation, base: b, source: B + b) else { continue }
                runs.append(ContinuedRun(prompt: b, start: causal ? first : 0, layer: index[0], site: site.hookSite,
                                         edit: patchEdit(site, indexing, index: index, from: activation, prompt: B + b)))
            }
            if !runs.isEmpty { cells.append((flat, runs, runs.reduce(0) { $0 + P - $1.start })) }
        }

        let readCount = metric.logitIndices?.count ?? c.dVocabOut
        // With every position read, the logits of a batch are rows × vocabulary read: keep them to ~256 MB.
        let rowLimit = max(1, metric.positions != .last ? min(maxRows, (64 << 20) / readCount) : maxRows)
        // The base prompts' own logits ride along with the first batch: unedited runs, one row each when the
        // last position is read.
        let baseStart = metric.positions == .last && causal ? P - 1 : 0
        // Runs hold the last position or every one; a metric of some positions reads those of every one.
        func evaluate(_ read: Tensor) throws -> Double {
            guard case let .these(list) = metric.positions else { return try metric.evaluate(read) }
            return try metric.evaluate(read.selectingLogits(positions: list, indices: nil))
        }
        let baseRuns = (0..<B).map { ContinuedRun(prompt: $0, start: baseStart, layer: 0, site: .residPre) { _ in } }
        var baseRead = Tensor(zeros: [0]), values = [Double?](repeating: nil, count: count)
        var first = 0
        repeat {
            var last = first, rows = first == 0 ? B * (P - baseStart) : 0
            while last < cells.count && (last == first || rows + cells[last].rows <= rowLimit) {
                rows += cells[last].rows
                last += 1
            }
            let batch = cells[first..<last]
            var logits = try model.continueRuns(from: base, batch.flatMap(\.runs) + (first == 0 ? baseRuns : []),
                                                positions: metric.positions, logitIndices: metric.logitIndices)
            if first == 0 {
                let own = logits.suffix(B)
                baseRead = Tensor(shape: [B] + own[own.startIndex].shape, scalars: own.flatMap(\.scalars))
                logits.removeLast(B)
            }
            var next = 0
            for (cell, runs, _) in batch {
                // The base run's logits, with each continued prompt's rows put in.
                var read = baseRead
                let positionsRead = read.shape[1]
                read.withUnsafeMutableBufferPointer { out in
                    for run in runs {
                        let rows = logits[next]
                        next += 1
                        let firstPosition = positionsRead - rows.shape[0]
                        rows.withUnsafeBufferPointer { r in
                            (out.baseAddress! + (run.prompt * positionsRead + firstPosition) * readCount).update(from: r.baseAddress!, count: r.count)
                        }
                    }
                }
                values[cell] = try evaluate(read)
            }
            first = last
            progress?(last < cells.count ? cells[last].cell : count, count)
        } while first < cells.count
        // Cells that change nothing have the base run's metric.
        let baseValue = try evaluate(baseRead)
        return PatchingTable(site: site, indexing: indexing, shape: shape, values: values.map { $0 ?? baseValue })
    }

    /// The first position at which patching `index` changes prompt `b`'s activation (prompt `sb`'s differs from it
    /// in the slice), or nil if it changes nothing.
    static func firstChange(_ site: PatchSite, _ indexing: PatchIndexing, index: [Int], in activation: Tensor,
                            base b: Int, source sb: Int) -> Int? {
        let shape = activation.shape
        return activation.withUnsafeBufferPointer { x in
            func differs(_ offset: Int, _ sourceOffset: Int, _ count: Int) -> Bool {
                for i in 0..<count where x[offset + i] != x[sourceOffset + i] { return true }
                return false
            }
            if site == .pattern {
                // [batch, head, dest, src]
                let (H, P) = (shape[1], shape[2]), h = index[1]
                let row = { (b: Int, dest: Int) in ((b * H + h) * P + dest) * P }
                switch indexing {
                case .layerHead: return (0..<P).first { differs(row(b, $0), row(sb, $0), P) }
                case .layerHeadDest: return differs(row(b, index[2]), row(sb, index[2]), P) ? index[2] : nil
                default: return differs(row(b, index[2]) + index[3], row(sb, index[2]) + index[3], 1) ? index[2] : nil
                }
            }
            let P = shape[1], width = shape.dropFirst(2).reduce(1, *)
            let at = { (b: Int, p: Int) in (b * P + p) * width }
            switch indexing {
            case .layerPos: return differs(at(b, index[1]), at(sb, index[1]), width) ? index[1] : nil
            case .layerPosHead:
                let d = shape[3], h = index[2]
                return differs(at(b, index[1]) + h * d, at(sb, index[1]) + h * d, d) ? index[1] : nil
            default:   // (layer, head) over all positions
                let d = shape[3], h = index[1]
                return (0..<P).first { differs(at(b, $0) + h * d, at(sb, $0) + h * d, d) }
            }
        }
    }

    /// The edit of a continued run: `copySlice` from prompt `b` of `source`, restricted to the positions the run holds.
    static func patchEdit(_ site: PatchSite, _ indexing: PatchIndexing, index: [Int], from source: Tensor, prompt b: Int) -> (RunSlice) -> Void {
        let shape = source.shape
        return { slice in
            source.withUnsafeBufferPointer { s in
                let s = s.baseAddress!
                if site == .pattern {
                    let (H, P) = (shape[1], shape[2]), h = index[1]
                    let row = { (dest: Int) in s + ((b * H + h) * P + dest) * P }
                    switch indexing {
                    case .layerHead:
                        for dest in slice.positions { slice.patternRow(head: h, query: dest)?.baseAddress!.update(from: row(dest), count: P) }
                    case .layerHeadDest:
                        slice.patternRow(head: h, query: index[2])?.baseAddress!.update(from: row(index[2]), count: P)
                    default:
                        if let target = slice.patternRow(head: h, query: index[2]) { target[index[3]] = row(index[2])[index[3]] }
                    }
                    return
                }
                let P = shape[1], width = shape.dropFirst(2).reduce(1, *)
                switch indexing {
                case .layerPos:
                    slice.row(index[1])?.baseAddress!.update(from: s + (b * P + index[1]) * width, count: width)
                case .layerPosHead:
                    let d = shape[3], h = index[2]
                    (slice.row(index[1])?.baseAddress).map { $0 + h * d }?.update(from: s + (b * P + index[1]) * width + h * d, count: d)
                default:
                    let d = shape[3], h = index[1]
                    for p in slice.positions {
                        (slice.row(p)?.baseAddress).map { $0 + h * d }?.update(from: s + (b * P + p) * width + h * d, count: d)
                    }
                }
            }
        }
    }

    /// TransformerLens's `get_act_patch_block_every`: resid_pre, attn_out and mlp_out by (layer, pos).
    public static func blockEvery(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch, direction: PatchDirection = .denoise,
                                  metric: PatchingMetric) throws -> [PatchingTable] {
        try [PatchSite.residPre, .attnOut, .mlpOut].map {
            try table(model: model, clean: clean, corrupted: corrupted, site: $0, indexing: .layerPos, direction: direction, metric: metric)
        }
    }

    /// TransformerLens's `get_act_patch_attn_head_all_pos_every` (by (layer, head)) or `…_by_pos_every` (by
    /// (layer, pos, head); the pattern, patched by destination position, is laid out the same way).
    public static func headEvery(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch, byPosition: Bool,
                                 direction: PatchDirection = .denoise, metric: PatchingMetric) throws -> [PatchingTable] {
        var tables = try [PatchSite.headOut, .q, .k, .v].map {
            try table(model: model, clean: clean, corrupted: corrupted, site: $0, indexing: byPosition ? .layerPosHead : .layerHead,
                          direction: direction, metric: metric)
        }
        let pattern = try table(model: model, clean: clean, corrupted: corrupted, site: .pattern,
                                    indexing: byPosition ? .layerHeadDest : .layerHead, direction: direction, metric: metric)
        guard byPosition else { return tables + [pattern] }
        // [layer, head, dest] → [layer, pos, head]
        let (L, H, P) = (pattern.shape[0], pattern.shape[1], pattern.shape[2])
        var values = [Double](repeating: 0, count: L * P * H)
        for l in 0..<L { for h in 0..<H { for p in 0..<P { values[(l * P + p) * H + h] = pattern.values[(l * H + h) * P + p] } } }
        tables.append(PatchingTable(site: .pattern, indexing: .layerHeadDest, shape: [L, P, H], values: values))
        return tables
    }

    static func validate(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch, site: PatchSite, indexing: PatchIndexing) throws {
        guard clean.batch == corrupted.batch, clean.positions == corrupted.positions else {
            throw InterpError("clean and corrupted prompts differ in shape: \(clean.batch) × \(clean.positions) tokens vs \(corrupted.batch) × \(corrupted.positions)")
        }
        guard site.indexings.contains(indexing) else {
            throw InterpError("site \(site.rawValue) cannot be patched by \(indexing.rawValue) (it can by \(site.indexings.map(\.rawValue).joined(separator: " or ")))")
        }
        guard site.hookSite.exists(in: model.config) else {
            throw InterpError("this model has no \(site.rawValue) (\(site.hookSite.rawValue)) to patch")
        }
    }
}

/// Patching's name for the one metric type of patching and circuit discovery.
public typealias PatchingMetric = LogitMetric
