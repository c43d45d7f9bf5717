import Foundation
import InterpCore

/// Loads a model directory, whichever exporter wrote it.
public enum ModelLoader {
    public enum Format: String, Sendable {
        case transformerLens = "transformer_lens"
        case huggingFaceGPT2 = "huggingface-gpt2"
    }

    /// Tells the format from `config.json`: `model_type: gpt2` is Hugging Face, `d_model` is TransformerLens.
    public static func detectFormat(directory: String) throws -> Format {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw InterpError("no such model directory", file: directory)
        }
        guard isDirectory.boolValue else { throw InterpError("not a directory (a model is a directory with config.json and model.safetensors)", file: directory) }
        let configPath = directory + "/config.json"
        let data = try readFile(configPath)
        guard let object = (try? JSONValue.parse(data))?.objectValue else {
            throw InterpError("not a JSON object", file: configPath)
        }
        if let type = object["model_type"]?.stringValue {
            guard type == "gpt2" else {
                throw InterpError("model_type '\(type)' is not supported (Hugging Face GPT-2 or TransformerLens format)", file: configPath)
            }
            return .huggingFaceGPT2
        }
        if object["d_model"] != nil { return .transformerLens }
        throw InterpError("neither a TransformerLens config (no 'd_model') nor a Hugging Face GPT-2 config (no 'model_type')", file: configPath)
    }

    public static func load(directory: String) throws -> TransformerModel {
        let weights = directory + "/model.safetensors"
        let format = try detectFormat(directory: directory)
        if !FileManager.default.fileExists(atPath: weights) {
            if FileManager.default.fileExists(atPath: directory + "/model.safetensors.index.json") {
                throw InterpError("sharded weights are not supported yet; save with a larger max_shard_size", file: weights)
            }
            throw InterpError("no such file (interp reads safetensors weights only)", file: weights)
        }
        switch format {
        case .transformerLens: return try TransformerLensFormat.load(directory: directory)
        case .huggingFaceGPT2: return try HuggingFaceGPT2Format.load(directory: directory)
        }
    }
}
