import Foundation
import Model
import XCTest

/// GGUFWriter: round trips through GGUFFile at several alignments, streaming in pieces, refusals
/// (before any file exists) naming the file and the key or tensor; the GGMLType table.
final class RoundTripGGUFTests: XCTestCase {
    func write(_ w: GGUFWriter, _ payloads: [String: Data], to url: URL, pieceSize: Int = .max) throws {
        try w.write(to: url) { t, out in
            let d = payloads[t.name]!
            var i = d.startIndex
            repeat {
                let j = min(d.endIndex, i + min(pieceSize, d.count))
                try d[i..<j].withUnsafeBytes { try out($0) }
                i = j
            } while i < d.endIndex
        }
    }

    func testEveryValueAndTensorTypeRoundTripsAtEveryAlignment() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let (base, payloads) = GGUFTests.swiftFixture()
        for alignment: UInt32? in [nil, 1, 8, 32, 256] {
            var w = base
            w.metadata.removeAll { $0.key == "general.alignment" }
            if let alignment { w.metadata.insert(("general.alignment", .uint32(alignment)), at: 1) }
            let url = tmp.appendingPathComponent("rt-\(alignment ?? 0).gguf")
            try write(w, payloads, to: url, pieceSize: alignment == 8 ? 1 : .max)
            let f = try GGUFFile(url: url)
            let a = Int(alignment ?? 32)
            XCTAssertEqual(f.alignment, a)
            XCTAssertEqual(f.version, 3)
            XCTAssertEqual(f.keys, w.metadata.map(\.key))
            for (key, value) in w.metadata { XCTAssertEqual(f.metadata[key], value, key) }
            XCTAssertEqual(f.dataOffset % a, 0)
            XCTAssertEqual(f.tensors.map(\.name), w.tensors.map(\.name))
            for (t, d) in zip(f.tensors, w.tensors) {
                XCTAssertEqual(t.shape, d.shape, d.name)
                XCTAssertEqual(t.type, d.type, d.name)
                XCTAssertEqual(t.offset % a, 0, d.name)
                XCTAssertEqual(t.byteCount, d.byteCount, d.name)
                let raw = try Data(contentsOf: url)[t.range]
                XCTAssertEqual(raw, payloads[d.name]!, d.name)
                if d.type.supported { XCTAssertEqual(try f.bytes(of: d.name), payloads[d.name]!, d.name) }
            }
            let size = try FileManager.default.attributesOfItem(atPath: url.path)[.size] as! Int
            XCTAssertEqual(size % a, 0, "the last tensor is padded too, as gguf-py and ggml do")
        }
    }

    func testFloatConversionsMatchTheReader() throws {
        let values: [Float] = [0, 1, -2.5, 3.14159, 60000, 1e-6, -0.0, 65504, 1e30, -1e-30]
        let tmp = try Fixtures.temporaryDirectory(self)
        let types: [GGMLType] = [.f32, .f16, .bf16]
        let w = GGUFWriter(tensors: types.map { GGUFTensorDescription(name: $0.name, shape: [values.count], type: $0) })
        let url = tmp.appendingPathComponent("floats.gguf")
        try w.write(to: url) { t, out in try values.withUnsafeBufferPointer { try GGUFWriter.writeFloats($0, as: t.type, to: out) } }
        let f = try GGUFFile(url: url)
        XCTAssertEqual(try f.floats(of: "F32"), values)
        XCTAssertEqual(try f.floats(of: "F16"), values.map { Float(Float16($0)) })
        // BF16 rounds to nearest even: the top 16 bits of the rounded Float32.
        let bf16 = values.map { v -> Float in
            let b = v.bitPattern
            return Float(bitPattern: ((b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16) << 16)
        }
        XCTAssertEqual(try f.floats(of: "BF16"), bf16)
        XCTAssertThrowsError(try [Float(1)].withUnsafeBufferPointer { try GGUFWriter.writeFloats($0, as: .q8_0, to: { _ in }) })
    }

    func testWrongByteCountsAreRefusedNamingTheTensorAndNothingIsLeft() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let url = tmp.appendingPathComponent("short.gguf")
        let w = GGUFWriter(metadata: [("k", .string("v"))],
                           tensors: [GGUFTensorDescription(name: "a", shape: [4], type: .f32),
                                     GGUFTensorDescription(name: "b", shape: [2, 32], type: .q8_0)])
        for (produce, expect) in [(15, "tensor 'b': produced 15 bytes, expected 68"), (69, "tensor 'b': produced more than its 68 bytes")] {
            XCTAssertThrowsError(try write(w, ["a": Data(count: 16), "b": Data(count: produce)], to: url, pieceSize: 10)) { e in
                XCTAssertTrue("\(e)".contains(url.path) && "\(e)".contains(expect), "\(e)")
            }
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp.path), [], "no file, no temporary left")
        }
    }

    func testInvalidDescriptionsAreRefusedBeforeWriting() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let url = tmp.appendingPathComponent("bad.gguf")
        let ok = GGUFTensorDescription(name: "w", shape: [2, 32], type: .q8_0)
        var deep = GGUFArray.uint8([1])
        for _ in 0..<8 { deep = .array([deep]) }
        let cases: [(GGUFWriter, String)] = [
            (GGUFWriter(metadata: [("a", .int32(1)), ("a", .int32(2))]), "duplicate metadata key 'a'"),
            (GGUFWriter(metadata: [("", .int32(1))]), "metadata key #0 is empty"),
            (GGUFWriter(metadata: [(String(repeating: "k", count: 65_536), .int32(1))]), "metadata key #0 is 65536 bytes long"),
            (GGUFWriter(metadata: [("general.alignment", .uint32(48))]), "'general.alignment' = 48 must be a UINT32 power of two"),
            (GGUFWriter(metadata: [("general.alignment", .uint64(32))]), "'general.alignment' = 32 must be a UINT32 power of two"),
            (GGUFWriter(metadata: [("x", .array(deep))]), "metadata 'x': arrays nested more than 8 deep"),
            (GGUFWriter(tensors: [ok, ok]), "duplicate tensor name 'w'"),
            (GGUFWriter(tensors: [GGUFTensorDescription(name: String(repeating: "n", count: 65), shape: [1], type: .f32)]), "name is 65 bytes long"),
            (GGUFWriter(tensors: [GGUFTensorDescription(name: "z", shape: [], type: .f32)]), "tensor 'z': shape [] must have 1 to 4"),
            (GGUFWriter(tensors: [GGUFTensorDescription(name: "z", shape: [1, 1, 1, 1, 1], type: .f32)]), "tensor 'z': shape [1, 1, 1, 1, 1]"),
            (GGUFWriter(tensors: [GGUFTensorDescription(name: "z", shape: [3, 0], type: .f32)]), "tensor 'z': shape [3, 0] must have 1 to 4 positive"),
            (GGUFWriter(tensors: [GGUFTensorDescription(name: "z", shape: [1 << 40, 1 << 40], type: .f32)]), "tensor 'z': shape [1099511627776, 1099511627776] has more elements"),
            (GGUFWriter(tensors: [GGUFTensorDescription(name: "z", shape: [1 << 62], type: .f32)]), "tensor 'z': 4611686018427387904 elements of F32 (0) need more bytes"),
            (GGUFWriter(tensors: [GGUFTensorDescription(name: "z", shape: [32, 33], type: .q8_0)]), "tensor 'z': rows of 33 elements are not a multiple of the Q8_0 (8) block size 32"),
        ]
        for (w, expect) in cases {
            XCTAssertThrowsError(try w.write(to: url) { _, _ in XCTFail("no tensor data is asked for") }) { e in
                XCTAssertTrue("\(e)".contains(url.path) && "\(e)".contains(expect), "expected '\(expect)': \(e)")
            }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp.path), [])
    }

    /// A GPT-2-sized vocabulary (50257 tokens, 50000 merges) and a 12 MB tensor streamed in 1 MB
    /// pieces: written and parsed in well under a second each.
    func testVocabularySizedFileIsQuick() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let tokens = (0..<50_257).map { "tok\($0)" }, merges = (0..<50_000).map { "a\($0) b\($0)" }
        let w = GGUFWriter(metadata: [("tokenizer.ggml.tokens", .array(.string(tokens))), ("tokenizer.ggml.merges", .array(.string(merges))),
                                      ("tokenizer.ggml.token_type", .array(.int32([Int32](repeating: 1, count: tokens.count))))],
                           tensors: [GGUFTensorDescription(name: "big", shape: [4096, 768], type: .f32)])
        let piece = [Float](repeating: 0.5, count: 1 << 18)
        let url = tmp.appendingPathComponent("vocab.gguf")
        var t0 = Date()
        try w.write(to: url) { _, out in
            for _ in 0..<12 { try piece.withUnsafeBufferPointer { try GGUFWriter.writeFloats($0, as: .f32, to: out) } }
        }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "write")
        t0 = Date()
        let f = try GGUFFile(url: url)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "parse")
        XCTAssertEqual(f.metadata["tokenizer.ggml.tokens"]?.stringArray, tokens)
        XCTAssertEqual(f.metadata["tokenizer.ggml.merges"]?.stringArray?.last, "a49999 b49999")
        XCTAssertEqual(try f.bytes(of: "big").count, 4096 * 768 * 4)
    }

    func testGGMLTypeTable() throws {
        XCTAssertEqual(GGMLType.allCases.count, 35, "ids 0-42 less the 8 removed from ggml")
        XCTAssertEqual(Set(GGMLType.allCases.map(\.name)).count, GGMLType.allCases.count)
        XCTAssertEqual(GGMLType.supportedTypes, [.f32, .f16, .q4_0, .q8_0, .bf16])
        XCTAssertEqual(GGMLType.allCases.filter(\.supported).map(\.rawValue), [0, 1, 2, 8, 30])
        XCTAssertEqual(GGMLType(rawValue: 12)?.description, "Q4_K (12)")
        XCTAssertNil(GGMLType(rawValue: 4), "Q4_2 was removed from ggml")
        XCTAssertEqual(GGMLType(name: "q8_0"), .q8_0)
        XCTAssertEqual([GGMLType.q8_0, .q4_0, .q4_K, .q6_K, .bf16].map { [$0.blockSize, $0.bytesPerBlock] },
                       [[32, 34], [32, 18], [256, 144], [256, 210], [1, 2]])
        XCTAssertEqual(try GGMLType.q8_0.rowBytes(64), 68)
        XCTAssertEqual(try GGMLType.f16.rowBytes(3), 6)
        XCTAssertThrowsError(try GGMLType.q8_0.rowBytes(33)) {
            XCTAssertEqual("\($0)", "33 elements is not a multiple of the Q8_0 (8) block size 32")
        }
        XCTAssertNil(GGMLType.f32.byteCount(elements: Int.max / 2))
    }
}
