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

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    FileHandle.standardOutput.write(try encoder.encode(value))
    FileHandle.standardOutput.write(Data("\n".utf8))
}
