import Foundation
import InterpCore
import InterpModels

/// How much of the model's next-token loss survives when the SAE's reconstruction replaces the activation at its hook:
/// `(CE_zero − CE_spliced) / (CE_zero − CE_clean)`, where zero-ablation writes zeros there instead. Cross-entropy is
/// TransformerLens's `return_type="loss"`: the mean over every position but the last of −log p(next token).
public struct CrossEntropyRecovered: Encodable, Sendable {
    public let hook: String
    public let clean: Double
    public let spliced: Double
    public let zeroAblation: Double
    public let recovered: Double
    public let tokens: Int

    enum CodingKeys: String, CodingKey {
        case hook, clean, spliced, zeroAblation = "zero_ablation", recovered, tokens
    }

    public static func measure(_ sae: SparseAutoencoder, model: TransformerModel, hook: HookName, sequences: [[Int32]],
                               batchSize: Int = 16) throws -> CrossEntropyRecovered {
        guard !sequences.isEmpty else { throw InterpError("no token sequences to measure the cross-entropy on") }
        let width = hook.shape(for: model.config, batch: 1, positions: 1).dropFirst(2).reduce(1, *)
        guard Array(hook.site.shape.prefix(2)) == [.batch, .pos], width == sae.config.dIn else {
            throw InterpError("the SAE's d_in (\(sae.config.dIn)) does not match hook '\(hook)' (\(width) per token)")
        }
        let splice: HookFunction = { _, activation in
            let rows = activation.count / width
            activation = try sae.reconstruct(activation.reshaped([rows, width])).reshaped(activation.shape)
        }
        let zero: HookFunction = { _, activation in activation = Tensor(zeros: activation.shape) }
        var totals = (clean: 0.0, spliced: 0.0, zero: 0.0)
        var count = 0
        var start = 0
        while start < sequences.count {
            var end = start + 1
            while end < sequences.count && end - start < batchSize && sequences[end].count == sequences[start].count { end += 1 }
            let batch = try TokenBatch(sequences[start..<end].map { $0.map(Int.init) }, config: model.config)
            let (clean, n) = NextTokenLoss.sum(try model.run(batch), batch)
            totals.clean += clean
            totals.spliced += NextTokenLoss.sum(try model.runWithHooks(batch, functions: [(hook, splice)]), batch).sum
            totals.zero += NextTokenLoss.sum(try model.runWithHooks(batch, functions: [(hook, zero)]), batch).sum
            count += n
            start = end
        }
        guard count > 0 else { throw InterpError("the sequences are too short to predict any next token") }
        let c = totals.clean / Double(count), s = totals.spliced / Double(count), z = totals.zero / Double(count)
        return CrossEntropyRecovered(hook: hook.description, clean: c, spliced: s, zeroAblation: z,
                                     recovered: z != c ? (z - s) / (z - c) : .nan, tokens: count)
    }
}
