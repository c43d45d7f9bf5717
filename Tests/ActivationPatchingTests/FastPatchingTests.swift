import ActivationPatching
import Foundation
import InterpCore
import InterpModels
import InterpTestSupport
import Testing

/// The fast patching path against the one-forward-per-cell reference, beyond what the TransformerLens tables cover:
/// several prompts whose corruptions start at different positions (one prompt not corrupted at all), every site and
/// index space, both directions, metrics reading the whole vocabulary or every position, a bidirectional model, an
/// LNPre model with one layer, and tiny batches.
@Suite struct FastPatchingTests {
    static let models = ["gpt2-tl", "attn-only", "lnpre-gelu", "noln-relu-bidir"]

    /// Three prompts of 7 tokens: corrupted at positions 4 and 6, at 1, and not at all.
    static func prompts(_ config: ModelConfig) throws -> (clean: TokenBatch, corrupted: TokenBatch) {
        var rng = SeededRandom(seed: 11)
        let clean = (0..<3).map { _ in (0..<7).map { _ in Int(rng.next() % UInt64(config.dVocab)) } }
        var corrupted = clean
        for (b, p) in [(0, 4), (0, 6), (1, 1)] { corrupted[b][p] = (clean[b][p] + 1 + b) % config.dVocab }
        return (try TokenBatch(clean, config: config), try TokenBatch(corrupted, config: config))
    }

    static func metrics(_ model: TransformerModel, clean: TokenBatch) throws -> [(String, PatchingMetric)] {
        let answers = [1, 2, 3], wrongs = [4, 5, 1]
        let cleanLogits = try model.run(clean)
        // Reads every position: mean over prompts and positions of logit[answer_b] − mean logit.
        let everyPosition = PatchingMetric(positions: .all) { logits in
            let (B, P, V) = (logits.shape[0], logits.shape[1], logits.shape[2])
            var total = 0.0
            for b in 0..<B {
                for p in 0..<P {
                    let row = logits.scalars[((b * P + p) * V)..<((b * P + p + 1) * V)]
                    total += Double(row[row.startIndex + answers[b]]) - row.reduce(0.0) { $0 + Double($1) } / Double(V)
                }
            }
            return total / Double(B * P)
        }
        return [("logit-diff", PatchingMetric.logitDifference(answers: answers, wrongs: wrongs)),
                ("logprob", PatchingMetric.logProbability(answers: answers)),
                ("kl", PatchingMetric.kl(cleanLogits: cleanLogits)),
                ("every-position", everyPosition)]
    }

    @Test(arguments: models)
    func fastEqualsReference(name: String) throws {
        let model = try ModelLoader.load(directory: Fixtures.model(name))
        let (clean, corrupted) = try Self.prompts(model.config)
        for (metricName, metric) in try Self.metrics(model, clean: clean) {
            for site in PatchSite.allCases where site.hookSite.exists(in: model.config) {
                for indexing in site.indexings {
                    // Every combination for logit difference; for the other metrics, the first index space per site.
                    if metricName != "logit-diff" && indexing != site.indexings[0] { continue }
                    for direction in [PatchDirection.denoise, .noise] {
                        let slow = try ActivationPatching.reference(model: model, clean: clean, corrupted: corrupted, site: site,
                                                                    indexing: indexing, direction: direction, metric: metric)
                        let fast = try ActivationPatching.table(model: model, clean: clean, corrupted: corrupted, site: site,
                                                                indexing: indexing, direction: direction, metric: metric)
                        let worst = zip(slow.values, fast.values).map { Swift.abs($0 - $1) }.max() ?? 0
                        #expect(fast.shape == slow.shape && worst <= 1e-4,
                                "\(name) \(metricName) \(site.rawValue) by \(indexing.rawValue) \(direction): max |Δ| \(worst)")
                    }
                }
            }
        }
    }

    /// A metric of some positions (not the last only, not all): the fast path reads every position and cuts them down.
    @Test func metricOfSomePositionsEqualsReference() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        let (clean, corrupted) = try Self.prompts(model.config)
        let metric = PatchingMetric.kl(cleanLogits: try model.run(clean), positions: [clean.positions - 1, 2])
        for site in [PatchSite.residPre, .headOut] {
            let slow = try ActivationPatching.reference(model: model, clean: clean, corrupted: corrupted, site: site,
                                                        indexing: site.indexings[0], metric: metric)
            let fast = try ActivationPatching.table(model: model, clean: clean, corrupted: corrupted, site: site,
                                                    indexing: site.indexings[0], metric: metric)
            let worst = zip(slow.values, fast.values).map { Swift.abs($0 - $1) }.max() ?? 0
            #expect(fast.shape == slow.shape && worst <= 1e-4, "\(site.rawValue): max |Δ| \(worst)")
            #expect(Set(fast.values.map { ($0 * 1e6).rounded() }).count > 1, "the table varies")
        }
    }

    /// Batching does not change the numbers: one cell per batch, a few, or all at once; progress reaches the end.
    @Test func batchSizeDoesNotChangeTheTable() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        let (clean, corrupted) = try Self.prompts(model.config)
        let metric = PatchingMetric.logitDifference(answers: [1, 2, 3], wrongs: [4, 5, 1])
        var tables: [PatchingTable] = []
        for maxRows in [1, 9, 100_000] {
            var last = (0, 0)
            tables.append(try ActivationPatching.table(model: model, clean: clean, corrupted: corrupted, site: .headOut, indexing: .layerHead,
                                                       metric: metric, maxRows: maxRows) { done, total in last = (done, total) })
            #expect(last == (8, 8))
        }
        for table in tables.dropFirst() {
            let worst = zip(table.values, tables[0].values).map { Swift.abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-5)
        }
    }

    /// A continued run equals a full forward with the same edit made by a hook, at every position it returns, and
    /// reads only the logit entries asked for; bad runs are one-line errors.
    @Test func continuedRunEqualsHookedForward() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        let (clean, _) = try Self.prompts(model.config)
        let base = try model.baseRun(clean)
        // The base run's own logits, read by unedited continued runs, are the forward's.
        let full = try model.run(clean)
        let own = try model.logits(of: base, positions: .all)
        #expect(own.shape == full.shape && zip(own.scalars, full.scalars).allSatisfy { Swift.abs($0 - $1) < 1e-4 })
        let lastOnly = try model.logits(of: base, prompts: 1..<3, logitIndices: [5])
        #expect(lastOnly.shape == [2, 1, 1] && Swift.abs(lastOnly.scalars[1] - full.scalars[(2 * 7 + 6) * model.config.dVocabOut + 5]) < 1e-4)
        let name = HookName(.residMid, layer: 0)
        func bump(_ row: UnsafeMutableBufferPointer<Float>) { for i in row.indices { row[i] += Float(i % 5) * 0.3 } }
        let run = ContinuedRun(prompt: 1, start: 3, layer: 0, site: .residMid) { slice in bump(slice.row(3)!) }
        let indices = [7, 0, 42]
        let out = try model.continueRuns(from: base, [run], positions: .all, logitIndices: indices)[0]
        let hooked = try model.runWithHooks(clean, functions: [(name, { _, activation in
            activation.withUnsafeMutableBufferPointer { a in
                bump(UnsafeMutableBufferPointer(rebasing: a[((1 * 7 + 3) * 64)..<((1 * 7 + 4) * 64)]))
            }
        })])
        #expect(out.shape == [4, 3])
        let V = model.config.dVocabOut
        var worst: Float = 0
        for p in 3..<7 { for (j, v) in indices.enumerated() { worst = max(worst, Swift.abs(out.scalars[(p - 3) * 3 + j] - hooked.scalars[((7 + p) * V) + v])) } }
        #expect(worst < 1e-4)
        #expect(throws: InterpError("continued run starting at position 7: the prompts have 7 positions")) {
            try model.continueRuns(from: base, [ContinuedRun(prompt: 0, start: 7, layer: 0, site: .z) { _ in }])
        }
        #expect(throws: InterpError("a continued run cannot be edited at ln1.hook_scale in this model")) {
            try model.continueRuns(from: base, [ContinuedRun(prompt: 0, start: 0, layer: 0, site: .ln1Scale) { _ in }])
        }
        #expect(throws: InterpError("a base run stops after blocks.1.hook_resid_post; it cannot cache ln_final.hook_normalized")) {
            try model.baseRun(clean, caching: [HookName(.lnFinalNormalized)])
        }
        #expect(throws: InterpError("logit index 101 is outside the output vocabulary (0..<101)")) {
            try model.continueRuns(from: base, [run], logitIndices: [101])
        }
    }
}
