import Foundation

/// Merge ranks and the BPE merge loop over one pre-token.
struct BPEMerges {
    struct Merge { let rank: Int32; let merged: Int32 }
    private let table: [UInt64: Merge]

    init(_ table: [UInt64: Merge]) { self.table = table }

    static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b)) }

    @inline(__always)
    func merge(_ a: Int32, _ b: Int32) -> Merge? { table[Self.key(a, b)] }

    var count: Int { table.count }

    /// Applies merges lowest rank first (leftmost first among equal ranks), as Hugging Face's BPE does, with a
    /// heap of candidate pairs over a linked list of symbols: O(n log n) in the word length.
    func apply(_ symbols: [Int32]) -> [Int32] {
        let n = symbols.count
        if n < 2 { return symbols }
        if n == 2 { return merge(symbols[0], symbols[1]).map { [$0.merged] } ?? symbols }
        var ids = symbols
        var previous = (0..<n).map { Int32($0) - 1 }
        var next = (0..<n).map { $0 + 1 < n ? Int32($0 + 1) : -1 }
        var alive = [Bool](repeating: true, count: n)
        var heap = PairHeap()
        for i in 0..<(n - 1) {
            if let m = merge(ids[i], ids[i + 1]) { heap.push(.init(rank: m.rank, position: Int32(i), merged: m.merged)) }
        }
        while let top = heap.pop() {
            let i = Int(top.position)
            guard alive[i] else { continue }
            let j = Int(next[i])
            // The pair may have changed since it was queued: check it still makes this merge.
            guard j >= 0, let m = merge(ids[i], ids[j]), m.merged == top.merged, m.rank == top.rank else { continue }
            ids[i] = m.merged
            alive[j] = false
            next[i] = next[j]
            if next[j] >= 0 { previous[Int(next[j])] = Int32(i) }
            if previous[i] >= 0, let left = merge(ids[Int(previous[i])], ids[i]) {
                heap.push(.init(rank: left.rank, position: previous[i], merged: left.merged))
            }
            if next[i] >= 0, let right = merge(ids[i], ids[Int(next[i])]) {
                heap.push(.init(rank: right.rank, position: Int32(i), merged: right.merged))
            }
        }
        var out: [Int32] = []
        out.reserveCapacity(n)
        var k: Int32 = 0
        while k >= 0 {
            out.append(ids[Int(k)])
            k = next[Int(k)]
        }
        return out
    }

    /// Reference: repeatedly merge the lowest-ranked adjacent pair (leftmost on ties). O(n²).
    func applyNaive(_ symbols: [Int32]) -> [Int32] {
        var ids = symbols
        while ids.count > 1 {
            var best: (index: Int, merge: Merge)?
            for i in 0..<(ids.count - 1) {
                if let m = merge(ids[i], ids[i + 1]), best == nil || m.rank < best!.merge.rank { best = (i, m) }
            }
            guard let best else { break }
            ids.replaceSubrange(best.index...(best.index + 1), with: [best.merge.merged])
        }
        return ids
    }
}

/// A binary min-heap of merge candidates ordered by (rank, position).
struct PairHeap {
    struct Entry { let rank: Int32; let position: Int32; let merged: Int32 }
    private var items: [Entry] = []

    @inline(__always)
    private static func less(_ a: Entry, _ b: Entry) -> Bool {
        a.rank < b.rank || (a.rank == b.rank && a.position < b.position)
    }

    mutating func push(_ entry: Entry) {
        items.append(entry)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard Self.less(items[child], items[parent]) else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < items.count && Self.less(items[left], items[smallest]) { smallest = left }
                if right < items.count && Self.less(items[right], items[smallest]) { smallest = right }
                if smallest == parent { break }
                items.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return first
    }
}

/// Pre-token → ids, remembered. Keys are the raw bytes (never `String`, whose equality is canonical equivalence:
/// "é" and "e\u{301}" are equal strings but different tokens).
final class WordCache: @unchecked Sendable {
    private struct ShortKey: Hashable { let low: UInt64; let high: UInt64; let count: Int }
    private var short: [ShortKey: [Int32]] = [:]
    private var long: [[UInt8]: [Int32]] = [:]
    private let lock = NSLock()
    private let capacity: Int

    init(capacity: Int = 200_000) { self.capacity = capacity }

    private static func shortKey(_ bytes: UnsafeBufferPointer<UInt8>) -> ShortKey? {
        guard bytes.count <= 16 else { return nil }
        var low: UInt64 = 0, high: UInt64 = 0
        for (i, byte) in bytes.enumerated() {
            if i < 8 { low |= UInt64(byte) << (8 * UInt64(i)) } else { high |= UInt64(byte) << (8 * UInt64(i - 8)) }
        }
        return ShortKey(low: low, high: high, count: bytes.count)
    }

    func lookup(_ bytes: UnsafeBufferPointer<UInt8>, orCompute compute: () -> [Int32]) -> [Int32] {
        if let key = Self.shortKey(bytes) {
            if let hit = lock.withLock({ short[key] }) { return hit }
            let ids = compute()
            lock.withLock {
                if short.count >= capacity { short.removeAll(keepingCapacity: true) }
                short[key] = ids
            }
            return ids
        }
        let key = Array(bytes)
        if let hit = lock.withLock({ long[key] }) { return hit }
        let ids = compute()
        lock.withLock {
            if long.count >= capacity / 4 { long.removeAll(keepingCapacity: true) }
            long[key] = ids
        }
        return ids
    }
}

