import InterpCore
import Tokenization

/// Cuts documents of token ids into windows of `contextLength`, as SAELens's `concat_and_batch_sequences` does with
/// its defaults (`prepend_bos`, `sequence_separator_token = "bos"`): every window starts with BOS, documents are
/// concatenated with BOS between them, a document that runs past a window's end continues in the next window (after
/// its BOS), and a last incomplete window is dropped.
public enum ContextWindows {
    public static func make(documents: [[Int32]], contextLength: Int, bos: Int32) throws -> [[Int32]] {
        guard contextLength >= 2 else { throw InterpError("the context length must be at least 2 (BOS and one token)") }
        var windows: [[Int32]] = []
        var window: [Int32]? = nil
        for document in documents {
            var offset = 0
            while document.count - offset > 0 {
                let prefix: [Int32] = document[offset] != bos ? [bos] : []
                if var current = window {
                    let needed = max(contextLength - current.count - prefix.count, 0)
                    current += prefix.prefix(max(contextLength - current.count, 0))
                    current += document[offset..<min(offset + needed, document.count)]
                    offset += needed
                    window = current
                } else {
                    let needed = max(contextLength - prefix.count, 0)
                    window = Array(prefix.prefix(contextLength)) + document[offset..<min(offset + needed, document.count)]
                    offset += needed
                }
                if window!.count == contextLength {
                    windows.append(window!)
                    window = nil
                }
            }
        }
        return windows
    }

    /// A text file, one document per line, tokenized and cut into windows as `make` cuts them.
    public static func make(textFile path: String, tokenizer: BPETokenizer, contextLength: Int) throws -> [[Int32]] {
        guard let bos = tokenizer.bosTokenID else {
            throw InterpError("the tokenizer has no BOS token to start each window with", file: tokenizer.source)
        }
        let windows = try make(documents: try TextLines.read(path).map { tokenizer.encode($0) }, contextLength: contextLength, bos: bos)
        guard !windows.isEmpty else { throw InterpError("the text makes no complete window of \(contextLength) tokens", file: path) }
        return windows
    }
}
