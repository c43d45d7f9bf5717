import Foundation
import InterpCore
import InterpModels

/// What a removed edge delivers to its receiver in place of the sender's output.
public enum CircuitAblation: String, Sendable, CaseIterable {
    /// The sender's output on the corrupted prompts (ACDC's default).
    case corrupted
    /// Zero.
    case zero
    /// The sender's output on the corrupted prompts, averaged over them (per position).
    case mean
}

/// Runs the clean prompts through a model whose graph has some edges removed, many graph states at a time.
///
/// A receiver's input is its ablated input (the sum of every sender's ablated output and the biases before it) plus,
/// for each present edge, the sender's output minus its ablated output; a head whose direct edge is removed uses its
/// ablated query, key or value (computed from its ablated input). With every edge present this is the clean model.
///
/// Runs can start in the middle: before the attention of a layer, before its MLP, or at the output. Whatever comes
/// before the start is the clean run's, which is right for ACDC: it only removes edges into receivers it has already
/// visited, all of them at or after the start of the runs it asks for.
///
/// A head or MLP whose output is the same in all of a run's states is computed once for them, and kept: a later run
/// in which everything it depends on is the same (see `plan`) uses it again.
final class GraphForward {
    enum Start: Equatable {
        case attention(layer: Int)
        case mlp(layer: Int)
        case output
    }

    let model: TransformerModel
    let graph: CircuitGraph
    let c: ModelConfig
    let B, P, rows0, D, H, d, hd: Int
    let metric: CircuitMetric
    /// Scratch buffers free for the next run, and sender outputs kept from earlier runs for later ones. Declared
    /// before the per-sender arrays below so that they are freed before them: the other order leaves malloc to return
    /// more of its heap to the system, and the next GraphForward's forward faults those pages in again (a fifth more
    /// page faults, and a few percent of time, in the `acdc` benchmark).
    let scratch = ScratchPool()
    let keptOutputs = KeptOutputs()
    /// The direct edge of each head input.
    private(set) var direct: [CircuitGraph.Receiver: Int] = [:]

    /// Per sender `[rows0, D]`: its output in the clean run, its ablated output, and the difference.
    private(set) var clean: [[Float]] = []
    private(set) var ablated: [[Float]] = []
    private(set) var cleanDelta: [[Float]] = []
    /// Per layer: the clean run's residual stream before the layer and (MLP models) before its MLP; and after the
    /// last layer.
    private(set) var cleanPre: [[Float]] = [], cleanMid: [[Float]] = [], cleanFinal: [Float] = []
    /// Ablated inputs: per layer before attention and before the MLP, and at the output; ablated q|k|v per layer
    /// `[rows0, 3·H·d]`.
    private(set) var ablatedPre: [[Float]] = [], ablatedMid: [[Float]] = [], ablatedFinal: [Float] = []
    private(set) var ablatedQKV: [[Float]] = []
    /// Receivers in forward order (each head's q, k, v; each MLP's input; the output); per receiver the addition
    /// edges into it and its direct edge; per edge its receiver (a direct edge's: the head input it leaves from) and its
    /// sender (-1 for a direct edge); per sender the receivers of its inputs.
    private(set) var receivers: [CircuitGraph.Receiver] = []
    private(set) var receiverEdges: [[(edge: Int, sender: Int)]] = []
    private(set) var receiverDirect: [Int?] = []
    private var edgeReceiver: [Int] = [], edgeSender: [Int] = []
    private(set) var senderInputs: [[Int]] = []
    /// Per receiver, the edge states seen so far (its removed edges, -1 for its direct edge) as small numbers.
    private var receiverIDs: [[[Int]: Int]] = []

    /// What a run's states have in common and what earlier runs computed for it.
    struct Plan {
        /// Senders with no edge present in any state: not computed (every receiver gets their ablated output).
        var dead: [Bool]
        /// Whether a computed receiver's input or sender's output may differ between the states.
        var receiverVaries: [Bool], senderVaries: [Bool]
        /// Per computed sender that does not vary: everything its output depends on, as a key.
        var keys: [Int: [Int]]
    }

    /// A computed value depends on the edge states of the receivers in its cone (its own inputs and, through present
    /// edges, those of the computed senders it reads, recursively) and on the clean outputs of the senders before the
    /// start it reads. It may vary between the states when one of those receivers' edges does; otherwise the key
    /// (each cone receiver with its interned edge state, and the clean senders read) says when an earlier run's
    /// output is the same.
    private func plan(_ states: [[Bool]], firstComputed: Int) -> Plan {
        let E = graph.edges.count, S = graph.senders.count, nR = receivers.count
        var anyPresent = states[0]
        var receiverVaries = [Bool](repeating: false, count: nR)
        for state in states.dropFirst() {
            for e in 0..<E where state[e] != states[0][e] {
                anyPresent[e] = true
                receiverVaries[edgeReceiver[e]] = true
            }
        }
        var dead = [Bool](repeating: true, count: S)
        for e in 0..<E where anyPresent[e] && edgeSender[e] >= 0 { dead[edgeSender[e]] = false }
        // Cones as bit sets: receivers at 0..<nR, clean senders read at nR + s.
        let words = (nR + S + 63) / 64
        var receiverBits = [UInt64](repeating: 0, count: nR * words), senderBits = [UInt64](repeating: 0, count: S * words)
        var senderVaries = [Bool](repeating: false, count: S)
        func set(_ bits: inout [UInt64], _ row: Int, _ bit: Int) { bits[row * words + bit / 64] |= 1 << UInt64(bit % 64) }
        for s in firstComputed..<S where !dead[s] {
            for r in senderInputs[s] {
                set(&receiverBits, r, r)
                for (e, t) in receiverEdges[r] where anyPresent[e] {
                    if t >= firstComputed {
                        for w in 0..<words { receiverBits[r * words + w] |= senderBits[t * words + w] }
                        if senderVaries[t] { receiverVaries[r] = true }
                    } else if !senderInputs[t].isEmpty {
                        set(&receiverBits, r, nR + t)
                    }
                }
                for w in 0..<words { senderBits[s * words + w] |= receiverBits[r * words + w] }
                if receiverVaries[r] { senderVaries[s] = true }
            }
        }
        var ids = [Int](repeating: -1, count: nR)
        func id(_ r: Int) -> Int {
            if ids[r] >= 0 { return ids[r] }
            var removed = receiverEdges[r].filter { !states[0][$0.edge] }.map(\.edge)
            if let d = receiverDirect[r], !states[0][d] { removed.append(-1) }
            if let known = receiverIDs[r][removed] { ids[r] = known } else { ids[r] = receiverIDs[r].count; receiverIDs[r][removed] = ids[r] }
            return ids[r]
        }
        var keys: [Int: [Int]] = [:]
        for s in firstComputed..<S where !dead[s] && !senderVaries[s] {
            var key: [Int] = []
            for w in 0..<words {
                var bits = senderBits[s * words + w]
                while bits != 0 {
                    let b = w * 64 + bits.trailingZeroBitCount
                    bits &= bits - 1
                    if b < nR { key += [b, id(b)] } else { key.append(-b) }
                }
            }
            keys[s] = key
        }
        return Plan(dead: dead, receiverVaries: receiverVaries, senderVaries: senderVaries, keys: keys)
    }
    /// The unembedding's columns the metric reads.
    let unembedding: Unembedding

    /// Whether runs reuse outputs kept from earlier runs (off: every run computes every sender from its start).
    let reuseOutputs: Bool

    /// Batched forward passes run, and graph states run in them.
    private(set) var passes = 0, states = 0

    init(model: TransformerModel, graph: CircuitGraph, clean tokens: TokenBatch, corrupted: TokenBatch?,
         ablation: CircuitAblation, metric: CircuitMetric, reuseOutputs: Bool = true) throws {
        self.reuseOutputs = reuseOutputs
        self.model = model
        self.graph = graph
        self.metric = metric
        c = model.config
        B = tokens.batch
        P = tokens.positions
        rows0 = B * P
        D = c.dModel
        H = c.nHeads
        d = c.dHead
        hd = H * d
        unembedding = model.unembedding.selecting(metric.logitIndices)
        // Addition edges into each receiver: (edge index, sender index).
        var into: [CircuitGraph.Receiver: [(edge: Int, sender: Int)]] = [:]
        for (i, edge) in graph.edges.enumerated() {
            if edge.kind == .addition {
                into[edge.receiver, default: []].append((i, graph.senderIndex[edge.sender]!))
            } else {
                direct[edge.receiver] = i
            }
        }
        for sender in graph.senders {
            let inputs: [CircuitGraph.Receiver]
            switch sender {
            case let .head(l, h): inputs = CircuitGraph.QKV.allCases.map { .head(layer: l, head: h, $0) }
            case let .mlp(l): inputs = [.mlp(layer: l)]
            case .input, .embed, .posEmbed: inputs = []
            }
            senderInputs.append(inputs.indices.map { receivers.count + $0 })
            receivers += inputs
        }
        receivers.append(.output)
        let receiverIndex = Dictionary(uniqueKeysWithValues: receivers.enumerated().map { ($1, $0) })
        receiverEdges = receivers.map { into[$0] ?? [] }
        receiverDirect = receivers.map { direct[$0] }
        receiverIDs = Array(repeating: [:], count: receivers.count)
        edgeReceiver = graph.edges.map { receiverIndex[$0.receiver]! }
        edgeSender = graph.edges.map { $0.kind == .addition ? graph.senderIndex[$0.sender]! : -1 }
        let (cleanOutputs, cleanStreams) = try Self.senderOutputs(model: model, graph: graph, tokens: tokens)
        clean = cleanOutputs
        (cleanPre, cleanMid, cleanFinal) = cleanStreams
        switch ablation {
        case .zero:
            ablated = Array(repeating: [Float](repeating: 0, count: rows0 * D), count: graph.senders.count)
        case .corrupted, .mean:
            guard let corrupted else { throw InterpError("\(ablation.rawValue) ablation needs corrupted prompts") }
            guard corrupted.batch == B, corrupted.positions == P else {
                throw InterpError("clean and corrupted prompts differ in shape: \(B) × \(P) tokens vs \(corrupted.batch) × \(corrupted.positions)")
            }
            ablated = try Self.senderOutputs(model: model, graph: graph, tokens: corrupted).outputs
            if ablation == .mean {
                ablated = ablated.map { values in
                    var mean = [Float](repeating: 0, count: P * D)
                    for b in 0..<B { for i in 0..<(P * D) { mean[i] += values[b * P * D + i] / Float(B) } }
                    return (0..<B).flatMap { _ in mean }
                }
            }
        }
        cleanDelta = zip(clean, ablated).map { x, a in
            [Float](unsafeUninitializedCapacity: x.count) { out, count in
                x.withUnsafeBufferPointer { x in a.withUnsafeBufferPointer { a in for i in 0..<x.count { out[i] = x[i] - a[i] } } }
                count = x.count
            }
        }
        // Ablated inputs: the biases before each point plus every ablated sender output before it.
        let ablatedOutputs = ablated
        var stream = [Float](repeating: 0, count: rows0 * D)
        var next = 0   // senders added to `stream` so far
        func addSenders(upTo end: Int) {
            stream.withUnsafeMutableBufferPointer { s in
                while next < end {
                    ablatedOutputs[next].withUnsafeBufferPointer { vectorAddScaled(s.baseAddress!, 1, $0.baseAddress!, s.count) }
                    next += 1
                }
            }
        }
        for l in 0..<c.nLayers {
            addSenders(upTo: graph.senderIndex[.head(layer: l, head: 0)]!)
            ablatedPre.append(stream)
            ablatedQKV.append(qkv(of: stream, layer: l))
            addSenders(upTo: graph.senderIndex[.head(layer: l, head: H - 1)]! + 1)
            stream.withUnsafeMutableBufferPointer { s in model.blocks[l].attention.output.bias!.withUnsafeBufferPointer { b in
                for r in 0..<rows0 { vectorAddScaled(s.baseAddress! + r * D, 1, b.baseAddress!, D) }
            } }
            ablatedMid.append(stream)
        }
        addSenders(upTo: graph.senders.count)
        ablatedFinal = stream
    }

    /// Every sender's output on `tokens` (`[rows, D]` each, in `graph.senders` order) and the residual stream before
    /// each layer, before each MLP and after the last layer.
    static func senderOutputs(model: TransformerModel, graph: CircuitGraph, tokens: TokenBatch) throws
        -> (outputs: [[Float]], streams: (pre: [[Float]], mid: [[Float]], final: [Float])) {
        let c = model.config, L = c.nLayers, H = c.nHeads, D = c.dModel, rows = tokens.batch * tokens.positions
        var names: [HookName] = [HookName(.embed), HookName(.posEmbed), HookName(.residPost, layer: L - 1)]
        for l in 0..<L {
            names += [HookName(.result, layer: l), HookName(.residPre, layer: l)]
            if !c.attnOnly { names += [HookName(.mlpOut, layer: l), HookName(.residMid, layer: l)] }
        }
        let cache = try model.forward(tokens, hooks: Hooks(cache: Set(names)), stopAfter: HookName(.residPost, layer: L - 1)).cache
        let embed = cache[HookName(.embed)]!.scalars, position = cache[HookName(.posEmbed)]!.scalars
        var outputs: [[Float]] = []
        for sender in graph.senders {
            switch sender {
            case .input: outputs.append(zip(embed, position).map { $0 + $1 })
            case .embed: outputs.append(embed)
            case .posEmbed: outputs.append(position)
            case let .head(l, h):
                let result = cache[HookName(.result, layer: l)]!   // [rows, H, D]
                outputs.append([Float](unsafeUninitializedCapacity: rows * D) { out, count in
                    result.withUnsafeBufferPointer { x in
                        for r in 0..<rows { UnsafeMutableRawPointer(out.baseAddress! + r * D).copyMemory(from: x.baseAddress! + (r * H + h) * D, byteCount: D * 4) }
                    }
                    count = rows * D
                })
            case let .mlp(l): outputs.append(cache[HookName(.mlpOut, layer: l)]!.scalars)
            }
        }
        let pre = (0..<L).map { cache[HookName(.residPre, layer: $0)]!.scalars }
        let mid = c.attnOnly ? [] : (0..<L).map { cache[HookName(.residMid, layer: $0)]!.scalars }
        return (outputs, (pre, mid, cache[HookName(.residPost, layer: L - 1)]!.scalars))
    }

    /// q|k|v `[rows0, 3·H·d]` of one input `[rows0, D]` in `layer`.
    private func qkv(of input: [Float], layer: Int) -> [Float] {
        var out = [Float](repeating: 0, count: rows0 * 3 * hd)
        let block = model.blocks[layer]
        input.withUnsafeBufferPointer { x in out.withUnsafeMutableBufferPointer { o in
            let normed = UnsafeMutablePointer<Float>.allocate(capacity: rows0 * D)
            defer { normed.deallocate() }
            let n = block.ln1.forward(UnsafeMutablePointer(mutating: x.baseAddress!), rows: rows0, out: normed)
            block.attention.project(n, rows: rows0, into: o.baseAddress!, schedule: .rowsAcrossCores)
        } }
        return out
    }

    // MARK: - Evaluation

    /// The bound on what a run's buffers may hold: 2^28 floats, 1 GB. Those buffers grow with the run's rows, so the
    /// bound caps the graph states per run: on the GPT-2-small graph run from layer 0 (156 senders' outputs and the
    /// scratch, 168 × 768 floats a row) it allows about 2,000 rows; on small models `maxRows` binds first.
    static let runMemoryFloats = 1 << 28
    /// A run's row-sized scratch buffers besides the senders' outputs it keeps (see `Run`), in `[rows, D]` units, for
    /// GPT-2's proportions (H·d = D, d_mlp = 4·D): receiver inputs 1, q|k|v 3, z 1, the MLP's hidden 4, its input and
    /// output 2, a head's output 1.
    static let scratchBuffersPerRow = 12

    /// The metric of each graph state (`present` flags per edge), every state run from `start`.
    /// States are run `maxRows` rows at a time, fewer when the run's buffers (every sender's output from the start on,
    /// kept per state, and the scratch) would pass `runMemoryFloats`.
    func evaluate(_ states: [[Bool]], from start: Start, maxRows: Int = ACDC.Settings.defaultMaxRows) throws -> [Double] {
        let computedSenders = graph.senders.count - firstComputed(from: start).sender
        let memoryRows = Self.runMemoryFloats / (D * (computedSenders + Self.scratchBuffersPerRow))
        let perChunk = max(1, min(maxRows, memoryRows) / rows0)
        var values: [Double] = []
        var first = 0
        while first < states.count {
            let chunk = Array(states[first..<min(states.count, first + perChunk)])
            values += try run(chunk, from: start)
            first += chunk.count
        }
        return values
    }

    /// The first sender a run from `start` computes (`graph.senders.count` at the output) and the first layer.
    private func firstComputed(from start: Start) -> (sender: Int, layer: Int) {
        switch start {
        case let .attention(l): return (graph.senderIndex[.head(layer: l, head: 0)]!, l)
        case let .mlp(l): return (graph.senderIndex[.mlp(layer: l)]!, l)
        case .output: return (graph.senders.count, c.nLayers)
        }
    }

    /// One batched forward of `states` from `start` (see `Run`).
    private func run(_ states: [[Bool]], from start: Start) throws -> [Double] {
        passes += 1
        self.states += states.count
        defer { scratch.releaseAll() }
        let first = firstComputed(from: start)
        let run = Run(self, states: states, plan: plan(states, firstComputed: first.sender), firstComputed: first.sender)
        for l in first.layer..<c.nLayers {
            if start != .mlp(layer: l) { run.attention(l) }
            run.mlp(l)
        }
        return try run.metricValues()
    }
}

extension CircuitGraph.QKV {
    /// The attention projection this head input is.
    var projection: SelfAttention.Projection {
        switch self {
        case .q: return .q
        case .k: return .k
        case .v: return .v
        }
    }
}
