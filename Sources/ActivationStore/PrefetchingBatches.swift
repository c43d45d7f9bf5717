import Dispatch

/// Reads the next batch on a background thread while the caller works on the current one. The iterator is only
/// ever touched from that thread, one call at a time, so batches come in exactly the iterator's order.
public final class PrefetchingBatches: @unchecked Sendable {
    private let iterator: BatchIterator
    private let queue = DispatchQueue(label: "interp.prefetch")
    private let ready = DispatchSemaphore(value: 0)
    private var pending: Result<BatchIterator.Batch?, Error>?
    private var finished = false

    /// Starts reading the first batch at once.
    public init(_ iterator: BatchIterator) {
        self.iterator = iterator
        fetch()
    }

    private func fetch() {
        queue.async { [self] in
            pending = Result { try iterator.next() }
            ready.signal()
        }
    }

    /// The next batch (waiting for it if it is still being read), and starts reading the one after.
    public func next() throws -> BatchIterator.Batch? {
        guard !finished else { return nil }
        ready.wait()
        let result = pending!
        pending = nil
        switch result {
        case .success(let batch?):
            fetch()
            return batch
        case .success(nil):
            finished = true
            return nil
        case .failure(let error):
            finished = true
            throw error
        }
    }

    /// Waits until no read is in flight (before the file is used elsewhere or closed).
    public func stop() {
        queue.sync {}
        finished = true
    }

    deinit { queue.sync {} }
}
