import InterpCore

/// Adam as PyTorch implements it (`torch.optim.Adam`, no weight decay, not AMSGrad), after clipping the gradients'
/// global norm as `torch.nn.utils.clip_grad_norm_` does — SAELens's step.
public struct AdamOptimizer: Equatable, Sendable {
    public var learningRate: Float
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var maxGradientNorm: Float?
    public private(set) var step = 0
    public private(set) var firstMoment: SAEParameters
    public private(set) var secondMoment: SAEParameters

    public init(dIn: Int, dSAE: Int, threshold: Bool = false, learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8, maxGradientNorm: Float? = 1.0) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.maxGradientNorm = maxGradientNorm
        firstMoment = .zeros(dIn: dIn, dSAE: dSAE, threshold: threshold)
        secondMoment = .zeros(dIn: dIn, dSAE: dSAE, threshold: threshold)
    }

    /// Restores a saved state (checkpoints).
    public init(learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, maxGradientNorm: Float? = 1.0,
                step: Int, firstMoment: SAEParameters, secondMoment: SAEParameters) {
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.maxGradientNorm = maxGradientNorm
        self.step = step
        self.firstMoment = firstMoment
        self.secondMoment = secondMoment
    }

    /// The gradients' global L2 norm, as clip_grad_norm_ computes it (norm of the per-tensor norms).
    public static func globalNorm(_ g: SAEParameters) -> Float {
        let perTensor = g.names.map { name -> Float in
            g[name].withUnsafeBufferPointer { vectorDot($0.baseAddress!, $0.baseAddress!, $0.count) }.squareRoot()
        }
        return perTensor.reduce(Float(0)) { $0 + $1 * $1 }.squareRoot()
    }

    /// Clips `gradients` (if a maximum norm is set), then updates `parameters`. Returns the norm before clipping.
    /// `norm`, if given, is the gradients' global norm already computed.
    @discardableResult
    public mutating func update(_ parameters: inout SAEParameters, gradients: SAEParameters, norm: Float? = nil) -> Float {
        let norm = norm ?? Self.globalNorm(gradients)
        let clip = maxGradientNorm.map { min($0 / (norm + 1e-6), 1) } ?? 1
        step += 1
        let bias1 = 1 - Foundation.pow(Double(beta1), Double(step))
        let bias2Root = Float((1 - Foundation.pow(Double(beta2), Double(step))).squareRoot())
        let stepSize = Float(Double(learningRate) / bias1)
        let (b1, b2, eps) = (beta1, beta2, epsilon)
        for name in parameters.names {
            gradients[name].withUnsafeBufferPointer { grad in
                parameters.modify(name) { p in firstMoment.modify(name) { m in secondMoment.modify(name) { v in
                    p.withUnsafeMutableBufferPointer { p in m.withUnsafeMutableBufferPointer { m in v.withUnsafeMutableBufferPointer { v in
                        let count = p.count
                        let p = p.baseAddress!, m = m.baseAddress!, v = v.baseAddress!, grad = grad.baseAddress!
                        // Element-wise, so splitting across cores changes no result.
                        parallelChunks(count, minimumChunk: 1 << 16) { range in
                            for k in range {
                                let gk = grad[k] * clip
                                m[k] += (gk - m[k]) * (1 - b1)
                                v[k] = v[k] * b2 + (1 - b2) * gk * gk
                                p[k] -= stepSize * m[k] / (v[k].squareRoot() / bias2Root + eps)
                            }
                        }
                    } } }
                } } }
            }
        }
        return norm
    }
}

import Foundation
