import Foundation
import InterpCore

/// The positions of every prompt a metric reads. An array literal is `.these`.
public enum MetricPositions: Equatable, Sendable, ExpressibleByArrayLiteral {
    /// The last position only.
    case last
    /// Every position.
    case all
    /// These positions, in this order (the same for every prompt).
    case these([Int])

    public init(arrayLiteral positions: Int...) {
        self = .these(positions)
    }

    /// The positions read of prompts `positions` long.
    public func resolved(positions P: Int) -> [Int] {
        switch self {
        case .last: return [P - 1]
        case .all: return Array(0..<P)
        case let .these(list): return list
        }
    }
}

/// A number read off the logits of a run of a batch of prompts: what a patching table records per cell, and what
/// ACDC minimises. It says which positions and which vocabulary entries it reads, so the fast paths compute those
/// logits only. The one metric type of patching and circuit discovery.
public struct LogitMetric {
    /// How results name it (`logit-diff`, `kl`, …).
    public var name: String
    public var positions: MetricPositions
    /// The vocabulary entries it reads, in this order; nil = all of them.
    public var logitIndices: [Int]?
    /// The metric of logits restricted to what it reads: `[batch, positions read, entries read]`.
    public var evaluate: (Tensor) throws -> Double

    public init(name: String = "custom", positions: MetricPositions, logitIndices: [Int]? = nil,
                evaluate: @escaping (Tensor) throws -> Double) {
        self.name = name
        self.positions = positions
        self.logitIndices = logitIndices
        self.evaluate = evaluate
    }

    /// The metric of full logits `[batch, pos, vocab]`.
    public func callAsFunction(_ logits: Tensor) throws -> Double { try evaluate(restricted(logits)) }

    /// `logits` `[batch, pos, vocab]` cut down to what the metric reads.
    public func restricted(_ logits: Tensor) -> Tensor {
        if positions == .all && logitIndices == nil { return logits }
        return logits.selectingLogits(positions: positions.resolved(positions: logits.shape[1]), indices: logitIndices)
    }

    // MARK: - The metrics

    /// `logit[answer_b] − logit[wrong_b]` at the last position, averaged over prompts (higher: more the answer).
    public static func logitDifference(answers: [Int], wrongs: [Int]) -> LogitMetric {
        let indices = Array(Set(answers + wrongs)).sorted()
        let column = Dictionary(uniqueKeysWithValues: indices.enumerated().map { ($1, $0) })
        return LogitMetric(name: "logit-diff", positions: .last, logitIndices: indices) { logits in
            try rowMean(logits, prompts: answers.count) { row, b in Double(row[column[answers[b]]!]) - Double(row[column[wrongs[b]]!]) }
        }
    }

    /// `log softmax(logits)[answer_b]` at the last position, averaged over prompts.
    public static func logProbability(answers: [Int]) -> LogitMetric {
        LogitMetric(name: "logprob", positions: .last) { logits in
            try rowMean(logits, prompts: answers.count) { row, b in logSoftmax(row)[answers[b]] }
        }
    }

    /// `softmax(logits)[answer_b]` at the last position, averaged over prompts.
    public static func probability(answers: [Int]) -> LogitMetric {
        LogitMetric(name: "prob", positions: .last) { logits in
            try rowMean(logits, prompts: answers.count) { row, b in Foundation.exp(logSoftmax(row)[answers[b]]) }
        }
    }

    /// `KL(clean ‖ run) = Σ_v p_clean (log p_clean − log p_run)` at `positions`, averaged over prompts and positions,
    /// with the clean run's logits `[batch, pos, vocab]` given; every step in Double.
    ///
    /// `fastExponentials` (for searches that evaluate it many times, as ACDC does): per row it is then `Σ_v p_clean log
    /// p_clean − Σ_v p_clean x_v + logsumexp(x)`, one pass over the run's logits x with the exponentials in 8 Float
    /// lanes (about 2e-7 relative to the Double value) and the clean side computed once.
    public static func kl(cleanLogits: Tensor, positions: MetricPositions = .last, fastExponentials: Bool = false) -> LogitMetric {
        let (B, P, V) = (cleanLogits.shape[0], cleanLogits.shape[1], cleanLogits.shape[2])
        let read = positions.resolved(positions: P)
        // Per clean row read: its log-probabilities, or (fast) its probabilities and Σ p log p.
        var logs: [Double] = [], probabilities: [Double] = [], entropyTerms: [Double] = []
        for b in 0..<B {
            for p in read {
                let row = Array(cleanLogits.scalars[((b * P + p) * V)..<((b * P + p + 1) * V)])
                let rowLogs = logSoftmax(row)
                guard fastExponentials else {
                    logs += rowLogs
                    continue
                }
                var entropy = 0.0
                for log in rowLogs {
                    let probability = Foundation.exp(log)
                    probabilities.append(probability)
                    if probability > 0 { entropy += probability * log }
                }
                entropyTerms.append(entropy)
            }
        }
        let rowsRead = B * read.count
        return LogitMetric(name: "kl", positions: positions) { logits in
            let rows = logits.shape[0] * logits.shape[1]
            guard rows == rowsRead, logits.shape[2] == V else {
                throw InterpError("KL metric: logits of shape \(logits.shape) for \(B) prompts × \(read.count) positions × \(V) entries")
            }
            var total = 0.0
            logits.withUnsafeBufferPointer { x in
                for r in 0..<rows {
                    if fastExponentials {
                        total += entropyTerms[r] + probabilities.withUnsafeBufferPointer { p in
                            klRowTerms(x.baseAddress! + r * V, probabilities: p.baseAddress! + r * V, count: V)
                        }
                    } else {
                        let run = logSoftmax(Array(x[(r * V)..<((r + 1) * V)]))
                        var kl = 0.0
                        for v in 0..<V { kl += Foundation.exp(logs[r * V + v]) * (logs[r * V + v] - run[v]) }
                        total += kl
                    }
                }
            }
            return total / Double(rows)
        }
    }

    /// Mean squared difference from the clean logits over `positions` and `logitIndices` (all when nil).
    public static func l2(cleanLogits: Tensor, positions: MetricPositions, logitIndices: [Int]?) -> LogitMetric {
        let probe = LogitMetric(name: "l2", positions: positions, logitIndices: logitIndices) { _ in 0 }
        let reference = probe.restricted(cleanLogits).scalars
        return LogitMetric(name: "l2", positions: positions, logitIndices: logitIndices) { logits in
            var total = 0.0
            for (a, b) in zip(logits.scalars, reference) { total += (Double(a) - Double(b)) * (Double(a) - Double(b)) }
            return total / Double(reference.count)
        }
    }

    /// `(m − m_corrupted) / (m_clean − m_corrupted)`: 0 = no effect, 1 = fully restored (denoising).
    public static func normalized(_ metric: LogitMetric, clean: Double, corrupted: Double) -> LogitMetric {
        var out = metric
        out.evaluate = { logits in (try metric.evaluate(logits) - corrupted) / (clean - corrupted) }
        return out
    }

    /// `−m`, for a search that minimises what this metric maximises (ACDC's logit difference).
    public func negated() -> LogitMetric {
        var out = self
        let evaluate = self.evaluate
        out.evaluate = { -(try evaluate($0)) }
        return out
    }

    // MARK: - Pieces

    /// `log softmax` of one row, in Double.
    public static func logSoftmax(_ row: [Float]) -> [Double] {
        let logSum = row.withUnsafeBufferPointer { logSumExp($0) }
        return row.map { Double($0) - logSum }
    }

    /// `log Σ exp(x)`, in Double after subtracting the maximum.
    public static func logSumExp(_ v: UnsafeBufferPointer<Float>) -> Double {
        let m = Double(v.max() ?? 0)
        var sum = 0.0
        for x in v { sum += Foundation.exp(Double(x) - m) }
        return m + Foundation.log(sum)
    }

    /// `logsumexp(x) − Σ p·x` for one row of logits x: the exponentials in 8 Float lanes (≈ 2 ulp each, so the
    /// logsumexp is within about 2e-7 of `logSumExp`'s), every sum in Double.
    public static func klRowTerms(_ x: UnsafePointer<Float>, probabilities p: UnsafePointer<Double>, count n: Int) -> Double {
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

    /// The mean over prompts of `body(last row read, prompt)`.
    static func rowMean(_ logits: Tensor, prompts expected: Int, _ body: ([Float], Int) -> Double) throws -> Double {
        let (B, P, V) = (logits.shape[0], logits.shape[1], logits.shape[2])
        guard expected == B else { throw InterpError("\(expected) answer tokens for \(B) prompts") }
        var total = 0.0
        for b in 0..<B { total += body(Array(logits.scalars[((b * P + P - 1) * V)..<((b * P + P) * V)]), b) }
        return total / Double(B)
    }
}
