import CBLAS
import Dispatch
import Foundation

/// Matrix products. `GEMM.multiply` is the only caller of `cblas_sgemm` in interp; `GEMM.naive` is the slow,
/// obvious reference it is tested against.
///
/// Row-major: `C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C`, with `op(X)` = X or Xᵀ.
/// `lda`, `ldb`, `ldc` are the row strides of A, B and C as stored.
public enum GEMM {
    public static func multiply(
        m: Int, n: Int, k: Int,
        _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
        _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
        _ c: UnsafeMutablePointer<Float>, ldc: Int,
        alpha: Float = 1, beta: Float = 0
    ) {
        guard m > 0, n > 0 else { return }
        if k == 0 {
            scale(c, rows: m, cols: n, ldc: ldc, by: beta)
            return
        }
        cblas_sgemm(CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(max(lda, 1)), b, Int32(max(ldb, 1)), beta, c, Int32(max(ldc, 1)))
    }

    /// `multiply` with the rows of C split across cores, each part a single-threaded BLAS call. Between the big
    /// products of a training step come long stretches of interp's own parallel code; OpenBLAS's threads, once woken,
    /// spin for a while after each call and take cores from it. Here they are never woken. Each row of C is computed
    /// as a single call would compute it.
    public static func multiplySplittingRows(
        m: Int, n: Int, k: Int,
        _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
        _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
        _ c: UnsafeMutablePointer<Float>, ldc: Int,
        alpha: Float = 1, beta: Float = 0
    ) {
        let cores = processorCount
        let parts = max(1, min(cores, m / 64))
        let saved = openblas_get_num_threads()
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(saved) }
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let start = m * part / parts, end = m * (part + 1) / parts
            guard end > start else { return }
            multiply(m: end - start, n: n, k: k, transposeA ? a + start : a + start * lda, lda: lda, transposeA: transposeA,
                     b, ldb: ldb, transposeB: transposeB, c + start * ldc, ldc: ldc, alpha: alpha, beta: beta)
        }
    }

    /// Triple loop with a Double accumulator.
    public static func naive(
        m: Int, n: Int, k: Int,
        _ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
        _ b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
        _ c: UnsafeMutablePointer<Float>, ldc: Int,
        alpha: Float = 1, beta: Float = 0
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    let av = transposeA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transposeB ? b[j * ldb + p] : b[p * ldb + j]
                    sum += Double(av) * Double(bv)
                }
                let old = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
                c[i * ldc + j] = Float(Double(alpha) * sum + old)
            }
        }
    }

    /// `sums[j] = Σ_r a[r, j]` for `a [rows × cols]`, rows added in order, columns split across cores.
    /// `sums` is overwritten unless `accumulate`.
    public static func columnSums(_ a: UnsafePointer<Float>, rows: Int, cols: Int, into sums: UnsafeMutablePointer<Float>,
                                  accumulate: Bool = false) {
        if !accumulate { sums.update(repeating: 0, count: cols) }
        parallelChunks(cols, minimumChunk: 256) { range in
            for r in 0..<rows { vectorAddScaled(sums + range.lowerBound, 1, a + r * cols + range.lowerBound, range.count) }
        }
    }

    private static func scale(_ c: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ldc: Int, by beta: Float) {
        for i in 0..<rows {
            for j in 0..<cols { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] }
        }
    }
}

/// The BLAS build in use, for reports: e.g. "OpenBLAS 0.3.21 … Haswell".
public enum BLASInfo {
    public static var configuration: String { String(cString: openblas_get_config()) }
    public static var coreName: String { String(cString: openblas_get_corename()) }
    public static var threads: Int { Int(openblas_get_num_threads()) }
}
