import Foundation
import InterpCore
import InterpTestSupport
import SafeTensors
import Testing
import Tokenization

/// Encodings and decodings against Hugging Face `tokenizers` 0.23 (fixtures/make_tokenizer.py): zero mismatches.
@Suite struct ExactnessTests {
    static let gpt2Path = Fixtures.root + "/tokenizer/gpt2/tokenizer.json"

    static func lines(_ name: String) throws -> [String] {
        let text = try String(contentsOfFile: Fixtures.root + "/tokenizer/" + name, encoding: .utf8)
        var lines = text.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        return lines
    }

    static func strings(_ name: String) throws -> [String] {
        try JSONDecoder().decode([String].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/tokenizer/" + name)))
    }

    /// Rows of a packed id table: ids[offsets[i]..<offsets[i+1]].
    static func rows(_ file: SafeTensorsFile, ids: String, offsets: String) throws -> [[Int32]] {
        let flat = try file.integers(ids).values, bounds = try file.integers(offsets).values
        return (0..<(bounds.count - 1)).map { i in flat[Int(bounds[i])..<Int(bounds[i + 1])].map { Int32($0) } }
    }

    /// Compares every text's encoding; reports the first few mismatches with both id lists.
    func expectEncodings(_ tokenizer: BPETokenizer, _ texts: [String], _ expected: [[Int32]], _ label: String) {
        #expect(texts.count == expected.count, "\(label): \(texts.count) texts, \(expected.count) references")
        var mismatches: [String] = []
        for (index, (text, reference)) in zip(texts, expected).enumerated() {
            let ids = tokenizer.encode(text)
            if ids != reference { mismatches.append("#\(index) \(text.debugDescription.prefix(80)): \(ids.prefix(20)) vs HF \(reference.prefix(20))") }
        }
        #expect(mismatches.isEmpty, "\(label): \(mismatches.count) of \(texts.count) differ from HF:\n\(mismatches.prefix(5).joined(separator: "\n"))")
        print("\(label): \(texts.count) texts, \(expected.reduce(0) { $0 + $1.count }) ids, \(mismatches.count) mismatches vs HF tokenizers")
    }

    @Test func gpt2CorpusRandomAndLongInputs() throws {
        let tokenizer = try BPETokenizer.load(path: Self.gpt2Path)
        #expect(tokenizer.vocabularySize == 50257)
        #expect(tokenizer.bosTokenID == 50256)
        let reference = try SafeTensorsFile(path: Fixtures.root + "/tokenizer/gpt2-encodings.safetensors")
        expectEncodings(tokenizer, try Self.lines("corpus.txt"), try Self.rows(reference, ids: "corpus_ids", offsets: "corpus_offsets"), "corpus")
        expectEncodings(tokenizer, try Self.strings("random-strings.json"), try Self.rows(reference, ids: "random_ids", offsets: "random_offsets"), "random strings")
        expectEncodings(tokenizer, try Self.strings("long-inputs.json"), try Self.rows(reference, ids: "long_ids", offsets: "long_offsets"), "long inputs")
    }

    @Test func gpt2TokenStrings() throws {
        let tokenizer = try BPETokenizer.load(path: Self.gpt2Path)
        let expected = try JSONDecoder().decode([[String]].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/tokenizer/gpt2-tokens-first200.json")))
        let lines = try Self.lines("corpus.txt")
        for (line, tokens) in zip(lines, expected) {
            #expect(try tokenizer.tokens(tokenizer.encode(line)) == tokens)
        }
    }

    @Test func gpt2Decoding() throws {
        struct Case: Decodable { let ids: [Int32]; let text: String }
        let tokenizer = try BPETokenizer.load(path: Self.gpt2Path)
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/tokenizer/gpt2-decode.json")))
        var mismatches = 0
        for c in cases where try tokenizer.decode(c.ids) != c.text {
            mismatches += 1
            if mismatches <= 3 { Issue.record("decode \(c.ids): \(try tokenizer.decode(c.ids).debugDescription) vs HF \(c.text.debugDescription)") }
        }
        #expect(mismatches == 0)
        #expect(try tokenizer.decode([31373, 50256, 995], skipSpecialTokens: true) == (try tokenizer.decode([31373, 995])))
        #expect(throws: InterpError.self) { try tokenizer.decode([50257]) }
        #expect(throws: InterpError.self) { try tokenizer.decode([-1]) }
    }

    @Test func roundTripOfValidText() throws {
        let tokenizer = try BPETokenizer.load(path: Self.gpt2Path)
        let texts = try Self.lines("corpus.txt") + Self.strings("random-strings.json") + Self.strings("long-inputs.json")
        let failures = try texts.filter { try tokenizer.decode(tokenizer.encode($0)).utf8.elementsEqual($0.utf8) == false }
        #expect(failures.isEmpty, "\(failures.count) texts do not round-trip, e.g. \(failures.first.map { $0.debugDescription.prefix(80) } ?? "")")
    }

    /// The small trained tokenizer, from tokenizer.json (merges as pairs) and from vocab.json + merges.txt.
    @Test func tinyTokenizerBothFileForms() throws {
        let reference = try SafeTensorsFile(path: Fixtures.root + "/tokenizer/tiny-encodings.safetensors")
        let expected = try Self.rows(reference, ids: "ids", offsets: "offsets")
        let texts = Array(try Self.lines("corpus.txt").prefix(1000)) + Array(try Self.strings("random-strings.json").prefix(300))
        let dir = Fixtures.root + "/tokenizer/tiny"
        expectEncodings(try BPETokenizer.load(tokenizerJSON: dir + "/tokenizer.json"), texts, expected, "tiny tokenizer.json")
        expectEncodings(try BPETokenizer.load(vocabJSON: dir + "/vocab.json", mergesTXT: dir + "/merges.txt"), texts, expected, "tiny vocab+merges")
    }
}

@Suite struct MergeLoopTests {
    /// The heap-based merge loop against the quadratic reference, on real words and on long random ones.
    @Test func fastMergesMatchNaive() throws {
        let tokenizer = try BPETokenizer.load(path: ExactnessTests.gpt2Path)
        var rng = SeededRandom(seed: 3)
        var words = try ExactnessTests.lines("corpus.txt").prefix(2000).flatMap { $0.split(separator: " ").map { Array($0.utf8) } }
        for _ in 0..<200 {
            let alphabet = Array("abcdeéxyz01 -".utf8)
            words.append((0..<Int(rng.next() % 300 + 2)).map { _ in alphabet[Int(rng.next() % UInt64(alphabet.count))] })
        }
        words.append(Array(String(repeating: "a", count: 3000).utf8))
        for word in words {
            let (fast, slow) = word.withUnsafeBufferPointer { tokenizer.mergeBothWays($0) }
            #expect(fast == slow, "\(String(decoding: word, as: UTF8.self).prefix(40))")
        }
    }
}
