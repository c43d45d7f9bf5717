import Foundation
import InterpCore
import InterpModels

/// Everything that determines a store's contents. Saved beside an interrupted run; `--resume` continues only if the
/// new invocation's settings are the same.
public struct CacheSettings: Codable, Equatable, Sendable {
    public var hooks: [String]
    public var source: String                 // "tokens" or "text"
    public var inputHash: String
    public var contextLength: Int             // −1 for token input
    public var prependBOS: Bool
    public var excludeBOS: Bool
    public var bosTokenID: Int32              // −1 if unknown
    public var batchSize: Int
    public var maxTokens: Int?
    public var gzipLevel: Int?
    public var modelName: String
    public var modelFormat: String
    public var modelWeightsHash: String

    public init(hooks: [String], source: String, inputHash: String, contextLength: Int, prependBOS: Bool, excludeBOS: Bool,
                bosTokenID: Int32, batchSize: Int, maxTokens: Int?, gzipLevel: Int?, modelName: String, modelFormat: String,
                modelWeightsHash: String) {
        self.hooks = hooks
        self.source = source
        self.inputHash = inputHash
        self.contextLength = contextLength
        self.prependBOS = prependBOS
        self.excludeBOS = excludeBOS
        self.bosTokenID = bosTokenID
        self.batchSize = batchSize
        self.maxTokens = maxTokens
        self.gzipLevel = gzipLevel
        self.modelName = modelName
        self.modelFormat = modelFormat
        self.modelWeightsHash = modelWeightsHash
    }
}

public struct CacheProgress: Sendable {
    public let tokensDone: Int
    public let tokensTotal: Int
    public let seconds: Double
    public var tokensPerSecond: Double { seconds > 0 ? Double(tokensDone - tokensAtStart) / seconds : 0 }
    public var secondsLeft: Double? { tokensPerSecond > 0 ? Double(tokensTotal - tokensDone) / tokensPerSecond : nil }
    let tokensAtStart: Int
}

public struct CacheSummary: Sendable {
    public let path: String
    public let tokens: Int
    public let sequences: Int
    public let hooks: [String]
    public let resumedFrom: Int
}

/// Caches a model's activations at some hooks for a list of sequences into an HDF5 store (layout: `StoreLayout`).
///
/// Crash safety: batches are appended to raw files in `<out>.partial/`, and a progress record is replaced
/// atomically after each batch, so a process killed at any moment leaves a consistent spool; `resume` truncates the
/// spool to its last record and carries on. When every sequence is done the spool is streamed into an HDF5 file under
/// a temporary name, marked complete, synced and renamed to `<out>`: the output path only ever holds a whole store.
public final class ActivationCacheJob {
    public enum Mode: Sendable { case create, overwrite, resume }

    public let model: TransformerModel
    public let settings: CacheSettings
    public let sequences: [[Int32]]
    public let output: String
    private let hookNames: [HookName]
    private var spool: String { output + ".partial" }

    public init(model: TransformerModel, settings: CacheSettings, sequences: [[Int32]], output: String) throws {
        self.model = model
        self.settings = settings
        self.sequences = sequences
        self.output = output
        guard !sequences.isEmpty, sequences.allSatisfy({ !$0.isEmpty }) else { throw InterpError("there are no token sequences to cache") }
        guard settings.batchSize > 0 else { throw InterpError("the batch size must be positive") }
        if let maxTokens = settings.maxTokens, maxTokens <= 0 { throw InterpError("--max-tokens must be positive") }
        hookNames = try settings.hooks.map { try HookName(parsing: $0) }
        guard !hookNames.isEmpty else { throw InterpError("no hooks to cache") }
        for name in hookNames where Array(name.site.shape.prefix(2)) != [.batch, .pos] {
            throw InterpError("hook '\(name)' has shape [\(name.site.shape.map(\.rawValue).joined(separator: ", "))], not one row per token, so it cannot go in an activation store")
        }
        if settings.excludeBOS && settings.bosTokenID < 0 {
            throw InterpError("--exclude-bos needs the BOS token, and the model has no tokenizer to name it")
        }
        let available = Set(model.config.hookPoints)
        if let missing = hookNames.first(where: { !available.contains($0) }) {
            throw InterpError("hook '\(missing)' does not exist in this model (see `interp info` for its hooks)")
        }
        for (index, sequence) in sequences.enumerated() {
            if sequence.count > model.config.nCtx {
                throw InterpError("sequence \(index) has \(sequence.count) tokens, more than the model's context of \(model.config.nCtx)")
            }
            if let bad = sequence.first(where: { $0 < 0 || Int($0) >= model.config.dVocab }) {
                throw InterpError("sequence \(index) has token id \(bad), outside the vocabulary (0..<\(model.config.dVocab))")
            }
        }
    }

    /// Rows per token for each dataset, and their shapes after the row axis.
    private var rowShapes: [(name: String, shape: [Int], type: StoredType)] {
        hookNames.map { ($0.description, Array($0.shape(for: model.config, batch: 1, positions: 1).dropFirst(2)), .float32) }
            + StoreLayout.indexDatasets.map { ($0, [], .int32) }
    }

    /// Tokens the finished store will hold.
    public var plannedTokens: Int {
        let all = sequences.reduce(0) { total, s in
            total + (settings.excludeBOS ? s.filter { $0 != settings.bosTokenID }.count : s.count)
        }
        return min(all, settings.maxTokens ?? all)
    }

    public func run(mode: Mode, progress: (CacheProgress) -> Void = { _ in }) throws -> CacheSummary {
        let fm = FileManager.default
        switch mode {
        case .create:
            if fm.fileExists(atPath: output) { throw InterpError("already exists; use --overwrite to replace it", file: output) }
            if fm.fileExists(atPath: spool) {
                throw InterpError("an interrupted run is here (\((spool as NSString).lastPathComponent)); use --resume to continue it or --overwrite to start again", file: output)
            }
        case .overwrite:
            try? fm.removeItem(atPath: spool)
        case .resume:
            if !fm.fileExists(atPath: spool) {
                throw InterpError(fm.fileExists(atPath: output) ? "already complete; there is nothing to resume" : "there is no interrupted run to resume", file: output)
            }
        }
        var state = try openSpool(resume: mode == .resume)
        let start = Date()
        let startRows = state.rows
        let total = plannedTokens
        var index = state.sequences
        while index < sequences.count && state.rows < total {
            let length = sequences[index].count
            var end = index + 1
            while end < sequences.count && end - index < settings.batchSize && sequences[end].count == length { end += 1 }
            try cacheBatch(index..<end, state: &state, limit: total)
            state.sequences = end
            try state.commit()
            index = end
            progress(CacheProgress(tokensDone: state.rows, tokensTotal: total, seconds: Date().timeIntervalSince(start), tokensAtStart: startRows))
        }
        try finalize(state: state)
        return CacheSummary(path: output, tokens: state.rows, sequences: state.sequences, hooks: settings.hooks, resumedFrom: startRows)
    }

    // MARK: - Spool

    /// The raw files of an unfinished store and its progress record.
    private struct Spool {
        let directory: String
        var files: [Int32]          // one descriptor per dataset, in `rowShapes` order
        var rowBytes: [Int]
        var rows: Int
        var sequences: Int

        /// Makes the rows written so far durable, then records them: the record never vouches for data not on disk.
        func commit() throws {
            for fd in files where fdatasync(fd) != 0 {
                throw InterpError("cannot sync the cached rows (\(String(cString: strerror(errno))))", file: directory)
            }
            let record = "{\"rows\":\(rows),\"sequences\":\(sequences)}\n"
            try AtomicFile.write(Data(record.utf8), to: directory + "/progress.json")
        }

        func close() { files.forEach { Glibc.close($0) } }
    }

    private struct ProgressRecord: Decodable { let rows: Int; let sequences: Int }

    private func openSpool(resume: Bool) throws -> Spool {
        let fm = FileManager.default
        let plan = spool + "/plan.json"
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        var record = ProgressRecord(rows: 0, sequences: 0)
        if resume {
            let saved = try decodeJSON(CacheSettings.self, from: Data(contentsOf: URL(fileURLWithPath: plan)), file: plan)
            if saved != settings {
                let old = try JSONValue.parse(encoder.encode(saved)).objectValue ?? [:]
                let new = try JSONValue.parse(encoder.encode(settings)).objectValue ?? [:]
                let differing = Set(old.keys).union(new.keys).sorted().first { old[$0] != new[$0] } ?? "settings"
                throw InterpError("the interrupted run was made with different settings (\(differing) differs); use --overwrite to start again", file: output)
            }
            let progressPath = spool + "/progress.json"
            record = try decodeJSON(ProgressRecord.self, from: Data(contentsOf: URL(fileURLWithPath: progressPath)), file: progressPath)
        } else {
            do { try fm.createDirectory(atPath: spool, withIntermediateDirectories: false) } catch {
                throw InterpError("cannot create the working directory (\(error.localizedDescription))", file: spool)
            }
            try AtomicFile.write(try encoder.encode(settings), to: plan)
        }
        var files: [Int32] = []
        var rowBytes: [Int] = []
        for (index, dataset) in rowShapes.enumerated() {
            let path = spool + "/\(index).bin"
            let fd = open(path, O_RDWR | O_CREAT, 0o644)
            guard fd >= 0 else { throw InterpError("cannot open (\(String(cString: strerror(errno))))", file: path) }
            let bytes = dataset.shape.reduce(1, *) * 4
            // Anything past the last committed batch is a batch cut short: drop it.
            let keep = off_t(record.rows * bytes)
            guard lseek(fd, 0, SEEK_END) >= keep, ftruncate(fd, keep) == 0, lseek(fd, keep, SEEK_SET) == keep else {
                throw InterpError("the interrupted run's data is shorter than its progress record says; use --overwrite", file: path)
            }
            files.append(fd)
            rowBytes.append(bytes)
        }
        let state = Spool(directory: spool, files: files, rowBytes: rowBytes, rows: record.rows, sequences: record.sequences)
        if !resume { try state.commit() }
        return state
    }

    private func cacheBatch(_ range: Range<Int>, state: inout Spool, limit: Int) throws {
        let rows = range.map { sequences[$0].map(Int.init) }
        let batch = try TokenBatch(rows, config: model.config)
        let (_, cache) = try model.forward(batch, hooks: Hooks(cache: Set(hookNames)), stopAfter: hookNames.max())
        // Rows to keep: all, or all but BOS; then no more than the store still needs.
        var kept: [Int] = []
        for (r, token) in batch.ids.enumerated() where !(settings.excludeBOS && token == settings.bosTokenID) { kept.append(r) }
        kept = Array(kept.prefix(limit - state.rows))
        guard !kept.isEmpty else { return }
        for (d, name) in hookNames.enumerated() {
            let tensor = cache[name]!
            let width = tensor.count / (batch.batch * batch.positions)
            var gathered = [Float](repeating: 0, count: kept.count * width)
            tensor.withUnsafeBufferPointer { source in
                gathered.withUnsafeMutableBufferPointer { target in
                    for (k, r) in kept.enumerated() {
                        (target.baseAddress! + k * width).update(from: source.baseAddress! + r * width, count: width)
                    }
                }
            }
            try gathered.withUnsafeBytes { try writeAll(state.files[d], $0, path: spool + "/\(d).bin") }
        }
        let positions = batch.positions
        let index: [[Int32]] = [
            kept.map { batch.ids[$0] },
            kept.map { Int32(range.lowerBound + $0 / positions) },
            kept.map { Int32($0 % positions) },
        ]
        for (k, values) in index.enumerated() {
            let d = hookNames.count + k
            try values.withUnsafeBytes { try writeAll(state.files[d], $0, path: spool + "/\(d).bin") }
        }
        state.rows += kept.count
    }

    private func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw InterpError("write failed (\(String(cString: strerror(errno))))", file: path)
            }
            done += n
        }
    }

    // MARK: - Finalize

    private func finalize(state: Spool) throws {
        defer { state.close() }
        let directory = (output as NSString).deletingLastPathComponent
        let temporary = (directory.isEmpty ? "." : directory) + "/.\((output as NSString).lastPathComponent).tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: temporary)
        do {
            try writeStore(to: temporary, state: state)
            let fd = open(temporary, O_RDONLY)
            if fd >= 0 { fsync(fd); Glibc.close(fd) }
            guard rename(temporary, output) == 0 else {
                throw InterpError("cannot rename into place (\(String(cString: strerror(errno))))", file: output)
            }
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        }
        try? FileManager.default.removeItem(atPath: spool)
    }

    private func writeStore(to path: String, state: Spool) throws {
        let file = try HDF5File(creating: path, truncate: true)
        for (index, dataset) in rowShapes.enumerated() {
            let rowBytes = state.rowBytes[index]
            let chunkRows = min(StoreLayout.chunkRows(rowBytes: rowBytes), max(state.rows, 1))
            let target = try HDF5Dataset(creating: dataset.name, in: file, type: dataset.type, rowShape: dataset.shape,
                                         chunkRows: chunkRows, gzipLevel: dataset.type == .float32 ? settings.gzipLevel : nil)
            if index < hookNames.count { try target.setAttribute("hook_name", string: dataset.name) }
            var buffer = [UInt8](repeating: 0, count: chunkRows * rowBytes)
            var row = 0
            while row < state.rows {
                let count = min(chunkRows, state.rows - row)
                let got = buffer.withUnsafeMutableBytes { pread(state.files[index], $0.baseAddress!, count * rowBytes, off_t(row * rowBytes)) }
                guard got == count * rowBytes else { throw InterpError("cannot read back the cached rows", file: spool + "/\(index).bin") }
                try buffer.withUnsafeBytes { try target.append($0.baseAddress!, rows: count, type: dataset.type) }
                row += count
            }
        }
        var metadata = StoreMetadata(settings: settings, tokens: state.rows, sequences: state.sequences)
        metadata.complete = true
        try metadata.write(to: file)
    }
}
