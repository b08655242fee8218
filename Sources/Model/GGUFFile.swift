import Foundation

/// One tensor of a GGUF file, as its tensor info describes it (checked against the file).
public struct GGUFTensorInfo: Equatable, Sendable {
    public let name: String
    /// Dimensions in ggml order, as the file stores them: `dims[0]` (ne[0]) is the innermost,
    /// contiguous one.
    public let dims: [Int]
    public let type: GGMLType
    /// Offset of the data relative to the start of the data section (a multiple of the alignment).
    public let offset: Int
    /// Where the data is in the file (absolute byte offsets).
    public let range: Range<Int>
    /// Number of elements (the product of `dims`).
    public let elementCount: Int

    /// The row-major (PyTorch / numpy) shape: `dims` reversed.
    public var shape: [Int] { dims.reversed() }
    /// Bytes of the data.
    public var byteCount: Int { range.count }
}

/// A GGUF file (versions 2 and 3, little-endian), parsed and checked when opened; tensor data
/// is sliced out of the mapped file on demand.
///
/// Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata
/// (key string, u32 value type, value), the tensor infos (name, u32 n_dims, u64 dims with the
/// innermost first, u32 ggml type, u64 offset), padding to `general.alignment` (default 32), the
/// data section. Strings are a u64 byte count and UTF-8 bytes; arrays a u32 element type, a u64
/// count and the elements. Every refusal names the file and the field or tensor.
public struct GGUFFile: Sendable {
    public static let magic: [UInt8] = Array("GGUF".utf8)
    public static let defaultAlignment = 32
    public static let alignmentKey = "general.alignment"

    public let url: URL
    public let version: UInt32
    /// Metadata by key, and the keys in file order.
    public let metadata: [String: GGUFValue]
    public let keys: [String]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    /// `general.alignment`, or 32.
    public let alignment: Int
    /// Where the data section starts (the end of the tensor infos, padded to `alignment`).
    public let dataOffset: Int
    private let data: Data
    private let index: [String: Int]
    /// The file's mapping when it was opened by `init(url:)` (nil for bytes given in memory).
    public let mapping: FileMapping?

    /// Maps and parses `url`.
    public init(url: URL) throws {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else { throw FileError.io(path, "no such file") }
        let mapping = try FileMapping(path: path)
        try self.init(data: mapping.data, url: url, mapping: mapping)
    }

    /// Parses a GGUF file already in memory (`url` names it in messages).
    public init(data: Data, url: URL) throws { try self.init(data: data, url: url, mapping: nil) }

    private init(data: Data, url: URL, mapping: FileMapping?) throws {
        self.mapping = mapping
        let header = try data.withUnsafeBytes { raw in
            var c = GGUFCursor(bytes: raw, path: url.path)
            return try Self.parse(&c)
        }
        self.url = url
        self.data = data
        version = header.version
        metadata = header.metadata
        keys = header.keys
        tensors = header.tensors
        alignment = header.alignment
        dataOffset = header.dataOffset
        index = Dictionary(uniqueKeysWithValues: tensors.enumerated().map { ($1.name, $0) })
    }

    /// The metadata in file order (what `GGUFWriter(metadata:)` takes).
    public var entries: [(key: String, value: GGUFValue)] { keys.map { ($0, metadata[$0]!) } }

    /// The tensor called `name`, or an error naming the file and tensor.
    public func tensor(named name: String) throws -> GGUFTensorInfo {
        guard let i = index[name] else { throw FileError.format(url.path, "no tensor named '\(name)'") }
        return tensors[i]
    }

    /// The bytes of a tensor of a supported type: a slice of the file's data (no copy), so its
    /// indices are file offsets (`range`), not 0-based.
    public func bytes(of name: String) throws -> Data {
        let t = try tensor(named: name)
        guard t.type.supported else {
            let names = GGMLType.supportedTypes.map(\.name).joined(separator: ", ")
            throw FileError.format(url.path, "tensor '\(name)' is \(t.type), which is not supported (supported: \(names))")
        }
        return data[(data.startIndex + t.range.lowerBound)..<(data.startIndex + t.range.upperBound)]
    }

    /// Where a tensor's bytes lie in the mapped file (valid while `mapping` lives), for a reader
    /// that uses them in place; nil for a file given in memory.
    public func mappedBytes(of name: String) throws -> UnsafeRawBufferPointer? {
        guard let mapping else { return nil }
        let t = try tensor(named: name)
        _ = try bytes(of: name)   // a supported type
        return UnsafeRawBufferPointer(start: mapping.base + t.range.lowerBound, count: t.range.count)
    }

    /// An F32, F16 or BF16 tensor converted to Float32, in ggml order (which is row-major order
    /// for `shape`). Quantised types are not dequantised here: use `bytes(of:)`.
    public func floats(of name: String) throws -> [Float] {
        let t = try tensor(named: name)
        guard t.type.isFloat else {
            throw FileError.format(url.path, "tensor '\(name)' is \(t.type), not a float type (F32, F16, BF16): read its bytes instead")
        }
        let raw = try bytes(of: name)
        let n = t.elementCount
        return [Float](unsafeUninitializedCapacity: n) { out, done in
            raw.withUnsafeBytes { p in
                switch t.type {
                case .f32:
                    for i in 0..<n { out[i] = Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
                case .f16:
                    for i in 0..<n { out[i] = Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
                default:  // BF16: the high half of a Float32
                    for i in 0..<n { out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
                }
            }
            done = n
        }
    }

    // MARK: - Parsing

    struct Header {
        var version: UInt32 = 0
        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        var tensors: [GGUFTensorInfo] = []
        var alignment = GGUFFile.defaultAlignment
        var dataOffset = 0
    }

    static func parse(_ c: inout GGUFCursor) throws -> Header {
        var h = Header()
        let magicAt = try c.take(4, "magic")
        guard c.bytes[magicAt..<(magicAt + 4)].elementsEqual(magic) else {
            let got = c.bytes[magicAt..<(magicAt + 4)].map { String(format: "%02x", $0) }.joined(separator: " ")
            throw c.error("bad magic \(got) (expected 47 47 55 46, \"GGUF\"): not a GGUF file")
        }
        h.version = try c.u32("version")
        guard h.version == 2 || h.version == 3 else {
            let hint = h.version != 0 && h.version & 0xFFFF == 0 ? " (a big-endian file? only little-endian GGUF is read)" : ""
            throw c.error("unsupported GGUF version \(h.version)\(hint): versions 2 and 3 are read")
        }
        let tensorCount = try c.u64("tensor count"), kvCount = try c.u64("metadata kv count")
        // Bound both counts by the bytes left before allocating anything from them: a metadata
        // entry takes at least 14 bytes (8-byte key length, 1-byte key, 4-byte type, 1-byte
        // value), a tensor info at least 32 (name length, n_dims, one dim, type, offset).
        let (kvBytes, o1) = kvCount.multipliedReportingOverflow(by: 14)
        let (tensorBytes, o2) = tensorCount.multipliedReportingOverflow(by: 32)
        let (total, o3) = kvBytes.addingReportingOverflow(tensorBytes)
        guard !o1, !o2, !o3, total <= UInt64(c.remaining) else {
            throw c.error("tensor count \(tensorCount) and metadata kv count \(kvCount) cannot fit in the \(c.remaining) bytes after the header")
        }
        try parseMetadata(&c, count: Int(kvCount), into: &h)
        h.alignment = try alignment(h.metadata, c)
        h.tensors = try parseTensorInfos(&c, count: Int(tensorCount), alignment: h.alignment)
        h.dataOffset = c.offset.roundedUp(to: h.alignment)
        h.tensors = try placeTensors(h.tensors, dataOffset: h.dataOffset, fileSize: c.bytes.count, c)
        return h
    }

    static func parseMetadata(_ c: inout GGUFCursor, count: Int, into h: inout Header) throws {
        h.keys.reserveCapacity(count)
        for i in 0..<count {
            let key = try c.string("metadata key #\(i)", maxLength: GGUFLimits.maxKeyLength)
            guard !key.isEmpty else { throw c.error("metadata key #\(i) is empty") }
            guard h.metadata[key] == nil else {
                throw c.error("duplicate metadata key '\(key)' (entries #\(h.keys.firstIndex(of: key) ?? 0) and #\(i))")
            }
            let type = try c.valueType("metadata '\(key)'")
            h.metadata[key] = try c.value(type, "metadata '\(key)'")
            h.keys.append(key)
        }
    }

    /// `general.alignment`: a UINT32 power of two (as ggml and gguf-py require), default 32. The
    /// spec's prose asks for a multiple of 8; both reference readers accept 1, 2 and 4, so do we.
    static func alignment(_ metadata: [String: GGUFValue], _ c: GGUFCursor) throws -> Int {
        guard let v = metadata[alignmentKey] else { return defaultAlignment }
        guard case .uint32(let a) = v else {
            throw c.error("metadata '\(alignmentKey)' must be UINT32, not \(v.type)")
        }
        guard a > 0, a & (a - 1) == 0 else {
            throw c.error("metadata '\(alignmentKey)' = \(a) is not a power of two")
        }
        return Int(a)
    }

    /// A tensor info as read, before its data is placed in the file.
    static func parseTensorInfos(_ c: inout GGUFCursor, count: Int, alignment: Int) throws -> [GGUFTensorInfo] {
        var out: [GGUFTensorInfo] = []
        out.reserveCapacity(count)
        var seen = Set<String>()
        for i in 0..<count {
            let name = try c.string("tensor #\(i) name", maxLength: GGUFLimits.maxTensorNameLength)
            guard seen.insert(name).inserted else {
                throw c.error("duplicate tensor name '\(name)' (tensor #\(out.firstIndex { $0.name == name } ?? 0) and #\(i))")
            }
            out.append(try parseTensorInfo(&c, name: name, alignment: alignment))
        }
        return out
    }

    static func parseTensorInfo(_ c: inout GGUFCursor, name: String, alignment: Int) throws -> GGUFTensorInfo {
        let field = "tensor '\(name)'"
        let nDims = try c.u32("\(field) n_dims")
        guard nDims >= 1, nDims <= GGUFLimits.maxDimensions else {
            throw c.error("\(field): n_dims = \(nDims), must be 1 to \(GGUFLimits.maxDimensions)")
        }
        var dims: [Int] = []
        for k in 0..<Int(nDims) {
            let d = try c.u64("\(field) dimension \(k)")
            guard d > 0 else { throw c.error("\(field): dimension \(k) is 0") }
            guard let di = Int(exactly: d) else { throw c.error("\(field): dimension \(k) = \(d) is larger than Int.max") }
            dims.append(di)
        }
        guard let count = elementCount(dims) else {
            throw c.error("\(field): dimensions \(dims) have more elements than Int can count")
        }
        let rawType = try c.u32("\(field) type")
        guard let type = GGMLType(rawValue: rawType) else {
            throw c.error("\(field): unknown ggml type id \(rawType)")
        }
        guard dims[0] % type.blockSize == 0 else {
            throw c.error("\(field): rows of \(dims[0]) elements (ne[0]) are not a multiple of the \(type) block size \(type.blockSize)")
        }
        guard let bytes = type.byteCount(elements: count) else {
            throw c.error("\(field): \(count) elements of \(type) need more bytes than Int can count")
        }
        let rawOffset = try c.u64("\(field) offset")
        guard let offset = Int(exactly: rawOffset) else {
            throw c.error("\(field): offset \(rawOffset) is past the end of the file (\(c.bytes.count) bytes)")
        }
        guard offset % alignment == 0 else {
            throw c.error("\(field): offset \(offset) is not a multiple of the alignment \(alignment)")
        }
        // `range` is relative to the data section until placeTensors makes it absolute.
        return GGUFTensorInfo(name: name, dims: dims, type: type, offset: offset, range: 0..<bytes, elementCount: count)
    }

    /// The product of positive `dims`, or nil on overflow.
    static func elementCount(_ dims: [Int]) -> Int? {
        var n = 1
        for d in dims {
            let (p, o) = n.multipliedReportingOverflow(by: d)
            if o { return nil }
            n = p
        }
        return n
    }

    /// Checks every tensor's data lies inside the file and no two overlap; returns the infos with
    /// absolute ranges.
    static func placeTensors(_ infos: [GGUFTensorInfo], dataOffset: Int, fileSize: Int, _ c: GGUFCursor) throws -> [GGUFTensorInfo] {
        let placed = try infos.map { t -> GGUFTensorInfo in
            let (start, o1) = dataOffset.addingReportingOverflow(t.offset)
            let (end, o2) = start.addingReportingOverflow(t.range.count)
            guard !o1, !o2, end <= fileSize else {
                throw c.error("tensor '\(t.name)': data at offset \(t.offset) (\(t.range.count) bytes of \(t.type) from byte \(o1 ? "past Int.max" : "\(start)")) is past the end of the file (\(fileSize) bytes; data section at byte \(dataOffset))")
            }
            return GGUFTensorInfo(name: t.name, dims: t.dims, type: t.type, offset: t.offset, range: start..<end, elementCount: t.elementCount)
        }
        let sorted = placed.sorted { ($0.range.lowerBound, $0.range.upperBound) < ($1.range.lowerBound, $1.range.upperBound) }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.range.upperBound > b.range.lowerBound {
            throw c.error("tensors '\(a.name)' and '\(b.name)' overlap in the data section (offsets \(a.offset) + \(a.range.count) bytes and \(b.offset))")
        }
        return placed
    }
}

extension Int {
    /// `self` rounded up to a multiple of `alignment` (> 0); self + alignment must not overflow.
    func roundedUp(to alignment: Int) -> Int { (self + alignment - 1) / alignment * alignment }
}
