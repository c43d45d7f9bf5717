import InterpCore

/// A normalisation layer on rows of `width` floats, as the config's `normalization_type` says: TransformerLens's
/// `LayerNorm` (centre, divide by `sqrt(mean(x²) + eps)`, then `w`, `b`), `LayerNormPre` (the same without `w`, `b`),
/// or none (the identity).
///
/// Split in steps so hooks can sit between them: `statistics` (`hook_scale` reads the scales), `normalize` without the
/// affine part (`hook_normalized`), then `applyAffine`; `forward` does all of them at once.
public struct Norm: Sendable {
    public enum Kind: Sendable, Equatable {
        case layerNorm
        case layerNormPre
        case none
    }

    public let kind: Kind
    public let width: Int
    public let eps: Float
    /// `[width]` each, for `.layerNorm`.
    public let weight: [Float]?
    public let bias: [Float]?

    public init(kind: Kind, width: Int, eps: Float, weight: [Float]? = nil, bias: [Float]? = nil) {
        precondition((kind == .layerNorm) == (weight != nil && bias != nil), "only an affine layer norm has weights")
        precondition(weight.map { $0.count == width } ?? true && bias.map { $0.count == width } ?? true)
        self.kind = kind
        self.width = width
        self.eps = eps
        self.weight = weight
        self.bias = bias
    }

    /// Whether the layer leaves its input as it is.
    public var isIdentity: Bool { kind == .none }

    /// Per row, `mean[r]` and `scale[r]` (`rows` floats each).
    public func statistics(_ x: UnsafePointer<Float>, rows: Int, mean: UnsafeMutablePointer<Float>, scale: UnsafeMutablePointer<Float>) {
        LayerNorm.statistics(x, rows: rows, width: width, eps: eps, mean: mean, scale: scale)
    }

    /// `out[r] = (x[r] − mean[r]) / scale[r]`, then `· w + b` when `affine` (and the layer has them). `out` may be `x`.
    public func normalize(_ x: UnsafePointer<Float>, rows: Int, mean: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                          affine: Bool = true, out: UnsafeMutablePointer<Float>) {
        if affine, let weight, let bias {
            weight.withUnsafeBufferPointer { w in
                bias.withUnsafeBufferPointer { b in
                    LayerNorm.normalize(x, rows: rows, width: width, mean: mean, scale: scale,
                                        weight: w.baseAddress, bias: b.baseAddress, out: out)
                }
            }
        } else {
            LayerNorm.normalize(x, rows: rows, width: width, mean: mean, scale: scale, weight: nil, bias: nil, out: out)
        }
    }

    /// `x[r] = x[r] · w + b` in place (a no-op without weights): the affine step after a hook on the normalised value.
    public func applyAffine(_ x: UnsafeMutablePointer<Float>, rows: Int) {
        guard let weight, let bias else { return }
        weight.withUnsafeBufferPointer { w in
            bias.withUnsafeBufferPointer { b in
                for r in 0..<rows {
                    let row = x + r * width
                    for i in 0..<width { row[i] = row[i] * w[i] + b[i] }
                }
            }
        }
    }

    /// All steps, into `out` (may be `x`), with the statistics in `mean` and `scale`. Returns what the next component
    /// reads: `out`, or `x` itself when the layer is the identity.
    @discardableResult
    public func forward(_ x: UnsafeMutablePointer<Float>, rows: Int, mean: UnsafeMutablePointer<Float>, scale: UnsafeMutablePointer<Float>,
                        out: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        guard !isIdentity else { return x }
        statistics(x, rows: rows, mean: mean, scale: scale)
        normalize(x, rows: rows, mean: mean, scale: scale, out: out)
        return out
    }

    /// `forward` with statistics it does not keep.
    @discardableResult
    public func forward(_ x: UnsafeMutablePointer<Float>, rows: Int, out: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        guard !isIdentity else { return x }
        let statistics = UnsafeMutablePointer<Float>.allocate(capacity: max(2 * rows, 1))
        defer { statistics.deallocate() }
        return forward(x, rows: rows, mean: statistics, scale: statistics + rows, out: out)
    }

    /// Reference: every step in Double, one row at a time. Returns the output and the per-row scales (1 for none).
    public func reference(_ x: [Float], rows: Int) -> (out: [Float], scale: [Float]) {
        guard !isIdentity else { return (x, [Float](repeating: 1, count: rows)) }
        return LayerNorm.naive(x, rows: rows, width: width, eps: eps, weight: weight, bias: bias)
    }
}
