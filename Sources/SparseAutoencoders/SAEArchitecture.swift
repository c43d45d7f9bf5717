import InterpCore

/// The SAE architectures interp trains, with their settings.
public enum SAEArchitecture: Equatable, Sendable {
    case standard(l1Coefficient: Float, l1WarmUpSteps: Int)
    case topK(k: Int, auxCoefficient: Float)

    public var name: String {
        switch self {
        case .standard: return "standard"
        case .topK: return "topk"
        }
    }

    /// Loss terms and gradients for one batch; `step` sets the sparsity-coefficient warm-up.
    func lossAndGradients(_ p: SAEParameters, x: Tensor, step: Int, deadMask: [Bool], workspace: SAEWorkspace) -> (losses: [String: Float], featureActs: Tensor, reconstruction: Tensor, gradients: SAEParameters) {
        switch self {
        case let .standard(l1, warmUp):
            // SAELens's CoefficientScheduler: at step t the coefficient is final · min(t / warmUp, 1), so 0 at step 0.
            let coefficient = warmUp > 0 ? l1 * min(Float(step) / Float(warmUp), 1) : l1
            let r = StandardSAE.lossAndGradients(p, x: x, l1Coefficient: coefficient, workspace: workspace)
            return (["mse_loss": r.losses.mse, "l1_loss": r.losses.l1], r.featureActs, r.reconstruction, r.gradients)
        case let .topK(k, aux):
            let r = TopKSAE.lossAndGradients(p, x: x, options: .init(k: k, auxCoefficient: aux), deadMask: deadMask, workspace: workspace)
            return (["mse_loss": r.mse, "auxiliary_reconstruction_loss": r.aux], r.featureActs, r.reconstruction, r.gradients)
        }
    }
}

/// SAELens's initialisation: `W_dec` rows Kaiming-uniform then scaled to norm `decoderInitNorm` (0.1), `W_enc = W_decᵀ`,
/// biases zero.
public func initialSAEParameters(dIn: Int, dSAE: Int, decoderInitNorm: Float = 0.1, seed: UInt64) -> SAEParameters {
    var rng = SeededRandom(seed: seed)
    let bound = (6 / Float(dIn)).squareRoot()
    var wDec = Tensor(zeros: [dSAE, dIn])
    for i in 0..<dSAE {
        var norm: Float = 0
        for j in 0..<dIn {
            let w = (rng.nextUniform() * 2 - 1) * bound
            wDec.scalars[i * dIn + j] = w
            norm += w * w
        }
        let scale = decoderInitNorm / max(norm.squareRoot(), 1e-12)
        for j in 0..<dIn { wDec.scalars[i * dIn + j] *= scale }
    }
    var wEnc = Tensor(zeros: [dIn, dSAE])
    for i in 0..<dSAE { for j in 0..<dIn { wEnc.scalars[j * dSAE + i] = wDec.scalars[i * dIn + j] } }
    return SAEParameters(wEnc: wEnc, bEnc: Tensor(zeros: [dSAE]), wDec: wDec, bDec: Tensor(zeros: [dIn]))
}
