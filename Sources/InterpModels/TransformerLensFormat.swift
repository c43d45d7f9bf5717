import Foundation
import InterpCore
import SafeTensors

/// TransformerLens-format models: `config.json` with `HookedTransformerConfig` fields and `model.safetensors` with
/// `HookedTransformer.state_dict()` names (reference: TL's `HookedTransformer`, `components/*.py`).
public enum TransformerLensFormat {
    /// Fields that change the architecture, with the values that leave it as interp implements it. A config that sets
    /// one of them otherwise is refused by name rather than run wrongly. Fields not listed here either are read by
    /// `ModelConfig`, only switch TL hooks on (`use_attn_result`, `use_split_qkv_input`, …), or are bookkeeping.
    static let inactiveArchitectureFields: [(field: String, inactive: (JSONValue) -> Bool, feature: String)] = [
        ("positional_embedding_type", { $0.stringValue == "standard" }, "only learned absolute positions ('standard') are implemented"),
        ("n_key_value_heads", { $0.isNull }, "grouped-query attention is not implemented"),
        ("gated_mlp", isFalse, "gated MLPs are not implemented"),
        ("parallel_attn_mlp", isFalse, "parallel attention and MLP is not implemented"),
        ("final_rms", isFalse, "RMS norm is not implemented"),
        ("use_local_attn", isFalse, "local attention is not implemented"),
        ("use_qk_norm", isFalse, "QK norm is not implemented"),
        ("use_normalization_before_and_after", isFalse, "post-norms are not implemented"),
        ("post_embedding_ln", isFalse, "a post-embedding layer norm is not implemented"),
        ("attn_scores_soft_cap", isNonPositive, "attention soft-capping is not implemented"),
        ("output_logits_soft_cap", isNonPositive, "logit soft-capping is not implemented"),
        ("num_experts", { $0.isNull }, "mixture-of-experts MLPs are not implemented"),
        ("scale_attn_by_inverse_layer_idx", isFalse, "attention scaling by layer index is not implemented"),
        ("use_attention_sinks", isFalse, "attention sinks are not implemented"),
        ("use_logn_attn", isFalse, "log-n attention scaling is not implemented"),
        ("clip_qkv", { $0.isNull }, "clipping q/k/v is not implemented"),
        ("load_in_4bit", isFalse, "4-bit weights are not implemented"),
    ]

    private static func isFalse(_ value: JSONValue) -> Bool { value.boolValue == false || value.isNull }
    private static func isNonPositive(_ value: JSONValue) -> Bool { value.isNull || (value.doubleValue.map { $0 <= 0 } ?? false) }

    /// Parses and validates a TL `config.json`.
    public static func config(from data: Data, file: String) throws -> ModelConfig {
        let parsed: JSONValue
        do { parsed = try JSONValue.parse(data) } catch let error as InterpError { throw error.inFile(file) }
        guard case .object(let raw) = parsed else { throw InterpError("not a JSON object", file: file) }
        for (field, inactive, feature) in inactiveArchitectureFields {
            if let value = raw[field], !inactive(value) {
                throw InterpError("field '\(field)' = \(value) is not supported: \(feature)", file: file)
            }
        }
        let config = try decodeJSON(ModelConfig.self, from: data, file: file)
        do {
            try config.validate()
        } catch let error as InterpError {
            throw error.inFile(file)
        }
        return config
    }

    /// Loads `directory/config.json` and `directory/model.safetensors`.
    public static func load(directory: String) throws -> TransformerModel {
        let configPath = directory + "/config.json"
        let config = try self.config(from: readFile(configPath), file: configPath)
        let weightsPath = directory + "/model.safetensors"
        let file = try SafeTensorsFile(path: weightsPath)
        var state: [String: Tensor] = [:]
        for name in file.names where !ParameterTable.isNonParameterBuffer(name) {
            do {
                state[name] = try file.tensor(name)
            } catch let error as InterpError {
                throw error.inFile(weightsPath)
            }
        }
        return try TransformerModel(config: config, stateDict: state, sourceFormat: "transformer_lens", file: weightsPath)
    }
}
