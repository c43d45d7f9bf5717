import InterpCore

/// TransformerLens's `Unembed`: `W_U` `[d_model, d_vocab_out]` and `b_U`, or a subset of its columns (the logits a
/// metric reads), so that reading a few logits costs a few columns.
public struct Unembedding: Sendable {
    public let linear: Linear
    /// The vocabulary entries of the columns, in order; nil for the whole output vocabulary.
    public let columns: [Int]?

    public init(weight: [Float], bias: [Float], dModel: Int, vocabulary: Int) {
        linear = Linear(weight: weight, bias: bias, inWidth: dModel, outWidth: vocabulary)
        columns = nil
    }

    private init(linear: Linear, columns: [Int]) {
        self.linear = linear
        self.columns = columns
    }

    /// Logits per row.
    public var width: Int { linear.outWidth }

    /// The unembedding of the entries `indices` (of the full vocabulary), in that order; nil gives this one.
    public func selecting(_ indices: [Int]?) -> Unembedding {
        guard let indices else { return self }
        let full = columns.map { c in indices.map { c[$0] } } ?? indices
        return Unembedding(linear: linear.selecting(columns: indices), columns: full)
    }

    /// `logits[rows, width] = x · W_U + b_U`.
    public func forward(_ x: UnsafePointer<Float>, rows: Int, into logits: UnsafeMutablePointer<Float>,
                        schedule: ProductSchedule = .library) {
        linear.forward(x, rows: rows, into: logits, schedule: schedule)
    }

    public func reference(_ x: [Float], rows: Int) -> [Float] { linear.reference(x, rows: rows) }
}
