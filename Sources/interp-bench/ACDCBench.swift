import ArgumentParser
import Foundation
import Interp

/// BENCHMARKS.md `acdc`: attention-only, 2 layers, d_model 128, 8 heads × d_head 16, vocab 512, n_ctx 64, random
/// weights; 32 prompt pairs × 16 tokens, 2 positions corrupted per prompt; KL(clean ‖ circuit) at the last position,
/// corrupted-activation ablation, τ = 1e-3; weights N(0, (0.8/√d_model)²) as TransformerLens initialises them. `--gpt2` runs the GPT-2-small shape with 16 prompts × 16 tokens instead.
struct ACDCBench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "acdc", abstract: "ACDC circuit discovery, end to end.")
    @Option(help: "τ.") var threshold = 1e-3
    @Flag(help: "The GPT-2-small shape (12 layers, d_model 768, 12 heads, MLPs), 16 prompts × 16 tokens.") var gpt2 = false
    @Flag(help: "Also run the one-forward-per-edge reference and check it keeps the same edges.") var check = false
    @OptionGroup var options: RunOptions

    func run() throws {
        let config = gpt2
            ? gpt2SmallShape
            : ModelConfig(modelName: "attn-only-2l", nLayers: 2, dModel: 128, nHeads: 8, dHead: 16, dMLP: 512, nCtx: 64, dVocab: 512, actFn: nil, attnOnly: true)
        // TransformerLens's initialisation scale (0.8/√d_model), so that the random model's outputs depend on its edges.
        let model = try randomModel(config, seed: 0, std: 0.8 / Float(config.dModel).squareRoot())
        let prompts = gpt2 ? 16 : 32, positions = 16
        var rng = SeededRandom(seed: 4)
        var clean: [[Int]] = [], corrupted: [[Int]] = []
        for _ in 0..<prompts {
            let row = (0..<positions).map { _ in Int(rng.next() % UInt64(config.dVocab)) }
            var other = row
            for _ in 0..<2 {
                let p = Int(rng.next() % UInt64(positions))
                other[p] = (row[p] + 1 + Int(rng.next() % UInt64(config.dVocab - 1))) % config.dVocab
            }
            clean.append(row)
            corrupted.append(other)
        }
        let cleanBatch = try TokenBatch(clean, config: config), corruptedBatch = try TokenBatch(corrupted, config: config)
        let metric = CircuitMetric.kl(cleanLogits: try model.run(cleanBatch), positions: .last, fastExponentials: true)
        let settings = ACDC.Settings(threshold: threshold)
        var result: CircuitResult?, failure: Error?
        let times = measure(runs: gpt2 ? 1 : options.runs) {
            do { result = try ACDC.run(model: model, clean: cleanBatch, corrupted: corruptedBatch, metric: metric, settings: settings) } catch { failure = error }
        }
        if let failure { throw failure }
        let r = result!
        var extra: [String: Double] = ["edges": Double(r.graph.edges.count), "kept": Double(r.keptCount), "forward passes": Double(r.forwardPasses),
                                       "graph states": Double(r.statesRun), "circuit KL": r.circuitMetric, "empty KL": r.emptyMetric]
        if check {
            let start = DispatchTime.now().uptimeNanoseconds
            let slow = try ACDC.reference(model: model, clean: cleanBatch, corrupted: corruptedBatch, metric: metric, settings: settings)
            extra["reference s"] = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            extra["same kept edges (1 = yes)"] = slow.kept == r.kept ? 1 : 0
            extra["reference edges tried"] = Double(slow.statesRun)
        }
        report("acdc \(config.modelName), \(prompts) × \(positions) tokens, τ \(threshold)", times: times, extra: extra)
    }
}
