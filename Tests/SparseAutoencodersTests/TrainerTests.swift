import ActivationStore
import Foundation
import InterpCore
import InterpModels
import InterpTestSupport
import SafeTensors
import SparseAutoencoders
import Testing

@Suite struct TrainerTests {
    static let store = Fixtures.root + "/store/h5py-written.h5"

    func settings(_ architecture: String = "standard", steps: Int = 60, checkpointEvery: Int = 0, dataset: String = "activations",
                  store: String = TrainerTests.store) -> SAETrainingSettings {
        SAETrainingSettings(architecture: architecture, dSAE: 64, k: ["topk": 4, "batchtopk": 4][architecture], l1Coefficient: 0.5,
                            l0Coefficient: 0.05, initialThreshold: 0.05, learningRate: 4e-3, batchSize: 32, steps: steps, seed: 3,
                            logEvery: 10, checkpointEvery: checkpointEvery, activations: store, dataset: dataset)
    }

    /// Constant and cosine schedules with and without warm-up and decay, step by step as SAELens's scheduler gives them.
    @Test func learningRateScheduleMatchesSAELens() throws {
        struct Schedule: Decodable { let scheduler: String; let steps: Int; let warm_up: Int; let decay: Int; let lr: Float; let lr_end: Float; let values: [Float] }
        let schedules = try JSONDecoder().decode([Schedule].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/sae/lr-schedules.json")))
        #expect(schedules.count == 4)
        for s in schedules {
            var settings = settings(steps: s.steps)
            settings.learningRate = s.lr
            settings.lrWarmUpSteps = s.warm_up
            settings.lrDecaySteps = s.decay
            settings.lrSchedule = s.scheduler == "cosineannealing" ? "cosine" : "constant"
            settings.lrEnd = s.scheduler == "cosineannealing" ? s.lr_end : nil
            for (step, expected) in s.values.enumerated() {
                #expect(Swift.abs(settings.learningRate(at: step) - expected) <= 1e-6 * s.lr, "\(s.scheduler) \(s.steps)/\(s.warm_up)/\(s.decay) step \(step): \(settings.learningRate(at: step)) vs \(expected)")
            }
        }
    }

    /// Directories interp wrote, as real SAELens loaded them (fixtures/make_sae.py): same latents, same reconstructions.
    @Test(arguments: ["standard", "topk", "batchtopk", "jumprelu"])
    func interpWrittenDirectoriesMatchSAELensReading(name: String) throws {
        let sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/interp-\(name)")
        let outputs = try SafeTensorsFile(path: Fixtures.root + "/sae/interp-\(name)-saelens-outputs.safetensors")
        let x = try outputs.tensor("x")
        #expect(compare(try sae.encode(x), try outputs.tensor("feature_acts"), atol: 1e-5).passed)
        #expect(compare(try sae.reconstruct(x), try outputs.tensor("sae_out"), atol: 1e-5).passed)
        #expect(sae.config.metadata?.saeLensVersion == "6.0.0")
    }

    @Test(arguments: ["standard", "topk", "batchtopk", "jumprelu"])
    func trainingLowersTheLossAndWritesSAELensFiles(architecture: String) throws {
        let dir = try Fixtures.temporaryDirectory() + "/sae"
        let summary = try SAETrainer(settings: settings(architecture, steps: 200)).train(output: dir, resume: false)
        #expect(summary.steps == 200)
        let log = try String(contentsOfFile: dir + "/train_log.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(log.count == 20)
        let losses = try log.map { try JSONValue.parse(Data($0.utf8)).objectValue!["loss"]!.doubleValue! }
        #expect(losses.last! < 0.6 * losses.first!, "loss \(losses.first!) → \(losses.last!)")
        let sae = try SparseAutoencoder.load(directory: dir)
        #expect(sae.config.architecture == (architecture == "batchtopk" ? "jumprelu" : architecture) && sae.config.dIn == 24 && sae.config.dSAE == 64)
        let sparsity = try SafeTensorsFile(path: dir + "/sparsity.safetensors").tensor("sparsity")
        #expect(sparsity.shape == [64] && sparsity.scalars.allSatisfy { $0 <= 0 })
        #expect(!FileManager.default.fileExists(atPath: dir + "/checkpoint.safetensors"))
        if architecture == "topk" {   // norms folded in, as SAELens saves TopK SAEs
            #expect(sae.parameters.decoderNorms.allSatisfy { Swift.abs($0 - 1) < 1e-5 })
            #expect(summary.finalL0 == 4)
        }
        if architecture == "batchtopk" {   // saved as JumpReLU: norms folded, one learned threshold for every latent
            #expect(sae.parameters.decoderNorms.allSatisfy { Swift.abs($0 - 1) < 1e-5 })
            let threshold = sae.parameters.threshold!.scalars
            #expect(threshold[0] > 0 && threshold.allSatisfy { $0 == threshold[0] })
            #expect(Swift.abs(summary.finalL0 - 4) < 1e-6)
        }
        if architecture == "jumprelu" {
            let threshold = sae.parameters.threshold!.scalars
            #expect(threshold.allSatisfy { $0 >= 0 } && Set(threshold).count > 32, "thresholds learned per latent")
        }
    }

    /// A `[n, heads, d_head]` dataset trains on the heads concatenated; the SAE says so (`reshape_activations:
    /// "hook_z"`) and loads back for evaluation.
    @Test func attentionHeadDatasetTrainsAndLoads() throws {
        let dir = try Fixtures.temporaryDirectory() + "/sae"
        var s = settings("topk", steps: 30, dataset: "heads")
        s.batchSize = 10
        s.dSAE = 40
        _ = try SAETrainer(settings: s).train(output: dir, resume: false)
        let sae = try SparseAutoencoder.load(directory: dir)
        #expect(sae.config.dIn == 20 && sae.config.reshapeActivations == "hook_z")
        let reader = try ActivationReader(path: TrainerTests.store, dataset: "heads")
        #expect(try SAEEvaluation.evaluate(sae, reader: reader).rows == 30)
    }

    struct SimulatedCrash: Error {}

    /// A run stopped after a checkpoint and resumed ends with the same files as an uninterrupted one, bit for bit:
    /// the checkpoint holds everything (JumpReLU's threshold and its Adam moments, BatchTopK's moving threshold, the
    /// firing counters that make latents dead, the data order).
    @Test(arguments: ["standard", "topk", "batchtopk", "jumprelu"])
    func stoppedAndResumedRunIsBitIdentical(architecture: String) throws {
        let dir = try Fixtures.temporaryDirectory()
        var s = settings(architecture, steps: 90, checkpointEvery: 30)
        s.deadFeatureWindow = 5
        _ = try SAETrainer(settings: s).train(output: dir + "/full", resume: false)
        #expect(throws: SimulatedCrash.self) {
            try SAETrainer(settings: s).train(output: dir + "/stopped", resume: false) { if $0.step == 50 { throw SimulatedCrash() } }
        }
        #expect(FileManager.default.fileExists(atPath: dir + "/stopped/checkpoint.safetensors"))
        let summary = try SAETrainer(settings: s).train(output: dir + "/stopped", resume: true)
        #expect(summary.resumedFrom == 30)
        for file in ["sae_weights.safetensors", "sparsity.safetensors", "cfg.json", "train_log.jsonl"] {
            let a = try String(contentsOfFile: dir + "/full/" + file, encoding: .isoLatin1), b = try String(contentsOfFile: dir + "/stopped/" + file, encoding: .isoLatin1)
            let strip = { (t: String) in t.replacingOccurrences(of: #",\"tokens_per_second\":\d+"#, with: "", options: .regularExpression) }
            #expect(strip(a) == strip(b), "\(architecture): \(file)")
        }
    }

    @Test func nonFiniteInputStopsTraining() throws {
        let dir = try Fixtures.temporaryDirectory()
        let path = dir + "/nan.h5"
        do {
            let file = try HDF5File(creating: path)
            let dataset = try HDF5Dataset(creating: "acts", in: file, type: .float32, rowShape: [8], chunkRows: 16)
            var values = (0..<(64 * 8)).map { Float($0 % 7) - 3 }
            values[100] = .nan
            try values.withUnsafeBytes { try dataset.append($0.baseAddress!, rows: 64, type: .float32) }
        }
        var s = settings(steps: 5, dataset: "acts", store: path)
        s.batchSize = 64
        #expect(throws: InterpError.self) { try SAETrainer(settings: s).train(output: dir + "/out", resume: false) }
        #expect(!FileManager.default.fileExists(atPath: dir + "/out/sae_weights.safetensors"))
    }

    @Test func refusals() throws {
        let dir = try Fixtures.temporaryDirectory() + "/sae"
        _ = try SAETrainer(settings: settings(steps: 20)).train(output: dir, resume: false)
        #expect(throws: InterpError("already holds an SAE or a checkpoint; use --resume to continue, or another directory", file: dir)) {
            try SAETrainer(settings: settings(steps: 20)).train(output: dir, resume: false)
        }
        #expect(throws: InterpError("training is already complete; nothing to resume", file: dir)) {
            try SAETrainer(settings: settings(steps: 20)).train(output: dir, resume: true)
        }
        #expect(throws: InterpError("unknown architecture 'gated' (standard, topk, batchtopk, jumprelu)")) { try SAETrainer(settings: settings("gated")) }
        var big = settings()
        big.batchSize = 1000
        #expect(throws: InterpError.self) { try SAETrainer(settings: big) }
        #expect(throws: InterpError.self) { try SAETrainer(settings: settings(dataset: "ints")) }
    }
}

/// The Swift example of notebooks-md/03-sae-training.md, on a store made as notebook 02 makes it.
@Suite struct SAENotebookExampleTests {
    @Test func notebookExample() throws {
        let dir = try Fixtures.temporaryDirectory()
        let store = dir + "/acts.h5"
        let job = try ActivationCacheJob.prepare(modelDirectory: Fixtures.model("text-tiny"),
                                                 input: .textFile(path: Fixtures.root + "/tokenizer/corpus.txt", contextLength: 64),
                                                 hookPatterns: ["blocks.0.hook_resid_post"], output: store, maxTokens: 20000, excludeBOS: true)
        _ = try job.run(mode: .create)
        let settings = SAETrainingSettings(architecture: "topk", dSAE: 256, k: 8, learningRate: 1e-3, batchSize: 1024,
                                           steps: 300, activations: store, dataset: "blocks.0.hook_resid_post")
        let summary = try SAETrainer(settings: settings).train(output: dir + "/sae-topk-swift", resume: false)
        #expect(summary.finalL0 == 8 && summary.finalExplainedVariance > 0.6)
        let sae = try SparseAutoencoder.load(directory: dir + "/sae-topk-swift")
        let latents = try sae.encode(try ActivationReader(path: store, dataset: "blocks.0.hook_resid_post").read(rows: 0..<16))
        #expect(latents.shape == [16, 256])
        #expect(sae.config.metadata?.contextSize == 64 && sae.config.metadata?.prependBOS == true)
    }
}

/// `interp sae eval` metrics against the same metrics computed from real SAELens's outputs (fixtures/make_sae.py).
@Suite struct EvaluationTests {
    @Test(arguments: ["standard", "topk", "batchtopk", "jumprelu"])
    func metricsMatchSAELensOutputs(name: String) throws {
        let all = try JSONDecoder().decode([String: AnyMetrics].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/sae/interp-written-check.json")))
        guard case .metrics(let expected) = all[name + "_eval"] else { Issue.record("no reference metrics"); return }
        let sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/interp-\(name)")
        let reader = try ActivationReader(path: Fixtures.root + "/store/h5py-written.h5", dataset: "activations")
        let result = try SAEEvaluation.evaluate(sae, reader: reader, batchSize: 64)
        #expect(result.rows == expected.rows)
        #expect(Swift.abs(result.mse - expected.mse) <= 1e-4 * expected.mse, "mse \(result.mse) vs \(expected.mse)")
        #expect(Swift.abs(result.explainedVariance - expected.explained_variance) <= 1e-4)
        #expect(Swift.abs(result.l0 - expected.l0) <= 1e-6 * max(expected.l0, 1))
        #expect(Swift.abs(result.l1 - expected.l1) <= 1e-4 * expected.l1)
        #expect(result.deadLatents == expected.dead_latents)
        #expect(result.densityHistogram.reduce(0) { $0 + $1.count } + result.deadLatents == 64)
    }

    @Test func mismatchedWidthIsAnError() throws {
        let sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/interp-topk")
        let reader = try ActivationReader(path: Fixtures.root + "/store/h5py-written.h5", dataset: "acts_f16")
        #expect(throws: InterpError("the SAE's d_in (24) does not match dataset 'acts_f16' (rows of 8)", file: Fixtures.root + "/store/h5py-written.h5")) {
            try SAEEvaluation.evaluate(sae, reader: reader)
        }
    }
}

/// The check file mixes records with and without metrics; decode only the metric ones.
enum AnyMetrics: Decodable {
    struct Values: Decodable { let rows: Int; let mse: Double; let explained_variance: Double; let l0: Double; let l1: Double; let dead_latents: Int }
    case metrics(Values)
    case other

    init(from decoder: Decoder) throws {
        if let values = try? Values(from: decoder) { self = .metrics(values) } else { self = .other }
    }
}

/// CE recovered against TransformerLens running SAELens's forward at the hook (fixtures/make_sae.py).
@Suite struct CrossEntropyRecoveredTests {
    struct Reference: Decodable { let hook: String; let clean: Double; let spliced: Double; let zero: Double; let recovered: Double }

    @Test func matchesTransformerLensWithSAELens() throws {
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/sae/ce-recovered.json")))
        let sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/interp-gpt2-resid0")
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        let sequences = try Fixtures.tokens("gpt2").map { $0.map(Int32.init) }
        let ce = try CrossEntropyRecovered.measure(sae, model: model, hook: try HookName(parsing: reference.hook), sequences: sequences, batchSize: 2)
        #expect(Swift.abs(ce.clean - reference.clean) < 1e-4, "clean \(ce.clean) vs \(reference.clean)")
        #expect(Swift.abs(ce.spliced - reference.spliced) < 1e-4, "spliced \(ce.spliced) vs \(reference.spliced)")
        #expect(Swift.abs(ce.zeroAblation - reference.zero) < 1e-4, "zero \(ce.zeroAblation) vs \(reference.zero)")
        #expect(Swift.abs(ce.recovered - reference.recovered) < 1e-3)
        #expect(ce.tokens == 3 * 11)
    }

    /// A store's sequences come back as they went in, BOS rows restored when they were excluded.
    @Test func storeSequencesRebuildTheInput() throws {
        let dir = try Fixtures.temporaryDirectory()
        let job = try ActivationCacheJob.prepare(modelDirectory: Fixtures.model("text-tiny"),
                                                 input: .textFile(path: Fixtures.root + "/store/documents.txt", contextLength: 16),
                                                 hookPatterns: ["hook_embed"], output: dir + "/s.h5", batchSize: 4, excludeBOS: true)
        _ = try job.run(mode: .create)
        #expect(try StoreSequences.read(path: dir + "/s.h5") == job.sequences)
        #expect(try StoreSequences.read(path: dir + "/s.h5", limit: 3) == Array(job.sequences.prefix(3)))
        #expect(throws: InterpError.self) { try StoreSequences.read(path: Fixtures.root + "/store/h5py-written.h5") }
    }
}

@Suite struct NormalizationTests {
    /// Folding s into the weights gives an SAE on raw inputs equal to the one trained on scaled inputs:
    /// reconstruct(x) = reconstruct_s(x·s) / s; encode(x) = encode_s(x·s) for standard, and encode_s(x·s) / s for TopK
    /// (its activations are multiplied by the decoder norms, which the fold divides by s), as in SAELens.
    @Test(arguments: ["standard", "topk"])
    func foldedScalingIsTheSameSAE(architecture: String) throws {
        var rng = SeededRandom(seed: 31)
        let (D, S) = (6, 15)
        let p = SAEParameters(wEnc: rng.normalTensor([D, S], std: 0.5), bEnc: rng.normalTensor([S], std: 0.2),
                              wDec: rng.normalTensor([S, D], std: 0.5), bDec: rng.normalTensor([D], std: 0.2))
        let x = rng.normalTensor([9, D], std: 3)
        let s: Float = 0.37
        var folded = p
        SAETrainer.foldScaling(&folded, by: s)
        let scaledX = Tensor(shape: x.shape, scalars: x.scalars.map { $0 * s })
        let options = TopKSAE.Options(k: 4)
        func run(_ q: SAEParameters, _ input: Tensor) -> (Tensor, Tensor) {
            if architecture == "topk" {
                let r = TopKSAE.lossAndGradients(q, x: input, options: options, deadMask: nil)
                return (r.featureActs, r.reconstruction)
            }
            let r = StandardSAE.lossAndGradients(q, x: input, l1Coefficient: 0)
            return (r.featureActs, r.reconstruction)
        }
        let (zFolded, xhatFolded) = run(folded, x)
        let (zScaled, xhatScaled) = run(p, scaledX)
        let zExpected = architecture == "topk" ? zScaled.scalars.map { $0 / s } : zScaled.scalars
        #expect(compare(zFolded.scalars, zExpected, atol: 1e-5, rtol: 1e-5).passed)
        #expect(compare(xhatFolded.scalars, xhatScaled.scalars.map { $0 / s }, atol: 1e-5, rtol: 1e-5).passed)
    }

    /// BatchTopK's threshold lives in scaled units and must be divided by the scale too (SAELens #763): without that
    /// the saved JumpReLU would keep far fewer or far more latents than k on raw activations.
    @Test(arguments: ["topk", "batchtopk"])
    func trainingWithNormalisationWritesAnUnscaledSAE(architecture: String) throws {
        let dir = try Fixtures.temporaryDirectory() + "/sae"
        let reader = try ActivationReader(path: TrainerTests.store, dataset: "activations")
        var settings = SAETrainingSettings(architecture: architecture, dSAE: 64, k: 4, learningRate: 4e-3, batchSize: 32, steps: 200,
                                           activations: TrainerTests.store, dataset: "activations", normalize: "expected-average")
        let trainer = try SAETrainer(settings: settings)
        let factor = try #require(try trainer.scalingFactor())
        #expect(Swift.abs(Double(factor) - (24.0).squareRoot() / (try reader.statistics()).meanNorm) < 1e-6)
        let summary = try trainer.train(output: dir, resume: false)
        // The saved SAE takes raw activations: its explained variance on them is what training saw on scaled ones.
        let eval = try SAEEvaluation.evaluate(try SparseAutoencoder.load(directory: dir), reader: reader)
        #expect(eval.explainedVariance > 0.5 && Swift.abs(eval.explainedVariance - Double(summary.finalExplainedVariance)) < 0.1)
        // The same activations ×10: training sees the same scaled inputs, so the folded SAE must behave the same on
        // them (BatchTopK: the threshold divided by the scale, else it keeps ~10× too few latents).
        let big = try Fixtures.temporaryDirectory() + "/big.h5"
        do {
            let file = try HDF5File(creating: big)
            let dataset = try HDF5Dataset(creating: "activations", in: file, type: .float32, rowShape: [24], chunkRows: 32)
            let values = try reader.read(rows: 0..<reader.rows).scalars.map { $0 * 10 }
            try values.withUnsafeBytes { try dataset.append($0.baseAddress!, rows: reader.rows, type: .float32) }
        }
        var bigSettings = settings
        bigSettings.activations = big
        _ = try SAETrainer(settings: bigSettings).train(output: dir + "-big", resume: false)
        let bigEval = try SAEEvaluation.evaluate(try SparseAutoencoder.load(directory: dir + "-big"),
                                                 reader: try ActivationReader(path: big, dataset: "activations"))
        #expect(Swift.abs(bigEval.l0 - eval.l0) < 0.3, "L0 \(bigEval.l0) on ×10 activations vs \(eval.l0)")
        #expect(Swift.abs(bigEval.explainedVariance - eval.explainedVariance) < 0.02)
        let cfg = try String(contentsOfFile: dir + "/cfg.json", encoding: .utf8)
        #expect(cfg.contains("\"normalize_activations\":\"none\"") && cfg.contains("\"normalize\":\"expected-average\""))
        settings.normalize = "layer"
        #expect(throws: InterpError.self) { try SAETrainer(settings: settings) }
    }
}
