import Foundation
import InterpCore
import InterpModels

/// What ACDC found: for every edge of the graph whether it was kept and, if it was tried, its effect.
public struct CircuitResult: Sendable {
    public let graph: CircuitGraph
    /// Per edge of `graph.edges`.
    public let kept: [Bool]
    /// Per edge: metric with the edge removed − metric before, when it was tried; nil for edges removed untried
    /// (their receiver no longer reached the output).
    public let effects: [Double?]
    public let threshold: Double
    public let metricName: String
    public let ablation: CircuitAblation
    /// The metric of the full model, of the circuit found and of the graph with every edge removed.
    public let fullMetric: Double
    public let circuitMetric: Double
    public let emptyMetric: Double
    /// Forward passes run (batched ones count once) and graph states run in them.
    public let forwardPasses: Int
    public let statesRun: Int

    public var keptCount: Int { kept.filter { $0 }.count }
    public var keptEdges: [CircuitGraph.Edge] { zip(graph.edges, kept).filter(\.1).map(\.0) }
}

/// ACDC (Conmy et al.), exactly: receivers in reverse topological order, into each its senders in ACDC's order; an edge
/// is removed, and stays removed, when the metric with it removed exceeds the current metric by less than τ. A
/// receiver that no longer reaches the output has its edges removed untried. The metric is minimised (KL, L2, or the
/// negated logit difference).
public enum ACDC {
    public struct Settings: Sendable {
        public var threshold: Double
        public var ablation: CircuitAblation
        public var splitEmbeddings: Bool
        /// Rows (graph states × prompts × positions) per batched forward.
        public var maxRows: Int
        /// The default `maxRows`, unless memory bounds a batch lower (about 1 GB of buffers). More states per batch
        /// share more of what is computed once for all of them, and the batch's fixed costs; at 8,192 rows a batch's
        /// scratch buffers stay small (25 MB each at GPT-2 small's width).
        public static let defaultMaxRows = 8192

        public init(threshold: Double, ablation: CircuitAblation = .corrupted, splitEmbeddings: Bool = false, maxRows: Int = defaultMaxRows) {
            self.threshold = threshold
            self.ablation = ablation
            self.splitEmbeddings = splitEmbeddings
            self.maxRows = maxRows
        }
    }

    /// The fast algorithm: each try starts at the receiver's layer from the clean run (everything before it is
    /// untouched), the candidate edges of a receiver are tried as one batch of graph states assuming each is removed
    /// (ACDC removes most), and the batch is run again only past an edge that was kept. Within a batch, what is the
    /// same in every state is computed once; a head or MLP whose inputs' edges have not changed since an earlier try
    /// is not computed again. Logits only where the metric reads. The same decisions as `reference`.
    public static func run(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch?, metric: CircuitMetric,
                           settings: Settings, progress: ((Int, Int) -> Void)? = nil) throws -> CircuitResult {
        try discover(model: model, clean: clean, corrupted: corrupted, metric: metric, settings: settings, batched: true, progress: progress)
    }

    /// ACDC as its authors run it: one forward pass of the whole model per edge tried, nothing reused between them.
    public static func reference(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch?, metric: CircuitMetric,
                                 settings: Settings) throws -> CircuitResult {
        try discover(model: model, clean: clean, corrupted: corrupted, metric: metric, settings: settings, batched: false, progress: nil)
    }

    static func discover(model: TransformerModel, clean: TokenBatch, corrupted: TokenBatch?, metric: CircuitMetric,
                         settings: Settings, batched: Bool, progress: ((Int, Int) -> Void)?) throws -> CircuitResult {
        let graph = CircuitGraph(config: model.config, splitEmbeddings: settings.splitEmbeddings)
        let forward = try GraphForward(model: model, graph: graph, clean: clean, corrupted: corrupted,
                                       ablation: settings.ablation, metric: metric, reuseOutputs: batched)
        let E = graph.edges.count, tau = settings.threshold
        var present = [Bool](repeating: true, count: E)
        var effects = [Double?](repeating: nil, count: E)
        let start0 = GraphForward.Start.attention(layer: 0)
        let full = try forward.evaluate([present], from: batched ? .output : start0)[0]
        var current = full

        // Receivers in visiting order: runs of consecutive edges with the same kind and receiver.
        var groups: [Range<Int>] = []
        var first = 0
        for i in 1...E where i == E || graph.edges[i].kind != graph.edges[first].kind || graph.edges[i].receiver != graph.edges[first].receiver {
            groups.append(first..<i)
            first = i
        }
        func sendsAnywhere(_ sender: CircuitGraph.Sender) -> Bool {
            graph.edges.indices.contains { present[$0] && graph.edges[$0].kind == .addition && graph.edges[$0].sender == sender }
        }
        for (done, group) in groups.enumerated() {
            defer { progress?(done + 1, groups.count) }
            let edge = graph.edges[group.lowerBound]
            // Does this node still reach the output?
            let connected: Bool
            switch (edge.kind, edge.receiver) {
            case (.addition, .output): connected = true
            case let (.addition, .mlp(l)): connected = sendsAnywhere(.mlp(layer: l))
            case let (.direct, .head(l, h, _)): connected = sendsAnywhere(.head(layer: l, head: h))
            case let (.addition, .head(l, h, x)): connected = present[forward.direct[.head(layer: l, head: h, x)]!]
            default: connected = true
            }
            guard connected else {
                for e in group { present[e] = false }
                continue
            }
            let start: GraphForward.Start
            if !batched {
                start = start0
            } else {
                switch edge.receiver {
                case .output where edge.kind == .addition: start = .output
                case let .mlp(l): start = .mlp(layer: l)
                case let .head(l, _, _): start = .attention(layer: l)
                case .output: start = start0
                }
            }
            var next = group.lowerBound, batch = group.count
            while next < group.upperBound {
                if batched {
                    // The next candidates, each assuming the ones before it in the batch were removed. A kept edge
                    // wastes the rest of its batch, so after one the batches shrink.
                    var states: [[Bool]] = []
                    var state = present
                    for e in next..<min(group.upperBound, next + batch) {
                        state[e] = false
                        states.append(state)
                    }
                    let values = try forward.evaluate(states, from: start, maxRows: settings.maxRows)
                    var k = 0
                    while k < values.count {
                        let delta = values[k] - current
                        effects[next] = delta
                        next += 1
                        k += 1
                        if delta < tau {
                            present[next - 1] = false
                            current = values[k - 1]
                        } else {
                            batch = max(1, batch / 2)
                            break   // kept: the later states assumed it removed
                        }
                    }
                } else {
                    var state = present
                    state[next] = false
                    let value = try forward.evaluate([state], from: start)[0]
                    let delta = value - current
                    effects[next] = delta
                    if delta < tau {
                        present[next] = false
                        current = value
                    }
                    next += 1
                }
            }
        }
        let circuit = try forward.evaluate([present], from: start0)[0]
        let empty = try forward.evaluate([[Bool](repeating: false, count: E)], from: start0)[0]
        return CircuitResult(graph: graph, kept: present, effects: effects, threshold: tau, metricName: metric.name,
                             ablation: settings.ablation, fullMetric: full, circuitMetric: circuit, emptyMetric: empty,
                             forwardPasses: forward.passes, statesRun: forward.states)
    }
}
