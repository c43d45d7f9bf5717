import Foundation
import InterpCore

/// −log softmax(logits)[next token], summed: TransformerLens's `return_type="loss"` before the mean.
public enum NextTokenLoss {
    /// Σ of −log p(token t | tokens before t) over the targets `t` of every row (default: every position but the
    /// first, that is, every prediction but the last position's), and how many terms. `logits` is `[batch, pos, vocab]`.
    public static func sum(_ logits: Tensor, _ batch: TokenBatch, targets: Range<Int>? = nil) -> (sum: Double, count: Int) {
        let V = logits.shape[2], P = batch.positions
        let targets = targets ?? 1..<P
        precondition(targets.lowerBound >= 1 && targets.upperBound <= P, "targets \(targets) outside 1..<\(P)")
        var sum = 0.0
        logits.withUnsafeBufferPointer { l in
            for b in 0..<batch.batch {
                for t in targets {
                    let row = l.baseAddress! + (b * P + t - 1) * V
                    var maximum = -Double.infinity
                    for v in 0..<V { maximum = max(maximum, Double(row[v])) }
                    var total = 0.0
                    for v in 0..<V { total += Foundation.exp(Double(row[v]) - maximum) }
                    sum += maximum + Foundation.log(total) - Double(row[Int(batch.ids[b * P + t])])
                }
            }
        }
        return (sum, batch.batch * targets.count)
    }
}
