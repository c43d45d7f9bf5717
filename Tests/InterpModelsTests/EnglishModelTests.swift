import Foundation
import Interp
import InterpTestSupport
import Testing

/// The bundled example language model (`fixtures/make_english.py`: 4 layers trained on the prose of the Python
/// documentation, float16 weights, its own 2,048-entry tokenizer) against TransformerLens and HF tokenizers, and its
/// behaviour measured with interp's own forward pass.
@Suite struct EnglishModelTests {
    static let directory = Fixtures.model("english-4l")

    /// Next-token losses `[positions − 1]` of one prompt, in Double.
    static func nextTokenLosses(_ logits: Tensor, _ ids: [Int]) -> [Double] {
        let V = logits.shape[2]
        return (0..<(ids.count - 1)).map { p in
            let row = logits.scalars[(p * V)..<((p + 1) * V)].map(Double.init)
            let m = row.max()!
            return m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) }) - row[ids[p + 1]]
        }
    }

    @Test func promptsMatchTransformerLens() throws {
        let model = try ModelLoader.load(directory: Self.directory)
        let tokenizer = try #require(try BPETokenizer.load(modelDirectory: Self.directory))
        let prompts = try JSONDecoder().decode([String].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.reference("english.prompts.json"))))
        let reference = try SafeTensorsFile(path: Fixtures.reference("english.safetensors"))
        for (i, prompt) in prompts.enumerated() {
            let batch = try TokenBatch(texts: [prompt], tokenizer: tokenizer, prependBOS: true, config: model.config)
            #expect(batch.ids.map(Int64.init) == (try reference.integers("prompt\(i)_tokens").values), "prompt \(i) tokens")
            let resid = HookName(.residPost, layer: 1)
            let (logits, cache) = try model.runWithCache(batch, names: [resid])
            let V = logits.shape[2], P = logits.shape[1]
            let last = Tensor(shape: [V], scalars: Array(logits.scalars[((P - 1) * V)...]))
            let lastCheck = compare(last, try reference.tensor("prompt\(i)_last_logits"), atol: 2e-4)
            #expect(lastCheck.passed, "prompt \(i) last logits: \(lastCheck)")
            let logprobs = Self.nextTokenLosses(logits, batch.ids.map { Int($0) }).map { Float(-$0) }
            let logprobCheck = compare(Tensor(shape: [P - 1], scalars: logprobs), try reference.tensor("prompt\(i)_next_logprobs"), atol: 2e-4)
            #expect(logprobCheck.passed, "prompt \(i) next-token log-probs: \(logprobCheck)")
            let residCheck = compare(Tensor(shape: Array(cache[resid]!.shape.dropFirst()), scalars: cache[resid]!.scalars),
                                     try reference.tensor("prompt\(i)_resid_post_1"), atol: 1e-4)
            #expect(residCheck.passed, "prompt \(i) blocks.1.hook_resid_post: \(residCheck)")
        }
    }

    @Test func sliceTokenizesAsHuggingFaceDoes() throws {
        let tokenizer = try #require(try BPETokenizer.load(modelDirectory: Self.directory))
        let text = try String(contentsOfFile: Fixtures.root + "/english/slice.txt", encoding: .utf8)
        let expected = try SafeTensorsFile(path: Fixtures.reference("english.safetensors")).integers("slice_ids").values
        #expect(tokenizer.encode(text).map(Int64.init) == expected)
    }

    /// What the model learned, measured here: on held-out text it beats the unigram distribution of its training
    /// text by a wide margin, and text seen earlier in the context is predicted far better the second time.
    @Test func predictsTextAndContinuesRepeats() throws {
        let model = try ModelLoader.load(directory: Self.directory)
        let tokenizer = try #require(try BPETokenizer.load(modelDirectory: Self.directory))
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.reference("english.json")))) as! [String: Any]
        let unigramEntropy = record["unigram_entropy"] as! Double
        let ids = tokenizer.encode(try String(contentsOfFile: Fixtures.root + "/english/slice.txt", encoding: .utf8)).map { Int($0) }
        let bos = Int(tokenizer.bosTokenID!), half = 63
        var plain: [Double] = [], first: [Double] = [], second: [Double] = []
        for start in stride(from: 0, to: ids.count - 2 * half, by: 2 * half).prefix(16) {
            let window = Array(ids[start..<(start + 2 * half + 1)])
            let text = [bos] + window
            plain += Self.nextTokenLosses(try model.run(try TokenBatch([text], config: model.config)), text)
            let segment = Array(window.prefix(half)), repeated = [bos] + segment + segment
            let losses = Self.nextTokenLosses(try model.run(try TokenBatch([repeated], config: model.config)), repeated)
            first += losses[1..<half]
            second += losses[(half + 1)..<(2 * half)]
        }
        func mean(_ x: [Double]) -> Double { x.reduce(0, +) / Double(x.count) }
        #expect(mean(plain) < unigramEntropy - 1, "held-out loss \(mean(plain)) vs unigram entropy \(unigramEntropy)")
        #expect(mean(second) < mean(first) / 3, "repeated text: loss \(mean(first)) the first time, \(mean(second)) the second")
    }
}
