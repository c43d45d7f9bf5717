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
    /// Addition edges into each receiver: (edge index, sender index).
    private(set) var into: [CircuitGraph.Receiver: [(edge: Int, sender: Int)]] = [:]
    /// The direct edge of each head input.
    private(set) var direct: [CircuitGraph.Receiver: Int] = [:]

    /// Per sender `[rows0, D]`: its output in the clean run, its ablated output, and the difference.
    private var clean: [[Float]] = []
    private var ablated: [[Float]] = []
    private var cleanDelta: [[Float]] = []
    /// Per layer: the clean run's residual stream before the layer and (MLP models) before its MLP; and after the
    /// last layer.
    private var cleanPre: [[Float]] = [], cleanMid: [[Float]] = [], cleanFinal: [Float] = []
    /// Ablated inputs: per layer before attention and before the MLP, and at the output; ablated q|k|v per layer
    /// `[rows0, 3·H·d]`.
    private var ablatedPre: [[Float]] = [], ablatedMid: [[Float]] = [], ablatedFinal: [Float] = []
    private var ablatedQKV: [[Float]] = []
    /// Receivers in forward order (each head's q, k, v; each MLP's input; the output); per receiver the addition
    /// edges into it and its direct edge; per edge its receiver (a direct edge's: the head input it leaves from) and its
    /// sender (-1 for a direct edge); per sender the receivers of its inputs.
    private var receivers: [CircuitGraph.Receiver] = []
    private var receiverEdges: [[(edge: Int, sender: Int)]] = []
    private var receiverDirect: [Int?] = []
    private var edgeReceiver: [Int] = [], edgeSender: [Int] = []
    private var senderInputs: [[Int]] = []
    /// Per receiver, the edge states seen so far (its removed edges, -1 for its direct edge) as small numbers.
    private var receiverIDs: [[[Int]: Int]] = []
    /// Outputs kept from earlier runs, per sender: the key of what determined them, their delta and their change (see
    /// `run`; `[rows0, D]`, or `[R, D]` in the last layer).
    private var outputCache: [Int: (key: [Int], delta: UnsafeMutablePointer<Float>, change: UnsafeMutablePointer<Float>)] = [:]

    /// What a run's states have in common and what earlier runs computed for it.
    private struct Plan {
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
    private let unembedding: Unembedding

    /// Whether runs reuse outputs kept from earlier runs (off: every run computes every sender from its start).
    let reuseOutputs: Bool

    /// Scratch buffers (pointer, capacity) free for the next run.
    private var pool: [(UnsafeMutablePointer<Float>, Int)] = []

    deinit {
        pool.forEach { $0.0.deallocate() }
        outputCache.values.forEach { $0.delta.deallocate(); $0.change.deallocate() }
    }

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

    /// The metric of each graph state (`present` flags per edge), every state run from `start`.
    /// States are run `maxRows` rows at a time, fewer when the senders' outputs kept per state (every sender from the
    /// start on, `[rows, D]` each) would pass about 1 GB.
    func evaluate(_ states: [[Bool]], from start: Start, maxRows: Int = 8192) throws -> [Double] {
        var values: [Double] = []
        let computedSenders: Int
        switch start {
        case let .attention(l): computedSenders = graph.senders.count - graph.senderIndex[.head(layer: l, head: 0)]!
        case let .mlp(l): computedSenders = graph.senders.count - graph.senderIndex[.mlp(layer: l)]!
        case .output: computedSenders = 0
        }
        let memoryRows = (1 << 28) / (D * (computedSenders + 12))   // 2^28 floats = 1 GB
        let perChunk = max(1, min(maxRows, memoryRows) / rows0)
        var first = 0
        while first < states.count {
            let chunk = Array(states[first..<min(states.count, first + perChunk)])
            values += try run(chunk, from: start)
            first += chunk.count
        }
        return values
    }

    private func run(_ states: [[Bool]], from start: Start) throws -> [Double] {
        passes += 1
        self.states += states.count
        let V = states.count, rows = V * rows0, L = c.nLayers
        // Scratch buffers come from a pool kept across runs: fresh pages cost more than the arithmetic here.
        var taken: [(UnsafeMutablePointer<Float>, Int)] = []
        defer { pool += taken }
        func make(_ count: Int) -> UnsafeMutablePointer<Float> {
            // The smallest free buffer that fits (a large one taken for a small request would be missed later).
            if let i = pool.indices.filter({ pool[$0].1 >= count }).min(by: { pool[$0].1 < pool[$1].1 }) {
                taken.append(pool.remove(at: i))
                return taken.last!.0
            }
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            taken.append((p, max(count, 1)))
            return p
        }
        let firstComputed: Int, firstLayer: Int
        switch start {
        case let .attention(l): (firstComputed, firstLayer) = (graph.senderIndex[.head(layer: l, head: 0)]!, l)
        case let .mlp(l): (firstComputed, firstLayer) = (graph.senderIndex[.mlp(layer: l)]!, l)
        case .output: (firstComputed, firstLayer) = (graph.senders.count, L)
        }
        let plan = plan(states, firstComputed: firstComputed), dead = plan.dead
        // After the last layer's keys and values only the rows the metric reads matter: from there on the runs
        // hold those rows alone ("read rows", `R` per state, prompt-major as the metric reads them).
        let readPositions = metric.positions.resolved(positions: P), R = B * readPositions.count
        let readRows = (0..<B).flatMap { b in readPositions.map { b * P + $0 } }

        // What the runs computed, per sender from the start on: its output − its ablated output ("delta") and, for
        // outputs every state shares, its output − its clean output ("change"). At every row (`[rows0, D]` per
        // block) or, in the last layer, at the read rows (`[R, D]`); one block per state, or one for all.
        struct Computed { let delta: UnsafePointer<Float>, change: UnsafePointer<Float>?, shared: Bool, read: Bool }
        var computed: [Int: Computed] = [:]
        /// `out += sign · term` for variant v, at every row or at the read rows, where term is sender s's delta or its
        /// change. Senders before the start are clean: their delta is `cleanDelta`, their change 0.
        func accumulate(_ s: Int, change: Bool, variant v: Int, read: Bool, into out: UnsafeMutablePointer<Float>, sign: Float) {
            func add(_ source: UnsafePointer<Float>, sign: Float, sourceRead: Bool) {
                if read && !sourceRead {
                    for i in 0..<R { vectorAddScaled(out + i * D, sign, source + readRows[i] * D, D) }
                } else {
                    vectorAddScaled(out, sign, source, (read ? R : rows0) * D)
                }
            }
            guard let values = computed[s] else {
                precondition(s < firstComputed, "sender \(graph.senders[s]) read before it was computed")
                if !change { cleanDelta[s].withUnsafeBufferPointer { add($0.baseAddress!, sign: sign, sourceRead: false) } }
                return
            }
            let offset = values.shared ? 0 : v * (values.read ? R : rows0) * D
            if !change {
                add(values.delta + offset, sign: sign, sourceRead: values.read)
            } else if let difference = values.change {
                add(difference + offset, sign: sign, sourceRead: values.read)
            } else {
                // change = delta − cleanDelta
                add(values.delta + offset, sign: sign, sourceRead: values.read)
                cleanDelta[s].withUnsafeBufferPointer { add($0.baseAddress!, sign: -sign, sourceRead: false) }
            }
        }
        /// The input of `receiver` for variant v into `out`, at every row or at the read rows, as whichever sums fewer
        /// terms: its clean input − the clean delta of each removed sender + the change of each present computed
        /// sender; or its ablated input + the delta of each present sender.
        func receiverInput(_ receiver: CircuitGraph.Receiver, variant v: Int, atReadRows read: Bool, clean: [Float], ablated: [Float],
                           into out: UnsafeMutablePointer<Float>) {
            let edges = into[receiver] ?? []
            var removed: [Int] = [], present: [Int] = [], changed = 0
            for (edge, sender) in edges {
                if states[v][edge] {
                    present.append(sender)
                    if sender >= firstComputed { changed += 1 }
                } else {
                    removed.append(sender)
                }
            }
            let fromClean = removed.count + changed <= present.count
            (fromClean ? clean : ablated).withUnsafeBufferPointer { base in
                if read {
                    for i in 0..<R { (out + i * D).update(from: base.baseAddress! + readRows[i] * D, count: D) }
                } else {
                    out.update(from: base.baseAddress!, count: rows0 * D)
                }
            }
            if fromClean {
                for s in removed { cleanDelta[s].withUnsafeBufferPointer { b in
                    if read {
                        for i in 0..<R { vectorAddScaled(out + i * D, -1, b.baseAddress! + readRows[i] * D, D) }
                    } else {
                        vectorAddScaled(out, -1, b.baseAddress!, rows0 * D)
                    }
                } }
                for s in present where s >= firstComputed { accumulate(s, change: true, variant: v, read: read, into: out, sign: 1) }
            } else {
                for s in present { accumulate(s, change: false, variant: v, read: read, into: out, sign: 1) }
            }
        }
        /// Keeps a computed sender's output (`blocks` blocks of `[rows0, D]`, or of `[R, D]` at the read rows) as its
        /// delta and, when every state shares it, its change, kept for later runs too.
        func record(_ s: Int, output: UnsafePointer<Float>, shared: Bool, read: Bool) {
            let n = (read ? R : rows0) * D
            let delta: UnsafeMutablePointer<Float>, change: UnsafeMutablePointer<Float>?
            if shared && reuseOutputs {
                // Written straight into the kept buffers (the sender's earlier output there is out of date).
                let kept = outputCache[s] ?? (plan.keys[s]!, .allocate(capacity: n), .allocate(capacity: n))
                (delta, change) = (kept.delta, kept.change)
                outputCache[s] = (plan.keys[s]!, kept.delta, kept.change)
            } else {
                (delta, change) = (make((shared ? 1 : V) * n), shared ? make(n) : nil)
            }
            /// `out = output block − base` (base at every row or at the read rows).
            func difference(_ block: Int, _ base: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
                if read {
                    for i in 0..<R { vectorSubtract(output + block * n + i * D, base + readRows[i] * D, into: out + i * D, D) }
                } else {
                    vectorSubtract(output + block * n, base, into: out, n)
                }
            }
            ablated[s].withUnsafeBufferPointer { a in
                parallelChunks(shared ? 1 : V, minimumChunk: 1) { range in
                    for block in range { difference(block, a.baseAddress!, into: delta + block * n) }
                }
            }
            if let change { clean[s].withUnsafeBufferPointer { difference(0, $0.baseAddress!, into: change) } }
            computed[s] = Computed(delta: delta, change: change, shared: shared, read: read)
        }
        /// Uses a sender's output kept from an earlier run.
        func recall(_ s: Int, read: Bool) -> Bool {
            guard reuseOutputs, !plan.senderVaries[s], let kept = outputCache[s], kept.key == plan.keys[s]! else { return false }
            computed[s] = Computed(delta: kept.delta, change: kept.change, shared: true, read: read)
            return true
        }

        let inputs = make(rows * D)
        let qkvBuffer = make(rows * 3 * hd), z = make(rows * hd)
        let hidden = make(c.attnOnly ? 0 : rows * c.dMLP)
        /// A layer's MLP, at every row or (the last layer) at the read rows: not computed when dead; reused from an
        /// earlier run, or computed once, when it is the same in every state; else computed per state.
        func mlp(_ l: Int, atReadRows read: Bool) {
            guard let ln2 = model.blocks[l].ln2, let layerMLP = model.blocks[l].mlp else { return }
            let s = graph.senderIndex[.mlp(layer: l)]!
            if dead[s] || recall(s, read: read) { return }
            let once = !plan.senderVaries[s], blockRows = read ? R : rows0
            let blocks = once ? 1 : V, n = blocks * blockRows
            let mlpIn = make(n * D), mlpOut = make(n * D)
            parallelChunks(blocks, minimumChunk: 1) { range in
                for v in range {
                    receiverInput(.mlp(layer: l), variant: v, atReadRows: read, clean: cleanMid[l], ablated: ablatedMid[l], into: mlpIn + v * blockRows * D)
                }
            }
            let normed = ln2.forward(mlpIn, rows: n, out: mlpIn)
            layerMLP.forward(normed, rows: n, hidden: hidden, into: mlpOut, schedule: .rowsAcrossCores)
            record(s, output: mlpOut, shared: once, read: read)
        }
        for l in firstLayer..<L {
            let block = model.blocks[l], attention = block.attention
            func column(_ x: CircuitGraph.QKV, _ h: Int) -> Int { attention.columns(x.projection, head: h).lowerBound }
            if start != .mlp(layer: l) {
                // In the last layer queries are made at the read rows only, and heads' outputs there.
                let last = l == L - 1, readOnlyQueries = last && R < rows0
                let headSenders = (0..<H).map { graph.senderIndex[.head(layer: l, head: $0)]! }
                // Heads: not computed when dead; reused from an earlier run, or computed once (in state 0's rows), when
                // the same in every state; else computed per state.
                var onceHeads: [Int] = [], varyingHeads: [Int] = []
                for (h, s) in headSenders.enumerated() where !dead[s] && !recall(s, read: last) {
                    if plan.senderVaries[s] { varyingHeads.append(h) } else { onceHeads.append(h) }
                }
                let varying = Set(varyingHeads)
                // Their q, k and v inputs, grouped by the senders removed from them in each state: a group makes one
                // input per state, normalised and multiplied together. An input that is the same in every state is
                // made once, in state 0's rows, and copied to the others' where a varying head reads it.
                struct Group: Hashable { let once: Bool, queriesOnly: Bool, removed: [[Int]] }
                var groups: [Group: [(h: Int, x: CircuitGraph.QKV)]] = [:], order: [Group] = []
                for x in CircuitGraph.QKV.allCases {
                    for h in onceHeads + varyingHeads {
                        let r = senderInputs[headSenders[h]][x.rawValue], once = !plan.receiverVaries[r]
                        let blocks = once ? 1 : V
                        // A removed direct edge makes the input irrelevant (the ablated value replaces it below).
                        if (0..<blocks).allSatisfy({ !states[$0][receiverDirect[r]!] }) { continue }
                        let removed = (0..<blocks).map { v in receiverEdges[r].filter { !states[v][$0.edge] }.map(\.sender) }
                        let group = Group(once: once, queriesOnly: readOnlyQueries && x == .q, removed: removed)
                        if groups[group] == nil { order.append(group) }
                        groups[group, default: []].append((h, x))
                    }
                }
                for group in order {
                    let members = groups[group]!, receiver = CircuitGraph.Receiver.head(layer: l, head: members[0].h, members[0].x)
                    let read = group.queriesOnly, blocks = group.once ? 1 : V, blockRows = read ? R : rows0, count = blocks * blockRows
                    parallelChunks(blocks, minimumChunk: 1) { range in
                        for v in range {
                            receiverInput(receiver, variant: v, atReadRows: read, clean: cleanPre[l], ablated: ablatedPre[l],
                                          into: inputs + v * blockRows * D)
                        }
                    }
                    let n = block.ln1.forward(inputs, rows: count, out: inputs)
                    // Products into q|k|v rows: straight into the buffer at every row, into scratch at the read rows.
                    let out = read ? make(count * 3 * hd) : qkvBuffer
                    attention.project(n, rows: count, only: members.map { ($0.x.projection, $0.h) }, into: out, schedule: .rowsAcrossCores)
                    // Into place: read rows into their rows of each state; inputs made once into the other states'
                    // rows of varying heads.
                    guard read || (group.once && V > 1) else { continue }
                    for (h, x) in members {
                        let column = column(x, h)
                        for v in 0..<(group.once && !varying.contains(h) ? 1 : V) where read || v > 0 {
                            let block = group.once ? 0 : v
                            for i in 0..<blockRows {
                                let row = read ? readRows[i] : i
                                (qkvBuffer + (v * rows0 + row) * 3 * hd + column).update(from: out + (block * blockRows + i) * 3 * hd + column, count: d)
                            }
                        }
                    }
                }
                // Removed direct edges: the ablated q, k or v.
                ablatedQKV[l].withUnsafeBufferPointer { a in
                    for h in onceHeads + varyingHeads {
                        for x in CircuitGraph.QKV.allCases {
                            let directEdge = receiverDirect[senderInputs[headSenders[h]][x.rawValue]]!, column = column(x, h)
                            for v in 0..<(varying.contains(h) ? V : 1) where !states[v][directEdge] {
                                let block = qkvBuffer + v * rows0 * 3 * hd
                                for r in 0..<rows0 { (block + r * 3 * hd + column).update(from: a.baseAddress! + r * 3 * hd + column, count: d) }
                            }
                        }
                    }
                }
                let queries = last ? readPositions : nil
                if !onceHeads.isEmpty {
                    attention.fused(qkvBuffer, batch: B, positions: P, into: z, heads: onceHeads, queries: queries)
                }
                if !varyingHeads.isEmpty {
                    attention.fused(qkvBuffer, batch: V * B, positions: P, into: z, heads: varyingHeads, queries: queries)
                }
                // Each head's output z_h·W_O[h] is a sender (b_O is in the clean and ablated inputs).
                let blockRows = last ? R : rows0
                let zRead = make(last ? V * R * d : 0), out = make(V * blockRows * D)
                for h in onceHeads + varyingHeads {
                    let blocks = varying.contains(h) ? V : 1
                    if last {
                        for v in 0..<blocks {
                            for i in 0..<R { (zRead + (v * R + i) * d).update(from: z + (v * rows0 + readRows[i]) * hd + h * d, count: d) }
                        }
                        attention.headOutput(zRead, rows: blocks * R, ldz: d, head: h, into: out, schedule: .rowsAcrossCores)
                    } else {
                        attention.headOutput(z + h * d, rows: blocks * rows0, head: h, into: out, schedule: .rowsAcrossCores)
                    }
                    record(headSenders[h], output: out, shared: blocks == 1, read: last)
                }
            }
            mlp(l, atReadRows: l == L - 1)
        }
        // The output, at the read rows.
        let final = make(V * R * D)
        for v in 0..<V { receiverInput(.output, variant: v, atReadRows: true, clean: cleanFinal, ablated: ablatedFinal, into: final + v * R * D) }
        let readRowCount = V * R
        let n = model.lnFinal.forward(final, rows: readRowCount, out: final)
        let width = unembedding.width
        let logits = make(readRowCount * width)
        unembedding.forward(n, rows: readRowCount, into: logits, schedule: .rowsAcrossCores)
        var values: [Double] = []
        for v in 0..<V {
            let count = R * width
            let tensor = Tensor(shape: [B, readPositions.count, width], scalars: Array(UnsafeBufferPointer(start: logits + v * count, count: count)))
            values.append(try metric.evaluate(tensor))
        }
        return values
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
