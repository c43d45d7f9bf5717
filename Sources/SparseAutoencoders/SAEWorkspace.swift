/// The large buffers of one training step, kept from step to step. Arrays of tens of megabytes are mapped fresh by
/// the allocator each time and fault their pages in again; reusing them avoids that. Results built from these arrays
/// share their storage; once a result is dropped the next step writes in place.
public final class SAEWorkspace {
    var centred: [Float] = [], pre: [Float] = [], xhat: [Float] = [], g: [Float] = [], dCentred: [Float] = []
    var dz: [Float] = [], z: [Float] = [], gWEnc: [Float] = [], gWDec: [Float] = []
    private var scratch: [Scratch: (pointer: UnsafeMutablePointer<Float>, capacity: Int)] = [:]
    private var indexScratch: [Scratch: (pointer: UnsafeMutablePointer<Int32>, capacity: Int)] = [:]
    /// One list of sparse-code entries per worker.
    var entryLists: [SparseEntryList] = []

    /// Internal buffers that never leave a step (no result shares them).
    enum Scratch: Hashable { case centred, pre, g, auxGradient, encoderT, privateDecoder, privateEncoderT, privateSmall, entryValues, entryRows, offsets, cursor, denseGradient }

    public init() {}

    deinit {
        for (_, buffer) in scratch { buffer.pointer.deallocate() }
        for (_, buffer) in indexScratch { buffer.pointer.deallocate() }
    }

    /// `z [rows × width]` all zero: a fresh buffer, or the last sparse step's entries cleared (instead of writing every
    /// element), or a full clear.
    func takeZeroedZ(rows: Int, width: Int) -> [Float] {
        let tracked = zTrackedWidth == width && z.count == rows * width
        var buffer = take(\.z, count: rows * width)
        guard tracked else {
            buffer.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
            return buffer
        }
        buffer.withUnsafeMutableBufferPointer { z in
            for list in entryLists {
                for e in 0..<list.count where list.rows[e] >= 0 { z[Int(list.rows[e]) * width + Int(list.latents[e])] = 0 }
            }
        }
        return buffer
    }

    func entryLists(_ count: Int) -> [SparseEntryList] {
        while entryLists.count < count { entryLists.append(SparseEntryList()) }
        for list in entryLists { list.count = 0 }
        return Array(entryLists.prefix(count))
    }

    /// Like `scratch`, for indices.
    func indexScratch(_ key: Scratch, count: Int) -> UnsafeMutablePointer<Int32> { Self.buffer(&indexScratch, key, count) }

    private static func buffer<T>(_ buffers: inout [Scratch: (pointer: UnsafeMutablePointer<T>, capacity: Int)], _ key: Scratch,
                                  _ count: Int) -> UnsafeMutablePointer<T> {
        if let buffer = buffers[key], buffer.capacity >= count { return buffer.pointer }
        buffers[key]?.pointer.deallocate()
        let pointer = UnsafeMutablePointer<T>.allocate(capacity: max(count, 1))
        buffers[key] = (pointer, max(count, 1))
        return pointer
    }

    func prepare(rows: Int, dIn: Int, dSAE: Int) {
        func size(_ a: inout [Float], _ n: Int) { if a.count != n { a = [Float](repeating: 0, count: n) } }
        size(&centred, rows * dIn); size(&xhat, rows * dIn); size(&g, rows * dIn); size(&dCentred, rows * dIn)
        size(&pre, rows * dSAE); size(&dz, rows * dSAE); size(&z, rows * dSAE)
        size(&gWEnc, dIn * dSAE); size(&gWDec, dSAE * dIn)
    }

    /// Set by a sparse step that leaves `z` zero except at its entries (still in `entryLists`), with rows of this width.
    var zTrackedWidth: Int?

    /// Moves a buffer out (leaving an empty array) so the caller holds the only reference and writes in place.
    func take(_ path: ReferenceWritableKeyPath<SAEWorkspace, [Float]>) -> [Float] {
        if path == \SAEWorkspace.z { zTrackedWidth = nil }
        let buffer = self[keyPath: path]
        self[keyPath: path] = []
        return buffer
    }

    /// Like `take`, sized to `count` (contents unspecified).
    func take(_ path: ReferenceWritableKeyPath<SAEWorkspace, [Float]>, count: Int) -> [Float] {
        let buffer = take(path)
        return buffer.count == count ? buffer : [Float](repeating: 0, count: count)
    }

    func giveBack(centred: [Float], pre: [Float], xhat: [Float], g: [Float], dCentred: [Float], dz: [Float], z: [Float],
                  gWEnc: [Float], gWDec: [Float]) {
        self.centred = centred; self.pre = pre; self.xhat = xhat; self.g = g; self.dCentred = dCentred
        self.dz = dz; self.z = z; self.gWEnc = gWEnc; self.gWDec = gWDec
    }

    /// An internal buffer of at least `count` floats (contents unspecified), valid until the next call with the same key.
    func scratch(_ key: Scratch, count: Int) -> UnsafeMutablePointer<Float> { Self.buffer(&scratch, key, count) }
}

/// A growable list of (row, latent, value) entries of a sparse code, kept across steps.
final class SparseEntryList: @unchecked Sendable {
    private(set) var rows = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    private(set) var latents = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    private(set) var values = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    var count = 0
    private var capacity = 1

    deinit { rows.deallocate(); latents.deallocate(); values.deallocate() }

    @inline(__always)
    func append(row: Int32, latent: Int32, value: Float) {
        if count == capacity { grow() }
        rows[count] = row; latents[count] = latent; values[count] = value
        count += 1
    }

    private func grow() {
        let newCapacity = capacity * 2
        func moved<T>(_ old: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<T> {
            let new = UnsafeMutablePointer<T>.allocate(capacity: newCapacity)
            new.moveInitialize(from: old, count: count)
            old.deallocate()
            return new
        }
        rows = moved(rows); latents = moved(latents); values = moved(values)
        capacity = newCapacity
    }
}
