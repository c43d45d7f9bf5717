import ArgumentParser
import Foundation
import Interp

/// `interp`: the command-line face of the library. Each subcommand parses its options and calls one library
/// function; errors print as one line `error: <file>: <problem>` and exit 1.
struct InterpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "interp",
        abstract: "Mechanistic interpretability for transformer language models: hooks, caches, patching, SAEs.",
        discussion: """
        A model is a directory with config.json and model.safetensors, exported from TransformerLens \
        (HookedTransformer state-dict names) or saved by Hugging Face GPT2LMHeadModel.save_pretrained. \
        Hook points carry TransformerLens names such as blocks.0.hook_resid_pre; `interp info` lists a model's hooks.
        """,
        version: versionText(),
        subcommands: [DemoCommand.self, InfoCommand.self, TokenizeCommand.self, RunCommand.self, CacheCommand.self, SAECommand.self, PatchCommand.self, CircuitsCommand.self, ToyModelsCommand.self]
    )
}

func versionText() -> String {
    let hdf5 = (try? HDF5Library.version()) ?? "unknown"
    return "interp \(InterpVersion.current) (BLAS: \(BLASInfo.configuration.trimmingCharacters(in: .whitespaces)); HDF5 \(hdf5))"
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    exit(1)
}

do {
    var command = try InterpCommand.parseAsRoot()
    try command.run()
} catch let error as InterpError {
    fail(error.description)
} catch {
    // --help and --version end through here too; let the parser print those. Usage errors become one line.
    if InterpCommand.exitCode(for: error) == .success { InterpCommand.exit(withError: error) }
    let message = InterpCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
    FileHandle.standardError.write(Data("error: \(message) (see --help)\n".utf8))
    exit(InterpCommand.exitCode(for: error).rawValue)
}
