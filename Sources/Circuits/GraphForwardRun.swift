import InterpCore
import InterpModels

extension GraphForward {
    /// What a run computed for a sender from the start on: its output − its ablated output ("delta") and, for outputs
    /// every state shares, its output − its clean output ("change"). At every row (`[rows0, D]` per block) or, in the
    /// last layer, at the read rows (`[R, D]`); one block per state, or one for all.
    struct Computed {
        let delta: UnsafePointer<Float>, change: UnsafePointer<Float>?
        let shared: Bool, read: Bool
    }

    /// One batched run of `V` graph states from a start: its scratch buffers and what it computed per sender. The
    /// layers' steps (`attention`, `mlp`) and the metric (`metricValues`) are called in forward order.
    ///
    /// After the last layer's keys and values only the rows the metric reads matter: from there on the run holds those
    /// rows alone ("read rows", `R` per state, prompt-major as the metric reads them).
    final class Run {
        private let forward: GraphForward
        private let scratch: ScratchPool
        private let states: [[Bool]]
        private let plan: Plan
        /// The first sender the run computes; the ones before it are the clean run's.
        private let firstComputed: Int
        private let V: Int, B: Int, P: Int, rows0: Int, D: Int, H: Int, d: Int, hd: Int, lastLayer: Int
        private let readPositions: [Int], readRows: [Int], R: Int
        /// Per sender, what the run computed or recalled (nil before the start, and for dead senders).
        private var computed: [Computed?]
        /// Scratch over all the run's rows (`rows = V · rows0`): receiver inputs `[rows, D]`, q|k|v `[rows, 3·H·d]`,
        /// the heads' z `[rows, H·d]` and the MLP's hidden activations `[rows, d_mlp]`.
        private let inputs, qkv, z, hidden: UnsafeMutablePointer<Float>

        init(_ forward: GraphForward, states: [[Bool]], plan: Plan, firstComputed: Int) {
            self.forward = forward
            scratch = forward.scratch
            self.states = states
            self.plan = plan
            self.firstComputed = firstComputed
            (V, B, P, rows0, D, H, d, hd) = (states.count, forward.B, forward.P, forward.rows0, forward.D, forward.H, forward.d, forward.hd)
            lastLayer = forward.c.nLayers - 1
            let positions = forward.P, read = forward.metric.positions.resolved(positions: positions)
            readPositions = read
            readRows = (0..<forward.B).flatMap { b in read.map { b * positions + $0 } }
            R = forward.B * read.count
            computed = Array(repeating: nil, count: forward.graph.senders.count)
            let rows = V * rows0
            inputs = scratch.take(rows * D)
            qkv = scratch.take(rows * 3 * hd)
            z = scratch.take(rows * hd)
            hidden = scratch.take(forward.c.attnOnly ? 0 : rows * forward.c.dMLP)
        }

        // MARK: - Receiver inputs

        /// The input of receiver r for state v into `out`, at every row or at the read rows, as whichever sums fewer
        /// terms: its clean input − the clean delta of each removed sender + the change of each present computed
        /// sender; or its ablated input + the delta of each present sender. Called for several states at once.
        private func receiverInput(_ r: Int, state v: Int, atReadRows read: Bool, clean: [Float], ablated: [Float],
                           into out: UnsafeMutablePointer<Float>) {
            let edges = forward.receiverEdges[r], present = states[v]
            var removedCount = 0, presentCount = 0, changedCount = 0
            for (edge, sender) in edges {
                if present[edge] {
                    presentCount += 1
                    if sender >= firstComputed { changedCount += 1 }
                } else {
                    removedCount += 1
                }
            }
            let fromClean = removedCount + changedCount <= presentCount
            (fromClean ? clean : ablated).withUnsafeBufferPointer { base in
                if read {
                    for i in 0..<R { (out + i * D).update(from: base.baseAddress! + readRows[i] * D, count: D) }
                } else {
                    out.update(from: base.baseAddress!, count: rows0 * D)
                }
            }
            // Removed senders first, then present ones, each in edge order.
            if fromClean {
                for (edge, sender) in edges where !present[edge] { addCleanDelta(sender, sign: -1, atReadRows: read, into: out) }
                for (edge, sender) in edges where present[edge] && sender >= firstComputed {
                    accumulate(sender, change: true, state: v, atReadRows: read, into: out)
                }
            } else {
                for (edge, sender) in edges where present[edge] { accumulate(sender, change: false, state: v, atReadRows: read, into: out) }
            }
        }

        /// `out +=` sender s's delta or its change in state v, at every row or at the read rows. Senders before the
        /// start are clean: their delta is `cleanDelta`, their change 0.
        @inline(__always)
        private func accumulate(_ s: Int, change: Bool, state v: Int, atReadRows read: Bool, into out: UnsafeMutablePointer<Float>) {
            guard let values = computed[s] else {
                precondition(s < firstComputed, "sender \(forward.graph.senders[s]) read before it was computed")
                if !change { addCleanDelta(s, sign: 1, atReadRows: read, into: out) }
                return
            }
            let offset = values.shared ? 0 : v * (values.read ? R : rows0) * D
            if !change {
                add(values.delta + offset, sign: 1, keptAtReadRows: values.read, atReadRows: read, into: out)
            } else if let difference = values.change {
                add(difference + offset, sign: 1, keptAtReadRows: values.read, atReadRows: read, into: out)
            } else {
                // change = delta − cleanDelta
                add(values.delta + offset, sign: 1, keptAtReadRows: values.read, atReadRows: read, into: out)
                addCleanDelta(s, sign: -1, atReadRows: read, into: out)
            }
        }

        @inline(__always)
        private func addCleanDelta(_ s: Int, sign: Float, atReadRows read: Bool, into out: UnsafeMutablePointer<Float>) {
            forward.cleanDelta[s].withUnsafeBufferPointer { add($0.baseAddress!, sign: sign, keptAtReadRows: false, atReadRows: read, into: out) }
        }

        /// `out += sign · source`, at every row or at the read rows; a source kept at every row is read at the read
        /// rows.
        @inline(__always)
        private func add(_ source: UnsafePointer<Float>, sign: Float, keptAtReadRows sourceRead: Bool, atReadRows read: Bool,
                         into out: UnsafeMutablePointer<Float>) {
            if read && !sourceRead {
                for i in 0..<R { vectorAddScaled(out + i * D, sign, source + readRows[i] * D, D) }
            } else {
                vectorAddScaled(out, sign, source, (read ? R : rows0) * D)
            }
        }

        /// Receiver r's input into `blocks` blocks of `out` (`[rows0, D]`, or `[R, D]` at the read rows), one per state
        /// or one for all, the states in parallel.
        private func receiverInputs(_ r: Int, blocks: Int, atReadRows read: Bool, clean: [Float], ablated: [Float],
                                    into out: UnsafeMutablePointer<Float>) {
            let blockRows = read ? R : rows0
            parallelChunks(blocks, minimumChunk: 1) { range in
                for v in range { receiverInput(r, state: v, atReadRows: read, clean: clean, ablated: ablated, into: out + v * blockRows * D) }
            }
        }

        // MARK: - Sender outputs

        /// Keeps a computed sender's output (`[rows0, D]` blocks, or `[R, D]` at the read rows; one per state, or one
        /// when every state shares it) as its delta and, when shared, its change. A shared output is kept for later
        /// runs too.
        private func record(_ s: Int, output: UnsafePointer<Float>, shared: Bool, atReadRows read: Bool) {
            let n = (read ? R : rows0) * D
            let delta: UnsafeMutablePointer<Float>, change: UnsafeMutablePointer<Float>?
            if shared && forward.reuseOutputs {
                // Written straight into the kept buffers.
                (delta, change) = forward.keptOutputs.buffers(for: s, key: plan.keys[s]!, count: n)
            } else {
                (delta, change) = (scratch.take((shared ? 1 : V) * n), shared ? scratch.take(n) : nil)
            }
            forward.ablated[s].withUnsafeBufferPointer { a in
                parallelChunks(shared ? 1 : V, minimumChunk: 1) { range in
                    for block in range { difference(output + block * n, a.baseAddress!, atReadRows: read, into: delta + block * n) }
                }
            }
            if let change { forward.clean[s].withUnsafeBufferPointer { difference(output, $0.baseAddress!, atReadRows: read, into: change) } }
            computed[s] = Computed(delta: delta, change: change, shared: shared, read: read)
        }

        /// `out = output − base`, for one block of an output; base is at every row.
        @inline(__always)
        private func difference(_ output: UnsafePointer<Float>, _ base: UnsafePointer<Float>, atReadRows read: Bool,
                                into out: UnsafeMutablePointer<Float>) {
            if read {
                for i in 0..<R { vectorSubtract(output + i * D, base + readRows[i] * D, into: out + i * D, D) }
            } else {
                vectorSubtract(output, base, into: out, rows0 * D)
            }
        }

        /// Uses a sender's output kept from an earlier run, when everything it depends on is the same now.
        private func recall(_ s: Int, atReadRows read: Bool) -> Bool {
            guard forward.reuseOutputs, !plan.senderVaries[s], let kept = forward.keptOutputs.output(of: s, key: plan.keys[s]!) else { return false }
            computed[s] = Computed(delta: kept.delta, change: kept.change, shared: true, read: read)
            return true
        }

        // MARK: - Layers

        /// Layer l's MLP, at every row or (the last layer) at the read rows: not computed when dead; reused from an
        /// earlier run, or computed once, when it is the same in every state; else computed per state.
        func mlp(_ l: Int) {
            let block = forward.model.blocks[l]
            guard let ln2 = block.ln2, let layerMLP = block.mlp else { return }
            let s = forward.graph.senderIndex[.mlp(layer: l)]!, read = l == lastLayer
            if plan.dead[s] || recall(s, atReadRows: read) { return }
            let once = !plan.senderVaries[s], blocks = once ? 1 : V, n = blocks * (read ? R : rows0)
            let mlpIn = scratch.take(n * D), mlpOut = scratch.take(n * D)
            receiverInputs(forward.senderInputs[s][0], blocks: blocks, atReadRows: read, clean: forward.cleanMid[l], ablated: forward.ablatedMid[l],
                           into: mlpIn)
            let normed = ln2.forward(mlpIn, rows: n, out: mlpIn)
            layerMLP.forward(normed, rows: n, hidden: hidden, into: mlpOut, schedule: .rowsAcrossCores)
            record(s, output: mlpOut, shared: once, atReadRows: read)
        }

        /// The heads of a layer the run computes (not dead, not recalled): the ones the same in every state (computed
        /// once, in state 0's rows) and the ones computed per state.
        private struct Heads {
            /// Per head of the layer: its sender, and whether it is computed per state.
            let senders: [Int]
            var varies: [Bool]
            var once: [Int] = [], varying: [Int] = []
            /// Once, then varying.
            var computed: [Int] { once + varying }
        }

        /// Layer l's attention. In the last layer queries are made at the read rows only, and heads' outputs there.
        func attention(_ l: Int) {
            let last = l == lastLayer
            let heads = computedHeads(l, atReadRows: last)
            for (group, members) in headInputGroups(heads, queriesOnly: last && R < rows0) {
                makeHeadInputs(l, group, members, heads)
            }
            ablateDirectEdges(l, heads)
            let attention = forward.model.blocks[l].attention, queries = last ? readPositions : nil
            if !heads.once.isEmpty {
                attention.fused(qkv, batch: B, positions: P, into: z, heads: heads.once, queries: queries)
            }
            if !heads.varying.isEmpty {
                attention.fused(qkv, batch: V * B, positions: P, into: z, heads: heads.varying, queries: queries)
            }
            recordHeadOutputs(l, heads, atReadRows: last)
        }

        private func computedHeads(_ l: Int, atReadRows read: Bool) -> Heads {
            var heads = Heads(senders: (0..<H).map { forward.graph.senderIndex[.head(layer: l, head: $0)]! },
                              varies: [Bool](repeating: false, count: H))
            for (h, s) in heads.senders.enumerated() where !plan.dead[s] && !recall(s, atReadRows: read) {
                if plan.senderVaries[s] {
                    heads.varying.append(h)
                    heads.varies[h] = true
                } else {
                    heads.once.append(h)
                }
            }
            return heads
        }

        /// Head inputs made together: the same senders removed from each in each state, so one input per state
        /// (normalised and multiplied together) serves them all. An input the same in every state is made once.
        private struct HeadInputGroup: Hashable {
            let once: Bool, queriesOnly: Bool
            /// Per state (one when once): the senders removed.
            let removed: [[Int]]
        }

        /// The q, k and v inputs of the computed heads, grouped, in the order their first member was met.
        private func headInputGroups(_ heads: Heads, queriesOnly readOnlyQueries: Bool)
            -> [(group: HeadInputGroup, members: [(h: Int, x: CircuitGraph.QKV)])] {
            var members: [HeadInputGroup: [(h: Int, x: CircuitGraph.QKV)]] = [:], order: [HeadInputGroup] = []
            for x in CircuitGraph.QKV.allCases {
                for h in heads.computed {
                    let r = forward.senderInputs[heads.senders[h]][x.rawValue], once = !plan.receiverVaries[r]
                    let blocks = once ? 1 : V
                    // A removed direct edge makes the input irrelevant (`ablateDirectEdges` puts the ablated value).
                    if (0..<blocks).allSatisfy({ !states[$0][forward.receiverDirect[r]!] }) { continue }
                    let removed = (0..<blocks).map { v in forward.receiverEdges[r].filter { !states[v][$0.edge] }.map(\.sender) }
                    let group = HeadInputGroup(once: once, queriesOnly: readOnlyQueries && x == .q, removed: removed)
                    if members[group] == nil { order.append(group) }
                    members[group, default: []].append((h, x))
                }
            }
            return order.map { ($0, members[$0]!) }
        }

        /// A group's inputs, normalised and multiplied into its members' q, k or v columns of `qkv`: straight in at every
        /// row; at the read rows through scratch, then into place.
        private func makeHeadInputs(_ l: Int, _ group: HeadInputGroup, _ members: [(h: Int, x: CircuitGraph.QKV)], _ heads: Heads) {
            let block = forward.model.blocks[l], first = members[0]
            let read = group.queriesOnly, blocks = group.once ? 1 : V, count = blocks * (read ? R : rows0)
            receiverInputs(forward.senderInputs[heads.senders[first.h]][first.x.rawValue], blocks: blocks, atReadRows: read,
                           clean: forward.cleanPre[l], ablated: forward.ablatedPre[l], into: inputs)
            let normed = block.ln1.forward(inputs, rows: count, out: inputs)
            let products = read ? scratch.take(count * 3 * hd) : qkv
            block.attention.project(normed, rows: count, only: members.map { ($0.x.projection, $0.h) }, into: products, schedule: .rowsAcrossCores)
            if read || (group.once && V > 1) { place(products, of: group, members, layer: l, heads) }
        }

        /// Copies a group's products into `qkv`: the read rows into their rows of each state; inputs made once into
        /// the other states' rows of varying heads.
        private func place(_ products: UnsafePointer<Float>, of group: HeadInputGroup, _ members: [(h: Int, x: CircuitGraph.QKV)],
                           layer l: Int, _ heads: Heads) {
            let attention = forward.model.blocks[l].attention
            let read = group.queriesOnly, blockRows = read ? R : rows0, width = 3 * hd
            for (h, x) in members {
                let column = attention.columns(x.projection, head: h).lowerBound
                for v in 0..<(group.once && !heads.varies[h] ? 1 : V) where read || v > 0 {
                    let block = group.once ? 0 : v
                    for i in 0..<blockRows {
                        let row = read ? readRows[i] : i
                        (qkv + (v * rows0 + row) * width + column).update(from: products + (block * blockRows + i) * width + column, count: d)
                    }
                }
            }
        }

        /// Removed direct edges: the head reads its ablated q, k or v.
        private func ablateDirectEdges(_ l: Int, _ heads: Heads) {
            let attention = forward.model.blocks[l].attention, width = 3 * hd
            forward.ablatedQKV[l].withUnsafeBufferPointer { a in
                for h in heads.computed {
                    for x in CircuitGraph.QKV.allCases {
                        let directEdge = forward.receiverDirect[forward.senderInputs[heads.senders[h]][x.rawValue]]!
                        let column = attention.columns(x.projection, head: h).lowerBound
                        for v in 0..<(heads.varies[h] ? V : 1) where !states[v][directEdge] {
                            let block = qkv + v * rows0 * width
                            for r in 0..<rows0 { (block + r * width + column).update(from: a.baseAddress! + r * width + column, count: d) }
                        }
                    }
                }
            }
        }

        /// Each head's output z_h·W_O[h] is a sender (b_O is in the clean and ablated inputs).
        private func recordHeadOutputs(_ l: Int, _ heads: Heads, atReadRows last: Bool) {
            let attention = forward.model.blocks[l].attention, blockRows = last ? R : rows0
            let zRead = scratch.take(last ? V * R * d : 0), out = scratch.take(V * blockRows * D)
            for h in heads.computed {
                let blocks = heads.varies[h] ? V : 1
                if last {
                    for v in 0..<blocks {
                        for i in 0..<R { (zRead + (v * R + i) * d).update(from: z + (v * rows0 + readRows[i]) * hd + h * d, count: d) }
                    }
                    attention.headOutput(zRead, rows: blocks * R, ldz: d, head: h, into: out, schedule: .rowsAcrossCores)
                } else {
                    attention.headOutput(z + h * d, rows: blocks * rows0, head: h, into: out, schedule: .rowsAcrossCores)
                }
                record(heads.senders[h], output: out, shared: blocks == 1, atReadRows: last)
            }
        }

        // MARK: - Metric

        /// The metric of each state, from the output at the read rows.
        func metricValues() throws -> [Double] {
            let final = scratch.take(V * R * D)
            for v in 0..<V {
                receiverInput(forward.receivers.count - 1, state: v, atReadRows: true, clean: forward.cleanFinal, ablated: forward.ablatedFinal,
                              into: final + v * R * D)
            }
            let normed = forward.model.lnFinal.forward(final, rows: V * R, out: final)
            let width = forward.unembedding.width, count = R * width
            let logits = scratch.take(V * count)
            forward.unembedding.forward(normed, rows: V * R, into: logits, schedule: .rowsAcrossCores)
            return try (0..<V).map { v in
                let tensor = Tensor(shape: [B, readPositions.count, width], scalars: Array(UnsafeBufferPointer(start: logits + v * count, count: count)))
                return try forward.metric.evaluate(tensor)
            }
        }
    }
}
