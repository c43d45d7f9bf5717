import Foundation
import Interp
import InterpTestSupport
import Testing

/// The layer stack's retaining mode keeps what a backward pass needs: the same values a hooked forward shows at the
/// matching hook points (the retaining pass takes the hooked pass's own steps, so they agree to the bit).
@Suite struct LayerStackTests {
    @Test(arguments: ["gpt2-tl", "attn-only", "lnpre-gelu", "noln-relu-bidir"])
    func retainedActivationsAreTheHookedOnes(name: String) throws {
        let model = try ModelLoader.load(directory: Fixtures.model(name))
        let c = model.config
        let tokens = try TokenBatch([[1, 5, 2, 9, 4], [7, 3, 3, 0, 8]], config: c)
        let sites: [HookName.Site] = [.residPre, .ln1Scale, .q, .k, .v, .pattern, .z, .residMid, .ln2Scale, .mlpPre]
        let names = (0..<c.nLayers).flatMap { l in sites.filter { $0.exists(in: c) }.map { HookName($0, layer: l) } }
            + (HookName.Site.lnFinalScale.exists(in: c) ? [HookName(.lnFinalScale), HookName(.residPost, layer: c.nLayers - 1)]
                                                         : [HookName(.residPost, layer: c.nLayers - 1)])
        let (logits, cache) = try model.runWithCache(tokens, names: names)
        let (retainedLogits, retained) = try model.runRetaining(tokens)
        #expect(retainedLogits == logits)
        #expect(retained.layers.count == c.nLayers)
        let rows = tokens.batch * tokens.positions
        for (l, layer) in retained.layers.enumerated() {
            let attention = model.blocks[l].attention
            #expect(layer.residPre == cache[.block(l, .residPre)]!.scalars)
            for (site, projection) in [(HookName.Site.q, SelfAttention.Projection.q), (.k, .k), (.v, .v)] {
                let columns = (0..<c.nHeads).map { attention.columns(projection, head: $0) }
                let fromQKV = (0..<rows).flatMap { r in columns.flatMap { layer.qkv[(r * attention.qkvWidth + $0.lowerBound)..<(r * attention.qkvWidth + $0.upperBound)] } }
                #expect(fromQKV == cache[.block(l, site)]!.scalars, "\(name) layer \(l) \(site)")
            }
            #expect(layer.pattern == cache[.block(l, .pattern)]!.scalars)
            #expect(layer.z == cache[.block(l, .z)]!.scalars)
            if c.normalization == .none {
                #expect(layer.ln1Scale.isEmpty && layer.ln2Scale.isEmpty)
            } else {
                #expect(layer.ln1Scale == cache[.block(l, .ln1Scale)]!.scalars && layer.ln1Mean.count == rows)
            }
            if c.attnOnly {
                #expect(layer.mlpPre.isEmpty && layer.residMid.isEmpty)
            } else {
                #expect(layer.residMid == cache[.block(l, .residMid)]!.scalars)
                #expect(layer.mlpPre == cache[.block(l, .mlpPre)]!.scalars)
                if c.normalization != .none { #expect(layer.ln2Scale == cache[.block(l, .ln2Scale)]!.scalars) }
            }
        }
        #expect(retained.residFinal == cache[.block(c.nLayers - 1, .residPost)]!.scalars)
        if c.normalization != .none { #expect(retained.finalScale == cache[HookName(.lnFinalScale)]!.scalars) }
    }

    /// A stack asked for rows, layers or prompts it does not have is a one-line error, before it touches a buffer.
    @Test func badRequestsAreErrors() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        let c = model.config
        let tokens = try TokenBatch([[1, 2, 3], [4, 5, 6]], config: c)
        let whole = [LayerStack.Sequence(prompt: 0, start: 0, layer: 0), LayerStack.Sequence(prompt: 1, start: 0, layer: 0)]
        func stack(_ entry: LayerStack.Entry, _ sequences: [LayerStack.Sequence], lastRowsOnly: Bool = false,
                   logitIndices: [Int]? = nil) throws -> LayerStack {
            try LayerStack(model: model, entry: entry, positions: 3, sequences: sequences, lastRowsOnly: lastRowsOnly,
                           logitIndices: logitIndices, wants: { _ in false }, visit: { _, _ in })
        }
        #expect(try stack(.tokens(tokens), whole).run().count == 2 * 3 * c.dVocabOut)
        #expect(throws: InterpError.self) { try stack(.tokens(tokens), whole, lastRowsOnly: true) }
        #expect(throws: InterpError.self) { try stack(.tokens(tokens), Array(whole.reversed())) }
        #expect(throws: InterpError.self) { try stack(.tokens(tokens), whole, logitIndices: [c.dVocabOut]) }
        let names = (0..<c.nLayers).flatMap { [HookName(.residPre, layer: $0), HookName(.k, layer: $0), HookName(.v, layer: $0)] }
        let cache = try model.runWithCache(tokens, names: names).cache
        let earlier = LayerStack.Entry.earlierRun(residPre: (0..<c.nLayers).map { cache[.block($0, .residPre)]! },
                                                  keys: (0..<c.nLayers).map { cache[.block($0, .k)]! },
                                                  values: (0..<c.nLayers).map { cache[.block($0, .v)]! })
        let fromMiddle = try stack(earlier, [LayerStack.Sequence(prompt: 1, start: 2, layer: 1)], lastRowsOnly: true, logitIndices: [4])
        #expect(try fromMiddle.run().count == 1)
        for bad in [LayerStack.Sequence(prompt: 2, start: 0, layer: 0), LayerStack.Sequence(prompt: 0, start: 3, layer: 0),
                    LayerStack.Sequence(prompt: 0, start: 0, layer: c.nLayers)] {
            #expect(throws: InterpError.self, "\(bad)") { try stack(earlier, [bad]) }
        }
        #expect(throws: InterpError.self) { try stack(.earlierRun(residPre: [], keys: [], values: []), [whole[0]]) }
    }
}
