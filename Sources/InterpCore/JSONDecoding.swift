import Foundation

/// Reads a whole file, with a one-line error naming it.
public func readFile(_ path: String) throws -> Data {
    guard FileManager.default.fileExists(atPath: path) else { throw InterpError("no such file", file: path) }
    do {
        return try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
        throw InterpError("cannot read (\(error.localizedDescription))", file: path)
    }
}

/// Decodes JSON, turning Swift's decoding errors into one line naming the file and the field.
public func decodeJSON<T: Decodable>(_ type: T.Type, from data: Data, file: String) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch let error as InterpError {
        throw error.inFile(file)
    } catch let DecodingError.keyNotFound(key, context) {
        throw InterpError("missing field '\(fieldPath(context.codingPath + [key]))'", file: file)
    } catch let DecodingError.typeMismatch(expected, context) {
        throw InterpError("field '\(fieldPath(context.codingPath))' is not \(typeDescription(expected))", file: file)
    } catch let DecodingError.valueNotFound(expected, context) {
        throw InterpError("field '\(fieldPath(context.codingPath))' is null but must be \(typeDescription(expected))", file: file)
    } catch let DecodingError.dataCorrupted(context) {
        if context.codingPath.isEmpty { throw InterpError("not valid JSON", file: file) }
        throw InterpError("field '\(fieldPath(context.codingPath))' is invalid: \(context.debugDescription)", file: file)
    } catch {
        throw InterpError("cannot decode (\(error.localizedDescription))", file: file)
    }
}

private func fieldPath(_ path: [CodingKey]) -> String {
    path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}

private func typeDescription(_ type: Any.Type) -> String {
    switch type {
    case is Int.Type, is Int32.Type, is Int64.Type: return "an integer"
    case is Float.Type, is Double.Type: return "a number"
    case is Bool.Type: return "a boolean"
    case is String.Type: return "a string"
    default: return "of the expected type"
    }
}
