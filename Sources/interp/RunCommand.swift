import ArgumentParser
import Foundation
import Interp

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a model on token ids; print the top next tokens or save logits and cached activations.",
        discussion: """
        Prompts are token ids (--tokens: JSON, a list of equal-length lists of ids, used as given) or text (--text, \
        --text-file) when the model directory has a tokenizer.json; text prompts get the BOS token first unless \
        --no-prepend-bos, and must tokenize to the same length.

        With --out, writes a safetensors file holding `logits` [batch, pos, d_vocab_out], the `tokens`, and \
        one tensor per cached hook under its TransformerLens name. Without --out, prints the most likely next \
        tokens of each prompt.

        Examples:
          interp run --model fixtures/models/gpt2-tl --tokens fixtures/reference/gpt2.tokens.json
          interp run --model fixtures/models/text-tiny --text "The induction head copies the token"
          interp run --model M --tokens T.json --cache 'blocks.*.hook_resid_post' --out acts.safetensors
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var prompts: PromptOptions

    @Option(name: .long, help: ArgumentHelp("Hooks to cache: comma-separated names or glob patterns (needs --out).", valueName: "patterns"))
    var cache: String?

    @Option(name: .long, help: ArgumentHelp("Write logits and cached activations to this safetensors file.", valueName: "file"))
    var out: String?

    @Option(name: .long, help: "How many top tokens to print per prompt (without --out).")
    var top: Int = 5

    func validate() throws {
        if cache != nil && out == nil { throw ValidationError("--cache needs --out to write the activations to") }
        if top < 1 { throw ValidationError("--top must be at least 1") }
    }

    func run() throws {
        let model = try modelOptions.load()
        let (batch, tokenizer) = try prompts.batch(model: model, modelDirectory: modelOptions.model)
        let patterns = cache.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } } ?? []
        let result = try RunRequest(model: model, tokens: batch, cachePatterns: patterns).execute()
        if let out {
            try result.write(to: out)
            print("wrote \(out): logits \(result.logits.shape) and \(result.cache.activations.count) cached activation(s)")
        } else {
            print(try result.topTokensText(count: top, tokenizer: tokenizer), terminator: "")
        }
    }
}
