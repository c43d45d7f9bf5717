import CHDF5
import Foundation
import InterpCore

/// Reads activations from any HDF5 file: a dataset of rank ≥ 2 (`[n, d]`, or `[n, heads, d_head]` read as
/// `[n, heads·d_head]`), stored as float16, float32 or float64 and converted to float32. Files written by h5py work
/// as well as interp's own.
public final class ActivationReader {
    public let file: HDF5File
    public let dataset: HDF5Dataset
    /// Rows stored together on disk: the dataset's chunk length, or 4,096 for unchunked datasets.
    public let chunkRows: Int

    public var path: String { file.path }
    public var rows: Int { dataset.rows }
    /// Features per row: the trailing dimensions flattened.
    public var width: Int { dataset.rowWidth }
    public var shape: [Int] { dataset.shape }

    public init(path: String, dataset name: String) throws {
        file = try HDF5File(reading: path)
        let names = try file.datasetNames()
        guard file.exists(name) else {
            let list = names.isEmpty ? "none" : names.map { "'\($0)'" }.joined(separator: ", ")
            throw InterpError("no dataset named '\(name)' (datasets: \(list))", file: path)
        }
        dataset = try HDF5Dataset(opening: name, in: file)
        let type = try dataset.storedType()
        guard type.isFloat, [2, 4, 8].contains(type.bytes) else {
            throw InterpError("dataset '\(name)' is not floating point (float16, float32 or float64)", file: path)
        }
        guard dataset.shape.count >= 2 else {
            throw InterpError("dataset '\(name)' has shape \(dataset.shape); activations need [n_tokens, d, …]", file: path)
        }
        guard dataset.rowWidth > 0 else { throw InterpError("dataset '\(name)' has rows of width 0", file: path) }
        chunkRows = try Self.chunkLength(dataset) ?? 4096
    }

    private static func chunkLength(_ dataset: HDF5Dataset) throws -> Int? {
        let plist = HDF5Handle(try HDF5.check(H5Dget_create_plist(dataset.handle.id), "cannot read the layout of '\(dataset.name)'", file: dataset.file.path), close: H5Pclose)
        guard H5Pget_layout(plist.id) == H5D_CHUNKED else { return nil }
        var dims = [hsize_t](repeating: 0, count: dataset.shape.count)
        guard H5Pget_chunk(plist.id, Int32(dims.count), &dims) >= 0, dims[0] > 0 else { return nil }
        return Int(dims[0])
    }

    /// Rows `range` as float32 into `destination` (`range.count × width` floats).
    public func read(rows range: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws {
        try dataset.read(rows: range, into: destination, type: .float32)
    }

    public func read(rows range: Range<Int>) throws -> Tensor {
        var tensor = Tensor(zeros: [range.count, width])
        try tensor.withUnsafeMutableBufferPointer { try read(rows: range, into: $0.baseAddress!) }
        return tensor
    }

    /// Per-feature mean and the mean row norm over `range`, in one pass with float64 accumulators, reading `chunkRows`
    /// rows at a time. (SAELens's `expected_average_only_in` scaling divides by the mean row norm over √d.)
    public func statistics(rows range: Range<Int>? = nil) throws -> (mean: [Float], meanNorm: Double, rows: Int) {
        let range = range ?? 0..<rows
        guard !range.isEmpty else { throw InterpError("no rows to compute statistics over", file: path) }
        var sums = [Double](repeating: 0, count: width)
        var normSum = 0.0
        var buffer = [Float](repeating: 0, count: chunkRows * width)
        var start = range.lowerBound
        while start < range.upperBound {
            let end = min(start + chunkRows, range.upperBound)
            try buffer.withUnsafeMutableBufferPointer { try read(rows: start..<end, into: $0.baseAddress!) }
            for r in 0..<(end - start) {
                var squares = 0.0
                for i in 0..<width {
                    let v = Double(buffer[r * width + i])
                    sums[i] += v
                    squares += v * v
                }
                normSum += squares.squareRoot()
            }
            start = end
        }
        let n = Double(range.count)
        return (sums.map { Float($0 / n) }, normSum / n, range.count)
    }
}
