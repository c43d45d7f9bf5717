import Foundation
import InterpCore
import SafeTensors
import Tokenization

/// One forward pass as `interp run` asks for it: tokens in, logits and the activations of the hooks matching
/// `cachePatterns` out.
public struct RunRequest {
    public let model: TransformerModel
    public let tokens: TokenBatch
    public let cachePatterns: [String]

    public init(model: TransformerModel, tokens: TokenBatch, cachePatterns: [String] = []) {
        self.model = model
        self.tokens = tokens
        self.cachePatterns = cachePatterns
    }

    public func execute() throws -> RunResult {
        let names = cachePatterns.isEmpty ? [] : try model.config.hookPoints(matching: cachePatterns)
        let (logits, cache) = try model.runWithCache(tokens, names: names)
        return RunResult(model: model, tokens: tokens, logits: logits, cache: cache)
    }
}

public struct RunResult {
    public let model: TransformerModel
    public let tokens: TokenBatch
    public let logits: Tensor
    public let cache: ActivationCache

    /// Writes `logits`, `tokens` (I32) and each cached activation under its hook name, atomically.
    public func write(to path: String) throws {
        var payloads: [String: SafeTensorsWriter.Payload] = ["logits": .float(logits)]
        payloads["tokens"] = .int32(shape: [tokens.batch, tokens.positions], values: tokens.ids)
        for (name, tensor) in cache.activations { payloads[name.description] = .float(tensor) }
        let metadata = ["format": "interp-run", "model_name": model.config.modelName, "model_format": model.sourceFormat]
        try SafeTensorsWriter.write(payloads: payloads, metadata: metadata, to: path)
    }

    /// The `count` highest logits at the last position of each prompt.
    public func topTokens(count: Int) -> [[(id: Int, logit: Float)]] {
        let V = logits.shape[2], P = tokens.positions
        return (0..<tokens.batch).map { b in
            let start = (b * P + P - 1) * V
            let row = logits.scalars[start..<(start + V)]
            return row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }
                .prefix(count).map { (id: $0 - start, logit: row[$0]) }
        }
    }

    /// One line per prompt: with a tokenizer, the prompt's tokens, then the top next tokens with their text.
    public func topTokensText(count: Int, tokenizer: BPETokenizer? = nil) throws -> String {
        var out = ""
        for (b, top) in topTokens(count: count).enumerated() {
            if let tokenizer {
                let pieces = try tokens.rows[b].map { try tokenizer.quotedPiece(Int32($0)) }
                out += "prompt \(b): \(pieces.count) tokens: " + pieces.joined(separator: " ") + "\n"
            }
            let items = try top.map { item -> String in
                let text = try tokenizer.map { " " + (try $0.quotedPiece(Int32(item.id))) } ?? ""
                return "\(item.id)\(text) (\(String(format: "%.4f", item.logit)))"
            }
            out += "prompt \(b): next-token top \(top.count): " + items.joined(separator: ", ") + "\n"
        }
        return out
    }
}
