import Foundation
import InterpCore
import InterpModels
import InterpTestSupport
import SparseAutoencoders
import Testing
@testable import Dashboards

/// The dashboard's two batched passes against the obvious computation: every sequence run on its own, every code
/// kept, statistics taken from the full list.
@Suite struct FeatureDashboardTests {
    let model: TransformerModel
    let sae: SparseAutoencoder
    let hook = HookName.block(0, .residPost)
    let sequences: [[Int32]]

    init() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        self.model = model
        sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/interp-gpt2-resid0")
        var random = SeededRandom(seed: 7)
        // Two lengths, so that batches hold sequences of different lengths; a few tokens repeat so that ties and
        // repeated contexts occur.
        sequences = (0..<11).map { s in
            (0..<(s % 3 == 0 ? 9 : 14)).map { p in p == 0 ? 0 : Int32(random.next() % UInt64(p % 4 == 0 ? 5 : model.config.dVocab)) }
        }
    }

    /// A latent's activation at one token of the reference, and whether another batch shape may decide its firing
    /// the other way (see `referenceCodes`).
    struct Firing { let activation: Float, sequence: Int, position: Int, ambiguous: Bool }

    /// Between batch shapes or BLAS kernels, float32 rounding moves an activation by the drift of three reductions
    /// in series of up to 256 terms (the block's attention and MLP, then the encoder): √(3·256)·ε ≈ 3.3e-6 of its
    /// row's scale (`Float32Rounding.drift`). Six times that, ≈ 2e-5, leaves a margin.
    static let relativeTolerance = 6 * Float32Rounding.drift(scale: 1, terms: 256, inSeries: 3)

    /// Codes of every token, each sequence run alone, and per token the latents whose firing a last-bit difference
    /// can decide: TopK keeps the k largest of `h = ((x − b_dec)·W_enc + b_enc) ⊙ ‖W_dec‖` (recomputed here in
    /// Double), so a latent within the tolerance of the k-th or (k+1)-th largest, when those two are within twice
    /// the tolerance, may be kept in one run and dropped in another; a kept latent within it of zero may clear the
    /// ReLU or not. Such a latent counts as firing with activation max(h, 0) or not at all.
    func referenceCodes() throws -> [[(codes: [Float], possible: [Float], ambiguous: Set<Int>, tolerance: Float)]] {
        let D = sae.config.dIn, S = sae.config.dSAE, k = sae.config.k!, p = sae.parameters
        let norms = (sae.config.rescaleActsByDecoderNorm ?? false) ? p.decoderNorms : [Float](repeating: 1, count: S)
        return try sequences.map { sequence in
            let batch = try TokenBatch([sequence.map(Int.init)], config: model.config)
            let x = try model.runWithCache(batch, names: [hook]).cache[hook]!.reshaped([sequence.count, D])
            let z = try sae.encode(x)
            return (0..<sequence.count).map { t in
                let h = (0..<S).map { i in
                    (0..<D).reduce(Double(p.bEnc.scalars[i])) { sum, j in
                        sum + (Double(x.scalars[t * D + j]) - (sae.config.applyBDecToInput ? Double(p.bDec.scalars[j]) : 0))
                            * Double(p.wEnc.scalars[j * S + i])
                    } * Double(norms[i])
                }
                let tolerance = Self.relativeTolerance * max(1, h.map(Swift.abs).max()!)
                let sorted = h.sorted(by: >)
                var ambiguous = Set<Int>()
                for i in 0..<S {
                    let nearTie = sorted[k - 1] - sorted[k] <= 2 * tolerance
                        && min(Swift.abs(h[i] - sorted[k - 1]), Swift.abs(h[i] - sorted[k])) <= 2 * tolerance
                    let nearZero = h[i] >= sorted[k - 1] - 2 * tolerance && Swift.abs(h[i]) <= tolerance
                    if nearTie || nearZero { ambiguous.insert(i) }
                }
                let codes = Array(z.scalars[(t * S)..<((t + 1) * S)])
                // What an ambiguous latent shows when it does fire; otherwise the code itself.
                let possible = (0..<S).map { ambiguous.contains($0) ? Float(max(h[$0], 0)) : codes[$0] }
                return (codes, possible, ambiguous, Float(tolerance))
            }
        }
    }

    /// Batched and every sequence alone may differ in the last bits (another GEMM shape, another BLAS kernel), so
    /// firings a last-bit difference can decide (`referenceCodes`) may go either way, and the order of two
    /// examples within the tolerance of each other may be either; everything else must agree: the counts, the
    /// maxima and means, the histograms up to values on a bin edge, and every example's place, tokens and context
    /// activations. A dropped or swapped position, an off-by-one context, a reversed order or a wrong bin fails.
    @Test func statisticsExamplesAndHistogramsMatchTheDirectComputation() throws {
        var settings = FeatureDashboard.Settings()
        settings.examples = 4
        settings.before = 3
        settings.after = 2
        settings.histogramBins = 6
        settings.batchSize = 4
        var progressCalls = 0
        let dashboard = try FeatureDashboard.gather(sae: sae, model: model, sequences: sequences, hook: hook, settings: settings) { done, total in
            progressCalls += 1
            #expect(done <= total)
        }
        #expect(progressCalls == 6)    // three batches, two passes
        let reference = try referenceCodes()
        let tokens = sequences.map { $0.count - 1 }.reduce(0, +)
        #expect(dashboard.tokens == tokens)
        var checkedExamples = 0, ambiguousFirings = 0
        for latent in 0..<sae.config.dSAE {
            // Every token where the latent fires, or may (BOS left out, as the dashboard leaves it out).
            var firings: [Firing] = []
            for (s, rows) in reference.enumerated() {
                for p in 1..<rows.count where rows[p].possible[latent] > 0 {
                    firings.append(Firing(activation: rows[p].possible[latent], sequence: s, position: p,
                                          ambiguous: rows[p].ambiguous.contains(latent)))
                }
            }
            let sure = firings.filter { !$0.ambiguous }
            ambiguousFirings += firings.count - sure.count
            func tolerance(_ f: Firing) -> Float { reference[f.sequence][f.position].tolerance }
            let f = dashboard.features[latent]
            #expect(f.firings >= sure.count && f.firings <= firings.count, "latent \(latent): \(f.firings) firings, \(sure.count)–\(firings.count) expected")
            #expect(Swift.abs(f.density - Double(f.firings) / Double(tokens)) < 1e-12)
            let top = firings.map { $0.activation + tolerance($0) }.max() ?? 0
            let bottom = sure.map { $0.activation - tolerance($0) }.max() ?? 0
            #expect(f.maxActivation >= bottom && f.maxActivation <= top, "latent \(latent): max \(f.maxActivation)")
            if f.firings > 0 {
                let lowest = firings.map { Double($0.activation - tolerance($0)) }.min()!
                if sure.count == firings.count {
                    let mean = sure.map { Double($0.activation) }.reduce(0, +) / Double(sure.count)
                    #expect(Swift.abs(f.meanActivation - mean) <= Self.relativeTolerance * max(1, mean), "latent \(latent)")
                } else {
                    #expect(f.meanActivation >= lowest && f.meanActivation <= Double(top), "latent \(latent)")
                }
            }
            // Histogram: bins of the dashboard's maximum; a value within its tolerance of a bin edge may fall on
            // either side, an ambiguous firing may be absent.
            #expect(f.histogram.count == 6 && f.histogram.reduce(0, +) == f.firings)
            let maximum = Double(f.maxActivation)
            for (b, count) in f.histogram.enumerated() {
                func bin(_ v: Double) -> Int { min(5, max(0, Int(v / maximum * 6))) }
                let certain = sure.filter { bin(Double($0.activation - tolerance($0))) == b && bin(Double($0.activation + tolerance($0))) == b }.count
                let possible = firings.filter { bin(Double($0.activation - tolerance($0))) <= b && bin(Double($0.activation + tolerance($0))) >= b }.count
                #expect(count >= certain && count <= possible, "latent \(latent) bin \(b): \(count), \(certain)–\(possible) expected")
            }
            // Examples: strongest first by the dashboard's own values (ties: earlier sequence, then position);
            // each a reference firing with the same activation; none missing that beats the weakest shown by more
            // than the tolerance.
            #expect(f.examples.count == min(4, f.firings))
            for (a, b) in zip(f.examples, f.examples.dropFirst()) {
                #expect(a.activation > b.activation || (a.activation == b.activation && (a.sequence, a.position) < (b.sequence, b.position)),
                        "latent \(latent): examples out of order")
            }
            #expect(Set(f.examples.map { [$0.sequence, $0.position] }).count == f.examples.count)
            for example in f.examples {
                guard let match = firings.first(where: { $0.sequence == example.sequence && $0.position == example.position }) else {
                    Issue.record("latent \(latent): example at sequence \(example.sequence) position \(example.position) is no firing")
                    continue
                }
                #expect(Swift.abs(example.activation - match.activation) <= tolerance(match), "latent \(latent)")
                let start = max(1, example.position - 3), end = min(sequences[example.sequence].count, example.position + 3)
                #expect(example.contextStart == start)
                #expect(example.tokens == Array(sequences[example.sequence][start..<end]))
                let context = (start..<end).map { reference[example.sequence][$0] }
                #expect(example.activations.count == context.count)
                for (shown, row) in zip(example.activations, context) {
                    let either = row.ambiguous.contains(latent) ? [0, row.possible[latent]] : [row.codes[latent]]
                    #expect(either.contains { Swift.abs(shown - $0) <= row.tolerance }, "latent \(latent): context activation \(shown)")
                }
                checkedExamples += 1
            }
            if let weakest = f.examples.last, f.examples.count == 4 {
                let missed = sure.filter { s in
                    s.activation - tolerance(s) > weakest.activation && !f.examples.contains { $0.sequence == s.sequence && $0.position == s.position }
                }
                #expect(missed.isEmpty, "latent \(latent): \(missed.count) stronger firings not among the examples")
            }
        }
        #expect(checkedExamples > 50)
        // The test means something only if nearly every firing is decided: a handful of boundary cases at most.
        #expect(ambiguousFirings < 20, "\(ambiguousFirings) firings too close to a decision boundary to check")
        #expect(dashboard.features.contains(where: \.isDead) || dashboard.features.allSatisfy { $0.firings > 0 })
    }

    /// Logit effects against a Double dot product of each decoder row with W_U. The Float GEMM may differ from it by
    /// the worst-case bound of a d_in-term float32 sum, d_in·ε·Σ|w_dec·W_U|, so ranks are compared with that slack:
    /// the listed tokens in order of their own effects, each effect within its bound, and no token left out whose
    /// effect beats the last one listed by more than both bounds.
    @Test func logitEffectsAreDecoderRowsThroughTheUnembedding() throws {
        var settings = FeatureDashboard.Settings()
        settings.logitEffects = 5
        let dashboard = try FeatureDashboard.gather(sae: sae, model: model, sequences: sequences, hook: hook, settings: settings)
        let vocabulary = model.config.dVocabOut, width = sae.config.dIn
        for latent in [0, 17, sae.config.dSAE - 1] {
            let terms = (0..<vocabulary).map { t in
                (0..<width).map { Double(sae.parameters.wDec.scalars[latent * width + $0]) * Double(model.unembedding.linear.weight[$0 * vocabulary + t]) }
            }
            let effects = terms.map { $0.reduce(0, +) }
            let bounds = terms.map { Double(width + 1) * Double(Float.ulpOfOne) * $0.map(Swift.abs).reduce(0, +) }
            let f = dashboard.features[latent]
            for (listed, sign) in [(f.promoted, 1.0), (f.suppressed, -1.0)] {
                #expect(listed.count == 5 && Set(listed.map(\.token)).count == 5)
                for e in listed { #expect(Swift.abs(Double(e.effect) - effects[Int(e.token)]) <= bounds[Int(e.token)], "latent \(latent)") }
                for (a, b) in zip(listed, listed.dropFirst()) { #expect(sign * Double(a.effect) >= sign * Double(b.effect), "latent \(latent)") }
                let last = listed.last!, lastToken = Int(last.token)
                let missed = (0..<vocabulary).filter { t in
                    !listed.contains { Int($0.token) == t } && sign * (effects[t] - effects[lastToken]) > bounds[t] + bounds[lastToken]
                }
                #expect(missed.isEmpty, "latent \(latent): tokens \(missed) beat the listed ones")
            }
        }
        // A hook of the same width that is not a vector in the residual stream: no logit effects.
        let normalized = try FeatureDashboard.gather(sae: sae, model: model, sequences: sequences, hook: .block(0, .ln2Normalized), settings: settings)
        #expect(normalized.features.allSatisfy { $0.promoted.isEmpty && $0.suppressed.isEmpty })
    }

    @Test func pagesLinkEveryFiringLatentAndEscapeTokens() throws {
        let dashboard = try FeatureDashboard.gather(sae: sae, model: model, sequences: sequences, hook: hook)
        let html = DashboardHTML(dashboard: dashboard, subtitle: "test <sae>", tokenText: { $0 == 3 ? "<i>\n" : "t\($0)" })
        let pages = html.pages()
        let alive = dashboard.features.filter { !$0.isDead }
        #expect(pages.count == 1 + alive.count)
        #expect(pages[0].name == "index.html")
        for f in alive { #expect(pages[0].html.contains("href=\"feature-\(f.latent).html\"")) }
        #expect(!pages.contains { $0.html.contains("<i>") || $0.html.contains("test <sae>") })
        #expect(html.shown(3) == "&lt;i&gt;↵")
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(try html.write(to: directory + "/out", latents: [alive[0].latent, alive[1].latent]) == 3)
        let written = try FileManager.default.contentsOfDirectory(atPath: directory + "/out").sorted()
        #expect(written == ["feature-\(alive[0].latent).html", "feature-\(alive[1].latent).html", "index.html"].sorted())
    }
}
