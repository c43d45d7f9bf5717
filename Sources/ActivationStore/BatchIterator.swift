import Foundation
import InterpCore

/// Batches of rows from an activation dataset, in order or shuffled, over any number of epochs.
///
/// Shuffling is chunk-granular, because reading random single rows from HDF5 is ~100× slower than whole chunks:
/// each epoch visits the chunks of the row range in a random order, loads `bufferChunks` of them at a time, and
/// serves their rows in a random order; rows left over (fewer than a batch) join the next buffer. Every row of the
/// range is served exactly once per epoch, and memory stays at `bufferChunks` chunks whatever the file size.
public final class BatchIterator {
    public struct Options: Sendable {
        public var batchSize: Int
        public var shuffle: Bool
        public var seed: UInt64
        public var epochs: Int
        /// Rows to use (a train/test split); nil for all.
        public var rowRange: Range<Int>?
        /// Chunks held in memory while shuffling.
        public var bufferChunks: Int
        /// Serve a last, smaller batch at the end of each epoch (otherwise its rows are skipped for that epoch).
        public var keepLastPartialBatch: Bool

        public init(batchSize: Int, shuffle: Bool = true, seed: UInt64 = 0, epochs: Int = 1, rowRange: Range<Int>? = nil,
                    bufferChunks: Int = 8, keepLastPartialBatch: Bool = true) {
            self.batchSize = batchSize
            self.shuffle = shuffle
            self.seed = seed
            self.epochs = epochs
            self.rowRange = rowRange
            self.bufferChunks = bufferChunks
            self.keepLastPartialBatch = keepLastPartialBatch
        }
    }

    /// One batch: the rows `[count, width]` and the index of each in the dataset.
    public struct Batch {
        public let values: Tensor
        public let rowIndices: [Int]
    }

    public let reader: ActivationReader
    public let options: Options
    private let range: Range<Int>
    private var rng: SeededRandom
    private var epoch = 0
    private var blocks: [Range<Int>] = []          // this epoch's chunk-aligned row blocks, in visiting order
    private var nextBlock = 0
    // Two buffers of `capacity` rows, allocated once: rows are served from `buffer`; a refill gathers the rows not yet
    // served into `spare`, reads new blocks after them, and swaps.
    private let capacity: Int
    private var buffer: UnsafeMutablePointer<Float>
    private var spare: UnsafeMutablePointer<Float>
    private var bufferRows: [Int] = []             // dataset index of each row in `buffer`
    private var order: [Int] = []                  // rows of `buffer` in serving order
    private var served = 0

    public init(reader: ActivationReader, options: Options) throws {
        guard options.batchSize > 0 else { throw InterpError("the batch size must be positive") }
        guard options.epochs > 0 else { throw InterpError("the number of epochs must be positive") }
        let range = options.rowRange ?? 0..<reader.rows
        guard range.lowerBound >= 0, range.upperBound <= reader.rows, !range.isEmpty else {
            throw InterpError("row range \(range) is empty or outside the dataset's \(reader.rows) rows", file: reader.path)
        }
        self.reader = reader
        self.options = options
        self.range = range
        rng = SeededRandom(seed: options.seed)
        capacity = max(options.bufferChunks, 1) * reader.chunkRows + options.batchSize
        buffer = .allocate(capacity: capacity * reader.width)
        spare = .allocate(capacity: capacity * reader.width)
        startEpoch()
    }

    deinit {
        buffer.deallocate()
        spare.deallocate()
    }

    /// Rows served per epoch.
    public var rowsPerEpoch: Int { range.count }
    public var currentEpoch: Int { epoch }
    /// The most rows held in memory at once so far (at most `bufferChunks` chunks plus one batch's leftovers).
    public private(set) var peakBufferedRows = 0

    private func startEpoch() {
        let chunk = reader.chunkRows
        var start = range.lowerBound
        blocks = []
        while start < range.upperBound {
            let end = min((start / chunk + 1) * chunk, range.upperBound)
            blocks.append(start..<end)
            start = end
        }
        if options.shuffle { blocks.shuffle(using: &rng) }
        nextBlock = 0
    }

    /// The next batch, or nil after the last epoch.
    public func next() throws -> Batch? {
        let width = reader.width
        while true {
            let available = order.count - served
            let epochEnding = nextBlock == blocks.count
            if available >= options.batchSize || (available > 0 && epochEnding && options.keepLastPartialBatch) {
                let take = min(options.batchSize, available)
                let picked = order[served..<(served + take)]
                served += take
                let source = buffer
                let values = [Float](unsafeUninitializedCapacity: take * width) { target, initialized in
                    for (k, row) in picked.enumerated() {
                        (target.baseAddress! + k * width).initialize(from: source + row * width, count: width)
                    }
                    initialized = take * width
                }
                return Batch(values: Tensor(shape: [take, width], scalars: values), rowIndices: picked.map { bufferRows[$0] })
            }
            if epochEnding {
                epoch += 1
                bufferRows = []
                order = []
                served = 0
                guard epoch < options.epochs else { return nil }
                startEpoch()
                continue
            }
            try refill()
        }
    }

    private func refill() throws {
        let width = reader.width
        let unserved = order[served...]
        var rows = unserved.map { bufferRows[$0] }
        var filled = unserved.count
        let newBlocks = blocks[nextBlock..<min(nextBlock + max(options.bufferChunks, 1), blocks.count)]
        nextBlock += newBlocks.count
        for (k, row) in unserved.enumerated() {
            (spare + k * width).update(from: buffer + row * width, count: width)
        }
        for block in newBlocks {
            try reader.read(rows: block, into: spare + filled * width)
            filled += block.count
            rows.append(contentsOf: block)
        }
        swap(&buffer, &spare)
        bufferRows = rows
        order = Array(0..<filled)
        if options.shuffle { order.shuffle(using: &rng) }
        served = 0
        peakBufferedRows = max(peakBufferedRows, filled)
    }
}
