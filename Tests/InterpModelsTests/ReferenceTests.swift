import Foundation
import Interp
import InterpTestSupport
import Testing

/// Logits and every hook against TransformerLens's `run_with_cache` and Hugging Face, on the committed fixtures.
@Suite struct ReferenceTests {
    /// TL 3.x hooks interp does not implement: the unembedding's input and output, equal to `ln_final`'s output
    /// (or the final residual) and the logits.
    static let hooksInterpLeavesOut: Set<String> = ["unembed.hook_in", "unembed.hook_out"]
    static let tolerance: Float = 1e-4

    @Test(arguments: [("gpt2-tl", "gpt2"), ("gpt2-hf", "gpt2"), ("attn-only", "attn-only"),
                      ("noln-relu-bidir", "noln-relu-bidir"), ("lnpre-gelu", "lnpre-gelu")])
    func everyHookMatchesTransformerLens(modelName: String, referenceName: String) throws {
        let model = try ModelLoader.load(directory: Fixtures.model(modelName))
        let reference = try SafeTensorsFile(path: Fixtures.reference(referenceName + ".safetensors"))
        let tokens = try TokenBatch(Fixtures.tokens(referenceName), config: model.config)
        let (logits, cache) = try model.runWithCache(tokens, names: model.config.hookPoints)

        // The hook table agrees with TL's: the same names exist, and every cached shape is the table's.
        let tlHooks = Set(reference.names.filter { $0 != "logits" && $0 != "hf_logits" })
        let ours = Set(model.config.hookPoints.map(\.description))
        #expect(tlHooks.subtracting(Self.hooksInterpLeavesOut) == ours)
        for name in model.config.hookPoints {
            #expect(cache[name]?.shape == name.shape(for: model.config, batch: tokens.batch, positions: tokens.positions))
        }

        var worst: Float = 0
        let logitCheck = compare(logits, try reference.tensor("logits"), atol: Self.tolerance)
        #expect(logitCheck.passed, "\(modelName) logits: \(logitCheck)")
        worst = max(worst, logitCheck.maxAbsoluteError)
        for name in model.config.hookPoints {
            let check = compare(cache[name]!, try reference.tensor(name.description), atol: Self.tolerance)
            #expect(check.passed, "\(modelName) \(name): \(check)")
            worst = max(worst, check.maxAbsoluteError)
        }
        // The plain forward (no hooks: fused bias+activation, causal softmax shortcut) gives the same logits.
        let plain = compare(try model.run(tokens), try reference.tensor("logits"), atol: Self.tolerance)
        #expect(plain.passed, "\(modelName) logits without hooks: \(plain)")
        worst = max(worst, plain.maxAbsoluteError)
        print("\(modelName): logits and \(ours.count) hooks vs TransformerLens, max abs error \(worst)")
        #expect(worst < Self.tolerance)
    }

    @Test func huggingFaceLogitsMatchHuggingFace() throws {
        let reference = try SafeTensorsFile(path: Fixtures.reference("gpt2.safetensors"))
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-hf"))
        #expect(model.sourceFormat == "huggingface-gpt2")
        let logits = try model.run(TokenBatch(Fixtures.tokens("gpt2"), config: model.config))
        let check = compare(logits, try reference.tensor("hf_logits"), atol: Self.tolerance)
        #expect(check.passed, "\(check)")
    }

    /// `GPT2Model`-style keys (no `transformer.` prefix) and an explicit, untied `lm_head.weight` load to the same model.
    @Test func huggingFaceKeyVariantsGiveTheSameLogits() throws {
        let tokens = try Fixtures.tokens("gpt2")
        let base = try ModelLoader.load(directory: Fixtures.model("gpt2-hf"))
        let expected = try base.run(TokenBatch(tokens, config: base.config))

        let unprefixed = try editedModel("gpt2-hf", weights: { tensors in
            tensors = Dictionary(uniqueKeysWithValues: tensors.map { (String($0.key.dropFirst("transformer.".count)), $0.value) })
        })
        let withHead = try editedModel("gpt2-hf", config: { $0["tie_word_embeddings"] = false }, weights: { tensors in
            tensors["lm_head.weight"] = tensors["transformer.wte.weight"]
        })
        for dir in [unprefixed, withHead] {
            let model = try ModelLoader.load(directory: dir)
            #expect(try model.run(TokenBatch(tokens, config: model.config)) == expected)
        }
        let untiedWithoutHead = try editedModel("gpt2-hf", config: { $0["tie_word_embeddings"] = false })
        #expect(loadError(untiedWithoutHead)?.message.contains("missing tensor 'lm_head.weight'") == true)
    }
}
