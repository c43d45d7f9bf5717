import InterpCore

/// A function run at a hook point. It may read the activation or change it in place (not its shape); what it
/// leaves is what the rest of the forward pass sees.
public typealias HookFunction = (_ name: HookName, _ activation: inout Tensor) throws -> Void

/// What a forward pass does at its hook points: which activations to record, which functions to run.
/// At a hook point the functions run first, in the order given, and the cache records what they leave.
public struct Hooks {
    public var cached: Set<HookName>
    public private(set) var functions: [HookName: [HookFunction]]

    public init(cache: Set<HookName> = [], functions: [(HookName, HookFunction)] = []) {
        self.cached = cache
        self.functions = [:]
        for (name, function) in functions { add(name, function) }
    }

    public static var none: Hooks { Hooks() }

    public mutating func add(_ name: HookName, _ function: @escaping HookFunction) {
        functions[name, default: []].append(function)
    }

    public var isEmpty: Bool { cached.isEmpty && functions.isEmpty }

    @inline(__always)
    func isActive(_ name: HookName) -> Bool {
        !isEmpty && (cached.contains(name) || functions[name] != nil)
    }

    /// Every hook this set names, for checking against a model.
    var names: Set<HookName> { cached.union(functions.keys) }
}

/// Activations recorded by a forward pass, by hook name.
public struct ActivationCache: Sendable {
    public internal(set) var activations: [HookName: Tensor] = [:]

    public init(_ activations: [HookName: Tensor] = [:]) {
        self.activations = activations
    }

    public subscript(_ name: HookName) -> Tensor? { activations[name] }

    /// Recorded hook names in forward order.
    public var names: [HookName] { activations.keys.sorted() }
}

/// A batch of token ids `[batch, pos]`, checked against a model: equal lengths, ids in the vocabulary, no longer
/// than the context.
public struct TokenBatch: Equatable, Sendable {
    public let batch: Int
    public let positions: Int
    /// Row-major `[batch, pos]`.
    public let ids: [Int32]

    public init(_ rows: [[Int]], config: ModelConfig) throws {
        guard let first = rows.first else { throw InterpError("no sequences: the batch is empty") }
        guard !first.isEmpty else { throw InterpError("sequence 0 is empty") }
        for (index, row) in rows.enumerated() {
            guard row.count == first.count else {
                throw InterpError("sequences have different lengths (sequence 0 has \(first.count) tokens, sequence \(index) has \(row.count)); a batch must be rectangular")
            }
            if let bad = row.firstIndex(where: { $0 < 0 || $0 >= config.dVocab }) {
                throw InterpError("token id \(row[bad]) at sequence \(index), position \(bad) is outside the vocabulary (0..<\(config.dVocab))")
            }
        }
        guard first.count <= config.nCtx else {
            throw InterpError("sequences have \(first.count) tokens, more than the model's context of \(config.nCtx)")
        }
        batch = rows.count
        positions = first.count
        ids = rows.flatMap { $0.map(Int32.init) }
    }

    public var rows: [[Int]] {
        (0..<batch).map { b in ids[(b * positions)..<((b + 1) * positions)].map(Int.init) }
    }
}
