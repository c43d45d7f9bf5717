import InterpCore
import Tokenization

extension TokenBatch {
    /// Tokenizes `texts` (one prompt each), with the tokenizer's BOS token first when `prependBOS` (TransformerLens's
    /// default). The prompts must come out the same length: interp runs rectangular batches without padding.
    public init(texts: [String], tokenizer: BPETokenizer, prependBOS: Bool, config: ModelConfig) throws {
        guard !texts.isEmpty else { throw InterpError("no prompts: the text input is empty") }
        var bos: [Int32] = []
        if prependBOS {
            guard let id = tokenizer.bosTokenID else {
                throw InterpError("the tokenizer has no BOS token (no bos_token in tokenizer_config.json, no <|endoftext|>); use --no-prepend-bos", file: tokenizer.source)
            }
            bos = [id]
        }
        let rows = texts.map { bos + tokenizer.encode($0) }
        let lengths = rows.map(\.count)
        if Set(lengths).count > 1 {
            throw InterpError("prompts tokenize to different lengths (\(lengths.map(String.init).joined(separator: ", ")) tokens); a batch must be rectangular, so run them separately or make them the same length")
        }
        if tokenizer.vocabularySize > config.dVocab {
            if let bad = rows.joined().first(where: { Int($0) >= config.dVocab }) {
                throw InterpError("the tokenizer gave id \(bad), outside the model's vocabulary of \(config.dVocab); is it the model's tokenizer?", file: tokenizer.source)
            }
        }
        try self.init(rows.map { $0.map(Int.init) }, config: config)
    }
}
