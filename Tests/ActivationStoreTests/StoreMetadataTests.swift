import ActivationStore
import Foundation
import InterpCore
import InterpTestSupport
import Testing

/// The typed reader and writer of a store's root attributes.
@Suite struct StoreMetadataTests {
    /// What `interp cache` wrote reads back typed, field by field, and names the hook of each cached dataset.
    @Test func aCachedStoreReadsBackTyped() throws {
        let out = try Fixtures.temporaryDirectory() + "/store.h5"
        let hooks = ["blocks.1.hook_resid_post", "blocks.0.attn.hook_z"]
        let job = try ActivationCacheJob.prepare(modelDirectory: Fixtures.model("gpt2-tl"), input: .tokens(path: Fixtures.reference("gpt2.tokens.json")),
                                                 hookPatterns: hooks, output: out, batchSize: 2, maxTokens: nil)
        _ = try job.run(mode: .create)
        let m = try StoreMetadata.read(path: out)
        #expect(m == StoreMetadata(settings: job.settings, tokens: 36, sequences: 3).with { $0.complete = true })
        #expect(m.format == "interp-activations" && m.formatVersion == 1 && m.tokens == 36 && m.complete == true)
        #expect(m.hookNames == hooks.sorted() && m.source == "tokens" && m.contextLength == -1 && m.prependBOS == false)
        #expect(m.hookName(ofDataset: "blocks.0.attn.hook_z") == "blocks.0.attn.hook_z")
        #expect(m.hookName(ofDataset: "blocks.0.hook_resid_pre") == nil, "a hook this store did not cache")
        #expect(m.hookName(ofDataset: "tokens") == nil)
    }

    /// A store written by h5py has none of the attributes: every field is nil, and a dataset named as a hook names it.
    @Test func aForeignStoreHasNoMetadata() throws {
        let m = try StoreMetadata.read(path: Fixtures.root + "/store/h5py-written.h5")
        #expect(m == StoreMetadata())
        #expect(m.hookName(ofDataset: "activations") == nil)
        #expect(m.hookName(ofDataset: "blocks.3.hook_mlp_out") == "blocks.3.hook_mlp_out")
    }

    /// An attribute of the wrong type or value is an error naming the file and the attribute, not a silent nil.
    @Test func badAttributesAreOneLineErrors() throws {
        let dir = try Fixtures.temporaryDirectory()
        func store(_ name: String, _ write: (HDF5File) throws -> Void) throws -> String {
            let path = dir + "/\(name).h5"
            let file = try HDF5File(creating: path)
            try write(file)
            try file.flush()
            return path
        }
        let cases: [(String, (HDF5File) throws -> Void, String)] = [
            ("text-length", { try $0.setAttribute("context_length", string: "128") }, "attribute 'context_length' is not an integer"),
            ("numeric-model", { try $0.setAttribute("model_name", integer: 7) }, "attribute 'model_name' is not a string"),
            ("flag", { try $0.setAttribute("prepend_bos", integer: 2) }, "attribute 'prepend_bos' is 2, not 0 or 1"),
            ("hooks", { try $0.setAttribute("hook_names", string: "blocks.0.hook_resid_pre") }, "attribute 'hook_names' is not a JSON list of strings"),
        ]
        for (name, write, message) in cases {
            let path = try store(name, write)
            #expect(throws: InterpError.self) { try StoreMetadata.read(path: path) }
            do { _ = try StoreMetadata.read(path: path) } catch let error as InterpError {
                #expect(error.description == "\(path): \(message)", "\(error.description)")
            }
        }
    }
}

extension StoreMetadata {
    func with(_ change: (inout StoreMetadata) -> Void) -> StoreMetadata {
        var copy = self
        change(&copy)
        return copy
    }
}
