import Foundation
import InterpCore

/// One text's ids and vocabulary strings, as `interp tokenize` prints them.
public struct TokenizedText: Equatable {
    public let ids: [Int32]
    public let tokens: [String]

    public init(text: String, tokenizer: BPETokenizer, prependBOS: Bool) throws {
        var ids = tokenizer.encode(text)
        if prependBOS {
            guard let bos = tokenizer.bosTokenID else { throw InterpError("the tokenizer has no BOS token", file: tokenizer.source) }
            ids.insert(bos, at: 0)
        }
        self.ids = ids
        tokens = try tokenizer.tokens(ids)
    }

    /// `{"ids":[…],"tokens":[…]}` and a newline.
    public func jsonLine() -> String {
        "{\"ids\":[" + ids.map(String.init).joined(separator: ",") + "],\"tokens\":["
            + tokens.map(JSONText.quote).joined(separator: ",") + "]}\n"
    }

    /// Two lines: the ids, then each token's text quoted (escapes for newlines, tabs and partial characters).
    public func readable(_ tokenizer: BPETokenizer) throws -> String {
        let pieces = try ids.map { try tokenizer.quotedPiece($0) }
        return "ids:    " + ids.map(String.init).joined(separator: " ") + "\n" + "tokens: " + pieces.joined(separator: " ") + "\n"
    }
}
