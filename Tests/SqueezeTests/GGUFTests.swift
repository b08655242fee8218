import Foundation
import Model
import XCTest

/// The GGUF container: files written by the real gguf-py (scripts/make_gguf_reference.py) parse
/// exactly as their sidecar says; our writer reproduces them byte for byte; a file our writer
/// wrote is committed and was checked with gguf.GGUFReader; writer/reader round trips.
final class GGUFTests: XCTestCase {
    static let dir = Fixtures.root.appendingPathComponent("gguf")

    // MARK: - Files written by gguf-py

    func testGGUFPyFilesParseExactlyAsTheirSidecarSays() throws {
        let sidecar = try GGUFSidecar.load(Self.dir.appendingPathComponent("reference.json"))
        XCTAssertEqual(Set(sidecar.files.keys), ["reference.gguf", "aligned.gguf"])
        for (name, expected) in sidecar.files {
            let url = Self.dir.appendingPathComponent(name)
            try assertMatches(try GGUFFile(url: url), expected, raw: try Data(contentsOf: url))
        }
        let f = try GGUFFile(url: Self.dir.appendingPathComponent("aligned.gguf"))
        XCTAssertEqual(f.alignment, 64)
        XCTAssertTrue(f.tensors.allSatisfy { $0.range.lowerBound % 64 == 0 })
    }

    func testAccessorsAndUnsupportedTypesOfTheGGUFPyFile() throws {
        let url = Self.dir.appendingPathComponent("reference.gguf")
        let f = try GGUFFile(url: url)
        XCTAssertEqual(f.metadata["general.architecture"]?.string, "squeeze-test")
        XCTAssertEqual(f.metadata["test.uint64"]?.int, nil, "2^64-1 does not fit in Int")
        XCTAssertEqual(f.metadata["test.int16"]?.int, -32768)
        XCTAssertEqual(f.metadata["test.float32"]?.double, Double(Float(3.14159)))
        XCTAssertEqual(f.metadata["test.array.string"]?.stringArray, ["a", "", "日本語", "emoji 🙂", "tab\tnewline\n"])
        XCTAssertEqual(f.metadata["test.array.int32"]?.intArray, [-2147483648, 7, 2147483647])
        XCTAssertEqual(f.metadata["test.array.float64"]?.doubleArray, [1e-300, -2.5, 1e300])
        XCTAssertEqual(f.metadata["test.array.nested"]?.array?.elementType, .array)
        let q4k = try f.tensor(named: "q4_k.2d")
        XCTAssertEqual(q4k.shape, [2, 256])
        XCTAssertEqual(q4k.dims, [256, 2])
        XCTAssertEqual(q4k.byteCount, 2 * 144)
        for name in ["q4_k.2d", "q4_1.2d", "i32.1d"] {
            XCTAssertThrowsError(try f.bytes(of: name)) { e in
                let s = "\(e)"
                XCTAssertTrue(s.contains(url.path) && s.contains("tensor '\(name)'") && s.contains("is not supported"), s)
            }
        }
        XCTAssertThrowsError(try f.bytes(of: "q4_k.2d")) { XCTAssertTrue("\($0)".contains("Q4_K (12), which is not supported"), "\($0)") }
        XCTAssertThrowsError(try f.floats(of: "q8_0.2d")) { XCTAssertTrue("\($0)".contains("tensor 'q8_0.2d' is Q8_0 (8), not a float type"), "\($0)") }
        XCTAssertThrowsError(try f.bytes(of: "nope")) { XCTAssertTrue("\($0)".contains("no tensor named 'nope'"), "\($0)") }
        // bytes(of:) is a slice of the file: its indices are file offsets.
        let q8 = try f.bytes(of: "q8_0.1d")
        XCTAssertEqual(q8.startIndex, try f.tensor(named: "q8_0.1d").range.lowerBound)
        XCTAssertEqual(q8.count, 34)
    }

    /// Our writer, given what our reader parsed from a gguf-py file, writes the same bytes.
    func testWriterReproducesGGUFPyFilesByteForByte() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        for name in ["reference.gguf", "aligned.gguf"] {
            let original = try Data(contentsOf: Self.dir.appendingPathComponent(name))
            let f = try GGUFFile(data: original, url: Self.dir.appendingPathComponent(name))
            let w = GGUFWriter(metadata: f.entries,
                               tensors: f.tensors.map { GGUFTensorDescription(name: $0.name, shape: $0.shape, type: $0.type) })
            let out = tmp.appendingPathComponent(name)
            try w.write(to: out) { t, write in
                let r = try f.tensor(named: t.name).range
                // In two pieces, to exercise the streaming sink.
                let mid = r.lowerBound + r.count / 3
                try original[r.lowerBound..<mid].withUnsafeBytes { try write($0) }
                try original[mid..<r.upperBound].withUnsafeBytes { try write($0) }
            }
            XCTAssertEqual(try Data(contentsOf: out), original, name)
        }
    }

    // MARK: - A file our writer wrote, checked with gguf.GGUFReader

    /// The committed swift-written.gguf is what `swiftFixture` writes today, it parses as its
    /// sidecar says, and `make_gguf_reference.py --check` recorded that gguf-py parses it so too.
    /// With SQUEEZE_GGUF_FIXTURE_OUT=DIR, writes the file and sidecar to DIR instead (then copy
    /// them to Tests/Fixtures/gguf/ and run the check).
    func testOurWrittenFileIsCommittedAndCheckedByGGUFPy() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let outDir = ProcessInfo.processInfo.environment["SQUEEZE_GGUF_FIXTURE_OUT"].map { URL(fileURLWithPath: $0) } ?? tmp
        let url = outDir.appendingPathComponent("swift-written.gguf")
        let (writer, payloads) = Self.swiftFixture()
        try writer.write(to: url) { t, write in try payloads[t.name]!.withUnsafeBytes { try write($0) } }
        let written = try GGUFFile(url: url)
        let sidecar = try Self.sidecar(of: written, writer: writer, payloads: payloads)
        if outDir != tmp {
            try sidecar.encoded().write(to: outDir.appendingPathComponent("swift-written.json"))
            print("wrote \(url.path) and swift-written.json: copy them to \(Self.dir.path), then run scripts/make_gguf_reference.py --check")
            return
        }
        let committedURL = Self.dir.appendingPathComponent("swift-written.gguf")
        let committed = try Data(contentsOf: committedURL)
        XCTAssertEqual(try Data(contentsOf: url), committed, "the writer's output changed: regenerate and re-check the fixture")
        let committedSidecar = try GGUFSidecar.load(Self.dir.appendingPathComponent("swift-written.json"))
        XCTAssertEqual(committedSidecar.files, sidecar.files)
        let check = try XCTUnwrap(committedSidecar.ggufPyCheck, "run scripts/make_gguf_reference.py --check \(committedURL.path)")
        XCTAssertTrue(check["result"]?.hasPrefix("passed") == true, "\(check)")
        try assertMatches(try GGUFFile(url: committedURL), committedSidecar.files["swift-written.gguf"]!, raw: committed)
    }

    /// Every value type (scalars, arrays, empty and typed nested arrays), every supported tensor
    /// type and one known-but-unsupported one, 1-4 dimensions, alignment 16.
    static func swiftFixture() -> (GGUFWriter, [String: Data]) {
        let metadata: [(key: String, value: GGUFValue)] = [
            ("general.architecture", .string("squeeze-test")), ("general.alignment", .uint32(16)),
            ("s.uint8", .uint8(200)), ("s.int8", .int8(-7)), ("s.uint16", .uint16(40000)), ("s.int16", .int16(-300)),
            ("s.uint32", .uint32(3_000_000_000)), ("s.int32", .int32(-5)), ("s.float32", .float32(-Float.leastNormalMagnitude / 4)),
            ("s.bool", .bool(true)), ("s.string", .string("UTF-8: Grüße, 日本語, 🙂, NUL \u{0} inside")),
            ("s.uint64", .uint64(.max)), ("s.int64", .int64(.min)), ("s.float64", .float64(-1e-300)),
            ("a.uint8", .array(.uint8([1, 2, 255]))), ("a.int8", .array(.int8([-1]))), ("a.uint16", .array(.uint16([7, 65535]))),
            ("a.int16", .array(.int16([-2, 2]))), ("a.uint32", .array(.uint32([0, .max]))), ("a.int32", .array(.int32([.min, .max]))),
            ("a.float32", .array(.float32([0.1, -0.0, 65504]))), ("a.bool", .array(.bool([false, true]))),
            ("a.string", .array(.string(["Ġthe", "", "<|endoftext|>"]))), ("a.uint64", .array(.uint64([1 << 63]))),
            ("a.int64", .array(.int64([-1, .max]))), ("a.float64", .array(.float64([.pi, -0.5]))),
            ("a.empty_string", .array(.string([]))), ("a.empty_float32", .array(.float32([]))), ("a.empty_nested", .array(.array([]))),
            ("a.nested", .array(.array([.uint16([1, 2]), .int64([-5]), .array([.float64([0.5]), .string(["z"]), .bool([])]), .uint8([])]))),
        ]
        var rng: UInt64 = 0x9E37_79B9_7F4A_7C15
        func bytes(_ n: Int) -> Data {
            Data((0..<n).map { _ in rng = rng &* 6364136223846793005 &+ 1442695040888963407; return UInt8(truncatingIfNeeded: rng >> 33) })
        }
        func floats(_ values: [Float], _ type: GGMLType) -> Data {
            var d = Data()
            try! values.withUnsafeBufferPointer { try GGUFWriter.writeFloats($0, as: type, to: { d.append(contentsOf: $0) }) }
            return d
        }
        let tensors: [(GGUFTensorDescription, Data)] = [
            (GGUFTensorDescription(name: "t.f32", shape: [3, 5], type: .f32), floats((0..<15).map { Float($0) * 0.37 - 2 }, .f32)),
            (GGUFTensorDescription(name: "t.f16", shape: [4], type: .f16), floats([0.1, -65504, 1e-7, 3], .f16)),
            (GGUFTensorDescription(name: "t.bf16", shape: [2, 2, 2], type: .bf16), floats([1, -2.5, 3.3, 1e30, -1e-30, 0, 7, 8], .bf16)),
            (GGUFTensorDescription(name: "t.q8_0", shape: [2, 32], type: .q8_0), bytes(68)),
            (GGUFTensorDescription(name: "t.q4_0", shape: [1, 1, 64], type: .q4_0), bytes(36)),
            (GGUFTensorDescription(name: "t.q4_k", shape: [256], type: .q4_K), bytes(144)),
            (GGUFTensorDescription(name: "t.f32.4d", shape: [1, 2, 1, 3], type: .f32), floats([1, 2, 3, 4, 5, 6], .f32)),
        ]
        return (GGUFWriter(metadata: metadata, tensors: tensors.map(\.0)),
                Dictionary(uniqueKeysWithValues: tensors.map { ($0.0.name, $0.1) }))
    }

    /// The sidecar of what `writer` was told to write (tensor values and offsets from the file).
    static func sidecar(of f: GGUFFile, writer: GGUFWriter, payloads: [String: Data]) throws -> GGUFSidecar {
        let tensors = try zip(writer.tensors, f.tensors).map { d, t in
            GGUFSidecar.Tensor(name: d.name, type: d.type.name, typeId: d.type.rawValue, shape: d.shape, dims: d.dims,
                               offset: t.offset, nBytes: payloads[d.name]!.count, sha256: SHA256.hex(payloads[d.name]!),
                               values: d.type.isFloat ? try f.floats(of: d.name).map(Double.init) : nil)
        }
        let file = GGUFSidecar.File(version: 3, alignment: writer.alignment!, dataOffset: f.dataOffset, fileSize: nil,
                                    metadata: writer.metadata.map { GGUFSidecar.KV(key: $0.key, value: $0.value) }, tensors: tensors)
        return GGUFSidecar(generator: ["writer": "Squeeze GGUFWriter (GGUFTests.swiftFixture)"], files: ["swift-written.gguf": file], ggufPyCheck: nil)
    }

    /// `f` holds exactly what `expected` lists.
    func assertMatches(_ f: GGUFFile, _ expected: GGUFSidecar.File, raw: Data, file: StaticString = #filePath, line: UInt = #line) throws {
        let name = f.url.lastPathComponent
        XCTAssertEqual(f.version, expected.version, name, file: file, line: line)
        XCTAssertEqual(f.alignment, expected.alignment, name, file: file, line: line)
        if let d = expected.dataOffset { XCTAssertEqual(f.dataOffset, d, name, file: file, line: line) }
        XCTAssertEqual(f.keys, expected.metadata.map(\.key), name, file: file, line: line)
        for kv in expected.metadata {
            XCTAssertEqual(f.metadata[kv.key], kv.value, "\(name): \(kv.key)", file: file, line: line)
        }
        XCTAssertEqual(f.tensors.map(\.name), expected.tensors.map(\.name), name, file: file, line: line)
        for (t, e) in zip(f.tensors, expected.tensors) {
            let what = "\(name): \(e.name)"
            XCTAssertEqual(t.type.name, e.type, what, file: file, line: line)
            XCTAssertEqual(t.type.rawValue, e.typeId, what, file: file, line: line)
            XCTAssertEqual(t.shape, e.shape, what, file: file, line: line)
            XCTAssertEqual(t.dims, e.dims, what, file: file, line: line)
            XCTAssertEqual(t.offset, e.offset, what, file: file, line: line)
            XCTAssertEqual(t.range.lowerBound, f.dataOffset + e.offset, what, file: file, line: line)
            XCTAssertEqual(t.byteCount, e.nBytes, what, file: file, line: line)
            XCTAssertEqual(SHA256.hex(raw[t.range]), e.sha256, what, file: file, line: line)
            if t.type.supported { XCTAssertEqual(try f.bytes(of: e.name), raw[t.range], what, file: file, line: line) }
            if let values = e.values {
                XCTAssertEqual(try f.floats(of: e.name), values.map(Float.init), what, file: file, line: line)
            }
        }
    }

    func testSHA256() {
        XCTAssertEqual(SHA256.hex(Data("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex(Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }
}
