import ArgumentParser
import Foundation
import Interp

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Show how text splits into tokens: ids and pieces, exactly as Hugging Face tokenizers would.",
        discussion: """
        The tokenizer is a model directory's tokenizer.json (--model) or a tokenizer file or directory \\
        (--tokenizer: tokenizer.json, or vocab.json + merges.txt). No BOS is added unless --prepend-bos.
        With --json, prints one JSON object per input line (JSON Lines): {"ids": [...], "tokens": [...]},
        tokens being the vocabulary strings Hugging Face shows (Ġ for a leading space).

        Examples:
          interp tokenize --tokenizer fixtures/tokenizer/gpt2/tokenizer.json --text "Hello world"
          interp tokenize --model fixtures/models/text-tiny --text-file prompts.txt --json
        """)

    // Not ModelOptions, whose --model is required and loads the model: here it is one of two ways to name a tokenizer.
    @Option(name: .long, help: ArgumentHelp("Model directory whose tokenizer to use.", valueName: "dir"))
    var model: String?

    @Option(name: .long, help: ArgumentHelp("tokenizer.json, or a directory with it or with vocab.json + merges.txt.", valueName: "path"))
    var tokenizer: String?

    @Option(name: .long, help: ArgumentHelp("Text to tokenize (repeatable).", valueName: "text"))
    var text: [String] = []

    @Option(name: .long, help: ArgumentHelp("Tokenize each line of this file (split on \\n only, nothing trimmed).", valueName: "file"))
    var textFile: String?

    @Flag(name: .long, help: "Put the BOS token first.") var prependBos = false
    @Flag(name: .long, help: "Print JSON Lines instead of text.") var json = false

    func validate() throws {
        if (model == nil) == (tokenizer == nil) { throw ValidationError("give exactly one of --model and --tokenizer") }
        if text.isEmpty == (textFile == nil) { throw ValidationError("give the text one way: --text or --text-file") }
    }

    func run() throws {
        let loaded: BPETokenizer
        if let model {
            guard let found = try BPETokenizer.load(modelDirectory: model) else {
                throw InterpError("no tokenizer.json (or vocab.json and merges.txt) in the model directory", file: model)
            }
            loaded = found
        } else {
            loaded = try BPETokenizer.load(path: tokenizer!)
        }
        let inputs = try textFile.map(TextLines.read) ?? text
        let encodings = try inputs.map { try TokenizedText(text: $0, tokenizer: loaded, prependBOS: prependBos) }
        var out = ""
        for encoding in encodings {
            out += json ? encoding.jsonLine() : try encoding.readable(loaded)
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}
