import Foundation

/// The one error type interp throws for bad input: a file (when there is one) and what is wrong with it.
/// Printed as one line, `<file>: <problem>`, so the CLI can show it as `error: <file>: <problem>`.
public struct InterpError: Error, LocalizedError, CustomStringConvertible, Equatable, Sendable {
    public var file: String?
    public var message: String

    public init(_ message: String, file: String? = nil) {
        self.message = message
        self.file = file
    }

    public var description: String {
        let text = message.replacingOccurrences(of: "\n", with: " ")
        guard let file else { return text }
        return "\(file): \(text)"
    }

    public var errorDescription: String? { description }

    /// The same error, attributed to `file` unless it already names one.
    public func inFile(_ file: String) -> InterpError {
        self.file == nil ? InterpError(message, file: file) : self
    }
}
