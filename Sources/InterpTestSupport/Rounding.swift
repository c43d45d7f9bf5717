import Foundation
import InterpModels

/// Tolerances sized from the computation, for results that two correct runs may round differently: the same
/// float32 values summed in another order, as another batch shape, BLAS kernel or thread count sums them. A test that
/// compares such results exactly, or at a fixed 1e-6, tests the rounding of the machine it ran on.
public enum Float32Rounding {
    /// float32's machine epsilon, 2⁻²³.
    public static let epsilon = Double(Float.ulpOfOne)

    /// How far rounding may move a value of magnitude `scale` computed through `inSeries` float32 reductions of up to
    /// `terms` terms each, when another order sums them: the probabilistic bound of a sum's rounding error,
    /// √terms·ε of its terms' magnitude (Higham and Mary, 2019), with the terms' magnitude taken as `scale`, the
    /// reductions in series adding in quadrature, and `spread` (1) for a margin. (Measured on the fixture models
    /// between OpenBLAS kernels: logits move by about 6 ε of their scale; this gives 30–70.)
    public static func drift(scale: Double, terms: Int, inSeries: Int = 1, spread: Double = 1) -> Double {
        spread * (Double(max(1, inSeries)) * Double(max(1, terms))).squareRoot() * epsilon * scale
    }

    /// How far rounding may move a model's logits of magnitude up to `logitScale` on `positions` positions: a block
    /// is two reductions in series (attention, then MLP or the head mix), each over the longest of d_model, d_mlp and
    /// the attended positions, and the unembedding one more.
    public static func logitDrift(_ config: ModelConfig, logitScale: Double, positions: Int) -> Double {
        drift(scale: max(1, logitScale), terms: max(config.dModel, config.attnOnly ? 0 : config.dMLP, positions),
              inSeries: 2 * config.nLayers + 1)
    }

    /// How far rounding may move a KL divergence (or any mean of log-softmax differences) whose logits each moved by
    /// at most `logitDrift`: the KL's change is Σ (q − p)·δ, at most ‖q − p‖₁·max|δ| ≤ 2·max|δ|.
    public static func klDrift(logitDrift: Double) -> Double {
        2 * logitDrift
    }
}
