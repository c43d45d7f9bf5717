import Foundation
import InterpCore
import InterpModels

/// The root attributes of an activation store (`StoreLayout`), typed: `interp cache` writes them all; a store written
/// elsewhere (h5py) may have any or none, and each absent one is nil. An attribute of the wrong type is an error naming
/// the file and the attribute, never silently dropped.
public struct StoreMetadata: Equatable, Sendable {
    public var format: String?
    public var formatVersion: Int?
    public var interpVersion: String?
    public var modelName: String?
    public var modelFormat: String?
    public var modelWeightsHash: String?
    /// The hooks cached, one dataset each, named by the hook.
    public var hookNames: [String]?
    /// "tokens" or "text".
    public var source: String?
    /// Tokens per window for text input; −1 for token input.
    public var contextLength: Int?
    public var prependBOS: Bool?
    public var excludeBOS: Bool?
    /// −1 if the model has none.
    public var bosTokenID: Int?
    public var tokens: Int?
    public var sequences: Int?
    /// Set last, once the store is whole.
    public var complete: Bool?

    public init() {}

    /// The metadata of a store `interp cache` writes with `settings`, holding `tokens` rows of `sequences` sequences.
    public init(settings s: CacheSettings, tokens: Int, sequences: Int) {
        format = StoreLayout.format
        formatVersion = Int(StoreLayout.formatVersion)
        interpVersion = InterpVersion.current
        modelName = s.modelName
        modelFormat = s.modelFormat
        modelWeightsHash = s.modelWeightsHash
        hookNames = s.hooks
        source = s.source
        contextLength = s.contextLength
        prependBOS = s.prependBOS
        excludeBOS = s.excludeBOS
        bosTokenID = Int(s.bosTokenID)
        self.tokens = tokens
        self.sequences = sequences
    }

    public static func read(path: String) throws -> StoreMetadata {
        try read(from: HDF5File(reading: path))
    }

    public static func read(from file: HDF5File) throws -> StoreMetadata {
        func integer(_ name: String) throws -> Int? {
            guard let value = try file.integerAttribute(name) else { return nil }
            guard let int = Int(exactly: value) else { throw InterpError("attribute '\(name)' is out of range", file: file.path) }
            return int
        }
        func flag(_ name: String) throws -> Bool? {
            guard let value = try integer(name) else { return nil }
            guard value == 0 || value == 1 else { throw InterpError("attribute '\(name)' is \(value), not 0 or 1", file: file.path) }
            return value == 1
        }
        var m = StoreMetadata()
        m.format = try file.stringAttribute("format")
        m.formatVersion = try integer("format_version")
        m.interpVersion = try file.stringAttribute("interp_version")
        m.modelName = try file.stringAttribute("model_name")
        m.modelFormat = try file.stringAttribute("model_format")
        m.modelWeightsHash = try file.stringAttribute("model_weights_hash")
        if let text = try file.stringAttribute("hook_names") {
            guard let names = (try? JSONDecoder().decode([String].self, from: Data(text.utf8))) else {
                throw InterpError("attribute 'hook_names' is not a JSON list of strings", file: file.path)
            }
            m.hookNames = names
        }
        m.source = try file.stringAttribute("source")
        m.contextLength = try integer("context_length")
        m.prependBOS = try flag("prepend_bos")
        m.excludeBOS = try flag("exclude_bos")
        m.bosTokenID = try integer("bos_token_id")
        m.tokens = try integer("n_tokens")
        m.sequences = try integer("n_sequences")
        m.complete = try flag("complete")
        return m
    }

    /// Writes every attribute that is set; `complete` last, after a flush, so a reader never sees it on a partial store.
    public func write(to file: HDF5File) throws {
        func string(_ name: String, _ value: String?) throws { if let value { try file.setAttribute(name, string: value) } }
        func integer(_ name: String, _ value: Int?) throws { if let value { try file.setAttribute(name, integer: Int64(value)) } }
        func flag(_ name: String, _ value: Bool?) throws { try integer(name, value.map { $0 ? 1 : 0 }) }
        try string("format", format)
        try integer("format_version", formatVersion)
        try string("interp_version", interpVersion)
        try string("model_name", modelName)
        try string("model_format", modelFormat)
        try string("model_weights_hash", modelWeightsHash)
        try string("hook_names", hookNames.map { "[" + $0.map(JSONText.quote).joined(separator: ",") + "]" })
        try string("source", source)
        try integer("context_length", contextLength)
        try flag("prepend_bos", prependBOS)
        try flag("exclude_bos", excludeBOS)
        try integer("bos_token_id", bosTokenID)
        try integer("n_tokens", tokens)
        try integer("n_sequences", sequences)
        if let complete {
            try file.flush()
            try flag("complete", complete)
        }
        try file.flush()
    }

    /// The TransformerLens hook a dataset holds: one of the store's `hook_names` (interp names each dataset by its
    /// hook), or for a store without them a dataset named as a hook; nil for any other name (`acts`).
    public func hookName(ofDataset dataset: String) -> String? {
        if let hookNames { return hookNames.contains(dataset) ? dataset : nil }
        return (try? HookName(parsing: dataset)) != nil ? dataset : nil
    }
}
