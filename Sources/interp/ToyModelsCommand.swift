import ArgumentParser
import Foundation
import Interp

struct ToyModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "toy-models",
        abstract: "Validate the effective feature count on toy models of superposition (Elhage et al.).",
        discussion: """
        Trains toy models (20 features into 5 hidden dimensions, importance 0.7^i, features U[0,1] present with \
        probability 1 − S) over a sweep of S in [0.001, 0.999]; for each, the effective feature count from its \
        weights (p_i ∝ ‖W[:, i]‖) and from a JumpReLU SAE (8× latents, L0 coefficient 0.1, inputs normalised) \
        trained by interp on its hidden activations (10,000 samples with at least one feature present), and the \
        Pearson correlation of the two. Dense inputs give F ≈ N = 5; sparse ones F rising toward 20. The paper \
        reports r = 0.94 ± 0.02 over 100 models.
        """)

    @Option(name: .long, help: "Number of toy models.") var models = 40
    @Option(name: .long, help: "Training steps per toy model.") var toySteps = 5000
    @Option(name: .long, help: "Batch size of the toy models' training.") var toyBatchSize = 1024
    @Option(name: .long, help: "Hidden-activation samples per model (SAE training and counting).") var samples = 10_000
    @Option(name: .long, help: "SAE training steps per model.") var saeSteps = 2000
    @Option(name: .long, help: "SAE architecture; standard's L1 lets one feature split over duplicate latents for free.") var architecture = Architecture.jumprelu
    @Option(name: .long, help: "SAE L1 coefficient (standard).") var l1Coefficient: Float = 1
    @Option(name: .long, help: "SAE L0 coefficient (jumprelu).") var l0Coefficient: Float = 0.1
    @Option(name: .long, help: "Random seed.") var seed: UInt64 = 0
    @Flag(name: .long, help: "Print JSON.") var json = false
    @Option(name: .long, help: ArgumentHelp("Write F (weights and SAE) against S as SVG.", valueName: "file")) var svg: String?

    /// The SAE architectures that need no settings beyond those above (ToyModelValidation.Settings.architecture).
    enum Architecture: String, CaseIterable, ExpressibleByArgument { case jumprelu, standard }

    func run() throws {
        var settings = ToyModelValidation.Settings()
        settings.models = models
        settings.toySteps = toySteps
        settings.toyBatchSize = toyBatchSize
        settings.samples = samples
        settings.saeSteps = saeSteps
        settings.l1Coefficient = l1Coefficient
        settings.l0Coefficient = l0Coefficient
        settings.architecture = architecture.rawValue
        settings.seed = seed
        let directory = (NSTemporaryDirectory() as NSString).appendingPathComponent("interp-toy-\(getpid())")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let report = try ToyModelValidation.run(settings, directory: directory) { done, total in
            FileHandle.standardError.write(Data("\rtoy models \(done)/\(total)   ".utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        if let svg {
            let density = { (row: ToyModelValidation.Row) in 1 / (1 - row.sparsity) }
            var plot = LinePlot(title: "Effective features of toy models (20 features → 5 dims)", xLabel: "1 / (1 − S)  (sparser →)",
                                yLabel: "effective features F", logX: true,
                                series: [.init(name: "from weights", points: report.rows.map { (density($0), $0.weightEffectiveFeatures) }, color: LinePlot.palette[0]),
                                         .init(name: "from SAE codes", points: report.rows.map { (density($0), $0.saeEffectiveFeatures) }, color: LinePlot.palette[1])])
            plot.references = [(Double(report.hidden), "N = \(report.hidden)"), (Double(report.features), "M = \(report.features)")]
            try AtomicFile.write(Data(plot.svg().utf8), to: svg)
        }
        if json { return try printJSON(report) }
        print("     S    toy loss   F weights   ψ_Frob   F SAE   ψ SAE   F SAE (decoder-weighted)")
        for row in report.rows {
            print(String(format: "%6.4f  %9.5f  %10.2f  %7.3f  %6.2f  %6.3f  %6.2f", row.sparsity, row.toyLoss, row.weightEffectiveFeatures,
                         row.frobeniusSuperposition, row.saeEffectiveFeatures, row.saeSuperposition, row.saeDecoderWeighted))
        }
        print(String(format: "Pearson r (F from SAE codes vs F from weights) = %.3f over %d models (decoder-weighted: %.3f)", report.pearson,
                     report.rows.count, report.pearsonDecoderWeighted))
    }
}
