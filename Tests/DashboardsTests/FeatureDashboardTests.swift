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

    struct Firing { let latent: Int, activation: Float, sequence: Int, position: Int }

    /// Codes of every token, each sequence run alone.
    func referenceCodes() throws -> [[[Float]]] {
        try sequences.map { sequence in
            let batch = try TokenBatch([sequence.map(Int.init)], config: model.config)
            let x = try model.runWithCache(batch, names: [hook]).cache[hook]!
            let z = try sae.encode(x.reshaped([sequence.count, sae.config.dIn]))
            return (0..<sequence.count).map { Array(z.scalars[($0 * sae.config.dSAE)..<(($0 + 1) * sae.config.dSAE)]) }
        }
    }

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
        let codes = try referenceCodes()
        let tokens = sequences.map { $0.count - 1 }.reduce(0, +)
        #expect(dashboard.tokens == tokens)
        var checkedExamples = 0
        for latent in 0..<sae.config.dSAE {
            var firings: [Firing] = []
            for (s, rows) in codes.enumerated() {
                for p in 1..<rows.count where rows[p][latent] > 0 {
                    firings.append(Firing(latent: latent, activation: rows[p][latent], sequence: s, position: p))
                }
            }
            let f = dashboard.features[latent]
            #expect(f.firings == firings.count, "latent \(latent)")
            #expect(abs(f.density - Double(firings.count) / Double(tokens)) < 1e-12)
            let maximum = firings.map(\.activation).max() ?? 0
            #expect(abs(f.maxActivation - maximum) <= 1e-5 * max(1, maximum), "latent \(latent)")
            let mean = firings.isEmpty ? 0 : firings.map { Double($0.activation) }.reduce(0, +) / Double(firings.count)
            #expect(abs(f.meanActivation - mean) <= 1e-5 * max(1, mean))
            #expect(f.histogram.count == 6 && f.histogram.reduce(0, +) == firings.count)
            for (b, count) in f.histogram.enumerated() {
                let expected = firings.filter { min(5, Int(Double($0.activation) / Double(maximum) * 6)) == b }.count
                #expect(abs(count - expected) <= 1, "latent \(latent) bin \(b)")   // a value within rounding of a bin edge may move
            }
            let strongest = firings.sorted {
                $0.activation != $1.activation ? $0.activation > $1.activation : ($0.sequence, $0.position) < ($1.sequence, $1.position)
            }.prefix(4)
            #expect(f.examples.count == strongest.count)
            for (example, expected) in zip(f.examples, strongest) {
                #expect(abs(example.activation - expected.activation) <= 1e-5 * max(1, expected.activation))
                #expect(example.sequence == expected.sequence && example.position == expected.position, "latent \(latent)")
                let start = max(1, expected.position - 3), end = min(sequences[expected.sequence].count, expected.position + 3)
                #expect(example.contextStart == start)
                #expect(example.tokens == Array(sequences[expected.sequence][start..<end]))
                let context = (start..<end).map { codes[expected.sequence][$0][latent] }
                #expect(zip(example.activations, context).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) } && example.activations.count == context.count)
                checkedExamples += 1
            }
        }
        #expect(checkedExamples > 50)
        #expect(dashboard.features.contains(where: \.isDead) || dashboard.features.allSatisfy { $0.firings > 0 })
    }

    @Test func logitEffectsAreDecoderRowsThroughTheUnembedding() throws {
        var settings = FeatureDashboard.Settings()
        settings.logitEffects = 5
        let dashboard = try FeatureDashboard.gather(sae: sae, model: model, sequences: sequences, hook: hook, settings: settings)
        let vocabulary = model.config.dVocabOut, width = sae.config.dIn
        for latent in [0, 17, sae.config.dSAE - 1] {
            let effects = (0..<vocabulary).map { t in
                (0..<width).reduce(0.0) { $0 + Double(sae.parameters.wDec.scalars[latent * width + $1]) * Double(model.wU[$1 * vocabulary + t]) }
            }
            let order = effects.indices.sorted { effects[$0] > effects[$1] }
            let f = dashboard.features[latent]
            #expect(f.promoted.map { Int($0.token) } == Array(order.prefix(5)))
            #expect(f.suppressed.map { Int($0.token) } == Array(order.suffix(5).reversed()))
            for e in f.promoted + f.suppressed { #expect(abs(Double(e.effect) - effects[Int(e.token)]) < 1e-4) }
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
