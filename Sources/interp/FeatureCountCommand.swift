import ArgumentParser
import Foundation
import Interp

struct SAEFeatureCountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "feature-count",
        abstract: "How many features a layer represents: the effective feature count of an SAE's codes, and superposition ψ.",
        discussion: """
        From "Superposition as Lossy Compression" (Bereska et al.): each latent's share of the total activation \
        magnitude over the samples is a probability p_i; F = exp(−Σ p_i ln p_i) is the number of equally used \
        features with the same entropy, and ψ = F / N compares it with the layer's width N. ψ > 1: the layer \
        represents more features than it has dimensions.

        Use the SAE on the distribution it was trained on. The estimate is biased low on few samples: the \
        convergence curve (in --json, drawn by --svg) should flatten before F is trusted. Also reported: a \
        decoder-norm-weighted F (unchanged by trading a latent's scale against its decoder row; equal to F for \
        unit-norm decoders), latents alive (Hill number of order 0), 1/Σp² (order 2), F over firing frequencies, \
        and a 95% block-bootstrap interval (blocks of consecutive rows resampled; like fewer samples, \
        resampling lowers F, so the interval sits mostly below it).

        Example:
          interp sae feature-count --sae sae-topk --activations acts.h5 --dataset blocks.0.hook_resid_post --svg f.svg
        """)

    @Option(name: .long, help: ArgumentHelp("SAE directory (cfg.json + sae_weights.safetensors); repeat it, one SAE per layer, for a table and a plot across layers.", valueName: "dir")) var sae: [String]
    @Option(name: .long, help: ArgumentHelp("The HDF5 store: one for all SAEs, or one per SAE.", valueName: "file")) var activations: [String]
    @Option(name: .long, help: ArgumentHelp("Dataset in the store (default: the SAE's hook_name from its cfg.json).", valueName: "name")) var dataset: String?
    @Option(name: .long, help: ArgumentHelp("Rows used, from the start (default: all).", valueName: "n")) var samples: Int?
    @Option(name: .long, help: "Rows per batch.") var batchSize = 4096
    @Flag(name: .long, help: "Print JSON.") var json = false
    @Option(name: .long, help: ArgumentHelp("Write the convergence curve (F against samples), or with several SAEs F per layer, as SVG.", valueName: "file")) var svg: String?

    func validate() throws {
        if sae.isEmpty { throw ValidationError("give at least one --sae") }
        if activations.count != 1 && activations.count != sae.count { throw ValidationError("give one --activations for all SAEs or one per --sae") }
    }

    func run() throws {
        var items: [FeatureCount.Layer] = []
        for (k, directory) in sae.enumerated() {
            let model = try SparseAutoencoder.load(directory: directory)
            let store = activations.count == 1 ? activations[0] : activations[k]
            guard let name = dataset ?? model.config.metadata?.hookName else {
                throw InterpError("no --dataset given and the SAE's cfg.json names no hook_name", file: directory + "/cfg.json")
            }
            items.append(.init(label: name, sae: model, reader: try ActivationReader(path: store, dataset: name)))
        }
        if items.count > 1 { return try runLayers(items) }
        let result = try FeatureCount.measure(items[0].sae, reader: items[0].reader, samples: samples, batchSize: batchSize)
        if let svg {
            try AtomicFile.write(Data(result.convergencePlot(label: items[0].label).svg().utf8), to: svg)
        }
        if json { return try printJSON(result) }
        let ci = result.ci95.map { String(format: " (95%% CI %.1f–%.1f)", $0[0], $0[1]) } ?? ""
        print(String(format: "effective features  F = %.2f%@ of %d latents, from %d samples", result.effectiveFeatures, ci, result.latents, result.samples))
        print(String(format: "superposition       ψ = F / N = %.3f (N = %d neurons); entropy H = %.4f nats", result.superposition, result.neurons, result.entropy))
        print(String(format: "variants            decoder-weighted %.2f · alive (Hill 0) %d · Hill 2 %.2f · firing frequency %.2f",
                     result.variants.decoderWeighted, result.variants.hill0, result.variants.hill2, result.variants.firingFrequency))
        let curve = result.convergence.map { String(format: "%d: %.1f", $0.samples, $0.effectiveFeatures) }.joined(separator: ", ")
        print("convergence         \(curve)")
    }

    private func runLayers(_ items: [FeatureCount.Layer]) throws {
        let results = try FeatureCount.layers(items, samples: samples, batchSize: batchSize)
        if let svg {
            var plot = LinePlot(title: "Effective features per layer", xLabel: "layer", yLabel: "effective features F  (ψ = F / N)", logX: false,
                                series: [.init(name: "F", points: results.enumerated().map { (Double($0.offset), $0.element.result.effectiveFeatures) },
                                               color: LinePlot.palette[0])])
            plot.categories = results.map(\.label)
            if Set(results.map(\.result.neurons)).count == 1 { plot.references = [(Double(results[0].result.neurons), "N = \(results[0].result.neurons)")] }
            try AtomicFile.write(Data(plot.svg(width: max(640, 220 + 110 * Double(results.count))).utf8), to: svg)
        }
        if json { return try printJSON(["layers": results]) }
        print("layer                                  F          ψ        N   latents   samples   95% CI")
        for r in results {
            let ci = r.result.ci95.map { String(format: "%.1f–%.1f", $0[0], $0[1]) } ?? "-"
            let label = r.label.padding(toLength: max(r.label.count, 32), withPad: " ", startingAt: 0)
            print(label + String(format: " %10.2f %10.3f %8d %9d %9d   ", r.result.effectiveFeatures, r.result.superposition,
                                 r.result.neurons, r.result.latents, r.result.samples) + ci)
        }
    }
}
