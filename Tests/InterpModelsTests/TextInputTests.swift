import Foundation
import Interp
import InterpTestSupport
import Testing

/// Text prompts through the model's tokenizer against TransformerLens's `to_tokens` and its logits.
@Suite struct TextInputTests {
    @Test func textPromptsMatchTransformerLens() throws {
        let dir = Fixtures.model("text-tiny")
        let model = try ModelLoader.load(directory: dir)
        let tokenizer = try #require(try BPETokenizer.load(modelDirectory: dir))
        let prompts = try JSONDecoder().decode([String].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.reference("text-tiny.prompts.json"))))
        let reference = try SafeTensorsFile(path: Fixtures.reference("text-tiny.safetensors"))
        for (index, prompt) in prompts.enumerated() {
            for prepend in [true, false] {
                let key = "\(prepend ? "bos" : "nobos")_\(index)"
                let batch = try TokenBatch(texts: [prompt], tokenizer: tokenizer, prependBOS: prepend, config: model.config)
                #expect(batch.ids.map(Int64.init) == (try reference.integers(key + "_tokens").values), "\(key)")
                let check = compare(try model.run(batch), try reference.tensor(key + "_logits"), atol: 1e-4)
                #expect(check.passed, "\(key): \(check)")
            }
        }
    }

    @Test func textBatchErrors() throws {
        let dir = Fixtures.model("text-tiny")
        let model = try ModelLoader.load(directory: dir)
        let tokenizer = try #require(try BPETokenizer.load(modelDirectory: dir))
        let lengths = ["ab", "abcdefg"].map { tokenizer.encode($0).count + 1 }
        #expect(throws: InterpError("prompts tokenize to different lengths (\(lengths[0]), \(lengths[1]) tokens); a batch must be rectangular, so run them separately or make them the same length")) {
            try TokenBatch(texts: ["ab", "abcdefg"], tokenizer: tokenizer, prependBOS: true, config: model.config)
        }
        #expect(throws: InterpError("no prompts: the text input is empty")) {
            try TokenBatch(texts: [], tokenizer: tokenizer, prependBOS: true, config: model.config)
        }
        // A tokenizer bigger than the model's vocabulary is caught at the first id it cannot embed.
        let gpt2Tokenizer = try BPETokenizer.load(path: Fixtures.root + "/tokenizer/gpt2/tokenizer.json")
        #expect(throws: InterpError.self) {
            try TokenBatch(texts: ["Hello"], tokenizer: gpt2Tokenizer, prependBOS: true, config: model.config)
        }
    }

    @Test func textFilesSplitOnNewlinesOnly() {
        #expect(TextLines.split("") == [])
        #expect(TextLines.split("a") == ["a"])
        #expect(TextLines.split("a\n") == ["a"])
        #expect(TextLines.split("a\n\n") == ["a", ""])
        #expect(TextLines.split(" a \r\nb\t\n") == [" a \r", "b\t"])
        #expect(TextLines.split("\n") == [""])
        #expect(TextLines.split("e\u{301}\r\n\r\n") == ["e\u{301}\r", "\r"])
    }
}
