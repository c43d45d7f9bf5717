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
    /// Addition edges out of each sender.
    private var outgoing: [[Int]] = []

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
    struct HeadKey: Hashable { let layer: Int, head: Int }
    /// Outputs of heads computed in a start layer (all rows, or the read rows in the last layer), by the edges that
    /// determined them.
    private var headCache: [HeadKey: (signature: [Int], output: UnsafeMutablePointer<Float>)] = [:]

    /// What a start-layer head's output depends on: its direct edges and the removed edges into its q, k and v.
    private func headSignature(layer l: Int, head h: Int, state: [Bool]) -> [Int] {
        var out: [Int] = []
        for x in CircuitGraph.QKV.allCases {
            out.append(state[direct[.head(layer: l, head: h, x)]!] ? -1 : -2)
            out += (into[.head(layer: l, head: h, x)] ?? []).filter { !state[$0.edge] }.map(\.sender)
        }
        return out
    }

    private func remember(layer: Int, head: Int, signature: [Int], output: UnsafePointer<Float>, count: Int) {
        let key = HeadKey(layer: layer, head: head)
        headCache[key]?.output.deallocate()
        let copy = UnsafeMutablePointer<Float>.allocate(capacity: count)
        copy.update(from: output, count: count)
        headCache[key] = (signature, copy)
    }

    /// Scratch buffers (pointer, capacity) free for the next run.
    private var pool: [(UnsafeMutablePointer<Float>, Int)] = []

    deinit {
        pool.forEach { $0.0.deallocate() }
        headCache.values.forEach { $0.output.deallocate() }
    }

    /// Batched forward passes run, and graph states run in them.
    private(set) var passes = 0, states = 0

    init(model: TransformerModel, graph: CircuitGraph, clean tokens: TokenBatch, corrupted: TokenBatch?,
         ablation: CircuitAblation, metric: CircuitMetric) throws {
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
        outgoing = Array(repeating: [], count: graph.senders.count)
        for (i, edge) in graph.edges.enumerated() {
            if edge.kind == .addition {
                into[edge.receiver, default: []].append((i, graph.senderIndex[edge.sender]!))
                outgoing[graph.senderIndex[edge.sender]!].append(i)
            } else {
                direct[edge.receiver] = i
            }
        }
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
        cleanDelta = zip(clean, ablated).map { x, a in zip(x, a).map { $0 - $1 } }
        // Ablated inputs: the biases before each point plus every ablated sender output before it.
        var stream = [Float](repeating: 0, count: rows0 * D)
        var next = 0   // senders added to `stream` so far
        func addSenders(upTo end: Int) {
            while next < end { for i in 0..<stream.count { stream[i] += ablated[next][i] }; next += 1 }
        }
        for l in 0..<c.nLayers {
            addSenders(upTo: graph.senderIndex[.head(layer: l, head: 0)]!)
            ablatedPre.append(stream)
            ablatedQKV.append(qkv(of: stream, layer: l))
            addSenders(upTo: graph.senderIndex[.head(layer: l, head: H - 1)]! + 1)
            for i in 0..<stream.count { stream[i] += model.layers[l].bO[i % D] }
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
        let cache = try model.runWithCache(tokens, names: names).cache
        let embed = cache[HookName(.embed)]!.scalars, position = cache[HookName(.posEmbed)]!.scalars
        var outputs: [[Float]] = []
        for sender in graph.senders {
            switch sender {
            case .input: outputs.append(zip(embed, position).map { $0 + $1 })
            case .embed: outputs.append(embed)
            case .posEmbed: outputs.append(position)
            case let .head(l, h):
                let result = cache[HookName(.result, layer: l)]!.scalars   // [rows, H, D]
                var out = [Float](repeating: 0, count: rows * D)
                for r in 0..<rows { for i in 0..<D { out[r * D + i] = result[(r * H + h) * D + i] } }
                outputs.append(out)
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
        let weights = model.layers[layer]
        input.withUnsafeBufferPointer { x in out.withUnsafeMutableBufferPointer { o in
            let normed = UnsafeMutablePointer<Float>.allocate(capacity: rows0 * D)
            let mean = UnsafeMutablePointer<Float>.allocate(capacity: rows0), scale = UnsafeMutablePointer<Float>.allocate(capacity: rows0)
            defer { normed.deallocate(); mean.deallocate(); scale.deallocate() }
            let n = normalize(UnsafeMutablePointer(mutating: x.baseAddress!), rows: rows0, parameters: weights.ln1, mean: mean, scale: scale, out: normed)
            linear(n, rows: rows0, width: D, weight: weights.wQKV, bias: weights.bQKV, outWidth: 3 * hd, into: o.baseAddress!)
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
            if let i = pool.firstIndex(where: { $0.1 >= count }) {
                taken.append(pool.remove(at: i))
                return taken.last!.0
            }
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            taken.append((p, max(count, 1)))
            return p
        }
        // Output − ablated output of the senders the runs compute (from the start on), per variant: `[V·rows0, D]`.
        var computedDelta: [Int: UnsafeMutablePointer<Float>] = [:]
        // Senders whose output is the same in every state (`[rows0, D]` then).
        var sharedSenders = Set<Int>()
        // A computed sender none of whose edges is present in a state cannot change anything there: it is not
        // computed, and the stream gets its ablated output (so its difference is 0 wherever it is subtracted). Only
        // edges into one receiver differ between the states, and their senders come before the start, so this is
        // the same for every state.
        let dead = Set(graph.senders.indices.filter { s in !outgoing[s].contains { states[0][$0] } })
        let stream = make(rows * D)
        let firstComputed: Int
        switch start {
        case let .attention(l): firstComputed = graph.senderIndex[.head(layer: l, head: 0)]!
        case let .mlp(l): firstComputed = graph.senderIndex[.mlp(layer: l)]!
        case .output: firstComputed = graph.senders.count
        }
        /// `out += sign · (sender s's output − its ablated output)` for variant v.
        func accumulateDelta(_ s: Int, variant v: Int, into out: UnsafeMutablePointer<Float>, sign: Float) {
            if s >= firstComputed && dead.contains(s) { return }
            if s < firstComputed {
                cleanDelta[s].withUnsafeBufferPointer { vectorAddScaled(out, sign, $0.baseAddress!, rows0 * D) }
            } else {
                vectorAddScaled(out, sign, computedDelta[s]! + (sharedSenders.contains(s) ? 0 : v * rows0 * D), rows0 * D)
            }
        }
        /// Records a computed sender's output `[V·rows0, D]`: adds it to the stream and keeps its difference from the
        /// ablated output.
        func record(_ s: Int, output: UnsafePointer<Float>) {
            let delta = make(rows * D)
            ablated[s].withUnsafeBufferPointer { a in
                parallelChunks(V, minimumChunk: 1) { range in
                    for v in range {
                        let base = v * rows0 * D
                        for i in 0..<(rows0 * D) {
                            delta[base + i] = output[base + i] - a[i]
                            stream[base + i] += output[base + i]
                        }
                    }
                }
            }
            computedDelta[s] = delta
        }
        /// A dead sender: the stream gets its ablated output.
        func recordDead(_ s: Int) {
            ablated[s].withUnsafeBufferPointer { a in
                parallelChunks(V, minimumChunk: 1) { range in
                    for v in range { vectorAddScaled(stream + v * rows0 * D, 1, a.baseAddress!, rows0 * D) }
                }
            }
        }
        /// The same for an output `[rows0, D]` that every state shares.
        func recordShared(_ s: Int, output: UnsafePointer<Float>) {
            let delta = make(rows0 * D)
            ablated[s].withUnsafeBufferPointer { a in
                for i in 0..<(rows0 * D) { delta[i] = output[i] - a[i] }
            }
            parallelChunks(V, minimumChunk: 1) { range in
                for v in range { vectorAddScaled(stream + v * rows0 * D, 1, output, rows0 * D) }
            }
            computedDelta[s] = delta
            sharedSenders.insert(s)
        }
        func fill(_ source: [Float]) {
            source.withUnsafeBufferPointer { s in for v in 0..<V { (stream + v * rows0 * D).update(from: s.baseAddress!, count: rows0 * D) } }
        }
        let firstLayer: Int
        switch start {
        case let .attention(l): fill(cleanPre[l]); firstLayer = l
        case let .mlp(l): fill(cleanMid[l]); firstLayer = l
        case .output: fill(cleanFinal); firstLayer = L
        }
        // After the last layer's keys and values only the rows the metric reads matter: from there on the runs
        // hold those rows alone ("read rows", `[V·R, D]`, prompt-major as the metric reads them).
        let readPositions = metric.positions, nRead = readPositions.count, R = B * nRead
        let readRows = (0..<B).flatMap { b in readPositions.map { b * P + $0 } }
        let readStream = make(V * R * D)
        var readDelta: [Int: (pointer: UnsafeMutablePointer<Float>, shared: Bool)] = [:]
        /// The stream at the read rows, from the full stream.
        func gatherStream() {
            for v in 0..<V { for i in 0..<R { (readStream + (v * R + i) * D).update(from: stream + (v * rows0 + readRows[i]) * D, count: D) } }
        }
        /// `out[R, D] += sign · (sender s's output − its ablated output)` at the read rows, for variant v.
        func accumulateRead(_ s: Int, variant v: Int, into out: UnsafeMutablePointer<Float>, sign: Float) {
            if s >= firstComputed && dead.contains(s) { return }
            if let (pointer, shared) = readDelta[s] {
                vectorAddScaled(out, sign, pointer + (shared ? 0 : v * R * D), R * D)
                return
            }
            func add(_ full: UnsafePointer<Float>) { for i in 0..<R { vectorAddScaled(out + i * D, sign, full + readRows[i] * D, D) } }
            if s < firstComputed {
                cleanDelta[s].withUnsafeBufferPointer { add($0.baseAddress!) }
            } else {
                add(computedDelta[s]! + (sharedSenders.contains(s) ? 0 : v * rows0 * D))
            }
        }
        /// The input of `receiver` for variant v into `out`, at every row or at the read rows: from the full stream
        /// minus removed edges, or from the ablated input plus present edges, whichever sums fewer senders.
        func receiverInput(_ receiver: CircuitGraph.Receiver, variant v: Int, atReadRows read: Bool, ablatedInput: [Float],
                           into out: UnsafeMutablePointer<Float>) {
            let edges = into[receiver] ?? []
            let present = edges.filter { states[v][$0.edge] }
            let add = read ? accumulateRead : accumulateDelta
            if present.count * 2 >= edges.count {
                if read { out.update(from: readStream + v * R * D, count: R * D) } else { out.update(from: stream + v * rows0 * D, count: rows0 * D) }
                for e in edges where !states[v][e.edge] { add(e.sender, v, out, -1) }
            } else {
                ablatedInput.withUnsafeBufferPointer { a in
                    if read {
                        for i in 0..<R { (out + i * D).update(from: a.baseAddress! + readRows[i] * D, count: D) }
                    } else {
                        out.update(from: a.baseAddress!, count: rows0 * D)
                    }
                }
                for e in present { add(e.sender, v, out, 1) }
            }
        }
        /// Records a sender's output at the read rows (`[V·R, D]`, or `[R, D]` when shared).
        func recordRead(_ s: Int, output: UnsafePointer<Float>, shared: Bool) {
            let delta = make((shared ? 1 : V) * R * D)
            ablated[s].withUnsafeBufferPointer { a in
                for block in 0..<(shared ? 1 : V) {
                    for i in 0..<R {
                        let o = output + (block * R + i) * D, dst = delta + (block * R + i) * D, ab = a.baseAddress! + readRows[i] * D
                        for j in 0..<D { dst[j] = o[j] - ab[j] }
                    }
                }
            }
            for v in 0..<V { vectorAddScaled(readStream + v * R * D, 1, output + (shared ? 0 : v * R * D), R * D) }
            readDelta[s] = (delta, shared)
        }
        func recordDeadRead(_ s: Int) {
            ablated[s].withUnsafeBufferPointer { a in
                for v in 0..<V { for i in 0..<R { vectorAddScaled(readStream + (v * R + i) * D, 1, a.baseAddress! + readRows[i] * D, D) } }
            }
        }

        let inputs = make(rows * D)
        let qkvBuffer = make(rows * 3 * hd), z = make(rows * hd)
        let hidden = make(c.attnOnly ? 0 : rows * c.dMLP)
        /// The last layer's MLP at the read rows.
        func lastMLP(_ l: Int) {
            guard !c.attnOnly else { return }
            let s = graph.senderIndex[.mlp(layer: l)]!
            if dead.contains(s) { recordDeadRead(s); return }
            let weights = model.layers[l], n = V * R
            let mlpIn = make(n * D), mlpOut = make(n * D)
            for v in 0..<V { receiverInput(.mlp(layer: l), variant: v, atReadRows: true, ablatedInput: ablatedMid[l], into: mlpIn + v * R * D) }
            let normed = normalize(mlpIn, rows: n, parameters: weights.ln2, mean: nil, scale: nil, out: mlpIn)
            weights.wIn.withUnsafeBufferPointer { w in
                product(m: n, n: c.dMLP, k: D, normed, lda: D, w.baseAddress!, ldb: c.dMLP, hidden, ldc: c.dMLP)
            }
            weights.bIn.withUnsafeBufferPointer { b in c.actFn!.apply(hidden, rows: n, width: c.dMLP, bias: b.baseAddress!) }
            linear(hidden, rows: n, width: c.dMLP, weight: weights.wOut, bias: weights.bOut, outWidth: D, into: mlpOut)
            recordRead(s, output: mlpOut, shared: false)
        }
        for l in firstLayer..<L {
            let weights = model.layers[l]
            if start != .mlp(layer: l) {
                // Each head's q, k, v from its own input. Receivers whose removed edges are the same in every state
                // share one input per state: one normalisation and one product over all states' rows.
                // In the last layer queries are needed at the read rows only: query inputs there form their own groups
                // (marked by a leading [-1] in the key).
                let last = l == L - 1, readOnlyQueries = last && R < rows0
                if last { gatherStream() }
                var groups: [[[Int]]: [(h: Int, x: CircuitGraph.QKV)]] = [:], order: [[[Int]]] = []
                let deadHeads = Set((0..<H).filter { dead.contains(graph.senderIndex[.head(layer: l, head: $0)]!) })
                // In the start layer, heads whose q, k and v are the same in every state are computed once.
                var varying = Set(0..<H).subtracting(deadHeads)
                if start == .attention(layer: l) {
                    varying = []
                    for h in 0..<H where !deadHeads.contains(h) {
                        for x in CircuitGraph.QKV.allCases {
                            let edges = (into[.head(layer: l, head: h, x)] ?? []).map(\.edge) + [direct[.head(layer: l, head: h, x)]!]
                            if (1..<V).contains(where: { v in edges.contains { states[v][$0] != states[0][$0] } }) { varying.insert(h) }
                        }
                    }
                }
                // In the start layer a head's output depends only on its own edges (its inputs read the clean run):
                // one computed before with the same edges is reused.
                var cachedHeads: [Int: UnsafeMutablePointer<Float>] = [:]
                var signatures: [Int: [Int]] = [:]
                if start == .attention(layer: l) {
                    for h in 0..<H where !deadHeads.contains(h) && !varying.contains(h) {
                        signatures[h] = headSignature(layer: l, head: h, state: states[0])
                        if let cached = headCache[HeadKey(layer: l, head: h)], cached.signature == signatures[h]! { cachedHeads[h] = cached.output }
                    }
                }
                for x in CircuitGraph.QKV.allCases {
                    for h in 0..<H where !deadHeads.contains(h) && cachedHeads[h] == nil {
                        // A removed direct edge makes the input irrelevant (the ablated value replaces it below).
                        let directEdge = direct[.head(layer: l, head: h, x)]!
                        if (0..<V).allSatisfy({ !states[$0][directEdge] }) { continue }
                        let edges = into[.head(layer: l, head: h, x)] ?? []
                        var signature = (0..<V).map { v in edges.filter { !states[v][$0.edge] }.map(\.sender) }
                        if readOnlyQueries && x == .q { signature.insert([-1], at: 0) }
                        if groups[signature] == nil { order.append(signature) }
                        groups[signature, default: []].append((h, x))
                    }
                }
                for var key in order {
                    let members = groups[key]!
                    let queriesOnly = key.first == [-1]
                    if queriesOnly { key.removeFirst() }
                    // In the start layer the states differ only in the receiver under test: every other receiver's
                    // input is the same in all of them, so it is made, normalised and multiplied once.
                    let shared = start == .attention(layer: l) && key.allSatisfy { $0 == key[0] }
                    // One product per run of adjacent columns.
                    let columns = members.map { $0.x.rawValue * hd + $0.h * d }.sorted()
                    var ranges: [Range<Int>] = []
                    for column in columns {
                        if let last = ranges.last, last.upperBound == column { ranges[ranges.count - 1] = last.lowerBound..<(column + d) } else { ranges.append(column..<(column + d)) }
                    }
                    if queriesOnly {
                        let blocks = shared ? 1 : V, count = blocks * R, out = make(count * 3 * hd)
                        for v in 0..<blocks {
                            receiverInput(.head(layer: l, head: members[0].h, members[0].x), variant: v, atReadRows: true,
                                          ablatedInput: ablatedPre[l], into: inputs + v * R * D)
                        }
                        let n = normalize(inputs, rows: count, parameters: weights.ln1, mean: nil, scale: nil, out: inputs)
                        weights.wQKV.withUnsafeBufferPointer { w in weights.bQKV.withUnsafeBufferPointer { b in
                            for range in ranges {
                                for r in 0..<count { (out + r * 3 * hd + range.lowerBound).update(from: b.baseAddress! + range.lowerBound, count: range.count) }
                                product(m: count, n: range.count, k: D, n, lda: D, w.baseAddress! + range.lowerBound, ldb: 3 * hd,
                                        out + range.lowerBound, ldc: 3 * hd, beta: 1)
                            }
                        } }
                        for v in 0..<V {
                            for i in 0..<R {
                                let from = out + ((shared ? 0 : v) * R + i) * 3 * hd, to = qkvBuffer + (v * rows0 + readRows[i]) * 3 * hd
                                for range in ranges { (to + range.lowerBound).update(from: from + range.lowerBound, count: range.count) }
                            }
                        }
                        continue
                    }
                    let count = shared ? rows0 : rows
                    if shared {
                        receiverInput(.head(layer: l, head: members[0].h, members[0].x), variant: 0, atReadRows: false,
                                      ablatedInput: ablatedPre[l], into: inputs)
                    } else {
                        parallelChunks(V, minimumChunk: 1) { range in
                            for v in range {
                                receiverInput(.head(layer: l, head: members[0].h, members[0].x), variant: v, atReadRows: false,
                                              ablatedInput: ablatedPre[l], into: inputs + v * rows0 * D)
                            }
                        }
                    }
                    let n = normalize(inputs, rows: count, parameters: weights.ln1, mean: nil, scale: nil, out: inputs)
                    if members.count == 3 * H {
                        linear(n, rows: count, width: D, weight: weights.wQKV, bias: weights.bQKV, outWidth: 3 * hd, into: qkvBuffer)
                    } else {
                        weights.wQKV.withUnsafeBufferPointer { w in weights.bQKV.withUnsafeBufferPointer { b in
                            for range in ranges {
                                for r in 0..<count { (qkvBuffer + r * 3 * hd + range.lowerBound).update(from: b.baseAddress! + range.lowerBound, count: range.count) }
                                product(m: count, n: range.count, k: D, n, lda: D, w.baseAddress! + range.lowerBound, ldb: 3 * hd,
                                        qkvBuffer + range.lowerBound, ldc: 3 * hd, beta: 1)
                            }
                        } }
                    }
                    if shared {
                        // Copy state 0's columns to the other states.
                        for v in 1..<max(V, 1) {
                            let out = qkvBuffer + v * rows0 * 3 * hd
                            for (h, x) in members {
                                let column = x.rawValue * hd + h * d
                                for r in 0..<rows0 { (out + r * 3 * hd + column).update(from: qkvBuffer + r * 3 * hd + column, count: d) }
                            }
                        }
                    }
                }
                // Removed direct edges: the ablated q, k or v.
                for v in 0..<V {
                    let out = qkvBuffer + v * rows0 * 3 * hd
                    for x in CircuitGraph.QKV.allCases {
                        for h in 0..<H where !states[v][direct[.head(layer: l, head: h, x)]!] {
                            let column = x.rawValue * hd + h * d
                            ablatedQKV[l].withUnsafeBufferPointer { a in
                                for r in 0..<rows0 { (out + r * 3 * hd + column).update(from: a.baseAddress! + r * 3 * hd + column, count: d) }
                            }
                        }
                    }
                }
                let fixedHeads = (0..<H).filter { !varying.contains($0) && !deadHeads.contains($0) && cachedHeads[$0] == nil }
                let causal = c.attentionDir == .causal
                let queries = last ? readPositions : nil
                if !fixedHeads.isEmpty {
                    Attention.fused(qkv: qkvBuffer, AttentionShape(batch: B, positions: P, heads: H, headDim: d, causal: causal),
                                    attnScale: c.effectiveAttnScale, into: z, heads: fixedHeads, queries: queries)
                }
                if !varying.isEmpty {
                    Attention.fused(qkv: qkvBuffer, AttentionShape(batch: V * B, positions: P, heads: H, headDim: d, causal: causal),
                                    attnScale: c.effectiveAttnScale, into: z, heads: varying.sorted(), queries: queries)
                }
                if last {
                    // The heads' outputs at the read rows only.
                    let zRead = make(V * R * d), out = make(V * R * D)
                    weights.wO.withUnsafeBufferPointer { wO in
                        for h in 0..<H {
                            let s = graph.senderIndex[.head(layer: l, head: h)]!
                            if deadHeads.contains(h) { recordDeadRead(s); continue }
                            if let cached = cachedHeads[h] { recordRead(s, output: cached, shared: true); continue }
                            let blocks = varying.contains(h) ? V : 1
                            for v in 0..<blocks {
                                for i in 0..<R { (zRead + (v * R + i) * d).update(from: z + (v * rows0 + readRows[i]) * hd + h * d, count: d) }
                            }
                            product(m: blocks * R, n: D, k: d, zRead, lda: d, wO.baseAddress! + h * d * D, ldb: D, out, ldc: D)
                            recordRead(s, output: out, shared: blocks == 1)
                            if let signature = signatures[h] { remember(layer: l, head: h, signature: signature, output: out, count: R * D) }
                        }
                    }
                    weights.bO.withUnsafeBufferPointer { b in
                        for r in 0..<(V * R) { vectorAddScaled(readStream + r * D, 1, b.baseAddress!, D) }
                    }
                    lastMLP(l)
                    continue
                }
                // Each head's output z_h·W_O[h] is a sender; the stream gets all of them and b_O.
                let out = make(rows * D)
                weights.wO.withUnsafeBufferPointer { wO in
                    for h in 0..<H {
                        let s = graph.senderIndex[.head(layer: l, head: h)]!
                        if deadHeads.contains(h) {
                            recordDead(s)
                        } else if let cached = cachedHeads[h] {
                            recordShared(s, output: cached)
                        } else if varying.contains(h) {
                            product(m: rows, n: D, k: d, z + h * d, lda: hd, wO.baseAddress! + h * d * D, ldb: D, out, ldc: D)
                            record(s, output: out)
                        } else {
                            product(m: rows0, n: D, k: d, z + h * d, lda: hd, wO.baseAddress! + h * d * D, ldb: D, out, ldc: D)
                            recordShared(s, output: out)
                            if let signature = signatures[h] { remember(layer: l, head: h, signature: signature, output: out, count: rows0 * D) }
                        }
                    }
                }
                weights.bO.withUnsafeBufferPointer { b in
                    for r in 0..<rows { vectorAddScaled(stream + r * D, 1, b.baseAddress!, D) }
                }
            }
            if l == L - 1 {
                // Starting at the last layer's MLP.
                gatherStream()
                lastMLP(l)
                continue
            }
            guard !c.attnOnly else { continue }
            if dead.contains(graph.senderIndex[.mlp(layer: l)]!) {
                recordDead(graph.senderIndex[.mlp(layer: l)]!)
                continue
            }
            let mlpOut = make(rows * D)
            let mlpIn = make(rows * D)
            for v in 0..<V {
                receiverInput(.mlp(layer: l), variant: v, atReadRows: false, ablatedInput: ablatedMid[l], into: mlpIn + v * rows0 * D)
            }
            let n = normalize(mlpIn, rows: rows, parameters: weights.ln2, mean: nil, scale: nil, out: mlpIn)
            weights.wIn.withUnsafeBufferPointer { w in
                product(m: rows, n: c.dMLP, k: D, n, lda: D, w.baseAddress!, ldb: c.dMLP, hidden, ldc: c.dMLP)
            }
            weights.bIn.withUnsafeBufferPointer { b in c.actFn!.apply(hidden, rows: rows, width: c.dMLP, bias: b.baseAddress!) }
            linear(hidden, rows: rows, width: c.dMLP, weight: weights.wOut, bias: weights.bOut, outWidth: D, into: mlpOut)
            record(graph.senderIndex[.mlp(layer: l)]!, output: mlpOut)
        }
        // The output, at the read rows.
        if firstLayer == L { gatherStream() }
        let final = make(V * R * D)
        for v in 0..<V { receiverInput(.output, variant: v, atReadRows: true, ablatedInput: ablatedFinal, into: final + v * R * D) }
        let read = readPositions, readRowCount = V * R
        let n = normalize(final, rows: readRowCount, parameters: model.lnFinal, mean: nil, scale: nil, out: final)
        let indices = metric.logitIndices ?? Array(0..<c.dVocabOut)
        var weight = [Float](repeating: 0, count: D * indices.count)
        if metric.logitIndices == nil {
            weight = model.wU
        } else {
            for i in 0..<D { for (j, vocab) in indices.enumerated() { weight[i * indices.count + j] = model.wU[i * c.dVocabOut + vocab] } }
        }
        let logits = make(readRowCount * indices.count)
        linear(n, rows: readRowCount, width: D, weight: weight, bias: indices.map { model.bU[$0] }, outWidth: indices.count, into: logits)
        var values: [Double] = []
        for v in 0..<V {
            let count = B * read.count * indices.count
            let tensor = Tensor(shape: [B, read.count, indices.count],
                                scalars: Array(UnsafeBufferPointer(start: logits + v * count, count: count)))
            values.append(try metric.evaluate(tensor))
        }
        return values
    }

    // MARK: - Kernels

    /// Layer normalisation as the config says, into `out` (may be `x`). Returns what the next component reads.
    private func normalize(_ x: UnsafeMutablePointer<Float>, rows: Int, parameters: (w: [Float], b: [Float])?,
                           mean: UnsafeMutablePointer<Float>?, scale: UnsafeMutablePointer<Float>?,
                           out: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        guard c.normalization != .none else { return x }
        let m = mean ?? UnsafeMutablePointer<Float>.allocate(capacity: rows), s = scale ?? UnsafeMutablePointer<Float>.allocate(capacity: rows)
        defer { if mean == nil { m.deallocate() }; if scale == nil { s.deallocate() } }
        LayerNorm.statistics(x, rows: rows, width: D, eps: c.eps, mean: m, scale: s)
        if let parameters {
            parameters.w.withUnsafeBufferPointer { w in parameters.b.withUnsafeBufferPointer { b in
                LayerNorm.normalize(x, rows: rows, width: D, mean: m, scale: s, weight: w.baseAddress, bias: b.baseAddress, out: out)
            } }
        } else {
            LayerNorm.normalize(x, rows: rows, width: D, mean: m, scale: s, weight: nil, bias: nil, out: out)
        }
        return out
    }

    /// A matrix product: small ones as one BLAS call (it stays on one thread), large ones split by rows across cores
    /// as single-threaded calls (OpenBLAS's own threads would spin against the element-wise work in between).
    private func product(m: Int, n: Int, k: Int, _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                         _ c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float = 0) {
        if m * n * k < 1 << 22 {
            GEMM.multiply(m: m, n: n, k: k, a, lda: lda, b, ldb: ldb, c, ldc: ldc, beta: beta)
        } else {
            GEMM.multiplySplittingRows(m: m, n: n, k: k, a, lda: lda, b, ldb: ldb, c, ldc: ldc, beta: beta)
        }
    }

    private func linear(_ x: UnsafePointer<Float>, rows: Int, width: Int, weight: [Float], bias: [Float], outWidth: Int,
                        into out: UnsafeMutablePointer<Float>) {
        weight.withUnsafeBufferPointer { w in bias.withUnsafeBufferPointer { b in
            for r in 0..<rows { (out + r * outWidth).update(from: b.baseAddress!, count: outWidth) }
            product(m: rows, n: outWidth, k: width, x, lda: width, w.baseAddress!, ldb: outWidth, out, ldc: outWidth, beta: 1)
        } }
    }
}
