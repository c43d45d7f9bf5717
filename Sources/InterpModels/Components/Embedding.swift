import InterpCore

/// Token and learned position embeddings (TransformerLens's `Embed` and `PosEmbed`): `W_E` `[d_vocab, d_model]`,
/// `W_pos` `[n_ctx, d_model]`. Row `r` of a batch of sequences `positions` long is at position `firstPosition + r %
/// positions`.
public struct Embedding: Sendable {
    public let dModel: Int
    public let tokens: [Float]
    public let positions: [Float]

    public init(tokens: [Float], positions: [Float], dModel: Int) {
        precondition(tokens.count % max(dModel, 1) == 0 && positions.count % max(dModel, 1) == 0)
        self.dModel = dModel
        self.tokens = tokens
        self.positions = positions
    }

    /// `hook_embed` rows: `W_E[ids[r]]`. Ids must be in the vocabulary (a `TokenBatch` is).
    public func tokenRows(_ ids: UnsafeBufferPointer<Int32>, into out: UnsafeMutablePointer<Float>) {
        let D = dModel
        tokens.withUnsafeBufferPointer { wE in
            for (r, id) in ids.enumerated() { (out + r * D).update(from: wE.baseAddress! + Int(id) * D, count: D) }
        }
    }

    /// `hook_pos_embed` rows: `W_pos[firstPosition + r % sequenceLength]`, for `rows` rows.
    public func positionRows(rows: Int, sequenceLength: Int, firstPosition: Int = 0, into out: UnsafeMutablePointer<Float>) {
        let D = dModel
        positions.withUnsafeBufferPointer { wPos in
            for r in 0..<rows { (out + r * D).update(from: wPos.baseAddress! + (firstPosition + r % sequenceLength) * D, count: D) }
        }
    }

    /// Both summed: the residual stream entering block 0.
    public func forward(_ ids: UnsafeBufferPointer<Int32>, sequenceLength: Int, firstPosition: Int = 0,
                        into out: UnsafeMutablePointer<Float>) {
        let D = dModel
        tokens.withUnsafeBufferPointer { wE in
            positions.withUnsafeBufferPointer { wPos in
                for (r, id) in ids.enumerated() {
                    let e = wE.baseAddress! + Int(id) * D, p = wPos.baseAddress! + (firstPosition + r % sequenceLength) * D
                    let row = out + r * D
                    for i in 0..<D { row[i] = e[i] + p[i] }
                }
            }
        }
    }

    /// Reference: the sum, one row at a time, from the weights as arrays.
    public func reference(_ ids: [Int], sequenceLength: Int, firstPosition: Int = 0) -> [Float] {
        ids.enumerated().flatMap { r, id in
            (0..<dModel).map { i in tokens[id * dModel + i] + positions[(firstPosition + r % sequenceLength) * dModel + i] }
        }
    }
}
