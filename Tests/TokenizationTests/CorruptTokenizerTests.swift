import Foundation
import InterpCore
import InterpTestSupport
import Testing
import Tokenization

/// Broken or unsupported tokenizer files: a one-line error naming the file, never a crash or a silent difference.
@Suite struct CorruptTokenizerTests {
    static let tiny = Fixtures.root + "/tokenizer/tiny"

    /// The tiny tokenizer.json with `edit` applied, written to a temporary file.
    static func edited(_ edit: (inout [String: Any]) -> Void) throws -> String {
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: tiny + "/tokenizer.json"))) as! [String: Any]
        edit(&object)
        let path = try Fixtures.temporaryDirectory() + "/tokenizer.json"
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func model(_ object: inout [String: Any], _ edit: (inout [String: Any]) -> Void) {
        var model = object["model"] as! [String: Any]
        edit(&model)
        object["model"] = model
    }

    static let cases: [(String, (inout [String: Any]) -> Void, String)] = [
        ("missing model", { $0.removeValue(forKey: "model") }, "missing field 'model'"),
        ("WordPiece", { o in model(&o) { $0["type"] = "WordPiece" } }, "model type 'WordPiece' is not supported"),
        ("missing merges", { o in model(&o) { $0.removeValue(forKey: "merges") } }, "missing field 'model.merges'"),
        ("merge of unknown token", { o in model(&o) { $0["merges"] = [["Ġ", "qqq"]] } }, "uses a token that is not in the vocabulary"),
        ("merge result unknown", { o in model(&o) { $0["merges"] = [["q", "q"]] } }, "makes 'qq', which is not in the vocabulary"),
        ("malformed merge", { o in model(&o) { $0["merges"] = ["abc"] } }, "is not two tokens separated by one space"),
        ("normalizer", { $0["normalizer"] = ["type": "NFC"] }, "normalizer 'NFC' is not supported"),
        ("pre-tokenizer", { $0["pre_tokenizer"] = ["type": "Whitespace"] }, "pre_tokenizer 'Whitespace' is not supported"),
        ("no pre-tokenizer", { $0["pre_tokenizer"] = NSNull() }, "pre_tokenizer null is not supported"),
        ("decoder", { $0["decoder"] = ["type": "WordPiece"] }, "decoder 'WordPiece' is not supported"),
        ("dropout", { o in model(&o) { $0["dropout"] = 0.1 } }, "dropout"),
        ("byte fallback", { o in model(&o) { $0["byte_fallback"] = true } }, "byte_fallback is not supported"),
        ("id gap", { o in model(&o) { var v = $0["vocab"] as! [String: Any]; v["!"] = 999; $0["vocab"] = v } }, "no token has id"),
        ("duplicate id", { o in model(&o) { var v = $0["vocab"] as! [String: Any]; v["!"] = v["\""]; $0["vocab"] = v } }, "is given to both"),
        ("vocab not ints", { o in model(&o) { $0["vocab"] = ["a": "b"] } }, "is not an integer"),
    ]

    @Test(arguments: cases.map { ($0.0, $0.2) })
    func corruptTokenizerJSON(name: String, expected: String) throws {
        let edit = Self.cases.first { $0.0 == name }!.1
        let path = try Self.edited(edit)
        #expect {
            _ = try BPETokenizer.load(path: path)
        } throws: { error in
            guard let error = error as? InterpError else { return false }
            return error.file == path && error.message.contains(expected) && !error.description.contains("\n")
        }
    }

    @Test func notJSONAndMissingFiles() throws {
        let dir = try Fixtures.temporaryDirectory()
        try Data("{\"model\": ".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        #expect(throws: InterpError("not valid JSON", file: dir + "/tokenizer.json")) { try BPETokenizer.load(path: dir + "/tokenizer.json") }
        #expect(throws: InterpError("no such file or directory", file: dir + "/none.json")) { try BPETokenizer.load(path: dir + "/none.json") }
        let empty = try Fixtures.temporaryDirectory()
        #expect(throws: InterpError.self) { try BPETokenizer.load(path: empty) }
        #expect(try BPETokenizer.load(modelDirectory: empty) == nil)
    }

    /// merges.txt written on Windows ("\r\n", which Swift treats as one Character) encodes as with "\n".
    @Test func crlfMergesLoadTheSame() throws {
        let dir = try Fixtures.temporaryDirectory()
        try FileManager.default.copyItem(atPath: Self.tiny + "/vocab.json", toPath: dir + "/vocab.json")
        let merges = try String(contentsOfFile: Self.tiny + "/merges.txt", encoding: .utf8)
        try Data(merges.unicodeScalars.split(separator: "\n").map { String(String.UnicodeScalarView($0)) }.joined(separator: "\r\n").utf8)
            .write(to: URL(fileURLWithPath: dir + "/merges.txt"))
        let crlf = try BPETokenizer.load(path: dir), lf = try BPETokenizer.load(path: Self.tiny + "/tokenizer.json")
        for text in ["the cat sat on the mat", "Hello, world!\r\n  indented", "numbers 12345"] {
            #expect(crlf.encode(text) == lf.encode(text))
        }
    }

    @Test func badMergesTextAndConfig() throws {
        let dir = try Fixtures.temporaryDirectory()
        try FileManager.default.copyItem(atPath: Self.tiny + "/vocab.json", toPath: dir + "/vocab.json")
        try Data("#version: 0.2\nĠ Ġ\nbad line here\n".utf8).write(to: URL(fileURLWithPath: dir + "/merges.txt"))
        #expect(throws: InterpError("line 3 is not two tokens separated by one space", file: dir + "/merges.txt")) {
            try BPETokenizer.load(path: dir)
        }
        try Data("#version: 0.2\nĠ Ġ\n".utf8).write(to: URL(fileURLWithPath: dir + "/merges.txt"))
        try Data("{\"bos_token\": \"<|nope|>\"}".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        #expect(throws: InterpError("the BOS token '<|nope|>' is not in the vocabulary", file: dir + "/vocab.json")) {
            try BPETokenizer.load(path: dir)
        }
        try Data("{\"bos_token\": {\"content\": \"<|endoftext|>\"}}".utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        #expect(try BPETokenizer.load(path: dir).bosTokenID == 0)
    }
}
