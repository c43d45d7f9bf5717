import Foundation
import Interp
import InterpTestSupport
import Testing

/// Unsupported architectures, broken configs and weights that do not fit: one-line errors naming file and field.
@Suite struct LoadingErrorTests {
    static let unsupportedFields: [(String, Any, String)] = [
        ("positional_embedding_type", "rotary", "only learned absolute positions"),
        ("n_key_value_heads", 2, "grouped-query attention"),
        ("gated_mlp", true, "gated MLPs"),
        ("parallel_attn_mlp", true, "parallel attention"),
        ("final_rms", true, "RMS norm"),
        ("attn_scores_soft_cap", 30.0, "soft-capping"),
        ("num_experts", 8, "mixture-of-experts"),
        ("use_local_attn", true, "local attention"),
    ]

    @Test(arguments: unsupportedFields.map { ($0.0, "\($0.1)", $0.2) })
    func unsupportedArchitectureIsRefusedByName(field: String, value: String, feature: String) throws {
        let raw = Self.unsupportedFields.first { $0.0 == field }!.1
        let dir = try editedModel("gpt2-tl", config: { $0[field] = raw })
        let error = try #require(loadError(dir))
        #expect(error.file == dir + "/config.json")
        #expect(error.message.hasPrefix("field '\(field)' = "))
        #expect(error.message.contains(feature))
    }

    @Test func rmsNormalizationIsRefused() throws {
        let dir = try editedModel("gpt2-tl", config: { $0["normalization_type"] = "RMS" })
        #expect(loadError(dir)?.description == dir + "/config.json: field 'normalization_type' = 'RMS' is not supported (interp implements LN, LNPre and null)")
    }

    @Test func unsupportedActivationIsRefused() throws {
        let dir = try editedModel("gpt2-tl", config: { $0["act_fn"] = "solu_ln" })
        #expect(loadError(dir)?.message.hasPrefix("field 'act_fn' = 'solu_ln' is not supported") == true)
    }

    /// Hook toggles, bookkeeping and inactive defaults load without complaint.
    @Test func inactiveFieldsLoad() throws {
        let dir = try editedModel("gpt2-tl", config: {
            $0["use_split_qkv_input"] = true
            $0["use_hook_mlp_in"] = true
            $0["rotary_dim"] = NSNull()
            $0["n_key_value_heads"] = NSNull()
            $0["some_future_bookkeeping_field"] = "x"
        })
        #expect(loadError(dir) == nil)
    }

    @Test func brokenConfigs() throws {
        let missing = try editedModel("gpt2-tl", config: { $0.removeValue(forKey: "d_model") })
        // Without d_model the config is not recognised as TransformerLens at all.
        #expect(loadError(missing)?.message.contains("neither a TransformerLens config") == true)
        let wrongType = try editedModel("gpt2-tl", config: { $0["n_layers"] = "two" })
        #expect(loadError(wrongType)?.description == wrongType + "/config.json: field 'n_layers' is not an integer")
        let negative = try editedModel("gpt2-tl", config: { $0["d_head"] = 0 })
        #expect(loadError(negative)?.description.contains("field 'd_head' must be positive") == true)
        let dir = try editedModel("gpt2-tl")
        try Data("{\"d_model\": 4,".utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        #expect(loadError(dir)?.description == dir + "/config.json: not a JSON object")
    }

    @Test func weightsThatDoNotFitTheConfig() throws {
        let missing = try editedModel("gpt2-tl", weights: { $0.removeValue(forKey: "blocks.1.attn.W_V") })
        #expect(loadError(missing)?.description == missing + "/model.safetensors: missing tensor 'blocks.1.attn.W_V' (expected shape [4, 64, 16])")
        let extra = try editedModel("gpt2-tl", weights: { $0["blocks.0.mlp.W_gate"] = Tensor(zeros: [64, 256]) })
        #expect(loadError(extra)?.description == extra + "/model.safetensors: unexpected tensor 'blocks.0.mlp.W_gate' (shape [64, 256]) for this config")
        let shape = try editedModel("gpt2-tl", weights: { $0["blocks.0.mlp.b_in"] = Tensor(zeros: [255]) })
        #expect(loadError(shape)?.description == shape + "/model.safetensors: tensor 'blocks.0.mlp.b_in' has shape [255] but the config implies [256]")
        let nan = try editedModel("gpt2-tl", weights: { $0["ln_final.b"]![3] = .nan })
        #expect(loadError(nan)?.message.contains("NaN") == true)
        // TL's non-parameter buffers are skipped by rule.
        let buffers = try editedModel("gpt2-tl", weights: {
            $0["blocks.0.attn.mask"] = Tensor(zeros: [32, 32])
            $0["blocks.0.attn.IGNORE"] = Tensor(shape: [], scalars: [-.infinity])
        })
        #expect(loadError(buffers) == nil)
    }

    @Test func missingFilesAndDirectories() throws {
        let dir = try Fixtures.temporaryDirectory()
        #expect(loadError(dir + "/nope")?.description == dir + "/nope: no such model directory")
        #expect(loadError(dir)?.description == dir + "/config.json: no such file")
        let noWeights = try editedModel("attn-only")
        try FileManager.default.removeItem(atPath: noWeights + "/model.safetensors")
        #expect(loadError(noWeights)?.description == noWeights + "/model.safetensors: no such file (interp reads safetensors weights only)")
        let hf = try editedModel("gpt2-hf", config: { $0["model_type"] = "llama" })
        #expect(loadError(hf)?.message.contains("model_type 'llama' is not supported") == true)
    }

    @Test func configRoundTripsThroughTransformerLensKeys() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("noln-relu-bidir"))
        let data = try JSONEncoder().encode(model.config)
        let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        #expect(object["normalization_type"] is NSNull)
        #expect(object["d_vocab_out"] as? Int == 40)
        #expect(try TransformerLensFormat.config(from: data, file: "x") == model.config)
    }
}
