import Foundation
import InterpCore

/// A byte-level BPE tokenizer (the GPT-2 family), encoding and decoding exactly as Hugging Face `tokenizers`
/// does with a `BPE` model and `ByteLevel` pre-tokenizer and decoder: added tokens split out first (leftmost
/// longest), GPT-2's pre-tokenisation on the rest, bytes mapped to the byte-level alphabet, merges by rank.
public final class BPETokenizer: @unchecked Sendable {
    public struct AddedToken: Equatable, Sendable {
        public let content: String
        public let id: Int32
        public let special: Bool
        public let singleWord: Bool
        public let lstrip: Bool
        public let rstrip: Bool
    }

    /// Where it was loaded from, for messages.
    public let source: String
    /// Number of ids (the largest id + 1).
    public let vocabularySize: Int
    public let addedTokens: [AddedToken]
    /// The beginning-of-sequence token, from `tokenizer_config.json` or else `<|endoftext|>` if present.
    public let bosTokenID: Int32?

    let idToToken: [String]
    let idToBytes: [[UInt8]]
    let tokenToID: [String: Int32]
    let byteToID: [Int32]              // byte → id of its byte-level character, −1 if the vocabulary lacks it
    let merges: BPEMerges
    let addPrefixSpace: Bool
    let useRegex: Bool
    let ignoreMerges: Bool
    let specialIDs: Set<Int32>
    private let cache = WordCache()

    init(source: String, vocabulary: [String: Int32], merges mergePairs: [(String, String)], addedTokens: [AddedToken],
         addPrefixSpace: Bool, useRegex: Bool, ignoreMerges: Bool, bosToken: String?) throws {
        self.source = source
        var size = 0
        for (_, id) in vocabulary { size = max(size, Int(id) + 1) }
        for token in addedTokens { size = max(size, Int(token.id) + 1) }
        var idToToken = [String?](repeating: nil, count: size)
        for (token, id) in vocabulary {
            guard id >= 0 else { throw InterpError("token '\(token)' has a negative id \(id)", file: source) }
            if let existing = idToToken[Int(id)] {
                throw InterpError("id \(id) is given to both '\(existing)' and '\(token)'", file: source)
            }
            idToToken[Int(id)] = token
        }
        var tokenToID = vocabulary
        for token in addedTokens {
            guard token.id >= 0 else { throw InterpError("added token '\(token.content)' has a negative id", file: source) }
            if let existing = idToToken[Int(token.id)], existing != token.content {
                throw InterpError("added token '\(token.content)' reuses id \(token.id) of '\(existing)'", file: source)
            }
            idToToken[Int(token.id)] = token.content
            tokenToID[token.content] = token.id
        }
        if let gap = idToToken.firstIndex(where: { $0 == nil }) {
            throw InterpError("no token has id \(gap) (ids must run from 0 to \(size - 1) without gaps)", file: source)
        }
        self.idToToken = idToToken.map { $0! }
        self.tokenToID = tokenToID
        vocabularySize = size
        self.addedTokens = addedTokens
        specialIDs = Set(addedTokens.filter(\.special).map(\.id))
        let addedIDs = Set(addedTokens.map(\.id))
        idToBytes = self.idToToken.enumerated().map { id, token in
            addedIDs.contains(Int32(id)) ? Array(token.utf8) : ByteLevel.decode(token)
        }
        byteToID = (0..<256).map { byte in vocabulary[String(ByteLevel.byteToCharacter[byte])] ?? -1 }

        var table: [UInt64: BPEMerges.Merge] = [:]
        table.reserveCapacity(mergePairs.count)
        for (rank, (a, b)) in mergePairs.enumerated() {
            guard let left = vocabulary[a], let right = vocabulary[b] else {
                throw InterpError("merge \(rank) ('\(a) \(b)') uses a token that is not in the vocabulary", file: source)
            }
            guard let merged = vocabulary[a + b] else {
                throw InterpError("merge \(rank) ('\(a) \(b)') makes '\(a + b)', which is not in the vocabulary", file: source)
            }
            let key = BPEMerges.key(left, right)
            if table[key] == nil { table[key] = .init(rank: Int32(rank), merged: merged) }
        }
        merges = BPEMerges(table)
        self.addPrefixSpace = addPrefixSpace
        self.useRegex = useRegex
        self.ignoreMerges = ignoreMerges
        if let bosToken {
            guard let id = tokenToID[bosToken] else {
                throw InterpError("the BOS token '\(bosToken)' is not in the vocabulary", file: source)
            }
            bosTokenID = id
        } else {
            bosTokenID = tokenToID["<|endoftext|>"]
        }
    }

    // MARK: - Encoding

    /// Token ids of `text` (no BOS added).
    public func encode(_ text: String) -> [Int32] {
        var text = text
        var out: [Int32] = []
        out.reserveCapacity(text.utf8.count / 3)
        text.withUTF8 { bytes in
            var segmentStart = 0
            for match in addedTokenMatches(bytes) {
                encodeSegment(UnsafeBufferPointer(rebasing: bytes[segmentStart..<match.range.lowerBound]), into: &out)
                out.append(match.id)
                segmentStart = match.range.upperBound
            }
            encodeSegment(UnsafeBufferPointer(rebasing: bytes[segmentStart...]), into: &out)
        }
        return out
    }

    private func encodeSegment(_ segment: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        guard !segment.isEmpty else { return }
        if addPrefixSpace && segment.first != UInt8(ascii: " ") {
            let prefixed = [UInt8(ascii: " ")] + Array(segment)
            prefixed.withUnsafeBufferPointer { encodePreTokens($0, into: &out) }
        } else {
            encodePreTokens(segment, into: &out)
        }
    }

    private func encodePreTokens(_ segment: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        guard useRegex else {
            out.append(contentsOf: encodeWord(segment))
            return
        }
        PreTokenizer.split(segment) { range in
            out.append(contentsOf: encodeWord(UnsafeBufferPointer(rebasing: segment[range])))
        }
    }

    /// One pre-token's bytes → ids.
    func encodeWord(_ bytes: UnsafeBufferPointer<UInt8>) -> [Int32] {
        if bytes.count == 1 {
            let id = byteToID[Int(bytes[0])]
            return id >= 0 ? [id] : []
        }
        return cache.lookup(bytes) {
            if ignoreMerges, let whole = tokenToID[ByteLevel.encode(bytes)] { return [whole] }
            return merges.apply(initialSymbols(bytes))
        }
    }

    /// Byte-level symbols of a pre-token; bytes missing from the vocabulary are dropped (no unknown token).
    func initialSymbols(_ bytes: UnsafeBufferPointer<UInt8>) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(bytes.count)
        for byte in bytes {
            let id = byteToID[Int(byte)]
            if id >= 0 { symbols.append(id) }
        }
        return symbols
    }

    /// Added tokens found in `bytes`, leftmost first, longest among those starting at the same place; with
    /// `lstrip`/`rstrip` the match swallows adjacent whitespace, with `singleWord` it must stand alone.
    private func addedTokenMatches(_ bytes: UnsafeBufferPointer<UInt8>) -> [(range: Range<Int>, id: Int32)] {
        guard !addedTokens.isEmpty, !bytes.isEmpty else { return [] }
        var matches: [(range: Range<Int>, id: Int32)] = []
        var i = 0
        while i < bytes.count {
            var best: AddedToken?
            for token in addedTokens where token.content.utf8.count <= bytes.count - i {
                let utf8 = token.content.utf8
                guard !utf8.isEmpty, bytes[i] == utf8.first! else { continue }
                if zip(utf8, bytes[i...]).allSatisfy({ $0 == $1 }),
                   best == nil || utf8.count > best!.content.utf8.count,
                   !token.singleWord || standsAlone(bytes, i..<(i + utf8.count)) {
                    best = token
                }
            }
            guard let token = best else { i += 1; continue }
            var range = i..<(i + token.content.utf8.count)
            if token.lstrip {
                var start = range.lowerBound
                while start > (matches.last?.range.upperBound ?? 0), isASCIIWhitespace(bytes[start - 1]) { start -= 1 }
                range = start..<range.upperBound
            }
            if token.rstrip {
                var end = range.upperBound
                while end < bytes.count, isASCIIWhitespace(bytes[end]) { end += 1 }
                range = range.lowerBound..<end
            }
            matches.append((range, token.id))
            i = range.upperBound
        }
        return matches
    }

    private func isASCIIWhitespace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }

    private func standsAlone(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Bool {
        func isWordByte(_ b: UInt8) -> Bool { b >= 0x80 || b == UInt8(ascii: "_") || (b >= 0x30 && b <= 0x39) || ((b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A) }
        let before = range.lowerBound == 0 || !isWordByte(bytes[range.lowerBound - 1])
        let after = range.upperBound == bytes.count || !isWordByte(bytes[range.upperBound])
        return before && after
    }

    // MARK: - Decoding

    /// The text of `ids`: their bytes concatenated, invalid UTF-8 replaced by U+FFFD. Special tokens are kept
    /// unless `skipSpecialTokens`.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> String {
        var bytes: [UInt8] = []
        for id in ids {
            guard id >= 0 && Int(id) < vocabularySize else {
                throw InterpError("token id \(id) is outside the vocabulary (0..<\(vocabularySize))", file: source)
            }
            if skipSpecialTokens && specialIDs.contains(id) { continue }
            bytes.append(contentsOf: idToBytes[Int(id)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Vocabulary strings of `ids`, as Hugging Face's `Encoding.tokens` shows them (`Ġworld`).
    public func tokens(_ ids: [Int32]) throws -> [String] {
        try ids.map { id in
            guard id >= 0 && Int(id) < vocabularySize else {
                throw InterpError("token id \(id) is outside the vocabulary (0..<\(vocabularySize))", file: source)
            }
            return idToToken[Int(id)]
        }
    }

    /// The text one token stands for, quoted for display: `" world"`, `"\n"`; bytes that are part of a UTF-8
    /// character show as `\xNN`, control characters as `\u{NN}`.
    public func quotedPiece(_ id: Int32) throws -> String {
        guard id >= 0 && Int(id) < vocabularySize else {
            throw InterpError("token id \(id) is outside the vocabulary (0..<\(vocabularySize))", file: source)
        }
        return Self.quote(idToBytes[Int(id)])
    }

    static func quote(_ bytes: [UInt8]) -> String {
        var out = "\""
        var i = 0
        while i < bytes.count {
            let lead = bytes[i]
            let length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC2 ? 2 : 0
            if length > 0, i + length <= bytes.count, let text = String(validating: bytes[i..<(i + length)], as: UTF8.self) {
                for scalar in text.unicodeScalars {
                    switch scalar {
                    case "\"": out += "\\\""
                    case "\\": out += "\\\\"
                    case "\n": out += "\\n"
                    case "\t": out += "\\t"
                    case "\r": out += "\\r"
                    default:
                        if scalar.value < 0x20 || scalar.value == 0x7F {
                            out += "\\u{" + String(scalar.value, radix: 16) + "}"
                        } else {
                            out.unicodeScalars.append(scalar)
                        }
                    }
                }
                i += length
            } else {
                out += String(format: "\\x%02X", lead)
                i += 1
            }
        }
        return out + "\""
    }

    /// The id of a vocabulary string or added token, if any.
    public func id(of token: String) -> Int32? { tokenToID[token] }
}

extension BPETokenizer {
    /// The merge loop and its quadratic reference on one pre-token, for tests.
    public func mergeBothWays(_ bytes: UnsafeBufferPointer<UInt8>) -> (fast: [Int32], naive: [Int32]) {
        let symbols = initialSymbols(bytes)
        return (merges.apply(symbols), merges.applyNaive(symbols))
    }
}
