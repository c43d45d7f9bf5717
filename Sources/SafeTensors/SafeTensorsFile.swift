import Foundation
import InterpCore

/// A safetensors file opened for reading: memory-mapped, its header validated before any tensor is touched.
///
/// The checks follow the format's reference implementation: a bounded header length, a JSON object whose entries
/// each have a known dtype, a shape of non-negative integers and `data_offsets` whose length equals
/// `shape × dtype size` (overflow-checked); the byte ranges, sorted, tile the data section exactly (no gap, no
/// overlap, nothing outside the file); `__metadata__` maps strings to strings.
public final class SafeTensorsFile {
    public struct Entry: Equatable, Sendable {
        public let name: String
        public let dtype: DType
        public let shape: [Int]
        /// Byte range within the data section.
        public let range: Range<Int>
        public var elementCount: Int { shape.reduce(1, *) }
    }

    /// Largest header interp accepts (the reference implementation's limit).
    public static let maximumHeaderLength = 100_000_000

    public let path: String
    public let metadata: [String: String]
    public let entries: [String: Entry]
    private let mapping: UnsafeMutableRawPointer
    private let fileSize: Int
    private let dataStart: Int

    /// Tensor names in file order (by offset).
    public var names: [String] { entries.values.sorted { $0.range.lowerBound < $1.range.lowerBound }.map(\.name) }

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw InterpError("cannot open (\(String(cString: strerror(errno))))", file: path) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw InterpError("cannot stat (\(String(cString: strerror(errno))))", file: path) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw InterpError("not a regular file", file: path) }
        let size = Int(info.st_size)
        guard size >= 8 else { throw InterpError("not a safetensors file: \(size) bytes, shorter than the 8-byte header length", file: path) }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw InterpError("cannot map (\(String(cString: strerror(errno))))", file: path)
        }
        do {
            let parsed = try SafeTensorsFile.parseHeader(UnsafeRawPointer(base), fileSize: size)
            mapping = base
            fileSize = size
            dataStart = parsed.dataStart
            entries = parsed.entries
            metadata = parsed.metadata
        } catch let error as InterpError {
            munmap(base, size)
            throw error.inFile(path)
        }
    }

    deinit { munmap(mapping, fileSize) }

    public func entry(_ name: String) throws -> Entry {
        guard let entry = entries[name] else { throw InterpError("no tensor named '\(name)'", file: path) }
        return entry
    }

    /// The tensor converted to Float32 (F32, F16, BF16 or F64 stored).
    public func tensor(_ name: String) throws -> Tensor {
        let entry = try entry(name)
        guard entry.dtype.isFloatingPoint else {
            throw InterpError("tensor '\(name)' has dtype \(entry.dtype.rawValue); a floating-point tensor was expected", file: path)
        }
        var scalars = [Float](repeating: 0, count: entry.elementCount)
        scalars.withUnsafeMutableBufferPointer { out in
            guard let destination = out.baseAddress else { return }
            convertToFloat(UnsafeRawPointer(mapping) + dataStart + entry.range.lowerBound, dtype: entry.dtype,
                           count: entry.elementCount, into: destination)
        }
        return Tensor(shape: entry.shape, scalars: scalars)
    }

    /// The tensor's integer values (any integer dtype), with its shape.
    public func integers(_ name: String) throws -> (shape: [Int], values: [Int64]) {
        let entry = try entry(name)
        guard entry.dtype.isInteger else {
            throw InterpError("tensor '\(name)' has dtype \(entry.dtype.rawValue); an integer tensor was expected", file: path)
        }
        return (entry.shape, convertToInt64(UnsafeRawPointer(mapping) + dataStart + entry.range.lowerBound,
                                            dtype: entry.dtype, count: entry.elementCount))
    }

    // MARK: - Header validation

    static func parseHeader(_ base: UnsafeRawPointer, fileSize: Int)
        throws -> (entries: [String: Entry], metadata: [String: String], dataStart: Int) {
        let declared = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(maximumHeaderLength) else {
            throw InterpError("header length \(declared) exceeds the limit of \(maximumHeaderLength) bytes")
        }
        let headerLength = Int(declared)
        guard headerLength <= fileSize - 8 else {
            throw InterpError("header length \(headerLength) runs past the end of the file (\(fileSize) bytes)")
        }
        let headerBytes = Data(bytes: base + 8, count: headerLength)
        guard headerBytes.first == UInt8(ascii: "{") else { throw InterpError("header is not a JSON object") }
        guard case .object(let object) = try JSONValue.parse(headerBytes) else {
            throw InterpError("header is not a JSON object")
        }

        var metadata: [String: String] = [:]
        var entries: [String: Entry] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                guard case .object(let map) = value else { throw InterpError("__metadata__ is not an object") }
                for (key, item) in map {
                    guard case .string(let text) = item else { throw InterpError("__metadata__ value for '\(key)' is not a string") }
                    metadata[key] = text
                }
                continue
            }
            entries[name] = try parseEntry(name: name, value)
        }

        let dataLength = fileSize - 8 - headerLength
        var expectedStart = 0
        var previous: String?
        for entry in entries.values.sorted(by: { ($0.range.lowerBound, $0.range.upperBound, $0.name) < ($1.range.lowerBound, $1.range.upperBound, $1.name) }) {
            if entry.range.lowerBound < expectedStart {
                throw InterpError("tensor '\(entry.name)' overlaps tensor '\(previous ?? "")' (bytes \(entry.range.lowerBound)..<\(entry.range.upperBound))")
            }
            if entry.range.lowerBound > expectedStart {
                throw InterpError("gap in the data section before tensor '\(entry.name)' (bytes \(expectedStart)..<\(entry.range.lowerBound) unused)")
            }
            if entry.range.upperBound > dataLength {
                throw InterpError("tensor '\(entry.name)' ends at byte \(entry.range.upperBound), past the end of the data section (\(dataLength) bytes)")
            }
            expectedStart = entry.range.upperBound
            previous = entry.name
        }
        if expectedStart != dataLength {
            throw InterpError("data section is \(dataLength) bytes but the tensors cover \(expectedStart)")
        }
        return (entries, metadata, 8 + headerLength)
    }

    private static func parseEntry(name: String, _ value: JSONValue) throws -> Entry {
        guard case .object(let fields) = value else { throw InterpError("tensor '\(name)' is not an object") }
        guard let dtypeName = fields["dtype"]?.stringValue else { throw InterpError("tensor '\(name)' has no dtype") }
        guard let dtype = DType(rawValue: dtypeName) else { throw InterpError("tensor '\(name)' has unknown dtype '\(dtypeName)'") }
        guard let shapeValues = fields["shape"]?.arrayValue else { throw InterpError("tensor '\(name)' has no shape") }
        var shape: [Int] = []
        for item in shapeValues {
            guard let dim = item.integerValue, dim >= 0 else {
                throw InterpError("tensor '\(name)' has an invalid shape \(JSONValue.array(shapeValues))")
            }
            shape.append(dim)
        }
        guard let offsets = fields["data_offsets"]?.arrayValue, offsets.count == 2,
              let begin = offsets[0].integerValue, let end = offsets[1].integerValue, begin >= 0, end >= begin else {
            throw InterpError("tensor '\(name)' has invalid data_offsets")
        }
        var bytes = dtype.byteSize
        for dim in shape {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: dim)
            guard !overflow else { throw InterpError("tensor '\(name)' has shape \(shape) whose size overflows") }
            bytes = product
        }
        guard end - begin == bytes else {
            throw InterpError("tensor '\(name)' of shape \(shape) and dtype \(dtypeName) needs \(bytes) bytes but data_offsets cover \(end - begin)")
        }
        return Entry(name: name, dtype: dtype, shape: shape, range: begin..<end)
    }
}
