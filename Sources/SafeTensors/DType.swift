/// Element types a safetensors header may name. interp reads the floating-point ones (converted to Float32) and
/// the integer ones (as Int64 values); it writes F32 and I32.
public enum DType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8"
    case bool = "BOOL"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }

    public var isFloatingPoint: Bool { [.f64, .f32, .f16, .bf16].contains(self) }
    public var isInteger: Bool { [.i64, .i32, .i16, .i8, .u64, .u32, .u16, .u8].contains(self) }
}

/// Converts `count` little-endian elements of `dtype` at `source` to Float32.
func convertToFloat(_ source: UnsafeRawPointer, dtype: DType, count: Int, into out: UnsafeMutablePointer<Float>) {
    switch dtype {
    case .f32:
        UnsafeMutableRawPointer(out).copyMemory(from: source, byteCount: count * 4)
    case .f16:
        for i in 0..<count {
            out[i] = Float(Float16(bitPattern: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
        }
    case .bf16:
        for i in 0..<count {
            let bits = UInt32(UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            out[i] = Float(bitPattern: bits << 16)
        }
    case .f64:
        for i in 0..<count {
            out[i] = Float(Double(bitPattern: UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
        }
    default:
        preconditionFailure("convertToFloat called for \(dtype)")
    }
}

/// Converts `count` little-endian integers of `dtype` at `source` to Int64.
func convertToInt64(_ source: UnsafeRawPointer, dtype: DType, count: Int) -> [Int64] {
    (0..<count).map { i -> Int64 in
        switch dtype {
        case .i64: return Int64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))
        case .i32: return Int64(Int32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
        case .i16: return Int64(Int16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
        case .i8: return Int64(source.load(fromByteOffset: i, as: Int8.self))
        case .u32: return Int64(UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
        case .u16: return Int64(UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
        case .u8: return Int64(source.load(fromByteOffset: i, as: UInt8.self))
        case .u64:
            let v = UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
            return v > UInt64(Int64.max) ? Int64.max : Int64(v)
        default: preconditionFailure("convertToInt64 called for \(dtype)")
        }
    }
}
