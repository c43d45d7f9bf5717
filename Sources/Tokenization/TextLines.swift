import Foundation
import InterpCore

/// Prompts from a text file, one per line: split on "\n" only, nothing trimmed (a "\r" stays), and no line after a
/// final "\n". The file must be UTF-8.
public enum TextLines {
    public static func read(_ path: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InterpError(FileManager.default.fileExists(atPath: path) ? "cannot read" : "no such file", file: path)
        }
        guard let text = String(validating: data, as: UTF8.self) else { throw InterpError("not valid UTF-8 text", file: path) }
        return split(text)
    }

    public static func split(_ text: String) -> [String] {
        guard !text.isEmpty else { return [] }
        var lines = splitScalars(text, on: "\n")
        if text.unicodeScalars.last == "\n" { lines.removeLast() }
        return lines
    }

    /// Splits on a scalar, not on `Character`s: "\r\n" is one Character in Swift, so `String.split(separator:
    /// "\n")` would never split it.
    public static func splitScalars(_ text: String, on separator: Unicode.Scalar) -> [String] {
        text.unicodeScalars.split(separator: separator, omittingEmptySubsequences: false).map { String(String.UnicodeScalarView($0)) }
    }
}
