import Foundation

/// A fast 64-bit content hash (not cryptographic), to tell one set of weights from another in store metadata.
/// Printed as `interp64:<16 hex digits>`.
public enum ContentHash {
    public static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        let prime1: UInt64 = 0x9E37_79B1_85EB_CA87, prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
        var h = prime2 &+ UInt64(bytes.count)
        var i = 0
        while i + 8 <= bytes.count {
            var k = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* prime2
            k = (k << 31 | k >> 33) &* prime1
            h = ((h ^ k) << 27 | (h ^ k) >> 37) &* prime1 &+ prime2
            i += 8
        }
        while i < bytes.count {
            h = ((h ^ UInt64(bytes[i]) &* prime1) << 11 | (h ^ UInt64(bytes[i]) &* prime1) >> 53) &* prime2
            i += 1
        }
        h ^= h >> 33; h = h &* prime2; h ^= h >> 29; h = h &* prime1; h ^= h >> 32
        return h
    }

    /// The hash of a file's contents (memory-mapped).
    public static func hash(file path: String) throws -> String {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw InterpError("cannot read (\(error.localizedDescription))", file: path)
        }
        let value = data.withUnsafeBytes { hash($0) }
        return "interp64:" + String(format: "%016llx", value)
    }
}
