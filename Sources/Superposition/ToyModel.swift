import Foundation
import InterpCore

/// Elhage et al.'s toy model of superposition: M features compressed into N hidden dimensions and read back,
/// `h = W·x`, `x' = ReLU(Wᵀ·h + b)`, trained on `Σ_i ω_i (x_i − x'_i)²` averaged over the batch with importance
/// `ω_i = decay^i`. Each feature is `U[0, 1]` with probability `1 − S` and 0 otherwise. Hand-written forward, backward
/// and Adam (`naiveLoss` is the reference the gradient is tested against).
public struct ToyModel: Sendable {
    public struct Settings: Sendable {
        public var features: Int
        public var hidden: Int
        public var sparsity: Double
        public var importanceDecay: Float
        public var batchSize: Int
        public var steps: Int
        public var learningRate: Float
        public var seed: UInt64

        public init(features: Int = 20, hidden: Int = 5, sparsity: Double, importanceDecay: Float = 0.7, batchSize: Int = 1024,
                    steps: Int = 5000, learningRate: Float = 1e-3, seed: UInt64 = 0) {
            self.features = features
            self.hidden = hidden
            self.sparsity = sparsity
            self.importanceDecay = importanceDecay
            self.batchSize = batchSize
            self.steps = steps
            self.learningRate = learningRate
            self.seed = seed
        }
    }

    public let features: Int
    public let hidden: Int
    /// `[hidden × features]`: column i is feature i's direction in the hidden space.
    public var w: [Float]
    public var b: [Float]
    public let importance: [Float]

    public init(features: Int, hidden: Int, importanceDecay: Float, seed: UInt64) {
        self.features = features
        self.hidden = hidden
        var rng = SeededRandom(seed: seed)
        let std = (2 / Float(features + hidden)).squareRoot()        // Xavier normal, as in the paper's code
        w = (0..<(hidden * features)).map { _ in rng.nextNormal() * std }
        b = [Float](repeating: 0, count: features)
        importance = (0..<features).map { pow(importanceDecay, Float($0)) }
    }

    /// A batch of feature vectors `[rows × features]`.
    public static func sample(rows: Int, features: Int, sparsity: Double, rng: inout SeededRandom) -> [Float] {
        (0..<(rows * features)).map { _ in
            let present = Double(rng.nextUniform()) < 1 - sparsity
            let value = rng.nextUniform()
            return present ? value : 0
        }
    }

    /// Hidden activations `h = W·x` for a batch `[rows × features]`, as `[rows × hidden]`.
    public func hiddenActivations(_ x: [Float], rows: Int) -> [Float] {
        var h = [Float](repeating: 0, count: rows * hidden)
        for r in 0..<rows {
            for n in 0..<hidden {
                var s: Float = 0
                for m in 0..<features { s += w[n * features + m] * x[r * features + m] }
                h[r * hidden + n] = s
            }
        }
        return h
    }

    /// The loss and its gradients for a batch.
    public func lossAndGradients(_ x: [Float], rows: Int) -> (loss: Float, gW: [Float], gB: [Float]) {
        let (N, M) = (hidden, features)
        var gW = [Float](repeating: 0, count: N * M), gB = [Float](repeating: 0, count: M)
        var loss: Double = 0
        var h = [Float](repeating: 0, count: N), du = [Float](repeating: 0, count: M), dh = [Float](repeating: 0, count: N)
        let scale = 2 / Float(rows)
        for r in 0..<rows {
            let xr = r * M
            for n in 0..<N {
                var s: Float = 0
                for m in 0..<M { s += w[n * M + m] * x[xr + m] }
                h[n] = s
            }
            for m in 0..<M {
                var u = b[m]
                for n in 0..<N { u += w[n * M + m] * h[n] }
                let out = max(u, 0), e = out - x[xr + m]
                loss += Double(importance[m] * e * e)
                du[m] = u > 0 ? scale * importance[m] * e : 0
                gB[m] += du[m]
            }
            for n in 0..<N {
                var s: Float = 0
                for m in 0..<M { s += w[n * M + m] * du[m]; gW[n * M + m] += h[n] * du[m] }
                dh[n] = s
            }
            for n in 0..<N { for m in 0..<M { gW[n * M + m] += dh[n] * x[xr + m] } }
        }
        return (Float(loss / Double(rows)), gW, gB)
    }

    /// The loss in Double, as the definition reads.
    public func naiveLoss(_ x: [Float], rows: Int) -> Double {
        var total = 0.0
        for r in 0..<rows {
            let h = (0..<hidden).map { n in (0..<features).reduce(0.0) { $0 + Double(w[n * features + $1]) * Double(x[r * features + $1]) } }
            for m in 0..<features {
                let u = (0..<hidden).reduce(Double(b[m])) { $0 + Double(w[$1 * features + m]) * h[$1] }
                let e = max(u, 0) - Double(x[r * features + m])
                total += Double(importance[m]) * e * e
            }
        }
        return total / Double(rows)
    }

    /// Trains a model with Adam (β 0.9/0.999) on fresh batches.
    public static func train(_ s: Settings) -> (model: ToyModel, finalLoss: Float) {
        var model = ToyModel(features: s.features, hidden: s.hidden, importanceDecay: s.importanceDecay, seed: s.seed)
        var rng = SeededRandom(seed: s.seed &+ 1)
        var mW = [Float](repeating: 0, count: model.w.count), vW = mW, mB = [Float](repeating: 0, count: model.b.count), vB = mB
        var loss: Float = 0
        for step in 1...max(s.steps, 1) {
            let x = sample(rows: s.batchSize, features: s.features, sparsity: s.sparsity, rng: &rng)
            let r = model.lossAndGradients(x, rows: s.batchSize)
            loss = r.loss
            let c1 = 1 - pow(0.9, Float(step)), c2 = 1 - pow(0.999, Float(step))
            func adam(_ p: inout [Float], _ g: [Float], _ m: inout [Float], _ v: inout [Float]) {
                for k in p.indices {
                    m[k] = 0.9 * m[k] + 0.1 * g[k]
                    v[k] = 0.999 * v[k] + 0.001 * g[k] * g[k]
                    p[k] -= s.learningRate * (m[k] / c1) / ((v[k] / c2).squareRoot() + 1e-8)
                }
            }
            adam(&model.w, r.gW, &mW, &vW)
            adam(&model.b, r.gB, &mB, &vB)
        }
        return (model, loss)
    }

    /// The weight-based reference: `p_i ∝ ‖W[:, i]‖` (how much of the hidden space feature i occupies), and
    /// `ψ_Frob = ‖W‖²_F / N` (Bereska et al., Eq. 2).
    public var weightReference: (effectiveFeatures: Double, frobeniusSuperposition: Double) {
        let norms = (0..<features).map { m in (0..<hidden).reduce(0.0) { $0 + Double(w[$1 * features + m]) * Double(w[$1 * features + m]) }.squareRoot() }
        let frobenius = w.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(hidden)
        return (EffectiveFeatures(mass: norms)?.effectiveFeatures ?? 0, frobenius)
    }
}
