import CBLAS

/// Eigen-decomposition of a real symmetric matrix through LAPACK's `ssyevd` (OpenBLAS). `naive` is a cyclic Jacobi
/// rotation in Double, the slow reference it is tested against.
public enum SymmetricEigen {
    /// Eigenvalues in ascending order and the matching unit eigenvectors, row `k` of `vectors [n × n]` for value `k`.
    public static func decompose(_ matrix: [Float], n: Int) throws -> (values: [Float], vectors: [Float]) {
        precondition(matrix.count == n * n, "decompose needs an n × n matrix")
        guard n > 0 else { return ([], []) }
        // Column-major for LAPACK; the matrix is symmetric, so its row-major storage already is (only the lower
        // triangle, in column-major terms, is read).
        var a = matrix
        var values = [Float](repeating: 0, count: n)
        var n32 = Int32(n), info: Int32 = 0
        var lwork: Int32 = -1, liwork: Int32 = -1
        var workSize: Float = 0, iworkSize: Int32 = 0
        ssyevd_("V", "L", &n32, &a, &n32, &values, &workSize, &lwork, &iworkSize, &liwork, &info, 1, 1)
        guard info == 0 else { throw InterpError("the eigensolver's workspace query failed (info \(info))") }
        lwork = Int32(workSize.rounded(.up)); liwork = max(iworkSize, 1)
        var work = [Float](repeating: 0, count: Int(lwork)), iwork = [Int32](repeating: 0, count: Int(liwork))
        ssyevd_("V", "L", &n32, &a, &n32, &values, &work, &lwork, &iwork, &liwork, &info, 1, 1)
        guard info == 0 else { throw InterpError("the eigensolver did not converge (info \(info))") }
        // LAPACK returns eigenvector k as column k (column-major), i.e. row k of `a` read row-major.
        return (values, a)
    }

    /// Cyclic Jacobi in Double: the obvious, slow reference (ascending values, eigenvectors as rows).
    public static func naive(_ matrix: [Float], n: Int, sweeps: Int = 100) -> (values: [Double], vectors: [Double]) {
        var a = matrix.map(Double.init)
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        for _ in 0..<sweeps {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<max(n, p + 1) { off += a[p * n + q] * a[p * n + q] } }
            if off < 1e-22 { break }
            for p in 0..<n {
                for q in (p + 1)..<max(n, p + 1) where a[p * n + q] != 0 {
                    let theta = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q])
                    let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {   // rotate columns p, q
                        let akp = a[k * n + p], akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq
                        a[k * n + q] = s * akp + c * akq
                    }
                    for k in 0..<n {   // rotate rows p, q
                        let apk = a[p * n + k], aqk = a[q * n + k]
                        a[p * n + k] = c * apk - s * aqk
                        a[q * n + k] = s * apk + c * aqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        let order = (0..<n).sorted { a[$0 * n + $0] < a[$1 * n + $1] }
        return (order.map { a[$0 * n + $0] }, order.flatMap { k in (0..<n).map { v[$0 * n + k] } })
    }
}
