import InterpCore

/// Row-wise kernels shared by the forward pass and the continued runs.
enum Dense {
    /// `out[rows × outWidth] = input[rows × width] · weight[width × outWidth] + bias`.
    static func linear(_ input: UnsafePointer<Float>, rows: Int, width: Int, weight: [Float], bias: [Float], outWidth: Int,
                       into out: UnsafeMutablePointer<Float>) {
        guard rows > 0 else { return }
        weight.withUnsafeBufferPointer { w in
            bias.withUnsafeBufferPointer { b in
                // Filled by the bias rows first, so the GEMM accumulates into it and no zero fill is needed.
                fillRows(out, rows: rows, with: b.baseAddress!, width: outWidth)
                GEMM.multiply(m: rows, n: outWidth, k: width, input, lda: width, w.baseAddress!, ldb: outWidth,
                              out, ldc: outWidth, beta: 1)
            }
        }
    }

    static func fillRows(_ out: UnsafeMutablePointer<Float>, rows: Int, with row: UnsafePointer<Float>, width: Int) {
        parallelChunks(rows, minimumChunk: 64) { range in
            for r in range { (out + r * width).update(from: row, count: width) }
        }
    }

    static func addRows(_ row: UnsafePointer<Float>, to out: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        parallelChunks(rows, minimumChunk: 64) { range in
            for r in range {
                let dst = out + r * width
                for i in 0..<width { dst[i] += row[i] }
            }
        }
    }

    static func add(_ source: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { target[i] += source[i] }
    }

    /// Layer normalisation of `rows` rows of `input` into `out` as the model's config says (affine with `parameters`,
    /// plain centring and scaling for LNPre). Returns what the next component reads: `out`, or `input` itself when
    /// the model has no normalisation.
    static func normalize(_ input: UnsafeMutablePointer<Float>, rows: Int, config c: ModelConfig, parameters: (w: [Float], b: [Float])?,
                          mean: UnsafeMutablePointer<Float>, scale: UnsafeMutablePointer<Float>,
                          out: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        guard c.normalization != .none else { return input }
        let D = c.dModel
        LayerNorm.statistics(input, rows: rows, width: D, eps: c.eps, mean: mean, scale: scale)
        if let parameters {
            parameters.w.withUnsafeBufferPointer { w in
                parameters.b.withUnsafeBufferPointer { b in
                    LayerNorm.normalize(input, rows: rows, width: D, mean: mean, scale: scale,
                                        weight: w.baseAddress, bias: b.baseAddress, out: out)
                }
            }
        } else {
            LayerNorm.normalize(input, rows: rows, width: D, mean: mean, scale: scale, weight: nil, bias: nil, out: out)
        }
        return out
    }
}
