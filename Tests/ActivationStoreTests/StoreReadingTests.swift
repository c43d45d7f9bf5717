import ActivationStore
import Foundation
import InterpCore
import InterpTestSupport
import SafeTensors
import Testing

/// Reading HDF5 written by h5py (fixtures/make_store.py), and refusing what is not activations.
@Suite struct StoreReadingTests {
    static let h5py = Fixtures.root + "/store/h5py-written.h5"

    @Test(arguments: ["activations", "acts_f16", "acts_f64", "heads"])
    func readsWhatH5pyWrote(name: String) throws {
        let reader = try ActivationReader(path: Self.h5py, dataset: name)
        let expected = try SafeTensorsFile(path: Fixtures.root + "/store/h5py-written-values.safetensors").tensor(name)
        let got = try reader.read(rows: 0..<reader.rows)
        #expect(got.scalars == expected.scalars)
        #expect(got.shape == [expected.shape[0], expected.shape.dropFirst().reduce(1, *)])
        // Any row range reads the same rows.
        let middle = try reader.read(rows: 7..<19)
        #expect(middle.scalars == Array(expected.scalars[(7 * reader.width)..<(19 * reader.width)]))
    }

    @Test func chunkLengthIsRead() throws {
        #expect(try ActivationReader(path: Self.h5py, dataset: "activations").chunkRows == 64)
        #expect(try ActivationReader(path: Self.h5py, dataset: "acts_f64").chunkRows == 4096)   // contiguous
    }

    @Test func refusesWhatIsNotActivations() throws {
        #expect(throws: InterpError("dataset 'ints' is not floating point (float16, float32 or float64)", file: Self.h5py)) {
            try ActivationReader(path: Self.h5py, dataset: "ints")
        }
        #expect(throws: InterpError("dataset 'vector' has shape [10]; activations need [n_tokens, d, …]", file: Self.h5py)) {
            try ActivationReader(path: Self.h5py, dataset: "vector")
        }
        #expect(throws: InterpError("no dataset named 'missing' (datasets: 'activations', 'acts_f16', 'acts_f64', 'heads', 'ints', 'vector')", file: Self.h5py)) {
            try ActivationReader(path: Self.h5py, dataset: "missing")
        }
        let reader = try ActivationReader(path: Self.h5py, dataset: "activations")
        #expect(throws: InterpError.self) { try reader.read(rows: 290..<310) }
    }

    @Test func damagedFilesGiveOneLineErrors() throws {
        let dir = try Fixtures.temporaryDirectory()
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.h5py))
        let truncated = dir + "/truncated.h5"
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: truncated))
        #expect(throws: InterpError("HDF5 could not open it (truncated or damaged)", file: truncated)) {
            try ActivationReader(path: truncated, dataset: "activations")
        }
        let text = dir + "/text.h5"
        try Data("not hdf5 at all".utf8).write(to: URL(fileURLWithPath: text))
        #expect(throws: InterpError("not an HDF5 file", file: text)) { try ActivationReader(path: text, dataset: "activations") }
        #expect(throws: InterpError("no such file", file: dir + "/none.h5")) { try ActivationReader(path: dir + "/none.h5", dataset: "x") }
        // A superblock intact but data damaged: reading fails with an error, not garbage or a crash.
        var damaged = data
        let start = damaged.count - 20_000
        for i in start..<(start + 4_000) { damaged[i] = 0xFF }
        let damagedPath = dir + "/damaged.h5"
        try damaged.write(to: URL(fileURLWithPath: damagedPath))
        if let reader = try? ActivationReader(path: damagedPath, dataset: "heads") {
            _ = try? reader.read(rows: 0..<reader.rows)   // may fail or not, but must not crash
        }
    }

    @Test func statisticsMatchADirectComputation() throws {
        let reader = try ActivationReader(path: Self.h5py, dataset: "activations")
        let all = try reader.read(rows: 0..<reader.rows).scalars
        let (mean, meanNorm, rows) = try reader.statistics()
        #expect(rows == 300)
        for i in 0..<reader.width {
            let direct = (0..<rows).reduce(0.0) { $0 + Double(all[$1 * reader.width + i]) } / Double(rows)
            #expect(Swift.abs(Double(mean[i]) - direct) < 1e-6)
        }
        let norms = (0..<rows).map { r in (0..<reader.width).reduce(0.0) { $0 + Double(all[r * reader.width + $1]) * Double(all[r * reader.width + $1]) }.squareRoot() }
        #expect(Swift.abs(meanNorm - norms.reduce(0, +) / Double(rows)) < 1e-9)
    }
}

@Suite struct BatchIteratorTests {
    func collect(_ options: BatchIterator.Options) throws -> (epochs: [[Int]], iterator: BatchIterator, batches: [Tensor]) {
        let reader = try ActivationReader(path: StoreReadingTests.h5py, dataset: "activations")
        let iterator = try BatchIterator(reader: reader, options: options)
        var epochs: [[Int]] = Array(repeating: [], count: options.epochs)
        var batches: [Tensor] = []
        while let batch = try iterator.next() {
            epochs[iterator.currentEpoch].append(contentsOf: batch.rowIndices)
            batches.append(batch.values)
        }
        return (epochs, iterator, batches)
    }

    @Test func shuffledEpochsVisitEveryRowOnce() throws {
        let (epochs, iterator, batches) = try collect(.init(batchSize: 32, shuffle: true, seed: 7, epochs: 3, bufferChunks: 2))
        for epoch in epochs { #expect(epoch.sorted() == Array(0..<300)) }
        #expect(epochs[0] != epochs[1] && epochs[1] != epochs[2])
        #expect(epochs[0] != Array(0..<300))
        // Memory: at most two 64-row chunks plus the leftovers of less than one batch.
        #expect(iterator.peakBufferedRows <= 2 * 64 + 31)
        // 300 rows = 9 batches of 32 and one of 12, each epoch.
        #expect(batches.map { $0.shape[0] } == Array(repeating: Array(repeating: 32, count: 9) + [12], count: 3).flatMap { $0 })
        // Values travel with their indices.
        let reader = try ActivationReader(path: StoreReadingTests.h5py, dataset: "activations")
        let all = try reader.read(rows: 0..<300)
        let again = try BatchIterator(reader: reader, options: .init(batchSize: 32, shuffle: true, seed: 7, epochs: 1, bufferChunks: 2))
        let first = try #require(try again.next())
        for (k, row) in first.rowIndices.enumerated() {
            #expect(Array(first.values.scalars[(k * 24)..<((k + 1) * 24)]) == Array(all.scalars[(row * 24)..<((row + 1) * 24)]))
        }
    }

    /// Prefetching on a background thread serves exactly the iterator's batches, in order, and then ends.
    @Test func prefetchingServesTheSameBatches() throws {
        let options = BatchIterator.Options(batchSize: 32, shuffle: true, seed: 5, epochs: 2, bufferChunks: 2)
        let direct = try collect(options).batches
        let reader = try ActivationReader(path: StoreReadingTests.h5py, dataset: "activations")
        let prefetcher = PrefetchingBatches(try BatchIterator(reader: reader, options: options))
        var fetched: [Tensor] = []
        while let batch = try prefetcher.next() { fetched.append(batch.values) }
        #expect(fetched == direct && fetched.count == 20)
        #expect(try prefetcher.next() == nil)
        prefetcher.stop()
    }

    @Test func sameSeedSameOrder() throws {
        let a = try collect(.init(batchSize: 50, seed: 3, epochs: 1)).epochs
        let b = try collect(.init(batchSize: 50, seed: 3, epochs: 1)).epochs
        let c = try collect(.init(batchSize: 50, seed: 4, epochs: 1)).epochs
        #expect(a == b && a != c)
    }

    @Test func unshuffledRangeInOrder() throws {
        let (epochs, _, batches) = try collect(.init(batchSize: 40, shuffle: false, epochs: 1, rowRange: 10..<250))
        #expect(epochs[0] == Array(10..<250))
        #expect(batches.map { $0.shape[0] } == [40, 40, 40, 40, 40, 40])
        let dropped = try collect(.init(batchSize: 100, shuffle: false, epochs: 1, rowRange: 10..<250, keepLastPartialBatch: false))
        #expect(dropped.epochs[0] == Array(10..<210))
    }

    @Test func badOptions() throws {
        let reader = try ActivationReader(path: StoreReadingTests.h5py, dataset: "activations")
        #expect(throws: InterpError.self) { try BatchIterator(reader: reader, options: .init(batchSize: 0)) }
        #expect(throws: InterpError.self) { try BatchIterator(reader: reader, options: .init(batchSize: 4, rowRange: 250..<400)) }
    }
}
