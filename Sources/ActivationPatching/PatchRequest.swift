import Foundation
import InterpCore
import InterpModels
import Tokenization

/// The metrics of `interp patch`, by the names its results carry; each reads the last position, averaged over prompts.
public enum PatchMetricKind: String, CaseIterable, Sendable {
    /// `logit[answer] − logit[wrong]`.
    case logitDifference = "logit-diff"
    /// `log p(answer)`.
    case logProbability = "logprob"
    /// `p(answer)`.
    case probability = "prob"
    /// `KL(clean ‖ patched)`.
    case kl

    public var readsAnswers: Bool { self != .kl }
    public var readsWrongs: Bool { self == .logitDifference }
}

/// One patching table as `interp patch` asks for it: the clean and corrupted metrics, the table over `indexing` of
/// `site`, optionally normalised by those two metrics, and labels for every axis.
public struct PatchRequest {
    public var model: TransformerModel
    public var clean: TokenBatch
    public var corrupted: TokenBatch
    /// One token id per prompt; empty for a metric that reads none.
    public var answers: [Int]
    public var wrongs: [Int]
    public var site: PatchSite
    public var indexing: PatchIndexing
    public var metric: PatchMetricKind
    public var direction: PatchDirection
    /// Report `(m − m_corrupted) / (m_clean − m_corrupted)`.
    public var normalize: Bool
    /// Labels positions with the clean tokens' text; without it, with their ids.
    public var tokenizer: BPETokenizer?

    /// `indexing` nil: the site's first (TransformerLens's default).
    public init(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch, answers: [Int] = [], wrongs: [Int] = [],
                site: PatchSite, indexing: PatchIndexing? = nil, metric: PatchMetricKind = .logitDifference,
                direction: PatchDirection = .denoise, normalize: Bool = false, tokenizer: BPETokenizer? = nil) {
        self.model = model
        self.clean = clean
        self.corrupted = corrupted
        self.answers = answers
        self.wrongs = wrongs
        self.site = site
        self.indexing = indexing ?? site.indexings[0]
        self.metric = metric
        self.direction = direction
        self.normalize = normalize
        self.tokenizer = tokenizer
    }

    /// `progress` hears (cells done, cells) as `ActivationPatching.table` reports them.
    public func run(progress: ((Int, Int) -> Void)? = nil) throws -> PatchingResult {
        let cleanLogits = try model.run(clean), corruptedLogits = try model.run(corrupted)
        var measure: PatchingMetric
        switch metric {
        case .logitDifference: measure = .logitDifference(answers: answers, wrongs: wrongs)
        case .logProbability: measure = .logProbability(answers: answers)
        case .probability: measure = .probability(answers: answers)
        case .kl: measure = .kl(cleanLogits: cleanLogits)
        }
        let cleanMetric = try measure(cleanLogits), corruptedMetric = try measure(corruptedLogits)
        if normalize {
            guard cleanMetric != corruptedMetric else { throw InterpError("the clean and corrupted metrics are equal (\(cleanMetric)); nothing to normalise by") }
            measure = .normalized(measure, clean: cleanMetric, corrupted: corruptedMetric)
        }
        let table = try ActivationPatching.table(model: model, clean: clean, corrupted: corrupted, site: site, indexing: indexing,
                                                 direction: direction, metric: measure, progress: progress)
        let labels = PatchingResult.labels(axes: indexing.axes, config: model.config, positions: positionLabels())
        return PatchingResult(site: site.rawValue, axes: indexing.axes, shape: table.shape, values: table.values,
                              cleanMetric: cleanMetric, corruptedMetric: corruptedMetric, metric: metric.rawValue, normalized: normalize,
                              direction: direction.rawValue, labels: labels)
    }

    /// `position: "text"` of the first clean prompt's tokens (`position: id` where there is no text).
    func positionLabels() -> [String] {
        clean.rows[0].enumerated().map { position, id in
            "\(position): " + ((tokenizer.flatMap { try? $0.decode([Int32(id)]) }).map { "\"\($0)\"" } ?? String(id))
        }
    }

    /// Token ids from an option's values (`--answer 41`, `--answer " Mary"`): each an id, or a string that is one token
    /// of `tokenizer`; one value for all `prompts` or one per prompt. `option` names the values in errors.
    public static func tokenIDs(_ values: [String], option: String, tokenizer: BPETokenizer?, config: ModelConfig,
                                prompts: Int) throws -> [Int] {
        guard !values.isEmpty else { return [] }
        let ids = try values.map { value -> Int in
            let id: Int
            if let n = Int(value) { id = n } else {
                guard let tokenizer, case let only = tokenizer.encode(value), only.count == 1 else {
                    throw InterpError("\(option) '\(value)' is not a token id\(tokenizer == nil ? "" : " or a string of one token")")
                }
                id = Int(only[0])
            }
            guard id >= 0 && id < config.dVocab else {
                throw InterpError("\(option) \(id) is outside the vocabulary (0..<\(config.dVocab))")
            }
            return id
        }
        guard ids.count == 1 || ids.count == prompts else {
            throw InterpError("\(option) gives \(ids.count) tokens for \(prompts) prompts (give one, or one per prompt)")
        }
        return ids.count == 1 ? Array(repeating: ids[0], count: prompts) : ids
    }
}
