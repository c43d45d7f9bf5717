import ArgumentParser
import Foundation
import Interp

/// Where prompts come from: token ids (`--tokens`), or text (`--text`, `--text-file`) through the model's tokenizer.
struct PromptOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("JSON file with a list of equal-length lists of token ids, used as given.", valueName: "file"))
    var tokens: String?

    @Option(name: .long, help: ArgumentHelp("A text prompt (repeatable). Needs a tokenizer.json in the model directory.", valueName: "text"))
    var text: [String] = []

    @Option(name: .long, help: ArgumentHelp("Text prompts, one per line (split on \\n only, nothing trimmed).", valueName: "file"))
    var textFile: String?

    @Flag(name: .long, inversion: .prefixedNo,
          help: "Put the tokenizer's BOS token before each text prompt (default: yes, as TransformerLens does).")
    var prependBos: Bool?

    func validate() throws {
        let sources = [tokens != nil, !text.isEmpty, textFile != nil].filter { $0 }.count
        if sources != 1 { throw ValidationError("give the prompts one way: --tokens, --text or --text-file") }
        if tokens != nil && prependBos != nil {
            throw ValidationError("--prepend-bos applies to text prompts; token ids are used as given")
        }
    }

    /// The prompts as a batch, with the tokenizer used (nil for token ids).
    func batch(model: TransformerModel, modelDirectory: String) throws -> (TokenBatch, BPETokenizer?) {
        let tokenizer = try BPETokenizer.load(modelDirectory: modelDirectory)
        if let tokens { return (try TokenFile.batch(tokens, config: model.config), tokenizer) }
        guard let tokenizer else {
            throw InterpError("the model has no tokenizer.json, so it takes token ids only (--tokens)", file: modelDirectory)
        }
        let texts: [String]
        if let textFile {
            texts = try TextLines.read(textFile)
        } else {
            texts = text
        }
        do {
            return (try TokenBatch(texts: texts, tokenizer: tokenizer, prependBOS: prependBos ?? true, config: model.config), tokenizer)
        } catch let error as InterpError {
            throw textFile.map { error.inFile($0) } ?? error
        }
    }
}
