import Dispatch
import Foundation
import InterpCore

/// SAELens v6's `batchtopk` training SAE (`batchtopk_sae.py`): TopK's forward, loss and AuxK (`TopKSAE` with
/// `Options.batchTopK`), except that the `Int(k·B)` largest `ReLU(h)` over the whole batch are kept, so rows have k
/// active latents on average. A threshold follows the smallest kept activation, `θ ← (1 − lr)·θ + lr·min z` in double
/// precision (lr 0.01), and the SAE is saved for inference as a JumpReLU with that threshold for every latent.
public enum BatchTopKSAE {
    /// Which activations the batch keeps: those above `value`, and of those equal to it (ties, rare) the first
    /// `ties` in row-major order.
    struct Cutoff {
        var value: Float
        var allTies: Bool
        var ties: Int
        /// Ties in the rows before each row (only when not all ties are kept).
        var tiesBefore: [Int]

        func tieQuota(forRowsBefore row: Int) -> Int { max(0, ties - tiesBefore[row]) }
    }

    /// The cutoff keeping the `n` largest positive `h = (pre + bias_i)·n_i` of `pre [rows × cols]`, by a two-pass radix select on
    /// the float bits (non-negative floats order as their bit patterns): one histogram of the high 16 bits, one of
    /// the low 16 bits inside the bin holding the n-th largest.
    static func cutoff(pre: UnsafePointer<Float>, bias: UnsafePointer<Float>, norms: UnsafePointer<Float>, rows: Int, cols: Int, count n: Int) -> Cutoff {
        guard n > 0 else { return Cutoff(value: .infinity, allTies: false, ties: 0, tiesBefore: [Int](repeating: 0, count: rows + 1)) }
        let workers = max(1, min(processorCount, rows / 64))
        func histogram(_ key: @escaping (UInt32) -> Int?) -> [Int] {
            var parts = [[Int32]](repeating: [], count: workers)
            parts.withUnsafeMutableBufferPointer { parts in
                let parts = parts.baseAddress!
                DispatchQueue.concurrentPerform(iterations: workers) { w in
                    var bins = [Int32](repeating: 0, count: 1 << 16)
                    bins.withUnsafeMutableBufferPointer { bins in
                        for r in (rows * w / workers)..<(rows * (w + 1) / workers) {
                            let row = pre + r * cols
                            for i in 0..<cols {
                                let h = (row[i] + bias[i]) * norms[i]
                                if h > 0, let k = key(h.bitPattern) { bins[k] += 1 }
                            }
                        }
                    }
                    (parts + w).initialize(to: bins)
                }
            }
            var total = [Int](repeating: 0, count: 1 << 16)
            for part in parts { for k in 0..<(1 << 16) { total[k] += Int(part[k]) } }
            return total
        }
        let high = histogram { Int($0 >> 16) }
        let positives = high.reduce(0, +)
        if positives <= n { return Cutoff(value: 0, allTies: true, ties: 0, tiesBefore: []) }
        var above = 0, highBin = (1 << 16) - 1
        while above + high[highBin] < n { above += high[highBin]; highBin -= 1 }
        let prefix = UInt32(highBin)
        let low = histogram { $0 >> 16 == prefix ? Int($0 & 0xFFFF) : nil }
        var lowBin = (1 << 16) - 1
        while above + low[lowBin] < n { above += low[lowBin]; lowBin -= 1 }
        let value = Float(bitPattern: prefix << 16 | UInt32(lowBin))
        let ties = n - above, tieCount = low[lowBin]
        if ties == tieCount { return Cutoff(value: value, allTies: true, ties: ties, tiesBefore: []) }
        var before = [Int](repeating: 0, count: rows + 1)
        for r in 0..<rows {
            var t = 0
            for i in 0..<cols where (pre[r * cols + i] + bias[i]) * norms[i] == value { t += 1 }
            before[r + 1] = before[r] + t
        }
        return Cutoff(value: value, allTies: false, ties: ties, tiesBefore: before)
    }

    /// SAELens's threshold update after a step, from the smallest non-zero activation of the step (skipped when
    /// nothing fired).
    public static func updatedThreshold(_ threshold: Double, minPositive: Float, learningRate: Double = 0.01) -> Double {
        guard minPositive.isFinite else { return threshold }
        return (1 - learningRate) * threshold + learningRate * Double(minPositive)
    }

    /// The inference SAE SAELens saves: decoder norms folded in (`b_enc·n`, `W_enc·n`, `W_dec / n`) and the threshold
    /// as a JumpReLU `threshold` for every latent.
    public static func inferenceParameters(_ p: SAEParameters, threshold: Double) -> SAEParameters {
        var folded = TopKSAE.foldDecoderNorms(p)
        folded.threshold = Tensor(shape: [p.dSAE], scalars: [Float](repeating: Float(threshold), count: p.dSAE))
        return folded
    }
}

extension BatchTopKSAE {
    /// Training: TopK's step with the batch's `Int(k·B)` largest activations kept, and the threshold tracked for
    /// inference; saved as a JumpReLU SAE (there is no inference face of its own).
    public struct Training: SAETrainingArchitecture {
        public static let name = "batchtopk"
        public static var needsK: Bool { true }
        public let k: Double
        public let auxCoefficient: Float
        public let thresholdRate: Double
        public var tracksThreshold: Bool { true }

        public init(settings: SAETrainingSettings) throws {
            guard let k = settings.k, k > 0, k <= Double(settings.dSAE) else { throw InterpError("--k must be between 0 and d_sae (\(settings.dSAE))") }
            guard Int(k * Double(settings.batchSize)) >= 1 else { throw InterpError("--k × --batch-size keeps no latent") }
            guard settings.thresholdRate > 0, settings.thresholdRate <= 1 else { throw InterpError("the threshold rate must be in (0, 1]") }
            self.k = k
            auxCoefficient = settings.auxCoefficient
            thresholdRate = settings.thresholdRate
        }

        public func lossAndGradients(_ p: SAEParameters, x: Tensor, step: Int, deadMask: [Bool], workspace: SAEWorkspace) -> SAETrainingStep {
            TopKSAE.lossAndGradients(p, x: x, options: .batchTopK(k: k, auxCoefficient: auxCoefficient), deadMask: deadMask, workspace: workspace).step
        }

        public func updatedThreshold(_ threshold: Double, after step: SAETrainingStep) -> Double {
            BatchTopKSAE.updatedThreshold(threshold, minPositive: step.minPositive, learningRate: thresholdRate)
        }

        public func saved(_ p: SAEParameters, trackedThreshold: Double, config: inout SAELensConfig) -> SAEParameters {
            config.architecture = JumpReLUSAE.Inference.name
            return BatchTopKSAE.inferenceParameters(p, threshold: trackedThreshold)
        }
    }
}
