import Foundation
import InterpCore

/// Writes safetensors files: F32 tensors (and I32 for integer data), header keys sorted, header padded to 8 bytes.
/// The file is written beside its destination under a temporary name, synced, then renamed into place, so a
/// reader never sees a partial file.
public enum SafeTensorsWriter {
    public enum Payload {
        case float(Tensor)
        case int32(shape: [Int], values: [Int32])

        var dtype: DType { if case .float = self { return .f32 } else { return .i32 } }
        var shape: [Int] {
            switch self {
            case .float(let tensor): return tensor.shape
            case .int32(let shape, _): return shape
            }
        }
        var byteCount: Int {
            switch self {
            case .float(let tensor): return tensor.count * 4
            case .int32(_, let values): return values.count * 4
            }
        }
    }

    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to path: String) throws {
        try write(payloads: tensors.mapValues { .float($0) }, metadata: metadata, to: path)
    }

    public static func write(payloads: [String: Payload], metadata: [String: String] = [:], to path: String) throws {
        let names = payloads.keys.sorted()
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let items = metadata.keys.sorted().map { "\(JSONText.quote($0)):\(JSONText.quote(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(items.joined(separator: ","))}")
        }
        var offset = 0
        for name in names {
            let payload = payloads[name]!
            let end = offset + payload.byteCount
            let shape = payload.shape.map(String.init).joined(separator: ",")
            parts.append("\(JSONText.quote(name)):{\"dtype\":\"\(payload.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        header += parts.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(UInt8(ascii: " ")) }

        try AtomicFile.write(to: path) { sink in
            var length = UInt64(headerBytes.count).littleEndian
            try withUnsafeBytes(of: &length) { try sink($0) }
            try headerBytes.withUnsafeBytes { try sink($0) }
            for name in names {
                switch payloads[name]! {
                case .float(let tensor): try tensor.scalars.withUnsafeBytes { try sink($0) }
                case .int32(_, let values): try values.map(\.littleEndian).withUnsafeBytes { try sink($0) }
                }
            }
        }
    }
}
