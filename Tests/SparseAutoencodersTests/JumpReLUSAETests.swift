import Foundation
import InterpCore
import InterpTestSupport
import SafeTensors
import SparseAutoencoders
import Testing

/// JumpReLU (step L0 loss, bandwidth 0.05, coefficient 0.3) against real SAELens 6.54 (fixtures/make_sae.py
/// `jumprelu_steps`).
@Suite struct JumpReLUSAETests {
    let fixture: SafeTensorsFile
    let options = JumpReLUSAE.Options(bandwidth: 0.05, l0Coefficient: 0.3)

    init() throws {
        fixture = try SafeTensorsFile(path: Fixtures.root + "/sae/jumprelu-steps.safetensors")
    }

    func parameters(_ prefix: String) throws -> SAEParameters {
        SAEParameters(wEnc: try fixture.tensor(prefix + ".W_enc"), bEnc: try fixture.tensor(prefix + ".b_enc"),
                      wDec: try fixture.tensor(prefix + ".W_dec"), bDec: try fixture.tensor(prefix + ".b_dec"),
                      threshold: try fixture.tensor(prefix + ".threshold"))
    }

    func expectClose(_ actual: Tensor, _ expected: Tensor, _ label: String) {
        let scale = max(expected.scalars.map { Swift.abs($0) }.max() ?? 0, 1e-12)
        let check = compare(actual, expected, atol: 1e-4 * scale)
        #expect(check.passed, "\(label): \(check) (scale \(scale))")
    }

    @Test func lossesActivationsAndGradientsMatchSAELens() throws {
        let p = try parameters("initial")
        #expect(try fixture.tensor("step0.window_count").scalars[0] > 50)   // the estimator is exercised
        var sparse = options, dense = options
        sparse.sparseBelowDensity = 1
        dense.sparseBelowDensity = 0
        for result in [JumpReLUSAE.lossAndGradients(p, x: try fixture.tensor("batch0"), options: sparse),
                       JumpReLUSAE.lossAndGradients(p, x: try fixture.tensor("batch0"), options: dense),
                       JumpReLUSAE.denseReference(p, x: try fixture.tensor("batch0"), options: options)] {
            let mse = try fixture.tensor("step0.mse_loss").scalars[0], l0 = try fixture.tensor("step0.l0_loss").scalars[0]
            #expect(Swift.abs(result.mse - mse) <= 1e-5 * mse, "mse \(result.mse) vs \(mse)")
            #expect(Swift.abs(result.l0Loss - l0) <= 1e-6 * l0, "l0 \(result.l0Loss) vs \(l0)")
            expectClose(result.featureActs, try fixture.tensor("step0.feature_acts"), "feature_acts")
            expectClose(result.reconstruction, try fixture.tensor("step0.sae_out"), "sae_out")
            for name in p.names {
                expectClose(result.gradients[name], try fixture.tensor("step0.grad.\(name)"), "grad \(name)")
            }
        }
    }

    /// Three Adam steps over all five tensors, with SAELens's projection of the threshold onto θ ≥ 0 before each.
    @Test func threeAdamStepsMatchSAELens() throws {
        var p = try parameters("initial")
        var adam = AdamOptimizer(dIn: p.dIn, dSAE: p.dSAE, threshold: true, learningRate: 4e-3)
        for step in 0..<3 {
            p.threshold!.scalars = p.threshold!.scalars.map { max($0, 0) }
            let result = JumpReLUSAE.lossAndGradients(p, x: try fixture.tensor("batch\(step)"), options: options)
            let norm = adam.update(&p, gradients: result.gradients)
            let expected = try fixture.tensor("step\(step).grad_norm").scalars[0]
            #expect(Swift.abs(norm - expected) <= 1e-5 * expected)
            for name in p.names {
                let check = compare(p[name], try fixture.tensor("after\(step).\(name)"), atol: 1e-6, rtol: 1e-4)
                #expect(check.passed, "after step \(step), \(name): \(check)")
            }
        }
    }

    /// The sparse fast path against the dense transcription on odd shapes (both b_dec settings), across the worker
    /// split, with a reused workspace.
    @Test(arguments: [(true, 1.0), (false, 1.0), (true, 0.0), (false, 0.0)])
    func fastPathMatchesDenseReference(applyBDec: Bool, sparseBelow: Double) {
        var rng = SeededRandom(seed: 51)
        let workspace = SAEWorkspace()
        for (B, D, S) in [(5, 6, 17), (9, 10, 31), (200, 6, 20)] {
            let p = SAEParameters(wEnc: rng.normalTensor([D, S], std: 0.5), bEnc: rng.normalTensor([S], std: 0.2),
                                  wDec: rng.normalTensor([S, D], std: 0.5), bDec: rng.normalTensor([D], std: 0.2),
                                  threshold: Tensor(shape: [S], scalars: (0..<S).map { _ in abs(rng.nextUniform()) * 0.6 }))
            let x = rng.normalTensor([B, D], std: 1)
            // sparseBelow 1: always the sparse path; 0: always the dense one.
            let o = JumpReLUSAE.Options(bandwidth: 0.3, l0Coefficient: 0.7, applyBDecToInput: applyBDec, sparseBelowDensity: sparseBelow)
            let fast = JumpReLUSAE.lossAndGradients(p, x: x, options: o, workspace: workspace)
            let reference = JumpReLUSAE.denseReference(p, x: x, options: o)
            #expect(Swift.abs(fast.mse - reference.mse) <= 1e-5 * max(reference.mse, 1))
            #expect(fast.l0Loss == reference.l0Loss)   // same active set (the two sum pre in different orders)
            #expect(compare(fast.featureActs, reference.featureActs, atol: 1e-5).passed)
            #expect(compare(fast.reconstruction, reference.reconstruction, atol: 1e-5).passed)
            for name in p.names {
                #expect(compare(fast.gradients[name], reference.gradients[name], atol: 1e-5, rtol: 1e-4).passed, "\(name) B\(B)")
            }
        }
    }

    /// The reconstruction loss's true gradient (every tensor but the threshold, whose gradient is the estimator's).
    @Test func gradientsMatchFiniteDifferences() {
        var rng = SeededRandom(seed: 10)
        let (B, D, S) = (3, 4, 9)
        let p = SAEParameters(wEnc: rng.normalTensor([D, S], std: 0.6), bEnc: rng.normalTensor([S], std: 0.3),
                              wDec: rng.normalTensor([S, D], std: 0.6), bDec: rng.normalTensor([D], std: 0.3),
                              threshold: Tensor(shape: [S], scalars: [Float](repeating: 0.2, count: S)))
        let x = rng.normalTensor([B, D], std: 1)
        let o = JumpReLUSAE.Options(l0Coefficient: 0.5)
        let result = JumpReLUSAE.lossAndGradients(p, x: x, options: o)
        #expect(Swift.abs(JumpReLUSAE.naiveMSE(p, x: x) - Double(result.mse)) < 1e-5)
        let checked = checkFiniteDifferences(p, gradients: result.gradients, loss: { JumpReLUSAE.naiveMSE($0, x: x) },
                                             regime: { JumpReLUSAE.lossAndGradients($0, x: x, options: o).featureActs.scalars.map { $0 != 0 } })
        #expect(checked > 50)
    }

    @Test func loadsSAELensJumpReLUDirectory() throws {
        let sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/saelens-jumprelu")
        #expect(sae.config.architecture == "jumprelu" && sae.parameters.threshold != nil)
        let outputs = try SafeTensorsFile(path: Fixtures.root + "/sae/saelens-jumprelu-outputs.safetensors")
        let x = try outputs.tensor("x")
        let acts = try sae.encode(x)
        #expect(acts.scalars.contains { $0 != 0 } && acts.scalars.contains { $0 == 0 })
        #expect(compare(acts, try outputs.tensor("feature_acts"), atol: 1e-5).passed)
        #expect(compare(try sae.reconstruct(x), try outputs.tensor("sae_out"), atol: 1e-5).passed)
    }
}
