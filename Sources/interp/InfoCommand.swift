import ArgumentParser
import Foundation
import Interp

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show a model's architecture, parameters and every hook point.",
        discussion: "Example: interp info --model fixtures/models/gpt2-tl")

    @OptionGroup var modelOptions: ModelOptions
    @Flag(name: .long, help: "Print JSON instead of text.") var json = false

    func run() throws {
        let info = ModelSummary(model: try modelOptions.load(), tokenizer: try BPETokenizer.load(modelDirectory: modelOptions.model))
        if json { try printJSON(info) } else { print(info.text, terminator: "") }
    }
}
