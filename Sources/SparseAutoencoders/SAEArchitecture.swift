import InterpCore

/// The training face of one SAE architecture (SAELens's `TrainingSAE` classes): its settings, one step's losses and
/// gradients, and the inference SAE it is saved as. A new architecture is a type conforming to this (and, if SAELens
/// saves it under a name of its own, to `SAEInferenceArchitecture`) in one file, plus a line in `SAERegistry`.
public protocol SAETrainingArchitecture: Sendable {
    /// `--architecture` and `SAETrainingSettings.architecture`.
    static var name: String { get }
    /// Whether it needs `SAETrainingSettings.k` (`--k`).
    static var needsK: Bool { get }
    /// Reads and checks this architecture's settings; the error names the option.
    init(settings: SAETrainingSettings) throws
    /// Whether the trained parameters include a per-latent `threshold`.
    var hasThreshold: Bool { get }
    /// Loss terms and gradients for one batch; `step` sets any sparsity-coefficient warm-up.
    func lossAndGradients(_ p: SAEParameters, x: Tensor, step: Int, deadMask: [Bool], workspace: SAEWorkspace) -> SAETrainingStep
    /// Whether the run tracks one threshold across steps (BatchTopK), logged as `topk_threshold` and kept in checkpoints.
    var tracksThreshold: Bool { get }
    /// The tracked threshold after a step.
    func updatedThreshold(_ threshold: Double, after step: SAETrainingStep) -> Double
    /// The weights as SAELens saves them for inference, with cfg.json's architecture fields set in `config`.
    func saved(_ p: SAEParameters, trackedThreshold: Double, config: inout SAELensConfig) -> SAEParameters
}

extension SAETrainingArchitecture {
    public static var needsK: Bool { false }
    public var hasThreshold: Bool { false }
    public var tracksThreshold: Bool { false }
    public func updatedThreshold(_ threshold: Double, after step: SAETrainingStep) -> Double { threshold }
}

/// What one training step gives the trainer.
public struct SAETrainingStep {
    /// SAELens's names: `mse_loss` and the architecture's sparsity or auxiliary term.
    public var losses: [String: Float]
    /// `[batch, d_sae]`
    public var featureActs: Tensor
    /// `[batch, d_in]`
    public var reconstruction: Tensor
    public var gradients: SAEParameters
    /// The smallest non-zero activation (BatchTopK's threshold follows it); infinity if none fired or not counted.
    public var minPositive: Float
    /// Rows in which each latent fired, if the step counted them (else they are counted from `featureActs`).
    public var firingCounts: [Float]?

    public init(losses: [String: Float], featureActs: Tensor, reconstruction: Tensor, gradients: SAEParameters,
                minPositive: Float = .infinity, firingCounts: [Float]? = nil) {
        self.losses = losses
        self.featureActs = featureActs
        self.reconstruction = reconstruction
        self.gradients = gradients
        self.minPositive = minPositive
        self.firingCounts = firingCounts
    }

    /// SAELens's CoefficientScheduler: at step t the coefficient is final · min(t / warmUp, 1), so 0 at step 0.
    public static func warmedUp(_ value: Float, steps warmUp: Int, at step: Int) -> Float {
        warmUp > 0 ? value * min(Float(step) / Float(warmUp), 1) : value
    }
}

/// The architectures interp trains and loads, by name. The trainer, `SparseAutoencoder.load` and the CLI's
/// `--architecture` read these lists; nothing else names an architecture.
public enum SAERegistry {
    public static let training: [any SAETrainingArchitecture.Type] = [
        StandardSAE.Training.self, TopKSAE.Training.self, BatchTopKSAE.Training.self, JumpReLUSAE.Training.self,
    ]
    public static let inference: [any SAEInferenceArchitecture.Type] = [
        StandardSAE.Inference.self, TopKSAE.Inference.self, JumpReLUSAE.Inference.self,
    ]

    public static func training(named name: String) -> (any SAETrainingArchitecture.Type)? {
        training.first { $0.name == name }
    }

    public static func inference(named name: String) -> (any SAEInferenceArchitecture.Type)? {
        inference.first { $0.name == name }
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
