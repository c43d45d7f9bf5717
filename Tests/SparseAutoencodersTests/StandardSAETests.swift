import Foundation
import InterpCore
import InterpTestSupport
import SafeTensors
import SparseAutoencoders
import Testing

/// The standard SAE's loss, gradients and Adam steps against real SAELens 6.54 (fixtures/make_sae.py).
@Suite struct StandardSAETests {
    let fixture: SafeTensorsFile
    let l1: Float = 5.0, lr: Float = 4e-3

    init() throws {
        fixture = try SafeTensorsFile(path: Fixtures.root + "/sae/standard-steps.safetensors")
    }

    func parameters(_ prefix: String) throws -> SAEParameters {
        SAEParameters(wEnc: try fixture.tensor(prefix + ".W_enc"), bEnc: try fixture.tensor(prefix + ".b_enc"),
                      wDec: try fixture.tensor(prefix + ".W_dec"), bDec: try fixture.tensor(prefix + ".b_dec"))
    }

    /// Relative to the reference's largest magnitude: |a − e| ≤ 1e-4 · max|e|.
    func expectClose(_ actual: Tensor, _ expected: Tensor, _ label: String, relative: Float = 1e-4) {
        let scale = max(expected.scalars.map { Swift.abs($0) }.max() ?? 0, 1e-12)
        let check = compare(actual, expected, atol: relative * scale)
        #expect(check.passed, "\(label): \(check) (scale \(scale))")
    }

    @Test func lossTermsActivationsAndGradientsMatchSAELens() throws {
        let p = try parameters("initial")
        for sparseBelow in [0.0, 1.0] {
        let result = StandardSAE.lossAndGradients(p, x: try fixture.tensor("batch0"), l1Coefficient: l1, sparseBelowDensity: sparseBelow)
        for (value, name) in [(result.losses.mse, "mse_loss"), (result.losses.l1, "l1_loss"), (result.losses.total, "loss")] {
            let expected = try fixture.tensor("step0." + name).scalars[0]
            #expect(Swift.abs(value - expected) <= 1e-5 * Swift.abs(expected), "\(name): \(value) vs SAELens \(expected)")
        }
        expectClose(result.featureActs, try fixture.tensor("step0.feature_acts"), "feature_acts")
        expectClose(result.reconstruction, try fixture.tensor("step0.sae_out"), "sae_out")
        for name in SAEParameters.names {
            expectClose(result.gradients[name], try fixture.tensor("step0.grad." + name), "grad \(name)")
        }
        }
    }

    @Test func threeAdamStepsMatchSAELens() throws {
        var p = try parameters("initial")
        var adam = AdamOptimizer(dIn: p.dIn, dSAE: p.dSAE, learningRate: lr)
        for step in 0..<3 {
            let result = StandardSAE.lossAndGradients(p, x: try fixture.tensor("batch\(step)"), l1Coefficient: l1)
            let norm = adam.update(&p, gradients: result.gradients)
            let expectedNorm = try fixture.tensor("step\(step).grad_norm").scalars[0]
            #expect(Swift.abs(norm - expectedNorm) <= 1e-5 * expectedNorm, "step \(step) gradient norm \(norm) vs \(expectedNorm)")
            for name in SAEParameters.names {
                let expected = try fixture.tensor("after\(step).\(name)")
                // Parameters: relative error ≤ 1e-4 elementwise (with a floor for values near zero).
                let check = compare(p[name], expected, atol: 1e-6, rtol: 1e-4)
                #expect(check.passed, "after step \(step), \(name): \(check)")
            }
        }
    }

    /// Both paths (dense products; sparse once few latents fire), and a batch big enough for the row pass to split
    /// across workers.
    @Test(arguments: [(true, 0.0), (false, 0.0), (true, 1.0), (false, 1.0)])
    func fastGradientsMatchNaiveOnOddShapes(applyBDec: Bool, sparseBelow: Double) {
        var rng = SeededRandom(seed: 4)
        for (B, D, S) in [(7, 5, 13), (150, 6, 11)] {
        let p = SAEParameters(wEnc: rng.normalTensor([D, S], std: 0.5), bEnc: rng.normalTensor([S], std: 0.2),
                              wDec: rng.normalTensor([S, D], std: 0.5), bDec: rng.normalTensor([D], std: 0.2))
        let x = rng.normalTensor([B, D], std: 1)
        let fast = StandardSAE.lossAndGradients(p, x: x, l1Coefficient: 0.7, applyBDecToInput: applyBDec, sparseBelowDensity: sparseBelow)
        #expect((fast.firingCounts != nil) == (sparseBelow == 1))
        let naive = StandardSAE.naiveGradients(p, x: x, l1Coefficient: 0.7, applyBDecToInput: applyBDec)
        let loss = StandardSAE.naiveLoss(p, x: x, l1Coefficient: 0.7, applyBDecToInput: applyBDec)
        #expect(Swift.abs(Double(fast.losses.mse) - loss.mse) < 1e-5 * max(loss.mse, 1))
        #expect(Swift.abs(Double(fast.losses.l1) - loss.l1) < 1e-5 * max(loss.l1, 1))
        for name in SAEParameters.names {
            #expect(compare(fast.gradients[name], naive[name], atol: 1e-5, rtol: 1e-4).passed, "\(name) B\(B)")
        }
        }
    }

    /// The naive gradients against central differences of the Double loss.
    @Test func naiveGradientsMatchFiniteDifferences() {
        var rng = SeededRandom(seed: 5)
        let (B, D, S) = (4, 3, 6)
        let p = SAEParameters(wEnc: rng.normalTensor([D, S], std: 0.6), bEnc: rng.normalTensor([S], std: 0.3),
                              wDec: rng.normalTensor([S, D], std: 0.6), bDec: rng.normalTensor([D], std: 0.3))
        let x = rng.normalTensor([B, D], std: 1)
        let grads = StandardSAE.naiveGradients(p, x: x, l1Coefficient: 0.9)
        /// Signs of every pre-activation: where one flips between the two evaluations the loss has a kink in between.
        func signs(_ q: SAEParameters) -> [Bool] {
            var out: [Bool] = []
            for b in 0..<B {
                for i in 0..<S {
                    var pre = Double(q.bEnc.scalars[i])
                    for j in 0..<D {
                        let centred = Double(x.scalars[b * D + j]) - Double(q.bDec.scalars[j])
                        pre += centred * Double(q.wEnc.scalars[j * S + i])
                    }
                    out.append(pre > 0)
                }
            }
            return out
        }
        let checked = checkFiniteDifferences(p, gradients: grads, loss: { q in
            let l = StandardSAE.naiveLoss(q, x: x, l1Coefficient: 0.9)
            return l.mse + l.l1
        }, regime: signs)
        let total = SAEParameters.names.reduce(0) { $0 + p[$1].count }
        #expect(checked >= total - 3, "only \(checked) of \(total) entries checked away from ReLU kinks")
    }
}

@Suite struct SAELensDirectoryTests {
    @Test func loadsSAELensDirectoryAndReconstructsAsSAELens() throws {
        let sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/saelens-standard")
        #expect(sae.config.architecture == "standard" && sae.config.dIn == 16 && sae.config.dSAE == 48)
        #expect(sae.config.metadata?.hookName == "blocks.0.hook_resid_post")
        let outputs = try SafeTensorsFile(path: Fixtures.root + "/sae/saelens-standard-outputs.safetensors")
        let x = try outputs.tensor("x")
        #expect(compare(try sae.encode(x), try outputs.tensor("feature_acts"), atol: 1e-5).passed)
        #expect(compare(try sae.reconstruct(x), try outputs.tensor("sae_out"), atol: 1e-5).passed)
        #expect(throws: InterpError.self) { try sae.encode(Tensor(zeros: [2, 15])) }
    }

    @Test func badDirectoriesGiveOneLineErrors() throws {
        let source = Fixtures.root + "/sae/saelens-standard"
        func copy(_ edit: (String) throws -> Void) throws -> String {
            let dir = try Fixtures.temporaryDirectory() + "/sae"
            try FileManager.default.copyItem(atPath: source, toPath: dir)
            try edit(dir)
            return dir
        }
        func error(_ dir: String) -> InterpError? {
            do { _ = try SparseAutoencoder.load(directory: dir); return nil } catch { return error as? InterpError }
        }
        let noConfig = try copy { try FileManager.default.removeItem(atPath: $0 + "/cfg.json") }
        #expect(error(noConfig)?.description == noConfig + "/cfg.json: no such file")
        let topk = try copy { dir in
            let text = try String(contentsOfFile: dir + "/cfg.json", encoding: .utf8).replacingOccurrences(of: "\"architecture\": \"standard\"", with: "\"architecture\": \"gated\"")
            try text.write(toFile: dir + "/cfg.json", atomically: true, encoding: .utf8)
        }
        #expect(error(topk)?.message == "architecture 'gated' is not supported yet (interp reads standard, topk and jumprelu)")
        let wrongShape = try copy { dir in
            let file = try SafeTensorsFile(path: dir + "/sae_weights.safetensors")
            var tensors = try Dictionary(uniqueKeysWithValues: file.names.map { ($0, try file.tensor($0)) })
            tensors["b_enc"] = Tensor(zeros: [47])
            try SafeTensorsWriter.write(tensors, to: dir + "/sae_weights.safetensors")
        }
        #expect(error(wrongShape)?.description == wrongShape + "/sae_weights.safetensors: tensor 'b_enc' has shape [47] but cfg.json implies [48]")
    }
}
