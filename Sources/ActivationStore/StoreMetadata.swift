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

    /// The attributes, by name, in the order they are written: one table for the reader and the writer.
    private enum Field {
        case string(WritableKeyPath<StoreMetadata, String?>)
        case integer(WritableKeyPath<StoreMetadata, Int?>)
        /// 0 or 1.
        case flag(WritableKeyPath<StoreMetadata, Bool?>)
        /// A JSON list of strings.
        case strings(WritableKeyPath<StoreMetadata, [String]?>)
    }

    private static let fields: [(name: String, field: Field)] = [
        ("format", .string(\.format)), ("format_version", .integer(\.formatVersion)), ("interp_version", .string(\.interpVersion)),
        ("model_name", .string(\.modelName)), ("model_format", .string(\.modelFormat)), ("model_weights_hash", .string(\.modelWeightsHash)),
        ("hook_names", .strings(\.hookNames)), ("source", .string(\.source)), ("context_length", .integer(\.contextLength)),
        ("prepend_bos", .flag(\.prependBOS)), ("exclude_bos", .flag(\.excludeBOS)), ("bos_token_id", .integer(\.bosTokenID)),
        ("n_tokens", .integer(\.tokens)), ("n_sequences", .integer(\.sequences)), ("complete", .flag(\.complete)),
    ]

    public static func read(from file: HDF5File) throws -> StoreMetadata {
        func integer(_ name: String) throws -> Int? {
            guard let value = try file.integerAttribute(name) else { return nil }
            guard let int = Int(exactly: value) else { throw InterpError("attribute '\(name)' is out of range", file: file.path) }
            return int
        }
        var m = StoreMetadata()
        for (name, field) in fields {
            switch field {
            case .string(let key): m[keyPath: key] = try file.stringAttribute(name)
            case .integer(let key): m[keyPath: key] = try integer(name)
            case .flag(let key):
                guard let value = try integer(name) else { continue }
                guard value == 0 || value == 1 else { throw InterpError("attribute '\(name)' is \(value), not 0 or 1", file: file.path) }
                m[keyPath: key] = value == 1
            case .strings(let key):
                guard let text = try file.stringAttribute(name) else { continue }
                guard let list = try? JSONDecoder().decode([String].self, from: Data(text.utf8)) else {
                    throw InterpError("attribute '\(name)' is not a JSON list of strings", file: file.path)
                }
                m[keyPath: key] = list
            }
        }
        return m
    }

    /// Writes every attribute that is set. `complete` comes last in the table and is written after a flush, so a
    /// reader never sees it on a partial store.
    public func write(to file: HDF5File) throws {
        for (name, field) in Self.fields {
            if name == "complete" { try file.flush() }
            switch field {
            case .string(let key): if let value = self[keyPath: key] { try file.setAttribute(name, string: value) }
            case .integer(let key): if let value = self[keyPath: key] { try file.setAttribute(name, integer: Int64(value)) }
            case .flag(let key): if let value = self[keyPath: key] { try file.setAttribute(name, integer: value ? 1 : 0) }
            case .strings(let key):
                if let value = self[keyPath: key] { try file.setAttribute(name, string: "[" + value.map(JSONText.quote).joined(separator: ",") + "]") }
            }
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
