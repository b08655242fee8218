import Foundation
import Model

/// The JSON sidecar of the GGUF fixtures (scripts/make_gguf_reference.py writes it for the files
/// gguf-py wrote; GGUFTests writes it for the file our writer wrote): what each file holds.
struct GGUFSidecar: Codable, Equatable {
    var generator: [String: String]?
    var files: [String: File]
    /// Set by `make_gguf_reference.py --check`: gguf.GGUFReader parsed the file to this sidecar.
    var ggufPyCheck: [String: String]?

    struct File: Codable, Equatable {
        var version: UInt32
        var alignment: Int
        var dataOffset: Int?
        var fileSize: Int?
        var metadata: [KV]
        var tensors: [Tensor]
    }

    struct Tensor: Codable, Equatable {
        var name: String
        var type: String
        var typeId: UInt32
        var shape: [Int]
        var dims: [Int]
        var offset: Int
        var nBytes: Int
        var sha256: String
        /// F32/F16/BF16 only: the values as Float32 (carried exactly by JSON doubles).
        var values: [Double]?
    }

    /// One metadata entry: {"key", "type", "value"}; an array's value is {"type", "values"}.
    struct KV: Codable, Equatable {
        var key: String
        var value: GGUFValue

        init(key: String, value: GGUFValue) { self.key = key; self.value = value }

        enum Keys: String, CodingKey { case key, type, value, values }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: Keys.self)
            key = try c.decode(String.self, forKey: .key)
            let name = try c.decode(String.self, forKey: .type)
            guard let type = GGUFValueType(name: name) else {
                throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown type \(name)")
            }
            value = try Self.decode(type, c)
        }

        static func decode(_ t: GGUFValueType, _ c: KeyedDecodingContainer<Keys>) throws -> GGUFValue {
            switch t {
            case .uint8: return .uint8(try c.decode(UInt8.self, forKey: .value))
            case .int8: return .int8(try c.decode(Int8.self, forKey: .value))
            case .uint16: return .uint16(try c.decode(UInt16.self, forKey: .value))
            case .int16: return .int16(try c.decode(Int16.self, forKey: .value))
            case .uint32: return .uint32(try c.decode(UInt32.self, forKey: .value))
            case .int32: return .int32(try c.decode(Int32.self, forKey: .value))
            case .float32: return .float32(Float(try c.decode(Double.self, forKey: .value)))
            case .bool: return .bool(try c.decode(Bool.self, forKey: .value))
            case .string: return .string(try c.decode(String.self, forKey: .value))
            case .array: return .array(try decodeArray(c.superDecoder(forKey: .value)))
            case .uint64: return .uint64(try c.decode(UInt64.self, forKey: .value))
            case .int64: return .int64(try c.decode(Int64.self, forKey: .value))
            case .float64: return .float64(try c.decode(Double.self, forKey: .value))
            }
        }

        static func decodeArray(_ decoder: Decoder) throws -> GGUFArray {
            let c = try decoder.container(keyedBy: Keys.self)
            let name = try c.decode(String.self, forKey: .type)
            func v<T: Decodable>(_: T.Type) throws -> [T] { try c.decode([T].self, forKey: .values) }
            switch GGUFValueType(name: name) {
            case .uint8?: return .uint8(try v(UInt8.self))
            case .int8?: return .int8(try v(Int8.self))
            case .uint16?: return .uint16(try v(UInt16.self))
            case .int16?: return .int16(try v(Int16.self))
            case .uint32?: return .uint32(try v(UInt32.self))
            case .int32?: return .int32(try v(Int32.self))
            case .float32?: return .float32(try v(Double.self).map(Float.init))
            case .bool?: return .bool(try v(Bool.self))
            case .string?: return .string(try v(String.self))
            case .uint64?: return .uint64(try v(UInt64.self))
            case .int64?: return .int64(try v(Int64.self))
            case .float64?: return .float64(try v(Double.self))
            case .array?:
                var u = try c.nestedUnkeyedContainer(forKey: .values)
                var out: [GGUFArray] = []
                while !u.isAtEnd { out.append(try decodeArray(u.superDecoder())) }
                return .array(out)
            case nil: throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown type \(name)")
            }
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Keys.self)
            try c.encode(key, forKey: .key)
            try c.encode(value.type.name, forKey: .type)
            try Self.encode(value, &c)
        }

        static func encode(_ value: GGUFValue, _ c: inout KeyedEncodingContainer<Keys>) throws {
            switch value {
            case .float32(let x): try c.encode(Double(x), forKey: .value)
            case .float64(let x): try c.encode(x, forKey: .value)
            case .string(let x): try c.encode(x, forKey: .value)
            case .bool(let x): try c.encode(x, forKey: .value)
            case .array(let a): try encodeArray(a, c.superEncoder(forKey: .value))
            case .uint64(let x): try c.encode(x, forKey: .value)
            default: try c.encode(Int64(value.int!), forKey: .value)
            }
        }

        static func encodeArray(_ a: GGUFArray, _ encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Keys.self)
            try c.encode(a.elementType.name, forKey: .type)
            switch a {
            case .float32(let xs): try c.encode(xs.map(Double.init), forKey: .values)
            case .float64(let xs): try c.encode(xs, forKey: .values)
            case .bool(let xs): try c.encode(xs, forKey: .values)
            case .string(let xs): try c.encode(xs, forKey: .values)
            case .uint64(let xs): try c.encode(xs, forKey: .values)
            case .array(let xs):
                var u = c.nestedUnkeyedContainer(forKey: .values)
                for x in xs { try encodeArray(x, u.superEncoder()) }
            default: try c.encode(a.ints!.map(Int64.init), forKey: .values)
            }
        }
    }

    static func load(_ url: URL) throws -> GGUFSidecar {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try d.decode(GGUFSidecar.self, from: Data(contentsOf: url))
    }

    func encoded() throws -> Data {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try e.encode(self) + Data("\n".utf8)
    }
}

/// SHA-256 (FIPS 180-4), for comparing tensor bytes with the sidecars' hashes.
enum SHA256 {
    static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    static func hex<D: DataProtocol>(_ data: D) -> String {
        var m = [UInt8](data)
        let bits = UInt64(m.count) * 8
        m.append(0x80)
        while m.count % 64 != 56 { m.append(0) }
        for i in (0..<8).reversed() { m.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(i)))) }
        var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
        for chunk in stride(from: 0, to: m.count, by: 64) {
            var w = (0..<16).map { i in (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(m[chunk + 4 * i + $1]) } }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w.append(w[i - 16] &+ s0 &+ w[i - 7] &+ s1)
            }
            var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
            for i in 0..<64 {
                let t1 = hh &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ ((e & f) ^ (~e & g)) &+ k[i] &+ w[i]
                let t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) ^ (a & c) ^ (b & c))
                (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
            }
            for (i, x) in [a, b, c, d, e, f, g, hh].enumerated() { h[i] = h[i] &+ x }
        }
        return h.map { String(format: "%08x", $0) }.joined()
    }
}

/// Hand-assembled GGUF bytes for the malformed-input tests (independent of GGUFWriter).
struct RawGGUF {
    var bytes: [UInt8] = []
    var data: Data { Data(bytes) }

    mutating func int<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u32(_ v: UInt32) { int(v) }
    mutating func u64(_ v: UInt64) { int(v) }

    mutating func string(_ s: String) {
        u64(UInt64(s.utf8.count))
        bytes += s.utf8
    }

    /// Magic, version, tensor count, kv count.
    mutating func header(version: UInt32 = 3, tensors: UInt64, kvs: UInt64) {
        bytes += Array("GGUF".utf8)
        u32(version)
        u64(tensors)
        u64(kvs)
    }

    /// A metadata entry: key, type tag, then whatever `value` appends.
    mutating func kv(_ key: String, _ type: GGUFValueType, _ value: (inout RawGGUF) -> Void) {
        string(key)
        u32(type.rawValue)
        value(&self)
    }

    mutating func tensorInfo(_ name: String, dims: [UInt64], type: UInt32 = 0, offset: UInt64 = 0) {
        string(name)
        u32(UInt32(dims.count))
        for d in dims { u64(d) }
        u32(type)
        u64(offset)
    }

    /// Zero bytes up to a multiple of `alignment`, then `count` data bytes.
    mutating func data(alignment: Int = 32, count: Int) {
        while bytes.count % alignment != 0 { bytes.append(0) }
        bytes += (0..<count).map { UInt8(truncatingIfNeeded: $0) }
    }
}
