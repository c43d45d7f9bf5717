import ArgumentParser
import Interp

// The library's fixed sets of words as option values (the library does not import ArgumentParser): --help lists them
// ("values: …"), the shell completes them, and a word outside the set is a one-line usage error naming the option and
// the words it takes.
extension PatchSite: ExpressibleByArgument {}
extension PatchIndexing: ExpressibleByArgument {}
extension PatchDirection: ExpressibleByArgument {}
extension PatchMetricKind: ExpressibleByArgument {}
extension CircuitAblation: ExpressibleByArgument {}

extension ExpressibleByArgument where Self: CaseIterable {
    /// A parser for an option with six words or more, whose list ArgumentParser's error would put on lines of their
    /// own (of which the one-line error shows only the first): fails with "unknown NOUN 'word' (a, b, …)".
    static func parser(naming noun: String) -> @Sendable (String) throws -> Self {
        { word in
            guard let value = Self(argument: word) else {
                throw ValidationError("unknown \(noun) '\(word)' (\(allValueStrings.joined(separator: ", ")))")
            }
            return value
        }
    }
}
