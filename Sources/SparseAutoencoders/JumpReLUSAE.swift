import Dispatch
import Foundation
import InterpCore

/// SAELens v6's `jumprelu` training SAE (`jumprelu_sae.py`, DeepMind's "step" sparsity loss):
/// `pre = (x − b_dec)·W_enc + b_enc`, `z = pre·[pre > θ]`, `x̂ = z·W_dec + b_dec`,
/// loss = `Σ_d (x̂ − x)²` averaged over the batch `+ c · mean_b Σ_i [pre_bi > θ_i]`.
/// The step has no gradient; a straight-through estimator with a rectangle kernel of width `ε` (the bandwidth) gives
/// the threshold one: `∂θ_i = −Σ_b (θ_i/ε)·K((pre_bi − θ_i)/ε)·∂z_bi − Σ_b (1/ε)·K(…)·c/B` with `K(u) = [−½ < u < ½]`;
/// `pre` gets `[pre > θ]·∂z` (the estimator does not reach the input, SAELens's default). The threshold is kept ≥ 0 by
/// projection before each step (the trainer does that, as SAELens does).
public enum JumpReLUSAE {
    public struct Options: Equatable, Sendable {
        public var bandwidth: Float
        /// The L0 coefficient for this step (after any warm-up).
        public var l0Coefficient: Float
        public var applyBDecToInput: Bool
        /// Above this fraction of active latents the step uses dense products (early in training, when the
        /// thresholds are still low, most latents fire); below it, the sparse per-latent path.
        public var sparseBelowDensity: Double

        public init(bandwidth: Float = 0.05, l0Coefficient: Float = 1, applyBDecToInput: Bool = true, sparseBelowDensity: Double = 0.05) {
            self.bandwidth = bandwidth
            self.l0Coefficient = l0Coefficient
            self.applyBDecToInput = applyBDecToInput
            self.sparseBelowDensity = sparseBelowDensity
        }
    }

    public struct StepResult {
        public var mse: Float
        public var l0Loss: Float
        public var total: Float { mse + l0Loss }
        public var featureActs: Tensor
        public var reconstruction: Tensor
        /// Includes `threshold`.
        public var gradients: SAEParameters
    }

    /// `K((pre − θ)/ε)`, computed as PyTorch does it in float.
    @inline(__always)
    static func inWindow(_ pre: Float, _ threshold: Float, _ bandwidth: Float) -> Bool {
        let u = (pre - threshold) / bandwidth
        return u > -0.5 && u < 0.5
    }

    /// The fast path: the encoder forward is a GEMM; the rest works per row on the active latents (and, for the
    /// threshold's estimator, the latents inside the kernel window): the reconstruction, ∂W_dec, ∂z, ∂W_enc (as rows
    /// of its transpose), ∂b_enc, ∂θ, and ∂b_dec through the input as `−W_enc·∂b_enc`.
    public static func lossAndGradients(_ p: SAEParameters, x: Tensor, options o: Options,
                                        workspace: SAEWorkspace = SAEWorkspace()) -> StepResult {
        precondition(p.threshold != nil, "a JumpReLU SAE needs a threshold")
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        let invB = 1 / Float(B), eps = o.bandwidth
        let stepGradient = o.l0Coefficient * invB / eps
        let w = workspace
        let workers = max(1, min(processorCount, B / 64))
        var z = w.take(\.z, count: B * S), xhat = w.take(\.xhat, count: B * D)
        var gWEnc = w.take(\.gWEnc, count: D * S), gWDec = w.take(\.gWDec, count: S * D)
        let centred = w.scratch(.centred, count: B * D), pre = w.scratch(.pre, count: B * S), g = w.scratch(.g, count: B * D)
        let privateDecoder = w.scratch(.privateDecoder, count: (workers - 1) * S * D)
        let privateEncoderT = w.scratch(.privateEncoderT, count: workers * S * D)
        let smallStride = 2 * S + D
        let privateSmall = w.scratch(.privateSmall, count: workers * smallStride)
        var gBEnc = [Float](repeating: 0, count: S), gBDec = [Float](repeating: 0, count: D), gTheta = [Float](repeating: 0, count: S)
        var sums = [Double](repeating: 0, count: 2 * workers)
        z.withUnsafeMutableBufferPointer { z in xhat.withUnsafeMutableBufferPointer { xhat in
        gWEnc.withUnsafeMutableBufferPointer { gWEnc in gWDec.withUnsafeMutableBufferPointer { gWDec in
        sums.withUnsafeMutableBufferPointer { sums in
        x.withUnsafeBufferPointer { xs in p.wEnc.withUnsafeBufferPointer { wEnc in p.wDec.withUnsafeBufferPointer { wDec in
        p.bEnc.withUnsafeBufferPointer { bEnc in p.bDec.withUnsafeBufferPointer { bDec in p.threshold!.withUnsafeBufferPointer { theta in
            let z = z.baseAddress!, xhat = xhat.baseAddress!, gWDec = gWDec.baseAddress!, sums = sums.baseAddress!
            let xs = xs.baseAddress!, wDec = wDec.baseAddress!, theta = theta.baseAddress!, bDec = bDec.baseAddress!
            centred.update(from: xs, count: B * D)
            if o.applyBDecToInput { for b in 0..<B { for j in 0..<D { centred[b * D + j] -= bDec[j] } } }
            for b in 0..<B { (pre + b * S).update(from: bEnc.baseAddress!, count: S) }
            GEMM.multiplySplittingRows(m: B, n: S, k: D, centred, lda: D, wEnc.baseAddress!, ldb: S, pre, ldc: S, beta: 1)
            var activeCount = 0
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: B)
            defer { counts.deallocate() }
            parallelChunks(B, minimumChunk: 16) { rows in
                for b in rows {
                    var c = 0
                    for i in 0..<S where pre[b * S + i] > theta[i] { c += 1 }
                    counts[b] = c
                }
            }
            for b in 0..<B { activeCount += counts[b] }
            if Double(activeCount) > o.sparseBelowDensity * Double(B * S) {
                denseStep(B: B, D: D, S: S, pre: pre, centred: centred, g: g, xs: xs, theta: theta, wEnc: wEnc.baseAddress!,
                          wDec: wDec, bDec: bDec, z: z, xhat: xhat, gWDec: gWDec, gWEnc: gWEnc.baseAddress!,
                          small: privateSmall, smallStride: smallStride, workers: workers, options: o, workspace: w, sums: sums)
            } else {
            z.update(repeating: 0, count: B * S)
            gWDec.update(repeating: 0, count: S * D)
            privateDecoder.update(repeating: 0, count: (workers - 1) * S * D)
            privateEncoderT.update(repeating: 0, count: workers * S * D)
            privateSmall.update(repeating: 0, count: workers * smallStride)
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                let gWDec = worker == 0 ? gWDec : privateDecoder + (worker - 1) * S * D
                let gWEncT = privateEncoderT + worker * S * D
                let small = privateSmall + worker * smallStride
                let gBEnc = small, gTheta = small + S, gBDec = small + 2 * S
                let active = UnsafeMutablePointer<Int>.allocate(capacity: S), window = UnsafeMutablePointer<Int>.allocate(capacity: S)
                defer { active.deallocate(); window.deallocate() }
                var squared = 0.0, firing = 0
                for b in (B * worker / workers)..<(B * (worker + 1) / workers) {
                    let preRow = pre + b * S, c = centred + b * D, xRow = xs + b * D
                    var nActive = 0, nWindow = 0
                    for i in 0..<S {
                        let v = preRow[i], t = theta[i]
                        if v > t { active[nActive] = i; nActive += 1 }
                        if inWindow(v, t, eps) { window[nWindow] = i; nWindow += 1 }
                    }
                    firing += nActive
                    let out = xhat + b * D
                    out.update(from: bDec, count: D)
                    for a in 0..<nActive {
                        let i = active[a]
                        z[b * S + i] = preRow[i]
                        vectorAddScaled(out, preRow[i], wDec + i * D, D)
                    }
                    let gRow = g + b * D
                    squared += SparseCodeBackward.rowGradient(reconstruction: out, input: xRow, into: gRow, gBDec: gBDec, count: D, invB: invB)
                    // Active latents: ∂W_dec, ∂z, and ∂pre = ∂z into the encoder; window latents: the threshold's estimator.
                    for a in 0..<nActive {
                        let i = active[a]
                        let dz = vectorAddScaledAndDot(gWDec + i * D, preRow[i], gRow, dot: wDec + i * D, D)
                        vectorAddScaled(gWEncT + i * D, dz, c, D)
                        gBEnc[i] += dz
                        if inWindow(preRow[i], theta[i], eps) { gTheta[i] -= theta[i] / eps * dz }
                    }
                    for t in 0..<nWindow {
                        let i = window[t]
                        gTheta[i] -= stepGradient
                        if !(preRow[i] > theta[i]) {
                            // Inactive but inside the window: ∂z is still needed for the estimator.
                            let dz = vectorDot(gRow, wDec + i * D, D)
                            gTheta[i] -= theta[i] / eps * dz
                        }
                    }
                }
                sums[2 * worker] = squared
                sums[2 * worker + 1] = Double(firing)
            }
            for w in 1..<max(workers, 1) {
                vectorAddScaled(gWDec, 1, privateDecoder + (w - 1) * S * D, S * D)
                vectorAddScaled(privateEncoderT, 1, privateEncoderT + w * S * D, S * D)
            }
            TopKSAE.transpose(privateEncoderT, rows: S, cols: D, into: gWEnc.baseAddress!)
            }
            for w in 0..<workers {
                let small = privateSmall + w * smallStride
                for i in 0..<S { gBEnc[i] += small[i]; gTheta[i] += small[S + i] }
                for j in 0..<D { gBDec[j] += small[2 * S + j] }
            }
            if o.applyBDecToInput {
                gBEnc.withUnsafeBufferPointer { gBEnc in gBDec.withUnsafeMutableBufferPointer { gBDec in
                    SparseCodeBackward.subtractInputPath(gBDec: gBDec.baseAddress!, wEnc: wEnc.baseAddress!, gBEnc: gBEnc.baseAddress!, dIn: D, dSAE: S)
                } }
            }
        } } } } } } } } } } }
        var squared = 0.0, firing = 0.0
        for w in 0..<workers { squared += sums[2 * w]; firing += sums[2 * w + 1] }
        let grads = SAEParameters(wEnc: Tensor(shape: [D, S], scalars: gWEnc), bEnc: Tensor(shape: [S], scalars: gBEnc),
                                  wDec: Tensor(shape: [S, D], scalars: gWDec), bDec: Tensor(shape: [D], scalars: gBDec),
                                  threshold: Tensor(shape: [S], scalars: gTheta))
        let result = StepResult(mse: Float(squared / Double(B)), l0Loss: Float(Double(o.l0Coefficient) * firing / Double(B)),
                                featureActs: Tensor(shape: [B, S], scalars: z), reconstruction: Tensor(shape: [B, D], scalars: xhat),
                                gradients: grads)
        w.z = z; w.xhat = xhat; w.gWEnc = gWEnc; w.gWDec = gWDec
        return result
    }

    /// The dense step: four products through BLAS, the estimator and the mask applied element by element. Writes
    /// ∂b_enc, ∂θ and ∂b_dec into worker 0's slots of `small` (the others zeroed) and the loss sums into `sums`.
    private static func denseStep(B: Int, D: Int, S: Int, pre: UnsafeMutablePointer<Float>, centred: UnsafeMutablePointer<Float>,
                                  g: UnsafeMutablePointer<Float>, xs: UnsafePointer<Float>, theta: UnsafePointer<Float>,
                                  wEnc: UnsafePointer<Float>, wDec: UnsafePointer<Float>, bDec: UnsafePointer<Float>,
                                  z: UnsafeMutablePointer<Float>, xhat: UnsafeMutablePointer<Float>, gWDec: UnsafeMutablePointer<Float>,
                                  gWEnc: UnsafeMutablePointer<Float>, small: UnsafeMutablePointer<Float>, smallStride: Int,
                                  workers: Int, options o: Options, workspace w: SAEWorkspace, sums: UnsafeMutablePointer<Double>) {
        let invB = 1 / Float(B), eps = o.bandwidth, stepGradient = o.l0Coefficient * invB / eps
        let dPre = w.scratch(.denseGradient, count: B * S)
        small.update(repeating: 0, count: workers * smallStride)
        let gBEnc = small, gTheta = small + S, gBDec = small + 2 * S
        var firing = 0
        for b in 0..<B { for i in 0..<S { let v = pre[b * S + i]; z[b * S + i] = v > theta[i] ? v : 0 } }
        for b in 0..<B { (xhat + b * D).update(from: bDec, count: D) }
        GEMM.multiplySplittingRows(m: B, n: D, k: S, z, lda: S, wDec, ldb: D, xhat, ldc: D, beta: 1)
        var squared = 0.0
        for k in 0..<(B * D) {
            let r = xhat[k] - xs[k]
            squared += Double(r) * Double(r)
            g[k] = 2 * r * invB
        }
        GEMM.columnSums(g, rows: B, cols: D, into: gBDec)
        GEMM.multiplySplittingRows(m: S, n: D, k: B, z, lda: S, transposeA: true, g, ldb: D, gWDec, ldc: D)
        GEMM.multiplySplittingRows(m: B, n: S, k: D, g, lda: D, wDec, ldb: D, transposeB: true, dPre, ldc: S)
        // The estimator on window entries, then ∂pre = [pre > θ]·∂z; columns split across cores (each owns its ∂θ_i).
        parallelChunks(S, minimumChunk: 64) { columns in
            for b in 0..<B {
                for i in columns {
                    let k = b * S + i, v = pre[k], t = theta[i]
                    if inWindow(v, t, eps) { gTheta[i] -= t / eps * dPre[k] + stepGradient }
                    if !(v > t) { dPre[k] = 0 }
                }
            }
        }
        for k in 0..<(B * S) where z[k] != 0 { firing += 1 }
        GEMM.multiplySplittingRows(m: D, n: S, k: B, centred, lda: D, transposeA: true, dPre, ldb: S, gWEnc, ldc: S)
        GEMM.columnSums(dPre, rows: B, cols: S, into: gBEnc)
        sums.update(repeating: 0, count: 2 * workers)
        sums[0] = squared
        sums[1] = Double(firing)
    }

    /// Reference: SAELens's autograd graph transcribed term by term with dense products (no sparsity).
    public static func denseReference(_ p: SAEParameters, x: Tensor, options o: Options) -> StepResult {
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        let theta = p.threshold!.scalars, eps = o.bandwidth
        var centred = x.scalars
        if o.applyBDecToInput { for b in 0..<B { for j in 0..<D { centred[b * D + j] -= p.bDec.scalars[j] } } }
        let pre = (0..<B).flatMap { b in (0..<S).map { i in p.bEnc.scalars[i] + (0..<D).reduce(Float(0)) { $0 + centred[b * D + $1] * p.wEnc.scalars[$1 * S + i] } } }
        let z = pre.indices.map { pre[$0] > theta[$0 % S] ? pre[$0] : 0 }
        var xhat = [Float](repeating: 0, count: B * D), g = xhat
        var squared = 0.0
        for b in 0..<B {
            for j in 0..<D {
                xhat[b * D + j] = p.bDec.scalars[j] + (0..<S).reduce(Float(0)) { $0 + z[b * S + $1] * p.wDec.scalars[$1 * D + j] }
                let r = xhat[b * D + j] - x.scalars[b * D + j]
                squared += Double(r) * Double(r)
                g[b * D + j] = 2 * r / Float(B)
            }
        }
        let firing = z.indices.filter { pre[$0] > theta[$0 % S] }.count
        var grads = SAEParameters.zeros(dIn: D, dSAE: S, threshold: true)
        for b in 0..<B {
            for i in 0..<S {
                let k = b * S + i
                let dz = (0..<D).reduce(Float(0)) { $0 + g[b * D + $1] * p.wDec.scalars[i * D + $1] }
                for j in 0..<D { grads.wDec.scalars[i * D + j] += z[k] * g[b * D + j] }
                let window: Float = inWindow(pre[k], theta[i], eps) ? 1 : 0
                grads.threshold!.scalars[i] -= theta[i] / eps * window * dz + window / eps * o.l0Coefficient / Float(B)
                let dPre: Float = pre[k] > theta[i] ? dz : 0
                grads.bEnc.scalars[i] += dPre
                for j in 0..<D {
                    grads.wEnc.scalars[j * S + i] += centred[b * D + j] * dPre
                    if o.applyBDecToInput { grads.bDec.scalars[j] -= dPre * p.wEnc.scalars[j * S + i] }
                }
            }
            for j in 0..<D { grads.bDec.scalars[j] += g[b * D + j] }
        }
        return StepResult(mse: Float(squared / Double(B)), l0Loss: o.l0Coefficient * Float(firing) / Float(B),
                          featureActs: Tensor(shape: [B, S], scalars: z), reconstruction: Tensor(shape: [B, D], scalars: xhat),
                          gradients: grads)
    }

    /// The reconstruction loss in Double (piecewise smooth in every parameter but the threshold).
    public static func naiveMSE(_ p: SAEParameters, x: Tensor, applyBDecToInput: Bool = true) -> Double {
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        var mse = 0.0
        for b in 0..<B {
            let input = (0..<D).map { Double(x.scalars[b * D + $0]) - (applyBDecToInput ? Double(p.bDec.scalars[$0]) : 0) }
            let z = (0..<S).map { i -> Double in
                let v = (0..<D).reduce(Double(p.bEnc.scalars[i])) { $0 + input[$1] * Double(p.wEnc.scalars[$1 * S + i]) }
                return v > Double(p.threshold!.scalars[i]) ? v : 0
            }
            for j in 0..<D {
                let xhat = (0..<S).reduce(Double(p.bDec.scalars[j])) { $0 + z[$1] * Double(p.wDec.scalars[$1 * D + j]) }
                mse += (xhat - Double(x.scalars[b * D + j])) * (xhat - Double(x.scalars[b * D + j]))
            }
        }
        return mse / Double(B)
    }
}

extension JumpReLUSAE {
    /// Training: the step L0 loss with SAELens's coefficient warm-up and the rectangle-kernel estimator.
    public struct Training: SAETrainingArchitecture {
        public static let name = "jumprelu"
        public let l0Coefficient: Float
        public let l0WarmUpSteps: Int
        public let bandwidth: Float
        public var hasThreshold: Bool { true }

        public init(settings: SAETrainingSettings) throws {
            guard settings.bandwidth > 0, settings.bandwidth.isFinite else { throw InterpError("--bandwidth must be positive") }
            guard settings.initialThreshold >= 0, settings.initialThreshold.isFinite else { throw InterpError("--initial-threshold must be non-negative") }
            guard settings.l0Coefficient >= 0, settings.l0Coefficient.isFinite else { throw InterpError("--l0-coefficient must be non-negative") }
            l0Coefficient = settings.l0Coefficient
            l0WarmUpSteps = settings.l0WarmUpSteps
            bandwidth = settings.bandwidth
        }

        public func lossAndGradients(_ p: SAEParameters, x: Tensor, step: Int, deadMask: [Bool], workspace: SAEWorkspace) -> SAETrainingStep {
            let o = Options(bandwidth: bandwidth, l0Coefficient: SAETrainingStep.warmedUp(l0Coefficient, steps: l0WarmUpSteps, at: step))
            let r = JumpReLUSAE.lossAndGradients(p, x: x, options: o, workspace: workspace)
            return SAETrainingStep(losses: ["mse_loss": r.mse, "l0_loss": r.l0Loss], featureActs: r.featureActs,
                                   reconstruction: r.reconstruction, gradients: r.gradients)
        }

        public func saved(_ p: SAEParameters, trackedThreshold: Double, config: inout SAELensConfig) -> SAEParameters {
            config.architecture = Inference.name
            return p
        }
    }

    /// Inference (SAELens's `JumpReLUSAE.encode`): `z = ReLU(pre)·[pre > θ]`, `x̂ = z·W_dec + b_dec`. With θ ≥ 0 the
    /// ReLU changes nothing; with a negative saved threshold it keeps negative values out.
    public struct Inference: SAEInferenceArchitecture {
        public static let name = "jumprelu"
        public static var hasThreshold: Bool { true }
        public let applyBDecToInput: Bool

        public init(config: SAELensConfig, file: String) throws {
            applyBDecToInput = config.applyBDecToInput
        }

        public func encode(_ p: SAEParameters, _ x: Tensor) -> Tensor {
            let S = p.dSAE
            var z = SAEInferenceKernels.preActivations(p, x, applyBDecToInput: applyBDecToInput)
            z.withUnsafeMutableBufferPointer { z in p.threshold!.withUnsafeBufferPointer { theta in
                parallelChunks(z.count / max(S, 1), minimumChunk: 16) { rows in
                    for b in rows {
                        for i in 0..<S where !(z[b * S + i] > theta[i] && z[b * S + i] > 0) { z[b * S + i] = 0 }
                    }
                }
            } }
            return z
        }

        public func referenceEncode(_ p: SAEParameters, _ x: Tensor) -> [Double] {
            let S = p.dSAE
            return SAEInferenceKernels.referencePreActivations(p, x, applyBDecToInput: applyBDecToInput).enumerated().map { k, pre in
                pre > Double(p.threshold!.scalars[k % S]) ? max(pre, 0) : 0
            }
        }
    }
}
