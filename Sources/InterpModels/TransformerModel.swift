import InterpCore

/// A loaded model: its config and its weights, as the components the forward pass is built from.
public final class TransformerModel: @unchecked Sendable {
    /// One transformer block: normalisation, attention, and (unless attention-only) normalisation and MLP.
    public struct Block: Sendable {
        public let ln1: Norm
        public let attention: SelfAttention
        /// Nil in an attention-only model.
        public let ln2: Norm?
        public let mlp: MLP?
    }

    public let config: ModelConfig
    /// Where the weights came from ("transformer_lens" or "huggingface-gpt2").
    public let sourceFormat: String
    public let embedding: Embedding
    public let blocks: [Block]
    public let lnFinal: Norm
    public let unembedding: Unembedding

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
        let c = config, D = c.dModel
        self.config = config
        self.sourceFormat = sourceFormat
        embedding = Embedding(tokens: get("embed.W_E"), positions: get("pos_embed.W_pos"), dModel: D)
        func norm(_ prefix: String) -> Norm {
            switch c.normalization {
            case .layerNorm: return Norm(kind: .layerNorm, width: D, eps: c.eps, weight: get(prefix + ".w"), bias: get(prefix + ".b"))
            case .layerNormPre: return Norm(kind: .layerNormPre, width: D, eps: c.eps)
            case .none: return Norm(kind: .none, width: D, eps: c.eps)
            }
        }
        blocks = (0..<c.nLayers).map { l in
            let p = "blocks.\(l)."
            let attention = SelfAttention(
                wQ: get(p + "attn.W_Q"), wK: get(p + "attn.W_K"), wV: get(p + "attn.W_V"),
                bQ: get(p + "attn.b_Q"), bK: get(p + "attn.b_K"), bV: get(p + "attn.b_V"),
                wO: get(p + "attn.W_O"), bO: get(p + "attn.b_O"),
                heads: c.nHeads, headDim: c.dHead, dModel: D, causal: c.attentionDir == .causal, attnScale: c.effectiveAttnScale)
            guard !c.attnOnly else { return Block(ln1: norm(p + "ln1"), attention: attention, ln2: nil, mlp: nil) }
            let mlp = MLP(input: Linear(weight: get(p + "mlp.W_in"), bias: get(p + "mlp.b_in"), inWidth: D, outWidth: c.dMLP),
                          output: Linear(weight: get(p + "mlp.W_out"), bias: get(p + "mlp.b_out"), inWidth: c.dMLP, outWidth: D),
                          activation: c.actFn!)
            return Block(ln1: norm(p + "ln1"), attention: attention, ln2: norm(p + "ln2"), mlp: mlp)
        }
        lnFinal = norm("ln_final")
        unembedding = Unembedding(weight: get("unembed.W_U"), bias: get("unembed.b_U"), dModel: D, vocabulary: c.dVocabOut)
    }

    /// The parameters under their TransformerLens names and shapes.
    public var parameters: [ParameterTable.Parameter] { ParameterTable.expected(for: config) }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }
}
