import Foundation
import Interp
import InterpTestSupport
import Testing

@Suite struct HookTests {
    let model: TransformerModel
    let tokens: TokenBatch

    init() throws {
        model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        tokens = try TokenBatch(Fixtures.tokens("gpt2"), config: model.config)
    }

    @Test func hookNamesParseAndPrint() throws {
        for name in model.config.hookPoints {
            #expect(try HookName(parsing: name.description) == name)
        }
        #expect(try HookName(parsing: "blocks.3.attn.hook_z") == .block(3, .z))
        for bad in ["blocks.x.hook_resid_pre", "blocks.-1.hook_resid_pre", "blocks.01.hook_resid_pre", "hook_resid_pre",
                    "blocks.0.hook_embed", "blocks.0.attn.hook_nope", "", "blocks.0"] {
            #expect(throws: InterpError("unknown hook name '\(bad)'")) { try HookName(parsing: bad) }
        }
        #expect(model.config.hookPoints == model.config.hookPoints.sorted())
    }

    @Test func globPatternsSelectHooks() throws {
        let posts = try model.config.hookPoints(matching: ["blocks.*.hook_resid_post"])
        #expect(posts == [.block(0, .residPost), .block(1, .residPost)])
        #expect(try model.config.hookPoints(matching: ["hook_embed", "blocks.1.attn.hook_?"]).count == 5)
        #expect(throws: InterpError.self) { try model.config.hookPoints(matching: ["blocks.*.hook_nothing"]) }
        #expect(throws: InterpError("hook 'blocks.9.hook_resid_pre' does not exist in this model (see `interp info` for its hooks)")) {
            try model.config.hookPoints(matching: ["blocks.9.hook_resid_pre"])
        }
    }

    @Test func cachingDoesNotChangeLogits() throws {
        let plain = try model.run(tokens)
        let (cached, _) = try model.runWithCache(tokens, names: model.config.hookPoints)
        #expect(compare(plain, cached, atol: 1e-5).passed)
    }

    /// Overwriting every position's residual stream after block 0 with another batch's makes the logits that batch's.
    @Test func overwritingTheResidualStreamTransplantsTheRun() throws {
        let other = try TokenBatch(tokens.rows.map { $0.map { ($0 * 7 + 3) % model.config.dVocab } }, config: model.config)
        let (otherLogits, otherCache) = try model.runWithCache(other, names: [.block(0, .residPost)])
        let donor = otherCache[.block(0, .residPost)]!
        let patched = try model.runWithHooks(tokens, functions: [(.block(0, .residPost), { _, activation in activation = donor })])
        #expect(compare(patched, otherLogits, atol: 1e-5).passed)
        #expect(!compare(try model.run(tokens), otherLogits, atol: 1e-3).passed)
    }

    /// A change at a hook inside attention flows on: zeroing layer 1's `hook_z` leaves attn_out = b_O.
    @Test func hookEditsFlowDownstream() throws {
        var hooks = Hooks(cache: [.block(1, .attnOut), .block(1, .z)])
        hooks.add(.block(1, .z)) { _, z in z = Tensor(zeros: z.shape) }
        let (_, cache) = try model.forward(tokens, hooks: hooks)
        #expect(cache[.block(1, .z)]!.scalars.allSatisfy { $0 == 0 })
        let reference = try SafeTensorsFile(path: Fixtures.model("gpt2-tl") + "/model.safetensors")
        let bO = try reference.tensor("blocks.1.attn.b_O").scalars
        let attnOut = cache[.block(1, .attnOut)]!.scalars
        #expect(attnOut.enumerated().allSatisfy { Swift.abs($0.element - bO[$0.offset % bO.count]) < 1e-6 })
    }

    /// Per-head results sum to the attention output (minus b_O), and editing a head's result changes attn_out.
    @Test func perHeadResultsSumToAttentionOutput() throws {
        let (_, cache) = try model.runWithCache(tokens, names: [.block(0, .result), .block(0, .attnOut)])
        let result = cache[.block(0, .result)]!, attnOut = cache[.block(0, .attnOut)]!
        let D = model.config.dModel, H = model.config.nHeads
        let bO = try SafeTensorsFile(path: Fixtures.model("gpt2-tl") + "/model.safetensors").tensor("blocks.0.attn.b_O").scalars
        for r in 0..<(tokens.batch * tokens.positions) {
            for i in 0..<D {
                let sum = (0..<H).reduce(bO[i]) { $0 + result.scalars[(r * H + $1) * D + i] }
                #expect(Swift.abs(sum - attnOut.scalars[r * D + i]) < 1e-5)
            }
        }
    }

    @Test func hooksMustKeepShapeAndExist() throws {
        #expect(throws: InterpError.self) {
            _ = try model.runWithHooks(tokens, functions: [(.block(0, .residPre), { _, a in a = Tensor(zeros: [1]) })])
        }
        let attnOnly = try ModelLoader.load(directory: Fixtures.model("attn-only"))
        #expect(throws: InterpError("hook 'blocks.0.mlp.hook_pre' does not exist in this model (see `interp info` for its hooks)")) {
            _ = try attnOnly.runWithCache(TokenBatch([[1, 2]], config: attnOnly.config), names: [.block(0, .mlpPre)])
        }
    }

    @Test func tokenBatchesAreChecked() {
        let c = model.config
        #expect(throws: InterpError.self) { try TokenBatch([], config: c) }
        #expect(throws: InterpError.self) { try TokenBatch([[]], config: c) }
        #expect(throws: InterpError("sequences have different lengths (sequence 0 has 2 tokens, sequence 1 has 1); a batch must be rectangular")) {
            try TokenBatch([[1, 2], [3]], config: c)
        }
        #expect(throws: InterpError("token id 101 at sequence 0, position 1 is outside the vocabulary (0..<101)")) {
            try TokenBatch([[1, 101]], config: c)
        }
        #expect(throws: InterpError.self) { try TokenBatch([[-1]], config: c) }
        #expect(throws: InterpError("sequences have 33 tokens, more than the model's context of 32")) {
            try TokenBatch([Array(repeating: 0, count: 33)], config: c)
        }
    }
}
