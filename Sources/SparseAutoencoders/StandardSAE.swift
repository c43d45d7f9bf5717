import InterpCore

/// SAELens v6's `standard` SAE: `z = ReLU((x − b_dec)·W_enc + b_enc)`, `x̂ = z·W_dec + b_dec`, trained on
/// `loss = Σ_d (x̂ − x)² averaged over the batch + l1 · mean_b Σ_i z_i·‖W_dec,i‖` (SAELens `standard_sae.py`,
/// `sae.py` `training_forward_pass`). The backward pass is written out by hand; `naiveLossAndGradients` is the slow
/// reference it is tested against, and finite differences check that one.
public enum StandardSAE {
    public struct Losses: Equatable, Sendable {
        public var mse: Float
        public var l1: Float
        public var total: Float { mse + l1 }
    }

    public struct StepResult {
        public var losses: Losses
        /// `[batch, d_sae]`
        public var featureActs: Tensor
        /// `[batch, d_in]`
        public var reconstruction: Tensor
        public var gradients: SAEParameters
    }

    /// Loss terms, activations and all four gradients for a batch `x [batch, d_in]`.
    public static func lossAndGradients(_ p: SAEParameters, x: Tensor, l1Coefficient: Float,
                                        applyBDecToInput: Bool = true) -> StepResult {
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        let invB = 1 / Float(B)
        let norms = p.decoderNorms
        // Encoder: centred input and pre-activations.
        var centred = x
        if applyBDecToInput {
            for b in 0..<B { for j in 0..<D { centred.scalars[b * D + j] -= p.bDec.scalars[j] } }
        }
        var pre = Tensor(zeros: [B, S])
        for b in 0..<B { for i in 0..<S { pre.scalars[b * S + i] = p.bEnc.scalars[i] } }
        gemm(centred, [B, D], p.wEnc, [D, S], into: &pre, accumulate: true)
        var z = pre
        for k in 0..<z.count where z.scalars[k] < 0 { z.scalars[k] = 0 }
        // Decoder and loss terms.
        var xhat = Tensor(zeros: [B, D])
        for b in 0..<B { for j in 0..<D { xhat.scalars[b * D + j] = p.bDec.scalars[j] } }
        gemm(z, [B, S], p.wDec, [S, D], into: &xhat, accumulate: true)
        var residual = xhat
        var squared: Double = 0
        for k in 0..<residual.count {
            residual.scalars[k] -= x.scalars[k]
            squared += Double(residual.scalars[k]) * Double(residual.scalars[k])
        }
        var columnSums = [Float](repeating: 0, count: S)      // Σ_b z_bi
        for b in 0..<B { for i in 0..<S { columnSums[i] += z.scalars[b * S + i] } }
        var weighted: Double = 0
        for i in 0..<S { weighted += Double(columnSums[i]) * Double(norms[i]) }
        let losses = Losses(mse: Float(squared / Double(B)), l1: Float(Double(l1Coefficient) * weighted / Double(B)))

        // Backward. G = ∂L/∂x̂ = 2(x̂ − x)/B.
        var g = residual
        for k in 0..<g.count { g.scalars[k] *= 2 * invB }
        var grads = SAEParameters.zeros(dIn: D, dSAE: S)
        gemm(z, [B, S], g, [B, D], into: &grads.wDec, transposeA: true)
        let l1Scale = l1Coefficient * invB
        for i in 0..<S where norms[i] > 0 {
            let factor = l1Scale * columnSums[i] / norms[i]
            for j in 0..<D { grads.wDec.scalars[i * D + j] += factor * p.wDec.scalars[i * D + j] }
        }
        var dz = Tensor(zeros: [B, S])
        for b in 0..<B { for i in 0..<S { dz.scalars[b * S + i] = l1Scale * norms[i] } }
        gemm(g, [B, D], p.wDec, [S, D], into: &dz, transposeB: true, accumulate: true)
        for k in 0..<dz.count where !(pre.scalars[k] > 0) { dz.scalars[k] = 0 }        // ReLU
        gemm(centred, [B, D], dz, [B, S], into: &grads.wEnc, transposeA: true)
        for b in 0..<B { for i in 0..<S { grads.bEnc.scalars[i] += dz.scalars[b * S + i] } }
        for b in 0..<B { for j in 0..<D { grads.bDec.scalars[j] += g.scalars[b * D + j] } }
        if applyBDecToInput {
            var dCentred = Tensor(zeros: [B, D])
            gemm(dz, [B, S], p.wEnc, [D, S], into: &dCentred, transposeB: true)
            for b in 0..<B { for j in 0..<D { grads.bDec.scalars[j] -= dCentred.scalars[b * D + j] } }
        }
        return StepResult(losses: losses, featureActs: z, reconstruction: xhat, gradients: grads)
    }

    /// `C (=|+=) op(A)·op(B)` for row-major tensors with their stored shapes.
    private static func gemm(_ a: Tensor, _ aShape: [Int], _ b: Tensor, _ bShape: [Int], into c: inout Tensor,
                             transposeA: Bool = false, transposeB: Bool = false, accumulate: Bool = false) {
        let m = transposeA ? aShape[1] : aShape[0], k = transposeA ? aShape[0] : aShape[1]
        let n = transposeB ? bShape[0] : bShape[1]
        a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeMutableBufferPointer { c in
            GEMM.multiply(m: m, n: n, k: k, a.baseAddress!, lda: aShape[1], transposeA: transposeA,
                          b.baseAddress!, ldb: bShape[1], transposeB: transposeB, c.baseAddress!, ldc: n,
                          beta: accumulate ? 1 : 0)
        } } }
    }

    /// The loss in Double, written as the definition reads.
    public static func naiveLoss(_ p: SAEParameters, x: Tensor, l1Coefficient: Double, applyBDecToInput: Bool = true) -> (mse: Double, l1: Double) {
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        var mse = 0.0, l1 = 0.0
        let norms = (0..<S).map { i in (0..<D).reduce(0.0) { $0 + Double(p.wDec.scalars[i * D + $1]) * Double(p.wDec.scalars[i * D + $1]) }.squareRoot() }
        for b in 0..<B {
            let input = (0..<D).map { Double(x.scalars[b * D + $0]) - (applyBDecToInput ? Double(p.bDec.scalars[$0]) : 0) }
            let z = (0..<S).map { i in max(0, (0..<D).reduce(Double(p.bEnc.scalars[i])) { $0 + input[$1] * Double(p.wEnc.scalars[$1 * S + i]) }) }
            for j in 0..<D {
                let xhat = (0..<S).reduce(Double(p.bDec.scalars[j])) { $0 + z[$1] * Double(p.wDec.scalars[$1 * D + j]) }
                mse += (xhat - Double(x.scalars[b * D + j])) * (xhat - Double(x.scalars[b * D + j]))
            }
            for i in 0..<S { l1 += abs(z[i]) * norms[i] }
        }
        return (mse / Double(B), l1Coefficient * l1 / Double(B))
    }

    /// Reference gradients: each parameter's derivative term by term, with loops in Double.
    public static func naiveGradients(_ p: SAEParameters, x: Tensor, l1Coefficient: Double, applyBDecToInput: Bool = true) -> SAEParameters {
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        var gWEnc = [Double](repeating: 0, count: D * S), gBEnc = [Double](repeating: 0, count: S)
        var gWDec = [Double](repeating: 0, count: S * D), gBDec = [Double](repeating: 0, count: D)
        let norms = (0..<S).map { i in (0..<D).reduce(0.0) { $0 + Double(p.wDec.scalars[i * D + $1]) * Double(p.wDec.scalars[i * D + $1]) }.squareRoot() }
        for b in 0..<B {
            let input = (0..<D).map { Double(x.scalars[b * D + $0]) - (applyBDecToInput ? Double(p.bDec.scalars[$0]) : 0) }
            let pre = (0..<S).map { i in (0..<D).reduce(Double(p.bEnc.scalars[i])) { $0 + input[$1] * Double(p.wEnc.scalars[$1 * S + i]) } }
            let z = pre.map { max(0, $0) }
            var g = [Double](repeating: 0, count: D)
            for j in 0..<D {
                let xhat = (0..<S).reduce(Double(p.bDec.scalars[j])) { $0 + z[$1] * Double(p.wDec.scalars[$1 * D + j]) }
                g[j] = 2 * (xhat - Double(x.scalars[b * D + j])) / Double(B)
            }
            for i in 0..<S {
                var dz = l1Coefficient * norms[i] / Double(B)
                for j in 0..<D {
                    gWDec[i * D + j] += z[i] * g[j] + l1Coefficient / Double(B) * z[i] * Double(p.wDec.scalars[i * D + j]) / norms[i]
                    dz += g[j] * Double(p.wDec.scalars[i * D + j])
                }
                let dPre = pre[i] > 0 ? dz : 0
                gBEnc[i] += dPre
                for j in 0..<D {
                    gWEnc[j * S + i] += input[j] * dPre
                    if applyBDecToInput { gBDec[j] -= dPre * Double(p.wEnc.scalars[j * S + i]) }
                }
            }
            for j in 0..<D { gBDec[j] += g[j] }
        }
        func t(_ v: [Double], _ shape: [Int]) -> Tensor { Tensor(shape: shape, scalars: v.map(Float.init)) }
        return SAEParameters(wEnc: t(gWEnc, [D, S]), bEnc: t(gBEnc, [S]), wDec: t(gWDec, [S, D]), bDec: t(gBDec, [D]))
    }
}
