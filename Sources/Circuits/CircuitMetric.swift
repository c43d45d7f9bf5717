import Foundation
import InterpCore

/// The number ACDC minimises, read off the logits of a run of the clean prompts: it says which positions (the same for
/// every prompt) and which vocabulary entries it reads, so only those logits are computed.
public struct CircuitMetric {
    public let name: String
    public let positions: [Int]
    /// nil = the whole vocabulary.
    public let logitIndices: [Int]?
    /// The metric of logits `[batch, positions.count, logitIndices.count or vocab]`.
    public let evaluate: (Tensor) throws -> Double

    public init(name: String, positions: [Int], logitIndices: [Int]? = nil, evaluate: @escaping (Tensor) throws -> Double) {
        self.name = name
        self.positions = positions
        self.logitIndices = logitIndices
        self.evaluate = evaluate
    }

    /// The metric of full logits `[batch, pos, vocab]`.
    public func callAsFunction(_ logits: Tensor) throws -> Double { try evaluate(restricted(logits)) }

    /// `logits` `[batch, pos, vocab]` cut down to what the metric reads.
    public func restricted(_ logits: Tensor) -> Tensor { logits.selectingLogits(positions: positions, indices: logitIndices) }

    /// `−(logit[answer_b] − logit[wrong_b])` at the last position, averaged over prompts (ACDC's `logit_diff`, negated so
    /// that lower is better).
    public static func logitDifference(answers: [Int], wrongs: [Int], positions P: Int) -> CircuitMetric {
        let indices = Array(Set(answers + wrongs)).sorted()
        let column = Dictionary(uniqueKeysWithValues: indices.enumerated().map { ($1, $0) })
        return CircuitMetric(name: "logit-diff", positions: [P - 1], logitIndices: indices) { logits in
            let (B, n) = (logits.shape[0], logits.shape[2])
            var total = 0.0
            for b in 0..<B { total += Double(logits.scalars[b * n + column[wrongs[b]]!]) - Double(logits.scalars[b * n + column[answers[b]]!]) }
            return total / Double(B)
        }
    }

    /// `KL(clean ‖ patched) = Σ_v p_clean (log p_clean − log p_patched)` at `positions`, averaged over prompts and positions.
    /// Per row it is `Σ_v p_clean log p_clean − Σ_v p_clean x_v + logsumexp(x)`: one pass over the patched logits x,
    /// the clean side computed once.
    public static func kl(cleanLogits: Tensor, positions: [Int]) -> CircuitMetric {
        let (B, P, V) = (cleanLogits.shape[0], cleanLogits.shape[1], cleanLogits.shape[2])
        var probabilities: [[Double]] = [], entropyTerms: [Double] = []
        for b in 0..<B {
            for p in positions {
                let row = Array(cleanLogits.scalars[((b * P + p) * V)..<((b * P + p + 1) * V)])
                let lse = row.withUnsafeBufferPointer { logSumExp($0) }
                let logs = row.map { Double($0) - lse }
                probabilities.append(logs.map { Foundation.exp($0) })
                entropyTerms.append(zip(probabilities.last!, logs).reduce(0.0) { $1.0 > 0 ? $0 + $1.0 * $1.1 : $0 })
            }
        }
        let flatProbabilities = probabilities.flatMap { $0 }
        return CircuitMetric(name: "kl", positions: positions) { logits in
            let rows = logits.shape[0] * logits.shape[1]
            var total = 0.0
            logits.withUnsafeBufferPointer { x in flatProbabilities.withUnsafeBufferPointer { p in
                for r in 0..<rows {
                    total += entropyTerms[r] + klRowTerms(x.baseAddress! + r * V, probabilities: p.baseAddress! + r * V, count: V)
                }
            } }
            return total / Double(rows)
        }
    }

    /// `log Σ exp(x)`, in Double after subtracting the maximum.
    static func logSumExp(_ v: UnsafeBufferPointer<Float>) -> Double {
        let m = Double(v.max() ?? 0)
        var sum = 0.0
        for x in v { sum += Foundation.exp(Double(x) - m) }
        return m + Foundation.log(sum)
    }

    /// `logsumexp(x) − Σ p·x` for one row of patched logits x: the exponentials in 8 Float lanes (≈ 2 ulp each, so
    /// the logsumexp is within about 2e-7 of `logSumExp`'s), every sum in Double.
    static func klRowTerms(_ x: UnsafePointer<Float>, probabilities p: UnsafePointer<Double>, count n: Int) -> Double {
        let raw = UnsafeRawPointer(x)
        var lanes = Lanes(repeating: -.infinity)
        var i = 0
        while i + 8 <= n {
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self)
            lanes.replace(with: v, where: v .> lanes)
            i += 8
        }
        var maximum = lanes.max()
        while i < n {
            if x[i] > maximum { maximum = x[i] }
            i += 1
        }
        let m = Lanes(repeating: maximum)
        var sums = SIMD8<Double>(), dots = SIMD8<Double>()
        i = 0
        while i + 8 <= n {
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self), e = vectorExp(v - m)
            for j in 0..<8 {
                sums[j] += Double(e[j])
                dots[j] += p[i + j] * Double(v[j])
            }
            i += 8
        }
        var sum = sums.sum(), dot = dots.sum()
        while i < n {
            sum += Foundation.exp(Double(x[i] - maximum))
            dot += p[i] * Double(x[i])
            i += 1
        }
        return Double(maximum) + Foundation.log(sum) - dot
    }

    /// Mean squared difference from the clean logits over `positions` and `logitIndices` (all when nil).
    public static func l2(cleanLogits: Tensor, positions: [Int], logitIndices: [Int]?) -> CircuitMetric {
        let probe = CircuitMetric(name: "l2", positions: positions, logitIndices: logitIndices) { _ in 0 }
        let reference = probe.restricted(cleanLogits).scalars
        return CircuitMetric(name: "l2", positions: positions, logitIndices: logitIndices) { logits in
            var total = 0.0
            for (a, b) in zip(logits.scalars, reference) { total += (Double(a) - Double(b)) * (Double(a) - Double(b)) }
            return total / Double(reference.count)
        }
    }

}
