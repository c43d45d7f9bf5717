import Foundation
import InterpCore
import InterpModels

/// A circuit-discovery task: the prompts and what the metric reads. TASK.json:
///
///     {"clean": [[ids]], "corrupted": [[ids]], "answer": [ids], "wrong": [ids],
///      "positions": "last" | "all" | {"from": n}, "logit_indices": [ids]}
///
/// `corrupted` (same shape as `clean`) is needed unless the ablation is zero; `answer` and `wrong` (one per prompt)
/// for logit-diff; `positions` (default "last") says where kl and l2 read; `logit_indices` (default all) which logits
/// l2 compares.
public struct CircuitTask: Sendable {
    public enum Positions: Equatable, Sendable {
        case last, all
        case from(Int)
    }

    public var clean: TokenBatch
    public var corrupted: TokenBatch?
    public var answers: [Int]?
    public var wrongs: [Int]?
    public var positions: Positions
    public var logitIndices: [Int]?

    public init(clean: TokenBatch, corrupted: TokenBatch?, answers: [Int]? = nil, wrongs: [Int]? = nil,
                positions: Positions = .last, logitIndices: [Int]? = nil) {
        self.clean = clean
        self.corrupted = corrupted
        self.answers = answers
        self.wrongs = wrongs
        self.positions = positions
        self.logitIndices = logitIndices
    }

    /// Reads and checks a task file against a model; every problem is one line naming the file.
    public static func load(_ path: String, config: ModelConfig) throws -> CircuitTask {
        let root: JSONValue
        do { root = try JSONValue.parse(try readFile(path)) } catch let error as InterpError { throw error.inFile(path) }
        guard let object = root.objectValue else { throw InterpError("a task is a JSON object with \"clean\", \"corrupted\", …", file: path) }
        let known: Set = ["clean", "corrupted", "answer", "wrong", "positions", "logit_indices"]
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw InterpError("unknown field \"\(unknown)\" (fields: \(known.sorted().joined(separator: ", ")))", file: path)
        }
        func sequences(_ key: String) throws -> TokenBatch? {
            guard let value = object[key] else { return nil }
            guard let rows = value.arrayValue?.map({ $0.arrayValue?.map(\.integerValue) }),
                  rows.allSatisfy({ $0 != nil && $0!.allSatisfy { $0 != nil } }) else {
                throw InterpError("\"\(key)\" must be a list of lists of token ids", file: path)
            }
            do {
                return try TokenBatch(rows.map { $0!.map { $0! } }, config: config)
            } catch let error as InterpError {
                throw InterpError("\"\(key)\": \(error.message)", file: path)
            }
        }
        func ids(_ key: String, upTo limit: Int) throws -> [Int]? {
            guard let value = object[key] else { return nil }
            guard let list = value.arrayValue?.map(\.integerValue), list.allSatisfy({ $0 != nil }) else {
                throw InterpError("\"\(key)\" must be a list of token ids", file: path)
            }
            let values = list.map { $0! }
            if let bad = values.first(where: { !(0..<limit).contains($0) }) {
                throw InterpError("\"\(key)\": token id \(bad) is outside the vocabulary (0..<\(limit))", file: path)
            }
            return values
        }
        guard let clean = try sequences("clean") else { throw InterpError("missing \"clean\" (a list of lists of token ids)", file: path) }
        let corrupted = try sequences("corrupted")
        if let corrupted, corrupted.batch != clean.batch || corrupted.positions != clean.positions {
            throw InterpError("\"clean\" is \(clean.batch) × \(clean.positions) tokens but \"corrupted\" is \(corrupted.batch) × \(corrupted.positions)", file: path)
        }
        let answers = try ids("answer", upTo: config.dVocabOut), wrongs = try ids("wrong", upTo: config.dVocabOut)
        for (key, list) in [("answer", answers), ("wrong", wrongs)] {
            if let list, list.count != clean.batch {
                throw InterpError("\"\(key)\" has \(list.count) tokens for \(clean.batch) prompts (one per prompt)", file: path)
            }
        }
        var positions = Positions.last
        switch object["positions"] {
        case nil: break
        case .string("last")?: positions = .last
        case .string("all")?: positions = .all
        case let value?:
            guard let from = value.objectValue?["from"]?.integerValue, value.objectValue?.count == 1 else {
                throw InterpError("\"positions\" is \"last\", \"all\" or {\"from\": n}", file: path)
            }
            guard (0..<clean.positions).contains(from) else {
                throw InterpError("\"positions\": from \(from) is outside the prompts' \(clean.positions) positions", file: path)
            }
            positions = .from(from)
        }
        return CircuitTask(clean: clean, corrupted: corrupted, answers: answers, wrongs: wrongs, positions: positions,
                           logitIndices: try ids("logit_indices", upTo: config.dVocabOut))
    }

    /// The positions read, per prompt.
    public var readPositions: [Int] {
        switch positions {
        case .last: return [clean.positions - 1]
        case .all: return Array(0..<clean.positions)
        case let .from(n): return Array(n..<clean.positions)
        }
    }

    /// The metric `name` (logit-diff, kl, l2) for this task, with the clean logits it compares against.
    public func metric(_ name: String, model: TransformerModel, file: String? = nil) throws -> CircuitMetric {
        switch name {
        case "logit-diff":
            guard let answers, let wrongs else { throw InterpError("--metric logit-diff needs \"answer\" and \"wrong\" in the task", file: file) }
            // ACDC minimises: the logit difference, negated.
            return CircuitMetric.logitDifference(answers: answers, wrongs: wrongs).negated()
        case "kl":
            return CircuitMetric.kl(cleanLogits: try model.run(clean), positions: .these(readPositions), fastExponentials: true)
        case "l2":
            return CircuitMetric.l2(cleanLogits: try model.run(clean), positions: .these(readPositions), logitIndices: logitIndices)
        default:
            throw InterpError("unknown metric '\(name)' (logit-diff, kl, l2)")
        }
    }
}
