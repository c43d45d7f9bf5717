import Interp
import InterpTestSupport
import Testing

/// The library examples in README.md and notebooks-md/01-run-and-cache.md, run as written.
@Suite struct LibraryExampleTests {
    @Test func notebookExample() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("attn-only"))
        let tokens = try TokenBatch([[13, 3, 22, 27, 43, 36, 19, 33, 38, 20]], config: model.config)
        let names = try model.config.hookPoints(matching: ["blocks.*.attn.hook_pattern"])
        let (logits, cache) = try model.runWithCache(tokens, names: names)
        let pattern = cache[.block(1, .pattern)]!
        #expect(pattern.shape == [1, 4, 10, 10])
        let ablated = try model.runWithHooks(tokens, functions: [(.block(1, .pattern), { _, p in
            p = Tensor(shape: p.shape, repeating: 0.1)
        })])
        #expect(ablated.shape == logits.shape)
        #expect(!compare(ablated, logits, atol: 1e-3).passed)
    }

    @Test func readmeExample() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        let tokens = try TokenBatch([[1, 2, 3, 4]], config: model.config)
        let (logits, cache) = try model.runWithCache(tokens, names: try model.config.hookPoints(matching: ["blocks.*.hook_resid_post"]))
        let resid = cache[.block(1, .residPost)]!
        #expect(resid.shape == [1, 4, 64])
        let ablated = try model.runWithHooks(tokens, functions: [(.block(0, .z), { _, z in
            let (heads, dHead) = (z.shape[2], z.shape[3])
            for row in 0..<(z.count / (heads * dHead)) { for j in 0..<dHead { z.scalars[(row * heads + 2) * dHead + j] = 0 } }
        })])
        #expect(!compare(ablated, logits, atol: 1e-4).passed)
    }
}
