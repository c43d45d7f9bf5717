import ArgumentParser
import Foundation
import Interp

struct StoreBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "Write rows × 512 float32 to HDF5 (4,096-row chunks, fsync), then read it back in shuffled chunk order and sequentially, cold.",
        discussion: "Dropping the page cache needs root; without it the reads are reported as warm. Peer: fixtures/bench_peer_store.py.")
    @Option(help: "Rows to write.") var rows = 1_000_000
    @Option(help: "Directory for the 2 GB file.") var directory = NSTemporaryDirectory()

    func run() throws {
        let width = 512, chunk = 4096
        let path = (directory as NSString).appendingPathComponent("interp-bench-store-\(getpid()).h5")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let megabytes = Double(rows * width * 4) / 1e6
        var rng = SeededRandom(seed: 1)
        var block = (0..<(chunk * width)).map { _ in rng.nextNormal() }

        let writeStart = Date()
        do {
            let file = try HDF5File(creating: path, truncate: true)
            let dataset = try HDF5Dataset(creating: "activations", in: file, type: .float32, rowShape: [width], chunkRows: chunk)
            var written = 0
            while written < rows {
                let count = min(chunk, rows - written)
                block[written % block.count] += 1   // each block differs a little
                try block.withUnsafeBytes { try dataset.append($0.baseAddress!, rows: count, type: .float32) }
                written += count
            }
        }
        let fd = open(path, O_RDONLY)
        fsync(fd)
        close(fd)
        let writeSeconds = Date().timeIntervalSince(writeStart)
        print("store write \(rows) × \(width) float32 (\(String(format: "%.0f", megabytes)) MB) with fsync: \(String(format: "%.2f", writeSeconds)) s, \(String(format: "%.0f", megabytes / writeSeconds)) MB/s")

        let reader = try ActivationReader(path: path, dataset: "activations")
        var buffer = [Float](repeating: 0, count: chunk * width)
        for order in ["shuffled", "sequential"] {
            let cold = dropPageCache()
            var blocks = Array(stride(from: 0, to: rows, by: chunk))
            if order == "shuffled" { blocks.shuffle(using: &rng) }
            let start = Date()
            var checksum: Float = 0
            for first in blocks {
                let range = first..<min(first + chunk, rows)
                try buffer.withUnsafeMutableBufferPointer { try reader.read(rows: range, into: $0.baseAddress!) }
                checksum += buffer[0]
            }
            let seconds = Date().timeIntervalSince(start)
            print("store read \(order) chunks (\(cold ? "cold" : "warm: could not drop the page cache")): \(String(format: "%.2f", seconds)) s, \(String(format: "%.0f", megabytes / seconds)) MB/s (checksum \(checksum))")
        }
        let cold = dropPageCache()
        let start = Date()
        let iterator = try BatchIterator(reader: reader, options: .init(batchSize: 4096, shuffle: true, seed: 2, epochs: 1, bufferChunks: 8))
        var served = 0
        while let batch = try iterator.next() { served += batch.rowIndices.count }
        let seconds = Date().timeIntervalSince(start)
        print("store shuffled batches via BatchIterator (\(cold ? "cold" : "warm")): \(served) rows, \(String(format: "%.2f", seconds)) s, \(String(format: "%.0f", megabytes / seconds)) MB/s")
        print("  peak RSS: \(String(format: "%.0f", peakRSSMegabytes())) MB")
    }

    func dropPageCache() -> Bool {
        sync()
        guard let handle = FileHandle(forWritingAtPath: "/proc/sys/vm/drop_caches") else { return false }
        defer { try? handle.close() }
        do { try handle.write(contentsOf: Data("3\n".utf8)) } catch { return false }
        return true
    }
}

struct CacheBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Cache blocks.6.hook_resid_post of a GPT-2-small-shape model (random weights) to HDF5; compare with the plain forward.")
    @Option(help: "Batches of 8 × 128 tokens.") var batches = 4
    @Option(help: "Directory for the store.") var directory = NSTemporaryDirectory()

    func run() throws {
        let config = gpt2SmallShape
        let model = try randomModel(config, seed: 0)
        var rng = SeededRandom(seed: 3)
        let sequences = (0..<(8 * batches)).map { _ in (0..<128).map { _ in Int32(rng.next() % 50257) } }
        let out = (directory as NSString).appendingPathComponent("interp-bench-cache-\(getpid()).h5")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let settings = CacheSettings(hooks: ["blocks.6.hook_resid_post"], source: "tokens", inputHash: "-", contextLength: -1,
                                     prependBOS: false, excludeBOS: false, bosTokenID: -1, batchSize: 8, maxTokens: nil,
                                     gzipLevel: nil, modelName: config.modelName, modelFormat: "random", modelWeightsHash: "-")
        let tokens = Double(sequences.count * 128)
        // Plain forward over the same batches, full logits (the `forward` workload).
        _ = try model.run(TokenBatch(sequences.prefix(8).map { $0.map(Int.init) }, config: config))
        let forwardStart = Date()
        for b in 0..<batches {
            _ = try model.run(TokenBatch(sequences[(b * 8)..<((b + 1) * 8)].map { $0.map(Int.init) }, config: config))
        }
        let forwardSeconds = Date().timeIntervalSince(forwardStart)
        let job = try ActivationCacheJob(model: model, settings: settings, sequences: sequences, output: out)
        let cacheStart = Date()
        _ = try job.run(mode: .overwrite)
        let cacheSeconds = Date().timeIntervalSince(cacheStart)
        print("forward (full logits): \(String(format: "%.0f", tokens / forwardSeconds)) tokens/s")
        print("cache blocks.6.hook_resid_post to HDF5 (stops after layer 6, spool + fsync + HDF5 store): \(String(format: "%.0f", tokens / cacheSeconds)) tokens/s, \(String(format: "%.2f", forwardSeconds / cacheSeconds))× the forward")
        print("  peak RSS: \(String(format: "%.0f", peakRSSMegabytes())) MB")
        print("  BLAS: \(BLASInfo.coreName) kernel, \(BLASInfo.threads) threads")
    }
}
