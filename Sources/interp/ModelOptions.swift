import ArgumentParser
import Foundation
import Interp

/// `--model DIR`, shared by every command that runs a model.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Model directory: config.json + model.safetensors (TransformerLens or Hugging Face GPT-2).", valueName: "dir"))
    var model: String

    func load() throws -> TransformerModel {
        try ModelLoader.load(directory: model)
    }
}

/// Reads a token file: JSON, a list of equal-length lists of token ids.
func readTokenFile(_ path: String, config: ModelConfig) throws -> TokenBatch {
    guard let data = FileManager.default.contents(atPath: path) else { throw InterpError("cannot read file", file: path) }
    let rows: [[Int]]
    do {
        rows = try JSONDecoder().decode([[Int]].self, from: data)
    } catch {
        throw InterpError("not a JSON list of lists of token ids", file: path)
    }
    do {
        return try TokenBatch(rows, config: config)
    } catch let error as InterpError {
        throw error.inFile(path)
    }
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    FileHandle.standardOutput.write(try encoder.encode(value))
    FileHandle.standardOutput.write(Data("\n".utf8))
}
