import ArgumentParser
import Foundation
import Interp

struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "The whole toolkit on the bundled English model, ending in an HTML report.",
        discussion: """
        On a small GPT-2-style model trained on English text (fixtures/models/english-4l) and held-out text \
        (fixtures/english/slice.txt), runs what a researcher would: cache the residual stream of a middle layer to \
        HDF5 → train a TopK SAE → evaluate it (explained variance, L0, dead latents, CE loss recovered) → effective \
        feature count → activation patching on induction prompts (heatmaps) → ACDC on the same task (circuit graph) → \
        feature dashboards. DIR/index.html shows the figures and links everything. Each stage is also its own \
        command: cache, sae train, sae eval, sae feature-count, patch, circuits, sae dashboard.

        Needs Graphviz's `dot` for the circuit picture. Takes about ten seconds on two cores (release build).

        Example:
          interp demo --out interp-demo && xdg-open interp-demo/index.html
        """)

    @Option(name: .long, help: ArgumentHelp("Output directory.", valueName: "dir")) var out = "interp-demo"
    // Not ModelOptions, whose --model is required: the demo defaults to the bundled model.
    @Option(name: .long, help: ArgumentHelp("Model directory (default: the bundled English model).", valueName: "dir")) var model: String?
    @Option(name: .long, help: ArgumentHelp("Text, one document per line (default: the bundled slice).", valueName: "file")) var textFile: String?
    @Option(name: .long, help: "SAE training steps.") var saeSteps = 1500
    @Option(name: .long, help: ArgumentHelp("ACDC's τ.", valueName: "τ")) var threshold = 0.02

    func run() throws {
        let fixtures = model == nil || textFile == nil ? try BundledFixtures.directory() : ""
        var settings = Demo.Settings(modelDirectory: model ?? fixtures + "/models/english-4l",
                                     textFile: textFile ?? fixtures + "/english/slice.txt", output: out)
        settings.saeSteps = saeSteps
        settings.threshold = threshold
        let status = StatusLine()
        let report = try Demo.run(settings, log: { line in
            status.clear()
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }, progress: { status.show($0) })
        status.clear()
        print(String(format: "wrote %@/index.html in %.1f s: loss %.3f (repeat %.3f → %.3f), SAE EV %.3f, L0 %.1f, CE recovered %.1f%%, F %.1f (ψ %.2f), circuit %d of %d edges",
                     out, report.seconds, report.textLoss, report.firstCopyLoss, report.secondCopyLoss, report.explainedVariance,
                     report.l0, 100 * report.ceRecovered, report.effectiveFeatures, report.superposition, report.circuitEdges, report.graphEdges))
    }
}

/// One transient status line on stderr, redrawn at most a few times a second.
final class StatusLine {
    private var last = Date.distantPast
    private var width = 0

    func show(_ text: String) {
        guard Date().timeIntervalSince(last) > 0.2 else { return }
        last = Date()
        let line = "  " + text
        FileHandle.standardError.write(Data(("\r" + line.padding(toLength: max(width, line.count), withPad: " ", startingAt: 0)).utf8))
        width = line.count
    }

    func clear() {
        guard width > 0 else { return }
        FileHandle.standardError.write(Data(("\r" + String(repeating: " ", count: width) + "\r").utf8))
        width = 0
    }
}

/// The repository's fixtures directory, for defaults that name bundled files: found next to the executable's build
/// directory (.build/<config>/interp) or from the working directory.
enum BundledFixtures {
    static func directory() throws -> String {
        var candidates = [FileManager.default.currentDirectoryPath + "/fixtures"]
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        for _ in 0..<4 {
            url.deleteLastPathComponent()
            candidates.append(url.path + "/fixtures")
        }
        guard let found = candidates.first(where: { FileManager.default.fileExists(atPath: $0 + "/models/english-4l/config.json") }) else {
            throw InterpError("cannot find the bundled fixtures (fixtures/models/english-4l); run from the repository or give --model and --text-file")
        }
        return found == candidates[0] ? "fixtures" : found      // relative when run from the repository
    }
}
