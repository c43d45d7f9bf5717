import InterpCore

/// The SAE architectures interp trains, with their settings.
public enum SAEArchitecture: Equatable, Sendable {
    case standard(l1Coefficient: Float, l1WarmUpSteps: Int)
    case topK(k: Int, auxCoefficient: Float)
    case batchTopK(k: Double, auxCoefficient: Float)
    case jumpReLU(l0Coefficient: Float, l0WarmUpSteps: Int, bandwidth: Float)

    public var name: String {
        switch self {
        case .standard: return "standard"
        case .topK: return "topk"
        case .batchTopK: return "batchtopk"
        case .jumpReLU: return "jumprelu"
        }
    }

    /// The architecture SAELens loads the saved SAE as (BatchTopK is saved as JumpReLU).
    public var inferenceName: String {
        if case .batchTopK = self { return "jumprelu" }
        return name
    }

    /// Whether the trained parameters include a per-latent threshold.
    public var hasThreshold: Bool {
        if case .jumpReLU = self { return true }
        return false
    }

    struct Step {
        var losses: [String: Float]
        var featureActs: Tensor
        var reconstruction: Tensor
        var gradients: SAEParameters
        var minPositive: Float
        /// Rows in which each latent fired, if the step counted them (else they are counted from `featureActs`).
        var firingCounts: [Float]? = nil
    }

    /// SAELens's CoefficientScheduler: at step t the coefficient is final · min(t / warmUp, 1), so 0 at step 0.
    static func warmedUp(_ value: Float, steps warmUp: Int, at step: Int) -> Float {
        warmUp > 0 ? value * min(Float(step) / Float(warmUp), 1) : value
    }

    /// Loss terms and gradients for one batch; `step` sets the sparsity-coefficient warm-up.
    func lossAndGradients(_ p: SAEParameters, x: Tensor, step: Int, deadMask: [Bool], workspace: SAEWorkspace) -> Step {
        switch self {
        case let .standard(l1, warmUp):
            let r = StandardSAE.lossAndGradients(p, x: x, l1Coefficient: Self.warmedUp(l1, steps: warmUp, at: step), workspace: workspace)
            return Step(losses: ["mse_loss": r.losses.mse, "l1_loss": r.losses.l1], featureActs: r.featureActs,
                        reconstruction: r.reconstruction, gradients: r.gradients, minPositive: .infinity, firingCounts: r.firingCounts)
        case let .topK(k, aux):
            let r = TopKSAE.lossAndGradients(p, x: x, options: .init(k: k, auxCoefficient: aux), deadMask: deadMask, workspace: workspace)
            return Step(losses: ["mse_loss": r.mse, "auxiliary_reconstruction_loss": r.aux], featureActs: r.featureActs,
                        reconstruction: r.reconstruction, gradients: r.gradients, minPositive: r.minPositive,
                        firingCounts: r.firingCounts)
        case let .batchTopK(k, aux):
            let r = TopKSAE.lossAndGradients(p, x: x, options: .batchTopK(k: k, auxCoefficient: aux), deadMask: deadMask, workspace: workspace)
            return Step(losses: ["mse_loss": r.mse, "auxiliary_reconstruction_loss": r.aux], featureActs: r.featureActs,
                        reconstruction: r.reconstruction, gradients: r.gradients, minPositive: r.minPositive,
                        firingCounts: r.firingCounts)
        case let .jumpReLU(l0, warmUp, bandwidth):
            let o = JumpReLUSAE.Options(bandwidth: bandwidth, l0Coefficient: Self.warmedUp(l0, steps: warmUp, at: step))
            let r = JumpReLUSAE.lossAndGradients(p, x: x, options: o, workspace: workspace)
            return Step(losses: ["mse_loss": r.mse, "l0_loss": r.l0Loss], featureActs: r.featureActs,
                        reconstruction: r.reconstruction, gradients: r.gradients, minPositive: .infinity)
        }
    }
}

/// SAELens's initialisation: `W_dec` rows Kaiming-uniform then scaled to norm `decoderInitNorm` (0.1), `W_enc = W_decᵀ`,
/// biases zero; for JumpReLU every threshold at `threshold` (SAELens: 0.01).
public func initialSAEParameters(dIn: Int, dSAE: Int, decoderInitNorm: Float = 0.1, threshold: Float? = nil, seed: UInt64) -> SAEParameters {
    var rng = SeededRandom(seed: seed)
    let bound = (6 / Float(dIn)).squareRoot()
    let directions = Tensor(shape: [dSAE, dIn], scalars: (0..<(dSAE * dIn)).map { _ in (rng.nextUniform() * 2 - 1) * bound })
    return parametersFromDecoderDirections(directions, decoderInitNorm: decoderInitNorm, threshold: threshold)
}

/// Decoder rows in the given directions scaled to norm `decoderInitNorm`, `W_enc = W_decᵀ`, biases zero, thresholds at
/// `threshold` if given: the part of SAELens's initialisation shared by every choice of directions.
func parametersFromDecoderDirections(_ directions: Tensor, decoderInitNorm: Float, threshold: Float?) -> SAEParameters {
    let dSAE = directions.shape[0], dIn = directions.shape[1]
    var wDec = directions
    for i in 0..<dSAE {
        var norm: Float = 0
        for j in 0..<dIn { norm += wDec.scalars[i * dIn + j] * wDec.scalars[i * dIn + j] }
        let scale = decoderInitNorm / max(norm.squareRoot(), 1e-12)
        for j in 0..<dIn { wDec.scalars[i * dIn + j] *= scale }
    }
    var wEnc = Tensor(zeros: [dIn, dSAE])
    for i in 0..<dSAE { for j in 0..<dIn { wEnc.scalars[j * dSAE + i] = wDec.scalars[i * dIn + j] } }
    return SAEParameters(wEnc: wEnc, bEnc: Tensor(zeros: [dSAE]), wDec: wDec, bDec: Tensor(zeros: [dIn]),
                         threshold: threshold.map { Tensor(shape: [dSAE], scalars: [Float](repeating: $0, count: dSAE)) })
}
