/// Layer normalisation as TransformerLens computes it: centre, `scale = sqrt(mean(x²) + eps)`, divide, then the
/// optional affine `w`, `b`. Split in two steps so a hook can read or change `scale` before it is used.
public enum LayerNorm {
    /// Per row: `mean[r]` and `scale[r]` of `x[rows×width]`.
    public static func statistics(_ x: UnsafePointer<Float>, rows: Int, width: Int, eps: Float,
                                  mean: UnsafeMutablePointer<Float>, scale: UnsafeMutablePointer<Float>) {
        let inverseWidth = 1 / Float(width)
        parallelChunks(rows, minimumChunk: 64) { range in
            for r in range {
                let row = x + r * width
                let mu = vectorSum(row, width) * inverseWidth
                var acc = Lanes()
                var i = 0
                let raw = UnsafeRawPointer(row)
                let muLanes = Lanes(repeating: mu)
                while i + 8 <= width {
                    let d = raw.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self) - muLanes
                    acc += d * d
                    i += 8
                }
                var squares = acc.sum()
                while i < width {
                    let d = row[i] - mu
                    squares += d * d
                    i += 1
                }
                mean[r] = mu
                scale[r] = (squares * inverseWidth + eps).squareRoot()
            }
        }
    }

    /// `out[r] = (x[r] − mean[r]) / scale[r] · weight + bias` (weight and bias optional). `out` may alias `x`.
    public static func normalize(_ x: UnsafePointer<Float>, rows: Int, width: Int,
                                 mean: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                                 weight: UnsafePointer<Float>?, bias: UnsafePointer<Float>?,
                                 out: UnsafeMutablePointer<Float>) {
        parallelChunks(rows, minimumChunk: 64) { range in
            for r in range {
                let mu = mean[r], s = scale[r]
                let row = x + r * width, dst = out + r * width
                for i in 0..<width { dst[i] = (row[i] - mu) / s }
                if let weight, let bias {
                    for i in 0..<width { dst[i] = dst[i] * weight[i] + bias[i] }
                } else if let weight {
                    for i in 0..<width { dst[i] = dst[i] * weight[i] }
                }
            }
        }
    }

    /// Reference: both steps in Double, one row at a time.
    public static func naive(_ x: [Float], rows: Int, width: Int, eps: Float, weight: [Float]?, bias: [Float]?)
        -> (out: [Float], scale: [Float]) {
        var out = [Float](repeating: 0, count: rows * width)
        var scales = [Float](repeating: 0, count: rows)
        for r in 0..<rows {
            let row = x[(r * width)..<((r + 1) * width)].map(Double.init)
            let mu = row.reduce(0, +) / Double(width)
            let variance = row.map { ($0 - mu) * ($0 - mu) }.reduce(0, +) / Double(width)
            let s = (variance + Double(eps)).squareRoot()
            scales[r] = Float(s)
            for i in 0..<width {
                var v = (row[i] - mu) / s
                if let weight { v *= Double(weight[i]) }
                if let bias { v += Double(bias[i]) }
                out[r * width + i] = Float(v)
            }
        }
        return (out, scales)
    }
}
