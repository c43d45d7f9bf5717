import Foundation
import InterpCore
import InterpTestSupport
import SafeTensors
import SparseAutoencoders
import Testing

/// TopK with decoder-norm rescaling and AuxK against real SAELens 6.54 (fixtures/make_sae.py).
@Suite struct TopKSAETests {
    let fixture: SafeTensorsFile
    let options = TopKSAE.Options(k: 6)

    init() throws {
        fixture = try SafeTensorsFile(path: Fixtures.root + "/sae/topk-steps.safetensors")
    }

    func parameters(_ prefix: String) throws -> SAEParameters {
        SAEParameters(wEnc: try fixture.tensor(prefix + ".W_enc"), bEnc: try fixture.tensor(prefix + ".b_enc"),
                      wDec: try fixture.tensor(prefix + ".W_dec"), bDec: try fixture.tensor(prefix + ".b_dec"))
    }

    func mask(_ name: String) throws -> [Bool] { try fixture.tensor(name).scalars.map { $0 != 0 } }

    func expectClose(_ actual: Tensor, _ expected: Tensor, _ label: String) {
        let scale = max(expected.scalars.map { Swift.abs($0) }.max() ?? 0, 1e-12)
        let check = compare(actual, expected, atol: 1e-4 * scale)
        #expect(check.passed, "\(label): \(check) (scale \(scale))")
    }

    @Test(arguments: ["many", "few"])
    func lossesActivationsAndGradientsMatchSAELens(dead: String) throws {
        let result = TopKSAE.lossAndGradients(try parameters("initial"), x: try fixture.tensor("batch0"), options: options,
                                              deadMask: try mask("dead_" + dead))
        let mse = try fixture.tensor(dead + ".mse_loss").scalars[0], aux = try fixture.tensor(dead + ".aux_loss").scalars[0]
        #expect(Swift.abs(result.mse - mse) <= 1e-5 * mse, "mse \(result.mse) vs \(mse)")
        #expect(aux > 0 && Swift.abs(result.aux - aux) <= 1e-5 * aux, "aux \(result.aux) vs \(aux)")
        expectClose(result.featureActs, try fixture.tensor(dead + ".feature_acts"), "feature_acts")
        expectClose(result.reconstruction, try fixture.tensor(dead + ".sae_out"), "sae_out")
        for name in SAEParameters.names {
            expectClose(result.gradients[name], try fixture.tensor("\(dead).grad.\(name)"), "\(dead) grad \(name)")
        }
    }

    @Test func threeAdamStepsMatchSAELens() throws {
        var p = try parameters("initial")
        var adam = AdamOptimizer(dIn: p.dIn, dSAE: p.dSAE, learningRate: 4e-3)
        let dead = try mask("dead_few")
        for step in 0..<3 {
            let result = TopKSAE.lossAndGradients(p, x: try fixture.tensor("batch\(step)"), options: options, deadMask: dead)
            let norm = adam.update(&p, gradients: result.gradients)
            let expected = try fixture.tensor("step\(step).grad_norm").scalars[0]
            #expect(Swift.abs(norm - expected) <= 1e-5 * expected)
            for name in SAEParameters.names {
                let check = compare(p[name], try fixture.tensor("after\(step).\(name)"), atol: 1e-6, rtol: 1e-4)
                #expect(check.passed, "after step \(step), \(name): \(check)")
            }
        }
    }

    /// Without dead latents the loss is a plain function of the parameters: central differences of the Double
    /// reference agree with the gradients wherever the selected set and ReLU signs stay put.
    @Test func gradientsMatchFiniteDifferences() {
        var rng = SeededRandom(seed: 8)
        let (B, D, S) = (3, 4, 9)
        let p = SAEParameters(wEnc: rng.normalTensor([D, S], std: 0.6), bEnc: rng.normalTensor([S], std: 0.3),
                              wDec: rng.normalTensor([S, D], std: 0.6), bDec: rng.normalTensor([D], std: 0.3))
        let x = rng.normalTensor([B, D], std: 1)
        let o = TopKSAE.Options(k: 3)
        let result = TopKSAE.lossAndGradients(p, x: x, options: o, deadMask: nil)
        let base = TopKSAE.naiveLoss(p, x: x, options: o, deadMask: nil)
        #expect(Swift.abs(base.mse - Double(result.mse)) < 1e-5 * max(base.mse, 1))
        let checked = checkFiniteDifferences(p, gradients: result.gradients,
                                             loss: { TopKSAE.naiveLoss($0, x: x, options: o, deadMask: nil).mse },
                                             regime: { TopKSAE.lossAndGradients($0, x: x, options: o, deadMask: nil).featureActs.scalars.map { $0 > 0 } })
        #expect(checked > 50)
    }

    /// The sparse fast path against the all-dense reference, on odd shapes, with and without dead latents, rescaling
    /// and b_dec subtraction; and with a workspace reused across calls of different shapes.
    @Test(arguments: [(true, true), (true, false), (false, true)])
    func fastPathMatchesDenseReference(rescale: Bool, applyBDec: Bool) {
        var rng = SeededRandom(seed: 21)
        let workspace = SAEWorkspace()
        // 200 rows: enough for the row loop to split across workers (it does from 128 rows on a 2-core machine).
        for (B, D, S, k) in [(5, 6, 17, 3), (9, 10, 31, 7), (2, 4, 8, 8), (200, 6, 20, 3)] {
            let p = SAEParameters(wEnc: rng.normalTensor([D, S], std: 0.5), bEnc: rng.normalTensor([S], std: 0.2),
                                  wDec: rng.normalTensor([S, D], std: 0.5), bDec: rng.normalTensor([D], std: 0.2))
            let x = rng.normalTensor([B, D], std: 1)
            let o = TopKSAE.Options(k: k, auxCoefficient: 0.7, rescaleByDecoderNorm: rescale, applyBDecToInput: applyBDec)
            for dead in [nil, (0..<S).map { $0 % 3 == 0 }, (0..<S).map { $0 == 1 }] as [[Bool]?] {
                let fast = TopKSAE.lossAndGradients(p, x: x, options: o, deadMask: dead, workspace: workspace)
                let reference = TopKSAE.denseReference(p, x: x, options: o, deadMask: dead)
                #expect(Swift.abs(fast.mse - reference.mse) <= 1e-5 * max(reference.mse, 1))
                #expect(Swift.abs(fast.aux - reference.aux) <= 1e-5 * max(reference.aux, 1))
                #expect(fast.featureActs == reference.featureActs)
                #expect(compare(fast.reconstruction, reference.reconstruction, atol: 1e-5).passed)
                for name in SAEParameters.names {
                    #expect(compare(fast.gradients[name], reference.gradients[name], atol: 1e-5, rtol: 1e-4).passed, "\(name) B\(B) dead \(dead != nil)")
                }
            }
        }
    }

    @Test func loadsSAELensTopKDirectory() throws {
        let sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/saelens-topk")
        #expect(sae.config.architecture == "topk" && sae.config.k == 6)
        let outputs = try SafeTensorsFile(path: Fixtures.root + "/sae/saelens-topk-outputs.safetensors")
        let x = try outputs.tensor("x")
        #expect(compare(try sae.encode(x), try outputs.tensor("feature_acts"), atol: 1e-5).passed)
        #expect(compare(try sae.reconstruct(x), try outputs.tensor("sae_out"), atol: 1e-5).passed)
    }
}
