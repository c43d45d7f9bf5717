import InterpCore

/// TransformerLens's `MLP`: `W_in` `[d_model, d_mlp]` with `b_in`, the activation (`hook_pre` before it, `hook_post`
/// after), `W_out` `[d_mlp, d_model]` with `b_out`.
public struct MLP: Sendable {
    public let input: Linear
    public let output: Linear
    public let activation: ActivationFunction

    public init(input: Linear, output: Linear, activation: ActivationFunction) {
        precondition(input.outWidth == output.inWidth && input.bias != nil, "MLP widths disagree")
        self.input = input
        self.output = output
        self.activation = activation
    }

    public var width: Int { input.outWidth }

    /// `hidden = x · W_in + b_in`, then the activation when `activate` (fused with the bias: one pass over the rows).
    public func hidden(_ x: UnsafePointer<Float>, rows: Int, into hidden: UnsafeMutablePointer<Float>, activate: Bool = true,
                       schedule: ProductSchedule = .library) {
        guard rows > 0 else { return }
        let F = width
        input.multiply(x, rows: rows, ldx: input.inWidth, into: hidden, schedule: schedule)
        input.bias!.withUnsafeBufferPointer { b in
            if activate {
                activation.apply(hidden, rows: rows, width: F, bias: b.baseAddress!)
            } else {
                parallelChunks(rows, minimumChunk: 64) { range in
                    for r in range {
                        let row = hidden + r * F
                        for i in 0..<F { row[i] += b[i] }
                    }
                }
            }
        }
    }

    /// The activation of pre-activations `hidden`, in place (after a hook on them).
    public func activate(_ hidden: UnsafeMutablePointer<Float>, rows: Int) {
        activation.apply(hidden, count: rows * width)
    }

    /// `out = hidden · W_out + b_out`.
    public func project(_ hidden: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>,
                        schedule: ProductSchedule = .library) {
        output.forward(hidden, rows: rows, into: out, schedule: schedule)
    }

    /// The whole layer, with `hidden` as scratch `[rows, d_mlp]`.
    public func forward(_ x: UnsafePointer<Float>, rows: Int, hidden: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>,
                        schedule: ProductSchedule = .library) {
        self.hidden(x, rows: rows, into: hidden, schedule: schedule)
        project(hidden, rows: rows, into: out, schedule: schedule)
    }

    /// Reference in Double: both products and the activation, `x` `[rows, d_model]`.
    public func reference(_ x: [Float], rows: Int) -> [Float] {
        let pre = input.reference(x, rows: rows)
        return output.reference(pre.map { Float(activation.naive(Double($0))) }, rows: rows)
    }
}
