import Foundation

/// Runs the built `interp` binary as a user would, capturing exit status, stdout and stderr.
public struct CommandResult {
    public let status: Int32
    public let stdout: String
    public let stderr: String
}

public enum InterpBinary {
    /// The `interp` executable next to the test bundle in the build directory.
    public static var path: String {
        let candidates = [
            Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("interp").path,
            Bundle.main.bundleURL.appendingPathComponent("interp").path,
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("interp").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }

    public static func run(_ arguments: [String], environment: [String: String]? = nil) throws -> CommandResult {
        try run(executable: path, arguments, in: Fixtures.repositoryRoot, environment: environment)
    }

    /// Another executable of the package (built next to `interp`), run in `directory`.
    public static func runSibling(_ name: String, _ arguments: [String], in directory: String) throws -> CommandResult {
        try run(executable: URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(name).path, arguments, in: directory)
    }

    static func run(executable: String, _ arguments: [String], in directory: String, environment: [String: String]? = nil) throws -> CommandResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes to the end before waiting, so a large output cannot block the child.
        final class Box: @unchecked Sendable { var data = Data() }
        let stdoutBox = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { stdoutBox.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        let outData = stdoutBox.data
        process.waitUntilExit()
        return CommandResult(status: process.terminationStatus,
                             stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errData, as: UTF8.self))
    }
}

extension InterpBinary {
    /// Starts `interp` with `arguments`, polls `ready` every 2 ms, and kills the process with SIGKILL as soon as it
    /// returns true (or after `timeout` seconds). Returns whether the process was still running when killed.
    public static func runAndKill(_ arguments: [String], timeout: TimeInterval = 60, when ready: () -> Bool) throws -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: Fixtures.repositoryRoot)
        process.standardError = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && !ready() { usleep(2_000) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        return process.terminationReason == .uncaughtSignal
    }
}

