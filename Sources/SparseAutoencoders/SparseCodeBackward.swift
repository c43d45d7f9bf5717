import Dispatch
import Foundation
import InterpCore

/// The backward pass of a sparse code, shared by the architectures whose steps touch only active latents (TopK,
/// BatchTopK, and standard once its ReLU code is sparse). A row pass records entries (row b, latent i, coefficient
/// a_bi: x̂_b = b_dec + Σ a_bi·W_dec,i) and the loss gradient g_b; this gathers the entries by latent and computes, for
/// each latent, `∂W_dec,i = Σ a_bi·g_b`, `∂pre_bi = g_b·W_dec,i + offset_i`, `∂W_encᵀ_i = Σ ∂pre_bi·c_b`,
/// `∂b_enc,i = Σ ∂pre_bi`: each gradient row accumulated in place and written once.
enum SparseCodeBackward {
    struct Gathered {
        let offsets: UnsafeMutablePointer<Int32>   // [S + 1]
        let rows: UnsafeMutablePointer<Int32>      // entry rows; −(b + 1) marks an entry that uses the second gradient
        let values: UnsafeMutablePointer<Float>
        let total: Int
    }

    /// A counting sort of the workers' entries by latent, stable in worker and row order.
    static func gather(_ lists: [SparseEntryList], latents S: Int, workspace w: SAEWorkspace) -> Gathered {
        let offsets = w.indexScratch(.offsets, count: S + 1)
        offsets.update(repeating: 0, count: S + 1)
        var total = 0
        for list in lists {
            for e in 0..<list.count { offsets[Int(list.latents[e]) + 1] += 1 }
            total += list.count
        }
        for i in 0..<S { offsets[i + 1] += offsets[i] }
        let rows = w.indexScratch(.entryRows, count: total)
        let values = w.scratch(.entryValues, count: total)
        let cursor = w.indexScratch(.cursor, count: S)
        cursor.update(from: offsets, count: S)
        for list in lists {
            for e in 0..<list.count {
                let i = Int(list.latents[e]), slot = Int(cursor[i])
                rows[slot] = list.rows[e]
                values[slot] = list.values[e]
                cursor[i] += 1
            }
        }
        return Gathered(offsets: offsets, rows: rows, values: values, total: total)
    }

    /// The per-latent pass. `g [B × D]` is the loss gradient of the reconstruction, `second` the one for entries
    /// marked negative (AuxK); `offset` (per latent) is added to every ∂pre of that latent (standard's L1 term).
    /// Writes `gWDec [S × D]`, `gWEncT [S × D]`, `gBEnc`, `fired` (unmarked entries per latent) and `valueSums`
    /// (Σ a_bi over unmarked entries).
    static func latentPass(_ e: Gathered, D: Int, S: Int, g: UnsafePointer<Float>, second: UnsafePointer<Float>?,
                           centred: UnsafePointer<Float>, wDec: UnsafePointer<Float>, offset: UnsafePointer<Float>?,
                           gWDec: UnsafeMutablePointer<Float>, gWEncT: UnsafeMutablePointer<Float>, gBEnc: UnsafeMutablePointer<Float>,
                           fired: UnsafeMutablePointer<Float>, valueSums: UnsafeMutablePointer<Float>?) {
        let chunks = min(S, processorCount * 16)
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            let accDec = UnsafeMutablePointer<Float>.allocate(capacity: 2 * D)
            defer { accDec.deallocate() }
            let accEnc = accDec + D
            for i in (S * chunk / chunks)..<(S * (chunk + 1) / chunks) {
                let wRow = wDec + i * D, shift = offset?[i] ?? 0
                accDec.update(repeating: 0, count: 2 * D)
                var bias: Float = 0, count: Float = 0, sum: Float = 0
                for k in Int(e.offsets[i])..<Int(e.offsets[i + 1]) {
                    let r = Int(e.rows[k]), marked = r < 0, b = marked ? -r - 1 : r
                    let gRow = (marked ? second! : g) + b * D
                    let dPre = vectorAddScaledAndDot(accDec, e.values[k], gRow, dot: wRow, D) + (marked ? 0 : shift)
                    vectorAddScaled(accEnc, dPre, centred + b * D, D)
                    bias += dPre
                    if !marked { count += 1; sum += e.values[k] }
                }
                (gWDec + i * D).update(from: accDec, count: D)
                (gWEncT + i * D).update(from: accEnc, count: D)
                gBEnc[i] = bias
                fired[i] = count
                valueSums?[i] = sum
            }
        }
    }

    /// `∂b_dec −= W_enc·∂b_enc`: b_dec's gradient through the centred input, `−Σ_b ∂pre_b·W_encᵀ`, since
    /// `Σ_b ∂pre_b = ∂b_enc` (a matrix-vector product instead of a matrix product).
    static func subtractInputPath(gBDec: UnsafeMutablePointer<Float>, wEnc: UnsafePointer<Float>, gBEnc: UnsafePointer<Float>,
                                  dIn D: Int, dSAE S: Int) {
        parallelChunks(D, minimumChunk: 64) { range in for j in range { gBDec[j] -= vectorDot(wEnc + j * S, gBEnc, S) } }
    }

    /// One row of the reconstruction loss: `g = 2(x̂ − x)/B` into `g`, added to `gBDec`; returns `Σ (x̂ − x)²`.
    @inline(__always)
    static func rowGradient(reconstruction out: UnsafePointer<Float>, input x: UnsafePointer<Float>, into g: UnsafeMutablePointer<Float>,
                            gBDec: UnsafeMutablePointer<Float>, count D: Int, invB: Float) -> Double {
        var squared = 0.0
        for j in 0..<D {
            let r = out[j] - x[j]
            squared += Double(r) * Double(r)
            g[j] = 2 * r * invB
            gBDec[j] += g[j]
        }
        return squared
    }
}
