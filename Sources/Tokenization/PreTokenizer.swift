/// GPT-2's pre-tokenisation, as Hugging Face's ByteLevel pre-tokenizer applies it:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// written out as a scanner over UTF-8 (one pass, no regex engine, no backtracking).
enum CharacterClass: UInt8 {
    case letter, number, whitespace, other
}

enum PreTokenizer {
    /// Classes of the Basic Multilingual Plane, computed once from the Unicode properties.
    static let bmpClasses: [CharacterClass] = (0..<0x10000).map { value -> CharacterClass in
        guard let scalar = Unicode.Scalar(UInt32(value)) else { return .other }   // surrogates never occur
        return classify(scalar)
    }

    static func classify(_ scalar: Unicode.Scalar) -> CharacterClass {
        let properties = scalar.properties
        if properties.isWhitespace { return .whitespace }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return .letter
        case .decimalNumber, .letterNumber, .otherNumber: return .number
        default: return .other
        }
    }

    @inline(__always)
    static func characterClass(_ value: UInt32) -> CharacterClass {
        value < 0x10000 ? bmpClasses[Int(value)] : classify(Unicode.Scalar(value) ?? " ")
    }

    /// Decodes the scalar at `i` of valid UTF-8: (value, byte length).
    @inline(__always)
    static func scalar(_ s: UnsafeBufferPointer<UInt8>, _ i: Int) -> (UInt32, Int) {
        let b0 = UInt32(s[i])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(s[i + 1] & 0x3F), 2) }
        if b0 < 0xF0 { return ((b0 & 0x0F) << 12 | UInt32(s[i + 1] & 0x3F) << 6 | UInt32(s[i + 2] & 0x3F), 3) }
        return ((b0 & 0x07) << 18 | UInt32(s[i + 1] & 0x3F) << 12 | UInt32(s[i + 2] & 0x3F) << 6 | UInt32(s[i + 3] & 0x3F), 4)
    }

    /// Calls `piece` with the byte range of each pre-token of `s` (valid UTF-8), in order.
    static func split(_ s: UnsafeBufferPointer<UInt8>, _ piece: (Range<Int>) -> Void) {
        let n = s.count
        var i = 0
        while i < n {
            let (c0, l0) = scalar(s, i)
            // 's 't 're 've 'm 'll 'd (ASCII, case-sensitive)
            if c0 == 0x27, i + 1 < n {
                let a = s[i + 1]
                if a == UInt8(ascii: "s") || a == UInt8(ascii: "t") || a == UInt8(ascii: "m") || a == UInt8(ascii: "d") {
                    piece(i..<(i + 2)); i += 2; continue
                }
                if i + 2 < n {
                    let b = s[i + 2]
                    if (a == UInt8(ascii: "r") && b == UInt8(ascii: "e")) || (a == UInt8(ascii: "v") && b == UInt8(ascii: "e"))
                        || (a == UInt8(ascii: "l") && b == UInt8(ascii: "l")) {
                        piece(i..<(i + 3)); i += 3; continue
                    }
                }
            }
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional single space, then a run of one class.
            var start = i
            var (c, l) = (c0, l0)
            if c0 == 0x20, i + 1 < n {
                let next = scalar(s, i + 1)
                if characterClass(next.0) != .whitespace {
                    start = i + 1
                    (c, l) = next
                }
            }
            let cls = characterClass(c)
            if cls != .whitespace {
                var end = start + l
                while end < n {
                    let (v, len) = scalar(s, end)
                    guard characterClass(v) == cls else { break }
                    end += len
                }
                piece(i..<end)
                i = end
                continue
            }
            // `\s+(?!\S)` then `\s+`: a whitespace run; before a non-space it leaves its last character for the
            // next piece (so " word" keeps its space), unless the run is that one character.
            var end = i + l0
            var lastStart = i
            while end < n {
                let (v, len) = scalar(s, end)
                guard characterClass(v) == .whitespace else { break }
                lastStart = end
                end += len
            }
            if end < n && lastStart > i {
                end = lastStart
            }
            piece(i..<end)
            i = end
        }
    }
}
