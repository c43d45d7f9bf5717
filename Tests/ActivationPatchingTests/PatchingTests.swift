import ActivationPatching
import Foundation
import InterpCore
import InterpModels
import InterpTestSupport
import SafeTensors
import Testing

/// interp's patching tables against TransformerLens's `get_act_patch_*` (fixtures/make_patching.py), on the GPT-2-style
/// fixture and on the induction model, both directions, metric = logit difference at the last position.
@Suite struct PatchingTests {
    struct Prompts: Decodable { let clean: [[Int]]; let corrupted: [[Int]]; let answers: [Int]; let wrongs: [Int] }

    static let cases: [(String, String)] = {
        var all: [(String, String)] = []
        for model in ["gpt2-tl", "induction-2l"] {
            for site in PatchSite.allCases {
                if model == "induction-2l" && [.residMid, .mlpOut].contains(site) { continue }
                for indexing in site.indexings { all.append((model, "\(site.rawValue).\(indexing.rawValue)")) }
            }
        }
        return all
    }()

    @Test(arguments: cases)
    func tableMatchesTransformerLens(model name: String, key: String) throws {
        let model = try ModelLoader.load(directory: Fixtures.model(name))
        let prompts = try JSONDecoder().decode(Prompts.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/patching/\(name).json")))
        let reference = try SafeTensorsFile(path: Fixtures.root + "/patching/\(name).safetensors")
        let clean = try TokenBatch(prompts.clean, config: model.config), corrupted = try TokenBatch(prompts.corrupted, config: model.config)
        let parts = key.split(separator: ".").map(String.init)
        let site = try #require(PatchSite(rawValue: parts[0])), indexing = try #require(PatchIndexing(rawValue: parts[1]))
        let metric = PatchingMetric.logitDifference(answers: prompts.answers, wrongs: prompts.wrongs)
        for direction in [PatchDirection.denoise, .noise] {
            let expected = try reference.tensor("\(direction.rawValue).\(key)")
            let slow = try ActivationPatching.reference(model: model, clean: clean, corrupted: corrupted, site: site, indexing: indexing,
                                                        direction: direction, metric: metric)
            let fast = try ActivationPatching.table(model: model, clean: clean, corrupted: corrupted, site: site, indexing: indexing,
                                                    direction: direction, metric: metric)
            for (path, table) in [("reference", slow), ("fast", fast)] {
                #expect(table.shape == expected.shape, "\(key) shape \(table.shape) vs \(expected.shape)")
                let worst = zip(table.values, expected.scalars).map { Swift.abs($0 - Double($1)) }.max() ?? 0
                #expect(worst <= 1e-4, "\(name) \(direction) \(key) \(path): max |Δ| \(worst)")
            }
        }
    }

    /// The "every" stacks, as TransformerLens stacks them.
    @Test(arguments: ["gpt2-tl", "induction-2l"])
    func everyStacksMatchTransformerLens(name: String) throws {
        let model = try ModelLoader.load(directory: Fixtures.model(name))
        let prompts = try JSONDecoder().decode(Prompts.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/patching/\(name).json")))
        let reference = try SafeTensorsFile(path: Fixtures.root + "/patching/\(name).safetensors")
        let clean = try TokenBatch(prompts.clean, config: model.config), corrupted = try TokenBatch(prompts.corrupted, config: model.config)
        let metric = PatchingMetric.logitDifference(answers: prompts.answers, wrongs: prompts.wrongs)
        var stacks: [(String, [PatchingTable])] = [
            ("head_every.layer,head", try ActivationPatching.headEvery(model: model, clean: clean, corrupted: corrupted, byPosition: false, metric: metric)),
            ("head_every.layer,pos,head", try ActivationPatching.headEvery(model: model, clean: clean, corrupted: corrupted, byPosition: true, metric: metric)),
        ]
        if !model.config.attnOnly {
            stacks.append(("block_every.layer,pos", try ActivationPatching.blockEvery(model: model, clean: clean, corrupted: corrupted, metric: metric)))
        }
        for (key, tables) in stacks {
            let expected = try reference.tensor("denoise." + key)
            #expect(expected.shape == [tables.count] + tables[0].shape, "\(key): \(expected.shape)")
            let values = tables.flatMap(\.values)
            let worst = zip(values, expected.scalars).map { Swift.abs($0 - Double($1)) }.max() ?? 0
            #expect(values.count == expected.count && worst <= 1e-4, "\(name) \(key): max |Δ| \(worst)")
        }
    }

    /// Patching every position of resid_pre at layer 0 from the clean run gives the clean metric; patching a position
    /// where clean and corrupted tokens agree, before any difference, changes nothing.
    @Test func fullPatchRestoresAndIdenticalPrefixDoesNothing() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("induction-2l"))
        let prompts = try JSONDecoder().decode(Prompts.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/patching/induction-2l.json")))
        let clean = try TokenBatch(prompts.clean, config: model.config), corrupted = try TokenBatch(prompts.corrupted, config: model.config)
        let metric = PatchingMetric.logitDifference(answers: prompts.answers, wrongs: prompts.wrongs)
        let cleanMetric = try metric(model.run(clean)), corruptedMetric = try metric(model.run(corrupted))
        let cache = try model.runWithCache(clean, names: [ActivationPatching.hook(.residPre, layer: 0)]).cache
        let all = try model.runWithHooks(corrupted, functions: [(ActivationPatching.hook(.residPre, layer: 0), { name, activation in
            activation = cache[name]!
        })])
        #expect(Swift.abs(try metric(all) - cleanMetric) < 1e-5)
        for table in [try ActivationPatching.reference(model: model, clean: clean, corrupted: corrupted, site: .residPre, indexing: .layerPos, metric: metric),
                      try ActivationPatching.table(model: model, clean: clean, corrupted: corrupted, site: .residPre, indexing: .layerPos, metric: metric)] {
            for layer in 0..<2 { for pos in 0..<5 { #expect(Swift.abs(table[[layer, pos]] - corruptedMetric) < 1e-5) } }
        }
    }

    /// The other metrics against their definitions, computed here in Double from the same logits.
    @Test func metricsMatchTheirDefinitions() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        let prompts = try JSONDecoder().decode(Prompts.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/patching/gpt2-tl.json")))
        let clean = try model.run(try TokenBatch(prompts.clean, config: model.config))
        let corrupted = try model.run(try TokenBatch(prompts.corrupted, config: model.config))
        let (B, P, V) = (clean.shape[0], clean.shape[1], clean.shape[2])
        func last(_ t: Tensor, _ b: Int) -> [Double] { (0..<V).map { Double(t.scalars[(b * P + P - 1) * V + $0]) } }
        func logProbs(_ row: [Double]) -> [Double] { let lse = Foundation.log(row.reduce(0) { $0 + Foundation.exp($1) }); return row.map { $0 - lse } }
        var logprob = 0.0, prob = 0.0, kl = 0.0
        for b in 0..<B {
            let lp = logProbs(last(corrupted, b)), lc = logProbs(last(clean, b))
            logprob += lp[prompts.answers[b]] / Double(B)
            prob += Foundation.exp(lp[prompts.answers[b]]) / Double(B)
            kl += (0..<V).reduce(0.0) { $0 + Foundation.exp(lc[$1]) * (lc[$1] - lp[$1]) } / Double(B)
        }
        #expect(Swift.abs(try PatchingMetric.logProbability(answers: prompts.answers)(corrupted) - logprob) < 1e-9)
        #expect(Swift.abs(try PatchingMetric.probability(answers: prompts.answers)(corrupted) - prob) < 1e-9)
        let klMetric = PatchingMetric.kl(cleanLogits: clean)
        let (klCorrupted, klClean) = (try klMetric(corrupted), try klMetric(clean))
        #expect(Swift.abs(klCorrupted - kl) < 1e-9 && kl > 0)
        #expect(Swift.abs(klClean) < 1e-12)
        let diff = PatchingMetric.logitDifference(answers: prompts.answers, wrongs: prompts.wrongs)
        let normalised = PatchingMetric.normalized(diff, clean: try diff(clean), corrupted: try diff(corrupted))
        let (atClean, atCorrupted) = (try normalised(clean), try normalised(corrupted))
        #expect(Swift.abs(atClean - 1) < 1e-12 && Swift.abs(atCorrupted) < 1e-12)
    }

    @Test func badRequestsAreOneLineErrors() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("induction-2l"))
        let a = try TokenBatch([[0, 1, 2, 3]], config: model.config), b = try TokenBatch([[0, 1, 2]], config: model.config)
        let metric = PatchingMetric.logitDifference(answers: [1], wrongs: [2])
        #expect(throws: InterpError("clean and corrupted prompts differ in shape: 1 × 4 tokens vs 1 × 3")) {
            try ActivationPatching.reference(model: model, clean: a, corrupted: b, site: .residPre, indexing: .layerPos, metric: metric)
        }
        #expect(throws: InterpError("clean and corrupted prompts differ in shape: 1 × 4 tokens vs 1 × 3")) {
            try ActivationPatching.table(model: model, clean: a, corrupted: b, site: .residPre, indexing: .layerPos, metric: metric)
        }
        #expect(throws: InterpError("site resid_pre cannot be patched by layer,head (it can by layer,pos)")) {
            try ActivationPatching.reference(model: model, clean: a, corrupted: a, site: .residPre, indexing: .layerHead, metric: metric)
        }
        #expect(throws: InterpError("this model has no mlp_out (hook_mlp_out) to patch")) {
            try ActivationPatching.table(model: model, clean: a, corrupted: a, site: .mlpOut, indexing: .layerPos, metric: metric)
        }
    }
}
