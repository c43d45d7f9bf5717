import ActivationStore
import Foundation
import InterpCore
import InterpTestSupport
import SparseAutoencoders
import Superposition
import Testing

/// The effective feature count's defining properties (sae-anchors §(c)) and its streaming measurement.
@Suite struct FeatureCountTests {
    @Test func uniformOneHotAndSplitting() throws {
        let uniform = try #require(EffectiveFeatures(mass: [Double](repeating: 3.5, count: 64)))
        #expect(Swift.abs(uniform.effectiveFeatures - 64) < 1e-9 && uniform.hill0 == 64 && Swift.abs(uniform.hill2 - 64) < 1e-9)
        let oneHot = try #require(EffectiveFeatures(mass: [0, 0, 7, 0]))
        #expect(oneHot.effectiveFeatures == 1 && oneHot.entropy == 0 && oneHot.hill0 == 1)
        // Splitting a latent of mass p₀ into two equal halves multiplies F by 2^p₀.
        let before = try #require(EffectiveFeatures(mass: [0.5, 0.3, 0.2])).effectiveFeatures
        let after = try #require(EffectiveFeatures(mass: [0.25, 0.25, 0.3, 0.2])).effectiveFeatures
        #expect(Swift.abs(after / before - pow(2, 0.5)) < 1e-12)
        #expect(Swift.abs(before - 2.8001) < 1e-4)     // the value worked out by hand in sae-anchors
        #expect(EffectiveFeatures(mass: [0, 0, 0]) == nil)
    }

    @Test func permutationAndDecoderRescalingInvariance() throws {
        var rng = SeededRandom(seed: 3)
        let (rows, latents) = (50, 12)
        let z = (0..<(rows * latents)).map { _ in max(rng.nextNormal(), 0) }
        let norms = (0..<latents).map { _ in 0.5 + rng.nextUniform() }
        let base = try FeatureCount.measure(codes: Tensor(shape: [rows, latents], scalars: z), neurons: 4, decoderNorms: norms)
        // Permute latents.
        let order = Array((0..<latents).reversed())
        let permuted = (0..<rows).flatMap { r in order.map { z[r * latents + $0] } }
        let p = try FeatureCount.measure(codes: Tensor(shape: [rows, latents], scalars: permuted), neurons: 4, decoderNorms: order.map { norms[$0] })
        #expect(Swift.abs(p.effectiveFeatures - base.effectiveFeatures) < 1e-9)
        #expect(Swift.abs(p.variants.decoderWeighted - base.variants.decoderWeighted) < 1e-9)
        // z_i → c_i·z_i with d_i → d_i / c_i: the weighted variant does not move; the plain one does.
        let scales = (0..<latents).map { Float($0 % 3 + 1) }
        let scaled = (0..<(rows * latents)).map { z[$0] * scales[$0 % latents] }
        let s = try FeatureCount.measure(codes: Tensor(shape: [rows, latents], scalars: scaled), neurons: 4,
                                         decoderNorms: (0..<latents).map { norms[$0] / scales[$0] })
        #expect(Swift.abs(s.variants.decoderWeighted - base.variants.decoderWeighted) < 1e-6 * base.variants.decoderWeighted)
        #expect(Swift.abs(s.effectiveFeatures - base.effectiveFeatures) > 0.01)
        #expect(s.variants.firingFrequency == base.variants.firingFrequency)
        #expect(Swift.abs(base.superposition - base.effectiveFeatures / 4) < 1e-12)
        // Unit decoder norms: the weighted variant equals the plain count.
        let unit = try FeatureCount.measure(codes: Tensor(shape: [rows, latents], scalars: z), neurons: 4)
        #expect(Swift.abs(unit.variants.decoderWeighted - unit.effectiveFeatures) < 1e-9)
        // The bootstrap interval brackets the estimate; the convergence curve ends at it.
        let ci = try #require(base.ci95)
        #expect(ci[0] <= base.effectiveFeatures + 1e-9 && base.effectiveFeatures <= ci[1] + 1e-9)
        #expect(base.convergence.last?.samples == rows && Swift.abs(base.convergence.last!.effectiveFeatures - base.effectiveFeatures) < 1e-9)
    }

    @Test func emptyDatasetIsAnError() throws {
        let path = try Fixtures.temporaryDirectory() + "/empty.h5"
        do {
            let file = try HDF5File(creating: path)
            _ = try HDF5Dataset(creating: "acts", in: file, type: .float32, rowShape: [24], chunkRows: 16)
        }
        let sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/interp-topk")
        #expect(throws: InterpError.self) { try FeatureCount.measure(sae, reader: try ActivationReader(path: path, dataset: "acts")) }
        do {
            _ = try FeatureCount.measure(sae, reader: try ActivationReader(path: path, dataset: "acts"))
        } catch let error as InterpError {
            #expect(!error.description.contains("\n") && error.description.contains("no rows"), "\(error)")
        }
    }

    @Test func allZeroCodesAreAnError() {
        #expect(throws: InterpError("every SAE code is zero on these 5 rows: no latent is active, so the effective feature count is undefined")) {
            try FeatureCount.measure(codes: Tensor(zeros: [5, 8]), neurons: 2)
        }
    }

    /// Streaming over a store in batches gives what the in-memory count gives on the SAE's codes of all rows.
    @Test func streamingMatchesInMemory() throws {
        let sae = try SparseAutoencoder.load(directory: Fixtures.root + "/sae/interp-standard")
        let reader = try ActivationReader(path: Fixtures.root + "/store/h5py-written.h5", dataset: "activations")
        let streamed = try FeatureCount.measure(sae, reader: reader, batchSize: 37)
        let z = try sae.encode(try reader.read(rows: 0..<reader.rows))
        let direct = try FeatureCount.measure(codes: z, neurons: reader.width, decoderNorms: sae.parameters.decoderNorms)
        #expect(streamed.samples == 300 && streamed.neurons == 24 && streamed.latents == 64)
        #expect(Swift.abs(streamed.effectiveFeatures - direct.effectiveFeatures) < 1e-9 * direct.effectiveFeatures)
        #expect(Swift.abs(streamed.variants.decoderWeighted - direct.variants.decoderWeighted) < 1e-9 * direct.variants.decoderWeighted)
        #expect(streamed.variants.hill0 <= 64 && streamed.effectiveFeatures <= Double(streamed.variants.hill0))
        let first100 = try FeatureCount.measure(sae, reader: reader, samples: 100)
        #expect(first100.samples == 100)
        // Errors: d_in mismatch, non-positive sample count.
        let narrow = try ActivationReader(path: Fixtures.root + "/store/h5py-written.h5", dataset: "acts_f16")
        #expect(throws: InterpError("the SAE's d_in (24) does not match dataset 'acts_f16' (rows of 8)", file: Fixtures.root + "/store/h5py-written.h5")) {
            try FeatureCount.measure(sae, reader: narrow)
        }
        #expect(throws: InterpError("--samples must be positive")) { try FeatureCount.measure(sae, reader: reader, samples: 0) }
    }
}
