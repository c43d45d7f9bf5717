import Foundation
import InterpCore

/// Token-id input files: JSON, a list of lists of token ids.
public enum TokenFile {
    /// The sequences, as written (they may differ in length).
    public static func read(_ path: String) throws -> [[Int]] {
        guard let data = FileManager.default.contents(atPath: path) else { throw InterpError("cannot read file", file: path) }
        do {
            return try JSONDecoder().decode([[Int]].self, from: data)
        } catch {
            throw InterpError("not a JSON list of lists of token ids", file: path)
        }
    }

    /// The sequences as one rectangular batch for `config`.
    public static func batch(_ path: String, config: ModelConfig) throws -> TokenBatch {
        do {
            return try TokenBatch(try read(path), config: config)
        } catch let error as InterpError {
            throw error.inFile(path)
        }
    }
}
