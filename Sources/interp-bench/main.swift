import ArgumentParser
import Foundation
import Interp

/// Runs the workloads of the project's BENCHMARKS.md. Release builds only; figures go in closing notes, never in tests.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "interp-bench",
        abstract: "Benchmark workloads (build with -c release). Run once with the environment as it is and once with `env -u OPENBLAS_CORETYPE`.",
        subcommands: [GEMMBench.self, ForwardBench.self, TokenizeBench.self, StoreBench.self, CacheBench.self, SAEBench.self, PatchBench.self, ACDCBench.self])
}

struct RunOptions: ParsableArguments {
    @Option(help: "Timed runs after one warm-up; the median is reported.") var runs = 5
}

struct GEMMBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gemm", abstract: "sgemm m×k by k×n, fp32, through interp's GEMM (default n×n×n).")
    @Option(help: "Matrix size n (and m and k unless given).") var size = 4096
    @Option(help: "Rows of A and C.") var m: Int?
    @Option(help: "Columns of A, rows of B.") var k: Int?
    @OptionGroup var options: RunOptions

    func run() throws {
        let (m, k, n) = (self.m ?? size, self.k ?? size, size)
        var rng = SeededRandom(seed: 1)
        let a = rng.normalTensor([m, k], std: 1), b = rng.normalTensor([k, n], std: 1)
        var c = Tensor(zeros: [m, n])
        let times = measure(runs: options.runs) {
            a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in c.withUnsafeMutableBufferPointer { c in
                GEMM.multiply(m: m, n: n, k: k, a.baseAddress!, lda: k, b.baseAddress!, ldb: n, c.baseAddress!, ldc: n)
            } } }
        }
        let flops = 2.0 * Double(m) * Double(n) * Double(k)
        report("gemm \(m)×\(k) by \(k)×\(n)", times: times, extra: ["GFLOP/s": flops / median(times) / 1e9])
    }
}

struct ForwardBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forward",
        abstract: "GPT-2-small shape (12 layers, d_model 768, 12 heads, d_mlp 3072, vocab 50,257, n_ctx 1024, GELU-tanh, LN), random weights, full logits.")
    @Option(help: "Prompts per batch.") var batch = 8
    @Option(help: "Tokens per prompt.") var positions = 128
    @OptionGroup var options: RunOptions

    func run() throws {
        let config = gpt2SmallShape
        let model = try randomModel(config, seed: 0)
        var rng = SeededRandom(seed: 2)
        let rows = (0..<batch).map { _ in (0..<positions).map { _ in Int(rng.next() % UInt64(config.dVocab)) } }
        let tokens = try TokenBatch(rows, config: config)
        var failure: Error?
        let times = measure(runs: options.runs) {
            do { _ = try model.run(tokens) } catch { failure = error }
        }
        if let failure { throw failure }
        let n = Double(batch * positions), D = Double(config.dModel), F = Double(config.dMLP), P = Double(positions)
        let perTokenPerLayer = 2 * D * 3 * D + 2 * D * D + 2 * 2 * D * F + 2 * 2 * P * D
        let flops = n * (Double(config.nLayers) * perTokenPerLayer + 2 * D * Double(config.dVocabOut))
        let t = median(times)
        report("forward \(batch)×\(positions) tokens", times: times,
               extra: ["tokens/s": n / t, "GFLOP/s": flops / t / 1e9, "GFLOP": flops / 1e9])
    }
}

/// GPT-2 small's shape: 12 layers, d_model 768, 12 heads, d_mlp 3,072, vocabulary 50,257, context 1,024, GELU-tanh, LN.
let gpt2SmallShape = ModelConfig(modelName: "gpt2-small-shape", nLayers: 12, dModel: 768, nHeads: 12, dHead: 64, dMLP: 3072,
                                 nCtx: 1024, dVocab: 50257, actFn: .geluNew)

/// A model of `config`'s shape with N(0, std²) weights, LN weights 1 + N(0, std²), small random biases.
func randomModel(_ config: ModelConfig, seed: UInt64, std: Float = 0.02) throws -> TransformerModel {
    var rng = SeededRandom(seed: seed)
    var state: [String: Tensor] = [:]
    for parameter in ParameterTable.expected(for: config) {
        var tensor = rng.normalTensor(parameter.shape, std: std)
        if parameter.name.hasSuffix(".w") { tensor.scalars = tensor.scalars.map { $0 + 1 } }
        state[parameter.name] = tensor
    }
    return try TransformerModel(config: config, stateDict: state, sourceFormat: "random")
}

func measure(runs: Int, _ body: () -> Void) -> [Double] {
    body()   // warm-up: first touch of buffers, BLAS thread start
    return (0..<max(runs, 1)).map { _ in
        let start = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Peak resident set size in MB, from /proc/self/status (VmHWM).
func peakRSSMegabytes() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return .nan }
    return kb / 1024
}

func report(_ workload: String, times: [Double], extra: [String: Double]) {
    let coreType = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "unset"
    print("\(workload): median \(String(format: "%.4f", median(times))) s (min \(String(format: "%.4f", times.min()!)), max \(String(format: "%.4f", times.max()!)), \(times.count) runs)")
    for key in extra.keys.sorted() { print("  \(key): \(String(format: "%.6g", extra[key]!))") }
    print("  peak RSS: \(String(format: "%.0f", peakRSSMegabytes())) MB")
    print("  BLAS: \(BLASInfo.coreName) kernel, \(BLASInfo.threads) threads (OPENBLAS_CORETYPE=\(coreType))")
}

Bench.main()
