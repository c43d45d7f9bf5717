import Foundation
import InterpCore
import SafeTensors

/// Hugging Face GPT-2 directories as `GPT2LMHeadModel.save_pretrained` writes them: `config.json` with
/// `model_type: gpt2` and `model.safetensors`, keys with or without the `transformer.` prefix, Conv1D weights
/// (`x @ W`), `lm_head.weight` tied to `wte` when absent. All name and layout conversion lives in this file
/// (reference: TransformerLens `pretrained/weight_conversions/gpt2.py`, HF `modeling_gpt2.py`).
/// No weight processing: logits equal Hugging Face's.
public enum HuggingFaceGPT2Format {
    struct Config: Decodable {
        var modelType: String
        var nEmbd: Int
        var nHead: Int
        var nLayer: Int
        var nPositions: Int
        var vocabSize: Int
        var nInner: Int?
        var activationFunction: String?
        var layerNormEpsilon: Float?
        var scaleAttnWeights: Bool?
        var scaleAttnByInverseLayerIdx: Bool?
        var addCrossAttention: Bool?
        var tieWordEmbeddings: Bool?
        var nameOrPath: String?

        enum CodingKeys: String, CodingKey {
            case modelType = "model_type", nEmbd = "n_embd", nHead = "n_head", nLayer = "n_layer"
            case nPositions = "n_positions", vocabSize = "vocab_size", nInner = "n_inner"
            case activationFunction = "activation_function", layerNormEpsilon = "layer_norm_epsilon"
            case scaleAttnWeights = "scale_attn_weights", scaleAttnByInverseLayerIdx = "scale_attn_by_inverse_layer_idx"
            case addCrossAttention = "add_cross_attention", tieWordEmbeddings = "tie_word_embeddings"
            case nameOrPath = "_name_or_path"
        }
    }

    public static func config(from data: Data, file: String) throws -> (ModelConfig, tied: Bool) {
        let hf = try decodeJSON(Config.self, from: data, file: file)
        guard hf.modelType == "gpt2" else { throw InterpError("model_type '\(hf.modelType)' is not gpt2", file: file) }
        if hf.scaleAttnByInverseLayerIdx == true {
            throw InterpError("field 'scale_attn_by_inverse_layer_idx' = true is not supported", file: file)
        }
        if hf.addCrossAttention == true {
            throw InterpError("field 'add_cross_attention' = true is not supported", file: file)
        }
        guard hf.nHead > 0, hf.nEmbd > 0, hf.nEmbd % hf.nHead == 0 else {
            throw InterpError("n_embd (\(hf.nEmbd)) is not a positive multiple of n_head (\(hf.nHead))", file: file)
        }
        let actName = hf.activationFunction ?? "gelu_new"
        guard let act = ActivationFunction(exporterName: actName) else {
            throw InterpError("field 'activation_function' = '\(actName)' is not supported (relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast)", file: file)
        }
        let dHead = hf.nEmbd / hf.nHead
        let scaled = hf.scaleAttnWeights ?? true
        let config = ModelConfig(
            modelName: hf.nameOrPath.flatMap { $0.isEmpty ? nil : $0 } ?? "gpt2", originalArchitecture: "GPT2LMHeadModel",
            nLayers: hf.nLayer, dModel: hf.nEmbd, nHeads: hf.nHead, dHead: dHead, dMLP: hf.nInner ?? 4 * hf.nEmbd,
            nCtx: hf.nPositions, dVocab: hf.vocabSize, actFn: act, normalization: .layerNorm,
            useAttnScale: scaled, attnScale: Float(dHead).squareRoot(), eps: hf.layerNormEpsilon ?? 1e-5)
        do { try config.validate() } catch let error as InterpError { throw error.inFile(file) }
        return (config, hf.tieWordEmbeddings ?? true)
    }

    public static func load(directory: String) throws -> TransformerModel {
        let configPath = directory + "/config.json"
        let (config, tied) = try self.config(from: readFile(configPath), file: configPath)
        let weightsPath = directory + "/model.safetensors"
        let file = try SafeTensorsFile(path: weightsPath)
        let state = try convert(file: file, config: config, tied: tied)
        return try TransformerModel(config: config, stateDict: state, sourceFormat: "huggingface-gpt2", file: weightsPath)
    }

    /// Hugging Face names and layouts → TransformerLens names and layouts.
    static func convert(file: SafeTensorsFile, config c: ModelConfig, tied: Bool) throws -> [String: Tensor] {
        let path = file.path
        let prefix = file.entries["transformer.wte.weight"] != nil ? "transformer." : ""
        var used = Set<String>()
        func take(_ name: String, _ shape: [Int]) throws -> Tensor {
            let key = name == "lm_head.weight" ? name : prefix + name
            guard file.entries[key] != nil else { throw InterpError("missing tensor '\(key)'", file: path) }
            let tensor = try file.tensor(key)
            guard tensor.shape == shape else {
                throw InterpError("tensor '\(key)' has shape \(tensor.shape) but the config implies \(shape)", file: path)
            }
            used.insert(key)
            return tensor
        }
        let D = c.dModel, H = c.nHeads, d = c.dHead, F = c.dMLP
        var state: [String: Tensor] = [:]
        state["embed.W_E"] = try take("wte.weight", [c.dVocab, D])
        state["pos_embed.W_pos"] = try take("wpe.weight", [c.nCtx, D])
        for l in 0..<c.nLayers {
            let hf = "h.\(l).", tl = "blocks.\(l)."
            state[tl + "ln1.w"] = try take(hf + "ln_1.weight", [D])
            state[tl + "ln1.b"] = try take(hf + "ln_1.bias", [D])
            let qkv = try take(hf + "attn.c_attn.weight", [D, 3 * D]).scalars   // [D, (Q|K|V) heads]
            let qkvBias = try take(hf + "attn.c_attn.bias", [3 * D]).scalars
            for (block, name) in ["Q", "K", "V"].enumerated() {
                var w = [Float](repeating: 0, count: H * D * d)            // [H, D, d]
                var b = [Float](repeating: 0, count: H * d)                // [H, d]
                for h in 0..<H {
                    for i in 0..<D {
                        for j in 0..<d { w[(h * D + i) * d + j] = qkv[i * 3 * D + block * D + h * d + j] }
                    }
                    for j in 0..<d { b[h * d + j] = qkvBias[block * D + h * d + j] }
                }
                state[tl + "attn.W_" + name] = Tensor(shape: [H, D, d], scalars: w)
                state[tl + "attn.b_" + name] = Tensor(shape: [H, d], scalars: b)
            }
            // c_proj maps the concatenated heads [H·d] to D: rows h·d…h·d+d−1 are head h's W_O.
            state[tl + "attn.W_O"] = try take(hf + "attn.c_proj.weight", [D, D]).reshaped([H, d, D])
            state[tl + "attn.b_O"] = try take(hf + "attn.c_proj.bias", [D])
            state[tl + "ln2.w"] = try take(hf + "ln_2.weight", [D])
            state[tl + "ln2.b"] = try take(hf + "ln_2.bias", [D])
            state[tl + "mlp.W_in"] = try take(hf + "mlp.c_fc.weight", [D, F])
            state[tl + "mlp.b_in"] = try take(hf + "mlp.c_fc.bias", [F])
            state[tl + "mlp.W_out"] = try take(hf + "mlp.c_proj.weight", [F, D])
            state[tl + "mlp.b_out"] = try take(hf + "mlp.c_proj.bias", [D])
        }
        state["ln_final.w"] = try take("ln_f.weight", [D])
        state["ln_final.b"] = try take("ln_f.bias", [D])
        let unembedding: Tensor
        if file.entries["lm_head.weight"] != nil {
            unembedding = try take("lm_head.weight", [c.dVocab, D])
        } else if tied {
            unembedding = state["embed.W_E"]!
        } else {
            throw InterpError("missing tensor 'lm_head.weight' (tie_word_embeddings is false)", file: path)
        }
        state["unembed.W_U"] = transpose(unembedding)
        state["unembed.b_U"] = Tensor(zeros: [c.dVocab])

        // Older exports carry the causal-mask buffers; they are not parameters.
        let isBuffer = { (name: String) in name.hasSuffix(".attn.bias") || name.hasSuffix(".attn.masked_bias") }
        if let unexpected = file.names.first(where: { !used.contains($0) && !isBuffer($0) }) {
            throw InterpError("unexpected tensor '\(unexpected)' for a GPT-2 model", file: path)
        }
        return state
    }

    private static func transpose(_ t: Tensor) -> Tensor {
        let rows = t.shape[0], cols = t.shape[1]
        var out = [Float](repeating: 0, count: t.count)
        for i in 0..<rows {
            for j in 0..<cols { out[j * rows + i] = t.scalars[i * cols + j] }
        }
        return Tensor(shape: [cols, rows], scalars: out)
    }
}
