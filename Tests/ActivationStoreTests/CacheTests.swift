import ActivationStore
import Foundation
import InterpCore
import InterpModels
import InterpTestSupport
import SafeTensors
import Testing
import Tokenization

@Suite struct CacheTests {
    static let hooks = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.0.attn.hook_z", "blocks.1.mlp.hook_post", "blocks.0.ln1.hook_scale"]

    func cacheTokens(_ hooks: [String], batchSize: Int = 2, maxTokens: Int? = nil) throws -> String {
        let out = try Fixtures.temporaryDirectory() + "/store.h5"
        let job = try ActivationCacheJob.prepare(modelDirectory: Fixtures.model("gpt2-tl"), input: .tokens(path: Fixtures.reference("gpt2.tokens.json")),
                                                 hookPatterns: hooks, output: out, batchSize: batchSize, maxTokens: maxTokens)
        _ = try job.run(mode: .create)
        return out
    }

    /// Every hook in the store equals the forward pass's activation (and TransformerLens's), row by row.
    @Test func storeEqualsTheForwardPass() throws {
        let out = try cacheTokens(Self.hooks)
        #expect(!FileManager.default.fileExists(atPath: out + ".partial"))
        let model = try ModelLoader.load(directory: Fixtures.model("gpt2-tl"))
        let batch = try TokenBatch(Fixtures.tokens("gpt2"), config: model.config)
        let names = try Self.hooks.map { try HookName(parsing: $0) }
        let (_, cache) = try model.runWithCache(batch, names: names)
        let reference = try SafeTensorsFile(path: Fixtures.reference("gpt2.safetensors"))
        for name in names {
            let stored = try ActivationReader(path: out, dataset: name.description)
            #expect(stored.rows == 36)
            let values = try stored.read(rows: 0..<36)
            #expect(compare(values.scalars, cache[name]!.scalars, atol: 1e-5).passed, "\(name) vs forward")
            #expect(compare(values.scalars, try reference.tensor(name.description).scalars, atol: 1e-4).passed, "\(name) vs TL")
        }
        let file = try HDF5File(reading: out)
        #expect(try file.integerAttribute("complete") == 1)
        #expect(try file.integerAttribute("n_tokens") == 36)
        #expect(try file.stringAttribute("hook_names") == "[" + names.sorted().map { "\"\($0)\"" }.joined(separator: ",") + "]")
        let tokens = try HDF5Dataset(opening: "tokens", in: file)
        var ids = [Int32](repeating: 0, count: 36)
        try ids.withUnsafeMutableBytes { try tokens.read(rows: 0..<36, into: $0.baseAddress!, type: .int32) }
        #expect(ids.map(Int.init) == (try Fixtures.tokens("gpt2")).flatMap { $0 })
    }

    @Test func gzipCompressionKeepsValues() throws {
        let plain = try cacheTokens(["blocks.1.hook_resid_post"])
        let out = try Fixtures.temporaryDirectory() + "/gzip.h5"
        let job = try ActivationCacheJob.prepare(modelDirectory: Fixtures.model("gpt2-tl"), input: .tokens(path: Fixtures.reference("gpt2.tokens.json")),
                                                 hookPatterns: ["blocks.1.hook_resid_post"], output: out, batchSize: 2, gzipLevel: 4)
        _ = try job.run(mode: .create)
        let a = try ActivationReader(path: plain, dataset: "blocks.1.hook_resid_post")
        let b = try ActivationReader(path: out, dataset: "blocks.1.hook_resid_post")
        #expect(try !a.dataset.isFiltered() && b.dataset.isFiltered())
        #expect(try a.read(rows: 0..<36).scalars == (try b.read(rows: 0..<36)).scalars)
    }

    @Test func maxTokensStopsExactly() throws {
        let full = try cacheTokens(["blocks.1.hook_resid_post"])
        let cut = try cacheTokens(["blocks.1.hook_resid_post"], maxTokens: 17)
        let a = try ActivationReader(path: full, dataset: "blocks.1.hook_resid_post")
        let b = try ActivationReader(path: cut, dataset: "blocks.1.hook_resid_post")
        #expect(b.rows == 17)
        #expect(try b.read(rows: 0..<17).scalars == (try a.read(rows: 0..<17)).scalars)
    }

    /// The text path cuts windows exactly as SAELens's `concat_and_batch_sequences` (recorded by the fixture script).
    @Test func textWindowsMatchSAELens() throws {
        let tokenizer = try BPETokenizer.load(path: Fixtures.root + "/tokenizer/tiny/tokenizer.json")
        let documents = try TextLines.read(Fixtures.root + "/store/documents.txt").map { tokenizer.encode($0) }
        let reference = try JSONDecoder().decode([String: [[Int32]]].self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/store/saelens-windows.json")))
        for (context, windows) in reference {
            #expect(try ContextWindows.make(documents: documents, contextLength: Int(context)!, bos: 0) == windows, "context \(context)")
        }
        #expect(throws: InterpError.self) { try ContextWindows.make(documents: documents, contextLength: 1, bos: 0) }
    }

    @Test func textCacheWithoutBOSRows() throws {
        let out = try Fixtures.temporaryDirectory() + "/text.h5"
        let job = try ActivationCacheJob.prepare(modelDirectory: Fixtures.model("text-tiny"),
                                                 input: .textFile(path: Fixtures.root + "/store/documents.txt", contextLength: 16),
                                                 hookPatterns: ["blocks.0.hook_resid_post"], output: out, batchSize: 8, excludeBOS: true)
        _ = try job.run(mode: .create)
        let windows = job.sequences
        let reader = try ActivationReader(path: out, dataset: "blocks.0.hook_resid_post")
        let nonBOS = windows.joined().filter { $0 != 0 }.count
        #expect(reader.rows == nonBOS)
        let model = job.model
        let (_, cache) = try model.runWithCache(TokenBatch(windows.map { $0.map(Int.init) }, config: model.config), names: [.block(0, .residPost)])
        let all = cache[.block(0, .residPost)]!.scalars, width = model.config.dModel
        let keptRows = windows.joined().enumerated().filter { $0.element != 0 }.map(\.offset)
        let expected = keptRows.flatMap { all[($0 * width)..<(($0 + 1) * width)] }
        #expect(compare(try reader.read(rows: 0..<reader.rows).scalars, Array(expected), atol: 1e-5).passed)
        let file = try HDF5File(reading: out)
        #expect(try file.stringAttribute("source") == "text")
        #expect(try file.integerAttribute("context_length") == 16)
        #expect(try file.integerAttribute("exclude_bos") == 1)
    }

    @Test func refusals() throws {
        let out = try cacheTokens(["blocks.1.hook_resid_post"])
        let prepare = { (hooks: [String], dir: String, excludeBOS: Bool) in
            try ActivationCacheJob.prepare(modelDirectory: Fixtures.model(dir), input: .tokens(path: Fixtures.reference("gpt2.tokens.json")),
                                           hookPatterns: hooks, output: out, excludeBOS: excludeBOS)
        }
        let job = try prepare(["blocks.1.hook_resid_post"], "gpt2-tl", false)
        #expect(throws: InterpError("already exists; use --overwrite to replace it", file: out)) { try job.run(mode: .create) }
        #expect(throws: InterpError("already complete; there is nothing to resume", file: out)) { try job.run(mode: .resume) }
        #expect(throws: InterpError("hook 'blocks.0.attn.hook_pattern' has shape [batch, n_heads, q_pos, k_pos], not one row per token, so it cannot go in an activation store")) {
            try prepare(["blocks.0.attn.hook_pattern"], "gpt2-tl", false)
        }
        #expect(throws: InterpError("--exclude-bos needs the BOS token, and the model has no tokenizer to name it")) {
            try prepare(["blocks.1.hook_resid_post"], "gpt2-tl", true)
        }
        _ = try job.run(mode: .overwrite)
        #expect(try HDF5File(reading: out).integerAttribute("complete") == 1)
    }

    /// The committed h5py check of an interp store passed, and interp still writes that layout.
    @Test func h5pyCheckAndLayoutAreCurrent() throws {
        struct Check: Decodable {
            struct Dataset: Decodable, Equatable { let shape: [Int]; let dtype: String; let chunks: [Int] }
            let ok: Bool
            let datasets: [String: Dataset]
            let attributes: [String]
            let max_abs_diff_vs_transformer_lens: [String: Double]
        }
        let check = try JSONDecoder().decode(Check.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/store/h5py-check.json")))
        #expect(check.ok)
        #expect(check.max_abs_diff_vs_transformer_lens.values.allSatisfy { $0 <= 1e-4 })
        let out = try cacheTokens(["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.0.attn.hook_z", "blocks.1.mlp.hook_post"])
        let file = try HDF5File(reading: out)
        #expect(try file.datasetNames() == check.datasets.keys.sorted())
        for (name, recorded) in check.datasets {
            #expect(try HDF5Dataset(opening: name, in: file).shape == recorded.shape, "\(name)")
        }
        for attribute in check.attributes { #expect(file.hasAttribute(attribute), "\(attribute)") }
    }
}

/// The Swift example of notebooks-md/02-activation-store.md, as written there (on a store made the same way).
@Suite struct StoreNotebookExampleTests {
    @Test func notebookExample() throws {
        let dir = try Fixtures.temporaryDirectory()
        let job = try ActivationCacheJob.prepare(modelDirectory: Fixtures.model("text-tiny"),
                                                 input: .textFile(path: Fixtures.root + "/tokenizer/corpus.txt", contextLength: 64),
                                                 hookPatterns: ["blocks.0.hook_resid_post", "blocks.0.attn.hook_z"], output: dir + "/acts.h5",
                                                 maxTokens: 20000, excludeBOS: true)
        let summary = try job.run(mode: .create)
        #expect(summary.tokens == 20000 && summary.sequences == 336)

        let reader = try ActivationReader(path: dir + "/acts.h5", dataset: "blocks.0.hook_resid_post")
        let (mean, meanNorm, rows) = try reader.statistics()
        #expect(mean.count == 32 && meanNorm > 0 && rows == 20000)
        let batches = try BatchIterator(reader: reader, options: .init(batchSize: 4096, shuffle: true, seed: 0, epochs: 2))
        var seen = 0
        while let batch = try batches.next() {
            #expect(batch.values.shape[1] == 32 && batch.values.shape[0] <= 4096)
            seen += batch.rowIndices.count
        }
        #expect(seen == 40000)
    }
}
