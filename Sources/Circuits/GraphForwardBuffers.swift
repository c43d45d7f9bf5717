/// Scratch buffers kept across a `GraphForward`'s runs: fresh pages cost more than the arithmetic of a run.
final class ScratchPool {
    private var free: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []
    private var taken: [(pointer: UnsafeMutablePointer<Float>, capacity: Int)] = []

    deinit { (free + taken).forEach { $0.pointer.deallocate() } }

    /// A buffer of at least `count` floats, until `releaseAll`: the smallest free one that fits (a large one taken for
    /// a small request would be missed later), else a new one.
    func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        var best: Int?
        for i in free.indices where free[i].capacity >= count && (best == nil || free[i].capacity < free[best!].capacity) { best = i }
        if let best {
            taken.append(free.remove(at: best))
        } else {
            taken.append((.allocate(capacity: max(count, 1)), max(count, 1)))
        }
        return taken.last!.pointer
    }

    /// Every buffer taken is free again.
    func releaseAll() {
        free += taken
        taken.removeAll()
    }
}

/// Sender outputs kept from earlier runs for later ones (`GraphForward.Computed`'s delta and change, each
/// `[rows0, D]`, or `[R, D]` in the last layer), each with the key of everything it depends on (see
/// `GraphForward.plan`).
final class KeptOutputs {
    private var outputs: [Int: (key: [Int], delta: UnsafeMutablePointer<Float>, change: UnsafeMutablePointer<Float>)] = [:]

    deinit { outputs.values.forEach { $0.delta.deallocate(); $0.change.deallocate() } }

    /// Sender s's kept output, if it was made from what `key` says.
    func output(of s: Int, key: [Int]) -> (delta: UnsafeMutablePointer<Float>, change: UnsafeMutablePointer<Float>)? {
        guard let kept = outputs[s], kept.key == key else { return nil }
        return (kept.delta, kept.change)
    }

    /// Where to write sender s's output made from what `key` says, `count` floats each: its earlier buffers (their
    /// contents now out of date), or new ones.
    func buffers(for s: Int, key: [Int], count: Int) -> (delta: UnsafeMutablePointer<Float>, change: UnsafeMutablePointer<Float>) {
        let kept = outputs[s] ?? (key, .allocate(capacity: count), .allocate(capacity: count))
        outputs[s] = (key, kept.delta, kept.change)
        return (kept.delta, kept.change)
    }
}
