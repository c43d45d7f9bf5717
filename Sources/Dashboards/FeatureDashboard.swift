import Foundation
import InterpCore
import InterpModels
import ActivationStore
import SparseAutoencoders
import Tokenization

/// One token position where a latent fires, with the text around it and the latent's activation on every token of
/// that text.
public struct FeatureExample: Equatable, Sendable {
    public let sequence: Int
    public let position: Int
    public let activation: Float
    /// Position of `tokens[0]` in the sequence.
    public let contextStart: Int
    public internal(set) var tokens: [Int32]
    public internal(set) var activations: [Float]
}

/// What a dashboard shows of one latent over a text.
public struct FeatureSummary: Equatable, Sendable {
    public let latent: Int
    /// Tokens where the latent is above zero.
    public let firings: Int
    /// `firings` over the tokens scanned.
    public let density: Double
    public let maxActivation: Float
    /// Mean over the tokens where it fires.
    public let meanActivation: Double
    /// The strongest firings, strongest first (ties: earlier sequence, then earlier position).
    public internal(set) var examples: [FeatureExample]
    /// Firing activations in equal bins from 0 to `maxActivation` (the last bin includes the maximum).
    public internal(set) var histogram: [Int]
    /// Tokens whose logits the decoder direction raises most (through W_U; empty when the SAE does not read the
    /// residual stream), largest first.
    public internal(set) var promoted: [TokenEffect]
    /// ... and lowers most, most negative first.
    public internal(set) var suppressed: [TokenEffect]

    public var isDead: Bool { firings == 0 }
}

public struct TokenEffect: Equatable, Sendable {
    public let token: Int32
    public let effect: Float
}

/// Feature-dashboard data for every latent of an SAE over a text: density, strongest contexts with per-token
/// activations, activation histogram and logit effects (W_dec · W_U), the view SAEDashboard and Neuronpedia give.
///
/// Two passes over the sequences: the first counts firings and keeps each latent's strongest examples, the second
/// (once the maxima are known) fills the histograms and reads the examples' context activations.
public struct FeatureDashboard: Sendable {
    public struct Settings: Sendable {
        /// Strongest contexts kept per latent.
        public var examples = 12
        /// Tokens shown before and after the firing token.
        public var before = 12
        public var after = 4
        public var histogramBins = 24
        /// Tokens listed as promoted and as suppressed.
        public var logitEffects = 10
        /// Leave out position 0 (BOS) of every sequence, as `interp cache --exclude-bos` does.
        public var excludeBOS = true
        /// Sequences per forward pass.
        public var batchSize = 16
        public init() {}
    }

    public let hook: HookName
    public let sequences: [[Int32]]
    /// Token positions scanned.
    public let tokens: Int
    public let features: [FeatureSummary]
    public let settings: Settings

    /// Runs `model` on `sequences` up to `hook`, encodes the activations there with `sae` and gathers every latent's
    /// dashboard. `progress(done, total)` counts sequences over both passes.
    public static func gather(sae: SparseAutoencoder, model: TransformerModel, sequences: [[Int32]], hook: HookName,
                              settings: Settings = Settings(),
                              progress: (Int, Int) -> Void = { _, _ in }) throws -> FeatureDashboard {
        guard !sequences.isEmpty else { throw InterpError("no sequences to build dashboards from") }
        let latents = sae.config.dSAE
        let first = settings.excludeBOS ? 1 : 0
        let encoder = HookEncoder(sae: sae, model: model, hook: hook)
        let batches = stride(from: 0, to: sequences.count, by: max(1, settings.batchSize)).map {
            $0..<min(sequences.count, $0 + max(1, settings.batchSize))
        }

        // Pass 1: firings, sums, maxima and the strongest examples (a bounded, sorted list per latent).
        var firings = [Int](repeating: 0, count: latents), sums = [Double](repeating: 0, count: latents)
        var maxima = [Float](repeating: 0, count: latents)
        var top = [[Candidate]](repeating: [], count: latents)
        var tokens = 0
        for (b, range) in batches.enumerated() {
            try encoder.codes(Array(sequences[range])) { s, position, z in
                guard position >= first else { return }
                tokens += 1
                let sequence = range.lowerBound + s
                for i in 0..<latents where z[i] > 0 {
                    let a = z[i]
                    firings[i] += 1
                    sums[i] += Double(a)
                    if a > maxima[i] { maxima[i] = a }
                    let candidate = Candidate(activation: a, sequence: sequence, position: position)
                    if top[i].count < settings.examples {
                        top[i].insert(candidate, at: top[i].firstIndex { candidate.before($0) } ?? top[i].count)
                    } else if settings.examples > 0, candidate.before(top[i][settings.examples - 1]) {
                        top[i].removeLast()
                        top[i].insert(candidate, at: top[i].firstIndex { candidate.before($0) } ?? top[i].count)
                    }
                }
            }
            progress(b + 1, 2 * batches.count)
        }
        guard tokens > 0 else { throw InterpError("the sequences have no tokens to scan (each is only a BOS token)") }

        var features = (0..<latents).map { i in
            FeatureSummary(latent: i, firings: firings[i], density: Double(firings[i]) / Double(tokens), maxActivation: maxima[i],
                           meanActivation: firings[i] > 0 ? sums[i] / Double(firings[i]) : 0,
                           examples: top[i].map { c in
                               let start = max(first, c.position - settings.before)
                               let end = min(sequences[c.sequence].count, c.position + settings.after + 1)
                               return FeatureExample(sequence: c.sequence, position: c.position, activation: c.activation,
                                                     contextStart: start, tokens: Array(sequences[c.sequence][start..<end]),
                                                     activations: [])
                           },
                           histogram: [Int](repeating: 0, count: max(1, settings.histogramBins)), promoted: [], suppressed: [])
        }

        // Pass 2: histograms, and the activations across each example's context.
        var wanted: [Int: [(latent: Int, example: Int)]] = [:]
        for feature in features {
            for (e, example) in feature.examples.enumerated() { wanted[example.sequence, default: []].append((feature.latent, e)) }
        }
        let bins = max(1, settings.histogramBins)
        var histograms = [Int](repeating: 0, count: latents * bins)
        var contextCodes: [Int: [[Float]]] = [:]    // sequence → per position, the codes of the latents it is wanted for
        for (b, range) in batches.enumerated() {
            try encoder.codes(Array(sequences[range])) { s, position, z in
                let sequence = range.lowerBound + s
                if let requests = wanted[sequence] {
                    var row = contextCodes[sequence] ?? []
                    row.append(requests.map { z[$0.latent] })
                    contextCodes[sequence] = row
                }
                guard position >= first else { return }
                for i in 0..<latents where z[i] > 0 {
                    let bin = min(bins - 1, Int(Double(z[i]) / Double(maxima[i]) * Double(bins)))
                    histograms[i * bins + bin] += 1
                }
            }
            for s in range where wanted[s] != nil {
                let perPosition = contextCodes.removeValue(forKey: s)!
                for (r, request) in wanted[s]!.enumerated() {
                    let example = features[request.latent].examples[request.example]
                    let span = example.contextStart..<(example.contextStart + example.tokens.count)
                    features[request.latent].examples[request.example].activations = span.map { perPosition[$0][r] }
                }
            }
            progress(batches.count + b + 1, 2 * batches.count)
        }
        for i in 0..<latents { features[i].histogram = Array(histograms[(i * bins)..<((i + 1) * bins)]) }

        // Logit effects: each decoder row through the unembedding (only when the SAE writes to the residual stream).
        if settings.logitEffects > 0, readsResidualStream(hook), sae.config.dIn == model.config.dModel {
            let effects = logitEffects(sae: sae, model: model)
            let vocabulary = model.config.dVocabOut
            for i in 0..<latents {
                let row = effects[(i * vocabulary)..<((i + 1) * vocabulary)]
                let order = row.indices.sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }
                let count = min(settings.logitEffects, vocabulary)
                features[i].promoted = order.prefix(count).map { TokenEffect(token: Int32($0 - i * vocabulary), effect: row[$0]) }
                features[i].suppressed = order.suffix(count).reversed().map { TokenEffect(token: Int32($0 - i * vocabulary), effect: row[$0]) }
            }
        }
        return FeatureDashboard(hook: hook, sequences: sequences, tokens: tokens, features: features, settings: settings)
    }

    /// W_dec · W_U, `[d_sae, d_vocab_out]` row-major: how much one unit of each latent raises each logit, read
    /// directly through the unembedding (no final LayerNorm, as SAEDashboard shows it).
    public static func logitEffects(sae: SparseAutoencoder, model: TransformerModel) -> [Float] {
        let latents = sae.config.dSAE, width = sae.config.dIn, vocabulary = model.config.dVocabOut
        var out = [Float](repeating: 0, count: latents * vocabulary)
        sae.parameters.wDec.withUnsafeBufferPointer { dec in
            model.unembedding.linear.weight.withUnsafeBufferPointer { unembed in
                out.withUnsafeMutableBufferPointer { c in
                    GEMM.multiply(m: latents, n: vocabulary, k: width, dec.baseAddress!, lda: width,
                                  unembed.baseAddress!, ldb: vocabulary, c.baseAddress!, ldc: vocabulary)
                }
            }
        }
        return out
    }
}

/// Sites whose activations are vectors in the residual stream's basis (what W_U reads).
func readsResidualStream(_ hook: HookName) -> Bool {
    [.embed, .posEmbed, .residPre, .attnOut, .residMid, .mlpOut, .residPost].contains(hook.site)
}

private struct Candidate {
    let activation: Float
    let sequence: Int
    let position: Int

    /// Stronger first; ties by earlier sequence, then earlier position.
    func before(_ other: Candidate) -> Bool {
        if activation != other.activation { return activation > other.activation }
        return sequence != other.sequence ? sequence < other.sequence : position < other.position
    }
}

/// Runs the model up to the SAE's hook and encodes what it finds there, row by row.
struct HookEncoder {
    let sae: SparseAutoencoder
    let model: TransformerModel
    let hook: HookName

    /// Calls `body(sequence in batch, position, codes)` for every token of `batch` (sequences of any lengths; each
    /// length group is one forward pass).
    func codes(_ batch: [[Int32]], _ body: (Int, Int, UnsafeBufferPointer<Float>) throws -> Void) throws {
        let groups = Dictionary(grouping: batch.indices, by: { batch[$0].count })
        for length in groups.keys.sorted() {
            let members = groups[length]!
            let tokens = try TokenBatch(members.map { batch[$0].map(Int.init) }, config: model.config)
            let activation = try model.forward(tokens, hooks: Hooks(cache: [hook]), stopAfter: hook).cache[hook]!
            let rows = tokens.batch * tokens.positions
            guard activation.count == rows * sae.config.dIn else {
                throw InterpError("the SAE reads \(sae.config.dIn) numbers per token but \(hook) has \(activation.count / max(rows, 1))")
            }
            let codes = try sae.encode(activation.reshaped([rows, sae.config.dIn]))
            let latents = sae.config.dSAE
            try codes.withUnsafeBufferPointer { z in
                for (m, s) in members.enumerated() {
                    for position in 0..<length {
                        let row = m * length + position
                        try body(s, position, UnsafeBufferPointer(rebasing: z[(row * latents)..<((row + 1) * latents)]))
                    }
                }
            }
        }
    }
}

extension FeatureDashboard {
    /// A text file (one document per line) tokenized and cut into windows of `contextLength`, each starting with BOS,
    /// as `interp cache --text-file` does.
    public static func windows(textFile: String, tokenizer: BPETokenizer, contextLength: Int, maxTokens: Int? = nil) throws -> [[Int32]] {
        let windows = try ContextWindows.make(textFile: textFile, tokenizer: tokenizer, contextLength: contextLength)
        return maxTokens.map { Array(windows.prefix(max(1, $0 / contextLength))) } ?? windows
    }
}
