import Foundation
import Model
import Tensor
import XCTest

/// safetensors and Hugging Face directory I/O: dtypes, validation errors, refusals, round trips.
final class ModelIOTests: XCTestCase {
    func testDtypesReadAsTorchDoes() throws {
        let f = try SafeTensorsFile(url: Fixtures.reference("dtypes.safetensors"))
        let j = try Fixtures.json("dtypes.json")
        let x = j["x"] as! [String: Any]
        for key in ["f32", "f16", "bf16"] {
            XCTAssertEqual(try f.floats(key), (x[key] as! [Any]).doubles.map(Float.init), key)
        }
        XCTAssertEqual(try f.integers("i64"), (j["i64"] as! [Any]).map { ($0 as! NSNumber).intValue })
        XCTAssertThrowsError(try f.floats("i64")) { XCTAssertTrue("\($0)".contains("'i64'"), "\($0)") }
    }

    func testWriterRoundTripsEveryFloatDtype() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let values: [Float] = [0, 1, -2.5, 3.14159, 60000, 1e-6, -0.0]
        var w = SafeTensorsWriter()
        w.add("a", shape: [7], values: values, dtype: .f32)
        w.add("b", shape: [7], values: values, dtype: .f16)
        w.add("c", shape: [7], values: values, dtype: .bf16)
        let url = dir.appendingPathComponent("t.safetensors")
        try w.write(to: url)
        let f = try SafeTensorsFile(url: url)
        XCTAssertEqual(try f.floats("a"), values)
        XCTAssertEqual(try f.floats("b"), values.map { Float(Float16($0)) })
        let ref = try SafeTensorsFile(url: Fixtures.reference("dtypes.safetensors"))
        var w2 = SafeTensorsWriter()
        w2.add("bf16", shape: [15], values: try ref.floats("f32"), dtype: .bf16)
        try w2.write(to: url)
        XCTAssertEqual(try SafeTensorsFile(url: url).floats("bf16"), try ref.floats("bf16"), "BF16 rounding as torch")
    }

    /// Writes a file with a hand-made header and returns the error loading it raises.
    func loadError(header: String, data: Int = 16) throws -> String {
        let dir = try Fixtures.temporaryDirectory(self)
        let url = dir.appendingPathComponent("bad.safetensors")
        var d = Data()
        var n = UInt64(header.utf8.count).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(contentsOf: Array(header.utf8))
        d.append(Data(count: data))
        try d.write(to: url)
        do { _ = try SafeTensorsFile(url: url); return "no error" } catch { return "\(error)" }
    }

    func testMalformedFilesGiveErrorsNamingFileAndTensor() throws {
        XCTAssertTrue(try loadError(header: "{not json").contains("header is not a JSON object"))
        XCTAssertTrue(try loadError(header: #"{"w":{"dtype":"Q8","shape":[2],"data_offsets":[0,8]}}"#).contains("tensor 'w': unsupported dtype Q8"))
        XCTAssertTrue(try loadError(header: #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#).contains("tensor 'w': shape [3] of F32 needs 12 bytes"))
        XCTAssertTrue(try loadError(header: #"{"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}}"#).contains("outside the data section"))
        XCTAssertTrue(try loadError(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#).contains("overlap"))
        XCTAssertTrue(try loadError(header: #"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#).contains("shape is not a list of non-negative integers"))
        // Header length larger than the file.
        let dir = try Fixtures.temporaryDirectory(self)
        let url = dir.appendingPathComponent("short.safetensors")
        try Data([255, 255, 0, 0, 0, 0, 0, 0, 123]).write(to: url)
        XCTAssertThrowsError(try SafeTensorsFile(url: url)) { XCTAssertTrue("\($0)".contains("short.safetensors") && "\($0)".contains("header length"), "\($0)") }
    }

    func copyFixture(to dir: URL) throws -> URL {
        let d = dir.appendingPathComponent("m")
        try FileManager.default.copyItem(at: Fixtures.tinyGPT2, to: d)
        return d
    }

    func testConfigRefusalsNameTheKey() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let m = try copyFixture(to: dir)
        let cfg = m.appendingPathComponent("config.json")
        let original = try String(contentsOf: cfg, encoding: .utf8)
        for (from, to, expect) in [("\"gelu_new\"", "\"relu\"", "activation_function 'relu' is not supported"),
                                   ("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false", "tie_word_embeddings = false"),
                                   ("\"n_head\": 2", "\"n_head\": 3", "not divisible by n_head"),
                                   ("\"n_layer\": 2,", "", "missing required key 'n_layer'")] {
            try original.replacingOccurrences(of: from, with: to).write(to: cfg, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try GPT2.load(directory: m)) { e in
                XCTAssertTrue("\(e)".contains(expect) && "\(e)".contains("config.json"), "\(e)")
            }
        }
    }

    func testUnexpectedAndMissingTensorsAreNamed() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let src = try SafeTensorsFile(url: Fixtures.tinyGPT2.appendingPathComponent("model.safetensors"))
        let m = try copyFixture(to: dir)
        var w = SafeTensorsWriter()
        for (k, _) in src.entries.sorted(by: { $0.key < $1.key }) where k != "transformer.h.1.mlp.c_fc.bias" { w.add(k, try src.tensor(k)) }
        try w.write(to: m.appendingPathComponent("model.safetensors"))
        XCTAssertThrowsError(try GPT2.load(directory: m)) { XCTAssertTrue("\($0)".contains("'transformer.h.1.mlp.c_fc.bias' is missing"), "\($0)") }
        var w2 = SafeTensorsWriter()
        for (k, _) in src.entries.sorted(by: { $0.key < $1.key }) { w2.add(k, try src.tensor(k)) }
        w2.add("transformer.h.7.mlp.c_fc.weight", shape: [1], values: [0])
        try w2.write(to: m.appendingPathComponent("model.safetensors"))
        XCTAssertThrowsError(try GPT2.load(directory: m)) { XCTAssertTrue("\($0)".contains("unexpected tensor 'transformer.h.7.mlp.c_fc.weight'"), "\($0)") }
    }

    func testSaveRoundTripsBitwise() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        for source in [Fixtures.tinyGPT2, Fixtures.tinyGPT2F16Base] {
            let m = try GPT2.load(directory: source)
            let out = dir.appendingPathComponent(source.lastPathComponent)
            try m.save(to: out)
            for f in ["config.json", "vocab.json", "merges.txt"] {
                XCTAssertEqual(try Data(contentsOf: out.appendingPathComponent(f)), try Data(contentsOf: source.appendingPathComponent(f)), f)
            }
            let a = try SafeTensorsFile(url: source.appendingPathComponent("model.safetensors"))
            let b = try SafeTensorsFile(url: out.appendingPathComponent("model.safetensors"))
            XCTAssertEqual(Set(a.entries.keys), Set(b.entries.keys))
            for (k, e) in a.entries {
                XCTAssertEqual(b.entries[k]!.dtype, e.dtype, k)
                XCTAssertEqual(try b.bytes(k), try a.bytes(k), k)
            }
            // Saving again gives identical bytes.
            let again = dir.appendingPathComponent("again-" + source.lastPathComponent)
            try GPT2.load(directory: out).save(to: again)
            XCTAssertEqual(try Data(contentsOf: again.appendingPathComponent("model.safetensors")), try Data(contentsOf: out.appendingPathComponent("model.safetensors")))
        }
    }

    func testHubStyleConfigIsReadAndWrittenAsHuggingFaceDoes() throws {
        var c = try GPT2Config(url: Fixtures.tinyGPT2.appendingPathComponent("config.json"))
        XCTAssertEqual(c.nEmbd, 16)
        c.extra["n_ctx"] = .number(32)
        let data = try encodeConfigJSON(c.jsonObject())
        let text = String(decoding: data, as: UTF8.self)
        XCTAssertTrue(text.hasPrefix("{\n  \"activation_function\": \"gelu_new\",\n"))
        XCTAssertTrue(text.contains("\"layer_norm_epsilon\": 1e-05,"))
        XCTAssertTrue(text.hasSuffix("}\n"))
    }
}

/// Hugging Face's sharded layout: written above a size limit, read back exactly; bad indexes named.
final class ShardedWeightsTests: XCTestCase {
    func testShardedSaveAndLoadRoundTrip() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let m = try GPT2.load(directory: Fixtures.tinyGPT2)
        let out = dir.appendingPathComponent("sharded")
        try m.save(to: out, maxShardBytes: 1_000_000)
        let names = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
        XCTAssertFalse(names.contains("model.safetensors"))
        XCTAssertTrue(names.contains("model.safetensors.index.json"))
        let shards = names.filter { $0.hasPrefix("model-") }
        XCTAssertEqual(shards.count, 2, "wte (3.2 MB) alone, then the rest: \(names)")
        XCTAssertTrue(shards.allSatisfy { $0.hasSuffix("-of-0000\(shards.count).safetensors") }, "\(shards)")
        let back = try GPT2.load(directory: out)
        XCTAssertEqual(Array(back.params.values), Array(m.params.values))
        // Saving unsharded again replaces the shards.
        try back.save(to: out)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasPrefix("model") }, ["model.safetensors"])
    }

    func testBrokenIndexesAreNamed() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let out = dir.appendingPathComponent("sharded")
        try GPT2.load(directory: Fixtures.tinyGPT2).save(to: out, maxShardBytes: 1_000_000)
        let index = out.appendingPathComponent("model.safetensors.index.json")
        let text = try String(contentsOf: index, encoding: .utf8)
        try text.replacingOccurrences(of: "model-00001-of", with: "model-00009-of").write(to: index, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try GPT2.load(directory: out)) { XCTAssertTrue("\($0)".contains("model-00009-of"), "\($0)") }
        try text.write(to: index, atomically: true, encoding: .utf8)
        try FileManager.default.removeItem(at: out.appendingPathComponent("model-00002-of-0000\(try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.hasPrefix("model-") }.count).safetensors"))
        XCTAssertThrowsError(try GPT2.load(directory: out)) { XCTAssertTrue("\($0)".contains("model-00002-of"), "\($0)") }
    }
}
