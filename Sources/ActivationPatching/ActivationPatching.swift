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

public enum PatchDirection: String, Sendable {
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
                                 metric: (Tensor) throws -> Double) throws -> PatchingTable {
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

    /// TransformerLens's `get_act_patch_block_every`: resid_pre, attn_out and mlp_out by (layer, pos).
    public static func blockEvery(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch, direction: PatchDirection = .denoise,
                                  metric: (Tensor) throws -> Double) throws -> [PatchingTable] {
        try [PatchSite.residPre, .attnOut, .mlpOut].map {
            try reference(model: model, clean: clean, corrupted: corrupted, site: $0, indexing: .layerPos, direction: direction, metric: metric)
        }
    }

    /// TransformerLens's `get_act_patch_attn_head_all_pos_every` (by (layer, head)) or `…_by_pos_every` (by
    /// (layer, pos, head); the pattern, patched by destination position, is laid out the same way).
    public static func headEvery(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch, byPosition: Bool,
                                 direction: PatchDirection = .denoise, metric: (Tensor) throws -> Double) throws -> [PatchingTable] {
        var tables = try [PatchSite.headOut, .q, .k, .v].map {
            try reference(model: model, clean: clean, corrupted: corrupted, site: $0, indexing: byPosition ? .layerPosHead : .layerHead,
                          direction: direction, metric: metric)
        }
        let pattern = try reference(model: model, clean: clean, corrupted: corrupted, site: .pattern,
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

/// Metrics of the patched logits `[batch, pos, vocab]`, all read at the last position and averaged over the batch.
public enum PatchingMetric {
    /// `logit[answer_b] − logit[wrong_b]`.
    public static func logitDifference(answers: [Int], wrongs: [Int]) -> (Tensor) throws -> Double {
        { logits in
            try mean(logits, answers.count) { row, b in Double(row[answers[b]]) - Double(row[wrongs[b]]) }
        }
    }

    /// `log softmax(logits)[answer_b]`.
    public static func logProbability(answers: [Int]) -> (Tensor) throws -> Double {
        { logits in try mean(logits, answers.count) { row, b in logSoftmax(row)[answers[b]] } }
    }

    /// `softmax(logits)[answer_b]`.
    public static func probability(answers: [Int]) -> (Tensor) throws -> Double {
        { logits in try mean(logits, answers.count) { row, b in Foundation.exp(logSoftmax(row)[answers[b]]) } }
    }

    /// `KL(clean ‖ patched) = Σ_v p_clean (log p_clean − log p_patched)`, with the clean run's logits given.
    public static func klFromClean(cleanLogits: Tensor) -> (Tensor) throws -> Double {
        let V = cleanLogits.shape[2], P = cleanLogits.shape[1]
        let reference = (0..<cleanLogits.shape[0]).map { b in
            logSoftmax(Array(cleanLogits.scalars[((b * P + P - 1) * V)..<((b * P + P) * V)]))
        }
        return { logits in
            try mean(logits, reference.count) { row, b in
                let patched = logSoftmax(row)
                var kl = 0.0
                for v in 0..<row.count { kl += Foundation.exp(reference[b][v]) * (reference[b][v] - patched[v]) }
                return kl
            }
        }
    }

    /// `(m − m_corrupted) / (m_clean − m_corrupted)`: 0 = no effect, 1 = fully restored (denoising).
    public static func normalized(_ metric: @escaping (Tensor) throws -> Double, clean: Double, corrupted: Double) -> (Tensor) throws -> Double {
        { logits in (try metric(logits) - corrupted) / (clean - corrupted) }
    }

    static func logSoftmax(_ row: [Float]) -> [Double] {
        let m = Double(row.max() ?? 0)
        let logSum = Foundation.log(row.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) }) + m
        return row.map { Double($0) - logSum }
    }

    static func mean(_ logits: Tensor, _ expected: Int, _ body: ([Float], Int) -> Double) throws -> Double {
        let (B, P, V) = (logits.shape[0], logits.shape[1], logits.shape[2])
        guard expected == B else { throw InterpError("\(expected) answer tokens for \(B) prompts") }
        var total = 0.0
        for b in 0..<B { total += body(Array(logits.scalars[((b * P + P - 1) * V)..<((b * P + P) * V)]), b) }
        return total / Double(B)
    }
}
