/// A dense, row-major Float32 tensor. Value semantics (copy on write through its array).
public struct Tensor: Equatable, Sendable {
    public private(set) var shape: [Int]
    public var scalars: [Float]

    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(Tensor.elementCount(shape) == scalars.count,
                     "shape \(shape) needs \(Tensor.elementCount(shape)) scalars, got \(scalars.count)")
        self.shape = shape
        self.scalars = scalars
    }

    public init(zeros shape: [Int]) {
        self.init(shape: shape, repeating: 0)
    }

    public init(shape: [Int], repeating value: Float) {
        self.init(shape: shape, scalars: [Float](repeating: value, count: Tensor.elementCount(shape)))
    }

    public static func elementCount(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    public var count: Int { scalars.count }
    public var rank: Int { shape.count }

    /// Strides in elements for each axis.
    public var strides: [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var running = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[axis] = running
            running *= shape[axis]
        }
        return strides
    }

    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, scalars: scalars)
    }

    public subscript(_ index: Int...) -> Float {
        get { scalars[flatIndex(index)] }
        set { scalars[flatIndex(index)] = newValue }
    }

    private func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index \(index) for shape \(shape)")
        var flat = 0
        for (i, dim) in zip(index, shape) {
            precondition(i >= 0 && i < dim, "index \(index) out of range for shape \(shape)")
            flat = flat * dim + i
        }
        return flat
    }

    /// Rows `range` of the first axis, as a new tensor.
    public func slice(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0])
        let inner = count / max(shape[0], 1)
        var newShape = shape
        newShape[0] = range.count
        return Tensor(shape: newShape, scalars: Array(scalars[(range.lowerBound * inner)..<(range.upperBound * inner)]))
    }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try scalars.withUnsafeBufferPointer(body)
    }

    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (inout UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        try scalars.withUnsafeMutableBufferPointer(body)
    }
}

extension Tensor {
    /// Logits `[batch, pos, vocab]` cut down to `positions` (the same for every prompt) and the vocabulary entries
    /// `indices` (all when nil), in those orders: `[batch, positions.count, indices.count]`.
    public func selectingLogits(positions: [Int], indices: [Int]?) -> Tensor {
        let (B, P, V) = (shape[0], shape[1], shape[2])
        let columns = indices ?? Array(0..<V)
        var out = [Float](repeating: 0, count: B * positions.count * columns.count)
        withUnsafeBufferPointer { x in
            for b in 0..<B {
                for (i, p) in positions.enumerated() {
                    let row = x.baseAddress! + (b * P + p) * V, dst = (b * positions.count + i) * columns.count
                    for (j, v) in columns.enumerated() { out[dst + j] = row[v] }
                }
            }
        }
        return Tensor(shape: [B, positions.count, columns.count], scalars: out)
    }
}
