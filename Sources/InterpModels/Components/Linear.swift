import InterpCore

/// How a matrix product uses the cores.
public enum ProductSchedule: Sendable {
    /// One BLAS call with OpenBLAS's own threads: for a pass made of big products.
    case library
    /// Small products as one call (it stays on one thread), large ones split by rows across cores as single-threaded
    /// calls: for work that interleaves products with interp's own parallel loops, where OpenBLAS's threads would spin
    /// against them.
    case rowsAcrossCores

    /// Below this many multiply-adds a product is one call under `rowsAcrossCores`.
    static let splitThreshold = 1 << 22
}

/// A dense layer `y = x · W + b` on rows: `W` is `[inWidth, outWidth]` row-major (TransformerLens's orientation), `b`
/// `[outWidth]` or absent.
public struct Linear: Sendable {
    public let inWidth: Int
    public let outWidth: Int
    public let weight: [Float]
    public let bias: [Float]?

    public init(weight: [Float], bias: [Float]?, inWidth: Int, outWidth: Int) {
        precondition(weight.count == inWidth * outWidth, "weight has \(weight.count) floats, not \(inWidth) × \(outWidth)")
        precondition(bias.map { $0.count == outWidth } ?? true, "bias has \(bias?.count ?? 0) floats, not \(outWidth)")
        self.inWidth = inWidth
        self.outWidth = outWidth
        self.weight = weight
        self.bias = bias
    }

    /// `out[r, j] = x[r] · W[:, j] + b[j]` for the output columns `columns` (default all), `rows` rows. `x` rows are
    /// `ldx` apart; `out` points at column 0 of the first output row, rows `ldo` apart, and only `columns` are written.
    public func forward(_ x: UnsafePointer<Float>, rows: Int, ldx: Int? = nil, columns: Range<Int>? = nil,
                        into out: UnsafeMutablePointer<Float>, ldo: Int? = nil, schedule: ProductSchedule = .library) {
        let columns = columns ?? 0..<outWidth, ldo = ldo ?? outWidth
        guard rows > 0, !columns.isEmpty else { return }
        precondition(columns.lowerBound >= 0 && columns.upperBound <= outWidth, "columns \(columns) outside 0..<\(outWidth)")
        let target = out + columns.lowerBound
        if let bias {
            // Filled by the bias rows first, so the product accumulates into it and no zero fill is needed.
            bias.withUnsafeBufferPointer { b in
                let row = b.baseAddress! + columns.lowerBound, width = columns.count
                parallelChunks(rows, minimumChunk: 64) { range in
                    for r in range { (target + r * ldo).update(from: row, count: width) }
                }
            }
        }
        weight.withUnsafeBufferPointer { w in
            Self.product(m: rows, n: columns.count, k: inWidth, x, lda: ldx ?? inWidth, w.baseAddress! + columns.lowerBound,
                         ldb: outWidth, target, ldc: ldo, beta: bias == nil ? 0 : 1, schedule: schedule)
        }
    }

    /// `out[r] (+)= x[r] · W[inputs, :]`, no bias: the product of some of the input columns with their rows of the
    /// weight (one head's share of an output projection). `x` points at the first of those columns.
    public func multiply(_ x: UnsafePointer<Float>, rows: Int, ldx: Int, inputs: Range<Int>? = nil,
                         into out: UnsafeMutablePointer<Float>, ldo: Int? = nil, accumulate: Bool = false,
                         schedule: ProductSchedule = .library) {
        let inputs = inputs ?? 0..<inWidth
        guard rows > 0 else { return }
        precondition(inputs.lowerBound >= 0 && inputs.upperBound <= inWidth, "inputs \(inputs) outside 0..<\(inWidth)")
        weight.withUnsafeBufferPointer { w in
            Self.product(m: rows, n: outWidth, k: inputs.count, x, lda: ldx, w.baseAddress! + inputs.lowerBound * outWidth,
                         ldb: outWidth, out, ldc: ldo ?? outWidth, beta: accumulate ? 1 : 0, schedule: schedule)
        }
    }

    /// A layer of the chosen output columns, in the order given (a gathered copy of those weight columns and biases).
    public func selecting(columns: [Int]) -> Linear {
        precondition(columns.allSatisfy { (0..<outWidth).contains($0) }, "a selected column is outside 0..<\(outWidth)")
        let n = columns.count
        var w = [Float](repeating: 0, count: inWidth * n)
        weight.withUnsafeBufferPointer { source in
            w.withUnsafeMutableBufferPointer { target in
                for i in 0..<inWidth {
                    for (j, column) in columns.enumerated() { target[i * n + j] = source[i * outWidth + column] }
                }
            }
        }
        return Linear(weight: w, bias: bias.map { b in columns.map { b[$0] } }, inWidth: inWidth, outWidth: n)
    }

    /// Reference: `x · W + b` with a Double accumulator, `x` `[rows, inWidth]`.
    public func reference(_ x: [Float], rows: Int) -> [Float] {
        precondition(x.count == rows * inWidth)
        var out = [Float](repeating: 0, count: rows * outWidth)
        for r in 0..<rows {
            for j in 0..<outWidth {
                var sum = bias.map { Double($0[j]) } ?? 0
                for i in 0..<inWidth { sum += Double(x[r * inWidth + i]) * Double(weight[i * outWidth + j]) }
                out[r * outWidth + j] = Float(sum)
            }
        }
        return out
    }

    /// One product as `schedule` says.
    static func product(m: Int, n: Int, k: Int, _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                        _ c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float, schedule: ProductSchedule) {
        if schedule == .rowsAcrossCores && m * n * k >= ProductSchedule.splitThreshold {
            GEMM.multiplySplittingRows(m: m, n: n, k: k, a, lda: lda, b, ldb: ldb, c, ldc: ldc, beta: beta)
        } else {
            GEMM.multiply(m: m, n: n, k: k, a, lda: lda, b, ldb: ldb, c, ldc: ldc, beta: beta)
        }
    }
}
