/// The parameters a model has, under TransformerLens's state-dict names with their shapes: the one table the
/// loaders check weights against and `interp info` reports.
public enum ParameterTable {
    public struct Parameter: Equatable, Sendable {
        public let name: String
        public let shape: [Int]
        public var count: Int { shape.reduce(1, *) }
    }

    public static func expected(for c: ModelConfig) -> [Parameter] {
        var table: [Parameter] = [
            Parameter(name: "embed.W_E", shape: [c.dVocab, c.dModel]),
            Parameter(name: "pos_embed.W_pos", shape: [c.nCtx, c.dModel]),
        ]
        let hasAffine = c.normalization == .layerNorm
        for l in 0..<c.nLayers {
            let p = "blocks.\(l)."
            if hasAffine {
                table += [Parameter(name: p + "ln1.w", shape: [c.dModel]), Parameter(name: p + "ln1.b", shape: [c.dModel])]
            }
            table += ["W_Q", "W_K", "W_V"].map { Parameter(name: p + "attn." + $0, shape: [c.nHeads, c.dModel, c.dHead]) }
            table.append(Parameter(name: p + "attn.W_O", shape: [c.nHeads, c.dHead, c.dModel]))
            table += ["b_Q", "b_K", "b_V"].map { Parameter(name: p + "attn." + $0, shape: [c.nHeads, c.dHead]) }
            table.append(Parameter(name: p + "attn.b_O", shape: [c.dModel]))
            if !c.attnOnly {
                if hasAffine {
                    table += [Parameter(name: p + "ln2.w", shape: [c.dModel]), Parameter(name: p + "ln2.b", shape: [c.dModel])]
                }
                table += [
                    Parameter(name: p + "mlp.W_in", shape: [c.dModel, c.dMLP]),
                    Parameter(name: p + "mlp.b_in", shape: [c.dMLP]),
                    Parameter(name: p + "mlp.W_out", shape: [c.dMLP, c.dModel]),
                    Parameter(name: p + "mlp.b_out", shape: [c.dModel]),
                ]
            }
        }
        if hasAffine {
            table += [Parameter(name: "ln_final.w", shape: [c.dModel]), Parameter(name: "ln_final.b", shape: [c.dModel])]
        }
        table += [
            Parameter(name: "unembed.W_U", shape: [c.dModel, c.dVocabOut]),
            Parameter(name: "unembed.b_U", shape: [c.dVocabOut]),
        ]
        return table
    }

    /// TransformerLens buffers that are not parameters; exports may carry them and interp skips them by this rule.
    public static func isNonParameterBuffer(_ name: String) -> Bool {
        name.hasSuffix(".attn.mask") || name.hasSuffix(".attn.IGNORE")
    }
}
