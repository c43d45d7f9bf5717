import Foundation
import InterpCore
import InterpTestSupport
import SafeTensors
import SparseAutoencoders
import Testing

/// BatchTopK (k = 5.5 on average) with AuxK against real SAELens 6.54 (fixtures/make_sae.py `batchtopk_steps`).
@Suite struct BatchTopKSAETests {
    let fixture: SafeTensorsFile
    let options = TopKSAE.Options.batchTopK(k: 5.5)

    init() throws {
        fixture = try SafeTensorsFile(path: Fixtures.root + "/sae/batchtopk-steps.safetensors")
    }

    func parameters(_ prefix: String) throws -> SAEParameters {
        SAEParameters(wEnc: try fixture.tensor(prefix + ".W_enc"), bEnc: try fixture.tensor(prefix + ".b_enc"),
                      wDec: try fixture.tensor(prefix + ".W_dec"), bDec: try fixture.tensor(prefix + ".b_dec"))
    }

    func expectClose(_ actual: Tensor, _ expected: Tensor, _ label: String) {
        let scale = max(expected.scalars.map { Swift.abs($0) }.max() ?? 0, 1e-12)
        let check = compare(actual, expected, atol: 1e-4 * scale)
        #expect(check.passed, "\(label): \(check) (scale \(scale))")
    }

    @Test func lossesActivationsAndGradientsMatchSAELens() throws {
        let dead = try fixture.tensor("dead").scalars.map { $0 != 0 }
        let result = TopKSAE.lossAndGradients(try parameters("initial"), x: try fixture.tensor("batch0"), options: options, deadMask: dead)
        let mse = try fixture.tensor("step0.mse_loss").scalars[0], aux = try fixture.tensor("step0.aux_loss").scalars[0]
        #expect(Swift.abs(result.mse - mse) <= 1e-5 * mse, "mse \(result.mse) vs \(mse)")
        #expect(aux > 0 && Swift.abs(result.aux - aux) <= 1e-5 * aux, "aux \(result.aux) vs \(aux)")
        let acts = try fixture.tensor("step0.feature_acts")
        #expect(acts.scalars.filter { $0 != 0 }.count == 176)     // int(5.5 · 32), spread unevenly over rows
        #expect(result.featureActs.scalars.map { $0 != 0 } == acts.scalars.map { $0 != 0 })
        expectClose(result.featureActs, acts, "feature_acts")
        expectClose(result.reconstruction, try fixture.tensor("step0.sae_out"), "sae_out")
        for name in SAEParameters.names {
            expectClose(result.gradients[name], try fixture.tensor("step0.grad.\(name)"), "grad \(name)")
        }
    }

    /// Three Adam steps: parameters, gradient norms, and the moving threshold (double precision) after each step.
    @Test func threeAdamStepsAndThresholdMatchSAELens() throws {
        var p = try parameters("initial")
        var adam = AdamOptimizer(dIn: p.dIn, dSAE: p.dSAE, learningRate: 4e-3)
        let dead = try fixture.tensor("dead").scalars.map { $0 != 0 }
        var threshold = 0.0
        for step in 0..<3 {
            let result = TopKSAE.lossAndGradients(p, x: try fixture.tensor("batch\(step)"), options: options, deadMask: dead)
            threshold = BatchTopKSAE.updatedThreshold(threshold, minPositive: result.minPositive)
            let expectedThreshold = try fixture.tensor("step\(step).topk_threshold").scalars[0]
            #expect(Swift.abs(Float(threshold) - expectedThreshold) <= 1e-6 * expectedThreshold, "threshold \(threshold) vs \(expectedThreshold)")
            let norm = adam.update(&p, gradients: result.gradients)
            let expected = try fixture.tensor("step\(step).grad_norm").scalars[0]
            #expect(Swift.abs(norm - expected) <= 1e-5 * expected)
            for name in SAEParameters.names {
                let check = compare(p[name], try fixture.tensor("after\(step).\(name)"), atol: 1e-6, rtol: 1e-4)
                #expect(check.passed, "after step \(step), \(name): \(check)")
            }
        }
        // SAELens's inference save: norms folded, the threshold broadcast; it loads as a JumpReLU SAE.
        let saved = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/saelens-batchtopk")
        #expect(saved.config.architecture == "jumprelu")
        let expected = BatchTopKSAE.inferenceParameters(p, threshold: threshold)
        for name in expected.names {
            #expect(compare(expected[name], saved.parameters[name], atol: 1e-6, rtol: 1e-4).passed, "saved \(name)")
        }
        let outputs = try SafeTensorsFile(path: Fixtures.root + "/sae/saelens-batchtopk-outputs.safetensors")
        let x = try outputs.tensor("x")
        #expect(compare(try saved.encode(x), try outputs.tensor("feature_acts"), atol: 1e-5).passed)
        #expect(compare(try saved.reconstruct(x), try outputs.tensor("sae_out"), atol: 1e-5).passed)
    }

    /// The radix-select fast path against sorting, on shapes with fewer positives than k·B, with ties, with AuxK, and
    /// across the worker split.
    @Test func fastPathMatchesDenseReference() {
        var rng = SeededRandom(seed: 41)
        let workspace = SAEWorkspace()
        for (B, D, S, k) in [(5, 6, 17, 3.0), (9, 10, 31, 2.5), (2, 4, 8, 8), (200, 6, 20, 3.3), (7, 4, 9, 0.2)] {
            var p = SAEParameters(wEnc: rng.normalTensor([D, S], std: 0.5), bEnc: rng.normalTensor([S], std: 0.2),
                                  wDec: rng.normalTensor([S, D], std: 0.5), bDec: rng.normalTensor([D], std: 0.2))
            if B == 2 { p.bEnc.scalars = p.bEnc.scalars.map { _ in -5 } }   // almost nothing positive: k·B exceeds it
            let x = rng.normalTensor([B, D], std: 1)
            let o = TopKSAE.Options.batchTopK(k: k, auxCoefficient: 0.7)
            for dead in [nil, (0..<S).map { $0 % 3 == 0 }] as [[Bool]?] {
                let fast = TopKSAE.lossAndGradients(p, x: x, options: o, deadMask: dead, workspace: workspace)
                let reference = TopKSAE.denseReference(p, x: x, options: o, deadMask: dead)
                #expect(Swift.abs(fast.mse - reference.mse) <= 1e-5 * max(reference.mse, 1))
                #expect(Swift.abs(fast.aux - reference.aux) <= 1e-5 * max(reference.aux, 1))
                #expect(fast.featureActs == reference.featureActs, "B\(B) k\(k)")
                #expect(fast.minPositive == reference.minPositive)
                for name in SAEParameters.names {
                    #expect(compare(fast.gradients[name], reference.gradients[name], atol: 1e-5, rtol: 1e-4).passed, "\(name) B\(B)")
                }
            }
        }
        // Exact ties at the cutoff: identical rows tie everywhere; the batch keeps exactly Int(k·B) of them.
        let p = SAEParameters(wEnc: rng.normalTensor([4, 10], std: 0.5), bEnc: rng.normalTensor([10], std: 0.2),
                              wDec: rng.normalTensor([10, 4], std: 0.5), bDec: Tensor(zeros: [4]))
        let row = rng.normalTensor([1, 4], std: 1).scalars
        let x = Tensor(shape: [130, 4], scalars: (0..<130).flatMap { _ in row })
        let fast = TopKSAE.lossAndGradients(p, x: x, options: .batchTopK(k: 1.5), deadMask: nil, workspace: workspace)
        #expect(fast.featureActs.scalars.filter { $0 != 0 }.count == Int(1.5 * 130))
        let reference = TopKSAE.denseReference(p, x: x, options: .batchTopK(k: 1.5), deadMask: nil)
        #expect(fast.featureActs == reference.featureActs)
    }

    /// Finite differences of the Double reference loss, with the kept set held fixed.
    @Test func gradientsMatchFiniteDifferences() {
        var rng = SeededRandom(seed: 9)
        let (B, D, S) = (3, 4, 9)
        let p = SAEParameters(wEnc: rng.normalTensor([D, S], std: 0.6), bEnc: rng.normalTensor([S], std: 0.3),
                              wDec: rng.normalTensor([S, D], std: 0.6), bDec: rng.normalTensor([D], std: 0.3))
        let x = rng.normalTensor([B, D], std: 1)
        let o = TopKSAE.Options.batchTopK(k: 2.5)
        let result = TopKSAE.lossAndGradients(p, x: x, options: o, deadMask: nil)
        let checked = checkFiniteDifferences(p, gradients: result.gradients,
                                             loss: { TopKSAE.naiveLoss($0, x: x, options: o, deadMask: nil).mse },
                                             regime: { TopKSAE.lossAndGradients($0, x: x, options: o, deadMask: nil).featureActs.scalars.map { $0 > 0 } })
        #expect(checked > 50)
    }
}
