import Dispatch
import Foundation

/// Cores available to this process, read once: Foundation reads it from a file on every call.
public let processorCount = ProcessInfo.processInfo.activeProcessorCount

/// Splits `0..<count` into contiguous chunks and runs them on all cores. For elementwise kernels only:
/// BLAS calls bring their own threads.
public func parallelChunks(_ count: Int, minimumChunk: Int = 4096, _ body: (Range<Int>) -> Void) {
    let cores = processorCount
    let chunks = max(1, min(cores, count / max(minimumChunk, 1)))
    if chunks == 1 {
        body(0..<count)
        return
    }
    DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
        let start = count * chunk / chunks
        let end = count * (chunk + 1) / chunks
        body(start..<end)
    }
}
