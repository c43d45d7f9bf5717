import Foundation
import InterpCore
import InterpModels
import InterpTestSupport
import Testing

/// Every model component against its slow Double reference, on odd shapes, with worst-case rounding bounds: an n-term
/// float32 sum of products errs by at most (n+2)·ε·Σ|terms| (the +2 covers the bias and the final rounding).
@Suite struct ComponentTests {
    static let epsilon = Double(Float.ulpOfOne)

    func random(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = SeededRandom(seed: seed)
        return (0..<count).map { _ in rng.nextNormal() * scale }
    }

    /// Per output element of `x · W + b`, the worst-case rounding bound.
    func linearBound(_ layer: Linear, _ x: [Float], rows: Int) -> [Double] {
        var bound = [Double](repeating: 0, count: rows * layer.outWidth)
        for r in 0..<rows {
            for j in 0..<layer.outWidth {
                var sum = abs(Double(layer.bias?[j] ?? 0))
                for i in 0..<layer.inWidth { sum += abs(Double(x[r * layer.inWidth + i]) * Double(layer.weight[i * layer.outWidth + j])) }
                bound[r * layer.outWidth + j] = Double(layer.inWidth + 2) * Self.epsilon * sum
            }
        }
        return bound
    }

    func within(_ got: [Float], _ expected: [Float], _ bound: [Double]) -> String? {
        guard got.count == expected.count else { return "\(got.count) values, expected \(expected.count)" }
        for i in got.indices where !(abs(Double(got[i]) - Double(expected[i])) <= bound[i]) {
            return "[\(i)] \(got[i]) vs \(expected[i]) (bound \(bound[i]))"
        }
        return nil
    }

    /// (rows, in, out): one above the size at which `rowsAcrossCores` splits a product by rows.
    @Test(arguments: [(1, 1, 1), (7, 65, 3), (33, 17, 130), (130, 257, 129)])
    func linearMatchesReference(shape: (Int, Int, Int)) {
        let (rows, n, m) = shape
        let layer = Linear(weight: random(n * m, seed: 1), bias: random(m, seed: 2), inWidth: n, outWidth: m)
        let x = random(rows * n, seed: 3)
        let expected = layer.reference(x, rows: rows), bound = linearBound(layer, x, rows: rows)
        for schedule in [ProductSchedule.library, .rowsAcrossCores] {
            var out = [Float](repeating: .nan, count: rows * m)
            layer.forward(x, rows: rows, into: &out, schedule: schedule)
            #expect(within(out, expected, bound) == nil, "\(shape) \(schedule): \(within(out, expected, bound) ?? "")")
        }
        // Some output columns, into rows wider than the layer's: the rest is left alone.
        let columns = (m / 3)..<max(m / 3 + 1, 2 * m / 3), ldo = m + 3
        var partial = [Float](repeating: 99, count: rows * ldo)
        layer.forward(x, rows: rows, columns: columns, into: &partial, ldo: ldo)
        for r in 0..<rows {
            for j in 0..<ldo {
                let value = partial[r * ldo + j]
                if columns.contains(j) {
                    #expect(abs(Double(value) - Double(expected[r * m + j])) <= bound[r * m + j])
                } else {
                    #expect(value == 99, "column \(j) outside \(columns) written")
                }
            }
        }
        // A gathered layer of chosen columns in a chosen order equals those columns of the full one.
        let chosen = [m - 1, 0, m / 2]
        var gathered = [Float](repeating: .nan, count: rows * 3)
        layer.selecting(columns: chosen).forward(x, rows: rows, into: &gathered)
        for r in 0..<rows {
            for (j, column) in chosen.enumerated() {
                #expect(abs(Double(gathered[r * 3 + j]) - Double(expected[r * m + column])) <= bound[r * m + column])
            }
        }
    }

    @Test func multiplyOfSomeInputsAccumulates() {
        let (rows, n, m) = (5, 11, 7)
        let layer = Linear(weight: random(n * m, seed: 4), bias: random(m, seed: 5), inWidth: n, outWidth: m)
        let x = random(rows * n, seed: 6)
        let inputs = 3..<8
        let start = random(rows * m, seed: 7)
        var out = start
        x.withUnsafeBufferPointer { x in
            layer.multiply(x.baseAddress! + inputs.lowerBound, rows: rows, ldx: n, inputs: inputs, into: &out, accumulate: true)
        }
        for r in 0..<rows {
            for j in 0..<m {
                var sum = Double(start[r * m + j]), absolute = abs(sum)
                for i in inputs {
                    let term = Double(x[r * n + i]) * Double(layer.weight[i * m + j])
                    sum += term
                    absolute += abs(term)
                }
                #expect(abs(Double(out[r * m + j]) - sum) <= Double(inputs.count + 2) * Self.epsilon * absolute)
            }
        }
    }

    @Test(arguments: [Norm.Kind.layerNorm, .layerNormPre, .none], [1, 7, 130])
    func normMatchesReference(kind: Norm.Kind, width: Int) {
        let rows = 9
        let norm = Norm(kind: kind, width: width, eps: 1e-5,
                        weight: kind == .layerNorm ? random(width, seed: 8).map { 1 + 0.3 * $0 } : nil,
                        bias: kind == .layerNorm ? random(width, seed: 9, scale: 0.2) : nil)
        var x = random(rows * width, seed: 10, scale: 3)
        x[0] += 40   // a row far from zero mean
        let expected = norm.reference(x, rows: rows)
        var out = [Float](repeating: .nan, count: rows * width), mean = [Float](repeating: 0, count: rows), scale = mean
        let read = x.withUnsafeBufferPointer { x in
            norm.forward(UnsafeMutablePointer(mutating: x.baseAddress!), rows: rows, mean: &mean, scale: &scale, out: &out)
        }
        if kind == .none {
            #expect(x.withUnsafeBufferPointer { read == UnsafeMutablePointer(mutating: $0.baseAddress!) }, "the identity reads its input")
            return
        }
        // Centring and scaling in float32: relative error a few ε per step, times |w|, plus ε|b|.
        let bound = (0..<(rows * width)).map { i in
            40 * Self.epsilon * (abs(Double(expected.out[i])) + abs(Double(norm.weight?[i % width] ?? 1)) * 4 + abs(Double(norm.bias?[i % width] ?? 0)))
        }
        #expect(within(out, expected.out, bound) == nil, "\(kind) \(width): \(within(out, expected.out, bound) ?? "")")
        #expect(within(scale, expected.scale, expected.scale.map { 8 * Self.epsilon * Double($0) }) == nil)
        // The split steps a hook sits between give the same result.
        var split = [Float](repeating: .nan, count: rows * width)
        norm.statistics(x, rows: rows, mean: &mean, scale: &scale)
        norm.normalize(x, rows: rows, mean: mean, scale: scale, affine: false, out: &split)
        norm.applyAffine(&split, rows: rows)
        #expect(within(split, expected.out, bound) == nil)
    }

    @Test func embeddingMatchesReference() {
        let (vocab, context, D) = (13, 9, 5)
        let embedding = Embedding(tokens: random(vocab * D, seed: 11), positions: random(context * D, seed: 12), dModel: D)
        let ids: [Int32] = [3, 12, 0, 7, 7, 1]   // two sequences of 3
        var out = [Float](repeating: .nan, count: ids.count * D)
        ids.withUnsafeBufferPointer { embedding.forward($0, sequenceLength: 3, firstPosition: 4, into: &out) }
        // One float32 addition per element.
        let expected = embedding.reference(ids.map(Int.init), sequenceLength: 3, firstPosition: 4)
        #expect(out == expected)
        var tokens = out, positions = out
        ids.withUnsafeBufferPointer { embedding.tokenRows($0, into: &tokens) }
        embedding.positionRows(rows: ids.count, sequenceLength: 3, firstPosition: 4, into: &positions)
        #expect(zip(tokens, positions).map { $0 + $1 } == expected)
    }

    @Test(arguments: ActivationFunction.allCases)
    func mlpMatchesReference(activation: ActivationFunction) {
        let (rows, D, F) = (7, 13, 33)
        let mlp = MLP(input: Linear(weight: random(D * F, seed: 13, scale: 0.4), bias: random(F, seed: 14), inWidth: D, outWidth: F),
                      output: Linear(weight: random(F * D, seed: 15, scale: 0.3), bias: random(D, seed: 16), inWidth: F, outWidth: D),
                      activation: activation)
        let x = random(rows * D, seed: 17)
        var hidden = [Float](repeating: .nan, count: rows * F), out = [Float](repeating: .nan, count: rows * D)
        mlp.forward(x, rows: rows, hidden: &hidden, into: &out)
        // The hidden layer's bound, carried through the activation (slope at most 1.13) and the second product, plus
        // the activation's own error (a few ε, and 1e-6 absolute for the tanh approximation of GELU).
        let pre = mlp.input.reference(x, rows: rows), preBound = linearBound(mlp.input, x, rows: rows)
        let post = pre.map { Float(activation.naive(Double($0))) }
        let postBound = (0..<(rows * F)).map { 1.13 * preBound[$0] + 8 * Self.epsilon * abs(Double(post[$0])) + 1e-6 }
        let expected = mlp.output.reference(post, rows: rows), secondBound = linearBound(mlp.output, post, rows: rows)
        let bound = (0..<(rows * D)).map { i -> Double in
            let r = i / D, j = i % D
            return secondBound[i] + (0..<F).reduce(0.0) { $0 + postBound[r * F + $1] * abs(Double(mlp.output.weight[$1 * D + j])) }
        }
        #expect(within(out, expected, bound) == nil, "\(activation): \(within(out, expected, bound) ?? "")")
        // Pre-activations, then the activation (a hook on hook_pre sits between): the same hidden layer.
        var split = [Float](repeating: .nan, count: rows * F)
        mlp.hidden(x, rows: rows, into: &split, activate: false)
        #expect(within(split, pre, preBound) == nil)
        mlp.activate(&split, rows: rows)
        #expect(within(split, post, postBound) == nil)
    }

    /// The packing of TransformerLens's per-head W_Q/W_K/W_V: each head's q, k and v are `x · W[h] + b[h]` in the
    /// columns `columns(_, head:)` names; projecting some blocks writes those alone; the per-head outputs and b_O sum
    /// to the output projection.
    @Test(arguments: [(2, 3, 5), (3, 4, 7)])
    func attentionProjectionsMatchPerHeadReference(shape: (Int, Int, Int)) {
        let (H, d, D) = shape, rows = 6, hd = H * d
        let w = (0..<3).map { random(H * D * d, seed: 20 + UInt64($0)) }, b = (0..<3).map { random(H * d, seed: 30 + UInt64($0)) }
        let attention = SelfAttention(wQ: w[0], wK: w[1], wV: w[2], bQ: b[0], bK: b[1], bV: b[2],
                                      wO: random(hd * D, seed: 40), bO: random(D, seed: 41),
                                      heads: H, headDim: d, dModel: D, causal: true, attnScale: 2)
        let x = random(rows * D, seed: 42)
        let W = attention.qkvWidth
        var reference = [Float](repeating: .nan, count: rows * W), bound = [Double](repeating: 0, count: rows * W)
        for (p, projection) in SelfAttention.Projection.allCases.enumerated() {
            for h in 0..<H {
                let columns = attention.columns(projection, head: h)
                #expect(columns.count == d)
                for r in 0..<rows {
                    for j in 0..<d {
                        var sum = Double(b[p][h * d + j]), absolute = abs(sum)
                        for i in 0..<D {
                            let term = Double(x[r * D + i]) * Double(w[p][(h * D + i) * d + j])
                            sum += term
                            absolute += abs(term)
                        }
                        reference[r * W + columns.lowerBound + j] = Float(sum)
                        bound[r * W + columns.lowerBound + j] = Double(D + 2) * Self.epsilon * absolute
                    }
                }
            }
        }
        #expect(!reference.contains { $0.isNaN }, "the heads' columns cover the q|k|v row")
        var qkv = [Float](repeating: .nan, count: rows * W)
        attention.project(x, rows: rows, into: &qkv)
        #expect(within(qkv, reference, bound) == nil, "\(within(qkv, reference, bound) ?? "")")
        // Some blocks only: the chosen columns as the reference has them, the others untouched.
        let chosen: [(SelfAttention.Projection, head: Int)] = [(.v, H - 1), (.q, 0), (.k, 0), (.q, 1)]
        var some = [Float](repeating: 7, count: rows * W)
        attention.project(x, rows: rows, only: chosen, into: &some)
        let written = Set(chosen.flatMap { Array(attention.columns($0.0, head: $0.head)) })
        for r in 0..<rows {
            for j in 0..<W {
                let i = r * W + j
                if written.contains(j) {
                    #expect(abs(Double(some[i]) - Double(reference[i])) <= bound[i])
                } else {
                    #expect(some[i] == 7, "column \(j) written but not chosen")
                }
            }
        }
        // Σ_h z_h · W_O[h] + b_O = z · W_O + b_O.
        let z = random(rows * hd, seed: 43)
        var whole = [Float](repeating: .nan, count: rows * D), sum = [Float](repeating: 0, count: rows * D)
        attention.project(z: z, rows: rows, into: &whole)
        let expected = attention.output.reference(z, rows: rows), outBound = linearBound(attention.output, z, rows: rows)
        #expect(within(whole, expected, outBound) == nil)
        var head = [Float](repeating: .nan, count: rows * D)
        for h in 0..<H {
            z.withUnsafeBufferPointer { attention.headOutput($0.baseAddress! + h * d, rows: rows, head: h, into: &head) }
            for i in 0..<(rows * D) { sum[i] += head[i] }
        }
        for i in 0..<(rows * D) { sum[i] += attention.output.bias![i % D] }
        // H products of d terms, then H + 1 additions: within (d + H + 3)·ε·Σ|terms|, no more than the one product's
        // (H·d + 2)·ε·Σ|terms| for these shapes.
        #expect(within(sum, expected, outBound) == nil)
    }

    @Test func unembeddingOfSomeColumnsEqualsThoseOfAll() {
        let (rows, D, V) = (4, 9, 23)
        let unembedding = Unembedding(weight: random(D * V, seed: 50), bias: random(V, seed: 51), dModel: D, vocabulary: V)
        let x = random(rows * D, seed: 52)
        var all = [Float](repeating: .nan, count: rows * V)
        unembedding.forward(x, rows: rows, into: &all)
        let expected = unembedding.reference(x, rows: rows), bound = linearBound(unembedding.linear, x, rows: rows)
        #expect(within(all, expected, bound) == nil)
        let chosen = [17, 2, 2, 22]
        let some = unembedding.selecting(chosen)
        #expect(some.width == 4 && some.columns == chosen)
        var logits = [Float](repeating: .nan, count: rows * 4)
        some.forward(x, rows: rows, into: &logits)
        for r in 0..<rows {
            for (j, column) in chosen.enumerated() {
                #expect(abs(Double(logits[r * 4 + j]) - Double(expected[r * V + column])) <= bound[r * V + column])
            }
        }
        // A subset of a subset names the full vocabulary's entries.
        #expect(some.selecting([3, 0]).columns == [22, 17])
    }
}
