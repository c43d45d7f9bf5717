import Foundation
import InterpTestSupport
import SafeTensors
import Testing
@testable import Interp

/// `Demo.run` end to end on the small text model (the bundled English model's demo is the README's first command,
/// run by CI): every stage's files, figures that agree with the stages run again on those files, and a report whose
/// links all resolve.
@Suite(.serialized) struct DemoTests {
    static let text = Fixtures.root + "/english/slice.txt"

    func settings(_ out: String) -> Demo.Settings {
        var settings = Demo.Settings(modelDirectory: Fixtures.model("text-tiny"), textFile: Self.text, output: out)
        settings.contextLength = 32
        settings.expansionFactor = 4
        settings.k = 4
        settings.saeSteps = 60
        settings.saeBatchSize = 128
        settings.inductionPrompts = 4
        settings.inductionLength = 8
        settings.threshold = 0.01
        return settings
    }

    @Test func everyStageWritesItsFilesAndTheReportLinksThem() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let out = directory + "/demo"
        var logged: [String] = []
        let report = try Demo.run(settings(out), log: { logged.append($0) })
        #expect(report.stages.count == 8)
        #expect(logged.count == 16)    // a start and an end line per stage

        // Figures equal the stages run again on the files the demo wrote.
        let sae = try SparseAutoencoder.load(directory: out + "/sae")
        let reader = try ActivationReader(path: out + "/activations.h5", dataset: "blocks.0.hook_resid_post")
        #expect(reader.rows == report.tokens)
        let evaluation = try SAEEvaluation.evaluate(sae, reader: reader)
        #expect(abs(evaluation.explainedVariance - report.explainedVariance) < 1e-9)
        #expect(evaluation.l0 == report.l0 && evaluation.deadLatents == report.deadLatents)
        let count = try FeatureCount.measure(sae, reader: reader)
        #expect(abs(count.effectiveFeatures - report.effectiveFeatures) < 1e-9)
        let circuit = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/circuit.json"))) as! [String: Any]
        #expect((circuit["edges"] as! [[String: Any]]).filter { $0["kept"] as! Bool }.count == report.circuitEdges)
        let patch = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/patch-heads.json"))) as! [String: Any]
        #expect(abs((patch["clean_metric"] as! Double) - report.patchCleanLogitDiff) < 1e-12)
        #expect(report.textLoss > 0 && report.ceClean > 0 && report.ceRecovered.isFinite)

        // Every local link and picture of index.html and the dashboard index exists.
        for page in ["index.html", "dashboard/index.html"] {
            let html = try String(contentsOfFile: out + "/" + page, encoding: .utf8)
            let base = (out + "/" + page as NSString).deletingLastPathComponent
            let targets = try NSRegularExpression(pattern: "(?:src|href)=\"([^\"#]+)\"").matches(in: html, range: NSRange(html.startIndex..., in: html))
                .map { String(html[Range($0.range(at: 1), in: html)!]) }
            #expect(targets.count >= (page == "index.html" ? 9 : 2))
            for target in targets { #expect(FileManager.default.fileExists(atPath: base + "/" + target), "\(page) links \(target)") }
        }
        let index = try String(contentsOfFile: out + "/index.html", encoding: .utf8)
        #expect(index.contains(String(format: "%.3f", report.explainedVariance)))
    }

    /// `interp demo` on a model it cannot use: one line naming the model directory, exit 1, no output directory.
    @Test func demoCommandRejectsAModelWithoutTokenizer() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try InterpBinary.run(["demo", "--model", "fixtures/models/gpt2-tl", "--text-file", Self.text, "--out", directory + "/demo"])
        #expect(result.status == 1)
        #expect(result.stderr == "error: fixtures/models/gpt2-tl: the model has no tokenizer.json; the demo reads text\n")
        #expect(!FileManager.default.fileExists(atPath: directory + "/demo"))
    }

    /// The demo's loss routine against TransformerLens: on each held-out prompt of the English model, the mean
    /// next-token loss equals minus the mean of TransformerLens's log-probabilities of the true next tokens.
    @Test func meanLossMatchesTransformerLens() throws {
        let directory = Fixtures.model("english-4l")
        let model = try ModelLoader.load(directory: directory)
        let reference = try SafeTensorsFile(path: Fixtures.reference("english.safetensors"))
        for i in 0..<3 {
            let tokens = try reference.integers("prompt\(i)_tokens").values.map { Int32($0) }
            let logprobs = try reference.tensor("prompt\(i)_next_logprobs").scalars.map(Double.init)
            let expected = -logprobs.reduce(0, +) / Double(logprobs.count)
            let loss = try Demo.meanLoss(model, [tokens], targets: 1..<tokens.count)
            #expect(abs(loss - expected) < 1e-4, "prompt \(i): \(loss) vs TransformerLens \(expected)")
            // Only the second half's targets.
            let half = tokens.count / 2
            let secondHalf = -logprobs[(half - 1)...].reduce(0, +) / Double(logprobs.count - half + 1)
            #expect(abs(try Demo.meanLoss(model, [tokens], targets: half..<tokens.count) - secondHalf) < 1e-4)
        }
    }

    /// The induction prompts: a run, then the run again without its last token, which is the answer.
    @Test func inductionPromptsRepeatARun() throws {
        let tokenizer = try BPETokenizer.load(modelDirectory: Fixtures.model("text-tiny"))!
        let config = try ModelLoader.load(directory: Fixtures.model("text-tiny")).config
        let prompts = try InductionPrompts(textFile: Self.text, tokenizer: tokenizer, count: 5, length: 8, config: config)
        #expect(prompts.clean.batch == 5 && prompts.clean.positions == 16)
        for (b, row) in prompts.clean.rows.enumerated() {
            let run = Array(row[1...8])
            #expect(row[0] == Int(tokenizer.bosTokenID!))
            #expect(Array(row[9...]) == Array(run.dropLast()))
            #expect(prompts.answers[b] == run[7] && run.filter { $0 == run[7] }.count == 1)
            #expect(!run.contains(prompts.wrongs[b]))
            let corrupted = prompts.corrupted.rows[b]
            #expect(corrupted[8] == prompts.wrongs[b] && Array(corrupted[..<8]) == Array(row[..<8]) && Array(corrupted[9...]) == Array(row[9...]))
            #expect(Array(prompts.acdcCorrupted.rows[b][9...]) == Array(row[9...]) && prompts.acdcCorrupted.rows[b][1...8] != row[1...8])
        }
    }

    @Test func dashboardCommandWritesPagesAndRejectsAModelWithoutTokenizer() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var quick = settings(directory + "/demo")
        quick.saeSteps = 20
        _ = try Demo.run(quick)
        let result = try InterpBinary.run(["sae", "dashboard", "--sae", directory + "/demo/sae", "--model", "fixtures/models/text-tiny",
                                           "--text-file", Self.text, "--context-length", "32", "--max-tokens", "640",
                                           "--latents", "0,1,2,3,4,5,6,7", "--out", directory + "/dash"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasPrefix("wrote \(directory)/dash/index.html and "))
        let pages = try FileManager.default.contentsOfDirectory(atPath: directory + "/dash").filter { $0.hasPrefix("feature-") }
        #expect(!pages.isEmpty && pages.count <= 8)

        let noTokenizer = try InterpBinary.run(["sae", "dashboard", "--sae", "fixtures/sae/interp-gpt2-resid0", "--model", "fixtures/models/gpt2-tl",
                                                "--text-file", Self.text, "--out", directory + "/nothing"])
        #expect(noTokenizer.status == 1)
        #expect(noTokenizer.stderr == "error: fixtures/models/gpt2-tl: the model has no tokenizer.json, which dashboards need to read the text and show tokens\n")
        #expect(!FileManager.default.fileExists(atPath: directory + "/nothing"))
    }
}
