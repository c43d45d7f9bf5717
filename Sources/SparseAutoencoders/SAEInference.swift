import Dispatch
import InterpCore

/// The inference face of one saved SAE architecture (SAELens's `SAE` classes, by cfg.json's `architecture`): encode
/// and decode, with no training step and no gradients. Each has a slow reference in Double written as the definition
/// reads, which the fast path is tested against.
public protocol SAEInferenceArchitecture: Sendable {
    /// `architecture` in cfg.json.
    static var name: String { get }
    /// Whether the weights include `threshold [d_sae]`.
    static var hasThreshold: Bool { get }
    /// Reads what this architecture needs from cfg.json (whose sizes are already checked); the error names the field.
    init(config: SAELensConfig, file: String) throws
    /// Latent activations `z [n, d_sae]` of `x [n, d_in]`.
    func encode(_ p: SAEParameters, _ x: Tensor) -> Tensor
    /// The reconstruction `[n, d_in]` of latents `z [n, d_sae]`.
    func decode(_ p: SAEParameters, _ z: Tensor) -> Tensor
    /// `encode`, in Double, as the definition reads.
    func referenceEncode(_ p: SAEParameters, _ x: Tensor) -> [Double]
    /// `decode`, in Double, as the definition reads.
    func referenceDecode(_ p: SAEParameters, _ z: [Double], rows: Int) -> [Double]
}

extension SAEInferenceArchitecture {
    public static var hasThreshold: Bool { false }

    public func decode(_ p: SAEParameters, _ z: Tensor) -> Tensor {
        SAEInferenceKernels.decode(p, z, latentScale: nil)
    }

    public func referenceDecode(_ p: SAEParameters, _ z: [Double], rows: Int) -> [Double] {
        SAEInferenceKernels.referenceDecode(p, z, rows: rows, latentScale: nil)
    }
}

/// The products every architecture's inference shares.
public enum SAEInferenceKernels {
    /// Below this fraction of non-zero latents, `decode` adds up the active decoder rows; above it, one dense product.
    /// The same density at which the training steps switch to their sparse paths.
    public static let sparseBelowDensity = 0.05

    /// `pre = (x − b_dec)·W_enc + b_enc` (`x` as given when `applyBDecToInput` is false), `[n, d_sae]`.
    public static func preActivations(_ p: SAEParameters, _ x: Tensor, applyBDecToInput: Bool) -> Tensor {
        let n = x.shape[0], D = p.dIn, S = p.dSAE
        var centred = x
        if applyBDecToInput {
            centred.withUnsafeMutableBufferPointer { c in p.bDec.withUnsafeBufferPointer { bDec in
                parallelChunks(n, minimumChunk: 64) { rows in
                    for b in rows { for j in 0..<D { c[b * D + j] -= bDec[j] } }
                }
            } }
        }
        var pre = Tensor(zeros: [n, S])
        pre.withUnsafeMutableBufferPointer { pre in
            p.bEnc.withUnsafeBufferPointer { bEnc in for b in 0..<n { (pre.baseAddress! + b * S).update(from: bEnc.baseAddress!, count: S) } }
            centred.withUnsafeBufferPointer { c in p.wEnc.withUnsafeBufferPointer { w in
                GEMM.multiplySplittingRows(m: n, n: S, k: D, c.baseAddress!, lda: D, w.baseAddress!, ldb: S, pre.baseAddress!, ldc: S, beta: 1)
            } }
        }
        return pre
    }

    /// `x̂ = (z ⊙ s)·W_dec + b_dec` with `s` the per-latent `latentScale` (1 if nil), `[n, d_in]`: sparse codes add up
    /// their active decoder rows, row by row in parallel; dense codes go through one product.
    public static func decode(_ p: SAEParameters, _ z: Tensor, latentScale: [Float]?) -> Tensor {
        let n = z.shape[0], D = p.dIn, S = p.dSAE
        var xhat = Tensor(zeros: [n, D])
        let nonZero = z.withUnsafeBufferPointer { z in z.reduce(0) { $1 != 0 ? $0 + 1 : $0 } }
        xhat.withUnsafeMutableBufferPointer { out in z.withUnsafeBufferPointer { z in
        p.wDec.withUnsafeBufferPointer { wDec in p.bDec.withUnsafeBufferPointer { bDec in
            let out = out.baseAddress!, z = z.baseAddress!, wDec = wDec.baseAddress!, bDec = bDec.baseAddress!
            for b in 0..<n { (out + b * D).update(from: bDec, count: D) }
            if Double(nonZero) <= sparseBelowDensity * Double(n * S) {
                parallelChunks(n, minimumChunk: 16) { rows in
                    for b in rows {
                        let zRow = z + b * S, row = out + b * D
                        for i in 0..<S where zRow[i] != 0 { vectorAddScaled(row, zRow[i] * (latentScale?[i] ?? 1), wDec + i * D, D) }
                    }
                }
            } else if let latentScale {
                var scaled = [Float](repeating: 0, count: n * S)
                for b in 0..<n { for i in 0..<S { scaled[b * S + i] = z[b * S + i] * latentScale[i] } }
                GEMM.multiplySplittingRows(m: n, n: D, k: S, scaled, lda: S, wDec, ldb: D, out, ldc: D, beta: 1)
            } else {
                GEMM.multiplySplittingRows(m: n, n: D, k: S, z, lda: S, wDec, ldb: D, out, ldc: D, beta: 1)
            }
        } } } }
        return xhat
    }

    /// `pre` in Double, term by term.
    public static func referencePreActivations(_ p: SAEParameters, _ x: Tensor, applyBDecToInput: Bool) -> [Double] {
        let n = x.shape[0], D = p.dIn, S = p.dSAE
        var pre = [Double](repeating: 0, count: n * S)
        for b in 0..<n {
            let input = (0..<D).map { Double(x.scalars[b * D + $0]) - (applyBDecToInput ? Double(p.bDec.scalars[$0]) : 0) }
            for i in 0..<S {
                pre[b * S + i] = (0..<D).reduce(Double(p.bEnc.scalars[i])) { $0 + input[$1] * Double(p.wEnc.scalars[$1 * S + i]) }
            }
        }
        return pre
    }

    /// `decode` in Double, term by term.
    public static func referenceDecode(_ p: SAEParameters, _ z: [Double], rows n: Int, latentScale: [Float]?) -> [Double] {
        let D = p.dIn, S = p.dSAE
        var xhat = [Double](repeating: 0, count: n * D)
        for b in 0..<n {
            for j in 0..<D {
                xhat[b * D + j] = (0..<S).reduce(Double(p.bDec.scalars[j])) { sum, i in
                    sum + z[b * S + i] * Double(latentScale?[i] ?? 1) * Double(p.wDec.scalars[i * D + j])
                }
            }
        }
        return xhat
    }
}
