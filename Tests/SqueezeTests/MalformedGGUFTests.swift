import Foundation
import Model
import XCTest

/// Malformed GGUF files: each is refused within a second with an error naming the file and the
/// field, key or tensor; nothing traps, hangs or allocates from an unchecked count.
final class MalformedGGUFTests: XCTestCase {
    /// The error parsing `data` raises (as a file called `name`.gguf); "accepted" if none.
    func refusal(_ data: Data, _ name: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        let url = URL(fileURLWithPath: "/malformed/\(name).gguf")
        let t0 = Date()
        defer { XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "\(name): refusal took too long", file: file, line: line) }
        do { _ = try GGUFFile(data: data, url: url); return "accepted" } catch {
            let s = "\(error)"
            XCTAssertTrue(s.hasPrefix(url.path + ": "), "\(name): the error names the file: \(s)", file: file, line: line)
            return s
        }
    }

    func assertRefused(_ raw: RawGGUF, _ name: String, _ expected: String..., file: StaticString = #filePath, line: UInt = #line) {
        let s = refusal(raw.data, name, file: file, line: line)
        for piece in expected { XCTAssertTrue(s.contains(piece), "\(name): expected '\(piece)' in: \(s)", file: file, line: line) }
    }

    /// A file with metadata `kvs` and `tensors` (default: one F32 tensor `t` of [4] at offset 0),
    /// then `data` bytes after padding to `alignment`.
    func file(kvs: [(inout RawGGUF) -> Void] = [], tensors: [(inout RawGGUF) -> Void]? = nil, data: Int = 16, alignment: Int = 32) -> RawGGUF {
        let infos = tensors ?? [{ $0.tensorInfo("t", dims: [4]) }]
        var r = RawGGUF()
        r.header(tensors: UInt64(infos.count), kvs: UInt64(kvs.count))
        for kv in kvs { kv(&r) }
        for t in infos { t(&r) }
        r.data(alignment: alignment, count: data)
        return r
    }

    func testAHandMadeFileIsAccepted() throws {
        let r = file(kvs: [{ $0.kv("k", .string) { $0.string("v") } }])
        XCTAssertEqual(refusal(r.data, "valid"), "accepted")
        let f = try GGUFFile(data: r.data, url: URL(fileURLWithPath: "/valid.gguf"))
        XCTAssertEqual(f.tensors.first?.range, 96..<112, "24-byte header, 22-byte entry, 33-byte info, padded to 96")
        XCTAssertEqual(try f.floats(of: "t").count, 4)
    }

    func testTruncatedAtEveryByte() throws {
        let url = GGUFTests.dir.appendingPathComponent("reference.gguf")
        let full = try Data(contentsOf: url)
        let f = try GGUFFile(data: full, url: url)
        let end = f.tensors.map(\.range.upperBound).max()!
        for n in 0..<end {
            let s = refusal(full.prefix(n), "prefix-\(n)")
            let reason = n < f.dataOffset ? ["truncated", "cannot fit", "past the end of the file"] : ["past the end of the file"]
            XCTAssertTrue(reason.contains { s.contains($0) }, "prefix of \(n) bytes: \(s)")
        }
        XCTAssertNoThrow(try GGUFFile(data: full.prefix(end), url: url), "padding after the last tensor is optional")
        // Through the file system too (mapped).
        let tmp = try Fixtures.temporaryDirectory(self).appendingPathComponent("cut.gguf")
        try full.prefix(1000).write(to: tmp)
        XCTAssertThrowsError(try GGUFFile(url: tmp)) {
            XCTAssertTrue("\($0)".hasPrefix(tmp.path + ": metadata 'test.array.string'[3]: string length 10 at byte 989 is past the end"), "\($0)")
        }
        XCTAssertThrowsError(try GGUFFile(url: tmp.appendingPathExtension("missing"))) { XCTAssertTrue("\($0)".contains("no such file"), "\($0)") }
        XCTAssertTrue(refusal(Data(), "empty").contains("truncated: magic needs 4 bytes"))
    }

    func testBadMagic() {
        var r = file()
        r.bytes[3] = 0x47
        assertRefused(r, "magic", "bad magic 47 47 55 47", "not a GGUF file")
    }

    func testUnsupportedVersions() throws {
        for (version, expect) in [(UInt32(0), "unsupported GGUF version 0:"), (1, "unsupported GGUF version 1:"), (4, "unsupported GGUF version 4:"),
                                  (0x0300_0000, "version 50331648 (a big-endian file?")] {
            var v = RawGGUF()
            v.header(version: version, tensors: 0, kvs: 0)
            assertRefused(v, "version-\(version)", expect)
        }
        // Version 2 has version 3's little-endian layout: accepted.
        var bytes = try Data(contentsOf: GGUFTests.dir.appendingPathComponent("aligned.gguf"))
        bytes[4] = 2
        let v2 = try GGUFFile(data: bytes, url: URL(fileURLWithPath: "/v2.gguf"))
        XCTAssertEqual(v2.version, 2)
        XCTAssertEqual(v2.tensors.count, 4)
    }

    func testCountsThatOverflowOrCannotFit() {
        for (tensors, kvs) in [(UInt64.max, UInt64(0)), (0, 1 << 62), (1 << 59, 1 << 59), (3, 0), (0, 3)] {
            var r = RawGGUF()
            r.header(tensors: tensors, kvs: kvs)
            r.bytes += [UInt8](repeating: 0, count: 40)
            assertRefused(r, "counts-\(tensors)-\(kvs)", "tensor count \(tensors) and metadata kv count \(kvs) cannot fit in the 40 bytes")
        }
    }

    func testStringLengthPastTheEndOrAbsurd() {
        var r = RawGGUF()
        r.header(tensors: 0, kvs: 1)
        r.u64(1000)
        r.bytes += Array("short".utf8) + [UInt8](repeating: 0, count: 20)
        assertRefused(r, "key-past-end", "metadata key #0: string length 1000 at byte 24 is past the end of the file (25 bytes left)")
        assertRefused(file(kvs: [{ $0.kv("s", .string) { $0.u64(1 << 63) } }]), "value-absurd", "metadata 's': string length 9223372036854775808", "past the end")
        assertRefused(file(tensors: [{ $0.string(String(repeating: "n", count: 65)); $0.u32(1); $0.u64(4); $0.u32(0); $0.u64(0) }]),
                      "long-name", "tensor #0 name: string length 65 exceeds the limit of 64 bytes")
        assertRefused(file(kvs: [{ $0.kv(String(repeating: "k", count: 65_536), .uint8) { $0.int(UInt8(1)) } }]),
                      "long-key", "metadata key #0: string length 65536 exceeds the limit of 65535 bytes")
    }

    func testInvalidStringsBoolsAndEmptyKeys() {
        assertRefused(file(kvs: [{ $0.u64(2); $0.bytes += [0xC3, 0x28]; $0.u32(0); $0.int(UInt8(0)) }]), "utf8", "metadata key #0: string at byte 32 is not valid UTF-8")
        assertRefused(file(kvs: [{ $0.kv("", .uint8) { $0.int(UInt8(1)) } }]), "empty-key", "metadata key #0 is empty")
        assertRefused(file(kvs: [{ $0.kv("b", .bool) { $0.int(UInt8(2)) } }]), "bool", "metadata 'b': bool byte 2", "neither 0 nor 1")
    }

    func testArrayLengthPastTheEnd() {
        assertRefused(file(kvs: [{ $0.kv("a", .array) { $0.u32(GGUFValueType.uint32.rawValue); $0.u64(1 << 40) } }]),
                      "array-past-end", "metadata 'a' element count = 1099511627776 cannot fit", "each takes at least 4")
        assertRefused(file(kvs: [{ $0.kv("a", .array) { $0.u32(GGUFValueType.string.rawValue); $0.u64(1_000_000) } }]),
                      "strings-past-end", "metadata 'a' element count = 1000000 cannot fit", "each takes at least 8")
        assertRefused(file(kvs: [{ $0.kv("a", .array) { $0.u32(GGUFValueType.array.rawValue); $0.u64(UInt64.max) } }]),
                      "arrays-past-end", "element count = 18446744073709551615 cannot fit")
    }

    func testNestedArrayDepthLimit() {
        func nested(_ depth: Int) -> RawGGUF {
            file(kvs: [{ r in r.kv("n", .array) { r in
                for _ in 1..<depth { r.u32(GGUFValueType.array.rawValue); r.u64(1) }
                r.u32(GGUFValueType.uint8.rawValue); r.u64(1); r.int(UInt8(7))
            } }])
        }
        XCTAssertEqual(refusal(nested(8).data, "depth-8"), "accepted")
        assertRefused(nested(9), "depth-9", "metadata 'n'[0][0][0][0][0][0][0][0]: arrays nested more than 8 deep")
    }

    func testUnknownValueType() {
        assertRefused(file(kvs: [{ $0.kv("k", .uint8) { _ in }; $0.bytes.removeLast(4); $0.u32(13); $0.int(UInt8(0)) }]),
                      "unknown-type", "metadata 'k': unknown value type 13")
        assertRefused(file(kvs: [{ $0.kv("a", .array) { $0.u32(99); $0.u64(0) } }]), "unknown-element-type", "metadata 'a' element: unknown value type 99")
    }

    func testDuplicateKeys() {
        let kv: (inout RawGGUF) -> Void = { $0.kv("dup.key", .int32) { $0.int(Int32(1)) } }
        assertRefused(file(kvs: [kv, { $0.kv("other", .uint8) { $0.int(UInt8(1)) } }, kv]), "dup-key", "duplicate metadata key 'dup.key' (entries #0 and #2)")
    }

    func testDuplicateTensorNames() {
        let t: (inout RawGGUF) -> Void = { $0.tensorInfo("w", dims: [4]) }
        assertRefused(file(tensors: [t, t], data: 64), "dup-tensor", "duplicate tensor name 'w' (tensor #0 and #1)")
    }

    /// A file with one tensor 'w'.
    func one(_ dims: [UInt64] = [4], type: UInt32 = 0, offset: UInt64 = 0, data: Int = 16) -> RawGGUF {
        file(tensors: [{ $0.tensorInfo("w", dims: dims, type: type, offset: offset) }], data: data)
    }

    func testNDimsZeroOrAboveFour() {
        assertRefused(one([]), "ndims-0", "tensor 'w': n_dims = 0, must be 1 to 4")
        assertRefused(one([1, 1, 1, 1, 4]), "ndims-5", "tensor 'w': n_dims = 5, must be 1 to 4")
    }

    func testDimensionZeroOrOverflowingProduct() {
        assertRefused(one([4, 0]), "dim-0", "tensor 'w': dimension 1 is 0")
        assertRefused(one([1 << 32, 1 << 32]), "dims-overflow", "tensor 'w': dimensions [4294967296, 4294967296] have more elements than Int can count")
        assertRefused(one([1 << 63]), "dim-huge", "tensor 'w': dimension 0 = 9223372036854775808 is larger than Int.max")
        assertRefused(one([1 << 61]), "bytes-overflow", "tensor 'w': 2305843009213693952 elements of F32 (0) need more bytes than Int can count")
    }

    func testRowsNotAMultipleOfTheBlockSize() {
        assertRefused(one([33, 2], type: 8), "block", "tensor 'w': rows of 33 elements (ne[0]) are not a multiple of the Q8_0 (8) block size 32")
        assertRefused(one([128], type: 12, data: 144), "block-k", "tensor 'w': rows of 128 elements (ne[0]) are not a multiple of the Q4_K (12) block size 256")
    }

    func testUnknownAndUnsupportedTensorTypes() {
        assertRefused(one(type: 4), "type-removed", "tensor 'w': unknown ggml type id 4")
        assertRefused(one(type: 99), "type-unknown", "tensor 'w': unknown ggml type id 99")
        // Known but unsupported: parsed, refused when read.
        let q4k = one([256], type: 12, data: 144)
        XCTAssertEqual(refusal(q4k.data, "q4k"), "accepted")
        let url = URL(fileURLWithPath: "/malformed/q4k.gguf")
        XCTAssertThrowsError(try GGUFFile(data: q4k.data, url: url).bytes(of: "w")) {
            XCTAssertEqual("\($0)", "\(url.path): tensor 'w' is Q4_K (12), which is not supported (supported: F32, F16, Q4_0, Q8_0, BF16)")
        }
    }

    func testOffsetNotAligned() {
        assertRefused(one(offset: 8, data: 64), "unaligned", "tensor 'w': offset 8 is not a multiple of the alignment 32")
    }

    func testOffsetPastTheEnd() {
        assertRefused(one(offset: 64), "past-end", "tensor 'w': data at offset 64", "is past the end of the file (80 bytes; data section at byte 64)")
        assertRefused(one(offset: 1 << 62), "far-past-end", "tensor 'w': data at offset 4611686018427387904", "past the end of the file")
        assertRefused(one(offset: UInt64(Int.max) - 31), "overflow", "tensor 'w': data at offset 9223372036854775776", "past Int.max")
        assertRefused(one(offset: 1 << 63), "offset-huge", "tensor 'w': offset 9223372036854775808 is past the end of the file")
    }

    func testOverlappingTensors() {
        let overlap = file(tensors: [{ $0.tensorInfo("a", dims: [16]) }, { $0.tensorInfo("b", dims: [8], offset: 32) }], data: 96)
        assertRefused(overlap, "overlap", "tensors 'a' and 'b' overlap in the data section (offsets 0 + 64 bytes and 32)")
        let same = file(tensors: [{ $0.tensorInfo("a", dims: [4]) }, { $0.tensorInfo("b", dims: [4]) }], data: 16)
        assertRefused(same, "same-offset", "tensors 'a' and 'b' overlap")
    }

    func testAlignmentNotAPowerOfTwo() {
        func aligned(_ value: @escaping (inout RawGGUF) -> Void, type: GGUFValueType = .uint32) -> RawGGUF {
            file(kvs: [{ $0.kv("general.alignment", type, value) }])
        }
        assertRefused(aligned { $0.u32(48) }, "align-48", "metadata 'general.alignment' = 48 is not a power of two")
        assertRefused(aligned { $0.u32(0) }, "align-0", "metadata 'general.alignment' = 0 is not a power of two")
        assertRefused(aligned({ $0.u64(32) }, type: .uint64), "align-u64", "metadata 'general.alignment' must be UINT32, not UINT64")
        XCTAssertEqual(refusal(file(kvs: [{ $0.kv("general.alignment", .uint32) { $0.u32(8) } }], alignment: 8).data, "align-8"), "accepted")
        // A huge alignment puts the data section past the end of the file.
        assertRefused(aligned { $0.u32(1 << 31) }, "align-2^31", "tensor 't': data at offset 0", "data section at byte 2147483648")
    }
}
