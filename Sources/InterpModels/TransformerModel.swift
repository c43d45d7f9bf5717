import InterpCore

/// A loaded model: its config and its weights, laid out for the forward pass.
///
/// Attention weights are packed per layer as one `[d_model, 3·n_heads·d_head]` matrix (Q heads | K heads | V heads),
/// so one GEMM makes `q`, `k` and `v` and each of `hook_q/k/v` `[batch, pos, head, d_head]` is a column block of it.
public final class TransformerModel: @unchecked Sendable {
    /// One block's weights, in the layout the forward pass uses (read-only from outside the module).
    public struct Layer: Sendable {
        public internal(set) var ln1: (w: [Float], b: [Float])?
        /// `[d_model, 3·H·d]`: columns are the Q heads, then the K heads, then the V heads, each `d_head` wide.
        public internal(set) var wQKV: [Float]
        public internal(set) var bQKV: [Float]        // [3·H·d]
        public internal(set) var wO: [Float]          // [H·d, d_model]
        public internal(set) var bO: [Float]          // [d_model]
        public internal(set) var ln2: (w: [Float], b: [Float])?
        public internal(set) var wIn: [Float]         // [d_model, d_mlp]
        public internal(set) var bIn: [Float]         // [d_mlp]
        public internal(set) var wOut: [Float]        // [d_mlp, d_model]
        public internal(set) var bOut: [Float]        // [d_model]
    }

    public let config: ModelConfig
    /// Where the weights came from ("transformer_lens" or "huggingface-gpt2").
    public let sourceFormat: String
    public let wE: [Float]              // [d_vocab, d_model]
    public let wPos: [Float]            // [n_ctx, d_model]
    public let layers: [Layer]
    public let lnFinal: (w: [Float], b: [Float])?
    public let wU: [Float]              // [d_model, d_vocab_out]
    public let bU: [Float]              // [d_vocab_out]

    /// Builds a model from a TransformerLens-named state dict. Strict: every parameter of `ParameterTable` must be
    /// present with its exact shape, and nothing else may be (TL's mask/IGNORE buffers excepted).
    public init(config: ModelConfig, stateDict: [String: Tensor], sourceFormat: String = "transformer_lens",
                file: String? = nil) throws {
        try config.validate()
        let expected = ParameterTable.expected(for: config)
        let expectedNames = Set(expected.map(\.name))
        for parameter in expected {
            guard let tensor = stateDict[parameter.name] else {
                throw InterpError("missing tensor '\(parameter.name)' (expected shape \(parameter.shape))", file: file)
            }
            guard tensor.shape == parameter.shape else {
                throw InterpError("tensor '\(parameter.name)' has shape \(tensor.shape) but the config implies \(parameter.shape)", file: file)
            }
            guard tensor.scalars.allSatisfy(\.isFinite) else {
                throw InterpError("tensor '\(parameter.name)' contains NaN or infinite values", file: file)
            }
        }
        if let unexpected = stateDict.keys.sorted().first(where: { !expectedNames.contains($0) && !ParameterTable.isNonParameterBuffer($0) }) {
            throw InterpError("unexpected tensor '\(unexpected)' (shape \(stateDict[unexpected]!.shape)) for this config", file: file)
        }

        func get(_ name: String) -> [Float] { stateDict[name]!.scalars }
        let c = config
        self.config = config
        self.sourceFormat = sourceFormat
        wE = get("embed.W_E")
        wPos = get("pos_embed.W_pos")
        let affine = c.normalization == .layerNorm
        let hd = c.nHeads * c.dHead
        layers = (0..<c.nLayers).map { l in
            let p = "blocks.\(l)."
            var wQKV = [Float](repeating: 0, count: c.dModel * 3 * hd)
            var bQKV = [Float](repeating: 0, count: 3 * hd)
            for (block, name) in ["Q", "K", "V"].enumerated() {
                let w = get(p + "attn.W_" + name), b = get(p + "attn.b_" + name)
                for h in 0..<c.nHeads {
                    for i in 0..<c.dModel {
                        for j in 0..<c.dHead {
                            wQKV[i * 3 * hd + block * hd + h * c.dHead + j] = w[(h * c.dModel + i) * c.dHead + j]
                        }
                    }
                    for j in 0..<c.dHead { bQKV[block * hd + h * c.dHead + j] = b[h * c.dHead + j] }
                }
            }
            return Layer(
                ln1: affine ? (get(p + "ln1.w"), get(p + "ln1.b")) : nil,
                wQKV: wQKV, bQKV: bQKV,
                wO: get(p + "attn.W_O"), bO: get(p + "attn.b_O"),
                ln2: affine && !c.attnOnly ? (get(p + "ln2.w"), get(p + "ln2.b")) : nil,
                wIn: c.attnOnly ? [] : get(p + "mlp.W_in"), bIn: c.attnOnly ? [] : get(p + "mlp.b_in"),
                wOut: c.attnOnly ? [] : get(p + "mlp.W_out"), bOut: c.attnOnly ? [] : get(p + "mlp.b_out"))
        }
        lnFinal = affine ? (get("ln_final.w"), get("ln_final.b")) : nil
        wU = get("unembed.W_U")
        bU = get("unembed.b_U")
    }

    /// The parameters under their TransformerLens names and shapes.
    public var parameters: [ParameterTable.Parameter] { ParameterTable.expected(for: config) }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }
}
