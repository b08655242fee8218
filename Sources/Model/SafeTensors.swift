import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Tensor

/// Element types of a safetensors entry that Squeeze reads or writes.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i64 = "I64", i32 = "I32", i8 = "I8", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .i8, .u8, .bool: return 1
        }
    }

    /// Floating types that read into Float32.
    public var isFloat: Bool { [.f32, .f16, .bf16, .f64].contains(self) }
}

/// The bytes behind a safetensors file: in memory (bytes another rank sent, tests) or a file
/// read with pread(2) on demand, so loading a model never maps or copies the file as a whole.
final class ByteSource: @unchecked Sendable {
    private let data: Data?
    private let fd: Int32
    let count: Int
    let path: String

    init(data: Data, path: String) { self.data = data; fd = -1; count = data.count; self.path = path }

    init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileError.io(path, "cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { close(fd); throw FileError.io(path, "cannot stat: \(String(cString: strerror(errno)))") }
        self.fd = fd
        data = nil
        count = Int(st.st_size)
        self.path = path
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Copies bytes [offset, offset + n) into `dst`.
    func read(offset: Int, count n: Int, into dst: UnsafeMutableRawPointer) throws {
        precondition(offset >= 0 && n >= 0 && offset + n <= count, "ByteSource.read: range outside \(path)")
        if let data {
            data.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
            return
        }
        var done = 0
        while done < n {
            let r = pread(fd, dst + done, n - done, off_t(offset + done))
            if r < 0 && errno == EINTR { continue }
            guard r > 0 else { throw FileError.io(path, "read failed at byte \(offset + done): \(r == 0 ? "unexpected end of file" : String(cString: strerror(errno)))") }
            done += r
        }
    }
}

/// A read-only safetensors file with a validated header; tensor data is read on demand.
///
/// Layout: 8-byte little-endian header length N, N bytes of JSON
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the data.
public struct SafeTensorsFile {
    /// One tensor's header entry; `range` is relative to the start of the data section.
    public struct Entry: Sendable, Equatable {
        public let name: String
        public let dtype: SafeTensorsDType
        public let shape: [Int]
        public let range: Range<Int>
        /// Number of elements (the product of `shape`, checked for overflow when parsed).
        public let count: Int
    }

    public let url: URL
    public let entries: [String: Entry]
    public let metadata: [String: String]
    private let source: ByteSource
    private let dataStart: Int

    /// Opens and validates `url` (reads the header only): header length, JSON, dtypes,
    /// shape x dtype size = byte range, offsets in bounds and not overlapping. Errors name the
    /// file and the tensor.
    public init(url: URL) throws {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else { throw FileError.io(path, "no such file") }
        try self.init(source: try ByteSource(path: path), url: url)
    }

    /// Parses a safetensors file already in memory (`url` names it in messages), e.g. bytes that
    /// rank 0 read and broadcast.
    public init(data: Data, url: URL) throws {
        try self.init(source: ByteSource(data: data, path: url.path), url: url)
    }

    init(source: ByteSource, url: URL) throws {
        self.url = url
        self.source = source
        let path = url.path
        guard source.count >= 8 else { throw FileError.format(path, "too short for a safetensors file (\(source.count) bytes)") }
        var n: UInt64 = 0
        try withUnsafeMutableBytes(of: &n) { try source.read(offset: 0, count: 8, into: $0.baseAddress!) }
        n = UInt64(littleEndian: n)
        guard n > 0, n <= UInt64(source.count - 8), n < 100_000_000 else {
            throw FileError.format(path, "header length \(n) does not fit in a file of \(source.count) bytes")
        }
        var headerBytes = Data(count: Int(n))
        try headerBytes.withUnsafeMutableBytes { try source.read(offset: 8, count: Int(n), into: $0.baseAddress!) }
        let start = 8 + Int(n)
        (entries, metadata) = try Self.parseHeader(headerBytes, dataLength: source.count - start, path: path)
        dataStart = start
    }

    /// Validates a header's JSON against a data section of `dataLength` bytes.
    static func parseHeader(_ headerBytes: Data, dataLength: Int, path: String) throws -> ([String: Entry], [String: String]) {
        guard let json = try? JSONSerialization.jsonObject(with: headerBytes), let header = json as? [String: Any] else {
            throw FileError.format(path, "header is not a JSON object")
        }
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw FileError.format(path, "__metadata__ is not an object") }
                for (k, v) in m { metadata[k] = (v as? String) ?? "\(v)" }
                continue
            }
            guard let e = value as? [String: Any] else { throw FileError.format(path, "tensor '\(name)': entry is not an object") }
            guard let ds = e["dtype"] as? String else { throw FileError.format(path, "tensor '\(name)': missing dtype") }
            guard let dtype = SafeTensorsDType(rawValue: ds) else {
                throw FileError.format(path, "tensor '\(name)': unsupported dtype \(ds) (supported: \(SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            // `as? Int` bridges only numbers that are exactly an Int: 1.5, 1e300 and 2^64 are refused.
            guard let shapeAny = e["shape"] as? [Any], let shape = shapeAny.map({ $0 as? Int }) as? [Int],
                  shape.allSatisfy({ $0 >= 0 }) else {
                throw FileError.format(path, "tensor '\(name)': shape is not a list of non-negative integers")
            }
            guard let offAny = e["data_offsets"] as? [Any], offAny.count == 2,
                  let b = offAny[0] as? Int, let en = offAny[1] as? Int else {
                throw FileError.format(path, "tensor '\(name)': data_offsets must be [begin, end] (integers)")
            }
            guard 0 <= b, b <= en, en <= dataLength else {
                throw FileError.format(path, "tensor '\(name)': data_offsets [\(b), \(en)] outside the data section of \(dataLength) bytes")
            }
            // Element and byte counts with overflow checks: a shape like [2^62, 4] is an error,
            // not a trap.
            guard let count = Tensor.elementCount(shape) else {
                throw FileError.format(path, "tensor '\(name)': shape \(shape) has more elements than Int can count")
            }
            let (expected, overflow) = count.multipliedReportingOverflow(by: dtype.size)
            guard !overflow, en - b == expected else {
                throw FileError.format(path, "tensor '\(name)': shape \(shape) of \(ds) needs \(overflow ? "more than Int.max" : "\(expected)") bytes, data_offsets span \(en - b)")
            }
            entries[name] = Entry(name: name, dtype: dtype, shape: shape, range: b..<en, count: count)
        }
        let sorted = entries.values.filter { !$0.range.isEmpty }.sorted { $0.range.lowerBound < $1.range.lowerBound }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.range.upperBound > b.range.lowerBound {
            throw FileError.format(path, "tensors '\(a.name)' and '\(b.name)' overlap in the data section")
        }
        return (entries, metadata)
    }

    /// The entry called `name`, or an error naming the file and tensor.
    public func entry(_ name: String) throws -> Entry {
        guard let e = entries[name] else { throw FileError.format(url.path, "no tensor named '\(name)'") }
        return e
    }

    /// Converts a floating tensor (F32, F16, BF16, F64) to Float32 into `dst` (its element
    /// count), reading through a bounded buffer (never the whole tensor's bytes at once).
    public func readFloats(_ name: String, into dst: UnsafeMutablePointer<Float>) throws {
        let e = try entry(name)
        guard e.dtype.isFloat else { throw FileError.format(url.path, "tensor '\(name)' is \(e.dtype.rawValue), expected a float type") }
        let size = e.dtype.size, total = e.count
        if e.dtype == .f32 {
            // Little-endian hosts: the bytes are the floats.
            try source.read(offset: dataStart + e.range.lowerBound, count: total * 4, into: UnsafeMutableRawPointer(dst))
            return
        }
        let chunk = 1 << 18
        try withUnsafeTemporaryAllocation(byteCount: chunk * size, alignment: 8) { raw in
            var i = 0
            while i < total {
                let n = min(chunk, total - i)
                try source.read(offset: dataStart + e.range.lowerBound + i * size, count: n * size, into: raw.baseAddress!)
                let o = dst + i
                switch e.dtype {
                case .f16:
                    for j in 0..<n { o[j] = Float(Float16(bitPattern: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * j, as: UInt16.self)))) }
                case .bf16:
                    for j in 0..<n { o[j] = Float(bitPattern: UInt32(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * j, as: UInt16.self))) << 16) }
                case .f64:
                    for j in 0..<n { o[j] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * j, as: UInt64.self)))) }
                default: break
                }
                i += n
            }
        }
    }

    /// Elements `range` of an F32 tensor (flattened) into `dst` (e.g. one rank's shard of an
    /// optimizer state).
    public func readFloats(_ name: String, range: Range<Int>, into dst: UnsafeMutablePointer<Float>) throws {
        let e = try entry(name)
        guard e.dtype == .f32 else { throw FileError.format(url.path, "tensor '\(name)' is \(e.dtype.rawValue), expected F32") }
        guard range.lowerBound >= 0, range.upperBound <= e.count else {
            throw FileError.format(url.path, "tensor '\(name)' has \(e.count) elements, cannot read \(range)")
        }
        try source.read(offset: dataStart + e.range.lowerBound + 4 * range.lowerBound, count: 4 * range.count, into: UnsafeMutableRawPointer(dst))
    }

    /// A floating tensor converted to Float32 (F32, F16, BF16, F64).
    public func floats(_ name: String) throws -> [Float] {
        let e = try entry(name)
        guard e.dtype.isFloat else { throw FileError.format(url.path, "tensor '\(name)' is \(e.dtype.rawValue), expected a float type") }
        var out = [Float](repeating: 0, count: e.count)
        try out.withUnsafeMutableBufferPointer { try readFloats(name, into: $0.baseAddress!) }
        return out
    }

    /// A floating tensor as a `Tensor`.
    public func tensor(_ name: String) throws -> Tensor {
        try Tensor(shape: try entry(name).shape, data: floats(name))
    }

    /// The raw bytes of any entry.
    public func bytes(_ name: String) throws -> [UInt8] {
        let e = try entry(name)
        var out = [UInt8](repeating: 0, count: e.range.count)
        try out.withUnsafeMutableBytes { try source.read(offset: dataStart + e.range.lowerBound, count: e.range.count, into: $0.baseAddress!) }
        return out
    }

    /// An integer entry (I64, I32, I8, U8, BOOL) as Ints.
    public func integers(_ name: String) throws -> [Int] {
        let e = try entry(name)
        let raw = try bytes(name)
        switch e.dtype {
        case .i64: return raw.withUnsafeBytes { p in (0..<e.count).map { Int(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) } }
        case .i32: return raw.withUnsafeBytes { p in (0..<e.count).map { Int(Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) } }
        case .i8: return raw.map { Int(Int8(bitPattern: $0)) }
        case .u8, .bool: return raw.map(Int.init)
        default: throw FileError.format(url.path, "tensor '\(name)' is \(e.dtype.rawValue), expected an integer type")
        }
    }

    /// The header's bytes as this file holds them (for another rank to parse the same header).
    public func headerBytes() throws -> Data {
        var d = Data(count: dataStart - 8)
        try d.withUnsafeMutableBytes { try source.read(offset: 8, count: dataStart - 8, into: $0.baseAddress!) }
        return d
    }
}

/// Collects tensors and writes a safetensors file atomically (entries in insertion order,
/// header padded to 8 bytes as Hugging Face does). Float data is converted while it is written,
/// in bounded chunks: a model is never copied whole into a second buffer.
public struct SafeTensorsWriter {
    enum Payload {
        case bytes(Data)
        /// Float32 values converted to the entry's dtype on write; `owner` keeps them alive.
        case floats(UnsafePointer<Float>, owner: AnyObject?)
    }
    struct Item { let name: String; let dtype: SafeTensorsDType; let shape: [Int]; let payload: Payload
        var byteCount: Int { shape.reduce(1, *) * dtype.size }
    }
    private var items: [Item] = []
    public var metadata: [String: String] = [:]

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    /// Adds a float tensor stored as F32, F16 or BF16.
    public mutating func add(_ name: String, shape: [Int], values: [Float], dtype: SafeTensorsDType = .f32) {
        precondition(shape.reduce(1, *) == values.count, "SafeTensorsWriter.add(\(name)): shape \(shape) vs \(values.count) values")
        precondition([.f32, .f16, .bf16].contains(dtype), "SafeTensorsWriter.add(\(name)): \(dtype) is not a float type")
        let box = FloatBox(values)
        items.append(Item(name: name, dtype: dtype, shape: shape, payload: .floats(box.pointer, owner: box)))
    }

    /// Adds `shape`'s count of floats read from `values` when the file is written (the caller keeps
    /// them alive and unchanged until then; `owner`, if given, is retained).
    public mutating func add(_ name: String, shape: [Int], pointer values: UnsafePointer<Float>, dtype: SafeTensorsDType = .f32, owner: AnyObject? = nil) {
        precondition([.f32, .f16, .bf16].contains(dtype), "SafeTensorsWriter.add(\(name)): \(dtype) is not a float type")
        items.append(Item(name: name, dtype: dtype, shape: shape, payload: .floats(values, owner: owner)))
    }

    /// Adds a `Tensor`.
    public mutating func add(_ name: String, _ tensor: Tensor, dtype: SafeTensorsDType = .f32) {
        add(name, shape: tensor.shape, values: tensor.data, dtype: dtype)
    }

    /// Adds raw bytes with a declared dtype (U8 bitmasks, I64 ids...).
    public mutating func add(_ name: String, shape: [Int], bytes: [UInt8], dtype: SafeTensorsDType) {
        precondition(shape.reduce(1, *) * dtype.size == bytes.count, "SafeTensorsWriter.add(\(name)): byte count")
        items.append(Item(name: name, dtype: dtype, shape: shape, payload: .bytes(Data(bytes))))
    }

    /// Bytes of tensor data (without the header).
    public var dataBytes: Int { items.reduce(0) { $0 + $1.byteCount } }

    /// The header JSON (padded) for `items`.
    static func header(_ items: [Item], metadata: [String: String]) throws -> Data {
        var header: [String: Any] = [:]
        var offset = 0
        for item in items {
            header[item.name] = ["dtype": item.dtype.rawValue, "shape": item.shape, "data_offsets": [offset, offset + item.byteCount]] as [String: Any]
            offset += item.byteCount
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        return json
    }

    /// The header JSON as written (padded), for writers that stream the data themselves.
    public func headerBytes() throws -> Data { try Self.header(items, metadata: metadata) }

    /// Writes the file atomically.
    public func write(to url: URL) throws {
        try Self.write(items, metadata: metadata, to: url)
    }

    static func write(_ items: [Item], metadata: [String: String], to url: URL) throws {
        let json = try header(items, metadata: metadata)
        try writeAtomically(to: url) { out in
            var n = UInt64(json.count).littleEndian
            try withUnsafeBytes(of: &n) { try out($0) }
            try json.withUnsafeBytes { try out($0) }
            for item in items {
                switch item.payload {
                case .bytes(let d): try d.withUnsafeBytes { try out($0) }
                case .floats(let p, _): try writeFloats(p, count: item.shape.reduce(1, *), dtype: item.dtype, to: out)
                }
            }
        }
    }

    /// Converts floats to `dtype` little-endian bytes in chunks and hands each chunk to `out`.
    static func writeFloats(_ p: UnsafePointer<Float>, count: Int, dtype: SafeTensorsDType,
                            to out: (UnsafeRawBufferPointer) throws -> Void) throws {
        if dtype == .f32 { try out(UnsafeRawBufferPointer(start: p, count: count * 4)); return }
        let chunk = 1 << 18
        try withUnsafeTemporaryAllocation(byteCount: chunk * dtype.size, alignment: 8) { raw in
            var i = 0
            while i < count {
                let n = min(chunk, count - i)
                for j in 0..<n {
                    let v = p[i + j]
                    let bits: UInt16
                    if dtype == .f16 {
                        bits = Float16(v).bitPattern
                    } else {
                        // BF16: round to nearest even, as torch does.
                        let b = v.bitPattern
                        bits = v.isNaN ? 0x7FC0 : UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
                    }
                    raw.storeBytes(of: bits.littleEndian, toByteOffset: 2 * j, as: UInt16.self)
                }
                try out(UnsafeRawBufferPointer(rebasing: raw[0..<(n * 2)]))
                i += n
            }
        }
    }

    /// Writes into `directory` as Hugging Face's `save_pretrained` does: `<base>.safetensors`
    /// when the data fits in `maxShardBytes`, else shards `<base>-0000k-of-0000n.safetensors`
    /// (tensors in order, a shard closed before it would pass the limit) and
    /// `<base>.safetensors.index.json` (`metadata.total_size`, `weight_map`). Files of the other
    /// layout left by an earlier save are removed.
    public func writeModel(to directory: URL, base: String = "model", maxShardBytes: Int) throws {
        let fm = FileManager.default
        var shards: [[Item]] = [[]]
        var size = 0
        for item in items {
            if size > 0 && size + item.byteCount > maxShardBytes { shards.append([]); size = 0 }
            shards[shards.count - 1].append(item)
            size += item.byteCount
        }
        let index = directory.appendingPathComponent("\(base).safetensors.index.json")
        let single = directory.appendingPathComponent("\(base).safetensors")
        let stale = ((try? fm.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasPrefix("\(base)-") && $0.hasSuffix(".safetensors") }
        if shards.count == 1 {
            try write(to: single)
            try? fm.removeItem(at: index)
            for f in stale { try? fm.removeItem(at: directory.appendingPathComponent(f)) }
            return
        }
        var weightMap: [String: String] = [:]
        var written = Set<String>()
        for (k, shard) in shards.enumerated() {
            let name = String(format: "%@-%05d-of-%05d.safetensors", base, k + 1, shards.count)
            try Self.write(shard, metadata: metadata, to: directory.appendingPathComponent(name))
            for item in shard { weightMap[item.name] = name }
            written.insert(name)
        }
        let indexJSON: [String: Any] = ["metadata": ["total_size": dataBytes], "weight_map": weightMap]
        var data = try JSONSerialization.data(withJSONObject: indexJSON, options: [.prettyPrinted, .sortedKeys])
        data.append(0x0A)
        try writeAtomically(data, to: index)
        try? fm.removeItem(at: single)
        for f in stale where !written.contains(f) { try? fm.removeItem(at: directory.appendingPathComponent(f)) }
    }
}

/// Keeps an array's floats at a stable address for a deferred write.
final class FloatBox {
    let storage: UnsafeMutableBufferPointer<Float>
    var pointer: UnsafePointer<Float> { UnsafePointer(storage.baseAddress!) }
    init(_ values: [Float]) {
        storage = .allocate(capacity: max(values.count, 1))
        _ = storage.initialize(from: values)
    }
    deinit { storage.deallocate() }
}
