import ArgumentParser
import Foundation
import Interp

struct CircuitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "circuits",
        abstract: "ACDC circuit discovery: the edges of the model's graph a behaviour needs.",
        discussion: """
        The graph is ACDC's: senders are the input (or embed and pos_embed with --split-embeddings), every head's \
        output a{l}.{h} and every MLP m{l}; receivers are every head's query, key and value inputs a{l}.{h}.q|k|v, \
        every MLP's input and the output; each head also has direct edges a{l}.{h}.q|k|v → a{l}.{h}. A removed edge \
        gives its receiver the sender's ablated output (--ablation: from the corrupted prompts, zero, or their mean).

        Walking from the output back, ACDC removes each edge whose removal raises the metric by less than τ, and \
        keeps it removed. Metrics are minimised: kl = KL(clean ‖ circuit) at the task's positions; logit-diff = \
        −(logit[answer] − logit[wrong]) at the last position; l2 = mean squared difference from the clean logits at \
        the task's positions and logit indices. Results equal ACDC's one-forward-per-edge algorithm; runs start at the \
        receiver's layer and are batched.

        TASK.json: {"clean": [[ids]], "corrupted": [[ids]], "answer": [ids], "wrong": [ids],
                    "positions": "last" | "all" | {"from": n}, "logit_indices": [ids]}
        ("corrupted" is optional for --ablation zero; "answer"/"wrong", one per prompt, for logit-diff).

        CIRCUIT.json: every edge {"src", "dst", "type": "addition"|"direct", "effect", "kept"}, the counts, the \
        metric of the full model, the circuit and the empty graph, τ and the settings (with --thresholds, also \
        "sweep": kept edges and metric per τ; the edges are those of the first τ).

        Example:
          interp circuits --model fixtures/models/induction-2l --task task.json \\
              --metric kl --threshold 0.01 --out circuit.json --svg circuit.svg
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .long, help: ArgumentHelp("The task (see above).", valueName: "file")) var task: String
    @Option(name: .long, help: "What ACDC minimises (see above).") var metric = Metric.kl
    @Option(name: .long, help: ArgumentHelp("τ: remove an edge when the metric rises by less than this.", valueName: "τ")) var threshold: Double?
    @Option(name: .long, help: ArgumentHelp("Several τ, comma-separated: a sweep.", valueName: "a,b,c")) var thresholds: String?
    @Option(name: .long, help: "What a removed edge gives its receiver (see above).") var ablation = CircuitAblation.corrupted
    @Flag(name: .long, help: "Token and position embeddings as two senders.") var splitEmbeddings = false
    @Option(name: .long, help: ArgumentHelp("Where to write the result (JSON).", valueName: "file")) var out: String
    @Option(name: .long, help: ArgumentHelp("Also write the kept graph as Graphviz DOT.", valueName: "file")) var dot: String?
    @Option(name: .long, help: ArgumentHelp("Also draw the kept graph as SVG (needs Graphviz's dot).", valueName: "file")) var svg: String?

    /// The metrics of `CircuitTask.metric`.
    enum Metric: String, CaseIterable, ExpressibleByArgument {
        case kl, logitDifference = "logit-diff", l2
    }

    func validate() throws {
        if (threshold == nil) == (thresholds == nil) { throw ValidationError("give --threshold τ or --thresholds a,b,c") }
        if let thresholds, thresholds.split(separator: ",").contains(where: { Double($0) == nil }) {
            throw ValidationError("--thresholds is a comma-separated list of numbers")
        }
    }

    func run() throws {
        let transformer = try modelOptions.load()
        let spec = try CircuitTask.load(task, config: transformer.config)
        if ablation != .zero && spec.corrupted == nil { throw InterpError("--ablation \(ablation.rawValue) needs \"corrupted\" prompts", file: task) }
        let measure = try spec.metric(metric.rawValue, model: transformer, file: task)
        let taus = thresholds.map { $0.split(separator: ",").map { Double($0)! } } ?? [threshold!]
        var results: [CircuitResult] = []
        var seconds: [Double] = []
        for tau in taus {
            let start = Date()
            let result = try ACDC.run(model: transformer, clean: spec.clean, corrupted: spec.corrupted, metric: measure,
                                      settings: ACDC.Settings(threshold: tau, ablation: ablation, splitEmbeddings: splitEmbeddings)) { done, total in
                FileHandle.standardError.write(Data(String(format: "\rτ %g: receiver %d/%d (%.1f s)", tau, done, total, Date().timeIntervalSince(start)).utf8))
            }
            FileHandle.standardError.write(Data("\n".utf8))
            results.append(result)
            seconds.append(Date().timeIntervalSince(start))
        }
        let first = results[0]
        var extra: [String: Any] = ["seconds": seconds[0], "model": modelOptions.model]
        if results.count > 1 {
            extra["sweep"] = zip(results, seconds).map { r, s in
                ["threshold": r.threshold, "kept": r.keptCount, "circuit_metric": r.circuitMetric, "seconds": s] as [String: Any]
            }
        }
        let data = try JSONSerialization.data(withJSONObject: first.jsonObject(extra: extra), options: [.prettyPrinted, .sortedKeys])
        let title = "ACDC, \(metric.rawValue), τ = \(first.threshold): \(first.keptCount) of \(first.graph.edges.count) edges"
        let dotText = first.dot(title: title)
        let svgData = try svg.map { _ in try Graphviz.svg(fromDOT: dotText) }
        try AtomicFile.write(data, to: out)
        if let dot { try AtomicFile.write(Data(dotText.utf8), to: dot) }
        if let svg, let svgData { try AtomicFile.write(svgData, to: svg) }
        for (r, s) in zip(results, seconds) {
            print(String(format: "τ %g: kept %d of %d edges; %@ full %.4g, circuit %.4g, empty %.4g (%.2f s, %d forward passes)",
                         r.threshold, r.keptCount, r.graph.edges.count, metric.rawValue, r.fullMetric, r.circuitMetric, r.emptyMetric, s, r.forwardPasses))
        }
        print("wrote \(out)")
    }
}
