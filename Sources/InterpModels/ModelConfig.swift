import Foundation
import InterpCore

/// Layer-norm variants interp implements, by TransformerLens's `normalization_type` values.
public enum Normalization: String, Codable, Sendable {
    /// centre, scale, then affine `w`, `b`
    case layerNorm = "LN"
    /// centre and scale, no parameters (what TL's LN folding leaves)
    case layerNormPre = "LNPre"
    /// no normalisation at all (`normalization_type: null`)
    case none = "None"
}

public enum AttentionDirection: String, Codable, Sendable {
    case causal
    case bidirectional
}

/// A transformer's architecture, in TransformerLens's `HookedTransformerConfig` terms. Decoded from a TL
/// `config.json` (coding keys are TL's field names; defaults are TL's, all in `init(from:)`), or built from a
/// Hugging Face GPT-2 config. `validate()` rejects shapes that cannot work.
public struct ModelConfig: Codable, Equatable, Sendable {
    public var modelName: String
    public var originalArchitecture: String?
    public var nLayers: Int
    public var dModel: Int
    public var nHeads: Int
    public var dHead: Int
    public var dMLP: Int
    public var nCtx: Int
    public var dVocab: Int
    public var dVocabOut: Int
    /// nil only for attention-only models, whose MLP activation is irrelevant.
    public var actFn: ActivationFunction?
    public var normalization: Normalization
    public var attnOnly: Bool
    public var attentionDir: AttentionDirection
    public var useAttnScale: Bool
    public var attnScale: Float
    public var eps: Float

    enum CodingKeys: String, CodingKey {
        case modelName = "model_name"
        case originalArchitecture = "original_architecture"
        case nLayers = "n_layers"
        case dModel = "d_model"
        case nHeads = "n_heads"
        case dHead = "d_head"
        case dMLP = "d_mlp"
        case nCtx = "n_ctx"
        case dVocab = "d_vocab"
        case dVocabOut = "d_vocab_out"
        case actFn = "act_fn"
        case normalization = "normalization_type"
        case attnOnly = "attn_only"
        case attentionDir = "attention_dir"
        case useAttnScale = "use_attn_scale"
        case attnScale = "attn_scale"
        case eps
    }

    public init(modelName: String, originalArchitecture: String? = nil, nLayers: Int, dModel: Int, nHeads: Int,
                dHead: Int, dMLP: Int, nCtx: Int, dVocab: Int, dVocabOut: Int? = nil,
                actFn: ActivationFunction? = .geluNew, normalization: Normalization = .layerNorm,
                attnOnly: Bool = false, attentionDir: AttentionDirection = .causal, useAttnScale: Bool = true,
                attnScale: Float? = nil, eps: Float = 1e-5) {
        self.modelName = modelName
        self.originalArchitecture = originalArchitecture
        self.nLayers = nLayers
        self.dModel = dModel
        self.nHeads = nHeads
        self.dHead = dHead
        self.dMLP = dMLP
        self.nCtx = nCtx
        self.dVocab = dVocab
        self.dVocabOut = dVocabOut ?? dVocab
        self.actFn = actFn
        self.normalization = normalization
        self.attnOnly = attnOnly
        self.attentionDir = attentionDir
        self.useAttnScale = useAttnScale
        self.attnScale = attnScale ?? Float(dHead).squareRoot()
        self.eps = eps
    }

    /// TL's defaults and post-init rules: `n_heads` −1 → `d_model / d_head`, `d_mlp` null → `4·d_model`,
    /// `d_vocab_out` −1 → `d_vocab`, `attn_scale` → `√d_head`, `normalization_type` null → no normalisation.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        dModel = try c.decode(Int.self, forKey: .dModel)
        dHead = try c.decode(Int.self, forKey: .dHead)
        nLayers = try c.decode(Int.self, forKey: .nLayers)
        nCtx = try c.decode(Int.self, forKey: .nCtx)
        let heads = try c.decodeIfPresent(Int.self, forKey: .nHeads) ?? -1
        nHeads = heads == -1 && dHead > 0 ? dModel / dHead : heads
        dMLP = try c.decodeIfPresent(Int.self, forKey: .dMLP) ?? 4 * dModel
        dVocab = try c.decodeIfPresent(Int.self, forKey: .dVocab) ?? -1
        let vocabOut = try c.decodeIfPresent(Int.self, forKey: .dVocabOut) ?? -1
        dVocabOut = vocabOut == -1 ? dVocab : vocabOut
        modelName = try c.decodeIfPresent(String.self, forKey: .modelName) ?? "custom"
        originalArchitecture = try c.decodeIfPresent(String.self, forKey: .originalArchitecture)
        attnOnly = try c.decodeIfPresent(Bool.self, forKey: .attnOnly) ?? false
        if c.contains(.normalization) {
            if try c.decodeNil(forKey: .normalization) {
                normalization = .none
            } else {
                let name = try c.decode(String.self, forKey: .normalization)
                guard let value = Normalization(rawValue: name) else {
                    throw InterpError("field 'normalization_type' = '\(name)' is not supported (interp implements LN, LNPre and null)")
                }
                normalization = value
            }
        } else {
            normalization = .layerNorm
        }
        let actName = try c.decodeIfPresent(String.self, forKey: .actFn)
        if let actName, let fn = ActivationFunction(exporterName: actName) {
            actFn = fn
        } else if let actName, !attnOnly {
            throw InterpError("field 'act_fn' = '\(actName)' is not supported (interp implements relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast)")
        } else {
            // An attention-only model never applies its activation; TL's default is relu.
            actFn = attnOnly ? nil : .relu
        }
        let direction = try c.decodeIfPresent(String.self, forKey: .attentionDir) ?? "causal"
        guard let dir = AttentionDirection(rawValue: direction) else {
            throw InterpError("field 'attention_dir' = '\(direction)' is not supported (causal or bidirectional)")
        }
        attentionDir = dir
        useAttnScale = try c.decodeIfPresent(Bool.self, forKey: .useAttnScale) ?? true
        attnScale = try c.decodeIfPresent(Float.self, forKey: .attnScale) ?? (useAttnScale ? Float(dHead).squareRoot() : 1)
        eps = try c.decodeIfPresent(Float.self, forKey: .eps) ?? 1e-5
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(modelName, forKey: .modelName)
        try c.encodeIfPresent(originalArchitecture, forKey: .originalArchitecture)
        try c.encode(nLayers, forKey: .nLayers)
        try c.encode(dModel, forKey: .dModel)
        try c.encode(nHeads, forKey: .nHeads)
        try c.encode(dHead, forKey: .dHead)
        try c.encode(dMLP, forKey: .dMLP)
        try c.encode(nCtx, forKey: .nCtx)
        try c.encode(dVocab, forKey: .dVocab)
        try c.encode(dVocabOut, forKey: .dVocabOut)
        try c.encodeIfPresent(actFn, forKey: .actFn)
        if normalization == .none { try c.encodeNil(forKey: .normalization) } else { try c.encode(normalization, forKey: .normalization) }
        try c.encode(attnOnly, forKey: .attnOnly)
        try c.encode(attentionDir, forKey: .attentionDir)
        try c.encode(useAttnScale, forKey: .useAttnScale)
        try c.encode(attnScale, forKey: .attnScale)
        try c.encode(eps, forKey: .eps)
    }

    /// Checks that the shapes make a model interp can run.
    public func validate() throws {
        func positive(_ value: Int, _ field: String) throws {
            guard value > 0 else { throw InterpError("field '\(field)' must be positive, got \(value)") }
        }
        try positive(nLayers, "n_layers")
        try positive(dModel, "d_model")
        try positive(dHead, "d_head")
        try positive(nHeads, "n_heads")
        try positive(nCtx, "n_ctx")
        try positive(dVocab, "d_vocab")
        try positive(dVocabOut, "d_vocab_out")
        if !attnOnly {
            try positive(dMLP, "d_mlp")
            guard actFn != nil else { throw InterpError("field 'act_fn' is required for a model with MLPs") }
        }
        guard attnScale.isFinite, attnScale != 0 else { throw InterpError("field 'attn_scale' must be finite and non-zero") }
        guard eps.isFinite, eps >= 0 else { throw InterpError("field 'eps' must be finite and non-negative") }
        let parameters = ParameterTable.expected(for: self).reduce(0) { $0 + $1.count }
        guard parameters < 1 << 40 else { throw InterpError("the config describes an implausibly large model (\(parameters) parameters)") }
    }

    /// `1 / attnScale`-scaled attention when `use_attn_scale`, unscaled otherwise.
    public var effectiveAttnScale: Float { useAttnScale ? attnScale : 1 }
}
