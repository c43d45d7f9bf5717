import ActivationStore
import Foundation
import SafeTensors
import Interp
import InterpTestSupport
import Testing

/// The built `interp` binary, run as a user runs it: exit codes, stdout, the one stderr line, files written.
@Suite struct CLITests {
    func interp(_ arguments: String...) throws -> CommandResult { try InterpBinary.run(arguments) }

    /// A failed command prints exactly one line, `error: <file>: <problem>`, and exits 1.
    func expectOneLineError(_ result: CommandResult, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == 1, sourceLocation: sourceLocation)
        #expect(result.stderr == "error: \(expected)\n", sourceLocation: sourceLocation)
        #expect(result.stdout.isEmpty, sourceLocation: sourceLocation)
    }

    @Test func infoListsArchitectureAndHooks() throws {
        let result = try interp("info", "--model", "fixtures/models/attn-only")
        #expect(result.status == 0 && result.stderr.isEmpty)
        #expect(result.stdout.contains("layers       2, attention only"))
        #expect(result.stdout.contains("hook points (28):"))
        let patternLine = result.stdout.split(separator: "\n").first { $0.contains("blocks.1.attn.hook_pattern") }
        #expect(patternLine?.hasSuffix("[batch, n_heads, q_pos, k_pos]") == true)
        #expect(!result.stdout.contains("mlp"))
    }

    /// The JSON parameter count equals the number of parameter scalars actually in the weights file.
    @Test func infoJSON() throws {
        let result = try interp("info", "--model", "fixtures/models/gpt2-hf", "--json")
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(object["format"] as? String == "huggingface-gpt2")
        #expect((object["hooks"] as! [Any]).count == 40)
        let weights = try SafeTensorsFile(path: Fixtures.model("gpt2-hf") + "/model.safetensors")
        let stored = weights.entries.values.reduce(0) { $0 + $1.elementCount }
        // HF stores no unembedding (tied to wte) and no unembedding bias; TL counts both.
        let config = object["config"] as! [String: Any]
        let vocab = config["d_vocab"] as! Int, dModel = config["d_model"] as! Int
        #expect(object["parameter_count"] as? Int == stored + vocab * dModel + vocab)
    }

    @Test func runPrintsTopTokens() throws {
        let result = try interp("run", "--model", "fixtures/models/gpt2-tl", "--tokens", "fixtures/reference/gpt2.tokens.json", "--top", "3")
        #expect(result.status == 0)
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count == 3)
        // The printed winner is the argmax of TransformerLens's logits at the last position.
        let reference = try SafeTensorsFile(path: Fixtures.reference("gpt2.safetensors")).tensor("logits")
        let V = reference.shape[2], P = reference.shape[1]
        for b in 0..<3 {
            let row = reference.scalars[((b * P + P - 1) * V)..<((b * P + P) * V)]
            let best = row.indices.max { row[$0] < row[$1] }! - (b * P + P - 1) * V
            #expect(lines[b].hasPrefix("prompt \(b): next-token top 3: \(best) ("))
        }
    }

    @Test func runWritesLogitsAndCachedHooks() throws {
        let out = try Fixtures.temporaryDirectory() + "/acts.safetensors"
        let result = try interp("run", "--model", "fixtures/models/noln-relu-bidir", "--tokens",
                                "fixtures/reference/noln-relu-bidir.tokens.json",
                                "--cache", "blocks.*.hook_resid_post, blocks.0.attn.hook_pattern", "--out", out)
        #expect(result.status == 0, "\(result.stderr)")
        let file = try SafeTensorsFile(path: out)
        #expect(Set(file.names) == ["logits", "tokens", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern"])
        let reference = try SafeTensorsFile(path: Fixtures.reference("noln-relu-bidir.safetensors"))
        for name in file.names where name != "tokens" {
            let check = compare(try file.tensor(name), try reference.tensor(name), atol: 1e-4)
            #expect(check.passed, "\(name): \(check)")
        }
        #expect(try file.integers("tokens").values.map(Int.init) == Fixtures.tokens("noln-relu-bidir").flatMap { $0 })
        #expect(file.metadata["model_name"] == "fixture-noln-relu-bidir")
    }

    @Test func badModelDirectory() throws {
        expectOneLineError(try interp("info", "--model", "no/such/model"), "no/such/model: no such model directory")
        let dir = try Fixtures.temporaryDirectory()
        try FileManager.default.copyItem(atPath: Fixtures.model("attn-only"), toPath: dir + "/m")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/m/model.safetensors"))
        expectOneLineError(try interp("info", "--model", dir + "/m"),
                           "\(dir)/m/model.safetensors: not a safetensors file: 3 bytes, shorter than the 8-byte header length")
    }

    @Test func badTokenFiles() throws {
        let dir = try Fixtures.temporaryDirectory()
        let cases: [(String, String)] = [
            ("[[1, 2], [3]]", "sequences have different lengths (sequence 0 has 2 tokens, sequence 1 has 1); a batch must be rectangular"),
            ("[[1, 50]]", "token id 50 at sequence 0, position 1 is outside the vocabulary (0..<50)"),
            ("[[" + Array(repeating: "1", count: 17).joined(separator: ",") + "]]", "sequences have 17 tokens, more than the model's context of 16"),
            ("[[1, 2.5]]", "not a JSON list of lists of token ids"),
            ("{\"tokens\": []}", "not a JSON list of lists of token ids"),
            ("[]", "no sequences: the batch is empty"),
        ]
        for (index, (content, message)) in cases.enumerated() {
            let path = dir + "/t\(index).json"
            try Data(content.utf8).write(to: URL(fileURLWithPath: path))
            expectOneLineError(try interp("run", "--model", "fixtures/models/attn-only", "--tokens", path), "\(path): \(message)")
        }
        expectOneLineError(try interp("run", "--model", "fixtures/models/attn-only", "--tokens", dir + "/none.json"),
                           "\(dir)/none.json: cannot read file")
    }

    @Test func badCachePatternWritesNothing() throws {
        let out = try Fixtures.temporaryDirectory() + "/x.safetensors"
        expectOneLineError(try interp("run", "--model", "fixtures/models/attn-only", "--tokens", "fixtures/reference/attn-only.tokens.json",
                                      "--cache", "blocks.*.mlp.hook_post", "--out", out),
                           "hook pattern 'blocks.*.mlp.hook_post' matches no hook point of this model (see `interp info`)")
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func unwritableOutputLeavesNoFile() throws {
        let dir = try Fixtures.temporaryDirectory()
        let out = dir + "/missing/x.safetensors"
        let result = try interp("run", "--model", "fixtures/models/attn-only", "--tokens", "fixtures/reference/attn-only.tokens.json", "--out", out)
        expectOneLineError(result, "\(out): cannot create (No such file or directory)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test func usageErrorsAreOneLine() throws {
        let result = try interp("run", "--model", "fixtures/models/attn-only", "--tokens", "t.json", "--cache", "hook_embed")
        #expect(result.status == 64)
        #expect(result.stderr == "error: --cache needs --out to write the activations to (see --help)\n")
        let missing = try interp("run", "--tokens", "t.json")
        #expect(missing.status == 64)
        #expect(missing.stderr == "error: Missing expected argument '--model <dir>' (see --help)\n")
        let unknown = try interp("frobnicate")
        #expect(unknown.status == 64 && unknown.stderr.split(separator: "\n").count == 1)
    }

    @Test func tokenizeMatchesHuggingFace() throws {
        let dir = try Fixtures.temporaryDirectory()
        let corpus = try String(contentsOfFile: Fixtures.root + "/tokenizer/corpus.txt", encoding: .utf8)
        let lines = Array(corpus.components(separatedBy: "\n").prefix(200))
        try Data(lines.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: dir + "/in.txt"))
        let result = try interp("tokenize", "--tokenizer", "fixtures/tokenizer/gpt2", "--text-file", dir + "/in.txt", "--json")
        #expect(result.status == 0, "\(result.stderr)")
        let expected = try JSONDecoder().decode([[String]].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/tokenizer/gpt2-tokens-first200.json")))
        struct Line: Decodable { let ids: [Int]; let tokens: [String] }
        let got = try result.stdout.split(separator: "\n").map { try JSONDecoder().decode(Line.self, from: Data($0.utf8)) }
        #expect(got.count == 200)
        #expect(got.map(\.tokens) == expected)
    }

    @Test func tokenizeText() throws {
        let result = try interp("tokenize", "--model", "fixtures/models/text-tiny", "--text", "the\tcat", "--text", "", "--prepend-bos")
        #expect(result.status == 0)
        let tokenizer = try #require(try BPETokenizer.load(modelDirectory: Fixtures.model("text-tiny")))
        let ids = [0] + tokenizer.encode("the\tcat")
        let pieces = try ids.map { try tokenizer.quotedPiece($0) }
        #expect(pieces.contains("\"\\t\""), "a tab shows as \\t")
        #expect(result.stdout == "ids:    " + ids.map(String.init).joined(separator: " ") + "\ntokens: " + pieces.joined(separator: " ")
                + "\nids:    0\ntokens: \"<|endoftext|>\"\n")
        expectOneLineError(try interp("tokenize", "--model", "fixtures/models/attn-only", "--text", "x"),
                           "fixtures/models/attn-only: no tokenizer.json (or vocab.json and merges.txt) in the model directory")
    }

    @Test func runWithTextMatchesTransformerLens() throws {
        let out = try Fixtures.temporaryDirectory() + "/t.safetensors"
        let prompt = "The induction head copies the token aft"
        let result = try interp("run", "--model", "fixtures/models/text-tiny", "--text", prompt, "--out", out)
        #expect(result.status == 0, "\(result.stderr)")
        let reference = try SafeTensorsFile(path: Fixtures.reference("text-tiny.safetensors"))
        let file = try SafeTensorsFile(path: out)
        #expect(try file.integers("tokens").values == reference.integers("bos_1_tokens").values)
        #expect(compare(try file.tensor("logits"), try reference.tensor("bos_1_logits"), atol: 1e-4).passed)
        let printed = try interp("run", "--model", "fixtures/models/text-tiny", "--text", prompt, "--no-prepend-bos", "--top", "1")
        #expect(printed.stdout.hasPrefix("prompt 0: 23 tokens: \"T\" \"he\" \" in\""))
        #expect(printed.stdout.split(separator: "\n").count == 2)
    }

    @Test func textInputErrors() throws {
        expectOneLineError(try interp("run", "--model", "fixtures/models/attn-only", "--text", "hello"),
                           "fixtures/models/attn-only: the model has no tokenizer.json, so it takes token ids only (--tokens)")
        let ragged = try interp("run", "--model", "fixtures/models/text-tiny", "--text", "ab", "--text", "abcdefg")
        #expect(ragged.status == 1 && ragged.stderr.hasPrefix("error: prompts tokenize to different lengths ("))
        #expect(ragged.stderr.split(separator: "\n").count == 1)
        let both = try interp("run", "--model", "fixtures/models/text-tiny", "--text", "a", "--tokens", "t.json")
        #expect(both.status == 64 && both.stderr.contains("give the prompts one way"))
        let bos = try interp("run", "--model", "fixtures/models/text-tiny", "--tokens", "t.json", "--prepend-bos")
        #expect(bos.status == 64 && bos.stderr.contains("--prepend-bos applies to text prompts"))
        let dir = try Fixtures.temporaryDirectory()
        try Data([0x61, 0xFF, 0x0A]).write(to: URL(fileURLWithPath: dir + "/bad.txt"))
        expectOneLineError(try interp("run", "--model", "fixtures/models/text-tiny", "--text-file", dir + "/bad.txt"),
                           "\(dir)/bad.txt: not valid UTF-8 text")
    }

    /// SIGKILL in the middle of `interp cache`, then `--resume`: the same store as an uninterrupted run, bit for bit.
    @Test func killedCacheResumesToTheSameStore() throws {
        let dir = try Fixtures.temporaryDirectory()
        var rng = SeededRandom(seed: 9)
        let sequences = (0..<1500).map { _ in (0..<24).map { _ in Int(rng.next() % 101) } }
        let tokens = dir + "/tokens.json"
        try JSONEncoder().encode(sequences).write(to: URL(fileURLWithPath: tokens))
        let common = ["cache", "--model", "fixtures/models/gpt2-tl", "--tokens", tokens,
                      "--hooks", "blocks.0.hook_resid_post,blocks.1.attn.hook_z", "--batch-size", "2"]
        let full = try InterpBinary.run(common + ["--out", dir + "/full.h5"])
        #expect(full.status == 0, "\(full.stderr)")

        let killed = dir + "/killed.h5"
        struct Progress: Decodable { let rows: Int }
        var committed = 0
        let wasRunning = try InterpBinary.runAndKill(common + ["--out", killed]) {
            guard let data = FileManager.default.contents(atPath: killed + ".partial/progress.json"),
                  let progress = try? JSONDecoder().decode(Progress.self, from: data), progress.rows >= 2400 else { return false }
            committed = progress.rows
            return true
        }
        #expect(wasRunning, "the run ended before it could be killed")
        #expect(committed > 0 && committed < 36_000)
        #expect(!FileManager.default.fileExists(atPath: killed), "no output file until the store is complete")

        let again = try InterpBinary.run(common + ["--out", killed])
        #expect(again.status == 1 && again.stderr.contains("an interrupted run is here"))
        let changed = try InterpBinary.run(common.dropLast() + ["3", "--out", killed, "--resume"])
        #expect(changed.stderr == "error: \(killed): the interrupted run was made with different settings (batchSize differs); use --overwrite to start again\n")
        let resumed = try InterpBinary.run(common + ["--out", killed, "--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stdout.contains("36000 tokens from 1500 sequences (resumed at"))
        #expect(!FileManager.default.fileExists(atPath: killed + ".partial"))

        for name in ["blocks.0.hook_resid_post", "blocks.1.attn.hook_z"] {
            let a = try ActivationReader(path: dir + "/full.h5", dataset: name), b = try ActivationReader(path: killed, dataset: name)
            #expect(a.rows == 36_000 && b.rows == 36_000)
            #expect(try a.read(rows: 0..<a.rows).scalars.map(\.bitPattern) == (try b.read(rows: 0..<b.rows)).scalars.map(\.bitPattern), "\(name)")
        }
        for name in ["tokens", "sequence", "position"] {
            let a = try HDF5Dataset(opening: name, in: HDF5File(reading: dir + "/full.h5"))
            let b = try HDF5Dataset(opening: name, in: HDF5File(reading: killed))
            var x = [Int32](repeating: 0, count: 36_000), y = x
            try x.withUnsafeMutableBytes { try a.read(rows: 0..<36_000, into: $0.baseAddress!, type: .int32) }
            try y.withUnsafeMutableBytes { try b.read(rows: 0..<36_000, into: $0.baseAddress!, type: .int32) }
            #expect(x == y, "\(name)")
        }
    }

    /// SIGKILL in the middle of `interp sae train`, then `--resume`: the same weights, bit for bit, and the same log.
    @Test func killedTrainingResumesToTheSameWeights() throws {
        let dir = try Fixtures.temporaryDirectory()
        let common = ["sae", "train", "--activations", "fixtures/store/h5py-written.h5", "--dataset", "activations",
                      "--architecture", "topk", "--k", "4", "--d-sae", "64", "--batch-size", "32", "--steps", "4000",
                      "--lr", "4e-3", "--checkpoint-every", "25", "--dead-feature-window", "20"]
        let full = try InterpBinary.run(common + ["--out", dir + "/full"])
        #expect(full.status == 0, "\(full.stderr)")

        let killed = dir + "/killed"
        var sawCheckpoint = false
        let wasRunning = try InterpBinary.runAndKill(common + ["--out", killed]) {
            guard let file = try? SafeTensorsFile(path: killed + "/checkpoint.safetensors"), let step = Int(file.metadata["step"] ?? "") else { return false }
            sawCheckpoint = step >= 100
            return sawCheckpoint
        }
        #expect(sawCheckpoint && wasRunning, "the run ended before it could be killed")
        #expect(!FileManager.default.fileExists(atPath: killed + "/sae_weights.safetensors"))
        let changed = try InterpBinary.run(common.map { $0 == "4e-3" ? "5e-3" : $0 } + ["--out", killed, "--resume"])
        #expect(changed.status == 1 && changed.stderr.contains("the checkpoint was made with different settings (learningRate differs)"))
        let resumed = try InterpBinary.run(common + ["--out", killed, "--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stdout.contains("4000 steps (resumed at step"))
        for file in ["sae_weights.safetensors", "sparsity.safetensors", "cfg.json"] {
            #expect(FileManager.default.contents(atPath: dir + "/full/" + file) == FileManager.default.contents(atPath: killed + "/" + file), "\(file)")
        }
        // The logs agree but for the measured speed.
        func log(_ path: String) throws -> [String] {
            try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { $0.replacingOccurrences(of: #",\"tokens_per_second\":\d+"#, with: "", options: .regularExpression) }
        }
        #expect(try log(dir + "/full/train_log.jsonl") == log(killed + "/train_log.jsonl"))
    }

    /// BatchTopK and JumpReLU from the command line, with the dead-latent window given in tokens; the window in
    /// steps is recorded, and the saved SAE is a JumpReLU one.
    @Test func saeTrainBatchTopKAndJumpReLU() throws {
        let dir = try Fixtures.temporaryDirectory()
        for (name, extra) in [("batchtopk", ["--k", "3.5", "--dead-feature-tokens", "1000"]),
                              ("jumprelu", ["--l0-coefficient", "0.1", "--bandwidth", "0.1", "--initial-threshold", "0.02"])] {
            let result = try InterpBinary.run(["sae", "train", "--activations", "fixtures/store/h5py-written.h5", "--dataset", "activations",
                                               "--architecture", name, "--d-sae", "48", "--batch-size", "32", "--steps", "40",
                                               "--lr", "4e-3", "--out", dir + "/" + name] + extra)
            #expect(result.status == 0, "\(result.stderr)")
            let cfg = try String(contentsOfFile: dir + "/\(name)/cfg.json", encoding: .utf8)
            #expect(cfg.contains("\"architecture\":\"jumprelu\"") && cfg.contains("\"training_architecture\":\"\(name)\""))
            if name == "batchtopk" { #expect(cfg.contains("\"deadFeatureWindow\":32") && cfg.contains("\"k\":3.5")) }
        }
        let both = try interp("sae", "train", "--activations", "fixtures/store/h5py-written.h5", "--dataset", "activations",
                              "--d-sae", "8", "--steps", "1", "--dead-feature-window", "5", "--dead-feature-tokens", "9", "--out", dir + "/x")
        #expect(both.status == 64 && both.stderr.contains("--dead-feature-window or --dead-feature-tokens"))
        let noK = try interp("sae", "train", "--activations", "fixtures/store/h5py-written.h5", "--dataset", "activations",
                             "--architecture", "batchtopk", "--d-sae", "8", "--steps", "1", "--out", dir + "/y")
        #expect(noK.status == 64 && noK.stderr.contains("--architecture batchtopk needs --k"))
    }

    /// `interp patch` writes TransformerLens's table (here resid_pre by layer,pos, denoise, logit difference) as JSON,
    /// normalised on request, and a heatmap; bad requests are one-line errors.
    @Test func patchWritesTheTableAndHeatmap() throws {
        let dir = try Fixtures.temporaryDirectory()
        struct Prompts: Decodable { let clean: [[Int]]; let corrupted: [[Int]]; let answers: [Int]; let wrongs: [Int] }
        let prompts = try JSONDecoder().decode(Prompts.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/patching/induction-2l.json")))
        try JSONEncoder().encode(prompts.clean).write(to: URL(fileURLWithPath: dir + "/clean.json"))
        try JSONEncoder().encode(prompts.corrupted).write(to: URL(fileURLWithPath: dir + "/corrupted.json"))
        let common = ["patch", "--model", "fixtures/models/induction-2l", "--clean", dir + "/clean.json", "--corrupted", dir + "/corrupted.json",
                      "--answer", "\(prompts.answers[0])", "--answer", "\(prompts.answers[1])", "--wrong", "\(prompts.wrongs[0])",
                      "--wrong", "\(prompts.wrongs[1])"]
        let result = try InterpBinary.run(common + ["--site", "resid_pre", "--out", dir + "/r.json", "--svg", dir + "/r.svg"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/r.json"))) as! [String: Any]
        #expect(object["axes"] as? [String] == ["layer", "pos"] && object["shape"] as? [Int] == [2, 13] && object["site"] as? String == "resid_pre")
        let values = (object["values"] as! [[Double]]).flatMap { $0 }
        let reference = try SafeTensorsFile(path: Fixtures.root + "/patching/induction-2l.safetensors").tensor("denoise.resid_pre.layer,pos")
        #expect(zip(values, reference.scalars).allSatisfy { Swift.abs($0 - Double($1)) < 1e-4 })
        #expect(try String(contentsOfFile: dir + "/r.svg", encoding: .utf8).contains("<rect"))
        let normalised = try InterpBinary.run(common + ["--site", "resid_pre", "--normalize", "--out", dir + "/n.json"])
        let n = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/n.json"))) as! [String: Any]
        let nv = (n["values"] as! [[Double]]).flatMap { $0 }
        #expect(normalised.status == 0 && Swift.abs(nv[8] - 1) < 1e-5 && Swift.abs(nv[0]) < 1e-5)   // layer 0 pos 8 restores all; pos 0 nothing
        // Errors.
        try JSONEncoder().encode(prompts.corrupted.map { Array($0.dropLast()) }).write(to: URL(fileURLWithPath: dir + "/short.json"))
        let short = try InterpBinary.run(["patch", "--model", "fixtures/models/induction-2l", "--clean", dir + "/clean.json", "--corrupted", dir + "/short.json",
                                          "--answer", "1", "--wrong", "2", "--site", "resid_pre", "--out", dir + "/x.json"])
        #expect(short.status == 1 && short.stderr == "error: clean and corrupted prompts differ in shape: 2 × 13 tokens vs 2 × 12\n", "\(short.stderr)")
        let site = try InterpBinary.run(common + ["--site", "resid", "--out", dir + "/x.json"])
        #expect(site.status == 64 && site.stderr.contains("unknown site 'resid'"))
        let range = try InterpBinary.run(["patch", "--model", "fixtures/models/induction-2l", "--clean", dir + "/clean.json", "--corrupted", dir + "/corrupted.json",
                                          "--answer", "64", "--wrong", "2", "--site", "resid_pre", "--out", dir + "/x.json"])
        #expect(range.status == 1 && range.stderr == "error: --answer 64 is outside the vocabulary (0..<64)\n", "\(range.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/x.json"))
    }

    /// `interp circuits` writes CIRCUIT.json (every edge, counts, metrics), DOT and SVG of the kept graph, and a τ
    /// sweep; a bad task is a one-line error and writes nothing.
    @Test func circuitsWritesTheGraph() throws {
        let dir = try Fixtures.temporaryDirectory()
        struct Prompts: Decodable { let clean: [[Int]]; let corrupted: [[Int]]; let answers: [Int]; let wrongs: [Int] }
        let prompts = try JSONDecoder().decode(Prompts.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/patching/induction-2l.json")))
        var object: [String: Any] = ["clean": prompts.clean, "corrupted": prompts.corrupted, "answer": prompts.answers, "wrong": prompts.wrongs]
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: dir + "/task.json"))
        let result = try InterpBinary.run(["circuits", "--model", "fixtures/models/induction-2l", "--task", dir + "/task.json", "--metric", "kl",
                                           "--threshold", "0.01", "--out", dir + "/c.json", "--dot", dir + "/c.dot", "--svg", dir + "/c.svg"])
        #expect(result.status == 0, "\(result.stderr)")
        let circuit = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/c.json"))) as! [String: Any]
        let edges = circuit["edges"] as! [[String: Any]], counts = circuit["counts"] as! [String: Int]
        #expect(edges.count == 105 && counts["edges"] == 105 && counts["kept"] == edges.filter { $0["kept"] as! Bool }.count)
        #expect(edges.first.map { ($0["src"] as! String, $0["dst"] as! String, $0["type"] as! String) } ?? ("", "", "") == ("a1.3", "output", "addition"))
        // The full graph is the clean model: its KL against the clean run is rounding alone, about ε (see
        // GraphForwardTests.sameDistributionKL), on any kernel.
        #expect(Swift.abs(circuit["full_metric"] as! Double) < 1e-6 && (circuit["empty_metric"] as! Double) > (circuit["circuit_metric"] as! Double))
        #expect(try String(contentsOfFile: dir + "/c.dot", encoding: .utf8).hasPrefix("digraph circuit {"))
        #expect(try String(contentsOfFile: dir + "/c.svg", encoding: .utf8).contains("<svg"))
        // A sweep.
        let sweep = try InterpBinary.run(["circuits", "--model", "fixtures/models/induction-2l", "--task", dir + "/task.json", "--metric", "logit-diff",
                                          "--thresholds", "0.01,0.1,1", "--out", dir + "/s.json"])
        #expect(sweep.status == 0, "\(sweep.stderr)")
        let s = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/s.json"))) as! [String: Any]
        let kept = (s["sweep"] as! [[String: Any]]).map { $0["kept"] as! Int }
        #expect(kept.count == 3 && kept[0] >= kept[1] && kept[1] >= kept[2], "\(kept)")
        // Errors.
        object["corrupted"] = [[1, 2]]
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: dir + "/bad.json"))
        let bad = try InterpBinary.run(["circuits", "--model", "fixtures/models/induction-2l", "--task", dir + "/bad.json", "--threshold", "0.01",
                                        "--out", dir + "/x.json"])
        #expect(bad.status == 1 && bad.stderr == "error: \(dir)/bad.json: \"clean\" is 2 × 13 tokens but \"corrupted\" is 1 × 2\n", "\(bad.stderr)")
        let noThreshold = try InterpBinary.run(["circuits", "--model", "fixtures/models/induction-2l", "--task", dir + "/task.json", "--out", dir + "/x.json"])
        #expect(noThreshold.status == 64 && noThreshold.stderr.contains("give --threshold τ or --thresholds a,b,c"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/x.json"))
    }

    @Test func saeFeatureCount() throws {
        let dir = try Fixtures.temporaryDirectory()
        let common = ["sae", "feature-count", "--activations", "fixtures/store/h5py-written.h5", "--dataset", "activations"]
        let single = try InterpBinary.run(common + ["--sae", "fixtures/sae/interp-topk", "--json", "--svg", dir + "/f.svg"])
        #expect(single.status == 0, "\(single.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(single.stdout.utf8)) as! [String: Any]
        let f = object["effective_features"] as! Double, psi = object["superposition"] as! Double
        #expect(f > 1 && f <= 64 && Swift.abs(psi - f / 24) < 1e-9 && object["n_samples"] as? Int == 300 && object["n_latents"] as? Int == 64)
        #expect(Set((object["variants"] as! [String: Any]).keys) == ["decoder_weighted", "hill_0", "hill_2", "firing_frequency"])
        #expect((object["ci95"] as? [Double])?.count == 2)
        let svg = try String(contentsOfFile: dir + "/f.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("<polyline") && svg.contains("N = 24 neurons"))
        // Several SAEs: one row per layer, and the per-layer plot.
        let layers = try InterpBinary.run(common + ["--sae", "fixtures/sae/interp-topk", "--sae", "fixtures/sae/interp-standard", "--svg", dir + "/layers.svg"])
        #expect(layers.status == 0 && layers.stdout.split(separator: "\n").count == 3, "\(layers.stdout)\(layers.stderr)")
        #expect(try String(contentsOfFile: dir + "/layers.svg", encoding: .utf8).contains("Effective features per layer"))
        // Errors: one line each.
        let narrow = try InterpBinary.run(["sae", "feature-count", "--sae", "fixtures/sae/interp-topk", "--activations", "fixtures/store/h5py-written.h5", "--dataset", "acts_f16"])
        #expect(narrow.status == 1 && narrow.stderr == "error: fixtures/store/h5py-written.h5: the SAE's d_in (24) does not match dataset 'acts_f16' (rows of 8)\n")
        let counts = try InterpBinary.run(common + ["--sae", "fixtures/sae/interp-topk", "--activations", "b.h5", "--sae", "x", "--sae", "y"])
        #expect(counts.status == 64 && counts.stderr.contains("one --activations for all SAEs or one per --sae"))
    }

    @Test func saeEvalWithModelReportsCrossEntropy() throws {
        let dir = try Fixtures.temporaryDirectory()
        let cached = try interp("cache", "--model", "fixtures/models/gpt2-tl", "--tokens", "fixtures/reference/gpt2.tokens.json",
                                "--hooks", "blocks.0.hook_resid_post", "--out", dir + "/acts.h5")
        #expect(cached.status == 0)
        let result = try interp("sae", "eval", "--sae", "fixtures/sae/interp-gpt2-resid0", "--activations", dir + "/acts.h5",
                                "--dataset", "blocks.0.hook_resid_post", "--model", "fixtures/models/gpt2-tl", "--json")
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let ce = object["cross_entropy"] as! [String: Any]
        let reference = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/sae/ce-recovered.json"))) as! [String: Any]
        #expect(Swift.abs((ce["recovered"] as! Double) - (reference["recovered"] as! Double)) < 1e-3)
        #expect((object["reconstruction"] as! [String: Any])["rows"] as? Int == 36)
    }

    @Test func cacheErrors() throws {
        let dir = try Fixtures.temporaryDirectory()
        expectOneLineError(try interp("cache", "--model", "fixtures/models/gpt2-tl", "--tokens", "fixtures/reference/gpt2.tokens.json",
                                      "--hooks", "blocks.*.attn.hook_pattern", "--out", dir + "/x.h5"),
                           "hook 'blocks.0.attn.hook_pattern' has shape [batch, n_heads, q_pos, k_pos], not one row per token, so it cannot go in an activation store")
        expectOneLineError(try interp("cache", "--model", "fixtures/models/gpt2-tl", "--text-file", "fixtures/store/documents.txt",
                                      "--hooks", "hook_embed", "--out", dir + "/x.h5"),
                           "fixtures/models/gpt2-tl: the model has no tokenizer.json, so it takes token ids only (--tokens)")
        expectOneLineError(try interp("cache", "--model", "fixtures/models/text-tiny", "--text-file", "fixtures/store/documents.txt",
                                      "--hooks", "hook_embed", "--context-length", "65", "--out", dir + "/x.h5"),
                           "--context-length 65 is more than the model's context of 64")
        expectOneLineError(try interp("cache", "--model", "fixtures/models/gpt2-tl", "--tokens", "fixtures/reference/gpt2.tokens.json",
                                      "--hooks", "hook_embed", "--out", dir + "/x.h5", "--resume"),
                           "\(dir)/x.h5: there is no interrupted run to resume")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    /// `--help` text is part of the interface: changing it must be deliberate (update the snapshot).
    @Test(arguments: [["--help"], ["info", "--help"], ["run", "--help"], ["tokenize", "--help"], ["cache", "--help"], ["sae", "train", "--help"], ["sae", "eval", "--help"], ["sae", "feature-count", "--help"], ["toy-models", "--help"], ["patch", "--help"], ["circuits", "--help"], ["sae", "dashboard", "--help"], ["demo", "--help"]])
    func helpMatchesSnapshot(arguments: [String]) throws {
        let result = try InterpBinary.run(arguments, environment: ["COLUMNS": "100"])
        #expect(result.status == 0)
        let name = (["interp"] + arguments.dropLast()).joined(separator: "-") + ".txt"
        let path = Fixtures.repositoryRoot + "/Tests/CLITests/Snapshots/" + name
        if ProcessInfo.processInfo.environment["INTERP_UPDATE_SNAPSHOTS"] == "1" {
            try Data(result.stdout.utf8).write(to: URL(fileURLWithPath: path))
        }
        let snapshot = try String(contentsOfFile: path, encoding: .utf8)
        #expect(result.stdout == snapshot, "help for \(arguments) changed; rerun with INTERP_UPDATE_SNAPSHOTS=1 if intended")
    }
}
