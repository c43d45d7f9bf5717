import Foundation
import Tokenization

/// What `interp info` shows: architecture, parameters by TL name, and every hook point with its shape.
public struct ModelSummary: Encodable {
    public struct Parameter: Encodable { public let name: String; public let shape: [Int] }
    public struct Hook: Encodable { public let name: String; public let shape: [String] }

    public let format: String
    public let config: ModelConfig
    public let parameterCount: Int
    public let parameters: [Parameter]
    public let hooks: [Hook]
    /// The tokenizer in the model directory, if any: vocabulary size and BOS id.
    public let tokenizer: TokenizerSummary?

    public struct TokenizerSummary: Encodable {
        public let vocabularySize: Int
        public let bosTokenID: Int32?
        enum CodingKeys: String, CodingKey { case vocabularySize = "vocabulary_size", bosTokenID = "bos_token_id" }
    }

    enum CodingKeys: String, CodingKey {
        case format, config, parameterCount = "parameter_count", parameters, hooks, tokenizer
    }

    public init(model: TransformerModel, tokenizer: BPETokenizer? = nil) {
        self.tokenizer = tokenizer.map { TokenizerSummary(vocabularySize: $0.vocabularySize, bosTokenID: $0.bosTokenID) }
        format = model.sourceFormat
        config = model.config
        parameterCount = model.parameterCount
        parameters = model.parameters.map { Parameter(name: $0.name, shape: $0.shape) }
        hooks = model.config.hookPoints.map { Hook(name: $0.description, shape: $0.site.shape.map(\.rawValue)) }
    }

    public var text: String {
        let c = config
        var lines = [
            "model        \(c.modelName) (\(format))",
            "layers       \(c.nLayers)\(c.attnOnly ? ", attention only" : "")",
            "d_model      \(c.dModel)",
            "heads        \(c.nHeads) × d_head \(c.dHead), \(c.attentionDir.rawValue), scale \(c.useAttnScale ? String(c.attnScale) : "off")",
        ]
        if !c.attnOnly { lines.append("d_mlp        \(c.dMLP), \(c.actFn?.rawValue ?? "-")") }
        lines += [
            "norm         \(c.normalization.rawValue) (eps \(c.eps))",
            "vocab        \(c.dVocab) in, \(c.dVocabOut) out",
            "context      \(c.nCtx)",
            "parameters   \(parameterCount.formatted())",
            "tokenizer    " + (tokenizer.map { "vocabulary \($0.vocabularySize), BOS id \($0.bosTokenID.map(String.init) ?? "none")" } ?? "none (token ids only)"),
            "",
            "hook points (\(hooks.count)):",
        ]
        let width = hooks.map(\.name.count).max() ?? 0
        for hook in hooks {
            lines.append("  " + hook.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  [" + hook.shape.joined(separator: ", ") + "]")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
