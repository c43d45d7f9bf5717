import ActivationPatching
import Foundation
import InterpCore
import InterpModels
import InterpTestSupport
import Testing
import Tokenization

/// `PatchRequest`, what `interp patch` runs: the table, the clean and corrupted metrics and the normalisation are
/// those of the pieces it is made of; token options resolve to ids or fail in one line.
@Suite struct PatchRequestTests {
    @Test func runEqualsItsPieces() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("induction-2l"))
        let prompts = try JSONDecoder().decode(PatchingTests.Prompts.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/patching/induction-2l.json")))
        let clean = try TokenBatch(prompts.clean, config: model.config), corrupted = try TokenBatch(prompts.corrupted, config: model.config)
        let metric = PatchingMetric.logitDifference(answers: prompts.answers, wrongs: prompts.wrongs)
        let cleanMetric = try metric(model.run(clean)), corruptedMetric = try metric(model.run(corrupted))
        let expected = try ActivationPatching.table(model: model, clean: clean, corrupted: corrupted, site: .headOut, indexing: .layerHead,
                                                    direction: .noise, metric: .normalized(metric, clean: cleanMetric, corrupted: corruptedMetric))
        var calls = 0
        let result = try PatchRequest(model: model, clean: clean, corrupted: corrupted, answers: prompts.answers, wrongs: prompts.wrongs,
                                      site: .headOut, indexing: .layerHead, direction: .noise, normalize: true).run { _, _ in calls += 1 }
        #expect(result.values == expected.values && result.shape == expected.shape && calls > 0)
        #expect(result.cleanMetric == cleanMetric && result.corruptedMetric == corruptedMetric)
        #expect(result.site == "head_out" && result.axes == ["layer", "head"] && result.metric == "logit-diff" && result.direction == "noise" && result.normalized)
        #expect(result.labels == ["layer": ["L0", "L1"], "head": (0..<model.config.nHeads).map { "H\($0)" }])

        // Defaults: the site's first index space, and positions labelled by token id without a tokenizer.
        let kl = try PatchRequest(model: model, clean: clean, corrupted: corrupted, site: .residPre, metric: .kl).run()
        #expect(kl.axes == ["layer", "pos"] && kl.metric == "kl" && Swift.abs(kl.cleanMetric) < 1e-9 && kl.corruptedMetric > 0)
        #expect(kl.labels["pos"]?.first == "0: \(prompts.clean[0][0])")
        let equal = #expect(throws: InterpError.self) {
            try PatchRequest(model: model, clean: clean, corrupted: clean, answers: prompts.answers, wrongs: prompts.wrongs, site: .residPre,
                             normalize: true).run()
        }
        #expect(equal?.message == "the clean and corrupted metrics are equal (\(cleanMetric)); nothing to normalise by")
    }

    @Test func tokenOptionsResolveToIDs() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("text-tiny"))
        let tokenizer = try #require(try BPETokenizer.load(modelDirectory: Fixtures.model("text-tiny")))
        let one = tokenizer.encode(" the")
        try #require(one.count == 1)
        func ids(_ values: [String], _ tokenizer: BPETokenizer?, prompts: Int = 2) throws -> [Int] {
            try PatchRequest.tokenIDs(values, option: "--answer", tokenizer: tokenizer, config: model.config, prompts: prompts)
        }
        #expect(try ids(["7"], nil) == [7, 7])
        #expect(try ids(["7", " the"], tokenizer) == [7, Int(one[0])])
        #expect(try ids([], nil).isEmpty)
        let V = model.config.dVocab
        #expect(throws: InterpError("--answer \(V) is outside the vocabulary (0..<\(V))")) { try ids(["\(V)"], nil) }
        #expect(throws: InterpError("--answer ' the' is not a token id")) { try ids([" the"], nil) }
        #expect(throws: InterpError("--answer 'the whole sentence' is not a token id or a string of one token")) {
            try ids(["the whole sentence"], tokenizer)
        }
        #expect(throws: InterpError("--answer gives 2 tokens for 3 prompts (give one, or one per prompt)")) { try ids(["1", "2"], nil, prompts: 3) }
    }
}
