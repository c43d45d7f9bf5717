import Dispatch
import Foundation
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
        /// Rows in which each latent fired, when the sparse path counted them.
        public var firingCounts: [Float]? = nil
    }

    /// Loss terms, activations and all four gradients for a batch `x [batch, d_in]`.
    /// `workspace` keeps the step's large buffers from one call to the next (allocating 64 MB arrays anew each step
    /// costs page faults); the results share its storage, so drop them before the next call to avoid copies.
    /// Once at most `sparseBelowDensity` of the activations are non-zero (L1 training gets there quickly), everything
    /// after the encoder product runs on the active latents only (`SparseCodeBackward`); before that, dense products.
    public static func lossAndGradients(_ p: SAEParameters, x: Tensor, l1Coefficient: Float,
                                        applyBDecToInput: Bool = true, sparseBelowDensity: Double = 0.05,
                                        workspace: SAEWorkspace = SAEWorkspace()) -> StepResult {
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        let invB = 1 / Float(B)
        let norms = p.decoderNorms
        let xs = x.scalars, wEnc = p.wEnc.scalars, wDec = p.wDec.scalars, bEnc = p.bEnc.scalars, bDec = p.bDec.scalars
        let w = workspace
        w.prepare(rows: B, dIn: D, dSAE: S)
        var centred = w.take(\.centred), pre = w.take(\.pre), xhat = w.take(\.xhat), g = w.take(\.g)
        var dCentred = w.take(\.dCentred), dz = w.take(\.dz), z = w.take(\.z)
        var gWEnc = w.take(\.gWEnc), gWDec = w.take(\.gWDec)
        var gBEnc = [Float](repeating: 0, count: S), gBDec = [Float](repeating: 0, count: D)
        var columnSums = [Float](repeating: 0, count: S)      // Σ_b z_bi
        var fired: [Float]? = nil
        centred.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: xs, count: B * D) }
        var squared = 0.0
        let l1Scale = l1Coefficient * invB
        centred.withUnsafeMutableBufferPointer { c in pre.withUnsafeMutableBufferPointer { pre in
        xhat.withUnsafeMutableBufferPointer { xhat in g.withUnsafeMutableBufferPointer { g in dz.withUnsafeMutableBufferPointer { dz in
        dCentred.withUnsafeMutableBufferPointer { dCentred in
        gWEnc.withUnsafeMutableBufferPointer { gWEnc in gWDec.withUnsafeMutableBufferPointer { gWDec in
        z.withUnsafeMutableBufferPointer { zBuffer in let zBuffer = zBuffer.baseAddress!
        xs.withUnsafeBufferPointer { xs in wEnc.withUnsafeBufferPointer { wEnc in wDec.withUnsafeBufferPointer { wDec in
            let c = c.baseAddress!, pre = pre.baseAddress!, xhat = xhat.baseAddress!, g = g.baseAddress!, dz = dz.baseAddress!
            // Encoder: centred input, pre-activations, ReLU kept in `dz` as z for now.
            if applyBDecToInput { for b in 0..<B { for j in 0..<D { c[b * D + j] -= bDec[j] } } }
            for b in 0..<B { (pre + b * S).update(from: bEnc, count: S) }
            GEMM.multiplySplittingRows(m: B, n: S, k: D, c, lda: D, wEnc.baseAddress!, ldb: S, pre, ldc: S, beta: 1)
            let zp = zBuffer
            parallelChunks(B * S, minimumChunk: 1 << 16) { range in for k in range { zp[k] = pre[k] > 0 ? pre[k] : 0 } }
            let z = UnsafePointer(zp)
            let active = UnsafeMutablePointer<Int>.allocate(capacity: B)
            defer { active.deallocate() }
            parallelChunks(B, minimumChunk: 16) { rows in for b in rows { active[b] = (0..<S).reduce(0) { pre[b * S + $1] > 0 ? $0 + 1 : $0 } } }
            let activeCount = (0..<B).reduce(0) { $0 + active[$1] }
            if Double(activeCount) <= sparseBelowDensity * Double(B * S) {
                var counts = [Float](repeating: 0, count: S)
                norms.withUnsafeBufferPointer { norms in gBEnc.withUnsafeMutableBufferPointer { gBEnc in
                gBDec.withUnsafeMutableBufferPointer { gBDec in columnSums.withUnsafeMutableBufferPointer { columnSums in
                counts.withUnsafeMutableBufferPointer { counts in
                    squared = sparseStep(B: B, D: D, S: S, z: z, centred: c, xs: xs.baseAddress!, wDec: wDec.baseAddress!, bDec: bDec,
                                         norms: norms.baseAddress!, l1Scale: l1Scale, xhat: xhat, g: g, gWDec: gWDec.baseAddress!,
                                         gWEnc: gWEnc.baseAddress!, gBEnc: gBEnc.baseAddress!, gBDec: gBDec.baseAddress!,
                                         columnSums: columnSums.baseAddress!, fired: counts.baseAddress!, workspace: w)
                } } } } }
                fired = counts
            } else {
            columnSums.withUnsafeMutableBufferPointer { GEMM.columnSums(z, rows: B, cols: S, into: $0.baseAddress!) }
            // Decoder.
            for b in 0..<B { (xhat + b * D).update(from: bDec, count: D) }
            GEMM.multiplySplittingRows(m: B, n: D, k: S, z, lda: S, wDec.baseAddress!, ldb: D, xhat, ldc: D, beta: 1)
            for k in 0..<(B * D) {
                let r = xhat[k] - xs[k]
                squared += Double(r) * Double(r)
                g[k] = 2 * r * invB
            }
            // ∂L/∂W_dec from the reconstruction.
            GEMM.multiplySplittingRows(m: S, n: D, k: B, z, lda: S, transposeA: true, g, ldb: D, gWDec.baseAddress!, ldc: D)
            // ∂L/∂z = G·W_decᵀ + l1·n/B, masked by the ReLU.
            let l1Row = norms.map { l1Scale * $0 }
            parallelChunks(B, minimumChunk: 64) { range in for b in range { (dz + b * S).update(from: l1Row, count: S) } }
            GEMM.multiplySplittingRows(m: B, n: S, k: D, g, lda: D, wDec.baseAddress!, ldb: D, transposeB: true, dz, ldc: S, beta: 1)
            parallelChunks(B * S, minimumChunk: 1 << 16) { range in for k in range where !(pre[k] > 0) { dz[k] = 0 } }
            GEMM.multiplySplittingRows(m: D, n: S, k: B, c, lda: D, transposeA: true, dz, ldb: S, gWEnc.baseAddress!, ldc: S)
            gBEnc.withUnsafeMutableBufferPointer { GEMM.columnSums(dz, rows: B, cols: S, into: $0.baseAddress!) }
            gBDec.withUnsafeMutableBufferPointer { GEMM.columnSums(g, rows: B, cols: D, into: $0.baseAddress!) }
            }
            if applyBDecToInput {
                // ∂L/∂b_dec through the input: −Σ_b (dz·W_encᵀ)_b.
                // = −W_enc·∂b_enc, since Σ_b dz_b = ∂b_enc: a matrix-vector product instead of a matrix product.
                gBEnc.withUnsafeBufferPointer { gBEnc in gBDec.withUnsafeMutableBufferPointer { gBDec in
                    SparseCodeBackward.subtractInputPath(gBDec: gBDec.baseAddress!, wEnc: wEnc.baseAddress!, gBEnc: gBEnc.baseAddress!, dIn: D, dSAE: S)
                } }
            }
            // L1 through the decoder norms.
            for i in 0..<S where norms[i] > 0 {
                let factor = l1Scale * columnSums[i] / norms[i]
                for j in 0..<D { gWDec[i * D + j] += factor * wDec[i * D + j] }
            }
        } } } } } } } } } } } }
        var weighted = 0.0
        for i in 0..<S { weighted += Double(columnSums[i]) * Double(norms[i]) }
        let losses = Losses(mse: Float(squared / Double(B)), l1: Float(Double(l1Coefficient) * weighted / Double(B)))
        w.giveBack(centred: centred, pre: pre, xhat: xhat, g: g, dCentred: dCentred, dz: dz, z: z, gWEnc: gWEnc, gWDec: gWDec)
        let grads = SAEParameters(wEnc: Tensor(shape: [D, S], scalars: gWEnc), bEnc: Tensor(shape: [S], scalars: gBEnc),
                                  wDec: Tensor(shape: [S, D], scalars: gWDec), bDec: Tensor(shape: [D], scalars: gBDec))
        return StepResult(losses: losses, featureActs: Tensor(shape: [B, S], scalars: z),
                          reconstruction: Tensor(shape: [B, D], scalars: xhat), gradients: grads, firingCounts: fired)
    }

    /// The sparse step after the encoder: rows (in parallel) reconstruct from their active latents and take the loss
    /// gradient; `SparseCodeBackward` does the rest, with the L1 term `l1·n_i/B` added to every active ∂pre. Writes
    /// ∂W_dec without the L1-through-the-norm term, which the caller adds from `columnSums`. Returns Σ (x̂ − x)².
    private static func sparseStep(B: Int, D: Int, S: Int, z: UnsafePointer<Float>, centred: UnsafePointer<Float>,
                                   xs: UnsafePointer<Float>, wDec: UnsafePointer<Float>, bDec: UnsafePointer<Float>,
                                   norms: UnsafePointer<Float>, l1Scale: Float, xhat: UnsafeMutablePointer<Float>,
                                   g: UnsafeMutablePointer<Float>, gWDec: UnsafeMutablePointer<Float>, gWEnc: UnsafeMutablePointer<Float>,
                                   gBEnc: UnsafeMutablePointer<Float>, gBDec: UnsafeMutablePointer<Float>,
                                   columnSums: UnsafeMutablePointer<Float>, fired: UnsafeMutablePointer<Float>, workspace w: SAEWorkspace) -> Double {
        let workers = max(1, min(processorCount, B / 64))
        let lists = w.entryLists(workers)
        let privateBDec = w.scratch(.privateSmall, count: workers * D)
        privateBDec.update(repeating: 0, count: workers * D)
        var sums = [Double](repeating: 0, count: workers)
        let invB = 1 / Float(B)
        sums.withUnsafeMutableBufferPointer { sums in
            let sums = sums.baseAddress!
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                let list = lists[worker], gBDec = privateBDec + worker * D
                var squared = 0.0
                for b in (B * worker / workers)..<(B * (worker + 1) / workers) {
                    let out = xhat + b * D, zRow = z + b * S
                    out.update(from: bDec, count: D)
                    for i in 0..<S where zRow[i] > 0 {
                        vectorAddScaled(out, zRow[i], wDec + i * D, D)
                        list.append(row: Int32(b), latent: Int32(i), value: zRow[i])
                    }
                    squared += SparseCodeBackward.rowGradient(reconstruction: out, input: xs + b * D, into: g + b * D, gBDec: gBDec,
                                                              count: D, invB: invB)
                }
                sums[worker] = squared
            }
        }
        let offsets = w.scratch(.denseGradient, count: S)
        for i in 0..<S { offsets[i] = l1Scale * norms[i] }
        let gWEncT = w.scratch(.encoderT, count: S * D)
        let gathered = SparseCodeBackward.gather(lists, latents: S, workspace: w)
        SparseCodeBackward.latentPass(gathered, D: D, S: S, g: g, second: nil, centred: centred, wDec: wDec, offset: offsets,
                                      gWDec: gWDec, gWEncT: gWEncT, gBEnc: gBEnc, fired: fired, valueSums: columnSums)
        parallelChunks(D, minimumChunk: 32) { range in TopKSAE.transpose(gWEncT, rows: S, cols: D, columns: range, into: gWEnc) }
        gBDec.update(repeating: 0, count: D)
        for worker in 0..<workers { vectorAddScaled(gBDec, 1, privateBDec + worker * D, D) }
        return sums.reduce(0, +)
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

extension StandardSAE {
    /// Training: L1 on `z·‖W_dec‖` with SAELens's coefficient warm-up.
    public struct Training: SAETrainingArchitecture {
        public static let name = "standard"
        public let l1Coefficient: Float
        public let l1WarmUpSteps: Int

        public init(settings: SAETrainingSettings) throws {
            l1Coefficient = settings.l1Coefficient
            l1WarmUpSteps = settings.l1WarmUpSteps
        }

        public func lossAndGradients(_ p: SAEParameters, x: Tensor, step: Int, deadMask: [Bool], workspace: SAEWorkspace) -> SAETrainingStep {
            let coefficient = SAETrainingStep.warmedUp(l1Coefficient, steps: l1WarmUpSteps, at: step)
            let r = StandardSAE.lossAndGradients(p, x: x, l1Coefficient: coefficient, workspace: workspace)
            return SAETrainingStep(losses: ["mse_loss": r.losses.mse, "l1_loss": r.losses.l1], featureActs: r.featureActs,
                                   reconstruction: r.reconstruction, gradients: r.gradients, firingCounts: r.firingCounts)
        }

        public func saved(_ p: SAEParameters, trackedThreshold: Double, config: inout SAELensConfig) -> SAEParameters {
            config.architecture = Inference.name
            return p
        }
    }

    /// Inference: `z = ReLU(pre)`, `x̂ = z·W_dec + b_dec`.
    public struct Inference: SAEInferenceArchitecture {
        public static let name = "standard"
        public let applyBDecToInput: Bool

        public init(config: SAELensConfig, file: String) throws {
            applyBDecToInput = config.applyBDecToInput
        }

        public func encode(_ p: SAEParameters, _ x: Tensor) -> Tensor {
            var z = SAEInferenceKernels.preActivations(p, x, applyBDecToInput: applyBDecToInput)
            z.withUnsafeMutableBufferPointer { z in
                parallelChunks(z.count, minimumChunk: 1 << 16) { range in for k in range where !(z[k] > 0) { z[k] = 0 } }
            }
            return z
        }

        public func referenceEncode(_ p: SAEParameters, _ x: Tensor) -> [Double] {
            SAEInferenceKernels.referencePreActivations(p, x, applyBDecToInput: applyBDecToInput).map { max($0, 0) }
        }
    }
}
