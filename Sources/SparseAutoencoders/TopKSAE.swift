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
        /// Active latents per row (TopK).
        public var k: Int
        /// BatchTopK instead: the `Int(batchK · rows)` largest activations over the whole batch are kept.
        public var batchK: Double?
        public var auxCoefficient: Float
        public var rescaleByDecoderNorm: Bool
        public var applyBDecToInput: Bool

        public init(k: Int, auxCoefficient: Float = 1, rescaleByDecoderNorm: Bool = true, applyBDecToInput: Bool = true) {
            self.k = k
            self.auxCoefficient = auxCoefficient
            self.rescaleByDecoderNorm = rescaleByDecoderNorm
            self.applyBDecToInput = applyBDecToInput
        }

        /// SAELens's `batchtopk` training SAE: k active latents per row on average over the batch.
        public static func batchTopK(k: Double, auxCoefficient: Float = 1, rescaleByDecoderNorm: Bool = true,
                                     applyBDecToInput: Bool = true) -> Options {
            var o = Options(k: 0, auxCoefficient: auxCoefficient, rescaleByDecoderNorm: rescaleByDecoderNorm, applyBDecToInput: applyBDecToInput)
            o.batchK = k
            return o
        }
    }

    public struct StepResult {
        public var mse: Float
        public var aux: Float
        public var total: Float { mse + aux }
        public var featureActs: Tensor
        public var reconstruction: Tensor
        public var gradients: SAEParameters
        /// The smallest non-zero activation (BatchTopK's threshold follows it); infinity if none fired.
        public var minPositive: Float = .infinity
        /// Rows in which each latent fired, when the step counted them.
        public var firingCounts: [Float]? = nil
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
        let selected = referenceSelection(hidden.scalars, rows: B, cols: S, options: o)
        var minPositive = Float.infinity
        for b in 0..<B {
            for i in selected[b] {
                z.scalars[b * S + i] = max(hidden.scalars[b * S + i], 0)
                if z.scalars[b * S + i] > 0 { minPositive = min(minPositive, z.scalars[b * S + i]) }
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
            for b in 0..<B {
                let row = Array(hidden.scalars[(b * S)..<((b + 1) * S)])
                let chosen = Array((0..<S).filter { deadMask[$0] }.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(kAux))
                auxSelected.append(chosen)
                for i in chosen { auxCoefficients.scalars[b * S + i] = row[i] / norms[i] }
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
        return StepResult(mse: Float(squared / Double(B)), aux: aux, featureActs: z, reconstruction: xhat, gradients: grads,
                          minPositive: minPositive)
    }

    /// The latents each row keeps, by sorting (ties to the lower index): per row the k largest, or for BatchTopK the
    /// `Int(batchK · rows)` largest `ReLU(h)` over the whole batch.
    static func referenceSelection(_ hidden: [Float], rows B: Int, cols S: Int, options o: Options) -> [[Int]] {
        if let batchK = o.batchK {
            let n = min(Int(batchK * Double(B)), B * S)
            let order = hidden.indices.sorted { max(hidden[$0], 0) > max(hidden[$1], 0) || (max(hidden[$0], 0) == max(hidden[$1], 0) && $0 < $1) }
            var selected = [[Int]](repeating: [], count: B)
            for flat in order.prefix(n) { selected[flat / S].append(flat % S) }
            return selected
        }
        return (0..<B).map { b in
            let row = Array(hidden[(b * S)..<((b + 1) * S)])
            return Array(row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(min(o.k, S)))
        }
    }

    /// The fast path. Only the encoder forward is a dense product; everything after it touches the selected latents
    /// only (k per row for TopK, k·B over the batch for BatchTopK, plus the AuxK latents), in two passes:
    /// rows (in parallel): select, reconstruct from the selected decoder rows, and the loss gradient `g_b`;
    /// then latents (in parallel, each latent's entries gathered by a counting sort): `∂W_dec,i = Σ a_bi·g_b`,
    /// `∂pre_bi = g_b·W_dec,i`, `∂W_enc[:, i] = Σ ∂pre_bi·c_b`, `∂b_enc,i = Σ ∂pre_bi`, each row of each gradient
    /// written once (no scattered updates, no per-worker copies to add up). `∂b_dec` through the input is
    /// `−W_enc·∂b_enc`. With decoder-norm rescaling the norm cancels in `(pre·n)/n`, so its gradient terms sum to zero
    /// and the decoder coefficients are the raw pre-activations; `denseReference` keeps every term.
    public static func lossAndGradients(_ p: SAEParameters, x: Tensor, options o: Options, deadMask: [Bool]?,
                                        workspace: SAEWorkspace = SAEWorkspace()) -> StepResult {
        let B = x.shape[0], D = p.dIn, S = p.dSAE
        let invB = 1 / Float(B)
        let norms = o.rescaleByDecoderNorm ? p.decoderNorms : [Float](repeating: 1, count: S)
        let w = workspace
        let workers = max(1, min(processorCount, B / 64))
        var z = w.takeZeroedZ(rows: B, width: S), xhat = w.take(\.xhat, count: B * D)
        var gWEnc = w.take(\.gWEnc, count: D * S), gWDec = w.take(\.gWDec, count: S * D)
        let dead = deadMask.map { mask in mask.filter { $0 }.count } ?? 0
        let half = D / 2
        let kAux = min(half, dead)
        let auxWeight = o.auxCoefficient * (dead > 0 ? min(Float(dead) / Float(half), 1) : 0)
        let centred = w.scratch(.centred, count: B * D), pre = w.scratch(.pre, count: B * S), g = w.scratch(.g, count: B * D)
        let ga = w.scratch(.auxGradient, count: kAux > 0 ? B * D : 1)
        let gWEncT = w.scratch(.encoderT, count: S * D)
        let smallStride = S + 2 * D
        let privateSmall = w.scratch(.privateSmall, count: workers * smallStride)
        let lists = w.entryLists(workers)
        var gBEnc = [Float](repeating: 0, count: S), gBDec = [Float](repeating: 0, count: D)
        var fired = [Float](repeating: 0, count: S)
        var sums = [Double](repeating: 0, count: 3 * workers)
        z.withUnsafeMutableBufferPointer { z in xhat.withUnsafeMutableBufferPointer { xhat in
        gWEnc.withUnsafeMutableBufferPointer { gWEnc in gWDec.withUnsafeMutableBufferPointer { gWDec in
        sums.withUnsafeMutableBufferPointer { sums in gBEnc.withUnsafeMutableBufferPointer { gBEnc in
        fired.withUnsafeMutableBufferPointer { fired in
        x.withUnsafeBufferPointer { xs in p.wEnc.withUnsafeBufferPointer { wEnc in p.wDec.withUnsafeBufferPointer { wDec in
        p.bEnc.withUnsafeBufferPointer { bEnc in p.bDec.withUnsafeBufferPointer { bDec in norms.withUnsafeBufferPointer { norms in
        (deadMask ?? []).withUnsafeBufferPointer { deadMask in
            let z = z.baseAddress!, xhat = xhat.baseAddress!, gWDec = gWDec.baseAddress!, sums = sums.baseAddress!
            let xs = xs.baseAddress!, wDec = wDec.baseAddress!, norms = norms.baseAddress!, bDec = bDec.baseAddress!
            let bEnc = bEnc.baseAddress!, gBEnc = gBEnc.baseAddress!, fired = fired.baseAddress!
            let deadMask = deadMask.baseAddress
            centred.update(from: xs, count: B * D)
            if o.applyBDecToInput { for b in 0..<B { for j in 0..<D { centred[b * D + j] -= bDec[j] } } }
            // pre = centred·W_enc; b_enc is added where pre is read.
            GEMM.multiplySplittingRows(m: B, n: S, k: D, centred, lda: D, wEnc.baseAddress!, ldb: S, pre, ldc: S)
            let cutoff = o.batchK.map { BatchTopKSAE.cutoff(pre: pre, bias: bEnc, norms: norms, rows: B, cols: S, count: Int($0 * Double(B))) }

            // Pass 1, rows: selection, reconstruction, g_b (and the AuxK gradient), entries (row, latent, coefficient);
            // AuxK entries carry the row as −(b + 1).
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                let list = lists[worker]
                let small = privateSmall + worker * smallStride
                let hidden = small, gBDec = small + S, auxRecon = gBDec + D
                gBDec.update(repeating: 0, count: D)
                let capacity = max(min(S, o.batchK == nil ? o.k : S), kAux, 1)
                let chosen = UnsafeMutablePointer<Int>.allocate(capacity: capacity)
                let heapValues = UnsafeMutablePointer<Float>.allocate(capacity: capacity)
                defer { chosen.deallocate(); heapValues.deallocate() }
                var squared = 0.0, auxSquared = 0.0, minPositive = Float.infinity
                let rows = (B * worker / workers)..<(B * (worker + 1) / workers)
                var tiesLeft = cutoff.map { $0.allTies ? $0.ties : $0.tieQuota(forRowsBefore: rows.lowerBound) } ?? 0
                for b in rows {
                    let preRow = pre + b * S, xRow = xs + b * D, zRow = z + b * S
                    for i in 0..<S { hidden[i] = (preRow[i] + bEnc[i]) * norms[i] }
                    var count = 0
                    if let cutoff {
                        for i in 0..<S {
                            let h = hidden[i]
                            if h > cutoff.value || (h == cutoff.value && h > 0 && (cutoff.allTies || tiesLeft > 0)) {
                                if h == cutoff.value && !cutoff.allTies { tiesLeft -= 1 }
                                chosen[count] = i
                                count += 1
                            }
                        }
                    } else {
                        count = selectLargest(hidden, count: S, k: min(o.k, S), allowed: nil, values: heapValues, indices: chosen)
                    }
                    // x̂_b = b_dec + Σ (z_i / n_i)·W_dec,i over the active latents, where z_i / n_i = pre_i.
                    let out = xhat + b * D
                    out.update(from: bDec, count: D)
                    for t in 0..<count {
                        let i = chosen[t], h = hidden[i]
                        guard h > 0 else { continue }
                        let a = preRow[i] + bEnc[i]
                        zRow[i] = h
                        minPositive = min(minPositive, h)
                        vectorAddScaled(out, a, wDec + i * D, D)
                        list.append(row: Int32(b), latent: Int32(i), value: a)
                    }
                    let gRow = g + b * D
                    squared += SparseCodeBackward.rowGradient(reconstruction: out, input: xRow, into: gRow, gBDec: gBDec, count: D, invB: invB)
                    // AuxK: the dead latents' largest pre-activations fit the (constant) residual.
                    guard let deadMask, kAux > 0 else { continue }
                    let auxCount = selectLargest(hidden, count: S, k: kAux, allowed: deadMask, values: heapValues, indices: chosen)
                    auxRecon.update(repeating: 0, count: D)
                    for t in 0..<auxCount {
                        let i = chosen[t], a = preRow[i] + bEnc[i]
                        vectorAddScaled(auxRecon, a, wDec + i * D, D)
                        list.append(row: Int32(-(b + 1)), latent: Int32(i), value: a)
                    }
                    let gaRow = ga + b * D
                    for j in 0..<D {
                        let e = auxRecon[j] - (xRow[j] - out[j])
                        auxSquared += Double(e) * Double(e)
                        gaRow[j] = auxWeight * 2 * e * invB
                    }
                }
                sums[3 * worker] = squared
                sums[3 * worker + 1] = auxSquared
                sums[3 * worker + 2] = Double(minPositive)
            }

            // Pass 2, latents: each latent's gradient rows accumulated in place, written once.
            let gathered = SparseCodeBackward.gather(lists, latents: S, workspace: w)
            SparseCodeBackward.latentPass(gathered, D: D, S: S, g: g, second: kAux > 0 ? UnsafePointer(ga) : nil, centred: centred,
                                          wDec: wDec, offset: nil, gWDec: gWDec, gWEncT: gWEncT, gBEnc: gBEnc, fired: fired, valueSums: nil)
            let gWEncOut = gWEnc.baseAddress!
            parallelChunks(D, minimumChunk: 32) { range in transpose(gWEncT, rows: S, cols: D, columns: range, into: gWEncOut) }
            for worker in 0..<workers {
                let small = privateSmall + worker * smallStride
                for j in 0..<D { gBDec[j] += small[S + j] }
            }
            if o.applyBDecToInput {
                // ∂L/∂b_dec through the centred input: −Σ_b ∂pre_b·W_encᵀ = −W_enc·∂b_enc.
                gBDec.withUnsafeMutableBufferPointer {
                    SparseCodeBackward.subtractInputPath(gBDec: $0.baseAddress!, wEnc: wEnc.baseAddress!, gBEnc: gBEnc, dIn: D, dSAE: S)
                }
            }
        } } } } } } } } } } } } } }
        var squared = 0.0, auxSquared = 0.0, minPositive = Double.infinity
        for w in 0..<workers {
            squared += sums[3 * w]
            auxSquared += sums[3 * w + 1]
            minPositive = min(minPositive, sums[3 * w + 2])
        }
        let aux = dead > 0 ? Float(Double(auxWeight) * auxSquared / Double(B)) : 0
        let grads = SAEParameters(wEnc: Tensor(shape: [D, S], scalars: gWEnc), bEnc: Tensor(shape: [S], scalars: gBEnc),
                                  wDec: Tensor(shape: [S, D], scalars: gWDec), bDec: Tensor(shape: [D], scalars: gBDec))
        let result = StepResult(mse: Float(squared / Double(B)), aux: aux, featureActs: Tensor(shape: [B, S], scalars: z),
                                reconstruction: Tensor(shape: [B, D], scalars: xhat), gradients: grads,
                                minPositive: Float(minPositive), firingCounts: fired)
        w.z = z; w.xhat = xhat; w.gWEnc = gWEnc; w.gWDec = gWDec
        w.zTrackedWidth = S      // z is zero but for this step's entries
        return result
    }

    /// The `k` largest of `row[0..<count]` (only where `allowed` is true, if given), by a min-heap of the best so far:
    /// O(count · log k). Writes their indices (any order) and returns how many.
    static func selectLargest(_ row: UnsafePointer<Float>, count: Int, k: Int, allowed: UnsafePointer<Bool>?,
                              values: UnsafeMutablePointer<Float>, indices: UnsafeMutablePointer<Int>) -> Int {
        var size = 0
        guard k > 0 else { return 0 }
        @inline(__always) func offer(_ v: Float, _ i: Int) {
            if size < k {
                var child = size
                size += 1
                while child > 0 {
                    let parent = (child - 1) / 2
                    guard v < values[parent] else { break }
                    values[child] = values[parent]; indices[child] = indices[parent]
                    child = parent
                }
                values[child] = v; indices[child] = i
            } else if v > values[0] {
                var parent = 0
                while true {
                    let l = 2 * parent + 1, r = l + 1
                    var m = l
                    if l >= size { break }
                    if r < size && values[r] < values[l] { m = r }
                    guard values[m] < v else { break }
                    values[parent] = values[m]; indices[parent] = indices[m]
                    parent = m
                }
                values[parent] = v; indices[parent] = i
            }
        }
        if let allowed {
            for i in 0..<count where allowed[i] { offer(row[i], i) }
            return size
        }
        // Once the heap is full, most values lose to its minimum: test 8 at a time and look closer only when one wins.
        var i = 0
        while i < count && size < k { offer(row[i], i); i += 1 }
        let raw = UnsafeRawPointer(row)
        while i + 8 <= count {
            let lanes = raw.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self)
            if any(lanes .> Lanes(repeating: values[0])) {
                for lane in 0..<8 { offer(lanes[lane], i + lane) }
            }
            i += 8
        }
        while i < count { offer(row[i], i); i += 1 }
        return size
    }

    /// `out[c, r] = a[r, c]` for `a [rows × cols]` and the given columns of `a`, in cache-sized tiles.
    static func transpose(_ a: UnsafePointer<Float>, rows: Int, cols: Int, columns: Range<Int>? = nil, into out: UnsafeMutablePointer<Float>) {
        let tile = 32
        let columns = columns ?? 0..<cols
        for r0 in stride(from: 0, to: rows, by: tile) {
            for c0 in stride(from: columns.lowerBound, to: columns.upperBound, by: tile) {
                for r in r0..<min(r0 + tile, rows) {
                    for c in c0..<min(c0 + tile, columns.upperBound) { out[c * rows + r] = a[r * cols + c] }
                }
            }
        }
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
        let hiddenRows: [[Double]] = (0..<B).map { b in
            let input = (0..<D).map { Double(x.scalars[b * D + $0]) - (o.applyBDecToInput ? Double(p.bDec.scalars[$0]) : 0) }
            return (0..<S).map { i in
                var sum = Double(p.bEnc.scalars[i])
                for j in 0..<D { sum += input[j] * Double(p.wEnc.scalars[j * S + i]) }
                return sum * norms[i]
            }
        }
        let selection = referenceSelection(hiddenRows.flatMap { $0.map(Float.init) }, rows: B, cols: S, options: o)
        for b in 0..<B {
            let hidden = hiddenRows[b], top = selection[b]
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

extension TopKSAE {
    /// SAELens's `_fold_norm_topk`, applied when saving a SAE trained with decoder-norm rescaling: `b_enc·n`, `W_enc·n`
    /// (columns), `W_dec / n` (rows), so the saved SAE needs no rescaling and selects the same latents.
    public static func foldDecoderNorms(_ p: SAEParameters) -> SAEParameters {
        var p = p
        let norms = p.decoderNorms.map { max($0, 1e-8) }, D = p.dIn, S = p.dSAE
        for i in 0..<S {
            p.bEnc.scalars[i] *= norms[i]
            for j in 0..<D {
                p.wDec.scalars[i * D + j] /= norms[i]
                p.wEnc.scalars[j * S + i] *= norms[i]
            }
        }
        return p
    }
}

extension TopKSAE.StepResult {
    /// The step as the trainer takes it, with SAELens's loss names (TopK and BatchTopK).
    var step: SAETrainingStep {
        SAETrainingStep(losses: ["mse_loss": mse, "auxiliary_reconstruction_loss": aux], featureActs: featureActs,
                        reconstruction: reconstruction, gradients: gradients, minPositive: minPositive, firingCounts: firingCounts)
    }
}

extension TopKSAE {
    /// Training: k latents per row, decoder-norm rescaling, AuxK on dead latents.
    public struct Training: SAETrainingArchitecture {
        public static let name = "topk"
        public static var needsK: Bool { true }
        public let k: Int
        public let auxCoefficient: Float

        public init(settings: SAETrainingSettings) throws {
            guard let k = settings.k, k >= 1, k <= Double(settings.dSAE), k == k.rounded() else {
                throw InterpError("--k must be a whole number between 1 and d_sae (\(settings.dSAE))")
            }
            self.k = Int(k)
            auxCoefficient = settings.auxCoefficient
        }

        public func lossAndGradients(_ p: SAEParameters, x: Tensor, step: Int, deadMask: [Bool], workspace: SAEWorkspace) -> SAETrainingStep {
            TopKSAE.lossAndGradients(p, x: x, options: .init(k: k, auxCoefficient: auxCoefficient), deadMask: deadMask, workspace: workspace).step
        }

        /// SAELens saves TopK with the decoder norms folded into the weights.
        public func saved(_ p: SAEParameters, trackedThreshold: Double, config: inout SAELensConfig) -> SAEParameters {
            config.architecture = Inference.name
            config.k = k
            config.rescaleActsByDecoderNorm = true
            return TopKSAE.foldDecoderNorms(p)
        }
    }

    /// Inference (SAELens's `TopKSAE.encode`/`decode`): `h = pre ⊙ n` with `n_i = ‖W_dec,i‖` when
    /// `rescale_acts_by_decoder_norm` (else `h = pre`), `z = ReLU` of each row's k largest `h`, `x̂ = (z / n)·W_dec + b_dec`.
    public struct Inference: SAEInferenceArchitecture {
        public static let name = "topk"
        public let k: Int
        public let rescaleByDecoderNorm: Bool
        public let applyBDecToInput: Bool

        public init(config: SAELensConfig, file: String) throws {
            guard let k = config.k, k > 0, k <= config.dSAE else { throw InterpError("a topk SAE needs k between 1 and d_sae", file: file) }
            self.k = k
            rescaleByDecoderNorm = config.rescaleActsByDecoderNorm ?? false
            applyBDecToInput = config.applyBDecToInput
        }

        public func encode(_ p: SAEParameters, _ x: Tensor) -> Tensor {
            let n = x.shape[0], S = p.dSAE
            let norms = rescaleByDecoderNorm ? p.decoderNorms : [Float](repeating: 1, count: S)
            let pre = SAEInferenceKernels.preActivations(p, x, applyBDecToInput: applyBDecToInput)
            var z = Tensor(zeros: [n, S])
            z.withUnsafeMutableBufferPointer { z in pre.withUnsafeBufferPointer { pre in
                let z = z.baseAddress!, pre = pre.baseAddress!
                parallelChunks(n, minimumChunk: 16) { rows in
                    let hidden = UnsafeMutablePointer<Float>.allocate(capacity: S), values = UnsafeMutablePointer<Float>.allocate(capacity: k)
                    let chosen = UnsafeMutablePointer<Int>.allocate(capacity: k)
                    defer { hidden.deallocate(); values.deallocate(); chosen.deallocate() }
                    for b in rows {
                        for i in 0..<S { hidden[i] = pre[b * S + i] * norms[i] }
                        let count = TopKSAE.selectLargest(hidden, count: S, k: k, allowed: nil, values: values, indices: chosen)
                        for t in 0..<count where hidden[chosen[t]] > 0 { z[b * S + chosen[t]] = hidden[chosen[t]] }
                    }
                }
            } }
            return z
        }

        public func decode(_ p: SAEParameters, _ z: Tensor) -> Tensor {
            SAEInferenceKernels.decode(p, z, latentScale: inverseNorms(p))
        }

        public func referenceEncode(_ p: SAEParameters, _ x: Tensor) -> [Double] {
            let n = x.shape[0], S = p.dSAE
            let norms = rescaleByDecoderNorm ? p.decoderNorms : [Float](repeating: 1, count: S)
            let pre = SAEInferenceKernels.referencePreActivations(p, x, applyBDecToInput: applyBDecToInput)
            var z = [Double](repeating: 0, count: n * S)
            for b in 0..<n {
                let h = (0..<S).map { pre[b * S + $0] * Double(norms[$0]) }
                for i in h.indices.sorted(by: { h[$0] > h[$1] || (h[$0] == h[$1] && $0 < $1) }).prefix(k) { z[b * S + i] = max(h[i], 0) }
            }
            return z
        }

        public func referenceDecode(_ p: SAEParameters, _ z: [Double], rows: Int) -> [Double] {
            SAEInferenceKernels.referenceDecode(p, z, rows: rows, latentScale: inverseNorms(p))
        }

        /// `1 / n_i`, or nil without rescaling. A zero decoder row never fires (`h = 0`), so its scale does not matter.
        private func inverseNorms(_ p: SAEParameters) -> [Float]? {
            rescaleByDecoderNorm ? p.decoderNorms.map { $0 > 0 ? 1 / $0 : 0 } : nil
        }
    }
}
