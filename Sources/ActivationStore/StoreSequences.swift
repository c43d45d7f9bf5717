import InterpCore

/// The token sequences an interp store was made from, rebuilt from its `tokens`, `sequence` and `position` datasets.
/// Rows left out with `--exclude-bos` were BOS tokens, so every missing position is put back as `bos_token_id`, and text
/// windows are filled up to the store's `context_length` (a window may end with a BOS separator).
public enum StoreSequences {
    public static func read(path: String, limit: Int = .max) throws -> [[Int32]] {
        let file = try HDF5File(reading: path)
        for name in StoreLayout.indexDatasets where !file.exists(name) {
            throw InterpError("has no '\(name)' dataset: not a store made by `interp cache`, so the tokens are unknown", file: path)
        }
        func column(_ name: String) throws -> [Int32] {
            let dataset = try HDF5Dataset(opening: name, in: file)
            var values = [Int32](repeating: 0, count: dataset.rows)
            try values.withUnsafeMutableBytes { try dataset.read(rows: 0..<dataset.rows, into: $0.baseAddress!, type: .int32) }
            return values
        }
        let tokens = try column(StoreLayout.tokens), sequence = try column(StoreLayout.sequence), position = try column(StoreLayout.position)
        let metadata = try StoreMetadata.read(from: file)
        var bos: Int32 = -1
        if metadata.excludeBOS == true, let id = metadata.bosTokenID {
            guard let id32 = Int32(exactly: id) else { throw InterpError("attribute 'bos_token_id' \(id) is not a token id", file: path) }
            bos = id32
        }
        let windowLength = metadata.contextLength ?? -1
        var sequences: [[Int32]] = []
        var current: [Int32] = [], currentIndex: Int32 = -1
        func close() {
            if bos >= 0 && windowLength > 0 { while !current.isEmpty && current.count < windowLength { current.append(bos) } }
            if !current.isEmpty { sequences.append(current) }
            current = []
        }
        for r in tokens.indices {
            if sequence[r] != currentIndex {
                close()
                if sequences.count >= limit { break }
                currentIndex = sequence[r]
            }
            while current.count < Int(position[r]) {
                guard bos >= 0 else {
                    throw InterpError("sequence \(sequence[r]) has a gap at position \(current.count); its tokens cannot be rebuilt", file: path)
                }
                current.append(bos)
            }
            current.append(tokens[r])
        }
        if sequences.count < limit { close() }
        return sequences
    }
}
