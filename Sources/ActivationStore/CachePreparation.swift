import Foundation
import InterpCore
import InterpModels
import Tokenization

/// What `interp cache` reads: token ids as given, or a text file packed into context windows.
public enum CacheInput: Sendable {
    /// A JSON list of lists of token ids; each list is one sequence, stored as given.
    case tokens(path: String)
    /// One document per line, tokenized and cut into windows of `contextLength` with BOS first (as SAELens does).
    case textFile(path: String, contextLength: Int)
}

extension ActivationCacheJob {
    /// Loads the model (and its tokenizer), reads and prepares the input, and describes the store to write.
    public static func prepare(modelDirectory: String, input: CacheInput, hookPatterns: [String], output: String,
                               batchSize: Int = 16, maxTokens: Int? = nil, excludeBOS: Bool = false,
                               gzipLevel: Int? = nil) throws -> ActivationCacheJob {
        let model = try ModelLoader.load(directory: modelDirectory)
        let tokenizer = try BPETokenizer.load(modelDirectory: modelDirectory)
        let hooks = try model.config.hookPoints(matching: hookPatterns)
        let sequences: [[Int32]]
        let source: String, inputPath: String, contextLength: Int
        switch input {
        case .tokens(let path):
            let rows = try TokenFile.read(path)
            if let bad = rows.joined().first(where: { $0 < 0 || $0 >= model.config.dVocab }) {
                throw InterpError("token id \(bad) is outside the vocabulary (0..<\(model.config.dVocab))", file: path)
            }
            sequences = rows.map { $0.map(Int32.init) }
            (source, inputPath, contextLength) = ("tokens", path, -1)
        case .textFile(let path, let length):
            guard let tokenizer else {
                throw InterpError("the model has no tokenizer.json, so it takes token ids only (--tokens)", file: modelDirectory)
            }
            guard length <= model.config.nCtx else {
                throw InterpError("--context-length \(length) is more than the model's context of \(model.config.nCtx)")
            }
            sequences = try ContextWindows.make(textFile: path, tokenizer: tokenizer, contextLength: length)
            (source, inputPath, contextLength) = ("text", path, length)
        }
        let weightsFile = modelDirectory + "/model.safetensors"
        let settings = CacheSettings(
            hooks: hooks.map(\.description), source: source, inputHash: try ContentHash.hash(file: inputPath),
            contextLength: contextLength, prependBOS: source == "text", excludeBOS: excludeBOS,
            bosTokenID: tokenizer?.bosTokenID ?? -1, batchSize: batchSize, maxTokens: maxTokens, gzipLevel: gzipLevel,
            modelName: model.config.modelName, modelFormat: model.sourceFormat,
            modelWeightsHash: try ContentHash.hash(file: weightsFile))
        do {
            return try ActivationCacheJob(model: model, settings: settings, sequences: sequences, output: output)
        } catch let error as InterpError where error.file == nil && error.message.hasPrefix("sequence") {
            throw error.inFile(inputPath)
        }
    }
}
