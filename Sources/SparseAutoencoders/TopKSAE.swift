import Dispatch
import Foundation
import InterpCore

/// SAELens v6's `topk` training SAE (`topk_sae.py`): with decoder-norm rescaling,
/// `h = ((x − b_dec)·W_enc + b_enc) ⊙ n`, `z = ReLU` of the k largest entries of h per row (0 elsewhere),
/// `x̂ = (z / n)·W_dec + b_dec`, where `n_i = ‖W_dec,i‖`. Loss = `Σ_d (x̂ − x)²` averaged over the batch, plus AuxK
/// when latents are dead: the `k_aux = min(d_in/2, n_dead)` largest pre-activations among dead latents (no ReLU)
/// reconstruct the detached residual `x − x̂` through `(a / n)·W_dec`, weighted by `coefficient · min(n_dead/(d_in/2), 1)`.
public enum TopKSAE {
    public struct Options: Equatable, Sendable {
        public var k: Int
        public var auxCoefficient: Float
        public var rescaleByDecoderNorm: Bool
        public var applyBDecToInput: Bool

        public init(k: Int, auxCoefficient: Float = 1, rescaleByDecoderNorm: Bool = true, applyBDecToInput: Bool = true) {
            self.k = k
            self.auxCoefficient = auxCoefficient
            self.rescaleByDecoderNorm = rescaleByDecoderNorm
            self.applyBDecToInput = applyBDecToInput
        }
    }

    public struct StepResult {
        public var mse: Float
        public var aux: Float
        public var total: Float { mse + aux }
        public var featureActs: Tensor
        public var reconstruction: Tensor
        public var gradients: SAEParameters
    }

    /// Indices of the `k` largest values of `row` (any order).
    static func topIndices(_ row: UnsafePointer<Float>, count: Int, k: Int, allowed: ((Int) -> Bool)? = nil) -> [Int] {
        // A min-heap of the best k so far: O(count · log k).
        var heap: [(value: Float, index: Int)] = []
        heap.reserveCapacity(k)
        func siftDown(_ start: Int) {
            var parent = start
            while true {
                let l = 2 * parent + 1, r = l + 1
                var m = parent
                if l < heap.count && heap[l].value < heap[m].value { m = l }
                if r < heap.count && heap[r].value < heap[m].value { m = r }
                if m == parent { return }
                heap.swapAt(parent, m)
                parent = m
            }
        }
        for i in 0..<count where allowed?(i) ?? true {
            let v = row[i]
            if heap.count < k {
                heap.append((v, i))
                var child = heap.count - 1
                while child > 0 && heap[child].value < heap[(child - 1) / 2].value {
                    heap.swapAt(child, (child - 1) / 2)
                    child = (child - 1) / 2
                }
            } else if let top = heap.first, v > top.value {
                heap[0] = (v, i)
                siftDown(0)
            }
        }
        return heap.map(\.index)
    }

    /// Reference: every product dense (six GEMMs). `lossAndGradients` must agree with it.
    public static func denseReference(_ p: SAEParameters, x: Tensor, options o: Options, deadMask: [Bool]?) -> StepResult {
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        let invB = 1 / Float(B)
        let norms = o.rescaleByDecoderNorm ? p.decoderNorms : [Float](repeating: 1, count: S)
        var centred = x
        if o.applyBDecToInput {
            for b in 0..<B { for j in 0..<D { centred.scalars[b * D + j] -= p.bDec.scalars[j] } }
        }
        var pre = Tensor(zeros: [B, S])                       // before the norm scaling
        for b in 0..<B { for i in 0..<S { pre.scalars[b * S + i] = p.bEnc.scalars[i] } }
        matmul(centred, p.wEnc, into: &pre, m: B, n: S, k: D, accumulate: true)
        var hidden = pre
        for b in 0..<B { for i in 0..<S { hidden.scalars[b * S + i] *= norms[i] } }
        var z = Tensor(zeros: [B, S])
        var selected: [[Int]] = []
        hidden.withUnsafeBufferPointer { h in
            for b in 0..<B {
                let chosen = topIndices(h.baseAddress! + b * S, count: S, k: min(o.k, S))
                selected.append(chosen)
                for i in chosen { z.scalars[b * S + i] = max(h[b * S + i], 0) }
            }
        }
        var coefficients = z                                 // z / n, what multiplies W_dec
        for b in 0..<B { for i in 0..<S { coefficients.scalars[b * S + i] /= norms[i] } }
        var xhat = Tensor(zeros: [B, D])
        for b in 0..<B { for j in 0..<D { xhat.scalars[b * D + j] = p.bDec.scalars[j] } }
        matmul(coefficients, p.wDec, into: &xhat, m: B, n: D, k: S, accumulate: true)
        var squared = 0.0
        var g = Tensor(zeros: [B, D])                        // ∂L/∂x̂
        for k in 0..<g.count {
            let r = xhat.scalars[k] - x.scalars[k]
            squared += Double(r) * Double(r)
            g.scalars[k] = 2 * r * invB
        }

        var grads = SAEParameters.zeros(dIn: D, dSAE: S)
        var dNorm = [Float](repeating: 0, count: S)
        var dHidden = Tensor(zeros: [B, S])
        // Main reconstruction.
        matmul(coefficients, g, into: &grads.wDec, m: S, n: D, k: B, transposeA: true)
        for b in 0..<B { for j in 0..<D { grads.bDec.scalars[j] += g.scalars[b * D + j] } }
        var dCoefficients = Tensor(zeros: [B, S])
        matmul(g, p.wDec, into: &dCoefficients, m: B, n: S, k: D, transposeB: true)
        for b in 0..<B {
            for i in selected[b] where hidden.scalars[b * S + i] > 0 {
                let dc = dCoefficients.scalars[b * S + i]
                dHidden.scalars[b * S + i] += dc / norms[i]
                dNorm[i] -= dc * z.scalars[b * S + i] / (norms[i] * norms[i])
            }
        }
        // AuxK on dead latents.
        var aux: Float = 0
        if let deadMask, case let dead = deadMask.filter({ $0 }).count, dead > 0 {
            let half = D / 2
            let scale = min(Float(dead) / Float(half), 1)
            let kAux = min(half, dead)
            var auxCoefficients = Tensor(zeros: [B, S])
            var auxSelected: [[Int]] = []
            hidden.withUnsafeBufferPointer { h in
                for b in 0..<B {
                    let chosen = topIndices(h.baseAddress! + b * S, count: S, k: kAux, allowed: { deadMask[$0] })
                    auxSelected.append(chosen)
                    for i in chosen { auxCoefficients.scalars[b * S + i] = h[b * S + i] / norms[i] }
                }
            }
            var auxRecon = Tensor(zeros: [B, D])
            matmul(auxCoefficients, p.wDec, into: &auxRecon, m: B, n: D, k: S)
            var auxSquared = 0.0
            let weight = o.auxCoefficient * scale
            var ga = Tensor(zeros: [B, D])
            for k in 0..<ga.count {
                let e = auxRecon.scalars[k] - (x.scalars[k] - xhat.scalars[k])    // the residual is a constant
                auxSquared += Double(e) * Double(e)
                ga.scalars[k] = weight * 2 * e * invB
            }
            aux = Float(Double(weight) * auxSquared / Double(B))
            matmul(auxCoefficients, ga, into: &grads.wDec, m: S, n: D, k: B, transposeA: true, accumulate: true)
            var dAux = Tensor(zeros: [B, S])
            matmul(ga, p.wDec, into: &dAux, m: B, n: S, k: D, transposeB: true)
            for b in 0..<B {
                for i in auxSelected[b] {
                    let da = dAux.scalars[b * S + i]
                    dHidden.scalars[b * S + i] += da / norms[i]
                    dNorm[i] -= da * hidden.scalars[b * S + i] / (norms[i] * norms[i])
                }
            }
        }
        // h = pre ⊙ n
        var dPre = dHidden
        for b in 0..<B {
            for i in 0..<S {
                let dh = dHidden.scalars[b * S + i]
                dPre.scalars[b * S + i] = dh * norms[i]
                dNorm[i] += dh * pre.scalars[b * S + i]
            }
        }
        matmul(centred, dPre, into: &grads.wEnc, m: D, n: S, k: B, transposeA: true)
        for b in 0..<B { for i in 0..<S { grads.bEnc.scalars[i] += dPre.scalars[b * S + i] } }
        if o.applyBDecToInput {
            var dCentred = Tensor(zeros: [B, D])
            matmul(dPre, p.wEnc, into: &dCentred, m: B, n: D, k: S, transposeB: true)
            for b in 0..<B { for j in 0..<D { grads.bDec.scalars[j] -= dCentred.scalars[b * D + j] } }
        }
        // n_i = ‖W_dec,i‖
        if o.rescaleByDecoderNorm {
            for i in 0..<S where norms[i] > 0 {
                let factor = dNorm[i] / norms[i]
                for j in 0..<D { grads.wDec.scalars[i * D + j] += factor * p.wDec.scalars[i * D + j] }
            }
        }
        return StepResult(mse: Float(squared / Double(B)), aux: aux, featureActs: z, reconstruction: xhat, gradients: grads)
    }

    /// The fast path: the decoder side works on the k active latents of each row (and the AuxK latents) only:
    /// reconstruction, ∂W_dec and ∂z are sparse products; the encoder forward and its two backward products are GEMMs.
    public static func lossAndGradients(_ p: SAEParameters, x: Tensor, options o: Options, deadMask: [Bool]?,
                                        workspace: SAEWorkspace = SAEWorkspace()) -> StepResult {
        let B = x.shape[0], D = p.dIn, S = p.dSAE, K = min(o.k, S)
        let invB = 1 / Float(B)
        let norms = o.rescaleByDecoderNorm ? p.decoderNorms : [Float](repeating: 1, count: S)
        let xs = x.scalars, wEnc = p.wEnc.scalars, wDec = p.wDec.scalars, bEnc = p.bEnc.scalars, bDec = p.bDec.scalars
        let w = workspace
        w.prepare(rows: B, dIn: D, dSAE: S)
        var centred = w.take(\.centred), pre = w.take(\.pre), xhat = w.take(\.xhat), g = w.take(\.g)
        var dCentred = w.take(\.dCentred), dPre = w.take(\.dz), z = w.take(\.z)
        var gWEnc = w.take(\.gWEnc), gWDec = w.take(\.gWDec)
        var gBEnc = [Float](repeating: 0, count: S), gBDec = [Float](repeating: 0, count: D)
        var dNorm = [Float](repeating: 0, count: S)
        var squared = 0.0, auxSquared = 0.0
        let dead = deadMask.map { mask in mask.filter { $0 }.count } ?? 0
        let half = D / 2
        let kAux = min(half, dead)
        let auxWeight = o.auxCoefficient * (dead > 0 ? min(Float(dead) / Float(half), 1) : 0)
        centred.withUnsafeMutableBufferPointer { c in pre.withUnsafeMutableBufferPointer { pre in
        xhat.withUnsafeMutableBufferPointer { xhat in g.withUnsafeMutableBufferPointer { g in
        dPre.withUnsafeMutableBufferPointer { dPre in z.withUnsafeMutableBufferPointer { z in
        dCentred.withUnsafeMutableBufferPointer { dCentred in
        gWEnc.withUnsafeMutableBufferPointer { gWEnc in gWDec.withUnsafeMutableBufferPointer { gWDec in
        xs.withUnsafeBufferPointer { xs in wEnc.withUnsafeBufferPointer { wEnc in wDec.withUnsafeBufferPointer { wDec in
            let c = c.baseAddress!, pre = pre.baseAddress!, xhat = xhat.baseAddress!, g = g.baseAddress!
            let dPre = dPre.baseAddress!, z = z.baseAddress!, wDec = wDec.baseAddress!, gWDec = gWDec.baseAddress!
            c.update(from: xs.baseAddress!, count: B * D)
            if o.applyBDecToInput { for b in 0..<B { for j in 0..<D { c[b * D + j] -= bDec[j] } } }
            for b in 0..<B { (pre + b * S).update(from: bEnc, count: S) }
            GEMM.multiply(m: B, n: S, k: D, c, lda: D, wEnc.baseAddress!, ldb: S, pre, ldc: S, beta: 1)
            z.update(repeating: 0, count: B * S)
            dPre.update(repeating: 0, count: B * S)
            gWDec.update(repeating: 0, count: S * D)
            // Rows are independent except for sums over rows into latent-indexed gradients: each worker keeps its own
            // ∂W_dec, ∂n, ∂b_dec and loss sums, added together afterwards.
            let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, B / 64))
            let privateGWDec = UnsafeMutablePointer<Float>.allocate(capacity: max(workers - 1, 0) * S * D + 1)
            let privateSmall = UnsafeMutablePointer<Float>.allocate(capacity: workers * (S + D))
            var sums = [Double](repeating: 0, count: 2 * workers)
            privateGWDec.initialize(repeating: 0, count: max(workers - 1, 0) * S * D + 1)
            privateSmall.initialize(repeating: 0, count: workers * (S + D))
            defer { privateGWDec.deallocate(); privateSmall.deallocate() }
            sums.withUnsafeMutableBufferPointer { sums in
            let sums = sums.baseAddress!
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let gWDec = worker == 0 ? gWDec : privateGWDec + (worker - 1) * S * D
            let dNorm = privateSmall + worker * (S + D), gBDec = dNorm + S
            var squared = 0.0, auxSquared = 0.0
            var hiddenRow = [Float](repeating: 0, count: S)
            var auxRecon = [Float](repeating: 0, count: D)
            for b in (B * worker / workers)..<(B * (worker + 1) / workers) {
                let preRow = pre + b * S
                for i in 0..<S { hiddenRow[i] = preRow[i] * norms[i] }
                let chosen = hiddenRow.withUnsafeBufferPointer { topIndices($0.baseAddress!, count: S, k: K) }
                // x̂_b = b_dec + Σ (z_i / n_i) W_dec,i over the active latents.
                let out = xhat + b * D
                out.update(from: bDec, count: D)
                for i in chosen {
                    let value = max(hiddenRow[i], 0)
                    z[b * S + i] = value
                    guard value > 0 else { continue }
                    let coefficient = value / norms[i], row = wDec + i * D
                    for j in 0..<D { out[j] += coefficient * row[j] }
                }
                let gRow = g + b * D
                for j in 0..<D {
                    let r = out[j] - xs[b * D + j]
                    squared += Double(r) * Double(r)
                    gRow[j] = 2 * r * invB
                    gBDec[j] += gRow[j]
                }
                for i in chosen where z[b * S + i] > 0 {
                    let coefficient = z[b * S + i] / norms[i], row = wDec + i * D, gradRow = gWDec + i * D
                    var dc: Float = 0
                    for j in 0..<D {
                        gradRow[j] += coefficient * gRow[j]
                        dc += gRow[j] * row[j]
                    }
                    let dh = dc / norms[i]
                    dNorm[i] -= dc * z[b * S + i] / (norms[i] * norms[i]) - dh * preRow[i]
                    dPre[b * S + i] += dh * norms[i]
                }
                // AuxK: the dead latents' largest pre-activations fit the (constant) residual.
                guard let deadMask, kAux > 0 else { continue }
                let auxChosen = hiddenRow.withUnsafeBufferPointer { topIndices($0.baseAddress!, count: S, k: kAux, allowed: { deadMask[$0] }) }
                for j in 0..<D { auxRecon[j] = 0 }
                for i in auxChosen {
                    let coefficient = hiddenRow[i] / norms[i], row = wDec + i * D
                    for j in 0..<D { auxRecon[j] += coefficient * row[j] }
                }
                var ga = [Float](repeating: 0, count: D)
                for j in 0..<D {
                    let e = auxRecon[j] - (xs[b * D + j] - out[j])
                    auxSquared += Double(e) * Double(e)
                    ga[j] = auxWeight * 2 * e * invB
                }
                for i in auxChosen {
                    let coefficient = hiddenRow[i] / norms[i], row = wDec + i * D, gradRow = gWDec + i * D
                    var da: Float = 0
                    for j in 0..<D {
                        gradRow[j] += coefficient * ga[j]
                        da += ga[j] * row[j]
                    }
                    let dh = da / norms[i]
                    dNorm[i] -= da * hiddenRow[i] / (norms[i] * norms[i]) - dh * preRow[i]
                    dPre[b * S + i] += dh * norms[i]
                }
            }
            sums[2 * worker] = squared
            sums[2 * worker + 1] = auxSquared
            }
            for w in 0..<workers {
                squared += sums[2 * w]
                auxSquared += sums[2 * w + 1]
                let small = privateSmall + w * (S + D)
                for i in 0..<S { dNorm[i] += small[i] }
                for j in 0..<D { gBDec[j] += small[S + j] }
                if w > 0 {
                    let other = privateGWDec + (w - 1) * S * D
                    for k in 0..<(S * D) { gWDec[k] += other[k] }
                }
            }
            }
            for b in 0..<B { let row = dPre + b * S; for i in 0..<S { gBEnc[i] += row[i] } }
            GEMM.multiply(m: D, n: S, k: B, c, lda: D, transposeA: true, dPre, ldb: S, gWEnc.baseAddress!, ldc: S)
            if o.applyBDecToInput {
                let dc = dCentred.baseAddress!
                GEMM.multiply(m: B, n: D, k: S, dPre, lda: S, wEnc.baseAddress!, ldb: S, transposeB: true, dc, ldc: D)
                for b in 0..<B { let row = dc + b * D; for j in 0..<D { gBDec[j] -= row[j] } }
            }
            if o.rescaleByDecoderNorm {
                for i in 0..<S where norms[i] > 0 {
                    let factor = dNorm[i] / norms[i], row = wDec + i * D, gradRow = gWDec + i * D
                    for j in 0..<D { gradRow[j] += factor * row[j] }
                }
            }
        } } } } } } } } } } } }
        let aux = dead > 0 ? Float(Double(auxWeight) * auxSquared / Double(B)) : 0
        w.giveBack(centred: centred, pre: pre, xhat: xhat, g: g, dCentred: dCentred, dz: dPre, z: z, gWEnc: gWEnc, gWDec: gWDec)
        let grads = SAEParameters(wEnc: Tensor(shape: [D, S], scalars: gWEnc), bEnc: Tensor(shape: [S], scalars: gBEnc),
                                  wDec: Tensor(shape: [S, D], scalars: gWDec), bDec: Tensor(shape: [D], scalars: gBDec))
        return StepResult(mse: Float(squared / Double(B)), aux: aux, featureActs: Tensor(shape: [B, S], scalars: z),
                          reconstruction: Tensor(shape: [B, D], scalars: xhat), gradients: grads)
    }

    /// `C (=|+=) op(A)·op(B)`, shapes given as the product's m, n, k.
    private static func matmul(_ a: Tensor, _ b: Tensor, into c: inout Tensor, m: Int, n: Int, k: Int,
                               transposeA: Bool = false, transposeB: Bool = false, accumulate: Bool = false) {
        a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeMutableBufferPointer { c in
            GEMM.multiply(m: m, n: n, k: k, a.baseAddress!, lda: transposeA ? m : k, transposeA: transposeA,
                          b.baseAddress!, ldb: transposeB ? k : n, transposeB: transposeB, c.baseAddress!, ldc: n,
                          beta: accumulate ? 1 : 0)
        } } }
    }

    /// Reference loss in Double, for a fixed selection of latents (the top-k and AuxK sets are piecewise constant).
    public static func naiveLoss(_ p: SAEParameters, x: Tensor, options o: Options, deadMask: [Bool]?) -> (mse: Double, aux: Double) {
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        let norms: [Double] = (0..<S).map { i in
            o.rescaleByDecoderNorm ? (0..<D).reduce(0.0) { $0 + Double(p.wDec.scalars[i * D + $1]) * Double(p.wDec.scalars[i * D + $1]) }.squareRoot() : 1
        }
        var mse = 0.0, aux = 0.0
        let dead = deadMask?.filter { $0 }.count ?? 0
        for b in 0..<B {
            let input = (0..<D).map { Double(x.scalars[b * D + $0]) - (o.applyBDecToInput ? Double(p.bDec.scalars[$0]) : 0) }
            var hidden = [Double](repeating: 0, count: S)
            for i in 0..<S {
                var sum = Double(p.bEnc.scalars[i])
                for j in 0..<D { sum += input[j] * Double(p.wEnc.scalars[j * S + i]) }
                hidden[i] = sum * norms[i]
            }
            let top = Set(hidden.indices.sorted { hidden[$0] > hidden[$1] }.prefix(o.k))
            var xhat = (0..<D).map { Double(p.bDec.scalars[$0]) }
            for i in top where hidden[i] > 0 {
                for j in 0..<D { xhat[j] += hidden[i] / norms[i] * Double(p.wDec.scalars[i * D + j]) }
            }
            for j in 0..<D { mse += (xhat[j] - Double(x.scalars[b * D + j])) * (xhat[j] - Double(x.scalars[b * D + j])) }
            if let deadMask, dead > 0 {
                let kAux = min(D / 2, dead)
                let chosen = hidden.indices.filter { deadMask[$0] }.sorted { hidden[$0] > hidden[$1] }.prefix(kAux)
                var recon = [Double](repeating: 0, count: D)
                for i in chosen { for j in 0..<D { recon[j] += hidden[i] / norms[i] * Double(p.wDec.scalars[i * D + j]) } }
                let weight = Double(o.auxCoefficient) * min(Double(dead) / Double(D / 2), 1)
                for j in 0..<D {
                    let residual = Double(x.scalars[b * D + j]) - xhat[j]
                    aux += weight * (recon[j] - residual) * (recon[j] - residual)
                }
            }
        }
        return (mse / Double(B), aux / Double(B))
    }
}
