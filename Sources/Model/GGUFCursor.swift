/// Limits of the GGUF reader and writer (the writer refuses what the reader would).
public enum GGUFLimits {
    /// Metadata keys: at most 65535 bytes (the spec), never empty (ggml refuses empty keys).
    public static let maxKeyLength = 65_535
    /// Tensor names: at most 64 bytes (the spec; ggml keeps names in a 64-byte NUL-terminated
    /// buffer, so llama.cpp loads names of at most 63 bytes).
    public static let maxTensorNameLength = 64
    /// Any string: at most 1 GiB (ggml's GGUF_MAX_STRING_LENGTH), and never past the end of the file.
    public static let maxStringLength = 1 << 30
    /// Arrays of arrays: at most this many levels (a top-level array is level 1).
    public static let maxArrayDepth = 8
    /// Tensor dimensions: 1 to 4 (ggml's GGML_MAX_DIMS).
    public static let maxDimensions = 4
}

/// Reads the little-endian fields of a GGUF file in order. Every read names its field and checks
/// the bytes left first; every count read from the file is bounded by the bytes left (each item
/// takes at least `minimumSize` bytes) before anything is allocated from it.
struct GGUFCursor {
    let bytes: UnsafeRawBufferPointer
    let path: String
    private(set) var offset = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    var remaining: Int { bytes.count - offset }

    func error(_ message: String) -> FileError { FileError.format(path, message) }

    /// Moves past `n` bytes of `field` and returns where they start.
    mutating func take(_ n: Int, _ field: @autoclosure () -> String) throws -> Int {
        guard n >= 0, n <= remaining else {
            throw error("truncated: \(field()) needs \(n) bytes at byte \(offset), \(remaining) remain")
        }
        defer { offset += n }
        return offset
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type, _ field: @autoclosure () -> String) throws -> T {
        let at = try take(MemoryLayout<T>.size, field())
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: T.self))
    }

    mutating func u32(_ field: @autoclosure () -> String) throws -> UInt32 { try integer(UInt32.self, field()) }
    mutating func u64(_ field: @autoclosure () -> String) throws -> UInt64 { try integer(UInt64.self, field()) }

    /// A u64 count of items that each take at least `minimumSize` bytes: refused when that many
    /// cannot fit in the bytes left (so the caller may allocate `count` items).
    mutating func count(_ field: @autoclosure () -> String, minimumSize: Int) throws -> Int {
        let n = try u64(field())
        let fits = UInt64(remaining / max(minimumSize, 1))
        guard n <= fits else {
            throw error("\(field()) = \(n) cannot fit in the \(remaining) bytes left at byte \(offset) (each takes at least \(minimumSize))")
        }
        return Int(n)
    }

    /// A length-prefixed UTF-8 string of at most `maxLength` bytes.
    mutating func string(_ field: @autoclosure () -> String, maxLength: Int = GGUFLimits.maxStringLength) throws -> String {
        let n = try u64("\(field()) length")
        guard n <= UInt64(remaining) else {
            throw error("\(field()): string length \(n) at byte \(offset - 8) is past the end of the file (\(remaining) bytes left)")
        }
        guard n <= UInt64(maxLength) else {
            throw error("\(field()): string length \(n) exceeds the limit of \(maxLength) bytes")
        }
        let at = try take(Int(n), field())
        guard let s = String(validating: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + Int(n))]), as: UTF8.self) else {
            throw error("\(field()): string at byte \(at) is not valid UTF-8")
        }
        return s
    }

    /// A value type tag.
    mutating func valueType(_ field: @autoclosure () -> String) throws -> GGUFValueType {
        let raw = try u32("\(field()) type")
        guard let t = GGUFValueType(rawValue: raw) else {
            throw error("\(field()): unknown value type \(raw) at byte \(offset - 4) (known: 0-12)")
        }
        return t
    }

    /// One value of type `type`; `depth` is the number of arrays it sits in.
    mutating func value(_ type: GGUFValueType, _ field: @autoclosure () -> String, depth: Int = 0) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try integer(UInt8.self, field()))
        case .int8: return .int8(try integer(Int8.self, field()))
        case .uint16: return .uint16(try integer(UInt16.self, field()))
        case .int16: return .int16(try integer(Int16.self, field()))
        case .uint32: return .uint32(try integer(UInt32.self, field()))
        case .int32: return .int32(try integer(Int32.self, field()))
        case .float32: return .float32(Float(bitPattern: try integer(UInt32.self, field())))
        case .bool: return .bool(try bool(field()))
        case .string: return .string(try string(field()))
        case .array: return .array(try array(field(), depth: depth + 1))
        case .uint64: return .uint64(try integer(UInt64.self, field()))
        case .int64: return .int64(try integer(Int64.self, field()))
        case .float64: return .float64(Double(bitPattern: try integer(UInt64.self, field())))
        }
    }

    /// A bool: one byte, 0 or 1 (the spec calls anything else invalid).
    mutating func bool(_ field: @autoclosure () -> String) throws -> Bool {
        let b = try integer(UInt8.self, field())
        guard b <= 1 else { throw error("\(field()): bool byte \(b) at byte \(offset - 1) is neither 0 nor 1") }
        return b == 1
    }

    /// An array (element type, count, elements) at nesting level `depth` (1 = not nested).
    /// Field names are built only for an error: a file may hold millions of elements.
    mutating func array(_ field: @autoclosure () -> String, depth: Int) throws -> GGUFArray {
        guard depth <= GGUFLimits.maxArrayDepth else {
            throw error("\(field()): arrays nested more than \(GGUFLimits.maxArrayDepth) deep")
        }
        let type = try valueType("\(field()) element")
        let n = try count("\(field()) element count", minimumSize: type.minimumSize)
        switch type {
        case .uint8: return .uint8(try integers(n, field()))
        case .int8: return .int8(try integers(n, field()))
        case .uint16: return .uint16(try integers(n, field()))
        case .int16: return .int16(try integers(n, field()))
        case .uint32: return .uint32(try integers(n, field()))
        case .int32: return .int32(try integers(n, field()))
        case .float32: return .float32(try integers(n, field(), as: UInt32.self).map(Float.init(bitPattern:)))
        case .uint64: return .uint64(try integers(n, field()))
        case .int64: return .int64(try integers(n, field()))
        case .float64: return .float64(try integers(n, field(), as: UInt64.self).map(Double.init(bitPattern:)))
        case .bool: return .bool(try (0..<n).map { try bool("\(field())[\($0)]") })
        case .string: return .string(try (0..<n).map { try string("\(field())[\($0)]") })
        case .array: return .array(try (0..<n).map { try array("\(field())[\($0)]", depth: depth + 1) })
        }
    }

    /// `n` little-endian integers (`n` already bounded by the bytes left).
    mutating func integers<T: FixedWidthInteger>(_ n: Int, _ field: @autoclosure () -> String, as: T.Type = T.self) throws -> [T] {
        let size = MemoryLayout<T>.size
        let at = try take(n * size, "\(field()) (\(n) elements)")
        return (0..<n).map { T(littleEndian: bytes.loadUnaligned(fromByteOffset: at + $0 * size, as: T.self)) }
    }
}
