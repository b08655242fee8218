import Foundation
import Tensor

/// Element types of a safetensors entry that Squeeze reads or writes.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64"
    case i64 = "I64", i32 = "I32", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .u8, .bool: return 1
        }
    }

    /// Floating types that read into Float32.
    public var isFloat: Bool { [.f32, .f16, .bf16, .f64].contains(self) }
}

/// A read-only, memory-mapped safetensors file with a validated header.
///
/// Layout: 8-byte little-endian header length N, N bytes of JSON
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the data.
public struct SafeTensorsFile {
    /// One tensor's header entry; `range` is relative to the start of the data section.
    public struct Entry: Sendable {
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
    private let data: Data
    private let dataStart: Int

    /// Maps and validates `url`: header length, JSON, dtypes, shape x dtype size = byte range,
    /// offsets in bounds and not overlapping. Errors name the file and the tensor.
    public init(url: URL) throws {
        let path = url.path
        guard FileManager.default.fileExists(atPath: path) else { throw FileError.io(path, "no such file") }
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw FileError.io(path, "cannot read: \(error.localizedDescription)")
        }
        try self.init(data: data, url: url)
    }

    /// Parses a safetensors file already in memory (`url` names it in messages), e.g. bytes that
    /// rank 0 read and broadcast.
    public init(data: Data, url: URL) throws {
        self.url = url
        let path = url.path
        guard data.count >= 8 else { throw FileError.format(path, "too short for a safetensors file (\(data.count) bytes)") }
        let n = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n > 0, n <= UInt64(data.count - 8), n < 100_000_000 else {
            throw FileError.format(path, "header length \(n) does not fit in a file of \(data.count) bytes")
        }
        let headerBytes = data.subdata(in: 8..<(8 + Int(n)))
        guard let json = try? JSONSerialization.jsonObject(with: headerBytes), let header = json as? [String: Any] else {
            throw FileError.format(path, "header is not a JSON object")
        }
        let start = 8 + Int(n)
        let dataLength = data.count - start
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
        self.entries = entries
        self.metadata = metadata
        self.data = data
        self.dataStart = start
    }

    /// The entry called `name`, or an error naming the file and tensor.
    public func entry(_ name: String) throws -> Entry {
        guard let e = entries[name] else { throw FileError.format(url.path, "no tensor named '\(name)'") }
        return e
    }

    /// A floating tensor converted to Float32 (F32, F16, BF16, F64).
    public func floats(_ name: String) throws -> [Float] {
        let e = try entry(name)
        guard e.dtype.isFloat else { throw FileError.format(url.path, "tensor '\(name)' is \(e.dtype.rawValue), expected a float type") }
        var out = [Float](repeating: 0, count: e.count)
        data.withUnsafeBytes { raw in
            let base = raw.baseAddress! + dataStart + e.range.lowerBound
            out.withUnsafeMutableBufferPointer { o in
                switch e.dtype {
                case .f32:
                    for i in 0..<e.count { o[i] = Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
                case .f16:
                    for i in 0..<e.count { o[i] = Float(Float16(bitPattern: UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
                case .bf16:
                    for i in 0..<e.count { o[i] = Float(bitPattern: UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16) }
                case .f64:
                    for i in 0..<e.count { o[i] = Float(Double(bitPattern: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
                default: break
                }
            }
        }
        return out
    }

    /// A floating tensor as a `Tensor`.
    public func tensor(_ name: String) throws -> Tensor {
        try Tensor(shape: try entry(name).shape, data: floats(name))
    }

    /// The raw bytes of any entry.
    public func bytes(_ name: String) throws -> [UInt8] {
        let e = try entry(name)
        return [UInt8](data[(dataStart + e.range.lowerBound)..<(dataStart + e.range.upperBound)])
    }

    /// An integer entry (I64, I32, U8, BOOL) as Ints.
    public func integers(_ name: String) throws -> [Int] {
        let e = try entry(name)
        let raw = try bytes(name)
        switch e.dtype {
        case .i64: return raw.withUnsafeBytes { p in (0..<e.count).map { Int(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self))) } }
        case .i32: return raw.withUnsafeBytes { p in (0..<e.count).map { Int(Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) } }
        case .u8, .bool: return raw.map(Int.init)
        default: throw FileError.format(url.path, "tensor '\(name)' is \(e.dtype.rawValue), expected an integer type")
        }
    }
}

/// Collects tensors and writes a safetensors file atomically (entries in insertion order,
/// header padded to 8 bytes as Hugging Face does).
public struct SafeTensorsWriter {
    private var items: [(name: String, dtype: SafeTensorsDType, shape: [Int], bytes: Data)] = []
    public var metadata: [String: String] = [:]

    public init(metadata: [String: String] = [:]) { self.metadata = metadata }

    /// Adds a float tensor stored as F32, F16 or BF16.
    public mutating func add(_ name: String, shape: [Int], values: [Float], dtype: SafeTensorsDType = .f32) {
        precondition(shape.reduce(1, *) == values.count, "SafeTensorsWriter.add(\(name)): shape \(shape) vs \(values.count) values")
        var d = Data(count: values.count * dtype.size)
        d.withUnsafeMutableBytes { raw in
            switch dtype {
            case .f32: for (i, v) in values.enumerated() { raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            case .f16: for (i, v) in values.enumerated() { raw.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
            case .bf16:
                for (i, v) in values.enumerated() {
                    // Round to nearest even, as torch does.
                    let bits = v.bitPattern
                    let rounded = v.isNaN ? UInt16(0x7FC0) : UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
                    raw.storeBytes(of: rounded.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
                }
            default: preconditionFailure("SafeTensorsWriter.add(\(name)): \(dtype) is not a float type")
            }
        }
        items.append((name, dtype, shape, d))
    }

    /// Adds a `Tensor`.
    public mutating func add(_ name: String, _ tensor: Tensor, dtype: SafeTensorsDType = .f32) {
        add(name, shape: tensor.shape, values: tensor.data, dtype: dtype)
    }

    /// Adds raw bytes with a declared dtype (U8 bitmasks, I64 ids...).
    public mutating func add(_ name: String, shape: [Int], bytes: [UInt8], dtype: SafeTensorsDType) {
        precondition(shape.reduce(1, *) * dtype.size == bytes.count, "SafeTensorsWriter.add(\(name)): byte count")
        items.append((name, dtype, shape, Data(bytes)))
    }

    /// The file's bytes.
    public func serialized() throws -> Data {
        var header: [String: Any] = [:]
        var offset = 0
        for item in items {
            header[item.name] = ["dtype": item.dtype.rawValue, "shape": item.shape, "data_offsets": [offset, offset + item.bytes.count]] as [String: Any]
            offset += item.bytes.count
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        out.reserveCapacity(8 + json.count + offset)
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(json)
        for item in items { out.append(item.bytes) }
        return out
    }

    /// Writes the file atomically.
    public func write(to url: URL) throws {
        try writeAtomically(try serialized(), to: url)
    }
}
