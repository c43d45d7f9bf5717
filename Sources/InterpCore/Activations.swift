import Foundation

/// MLP activation functions by their TransformerLens / Hugging Face names. The GELU form is a named choice,
/// never swapped for a "close enough" one.
public enum ActivationFunction: String, Codable, Sendable, CaseIterable {
    case relu
    /// tanh approximation (`gelu_new` in TL and HF GPT-2; `gelu_pytorch_tanh` and `gelu_fast` are the same formula)
    case geluNew = "gelu_new"
    /// exact erf form (`torch.nn.functional.gelu`)
    case gelu

    /// Maps the names TL and HF use for the forms interp implements.
    public init?(exporterName: String) {
        switch exporterName {
        case "relu": self = .relu
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": self = .geluNew
        case "gelu": self = .gelu
        default: return nil
        }
    }

    /// Applies the function in place.
    public func apply(_ x: UnsafeMutablePointer<Float>, count: Int) {
        parallelChunks(count, minimumChunk: 16384) { range in
            let base = x + range.lowerBound
            switch self {
            case .relu:
                mapInPlace(base, range.count, vector: { $0.replacing(with: 0, where: $0 .< 0) },
                           scalar: { $0 < 0 ? 0 : $0 })
            case .geluNew:
                mapInPlace(base, range.count, vector: geluTanhLanes, scalar: geluTanhScalar)
            case .gelu:
                for i in 0..<range.count {
                    let v = base[i]
                    base[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752))
                }
            }
        }
    }

    /// `x[r, i] = f(x[r, i] + bias[i])` over `rows × width`, in place: the bias add fused into the same pass.
    public func apply(_ x: UnsafeMutablePointer<Float>, rows: Int, width: Int, bias: UnsafePointer<Float>) {
        parallelChunks(rows, minimumChunk: max(1, 16384 / max(width, 1))) { range in
            for r in range {
                let row = x + r * width
                for i in 0..<width { row[i] += bias[i] }
                switch self {
                case .relu:
                    mapInPlace(row, width, vector: { $0.replacing(with: 0, where: $0 .< 0) }, scalar: { $0 < 0 ? 0 : $0 })
                case .geluNew:
                    mapInPlace(row, width, vector: geluTanhLanes, scalar: geluTanhScalar)
                case .gelu:
                    for i in 0..<width { row[i] = 0.5 * row[i] * (1 + erff(row[i] * 0.70710678118654752)) }
                }
            }
        }
    }

    /// Reference: the textbook formula in Double.
    public func naive(_ x: Double) -> Double {
        switch self {
        case .relu: return max(x, 0)
        case .geluNew: return 0.5 * x * (1 + Foundation.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
        case .gelu: return 0.5 * x * (1 + Foundation.erf(x / 2.0.squareRoot()))
        }
    }
}

@inline(__always)
private func geluTanhLanes(_ x: Lanes) -> Lanes {
    let inner = Lanes(repeating: 0.7978845608028654) * (x + Lanes(repeating: 0.044715) * x * x * x)
    return Lanes(repeating: 0.5) * x * (Lanes(repeating: 1) + vectorTanh(inner))
}

@inline(__always)
private func geluTanhScalar(_ x: Float) -> Float {
    0.5 * x * (1 + tanhf(0.7978845608028654 * (x + 0.044715 * x * x * x)))
}
