import Foundation
import Interp

/// Paths to the committed fixtures, found from this source file's location in the repository.
public enum Fixtures {
    public static let repositoryRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }   // Sources/InterpTestSupport/Fixtures.swift
        return url.path
    }()

    public static var root: String { repositoryRoot + "/fixtures" }
    public static func model(_ name: String) -> String { root + "/models/" + name }
    public static func reference(_ name: String) -> String { root + "/reference/" + name }

    /// A fresh, empty temporary directory.
    public static func temporaryDirectory() throws -> String {
        let path = (NSTemporaryDirectory() as NSString).appendingPathComponent("interp-test-" + UUID().uuidString)
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    public static func tokens(_ name: String) throws -> [[Int]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: reference(name + ".tokens.json")))
        return try JSONDecoder().decode([[Int]].self, from: data)
    }
}

/// The worst disagreement between two arrays under a symmetric tolerance `|a − b| ≤ atol + rtol·|b|`.
/// Infinities must match exactly (same sign, same places); NaN never matches.
public struct Comparison: CustomStringConvertible {
    public var maxAbsoluteError: Float = 0
    public var worstIndex: Int?
    public var failures = 0
    public var count = 0
    public var shapeMismatch: String?

    public var passed: Bool { failures == 0 && shapeMismatch == nil }

    public var description: String {
        if let shapeMismatch { return shapeMismatch }
        return "max abs error \(maxAbsoluteError) at index \(worstIndex.map(String.init) ?? "-"), \(failures) of \(count) outside tolerance"
    }
}

public func compare(_ actual: Tensor, _ expected: Tensor, atol: Float = 1e-4, rtol: Float = 0) -> Comparison {
    var result = Comparison()
    guard actual.shape == expected.shape else {
        result.shapeMismatch = "shape \(actual.shape) != expected \(expected.shape)"
        return result
    }
    return compare(actual.scalars, expected.scalars, atol: atol, rtol: rtol)
}

public func compare(_ actual: [Float], _ expected: [Float], atol: Float, rtol: Float = 0) -> Comparison {
    var result = Comparison()
    guard actual.count == expected.count else {
        result.shapeMismatch = "\(actual.count) elements != expected \(expected.count)"
        return result
    }
    result.count = actual.count
    for i in actual.indices {
        let a = actual[i], e = expected[i]
        let error: Float
        if a.isNaN || e.isNaN {
            error = .infinity
        } else if a.isInfinite || e.isInfinite {
            error = a == e ? 0 : .infinity
        } else {
            error = Swift.abs(a - e)
        }
        if error > result.maxAbsoluteError || (result.worstIndex == nil && error > 0) {
            result.maxAbsoluteError = error
            result.worstIndex = i
        }
        if !(error <= atol + rtol * (e.isFinite ? Swift.abs(e) : 0)) { result.failures += 1 }
    }
    return result
}
