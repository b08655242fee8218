import Foundation

/// The tokenizer's fixed tables and small helpers: id packing, the short-key cache, the merge
/// heap, Unicode classes of the GPT-2 pre-tokenizer, the byte-level alphabet, file reading.
extension GPT2Tokenizer {
    /// Ids must be below this (the id -> bytes table is a dense array).
    static let maxTokenID = 1 << 24

    /// The rank half of a `merges` value (rank << 32 | merged id).
    static let rankMask: UInt64 = 0xFFFF_FFFF_0000_0000

    @inline(__always)
    static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    /// Pre-tokens of up to 15 bytes packed into two words (length in the top byte), so cache
    /// lookups for ordinary words allocate nothing.
    struct ShortKey: Hashable {
        static let capacity = 15
        var lo: UInt64 = 0
        var hi: UInt64 = 0

        @inline(__always)
        init(_ p: UnsafePointer<UInt8>, _ n: Int) {
            for k in 0..<min(n, 8) { lo |= UInt64(p[k]) << (8 * UInt64(k)) }
            if n > 8 { for k in 8..<n { hi |= UInt64(p[k]) << (8 * UInt64(k - 8)) } }
            hi |= UInt64(n) << 56
        }
    }

    /// A binary min-heap of UInt64 (rank in the high word, position in the low word).
    struct MinHeap {
        private var items: [UInt64] = []

        var peek: UInt64? { items.first }

        mutating func push(_ x: UInt64) {
            items.append(x)
            var i = items.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                if items[parent] <= x { break }
                items[i] = items[parent]
                i = parent
            }
            items[i] = x
        }

        mutating func pop() -> UInt64? {
            guard let first = items.first else { return nil }
            let last = items.removeLast()
            if items.isEmpty { return first }
            var i = 0
            let n = items.count
            while true {
                let l = 2 * i + 1
                if l >= n { break }
                let r = l + 1
                let c = (r < n && items[r] < items[l]) ? r : l
                if items[c] >= last { break }
                items[i] = items[c]
                i = c
            }
            items[i] = last
            return first
        }
    }

    /// Pre-tokenizer character classes: the four disjoint sets of GPT-2's pattern.
    enum ScalarClass {
        static let other: UInt8 = 0   // [^\s\p{L}\p{N}]
        static let letter: UInt8 = 1  // \p{L}
        static let number: UInt8 = 2  // \p{N}
        static let space: UInt8 = 3   // \s (Unicode White_Space)
    }

    /// Classes of U+0000...U+FFFF, computed once; other planes are classified on demand.
    static let bmpClasses: [UInt8] = (0..<0x10000).map { GPT2Tokenizer.classify(UInt32($0)) }

    static func classify(_ v: UInt32) -> UInt8 {
        guard let s = Unicode.Scalar(v) else { return ScalarClass.other }
        let props = s.properties
        if props.isWhitespace { return ScalarClass.space }
        switch props.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return ScalarClass.letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return ScalarClass.number
        default:
            return ScalarClass.other
        }
    }

    @inline(__always)
    func scalarClass(_ v: UInt32) -> UInt8 {
        v < 0x10000 ? classTable[Int(v)] : Self.classify(v)
    }

    /// Decodes the scalar starting at `p[i]` (the bytes come from a Swift String, so they are valid
    /// UTF-8). Returns the scalar value and its length in bytes.
    @inline(__always)
    static func decodeScalar(_ p: UnsafePointer<UInt8>, _ i: Int) -> (UInt32, Int) {
        let b0 = UInt32(p[i])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F), 2) }
        if b0 < 0xF0 {
            return ((b0 & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F), 3)
        }
        return ((b0 & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6
                | UInt32(p[i + 3] & 0x3F), 4)
    }

    /// GPT-2's `bytes_to_unicode`: bytes 33...126, 161...172 and 174...255 map to the same code
    /// point; the remaining 68 bytes map to U+0100, U+0101, ... in byte order.
    static let byteLevelEncoder: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            if (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b) {
                table[b] = Unicode.Scalar(UInt32(b))!
            } else {
                table[b] = Unicode.Scalar(256 + n)!
                n += 1
            }
        }
        return table
    }()

    /// Inverse of `byteLevelEncoder`: code point -> byte.
    static func byteLevelDecoder() -> [UInt32: UInt8] {
        var map: [UInt32: UInt8] = [:]
        for (b, s) in byteLevelEncoder.enumerated() { map[s.value] = UInt8(b) }
        return map
    }

    /// The bytes a byte-level token string stands for. A character outside the byte alphabet
    /// (never the case in GPT-2's files) stands for its own UTF-8 bytes.
    static func tokenBytes(_ token: String, _ unicodeToByte: [UInt32: UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(token.unicodeScalars.count)
        for s in token.unicodeScalars {
            if let b = unicodeToByte[s.value] { out.append(b) } else { out.append(contentsOf: String(s).utf8) }
        }
        return out
    }

    static func readFile(_ url: URL) throws -> Data {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw TokenizerError.missingFile(url)
        }
        if isDirectory.boolValue { throw TokenizerError.unreadableFile(url, reason: "is a directory") }
        do {
            return try Data(contentsOf: url)
        } catch {
            throw TokenizerError.unreadableFile(url, reason: Self.describe(error))
        }
    }

    static func describe(_ error: Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let context):
            let underlying = context.underlyingError.map { " (\(Self.describe($0)))" } ?? ""
            return context.debugDescription + underlying
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context):
            let path = context.codingPath.map { $0.stringValue }.joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "at \(path.debugDescription): \(context.debugDescription)"
        default:
            return (error as NSError).localizedDescription
        }
    }
}
