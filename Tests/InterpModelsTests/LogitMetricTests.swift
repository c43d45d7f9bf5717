import Foundation
import Interp
import InterpTestSupport
import Testing

/// The one metric type: positions it reads, its metrics against their definitions in Double.
@Suite struct LogitMetricTests {
    static func logits(_ B: Int, _ P: Int, _ V: Int, seed: UInt64) -> Tensor {
        var rng = SeededRandom(seed: seed)
        return Tensor(shape: [B, P, V], scalars: (0..<(B * P * V)).map { _ in rng.nextNormal() * 3 })
    }

    @Test func positionsResolve() {
        #expect(MetricPositions.last.resolved(positions: 5) == [4])
        #expect(MetricPositions.all.resolved(positions: 3) == [0, 1, 2])
        let some: MetricPositions = [3, 1]
        #expect(some == .these([3, 1]) && some.resolved(positions: 9) == [3, 1])
    }

    /// KL against Σ p (log p − log q) in Double, at the last position, at every position, and at two of them.
    @Test func klMatchesItsDefinition() throws {
        let (B, P, V) = (3, 4, 37)
        let clean = Self.logits(B, P, V, seed: 1), other = Self.logits(B, P, V, seed: 2)
        func logSoftmax(_ b: Int, _ p: Int, _ x: Tensor) -> [Double] {
            let row = (0..<V).map { Double(x.scalars[(b * P + p) * V + $0]) }
            let m = row.max()!, lse = m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) })
            return row.map { $0 - lse }
        }
        func definition(_ positions: [Int]) -> Double {
            var total = 0.0
            for b in 0..<B {
                for p in positions {
                    let lp = logSoftmax(b, p, clean), lq = logSoftmax(b, p, other)
                    total += (0..<V).reduce(0.0) { $0 + Foundation.exp(lp[$1]) * (lp[$1] - lq[$1]) }
                }
            }
            return total / Double(B * positions.count)
        }
        for (positions, list) in [(MetricPositions.last, [P - 1]), (.all, Array(0..<P)), ([2, 0], [2, 0])] {
            let expected = definition(list)
            // In Double throughout: the definition's own arithmetic, row by row.
            let exact = LogitMetric.kl(cleanLogits: clean, positions: positions)
            #expect(Swift.abs(try exact(other) - expected) <= 1e-12 * (1 + expected), "\(positions)")
            #expect(try exact(clean) == 0, "KL of the clean logits from themselves")
            // Each row's logsumexp from 2-ulp float exponentials: within about 2e-7 of the Double one, relative to it.
            let fast = LogitMetric.kl(cleanLogits: clean, positions: positions, fastExponentials: true)
            #expect(Swift.abs(try fast(other) - expected) <= 1e-6 * (1 + expected), "\(positions), fast exponentials")
            #expect(Swift.abs(try fast(clean)) <= 1e-6)
        }
    }

    @Test func logitDifferenceNegatedAndNormalized() throws {
        let x = Self.logits(2, 3, 11, seed: 3)
        let metric = LogitMetric.logitDifference(answers: [4, 7], wrongs: [9, 4])
        #expect(metric.positions == .last && metric.logitIndices == [4, 7, 9])
        let expected = ((Double(x.scalars[2 * 11 + 4]) - Double(x.scalars[2 * 11 + 9]))
                        + (Double(x.scalars[5 * 11 + 7]) - Double(x.scalars[5 * 11 + 4]))) / 2
        #expect(try metric(x) == expected)
        #expect(try metric.negated()(x) == -expected)
        #expect(metric.negated().name == "logit-diff")
        let restored = LogitMetric.normalized(metric, clean: expected, corrupted: expected - 2)
        #expect(Swift.abs(try restored(x) - 1) <= 1e-12)
        #expect(throws: InterpError.self) { try LogitMetric.logitDifference(answers: [1], wrongs: [2])(x) }
    }
}
