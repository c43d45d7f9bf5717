import Foundation
import InterpCore
import InterpTestSupport
import SparseAutoencoders
import Testing

/// Every registered inference architecture's encode and decode against its Double reference, on odd shapes, with
/// worst-case rounding bounds: an n-term float32 sum of products errs by at most (n+2)·ε·Σ|terms|. A latent whose
/// firing rounding could decide (within 8× its bound of 0, of its threshold, or of a k-th/(k+1)-th tie) may fire or
/// not, with its value if it fires; at most 1% of the latents may be such, so the comparison keeps its bite.
@Suite struct SAEInferenceTests {
    static let epsilon = Double(Float.ulpOfOne)

    struct Case: CustomStringConvertible, Sendable {
        var architecture: String
        var rows: Int, dIn: Int, dSAE: Int
        var applyBDecToInput = true
        var rescale = true
        var description: String { "\(architecture) \(rows)×\(dIn)→\(dSAE) b_dec-in \(applyBDecToInput) rescale \(rescale)" }
    }

    static let cases: [Case] = [
        Case(architecture: "standard", rows: 1, dIn: 3, dSAE: 5),
        Case(architecture: "standard", rows: 37, dIn: 13, dSAE: 53, applyBDecToInput: false),
        Case(architecture: "standard", rows: 130, dIn: 65, dSAE: 129),
        Case(architecture: "jumprelu", rows: 37, dIn: 13, dSAE: 53),
        Case(architecture: "jumprelu", rows: 130, dIn: 65, dSAE: 129, applyBDecToInput: false),
        Case(architecture: "topk", rows: 1, dIn: 3, dSAE: 5),
        Case(architecture: "topk", rows: 37, dIn: 13, dSAE: 53, rescale: false),
        Case(architecture: "topk", rows: 130, dIn: 65, dSAE: 129),
    ]

    func random(_ count: Int, _ rng: inout SeededRandom, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in rng.nextNormal() * scale }
    }

    /// Parameters with decoder rows of unequal norms and, for JumpReLU, thresholds on both sides of 0.
    func parameters(_ c: Case, seed: UInt64) -> (SAEParameters, Tensor) {
        var rng = SeededRandom(seed: seed)
        let D = c.dIn, S = c.dSAE
        var wDec = random(S * D, &rng, scale: 0.5)
        for i in 0..<S { let scale = 0.3 + 1.7 * rng.nextUniform(); for j in 0..<D { wDec[i * D + j] *= scale } }
        let p = SAEParameters(wEnc: Tensor(shape: [D, S], scalars: random(D * S, &rng, scale: 0.5)),
                              bEnc: Tensor(shape: [S], scalars: random(S, &rng, scale: 0.3)),
                              wDec: Tensor(shape: [S, D], scalars: wDec), bDec: Tensor(shape: [D], scalars: random(D, &rng, scale: 0.3)),
                              threshold: c.architecture == "jumprelu" ? Tensor(shape: [S], scalars: (0..<S).map { _ in rng.nextUniform() * 2 - 0.5 }) : nil)
        return (p, Tensor(shape: [c.rows, D], scalars: random(c.rows * D, &rng)))
    }

    func architecture(_ c: Case) throws -> any SAEInferenceArchitecture {
        var config = SAELensConfig(architecture: c.architecture, dIn: c.dIn, dSAE: c.dSAE, applyBDecToInput: c.applyBDecToInput)
        if c.architecture == "topk" {
            config.k = max(1, c.dSAE / 4)
            config.rescaleActsByDecoderNorm = c.rescale
        }
        let kind = try #require(SAERegistry.inference(named: c.architecture))
        return try kind.init(config: config, file: "cfg.json")
    }

    /// The bound on each pre-activation `(x − b_dec)·W_enc + b_enc`: D products, the subtraction and the bias.
    func preBounds(_ p: SAEParameters, _ x: Tensor, applyBDecToInput: Bool) -> [Double] {
        let n = x.shape[0], D = p.dIn, S = p.dSAE
        var bound = [Double](repeating: 0, count: n * S)
        for b in 0..<n {
            for i in 0..<S {
                var sum = abs(Double(p.bEnc.scalars[i]))
                for j in 0..<D {
                    let input = abs(Double(x.scalars[b * D + j])) + (applyBDecToInput ? abs(Double(p.bDec.scalars[j])) : 0)
                    sum += input * abs(Double(p.wEnc.scalars[j * S + i]))
                }
                bound[b * S + i] = Double(D + 3) * Self.epsilon * sum
            }
        }
        return bound
    }

    @Test(arguments: cases)
    func encodeAndDecodeMatchTheReference(c: Case) throws {
        let (p, x) = parameters(c, seed: 7)
        let sae = try architecture(c)
        let n = c.rows, S = c.dSAE
        let pre = SAEInferenceKernels.referencePreActivations(p, x, applyBDecToInput: c.applyBDecToInput)
        // The scale TopK compares (h = pre·n), and each value's bound; the norm's own rounding is (D+2)·ε relative.
        let norms = c.architecture == "topk" && c.rescale ? p.decoderNorms.map(Double.init) : [Double](repeating: 1, count: S)
        let preBound = preBounds(p, x, applyBDecToInput: c.applyBDecToInput)
        var h = pre, bound = preBound
        for k in h.indices {
            h[k] = pre[k] * norms[k % S]
            bound[k] = preBound[k] * norms[k % S] + abs(h[k]) * Double(c.dIn + 2) * Self.epsilon
        }
        // Latents whose firing rounding could decide: near 0, near the threshold, or a row's k-th/(k+1)-th near-tie.
        var ambiguous = [Bool](repeating: false, count: n * S)
        for b in 0..<n {
            for i in 0..<S {
                let k = b * S + i
                let nearThreshold = p.threshold.map { abs(h[k] - Double($0.scalars[i])) <= 8 * bound[k] } ?? false
                ambiguous[k] = abs(h[k]) <= 8 * bound[k] || nearThreshold
            }
            if c.architecture == "topk", case let k = max(1, S / 4), k < S {
                let order = (0..<S).sorted { h[b * S + $0] > h[b * S + $1] }
                let last = b * S + order[k - 1], next = b * S + order[k]
                if h[last] - h[next] <= 8 * (bound[last] + bound[next]) { ambiguous[last] = true; ambiguous[next] = true }
            }
        }
        #expect(ambiguous.filter { $0 }.count * 100 <= n * S, "\(c): more than 1% of the latents are within rounding of a decision")

        let z = sae.encode(p, x)
        let zReference = sae.referenceEncode(p, x)
        #expect(z.shape == [n, S])
        for k in zReference.indices {
            let got = Double(z.scalars[k])
            // An ambiguous latent may fire or not, but if it fires it has its value.
            let agrees = abs(got - zReference[k]) <= bound[k] || (ambiguous[k] && (got == 0 || abs(got - max(h[k], 0)) <= bound[k]))
            if !agrees {
                Issue.record("\(c): z[\(k / S), \(k % S)] = \(got), reference \(zReference[k]) (bound \(bound[k]))")
                break
            }
        }
        #expect(zReference.contains { $0 > 0 } && zReference.contains { $0 == 0 }, "\(c): some latents fire and some do not")

        // Decode the codes encode gave, a code dense enough for the product (1 in 7) and one sparse enough for the sum
        // of active rows (1 in 29, under `SAEInferenceKernels.sparseBelowDensity`), against the reference.
        func code(every stride: Int) -> Tensor {
            var code = Tensor(zeros: [n, S])
            for k in Swift.stride(from: 0, to: n * S, by: stride) { code.scalars[k] = Float(k % 5) + 0.5 }
            return code
        }
        for codes in [z, code(every: 7), code(every: 29)] {
            let xhat = sae.decode(p, codes)
            let reference = sae.referenceDecode(p, codes.scalars.map(Double.init), rows: n)
            let absolute = sae.referenceDecode(SAEParameters(wEnc: p.wEnc, bEnc: p.bEnc, wDec: Tensor(shape: p.wDec.shape, scalars: p.wDec.scalars.map(abs)),
                                                             bDec: Tensor(shape: p.bDec.shape, scalars: p.bDec.scalars.map(abs)), threshold: p.threshold),
                                               codes.scalars.map { Double(abs($0)) }, rows: n)
            #expect(xhat.shape == [n, c.dIn])
            for k in reference.indices where !(abs(Double(xhat.scalars[k]) - reference[k]) <= Double(S + c.dIn + 4) * Self.epsilon * absolute[k]) {
                Issue.record("\(c): x̂[\(k / c.dIn), \(k % c.dIn)] = \(xhat.scalars[k]), reference \(reference[k])")
                break
            }
        }
    }

    /// A trained SAE always loads: every training architecture is saved as a registered inference architecture.
    @Test func everyTrainingArchitectureSavesAsALoadableOne() throws {
        #expect(Set(SAERegistry.training.map { $0.name }).count == SAERegistry.training.count)
        #expect(Set(SAERegistry.inference.map { $0.name }).count == SAERegistry.inference.count)
        for kind in SAERegistry.training {
            let settings = SAETrainingSettings(architecture: kind.name, dSAE: 8, k: 2, batchSize: 4, steps: 1, activations: "acts.h5", dataset: "acts")
            let training = try kind.init(settings: settings)
            var config = SAELensConfig(architecture: "", dIn: 4, dSAE: 8)
            let saved = training.saved(initialSAEParameters(dIn: 4, dSAE: 8, threshold: training.hasThreshold ? 0.01 : nil, seed: 1),
                                       trackedThreshold: 0.5, config: &config)
            let inference = try #require(SAERegistry.inference(named: config.architecture), "\(kind.name) saves as '\(config.architecture)'")
            #expect(inference.hasThreshold == (saved.threshold != nil), "\(kind.name)")
            _ = try inference.init(config: config, file: "cfg.json")
        }
    }
}
