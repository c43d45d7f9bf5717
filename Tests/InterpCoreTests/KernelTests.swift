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
