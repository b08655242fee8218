import Foundation

/// A tensor to write: its name, row-major shape (PyTorch / numpy order) and type. The file stores
/// the shape reversed (`dims`, innermost first) and `byteCount` bytes of data.
public struct GGUFTensorDescription: Equatable, Sendable {
    public let name: String
    public let shape: [Int]
    public let type: GGMLType

    public init(name: String, shape: [Int], type: GGMLType) {
        self.name = name
        self.shape = shape
        self.type = type
    }

    /// The dimensions in ggml order (ne[0] innermost), as the file stores them.
    public var dims: [Int] { shape.reversed() }
    /// Elements, or nil when a dimension is not positive or the product overflows.
    public var elementCount: Int? { shape.allSatisfy { $0 > 0 } ? GGUFFile.elementCount(shape) : nil }
    /// Bytes of data, or nil when the shape is invalid or its rows are not whole blocks of `type`.
    public var byteCount: Int? {
        guard let n = elementCount, let row = shape.last, row % type.blockSize == 0 else { return nil }
        return type.byteCount(elements: n)
    }
}

/// Writes a GGUF file (version 3, little-endian) as a stream: the metadata and tensor
/// descriptions are given up front; `write` emits the header, metadata and tensor infos, then
/// asks `tensorData` for each tensor's bytes in turn (in as many pieces as it likes) and pads
/// each to the alignment, so a model is written tensor by tensor without ever being whole in
/// memory. Data is laid out as gguf-py and ggml lay it out (in order, each tensor padded to
/// `general.alignment`, default 32, including the last), so the same content gives the same bytes.
///
/// Everything is checked before the file is created, with the reader's limits (what it writes,
/// `GGUFFile` reads): keys non-empty, unique, at most 65535 bytes; strings at most 1 GiB;
/// `general.alignment`, when
/// present, a UINT32 power of two; arrays nested at most 8 deep; tensor names unique and at most
/// 64 bytes (llama.cpp itself loads at most 63); 1 to 4 positive dimensions whose innermost is a
/// multiple of the type's block size. Each tensor must produce exactly its `byteCount` bytes.
public struct GGUFWriter {
    /// Hands bytes to the file.
    public typealias Sink = (UnsafeRawBufferPointer) throws -> Void
    /// Produces one tensor's bytes by calling the sink (any number of times).
    public typealias Producer = (_ tensor: GGUFTensorDescription, _ write: Sink) throws -> Void

    /// Metadata in file order.
    public var metadata: [(key: String, value: GGUFValue)]
    /// Tensors in file order.
    public var tensors: [GGUFTensorDescription]

    public init(metadata: [(key: String, value: GGUFValue)] = [], tensors: [GGUFTensorDescription] = []) {
        self.metadata = metadata
        self.tensors = tensors
    }

    /// The alignment `metadata` asks for (`general.alignment`), or 32; nil when invalid.
    public var alignment: Int? {
        guard let v = metadata.first(where: { $0.key == GGUFFile.alignmentKey })?.value else { return GGUFFile.defaultAlignment }
        guard case .uint32(let a) = v, a > 0, a & (a - 1) == 0 else { return nil }
        return Int(a)
    }

    /// Writes the file atomically (`writeAtomically`: a temporary file renamed into place).
    public func write(to url: URL, tensorData: Producer) throws {
        let plan = try layout(path: url.path)
        try writeAtomically(to: url) { out in try write(plan, path: url.path, to: out, tensorData: tensorData) }
    }

    /// Streams the file to `out` (`path` names it in errors).
    public func write(path: String, to out: Sink, tensorData: Producer) throws {
        try write(try layout(path: path), path: path, to: out, tensorData: tensorData)
    }

    /// Everything before the data section (header, metadata, tensor infos, padding), and each
    /// tensor's byte count.
    struct Layout {
        var head: [UInt8]
        var byteCounts: [Int]
        var alignment: Int
    }

    func layout(path: String) throws -> Layout {
        let fail = { (message: String) in FileError.format(path, message) }
        try checkMetadata(fail)
        guard let alignment else {
            let v = metadata.first { $0.key == GGUFFile.alignmentKey }!.value
            throw fail("metadata '\(GGUFFile.alignmentKey)' = \(v) must be a UINT32 power of two")
        }
        let byteCounts = try checkTensors(fail)
        var e = GGUFEncoder()
        e.bytes += GGUFFile.magic
        e.integer(UInt32(3))
        e.integer(UInt64(tensors.count))
        e.integer(UInt64(metadata.count))
        for (key, value) in metadata {
            e.string(key)
            e.integer(value.type.rawValue)
            e.value(value)
        }
        var offset = 0
        for (t, bytes) in zip(tensors, byteCounts) {
            e.string(t.name)
            e.integer(UInt32(t.shape.count))
            for d in t.dims { e.integer(UInt64(d)) }
            e.integer(t.type.rawValue)
            e.integer(UInt64(offset))
            let (next, overflow) = offset.addingReportingOverflow(bytes.roundedUpChecked(to: alignment) ?? Int.max)
            guard !overflow, next < Int.max else { throw fail("tensor '\(t.name)': the data section would pass Int.max bytes") }
            offset = next
        }
        return Layout(head: e.bytes, byteCounts: byteCounts, alignment: alignment)
    }

    func checkMetadata(_ fail: (String) -> FileError) throws {
        var seen = Set<String>()
        for (i, (key, value)) in metadata.enumerated() {
            guard !key.isEmpty else { throw fail("metadata key #\(i) is empty") }
            guard key.utf8.count <= GGUFLimits.maxKeyLength else {
                throw fail("metadata key #\(i) is \(key.utf8.count) bytes long (at most \(GGUFLimits.maxKeyLength))")
            }
            guard seen.insert(key).inserted else { throw fail("duplicate metadata key '\(key)'") }
            if case .array(let a) = value, a.depth > GGUFLimits.maxArrayDepth {
                throw fail("metadata '\(key)': arrays nested more than \(GGUFLimits.maxArrayDepth) deep")
            }
            guard Self.longestString(value) <= GGUFLimits.maxStringLength else {
                throw fail("metadata '\(key)': a string is longer than \(GGUFLimits.maxStringLength) bytes")
            }
        }
    }

    /// Bytes of the longest string in `v` (0 if none).
    static func longestString(_ v: GGUFValue) -> Int {
        switch v {
        case .string(let s): return s.utf8.count
        case .array(.string(let xs)): return xs.map(\.utf8.count).max() ?? 0
        case .array(.array(let xs)): return xs.map { longestString(.array($0)) }.max() ?? 0
        default: return 0
        }
    }

    func checkTensors(_ fail: (String) -> FileError) throws -> [Int] {
        var seen = Set<String>()
        return try tensors.map { t in
            let field = "tensor '\(t.name)'"
            guard t.name.utf8.count <= GGUFLimits.maxTensorNameLength else {
                throw fail("\(field): name is \(t.name.utf8.count) bytes long (at most \(GGUFLimits.maxTensorNameLength))")
            }
            guard seen.insert(t.name).inserted else { throw fail("duplicate tensor name '\(t.name)'") }
            guard (1...GGUFLimits.maxDimensions).contains(t.shape.count), t.shape.allSatisfy({ $0 > 0 }) else {
                throw fail("\(field): shape \(t.shape) must have 1 to \(GGUFLimits.maxDimensions) positive dimensions")
            }
            guard let n = t.elementCount else { throw fail("\(field): shape \(t.shape) has more elements than Int can count") }
            guard t.shape.last! % t.type.blockSize == 0 else {
                throw fail("\(field): rows of \(t.shape.last!) elements are not a multiple of the \(t.type) block size \(t.type.blockSize)")
            }
            guard let bytes = t.byteCount else { throw fail("\(field): \(n) elements of \(t.type) need more bytes than Int can count") }
            return bytes
        }
    }

    func write(_ plan: Layout, path: String, to sink: Sink, tensorData: Producer) throws {
        // The producer's sink forwards to `sink`; neither escapes this call.
        try withoutActuallyEscaping(sink) { out in try write(plan, path: path, escaping: out, tensorData: tensorData) }
    }

    private func write(_ plan: Layout, path: String, escaping out: @escaping Sink, tensorData: Producer) throws {
        try plan.head.withUnsafeBytes { try out($0) }
        let zeros = [UInt8](repeating: 0, count: min(plan.alignment, 1 << 16))
        func pad(_ written: Int) throws {
            var n = written.roundedUp(to: plan.alignment) - written
            while n > 0 {
                let k = min(n, zeros.count)
                try zeros.withUnsafeBytes { try out(UnsafeRawBufferPointer(rebasing: $0[0..<k])) }
                n -= k
            }
        }
        try pad(plan.head.count)
        for (t, declared) in zip(tensors, plan.byteCounts) {
            var produced = 0
            try tensorData(t) { piece in
                guard piece.count <= declared - produced else {
                    throw FileError.format(path, "tensor '\(t.name)': produced more than its \(declared) bytes (\(t.type), shape \(t.shape))")
                }
                produced += piece.count
                if piece.count > 0 { try out(piece) }
            }
            guard produced == declared else {
                throw FileError.format(path, "tensor '\(t.name)': produced \(produced) bytes, expected \(declared) (\(t.type), shape \(t.shape))")
            }
            try pad(declared)
        }
    }

    /// Converts Float32 values to F32, F16 or BF16 little-endian bytes in bounded chunks and hands
    /// them to `out` (BF16 rounds to nearest even, as torch does).
    public static func writeFloats(_ values: UnsafeBufferPointer<Float>, as type: GGMLType, to out: Sink) throws {
        let dtype: SafeTensorsDType
        switch type {
        case .f32: dtype = .f32
        case .f16: dtype = .f16
        case .bf16: dtype = .bf16
        default: throw FileError.format("GGUFWriter.writeFloats", "\(type) is not a float type (F32, F16, BF16)")
        }
        guard let base = values.baseAddress, !values.isEmpty else { return }
        try SafeTensorsWriter.writeFloats(base, count: values.count, dtype: dtype, to: out)
    }
}

/// Little-endian encoding of GGUF header fields.
struct GGUFEncoder {
    var bytes: [UInt8] = []

    mutating func integer<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes += $0 }
    }

    mutating func string(_ s: String) {
        integer(UInt64(s.utf8.count))
        bytes += s.utf8
    }

    mutating func value(_ v: GGUFValue) {
        switch v {
        case .uint8(let x): integer(x)
        case .int8(let x): integer(x)
        case .uint16(let x): integer(x)
        case .int16(let x): integer(x)
        case .uint32(let x): integer(x)
        case .int32(let x): integer(x)
        case .float32(let x): integer(x.bitPattern)
        case .bool(let x): integer(UInt8(x ? 1 : 0))
        case .string(let x): string(x)
        case .array(let a): array(a)
        case .uint64(let x): integer(x)
        case .int64(let x): integer(x)
        case .float64(let x): integer(x.bitPattern)
        }
    }

    mutating func array(_ a: GGUFArray) {
        integer(a.elementType.rawValue)
        integer(UInt64(a.count))
        switch a {
        case .uint8(let xs): bytes += xs
        case .int8(let xs): for x in xs { integer(x) }
        case .uint16(let xs): for x in xs { integer(x) }
        case .int16(let xs): for x in xs { integer(x) }
        case .uint32(let xs): for x in xs { integer(x) }
        case .int32(let xs): for x in xs { integer(x) }
        case .float32(let xs): for x in xs { integer(x.bitPattern) }
        case .bool(let xs): for x in xs { integer(UInt8(x ? 1 : 0)) }
        case .string(let xs): for x in xs { string(x) }
        case .array(let xs): for x in xs { array(x) }
        case .uint64(let xs): for x in xs { integer(x) }
        case .int64(let xs): for x in xs { integer(x) }
        case .float64(let xs): for x in xs { integer(x.bitPattern) }
        }
    }
}

extension GGUFArray {
    /// Levels of arrays: 1 for an array of non-arrays.
    public var depth: Int {
        if case .array(let xs) = self { return 1 + (xs.map(\.depth).max() ?? 0) }
        return 1
    }
}

extension Int {
    /// `self` rounded up to a multiple of `alignment`, or nil on overflow.
    func roundedUpChecked(to alignment: Int) -> Int? {
        let (sum, overflow) = addingReportingOverflow(alignment - 1)
        return overflow ? nil : sum / alignment * alignment
    }
}
