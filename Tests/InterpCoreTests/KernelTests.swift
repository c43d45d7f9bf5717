import Foundation
import InterpCore
import InterpTestSupport
import Testing

/// Every fast kernel against its slow reference, on odd shapes as well as round ones.
@Suite struct KernelTests {
    static let oddSizes = [1, 7, 65, 130]

    func random(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = SeededRandom(seed: seed)
        return (0..<count).map { _ in rng.nextNormal() * scale }
    }

    @Test(arguments: [(1, 1, 1), (7, 65, 3), (65, 7, 130), (33, 129, 17), (4, 0, 5)])
    func gemmMatchesNaive(shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // Row strides one wider than needed, so leading dimensions are exercised too.
            let lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 1, ldc = n + 2
            let a = random((ta ? k : m) * lda, seed: 1), b = random((tb ? n : k) * ldb, seed: 2)
            var fast = random(m * ldc, seed: 3), slow = fast
            a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in
                fast.withUnsafeMutableBufferPointer { c in
                    GEMM.multiply(m: m, n: n, k: k, a.baseAddress!, lda: lda, transposeA: ta, b.baseAddress!, ldb: ldb,
                                  transposeB: tb, c.baseAddress!, ldc: ldc, alpha: 0.7, beta: 0.3)
                }
                slow.withUnsafeMutableBufferPointer { c in
                    GEMM.naive(m: m, n: n, k: k, a.baseAddress!, lda: lda, transposeA: ta, b.baseAddress!, ldb: ldb,
                               transposeB: tb, c.baseAddress!, ldc: ldc, alpha: 0.7, beta: 0.3)
                }
            } }
            let result = compare(fast, slow, atol: 1e-5, rtol: 1e-5)
            #expect(result.passed, "m=\(m) n=\(n) k=\(k) transA=\(ta) transB=\(tb): \(result)")
        }
    }

    @Test(arguments: [(1, 1), (7, 65), (130, 3)])
    func columnSumsMatchNaive(shape: (Int, Int)) {
        let (rows, cols) = shape
        let a = random(rows * cols, seed: 9)
        var sums = random(cols, seed: 10)
        let start = sums
        sums.withUnsafeMutableBufferPointer { GEMM.columnSums(a, rows: rows, cols: cols, into: $0.baseAddress!, accumulate: true) }
        let expected = (0..<cols).map { j in Float((0..<rows).reduce(Double(start[j])) { $0 + Double(a[$1 * cols + j]) }) }
        #expect(compare(sums, expected, atol: 1e-5, rtol: 1e-5).passed)
        sums.withUnsafeMutableBufferPointer { GEMM.columnSums(a, rows: rows, cols: cols, into: $0.baseAddress!) }
        #expect(compare(sums, expected.enumerated().map { $0.element - start[$0.offset] }, atol: 1e-5, rtol: 1e-5).passed)
    }

    @Test(arguments: oddSizes)
    func layerNormMatchesNaive(width: Int) {
        let rows = 9
        let x = random(rows * width, seed: UInt64(width), scale: 3).enumerated().map { $0.element + Float($0.offset % 5) }
        let w = random(width, seed: 11), b = random(width, seed: 12)
        for affine in [true, false] {
            let reference = LayerNorm.naive(x, rows: rows, width: width, eps: 1e-5, weight: affine ? w : nil, bias: affine ? b : nil)
            var mean = [Float](repeating: 0, count: rows), scale = mean
            var out = [Float](repeating: 0, count: rows * width)
            LayerNorm.statistics(x, rows: rows, width: width, eps: 1e-5, mean: &mean, scale: &scale)
            w.withUnsafeBufferPointer { w in b.withUnsafeBufferPointer { b in
                LayerNorm.normalize(x, rows: rows, width: width, mean: mean, scale: scale,
                                    weight: affine ? w.baseAddress : nil, bias: affine ? b.baseAddress : nil, out: &out)
            } }
            #expect(compare(scale, reference.scale, atol: 1e-5, rtol: 1e-5).passed)
            let result = compare(out, reference.out, atol: 1e-4, rtol: 1e-5)
            #expect(result.passed, "width \(width) affine \(affine): \(result)")
        }
    }

    @Test(arguments: ActivationFunction.allCases)
    func activationMatchesNaive(function: ActivationFunction) {
        var inputs = stride(from: -30, through: 30, by: 0.0137).map { Float($0) }
        inputs += [0, -0, 1e-8, -1e-8, 88, -88, 100, -100, 1e4, -1e4]
        var fast = inputs
        function.apply(&fast, count: fast.count)
        let slow = inputs.map { Float(function.naive(Double($0))) }
        let result = compare(fast, slow, atol: 2e-6, rtol: 2e-6)
        #expect(result.passed, "\(function): \(result)")
    }

    @Test(arguments: ActivationFunction.allCases)
    func fusedBiasActivationMatchesSeparatePasses(function: ActivationFunction) {
        let rows = 5, width = 67
        let x = random(rows * width, seed: 21, scale: 3), bias = random(width, seed: 22)
        var fused = x
        function.apply(&fused, rows: rows, width: width, bias: bias)
        let expected = x.enumerated().map { Float(function.naive(Double($0.element + bias[$0.offset % width]))) }
        #expect(compare(fused, expected, atol: 2e-6, rtol: 2e-6).passed)
    }

    @Test func vectorExpMatchesLibm() {
        var worst: Float = 0
        for x in stride(from: -87.0, through: 88.0, by: 0.0731).map({ Float($0) }) {
            let v = vectorExp(Lanes(repeating: x))[3]
            worst = max(worst, Swift.abs(v - expf(x)) / expf(x))
        }
        #expect(worst < 4e-7, "worst relative error \(worst)")
        #expect(vectorExp(Lanes(repeating: -.infinity))[0] == 0)
        #expect(vectorExp(Lanes(repeating: -200))[0] == 0)
        #expect(vectorExp(Lanes(repeating: 0))[0] == 1)
    }

    @Test func vectorTanhMatchesLibm() {
        var worst: Float = 0
        for x in stride(from: -20.0, through: 20.0, by: 0.0173).map({ Float($0) }) {
            worst = max(worst, Swift.abs(vectorTanh(Lanes(repeating: x))[5] - tanhf(x)))
        }
        #expect(worst < 3e-7, "worst absolute error \(worst)")
    }

    @Test func vectorSubtractIsElementwise() {
        for count in [0, 1, 7, 8, 9, 100] {
            let x = random(count, seed: UInt64(count)), y = random(count, seed: UInt64(count) + 50)
            var out = [Float](repeating: .nan, count: count)
            x.withUnsafeBufferPointer { x in y.withUnsafeBufferPointer { y in out.withUnsafeMutableBufferPointer { o in
                if count > 0 { vectorSubtract(x.baseAddress!, y.baseAddress!, into: o.baseAddress!, count) }
            } } }
            #expect(out == zip(x, y).map { $0 - $1 })
        }
    }

    @Test func vectorSumMatchesDouble() {
        for count in [0, 1, 7, 15, 16, 17, 1000] {
            let x = random(count, seed: UInt64(count))
            let expected = x.reduce(0.0) { $0 + Double($1) }
            #expect(Swift.abs(Double(vectorSum(x, count)) - expected) < 1e-4)
        }
    }

    @Test(arguments: [(1, 1, 1, 1), (2, 7, 3, 5), (3, 13, 2, 16), (1, 65, 4, 8)], [true, false])
    func attentionMatchesNaive(dims: (Int, Int, Int, Int), causal: Bool) {
        let (batch, positions, heads, headDim) = dims
        let shape = AttentionShape(batch: batch, positions: positions, heads: heads, headDim: headDim, causal: causal)
        let qkv = random(batch * positions * shape.qkvWidth, seed: 5, scale: 2)
        let reference = Attention.naive(qkv: qkv, shape, attnScale: 2.5)
        var scores = [Float](repeating: 0, count: shape.patternCount)
        var z = [Float](repeating: 0, count: batch * positions * shape.zWidth)
        Attention.scores(qkv: qkv, shape, attnScale: 2.5, into: &scores)
        #expect(compare(scores, reference.scores, atol: 1e-5, rtol: 1e-5).passed)
        var shortcut = scores
        Attention.softmax(&scores, rows: batch * heads * positions, width: positions)
        #expect(compare(scores, reference.pattern, atol: 1e-6, rtol: 1e-5).passed)
        if causal {
            Attention.softmax(&shortcut, rows: batch * heads * positions, width: positions, causalBlock: positions)
            let same = compare(shortcut, scores, atol: 1e-7, rtol: 1e-6)
            #expect(same.passed, "causal shortcut vs full softmax: \(same)")
        }
        Attention.mix(pattern: scores, qkv: qkv, shape, into: &z)
        let result = compare(z, reference.z, atol: 1e-5, rtol: 1e-5)
        #expect(result.passed, "\(dims) causal \(causal): \(result)")
    }

    @Test func softmaxOfFullyMaskedRowIsZero() {
        var row: [Float] = [-.infinity, -.infinity, -.infinity]
        Attention.softmax(&row, rows: 1, width: 3)
        #expect(row == [0, 0, 0])
    }
}

@Suite struct TensorTests {
    @Test func stridesSubscriptAndSlice() {
        var t = Tensor(shape: [2, 3, 4], scalars: (0..<24).map(Float.init))
        #expect(t.strides == [12, 4, 1])
        #expect(t[1, 2, 3] == 23)
        t[0, 1, 2] = -1
        #expect(t.scalars[6] == -1)
        let s = t.slice(1..<2)
        #expect(s.shape == [1, 3, 4] && s.scalars.first == 12)
        #expect(t.reshaped([6, 4]).shape == [6, 4])
    }

    @Test func seededRandomIsReproducibleAndNormal() {
        var a = SeededRandom(seed: 42), b = SeededRandom(seed: 42)
        #expect((0..<10).map { _ in a.next() } == (0..<10).map { _ in b.next() })
        var rng = SeededRandom(seed: 7)
        let xs = (0..<100_000).map { _ in Double(rng.nextNormal()) }
        let mean = xs.reduce(0, +) / Double(xs.count)
        let variance = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)
        #expect(Swift.abs(mean) < 0.02 && Swift.abs(variance - 1) < 0.02)
    }

    @Test func errorsPrintAsOneLineNamingTheFile() {
        let error = InterpError("bad\nthing", file: "a/b.json")
        #expect(error.description == "a/b.json: bad thing")
        #expect(InterpError("x").inFile("f").description == "f: x")
        #expect(error.inFile("other").file == "a/b.json")
    }

    @Test func atomicWriteLeavesNothingBehindOnFailure() throws {
        let dir = try Fixtures.temporaryDirectory()
        let path = dir + "/out.bin"
        struct Boom: Error {}
        #expect(throws: Boom.self) {
            try AtomicFile.write(to: path) { sink in
                try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try sink($0) }
                throw Boom()
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
        try AtomicFile.write(Data([1, 2, 3]), to: path)
        #expect(FileManager.default.contents(atPath: path) == Data([1, 2, 3]))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["out.bin"])
    }
}

/// LAPACK's symmetric eigensolver against Jacobi rotations in Double, and against its own definition.
@Suite struct SymmetricEigenTests {
    @Test(arguments: [1, 2, 7, 33])
    func matchesJacobiAndTheDefinition(n: Int) throws {
        var rng = SeededRandom(seed: UInt64(n))
        let m = (0..<(n * n)).map { _ in rng.nextNormal() }
        var a = [Float](repeating: 0, count: n * n)      // symmetric, with a spread of eigenvalues
        for i in 0..<n { for j in 0..<n { for k in 0..<n { a[i * n + j] += m[i * n + k] * m[j * n + k] } } }
        let (values, vectors) = try SymmetricEigen.decompose(a, n: n)
        let reference = SymmetricEigen.naive(a, n: n)
        let scale = Double(values.last!)
        for k in 0..<n {
            #expect(abs(Double(values[k]) - reference.values[k]) <= 1e-5 * scale, "value \(k)")
            if k > 0 { #expect(values[k] >= values[k - 1]) }
            // A·v = λ·v and ‖v‖ = 1; v agrees with Jacobi's up to sign where the eigenvalue is well separated.
            var residual = 0.0, norm = 0.0
            for i in 0..<n {
                var av = 0.0
                for j in 0..<n { av += Double(a[i * n + j]) * Double(vectors[k * n + j]) }
                residual = max(residual, abs(av - Double(values[k]) * Double(vectors[k * n + i])))
                norm += Double(vectors[k * n + i]) * Double(vectors[k * n + i])
            }
            #expect(residual <= 1e-4 * scale && abs(norm - 1) < 1e-5, "vector \(k): residual \(residual)")
            let gap = min(k > 0 ? reference.values[k] - reference.values[k - 1] : .infinity,
                          k < n - 1 ? reference.values[k + 1] - reference.values[k] : .infinity)
            if gap > 1e-2 * scale {
                let dot = (0..<n).reduce(0.0) { $0 + Double(vectors[k * n + $1]) * reference.vectors[k * n + $1] }
                #expect(abs(abs(dot) - 1) < 1e-3, "vector \(k) vs Jacobi: |cos| \(abs(dot))")
            }
        }
    }
}

/// The row-wise attention kernel (`Attention.attend`, and `fused` built on it, which ACDC's graph forward runs) against
/// the Double reference, with worst-case rounding bounds.
@Suite struct RowAttentionTests {
    static let epsilon = Double(Float.ulpOfOne)

    func random(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
        var rng = SeededRandom(seed: seed)
        return (0..<count).map { _ in rng.nextNormal() * scale }
    }

    /// Worst-case bounds on one query's pattern and output. A score (a d-term dot product, then a scaling) errs by at
    /// most (d+2)ε·Σ|q_i k_i|/scale, and subtracting the row's maximum adds ε·(|s_k| + |s_max|): δ in all. The
    /// softmax of scores off by at most δ is off by a factor within exp(±2δ)·(1 ± (p+8)ε) (exp ≈ 2 ulp, the sum p
    /// terms, the division). The mix adds (p+2)ε·Σ p_k|v_k|.
    func bounds(query: [Float], keys: [[Float]], values: [[Float]], pattern: [Float], causal: Bool, q: Int, attnScale: Float)
        -> (pattern: [Double], out: [Double]) {
        let p = keys.count, valid = causal ? q + 1 : p, eps = Self.epsilon
        var scores: [Double] = [], absolutes: [Double] = []
        for k in 0..<valid {
            var dot = 0.0, absolute = 0.0
            for (x, y) in zip(query, keys[k]) {
                dot += Double(x) * Double(y)
                absolute += abs(Double(x) * Double(y))
            }
            scores.append(dot / Double(attnScale))
            absolutes.append(absolute / Double(attnScale))
        }
        let maximum = scores.map { abs($0) }.max() ?? 0
        var delta = 0.0
        for k in 0..<valid {
            delta = max(delta, Double(query.count + 2) * eps * absolutes[k] + eps * (abs(scores[k]) + maximum))
        }
        let factor = Foundation.exp(2 * delta) * (1 + Double(p + 8) * eps) - 1
        let patternBound = pattern.map { Double($0) * factor + eps }
        var out: [Double] = []
        for i in 0..<(values.first?.count ?? 0) {
            var sum = 0.0
            for k in 0..<p {
                let weightBound = patternBound[k] + Double(p + 2) * eps * Double(pattern[k])
                sum += weightBound * abs(Double(values[k][i]))
            }
            out.append(sum)
        }
        return (patternBound, out)
    }

    @Test(arguments: [(1, 1, 1, 1), (2, 7, 3, 5), (3, 13, 2, 16), (1, 33, 4, 8)], [true, false])
    func fusedMatchesNaive(dims: (Int, Int, Int, Int), causal: Bool) {
        let (batch, p, heads, d) = dims
        let shape = AttentionShape(batch: batch, positions: p, heads: heads, headDim: d, causal: causal)
        let ld = shape.qkvWidth, hd = shape.zWidth
        let qkv = random(batch * p * ld, seed: 9, scale: 2)
        // Every other head and every third query (from the last), as ACDC's graph forward asks for some of each.
        let chosenHeads = Array(stride(from: heads - 1, through: 0, by: -2)), queries = Array(stride(from: p - 1, through: 0, by: -3))
        let sentinel: Float = 1234
        var z = [Float](repeating: sentinel, count: batch * p * hd)
        Attention.fused(qkv: qkv, shape, attnScale: 2.5, into: &z, heads: chosenHeads, queries: queries)
        var failures: [String] = []
        for b in 0..<batch {
            for h in 0..<heads {
                func row(_ r: Int, _ offset: Int) -> [Float] { Array(qkv[((b * p + r) * ld + offset + h * d)..<((b * p + r) * ld + offset + h * d + d)]) }
                let keys = (0..<p).map { row($0, hd) }, values = (0..<p).map { row($0, 2 * hd) }
                for q in 0..<p {
                    let got = Array(z[((b * p + q) * hd + h * d)..<((b * p + q) * hd + h * d + d)])
                    guard chosenHeads.contains(h) && queries.contains(q) else {
                        if got.contains(where: { $0 != sentinel }) { failures.append("b\(b) h\(h) q\(q) written but not asked for") }
                        continue
                    }
                    let reference = Attention.attendNaive(queries: [row(q, 0)], queryPositions: [q], keys: keys, values: values,
                                                          causal: causal, attnScale: 2.5)
                    let bound = bounds(query: row(q, 0), keys: keys, values: values, pattern: reference.pattern[0], causal: causal, q: q, attnScale: 2.5)
                    for i in 0..<d where abs(Double(got[i]) - Double(reference.out[0][i])) > bound.out[i] {
                        failures.append("b\(b) h\(h) q\(q) [\(i)]: \(got[i]) vs \(reference.out[0][i]) (bound \(bound.out[i]))")
                    }
                }
            }
        }
        #expect(failures.isEmpty, "\(failures.prefix(5))")
    }

    /// Keys and values from two places (a prefix kept elsewhere, then the sequence's own rows), grouped key/value
    /// heads, and the two split steps with a pattern edit in between.
    @Test(arguments: [(5, 2, 0), (9, 3, 4), (6, 1, 5)], [true, false])
    func attendOverAPrefixMatchesNaive(dims: (Int, Int, Int), causal: Bool) {
        let (p, groupSize, split) = dims
        let heads = 2 * groupSize, kvHeads = 2, d = 3, sequences = 2
        let qWidth = heads * d, kvWidth = kvHeads * d, ownStride = qWidth + 2 * kvWidth
        // Own rows hold positions split..<p as [q | k | v]; the prefix holds k and v of positions 0..<split as [k | v].
        let own = random(sequences * (p - split) * ownStride, seed: 21, scale: 1.5)
        let prefix = random(sequences * max(split, 1) * 2 * kvWidth, seed: 22, scale: 1.5)
        var out = [Float](repeating: 0, count: sequences * p * qWidth)
        var pattern = [Float](repeating: 0, count: sequences * p * heads * p)
        var together = out, togetherPattern = pattern
        func run(_ step: Attention.Step, out: UnsafeMutablePointer<Float>, pattern: UnsafeMutablePointer<Float>) {
            own.withUnsafeBufferPointer { own in prefix.withUnsafeBufferPointer { prefix in
                Attention.attend(sequences: sequences, heads: Array(0..<heads), headDim: d, positions: p, causal: causal,
                                 attnScale: 1.7, groupSize: groupSize, step: step) { s in
                    let rows = own.baseAddress! + s * (p - split) * ownStride, kept = prefix.baseAddress! + s * max(split, 1) * 2 * kvWidth
                    return AttentionSequence(
                        keyValues: KeyValueSource(prefixKeys: kept, prefixValues: kept + kvWidth, prefixStride: 2 * kvWidth, split: split,
                                                  keys: rows + qWidth, values: rows + qWidth + kvWidth, stride: ownStride),
                        queries: PositionRows(rows, first: split, stride: ownStride),
                        output: PositionRows(out + s * p * qWidth, first: 0, stride: qWidth),
                        pattern: PositionRows(pattern + s * p * heads * p, first: 0, stride: heads * p),
                        queryRange: split..<p)
                }
            } }
        }
        run(.pattern, out: &out, pattern: &pattern)
        run(.mix, out: &out, pattern: &pattern)
        var failures: [String] = []
        for s in 0..<sequences {
            for h in 0..<heads {
                let kv = h / groupSize
                func ownRow(_ position: Int, _ offset: Int, _ width: Int) -> [Float] {
                    let start = (s * (p - split) + position - split) * ownStride + offset
                    return Array(own[start..<(start + width)])
                }
                func keptRow(_ position: Int, _ offset: Int) -> [Float] {
                    let start = (s * max(split, 1) + position) * 2 * kvWidth + offset + kv * d
                    return Array(prefix[start..<(start + d)])
                }
                let keys = (0..<p).map { $0 < split ? keptRow($0, 0) : ownRow($0, qWidth + kv * d, d) }
                let values = (0..<p).map { $0 < split ? keptRow($0, kvWidth) : ownRow($0, qWidth + kvWidth + kv * d, d) }
                for q in split..<p {
                    let query = ownRow(q, h * d, d)
                    let reference = Attention.attendNaive(queries: [query], queryPositions: [q], keys: keys, values: values,
                                                          causal: causal, attnScale: 1.7)
                    let bound = bounds(query: query, keys: keys, values: values, pattern: reference.pattern[0], causal: causal, q: q, attnScale: 1.7)
                    let patternStart = ((s * p + q) * heads + h) * p, outStart = (s * p + q) * qWidth + h * d
                    for k in 0..<p where abs(Double(pattern[patternStart + k]) - Double(reference.pattern[0][k])) > bound.pattern[k] {
                        failures.append("s\(s) h\(h) q\(q) pattern[\(k)]: \(pattern[patternStart + k]) vs \(reference.pattern[0][k])")
                    }
                    for i in 0..<d where abs(Double(out[outStart + i]) - Double(reference.out[0][i])) > bound.out[i] {
                        failures.append("s\(s) h\(h) q\(q) out[\(i)]: \(out[outStart + i]) vs \(reference.out[0][i])")
                    }
                }
            }
        }
        #expect(failures.isEmpty, "\(failures.prefix(5))")

        // Both steps at once give the same output (the same arithmetic, nothing kept in between).
        run(.all, out: &together, pattern: &togetherPattern)
        #expect(together == out)

        // An edited pattern is mixed as it stands, over every key, masked ones included: all weight on the last key.
        for s in 0..<sequences {
            for q in split..<p {
                for h in 0..<heads {
                    let start = ((s * p + q) * heads + h) * p
                    for k in 0..<p { pattern[start + k] = k == p - 1 ? 1 : 0 }
                }
            }
        }
        run(.mix, out: &out, pattern: &pattern)
        for s in 0..<sequences {
            for q in split..<p {
                for h in 0..<heads {
                    let kv = h / groupSize, start = (s * (p - split) + p - 1 - split) * ownStride + qWidth + kvWidth + kv * d
                    #expect(Array(out[((s * p + q) * qWidth + h * d)..<((s * p + q) * qWidth + h * d + d)]) == Array(own[start..<(start + d)]))
                }
            }
        }
    }
}
