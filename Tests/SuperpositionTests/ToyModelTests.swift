import Foundation
import InterpCore
import InterpTestSupport
import Superposition
import Testing

/// The toy model of superposition: its hand-written gradient, and what training does to its weights.
@Suite struct ToyModelTests {
    @Test func gradientsMatchFiniteDifferences() {
        var model = ToyModel(features: 6, hidden: 3, importanceDecay: 0.7, seed: 4)
        var rng = SeededRandom(seed: 9)
        for k in model.b.indices { model.b[k] = 0.1 * rng.nextNormal() }
        let x = ToyModel.sample(rows: 16, features: 6, sparsity: 0.3, rng: &rng)
        let (loss, gW, gB) = model.lossAndGradients(x, rows: 16)
        #expect(Swift.abs(Double(loss) - model.naiveLoss(x, rows: 16)) < 1e-5)
        var checked = 0
        for (isBias, count) in [(false, model.w.count), (true, model.b.count)] {
            for k in 0..<count {
                var up = model, down = model
                if isBias { up.b[k] += 1e-3; down.b[k] -= 1e-3 } else { up.w[k] += 1e-3; down.w[k] -= 1e-3 }
                let numeric = (up.naiveLoss(x, rows: 16) - down.naiveLoss(x, rows: 16)) / 2e-3
                let analytic = Double(isBias ? gB[k] : gW[k])
                #expect(Swift.abs(numeric - analytic) < 2e-3 * max(1, Swift.abs(numeric)), "\(isBias ? "b" : "W")[\(k)]: \(numeric) vs \(analytic)")
                checked += 1
            }
        }
        #expect(checked == 24)
    }

    /// Dense inputs: the 5 hidden dimensions hold about 5 features (ψ_Frob ≈ 1); very sparse inputs: many more.
    @Test func sparsityDrivesSuperpositionInTheWeights() {
        let dense = ToyModel.train(.init(sparsity: 0.001, batchSize: 256, steps: 2500, seed: 1)).model.weightReference
        let sparse = ToyModel.train(.init(sparsity: 0.99, batchSize: 256, steps: 2500, seed: 1)).model.weightReference
        #expect(dense.effectiveFeatures < 8 && Swift.abs(dense.frobeniusSuperposition - 1) < 0.2, "dense: \(dense)")
        #expect(sparse.effectiveFeatures > 11 && sparse.frobeniusSuperposition > 1.8, "sparse: \(sparse)")
    }
}

/// The validation pipeline end to end on a tiny sweep (the 40-model run is `interp toy-models`, in the notebook).
@Suite struct ToyModelValidationTests {
    @Test func sweepProducesBothCounts() throws {
        var settings = ToyModelValidation.Settings()
        settings.models = 2
        settings.toySteps = 300
        settings.toyBatchSize = 128
        settings.samples = 1000
        settings.saeSteps = 200
        let report = try ToyModelValidation.run(settings, directory: try Fixtures.temporaryDirectory())
        #expect(report.rows.count == 2 && report.rows[0].sparsity < 0.01 && report.rows[1].sparsity > 0.99)
        for row in report.rows {
            #expect(row.weightEffectiveFeatures >= 1 && row.weightEffectiveFeatures <= 20)
            #expect(row.saeEffectiveFeatures >= 1 && row.saeEffectiveFeatures <= 40 && row.saeSuperposition == row.saeEffectiveFeatures / 5)
        }
        #expect(Swift.abs(ToyModelValidation.pearson([1, 2, 3], [2, 4, 6.5]) - 0.997949) < 1e-5)
    }
}
