@testable import Circuits
import Foundation
import InterpCore
import InterpModels
import InterpTestSupport
import Testing

@Suite struct CircuitGraphTests {
    /// ACDC's graph sizes (`setup_from_model`): 41 edges for 2 layers × 2 heads attention-only (29 addition, 12 direct),
    /// 58 with MLPs, 32,923 for GPT-2 small.
    @Test func edgeCountsAreACDCs() {
        func config(_ layers: Int, _ heads: Int, attnOnly: Bool) -> ModelConfig {
            ModelConfig(modelName: "t", nLayers: layers, dModel: 8 * heads, nHeads: heads, dHead: 8, dMLP: 16, nCtx: 8, dVocab: 10,
                        actFn: attnOnly ? nil : .relu, attnOnly: attnOnly)
        }
        let small = CircuitGraph(config: config(2, 2, attnOnly: true))
        #expect(small.edges.count == 41 && small.additionEdgeCount == 29 && small.directEdgeCount == 12)
        #expect(CircuitGraph(config: config(2, 2, attnOnly: false)).edges.count == 58)
        #expect(CircuitGraph(config: config(12, 12, attnOnly: false)).edges.count == 32_923)
        #expect(CircuitGraph(config: config(2, 2, attnOnly: true), splitEmbeddings: true).edges.count == 41 + 13)
    }

    /// The order ACDC tries edges in, for 2 layers × 2 heads attention-only (read from ACDC's code).
    @Test func edgeOrderIsACDCs() {
        let config = ModelConfig(modelName: "t", nLayers: 2, dModel: 16, nHeads: 2, dHead: 8, dMLP: 16, nCtx: 8, dVocab: 10, actFn: nil, attnOnly: true)
        let order = CircuitGraph(config: config).edges.map { "\($0.destination)<\($0.source)" }
        #expect(Array(order.prefix(11)) == ["output<a1.1", "output<a1.0", "output<a0.1", "output<a0.0", "output<input",
                                            "a1.1<a1.1.v", "a1.0<a1.0.v", "a1.1<a1.1.k", "a1.0<a1.0.k", "a1.1<a1.1.q", "a1.0<a1.0.q"])
        #expect(Array(order[11..<17]) == ["a1.1.v<a0.1", "a1.1.v<a0.0", "a1.1.v<input", "a1.0.v<a0.1", "a1.0.v<a0.0", "a1.0.v<input"])
        #expect(Array(order.suffix(2)) == ["a0.1.q<input", "a0.0.q<input"])
    }
}

@Suite struct GraphForwardTests {
    static let models = ["gpt2-tl", "attn-only", "lnpre-gelu", "noln-relu-bidir", "induction-2l"]

    static func prompts(_ config: ModelConfig, batch: Int = 3, positions: Int = 6) throws -> (TokenBatch, TokenBatch) {
        var rng = SeededRandom(seed: 21)
        let clean = (0..<batch).map { _ in (0..<positions).map { _ in Int(rng.next() % UInt64(config.dVocab)) } }
        var corrupted = clean
        for b in 0..<batch { corrupted[b][2 + b % 3] = (clean[b][2 + b % 3] + 5) % config.dVocab }
        return (try TokenBatch(clean, config: config), try TokenBatch(corrupted, config: config))
    }

    /// The largest KL between two runs of the same distribution. The KL's own rounding (Float exponentials inside a
    /// Double log-sum-exp) is at most about ε ≈ 1.2e-7, and logits that differ only by rounding δ add a second-order
    /// ½δ² (≈ 1e-9 on these models): 1e-6 leaves a margin of eight, and an edge patched wrongly still shows unless its
    /// whole effect is below 1e-6.
    static let sameDistributionKL = 1e-6

    /// How far float32 rounding may move a KL metric of `model` on `prompts` between two correct runs that sum in
    /// other orders (`Float32Rounding`, with the clean logits' scale).
    static func klTolerance(_ model: TransformerModel, _ prompts: TokenBatch) throws -> Double {
        let scale = try model.run(prompts).scalars.map { Double(Swift.abs($0)) }.max() ?? 1
        return Float32Rounding.klDrift(logitDrift: Float32Rounding.logitDrift(model.config, logitScale: scale, positions: prompts.positions))
    }

    /// KL(reference ‖ graph run) at every position.
    static func kl(to reference: Tensor) -> CircuitMetric {
        CircuitMetric.kl(cleanLogits: reference, positions: .these(Array(0..<reference.shape[1])), fastExponentials: true)
    }

    /// Every edge present: the clean model (ACDC's `test_full_correspondence_zero_kl`). Every edge removed: the
    /// corrupted run. Each from every start point the fast path uses.
    @Test(arguments: models)
    func fullGraphIsTheCleanModelAndEmptyGraphTheCorruptedOne(name: String) throws {
        let model = try ModelLoader.load(directory: Fixtures.model(name))
        let (clean, corrupted) = try Self.prompts(model.config)
        let cleanLogits = try model.run(clean), corruptedLogits = try model.run(corrupted)
        let full = try GraphForward(model: model, graph: CircuitGraph(config: model.config), clean: clean, corrupted: corrupted,
                                    ablation: .corrupted, metric: Self.kl(to: cleanLogits))
        let E = full.graph.edges.count
        var starts: [GraphForward.Start] = [.output]
        for l in 0..<model.config.nLayers { starts += [.attention(layer: l)] + (model.config.attnOnly ? [] : [.mlp(layer: l)]) }
        for start in starts {
            let value = try full.evaluate([[Bool](repeating: true, count: E)], from: start)[0]
            #expect(Swift.abs(value) < Self.sameDistributionKL, "\(name) full graph from \(start): KL \(value)")
        }
        let empty = try GraphForward(model: model, graph: CircuitGraph(config: model.config), clean: clean, corrupted: corrupted,
                                     ablation: .corrupted, metric: Self.kl(to: corruptedLogits))
        let value = try empty.evaluate([[Bool](repeating: false, count: E)], from: .attention(layer: 0))[0]
        #expect(Swift.abs(value) < Self.sameDistributionKL, "\(name) empty graph vs corrupted run: KL \(value)")
    }

    /// Removing edges against the same change made with hooks on the ordinary forward pass: all of a head's direct
    /// edges = its q, k and v from the corrupted run; all of a head's outgoing edges = its `hook_result` from the
    /// corrupted run; every edge of the input = the corrupted embeddings. Zero and mean ablation likewise.
    @Test(arguments: ["gpt2-tl", "attn-only", "noln-relu-bidir"])
    func removedEdgesEqualHookedPatches(name: String) throws {
        let model = try ModelLoader.load(directory: Fixtures.model(name))
        let (clean, corrupted) = try Self.prompts(model.config)
        let graph = CircuitGraph(config: model.config)
        let names = (0..<model.config.nLayers).flatMap { l in [HookName(.q, layer: l), HookName(.k, layer: l), HookName(.v, layer: l), HookName(.result, layer: l)] }
            + [HookName(.embed), HookName(.posEmbed)]
        let source = try model.runWithCache(corrupted, names: names).cache
        let (l, h, H) = (model.config.nLayers - 1, 1, model.config.nHeads)
        func patchHead(_ site: HookName.Site, width: Int, values: ActivationCache, scale: Float = 1) -> (HookName, HookFunction) {
            (HookName(site, layer: l), { name, activation in
                let from = values[name]!.scalars
                activation.withUnsafeMutableBufferPointer { a in
                    for row in 0..<(a.count / (H * width)) { for i in 0..<width { a[(row * H + h) * width + i] = scale * from[(row * H + h) * width + i] } }
                }
            })
        }
        func check(_ hooks: [(HookName, HookFunction)], removing remove: (CircuitGraph.Edge) -> Bool, ablation: CircuitAblation = .corrupted,
                   _ label: String) throws {
            let expected = try model.runWithHooks(clean, functions: hooks)
            // Every position, and the last alone (the fast path then computes the last layer's queries, attention and
            // outputs at that position only).
            for metric in [Self.kl(to: expected), CircuitMetric.kl(cleanLogits: expected, positions: [expected.shape[1] - 1], fastExponentials: true)] {
                let forward = try GraphForward(model: model, graph: graph, clean: clean, corrupted: corrupted, ablation: ablation, metric: metric)
                let value = try forward.evaluate([graph.edges.map { !remove($0) }], from: .attention(layer: 0))[0]
                #expect(Swift.abs(value) < Self.sameDistributionKL, "\(name) \(label), positions \(metric.positions): KL \(value)")
            }
        }
        let d = model.config.dHead, D = model.config.dModel
        try check([patchHead(.q, width: d, values: source), patchHead(.k, width: d, values: source), patchHead(.v, width: d, values: source)],
                  removing: { $0.kind == .direct && $0.sender == .head(layer: l, head: h) }, "direct edges of a\(l).\(h)")
        try check([patchHead(.result, width: D, values: source)],
                  removing: { $0.kind == .addition && $0.sender == .head(layer: l, head: h) }, "outgoing edges of a\(l).\(h)")
        try check([patchHead(.result, width: D, values: source, scale: 0)],
                  removing: { $0.kind == .addition && $0.sender == .head(layer: l, head: h) }, ablation: .zero, "outgoing edges of a\(l).\(h), zero")
        try check([(HookName(.embed), { n, a in a = source[n]! }), (HookName(.posEmbed), { n, a in a = source[n]! })],
                  removing: { $0.kind == .addition && $0.sender == .input }, "edges of the input")
        // Mean ablation of the input: the corrupted embeddings averaged over prompts, per position.
        let P = clean.positions, B = clean.batch
        func meanOver(_ t: Tensor) -> Tensor {
            var out = t
            for p in 0..<P { for i in 0..<D {
                let m = (0..<B).reduce(Float(0)) { $0 + t.scalars[($1 * P + p) * D + i] / Float(B) }
                for b in 0..<B { out.scalars[(b * P + p) * D + i] = m }
            } }
            return out
        }
        try check([(HookName(.embed), { n, a in a = meanOver(source[n]!) }), (HookName(.posEmbed), { n, a in a = meanOver(source[n]!) })],
                  removing: { $0.kind == .addition && $0.sender == .input }, ablation: .mean, "edges of the input, mean")
    }
}

extension GraphForwardTests {
    /// Outputs reused from earlier runs and outputs computed once for all of a run's states change nothing: random
    /// graph states run one at a time through one GraphForward (its kept outputs carry over), all in one batch, and
    /// each through a fresh GraphForward give the same metric. The states repeat and shrink as ACDC's do, and also
    /// jump about.
    @Test(arguments: models)
    func keptAndSharedOutputsChangeNothing(name: String) throws {
        let model = try ModelLoader.load(directory: Fixtures.model(name))
        let (clean, corrupted) = try Self.prompts(model.config)
        let graph = CircuitGraph(config: model.config), E = graph.edges.count
        let metric = CircuitMetric.kl(cleanLogits: try model.run(clean), positions: [clean.positions - 1], fastExponentials: true)
        func forward() throws -> GraphForward {
            try GraphForward(model: model, graph: graph, clean: clean, corrupted: corrupted, ablation: .corrupted, metric: metric)
        }
        var rng = SeededRandom(seed: 5)
        var states: [[Bool]] = []
        var shrinking = [Bool](repeating: true, count: E)
        for i in 0..<12 {
            if i % 3 == 2 {
                states.append((0..<E).map { _ in rng.next() % 4 != 0 })   // a jump
            } else {
                for _ in 0..<(E / 10) { shrinking[Int(rng.next() % UInt64(E))] = false }
                states.append(shrinking)
                if i % 4 == 0 { states.append(shrinking) }   // a repeat
            }
        }
        let kept = try forward()
        let oneByOne = try states.map { try kept.evaluate([$0], from: .attention(layer: 0))[0] }
        let batched = try forward().evaluate(states, from: .attention(layer: 0))
        let fresh = try states.map { try forward().evaluate([$0], from: .attention(layer: 0))[0] }
        // Batched rows and kept outputs are summed in other orders than a fresh run's (other GEMM shapes), so the KL
        // may move by the rounding of the logits (sized from the model); a wrong reuse moves it by far more: the
        // states' metrics lie further apart than the tolerance (checked last).
        let tolerance = try Self.klTolerance(model, clean)
        for i in states.indices {
            #expect(Swift.abs(oneByOne[i] - fresh[i]) <= tolerance && Swift.abs(batched[i] - fresh[i]) <= tolerance,
                    "\(name) state \(i): \(oneByOne[i]) one by one, \(batched[i]) batched, \(fresh[i]) fresh (tolerance \(tolerance))")
        }
        let sorted = Set(fresh).sorted()
        let gaps = zip(sorted, sorted.dropFirst()).filter { $1 - $0 > 4 * tolerance }.count
        #expect(gaps >= 3, "\(name): the states should give metrics further apart than the tolerance \(tolerance): \(sorted)")
    }

    /// The KL's fast row terms (Float exponentials, Double sums) against the Double reference.
    @Test func klRowTermsMatchTheDoubleReference() {
        var rng = SeededRandom(seed: 9)
        for n in [1, 7, 8, 13, 512, 1001] {
            let x = (0..<n).map { _ in Float(Int(rng.next() % 2000) - 1000) / 50 }
            let p = (0..<n).map { _ in Double(rng.next() % 1000) / 1000 / Double(n) }
            let fast = x.withUnsafeBufferPointer { x in p.withUnsafeBufferPointer { p in
                CircuitMetric.klRowTerms(x.baseAddress!, probabilities: p.baseAddress!, count: n)
            } }
            let slow = x.withUnsafeBufferPointer { CircuitMetric.logSumExp($0) } - zip(p, x).reduce(0.0) { $0 + $1.0 * Double($1.1) }
            #expect(Swift.abs(fast - slow) < 1e-6 * max(1, Swift.abs(slow)), "n \(n): \(fast) vs \(slow)")
        }
    }
}

@Suite struct ACDCTests {
    /// The fast algorithm makes ACDC's decisions: the same kept edges and the same effects as one forward per edge.
    /// Each case has two τ at which no edge's effect lies within rounding of τ (checked below), one keeping many
    /// edges and one fewer.
    @Test(arguments: [("attn-only", "kl", [1e-3, 3e-3]), ("induction-2l", "kl", [1e-2, 2e-2]), ("gpt2-tl", "kl", [1e-2, 3e-2]),
                      ("gpt2-tl", "logit-diff", [5e-3, 2e-2]), ("lnpre-gelu", "l2", [1e-3, 2e-2]), ("noln-relu-bidir", "kl", [3e-4, 1e-3])])
    func fastEqualsReference(name: String, metricName: String, thresholds: [Double]) throws {
        let model = try ModelLoader.load(directory: Fixtures.model(name))
        let (clean, corrupted) = try GraphForwardTests.prompts(model.config)
        let cleanLogits = try model.run(clean), P = clean.positions
        let metric: CircuitMetric
        switch metricName {
        case "logit-diff": metric = CircuitMetric.logitDifference(answers: [1, 2, 3], wrongs: [4, 5, 6]).negated()
        case "l2": metric = CircuitMetric.l2(cleanLogits: cleanLogits, positions: [P - 2, P - 1], logitIndices: [0, 3, 7])
        default: metric = CircuitMetric.kl(cleanLogits: cleanLogits, positions: [P - 1], fastExponentials: true)
        }
        // Fast and reference sum in other orders, so effects and metrics may differ by the rounding of the logits:
        // a KL or logit difference by twice their drift, an L2 over its 6 entries by √6 times it.
        let logitDrift = Float32Rounding.logitDrift(model.config, logitScale: Double(cleanLogits.scalars.map(Swift.abs).max()!), positions: P)
        let tolerance = metricName == "l2" ? 6.0.squareRoot() * logitDrift : 2 * logitDrift
        for tau in thresholds {
            let slow = try ACDC.reference(model: model, clean: clean, corrupted: corrupted, metric: metric, settings: ACDC.Settings(threshold: tau))
            // The decisions are the same only if no effect lies within rounding of τ (else either is right): the
            // test's τ must not be such a case.
            let closest = slow.effects.compactMap { $0 }.map { Swift.abs($0 - tau) }.min() ?? .infinity
            #expect(closest > 8 * tolerance, "\(name) \(metricName): an edge's effect is within rounding of τ \(tau); pick another τ")
            // Batches of any size (40 rows: two graph states a pass) make the same decisions.
            for maxRows in [8192, 40] {
                let fast = try ACDC.run(model: model, clean: clean, corrupted: corrupted, metric: metric,
                                        settings: ACDC.Settings(threshold: tau, maxRows: maxRows))
                #expect(fast.kept == slow.kept, "\(name) \(metricName) τ \(tau): kept \(fast.keptCount) vs \(slow.keptCount)")
                let worst = zip(fast.effects, slow.effects).map { a, b in
                    switch (a, b) {
                    case let (x?, y?): return Swift.abs(x - y)
                    case (nil, nil): return 0
                    default: return .infinity
                    }
                }.max() ?? 0
                #expect(worst <= 2 * tolerance, "\(name) \(metricName) τ \(tau): max effect difference \(worst) (tolerance \(2 * tolerance))")
                #expect(Swift.abs(fast.circuitMetric - slow.circuitMetric) <= tolerance && Swift.abs(fast.emptyMetric - slow.emptyMetric) <= tolerance)
                // The reference runs one pass per edge tried; the fast path batches them (no fewer passes only when
                // nearly every edge is kept: each kept edge ends a batch).
                if maxRows == 8192 {
                    #expect(slow.forwardPasses == slow.statesRun && fast.forwardPasses <= slow.forwardPasses,
                            "\(name) \(metricName) τ \(tau): \(fast.forwardPasses) passes vs \(slow.forwardPasses)")
                }
            }
        }
    }
}

@Suite struct CircuitTaskTests {
    func write(_ text: String) throws -> String {
        let path = try Fixtures.temporaryDirectory() + "/task.json"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func badTasksAreOneLineErrors() throws {
        let config = try ModelLoader.load(directory: Fixtures.model("induction-2l")).config
        let cases: [(String, String)] = [
            ("[1, 2]", "a task is a JSON object with \"clean\", \"corrupted\", …"),
            ("{\"corrupted\": [[1, 2]]}", "missing \"clean\" (a list of lists of token ids)"),
            ("{\"clean\": [[1, 2], [3]]}", "\"clean\": sequences have different lengths (sequence 0 has 2 tokens, sequence 1 has 1); a batch must be rectangular"),
            ("{\"clean\": [[1, 64]]}", "\"clean\": token id 64 at sequence 0, position 1 is outside the vocabulary (0..<64)"),
            ("{\"clean\": [[1, 2]], \"corrupted\": [[1, 2, 3]]}", "\"clean\" is 1 × 2 tokens but \"corrupted\" is 1 × 3"),
            ("{\"clean\": [[1, 2]], \"answer\": [1, 2]}", "\"answer\" has 2 tokens for 1 prompts (one per prompt)"),
            ("{\"clean\": [[1, 2]], \"wrong\": [99]}", "\"wrong\": token id 99 is outside the vocabulary (0..<64)"),
            ("{\"clean\": [[1, 2]], \"positions\": \"first\"}", "\"positions\" is \"last\", \"all\" or {\"from\": n}"),
            ("{\"clean\": [[1, 2]], \"positions\": {\"from\": 2}}", "\"positions\": from 2 is outside the prompts' 2 positions"),
            ("{\"clean\": [[1, 2]], \"answers\": [1]}", "unknown field \"answers\" (fields: answer, clean, corrupted, logit_indices, positions, wrong)"),
        ]
        for (text, message) in cases {
            let path = try write(text)
            #expect(throws: InterpError(message, file: path)) { try CircuitTask.load(path, config: config) }
        }
        let path = try write("{\"clean\": [[1, 2, 3]], \"corrupted\": [[1, 5, 3]], \"positions\": {\"from\": 1}, \"logit_indices\": [4, 5]}")
        let task = try CircuitTask.load(path, config: config)
        #expect(task.readPositions == [1, 2] && task.logitIndices == [4, 5] && task.corrupted?.rows == [[1, 5, 3]])
        let model = try ModelLoader.load(directory: Fixtures.model("induction-2l"))
        #expect(throws: InterpError("--metric logit-diff needs \"answer\" and \"wrong\" in the task", file: path)) {
            try task.metric("logit-diff", model: model, file: path)
        }
    }
}

@Suite struct InductionCircuitTests {
    /// On the trained induction model ACDC keeps the composition patching shows: a layer-0 head that copies an earlier
    /// token forward feeds a layer-1 head's key (K-composition: the induction head finds where to look) and layer-0
    /// heads feed layer-1 values (what it copies); the circuit keeps most of the behaviour.
    @Test func findsTheInductionEdges() throws {
        let model = try ModelLoader.load(directory: Fixtures.model("induction-2l"))
        struct Prompts: Decodable { let clean: [[Int]]; let corrupted: [[Int]] }
        let prompts = try JSONDecoder().decode(Prompts.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/patching/induction-2l.json")))
        let clean = try TokenBatch(prompts.clean, config: model.config), corrupted = try TokenBatch(prompts.corrupted, config: model.config)
        let metric = CircuitMetric.kl(cleanLogits: try model.run(clean), positions: [clean.positions - 1], fastExponentials: true)
        let result = try ACDC.run(model: model, clean: clean, corrupted: corrupted, metric: metric, settings: ACDC.Settings(threshold: 0.01))
        let kept = result.keptEdges.map { "\($0.source)->\($0.destination)" }
        #expect(kept.contains { $0.hasPrefix("a0.") && $0.contains("->a1.") && $0.hasSuffix(".k") }, "\(kept)")
        #expect(kept.contains { $0.hasPrefix("a0.") && $0.contains("->a1.") && $0.hasSuffix(".v") }, "\(kept)")
        #expect(result.keptCount < result.graph.edges.count / 3)
        #expect(result.circuitMetric < 0.1 * result.emptyMetric, "circuit \(result.circuitMetric), empty \(result.emptyMetric)")
    }
}

/// A model whose weights plant a known circuit, where ACDC must return exactly the planted edges.
///
/// Attention-only, no normalisation, 2 layers × 2 heads (head 1 of each layer all zeros), 8 tokens, 8 positions;
/// the residual stream has four 8-wide blocks: token T, position Pos, copied token C and output O.
/// - a0.0 is a previous-token head: its query and key read positions (p attends to p − 1), its value reads the token
///   and writes it into C.
/// - a1.0 is an induction head: its query reads the current token, its key the copied token C (K-composition with
///   a0.0), its value the token, written into O; the unembedding reads O.
/// With corrupted prompts of other tokens and KL at the last position, the edges that matter are exactly:
/// a1.0 → output; a1.0's three direct edges; input → a1.0.q and → a1.0.v; a0.0 → a1.0.k; a0.0.v → a0.0 and
/// input → a0.0.v. (a0.0's query and key read positions, the same in both runs, so their edges change nothing.)
@Suite struct PlantedCircuitTests {
    static func model() throws -> TransformerModel {
        let V = 8, N = 8, D = 32, H = 2, d = 8
        let config = ModelConfig(modelName: "planted", nLayers: 2, dModel: D, nHeads: H, dHead: d, dMLP: 4 * D, nCtx: N, dVocab: V,
                                 actFn: nil, normalization: .none, attnOnly: true)
        let (T, Pos, C, O) = (0, 8, 16, 24)
        var state: [String: Tensor] = [:]
        for parameter in ParameterTable.expected(for: config) { state[parameter.name] = Tensor(zeros: parameter.shape) }
        func set(_ name: String, _ index: [Int], _ value: Float) {
            var t = state[name]!
            var flat = 0
            for (i, n) in zip(index, t.shape) { flat = flat * n + i }
            t.scalars[flat] = value
            state[name] = t
        }
        for t in 0..<V { set("embed.W_E", [t, T + t], 1) }
        for p in 0..<N { set("pos_embed.W_pos", [p, Pos + p], 1) }
        let sharp: Float = 40   // attention logits before the 1/√d scale
        // a0.0: query e_p, key e_{j+1}: position p attends to p − 1. Value: the token, out into C.
        for p in 0..<N { set("blocks.0.attn.W_Q", [0, Pos + p, p], sharp) }
        for j in 0..<(N - 1) { set("blocks.0.attn.W_K", [0, Pos + j, j + 1], 1) }
        for t in 0..<V { set("blocks.0.attn.W_V", [0, T + t, t], 1); set("blocks.0.attn.W_O", [0, t, C + t], 1) }
        // a1.0: query the token, key the copied token; value the token, out into O.
        for t in 0..<V {
            set("blocks.1.attn.W_Q", [0, T + t, t], sharp)
            set("blocks.1.attn.W_K", [0, C + t, t], 1)
            set("blocks.1.attn.W_V", [0, T + t, t], 1)
            set("blocks.1.attn.W_O", [0, t, O + t], 1)
            set("unembed.W_U", [O + t, t], 10)
        }
        return try TransformerModel(config: config, stateDict: state, sourceFormat: "planted")
    }

    @Test func acdcReturnsExactlyThePlantedEdges() throws {
        let model = try Self.model()
        // Repeated segments: the last token's earlier occurrence is followed by the answer. Corrupted: other tokens.
        let clean = try TokenBatch([[1, 2, 3, 4, 5, 1, 2, 3], [6, 0, 7, 2, 4, 6, 0, 7], [2, 7, 5, 0, 3, 2, 7, 5]], config: model.config)
        let corrupted = try TokenBatch([[4, 6, 0, 1, 7, 0, 5, 6], [3, 5, 1, 6, 2, 1, 3, 4], [1, 0, 6, 4, 6, 5, 4, 3]], config: model.config)
        let cleanLogits = try model.run(clean)
        // The planted model does induction: the clean prompts' answers are predicted.
        for (b, answer) in [4, 2, 0].enumerated() {
            let row = Array(cleanLogits.scalars[((b * 8 + 7) * 8)..<((b * 8 + 8) * 8)])
            #expect(row.firstIndex(of: row.max()!) == answer)
        }
        let metric = CircuitMetric.kl(cleanLogits: cleanLogits, positions: [7], fastExponentials: true)
        let expected: Set = ["a1.0->output", "a1.0.q->a1.0", "a1.0.k->a1.0", "a1.0.v->a1.0", "input->a1.0.q", "input->a1.0.v",
                             "a0.0->a1.0.k", "a0.0.v->a0.0", "input->a0.0.v"]
        for batched in [true, false] {
            let settings = ACDC.Settings(threshold: 1e-3)
            let result = batched ? try ACDC.run(model: model, clean: clean, corrupted: corrupted, metric: metric, settings: settings)
                                 : try ACDC.reference(model: model, clean: clean, corrupted: corrupted, metric: metric, settings: settings)
            let kept = Set(result.keptEdges.map { "\($0.source)->\($0.destination)" })
            #expect(kept == expected, "batched \(batched): extra \(kept.subtracting(expected)), missing \(expected.subtracting(kept))")
            #expect(result.circuitMetric < GraphForwardTests.sameDistributionKL && result.emptyMetric > 1)
        }
    }
}

/// Against real auto-circuit 1.0.1 (fixtures/make_circuits.py): its ACDC on its graph (our addition edges; no direct
/// edges, so ours stay present), in the order it tried the edges, with its rule (remove when KL − KL at the last
/// removal < τ, starting from 0). Replaying that order with interp's edge-patched forward gives its KL after every
/// trial and its kept edges at every τ, on the planted model and on the trained induction model. interp's own ACDC
/// (ACDC's order) keeps the same addition edges on the planted model.
@Suite struct AutoCircuitTests {
    struct Record: Decodable {
        let taus: [Double]
        let clean: [[Int]]
        let corrupted: [[Int]]
        let edge_order: [[String]]
        let kept: [String: [[String]]]
        let trace: [String: [Double]]
    }

    @Test(arguments: ["planted-induction", "induction-2l"])
    func replayingAutoCircuitsOrderGivesItsResult(name: String) throws {
        let record = try JSONDecoder().decode(Record.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.root + "/circuits/\(name).json")))
        let model = try ModelLoader.load(directory: Fixtures.model(name))
        let clean = try TokenBatch(record.clean, config: model.config), corrupted = try TokenBatch(record.corrupted, config: model.config)
        let metric = CircuitMetric.kl(cleanLogits: try model.run(clean), positions: [clean.positions - 1], fastExponentials: true)
        let graph = CircuitGraph(config: model.config)
        let forward = try GraphForward(model: model, graph: graph, clean: clean, corrupted: corrupted, ablation: .corrupted, metric: metric)
        let index = Dictionary(uniqueKeysWithValues: graph.edges.enumerated().filter { $0.element.kind == .addition }
            .map { ("\($0.element.source)->\($0.element.destination)", $0.offset) })
        let order = try record.edge_order.map { try #require(index["\($0[0])->\($0[1])"], "no edge \($0)") }
        #expect(order.count == graph.additionEdgeCount && Set(order).count == order.count)
        for tau in record.taus {
            let key = record.trace.keys.first { Double($0) == tau }!
            var present = [Bool](repeating: true, count: graph.edges.count)
            var previous = 0.0, trace: [Double] = []
            for e in order {
                var state = present
                state[e] = false
                let value = try forward.evaluate([state], from: .attention(layer: 0))[0]
                trace.append(value)
                if value - previous < tau {
                    present[e] = false
                    previous = value
                }
            }
            let theirs = record.trace[key]!
            let worst = zip(trace, theirs).map { Swift.abs($0 - $1) }.max() ?? 0
            #expect(worst < 1e-4, "\(name) τ \(tau): KL after each trial differs from auto-circuit's by up to \(worst)")
            let kept = Set(order.filter { present[$0] }.map { "\(graph.edges[$0].source)->\(graph.edges[$0].destination)" })
            let expected = Set(record.kept[key]!.map { "\($0[0])->\($0[1])" })
            #expect(kept == expected, "\(name) τ \(tau): extra \(kept.subtracting(expected)), missing \(expected.subtracting(kept))")
        }
        if name == "planted-induction" {
            // The planted circuit does not depend on the order: interp's ACDC keeps auto-circuit's edges (plus the
            // direct edges auto-circuit's graph does not have), and the exported model is the one built in Swift.
            let ours = try ACDC.run(model: model, clean: clean, corrupted: corrupted, metric: metric, settings: ACDC.Settings(threshold: 1e-3))
            let addition = Set(ours.keptEdges.filter { $0.kind == .addition }.map { "\($0.source)->\($0.destination)" })
            #expect(addition == Set(record.kept[record.kept.keys.first!]!.map { "\($0[0])->\($0[1])" }))
            let built = try PlantedCircuitTests.model()
            #expect(try built.run(clean).scalars == model.run(clean).scalars)
        }
    }
}
