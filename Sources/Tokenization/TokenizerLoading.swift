import Foundation
import InterpCore

/// Reading tokenizer files: Hugging Face `tokenizer.json` (BPE model, ByteLevel pre-tokenizer and decoder), the
/// older `vocab.json` + `merges.txt` pair, and `tokenizer_config.json` for the BOS token. Parsed defensively:
/// anything interp would encode differently from Hugging Face is refused by name.
extension BPETokenizer {
    /// `tokenizer.json`, or a directory holding `tokenizer.json` or `vocab.json` + `merges.txt`
    /// (with an optional `tokenizer_config.json` beside them).
    public static func load(path: String) throws -> BPETokenizer {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw InterpError("no such file or directory", file: path)
        }
        guard isDirectory.boolValue else {
            let config = ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent("tokenizer_config.json")
            return try load(tokenizerJSON: path, bosToken: try bosToken(configPath: config))
        }
        let bos = try bosToken(configPath: path + "/tokenizer_config.json")
        if FileManager.default.fileExists(atPath: path + "/tokenizer.json") {
            return try load(tokenizerJSON: path + "/tokenizer.json", bosToken: bos)
        }
        if FileManager.default.fileExists(atPath: path + "/vocab.json") {
            return try load(vocabJSON: path + "/vocab.json", mergesTXT: path + "/merges.txt", bosToken: bos)
        }
        throw InterpError("no tokenizer.json (or vocab.json and merges.txt) in this directory", file: path)
    }

    /// A model directory's tokenizer, or nil if it has none.
    public static func load(modelDirectory: String) throws -> BPETokenizer? {
        let files = ["tokenizer.json", "vocab.json"]
        guard files.contains(where: { FileManager.default.fileExists(atPath: modelDirectory + "/" + $0) }) else { return nil }
        return try load(path: modelDirectory)
    }

    // MARK: tokenizer.json

    private struct File: Decodable {
        var addedTokens: [Added]?
        var normalizer: JSONValue?
        var preTokenizer: JSONValue?
        var decoder: JSONValue?
        var model: Model

        enum CodingKeys: String, CodingKey {
            case addedTokens = "added_tokens", normalizer, preTokenizer = "pre_tokenizer", decoder, model
        }
    }

    private struct Added: Decodable {
        var id: Int32
        var content: String
        var singleWord: Bool?
        var lstrip: Bool?
        var rstrip: Bool?
        var special: Bool?
        enum CodingKeys: String, CodingKey {
            case id, content, singleWord = "single_word", lstrip, rstrip, special
        }
    }

    private struct Model: Decodable {
        var type: String?
        var vocab: [String: Int32]
        var merges: [MergePair]
        var dropout: Double?
        var unkToken: String?
        var continuingSubwordPrefix: String?
        var endOfWordSuffix: String?
        var byteFallback: Bool?
        var ignoreMerges: Bool?
        enum CodingKeys: String, CodingKey {
            case type, vocab, merges, dropout, unkToken = "unk_token", continuingSubwordPrefix = "continuing_subword_prefix"
            case endOfWordSuffix = "end_of_word_suffix", byteFallback = "byte_fallback", ignoreMerges = "ignore_merges"
        }
    }

    /// A merge written either as "a b" (older files) or as ["a", "b"].
    private struct MergePair: Decodable {
        var left: String
        var right: String
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let text = try? c.decode(String.self) {
                let parts = TextLines.splitScalars(text, on: " ")
                guard parts.count == 2 else {
                    throw DecodingError.dataCorruptedError(in: c, debugDescription: "merge '\(text)' is not two tokens separated by one space")
                }
                left = String(parts[0]); right = String(parts[1])
            } else {
                let pair = try c.decode([String].self)
                guard pair.count == 2 else {
                    throw DecodingError.dataCorruptedError(in: c, debugDescription: "a merge must be a pair of tokens")
                }
                left = pair[0]; right = pair[1]
            }
        }
    }

    public static func load(tokenizerJSON path: String, bosToken: String? = nil) throws -> BPETokenizer {
        let data = try readFile(path)
        let file = try decodeJSON(File.self, from: data, file: path)
        let model = file.model
        if let type = model.type, type != "BPE" {
            throw InterpError("model type '\(type)' is not supported (interp implements byte-level BPE)", file: path)
        }
        if model.dropout != nil { throw InterpError("BPE dropout is set; interp encodes deterministically only", file: path) }
        if model.byteFallback == true { throw InterpError("byte_fallback is not supported (byte-level BPE needs none)", file: path) }
        if let prefix = model.continuingSubwordPrefix, !prefix.isEmpty {
            throw InterpError("continuing_subword_prefix '\(prefix)' is not supported", file: path)
        }
        if let suffix = model.endOfWordSuffix, !suffix.isEmpty {
            throw InterpError("end_of_word_suffix '\(suffix)' is not supported", file: path)
        }
        if let normalizer = file.normalizer, normalizer != .null {
            throw InterpError("normalizer \(componentType(normalizer)) is not supported (GPT-2 tokenizers have none)", file: path)
        }
        guard let pre = file.preTokenizer, case .object(let fields) = pre, fields["type"]?.stringValue == "ByteLevel" else {
            throw InterpError("pre_tokenizer \(componentType(file.preTokenizer ?? .null)) is not supported (interp implements ByteLevel)", file: path)
        }
        if let decoder = file.decoder, decoder != .null, decoder.objectValue?["type"]?.stringValue != "ByteLevel" {
            throw InterpError("decoder \(componentType(decoder)) is not supported (interp implements ByteLevel)", file: path)
        }
        let added = (file.addedTokens ?? []).map {
            AddedToken(content: $0.content, id: $0.id, special: $0.special ?? false, singleWord: $0.singleWord ?? false,
                       lstrip: $0.lstrip ?? false, rstrip: $0.rstrip ?? false)
        }
        if let empty = added.first(where: { $0.content.isEmpty }) {
            throw InterpError("added token \(empty.id) is empty", file: path)
        }
        return try BPETokenizer(source: path, vocabulary: model.vocab, merges: model.merges.map { ($0.left, $0.right) },
                                addedTokens: added,
                                addPrefixSpace: fields["add_prefix_space"]?.boolValue ?? false,
                                useRegex: fields["use_regex"]?.boolValue ?? true,
                                ignoreMerges: model.ignoreMerges ?? false, bosToken: bosToken)
    }

    // MARK: vocab.json + merges.txt

    /// GPT-2's original files: the vocabulary as a JSON object, the merges one per line ("a b"), an optional
    /// `#version` first line. `<|endoftext|>`, if in the vocabulary, is treated as a special token.
    public static func load(vocabJSON: String, mergesTXT: String, bosToken: String? = nil) throws -> BPETokenizer {
        let vocabulary = try decodeJSON([String: Int32].self, from: readFile(vocabJSON), file: vocabJSON)
        let text = String(decoding: try readFile(mergesTXT), as: UTF8.self)
        var merges: [(String, String)] = []
        for (index, rawLine) in TextLines.splitScalars(text, on: "\n").enumerated() {
            let line = rawLine.unicodeScalars.last == "\r" ? String(String.UnicodeScalarView(rawLine.unicodeScalars.dropLast())) : rawLine
            if line.isEmpty || (index == 0 && line.hasPrefix("#version")) { continue }
            let parts = TextLines.splitScalars(line, on: " ")
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw InterpError("line \(index + 1) is not two tokens separated by one space", file: mergesTXT)
            }
            merges.append((String(parts[0]), String(parts[1])))
        }
        let added = vocabulary["<|endoftext|>"].map {
            [AddedToken(content: "<|endoftext|>", id: $0, special: true, singleWord: false, lstrip: false, rstrip: false)]
        } ?? []
        do {
            return try BPETokenizer(source: mergesTXT, vocabulary: vocabulary, merges: merges, addedTokens: added,
                                    addPrefixSpace: false, useRegex: true, ignoreMerges: false, bosToken: bosToken)
        } catch let error as InterpError where error.message.hasPrefix("merge") {
            throw InterpError(error.message, file: mergesTXT)
        } catch let error as InterpError {
            throw InterpError(error.message, file: vocabJSON)
        }
    }

    // MARK: helpers

    /// `bos_token` of a `tokenizer_config.json` (a string or `{"content": …}`), nil if the file or field is absent.
    static func bosToken(configPath: String) throws -> String? {
        guard FileManager.default.fileExists(atPath: configPath) else { return nil }
        guard let object = (try? JSONValue.parse(readFile(configPath)))?.objectValue else {
            throw InterpError("not a JSON object", file: configPath)
        }
        switch object["bos_token"] {
        case .string(let token)?: return token
        case .object(let fields)?:
            guard let content = fields["content"]?.stringValue else { throw InterpError("bos_token has no content", file: configPath) }
            return content
        case nil, .null?: return nil
        default: throw InterpError("bos_token is neither a string nor an object", file: configPath)
        }
    }

    private static func componentType(_ value: JSONValue) -> String {
        if let type = value.objectValue?["type"]?.stringValue { return "'\(type)'" }
        return value == .null ? "null" : "of unknown form"
    }
}
