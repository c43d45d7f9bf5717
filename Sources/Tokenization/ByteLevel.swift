/// GPT-2's byte ↔ character map: every byte gets a printable character, so byte strings can live in a JSON
/// vocabulary. Printable Latin-1 bytes map to themselves; the other 68 map to U+0100 onwards, in byte order.
enum ByteLevel {
    static let byteToCharacter: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte)
            if printable {
                table[byte] = Unicode.Scalar(UInt32(byte))!
            } else {
                table[byte] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return table
    }()

    static let characterToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (byte, scalar) in byteToCharacter.enumerated() { map[scalar.value] = UInt8(byte) }
        return map
    }()

    /// The byte-level string of raw bytes (what a vocabulary entry looks like).
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var out = String.UnicodeScalarView()
        for byte in bytes { out.append(byteToCharacter[Int(byte)]) }
        return String(out)
    }

    /// The bytes a vocabulary entry stands for. Characters outside the byte alphabet stand for their own UTF-8,
    /// as in Hugging Face's ByteLevel decoder.
    static func decode(_ token: String) -> [UInt8] {
        var bytes: [UInt8] = []
        for scalar in token.unicodeScalars {
            if let byte = characterToByte[scalar.value] {
                bytes.append(byte)
            } else {
                bytes.append(contentsOf: String(scalar).utf8)
            }
        }
        return bytes
    }
}
