import Foundation
import Kernels
import Model
import Tensor
import TestSupport
import XCTest

/// `squeeze export --format gguf` and GGUF models in eval/generate, against the real clients:
/// scripts/make_gguf_model_reference.py exported the fixture models in every type, checked every
/// file with gguf-py (metadata of llama.cpp's gpt2 layout; each tensor's bytes equal to
/// gguf.quants.quantize of the dense weight, or, for layers already quantized in the file's
/// format, Squeeze's blocks unchanged) and recorded them; transformers loaded the files and its
/// logits are committed. Here the same exports are written again and must be those files.
final class GGUFModelTests: XCTestCase {
    static let dir = Fixtures.root.appendingPathComponent("gguf-model")

    /// The sidecar's files ("tiny-gpt2-64/q8_0" -> record).
    static func reference() throws -> [String: [String: Any]] {
        let data = try Data(contentsOf: dir.appendingPathComponent("reference.json"))
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        return try XCTUnwrap(root["files"] as? [String: [String: Any]])
    }

    /// Exports fixture model `model` as `type` into `tmp` (named as the script names it).
    func export(_ model: String, _ type: GGUFExportType, into tmp: URL) throws -> (URL, GPT2.GGUFExportReport) {
        let src = Fixtures.root.appendingPathComponent(model)
        let m = try GPT2.load(directory: src)
        let url = tmp.appendingPathComponent("\(model)-\(type.rawValue).gguf")
        let report = try m.exportGGUF(to: url, type: type, tokenizer: try GPT2Tokenizer(directory: src), name: model)
        return (url, report)
    }

    func testExportsAreTheFilesGGUFPyChecked() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let ref = try Self.reference()
        XCTAssertEqual(ref.count, 12, "3 models x 4 types")
        for (key, want) in ref.sorted(by: { $0.key < $1.key }) {
            let model = try XCTUnwrap(want["model"] as? String), type = try XCTUnwrap(GGUFExportType(rawValue: want["type"] as! String))
            let (url, report) = try export(model, type, into: tmp)
            let bytes = try Data(contentsOf: url)
            let tensors = try XCTUnwrap(want["tensors"] as? [[String: Any]])
            XCTAssertEqual(report.tensors.map(\.name), tensors.map { $0["name"] as! String }, key)
            XCTAssertEqual(report.tensors.map(\.source.rawValue), tensors.map { $0["source"] as! String }, "\(key): where each tensor came from")
            XCTAssertEqual(report.tensors.map(\.type.name), tensors.map { $0["type"] as! String }, key)
            XCTAssertEqual(bytes.count, want["file_size"] as? Int, key)
            if SHA256.hex(bytes) != want["sha256"] as? String { try explainDifference(key, url, want) }
        }
    }

    /// Names what differs from the record (metadata, or a tensor's bytes).
    func explainDifference(_ key: String, _ url: URL, _ want: [String: Any]) throws {
        let f = try GGUFFile(url: url)
        let meta = try XCTUnwrap(want["metadata"] as? [[String: Any]])
        XCTAssertEqual(f.keys, meta.map { $0["key"] as! String }, "\(key): metadata keys")
        for m in meta {
            let k = m["key"] as! String
            guard let v = f.metadata[k] else { continue }
            XCTAssertEqual(v.type.name, m["type"] as? String, "\(key): \(k)")
            if let a = v.array {
                let joined = a.values.map { $0.string ?? "\($0)" }.joined(separator: "\n")
                XCTAssertEqual(a.count, m["count"] as? Int, "\(key): \(k)")
                XCTAssertEqual(SHA256.hex(Data(joined.utf8)), m["sha256"] as? String, "\(key): \(k)")
            } else {
                XCTAssertEqual(v.string ?? v.int.map { "\($0)" } ?? v.double.map { "\($0)" }, "\(m["value"]!)", "\(key): \(k)")
            }
        }
        for t in try XCTUnwrap(want["tensors"] as? [[String: Any]]) {
            let name = t["name"] as! String
            XCTAssertEqual(SHA256.hex(try f.bytes(of: name)), t["sha256"] as? String, "\(key): tensor \(name)")
        }
        XCTFail("\(key): the file is not the one gguf-py checked (differences above)")
    }

    /// The layers the mixed model holds quantized in the file's format are its own blocks.
    func testQuantizedLayersAreWrittenUnchanged() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let m = try GPT2.load(directory: Fixtures.root.appendingPathComponent("tiny-gpt2-64-mixed"))
        for type in [GGUFExportType.q8_0, .q4_0] {
            let (url, report) = try export("tiny-gpt2-64-mixed", type, into: tmp)
            let f = try GGUFFile(url: url)
            let layers = type == .q8_0 ? ["wte", "h.0.attn.c_attn", "h.0.mlp.c_proj"] : ["h.0.mlp.c_fc"]
            let entries = GGUFLayout.entries(m.config).filter { $0.layer.map(layers.contains) ?? false }
            XCTAssertEqual(Set(report.names(.unchanged)), Set(entries.map(\.name)), type.rawValue)
            for e in entries {
                let q = try XCTUnwrap(m.layer(e.layer!)?.single as? QuantizedComponent)
                XCTAssertEqual([UInt8](try f.bytes(of: e.name)), q.blocks[e.parameter], "\(type.rawValue) \(e.name)")
            }
            // The rest (Kronecker, low rank, sparse, quantized factors, the other format) densified and quantized.
            XCTAssertEqual(report.names(.quantized).count, 4 * 2 + 1 - layers.count, type.rawValue)
        }
    }

    /// Squeeze's logits of each file transformers loaded equal transformers' within 1e-4 relative.
    func testLogitsOfTheFilesTransformersLoaded() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let logits = try SafeTensorsFile(url: Self.dir.appendingPathComponent("logits.safetensors"))
        var checked = 0
        for (key, want) in try Self.reference() {
            guard let l = want["logits"] as? [String: Any] else { continue }
            let model = want["model"] as! String, type = GGUFExportType(rawValue: want["type"] as! String)!
            let (url, _) = try export(model, type, into: tmp)
            XCTAssertEqual(SHA256.hex(try Data(contentsOf: url)), want["sha256"] as? String, "\(key): the file transformers read")
            let m = try GPT2.load(gguf: url)
            let ids = (l["tokens"] as! [Any]).int32s, T = ids.count, V = m.config.vocabSize
            let all = try m.logits(ids: ids, B: 1, T: T)
            let cols = (l["vocab_ids"] as? [Any]).map { $0.int32s.map(Int.init) } ?? Array(0..<V)
            var got: [Float] = []
            for t in 0..<T { for c in cols { got.append(all[t * V + c]) } }
            // Relative to each logit, or to 1% of the largest for logits near zero (the largest
            // differences are 6e-7 on logits up to 1.35: float rounding of the two forwards).
            assertRelativeClose(got, try logits.floats(key), rtol: 1e-4, floorFraction: 0.01, "\(key): logits against transformers")
            checked += 1
        }
        XCTAssertEqual(checked, 7)
    }

    /// A loaded GGUF file exported again in its type is the same file (quantized tensors are
    /// loaded as blocks and written unchanged; F16 goes through F32 exactly), and an F32 file
    /// gives the source model's logits bit for bit.
    func testRoundTripThroughTheLoader() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        for model in ["tiny-gpt2", "tiny-gpt2-64-mixed"] {
            // The source densified: the forward an F32 file gives (a low-rank or Kronecker layer's
            // own forward rounds differently).
            let src = try GPT2.load(directory: Fixtures.root.appendingPathComponent(model)).densified()
            for type in GGUFExportType.allCases {
                let (url, _) = try export(model, type, into: tmp)
                let loaded = try GPT2.load(gguf: url)
                let again = tmp.appendingPathComponent("again.gguf")
                let report = try loaded.exportGGUF(to: again, type: type, tokenizer: try GPT2Tokenizer(gguf: try GGUFFile(url: url)), name: model)
                XCTAssertEqual(try Data(contentsOf: again), try Data(contentsOf: url), "\(model) \(type.rawValue)")
                if type.quantFormat != nil { XCTAssertEqual(report.names(.quantized), [], "\(model) \(type.rawValue): every block written unchanged") }
                if type == .f32 {
                    let ids: [Int32] = [1, 5, 9, 2, 0, 7]
                    XCTAssertEqual(try loaded.logits(ids: ids, B: 1, T: 6), try src.logits(ids: ids, B: 1, T: 6), model)
                }
            }
        }
    }

    /// The loader's forms: Q8_0/Q4_0 weights as quantized dense weights (the embedding's blocks
    /// along its rows), F16 fallbacks dense; `forms(gguf:)` from the header alone is the same.
    func testLoadedFormsAndTokenizer() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let (url, _) = try export("tiny-gpt2", .q8_0, into: tmp)
        let m = try GPT2.load(gguf: url)
        let quantized = m.weightedLayers.filter { $0.single is QuantizedComponent }.map(\.name)
        XCTAssertEqual(quantized, ["h.0.mlp.c_proj", "h.1.mlp.c_proj"], "rows of 64 quantize, rows of 16 are F16")
        XCTAssertEqual(try GPT2.forms(gguf: url).parameterLayout.map(\.name), m.parameterLayout().map(\.name))
        XCTAssertEqual(try GPT2.forms(model: url).parameterFloats, m.forms.parameterFloats)
        let (url64, _) = try export("tiny-gpt2-64", .q4_0, into: tmp)
        let m64 = try GPT2.load(gguf: url64)
        XCTAssertTrue(m64.weightedLayers.allSatisfy { ($0.single as? QuantizedComponent)?.format == .q4_0 })
        XCTAssertEqual((m64.embedding.single as? QuantizedComponent)?.matrices.first?.rows, 512, "token_embd: one block row per token")
        // The tokenizer from the file's tokens and merges is the model directory's.
        let text = "It is a truth universally acknowledged, that a single man — naïve café 日本 <|endoftext|> ok"
        for (model, file) in [("tiny-gpt2", url), ("tiny-gpt2-64", url64)] {
            let a = try GPT2Tokenizer(directory: Fixtures.root.appendingPathComponent(model)), b = try GPT2Tokenizer(gguf: try GGUFFile(url: file))
            XCTAssertEqual(b.encode(text), a.encode(text), model)
            XCTAssertEqual(try b.decode(b.encode(text)), text, model)
            XCTAssertEqual(b.endOfTextID, a.endOfTextID)
            XCTAssertEqual(b.mergeList, a.mergeList)
        }
    }

    static let mixedFloatTypes: [String: GGMLType] = ["token_embd.weight": .bf16, "blk.0.attn_qkv.weight": .bf16, "blk.1.ffn_down.weight": .f16,
                                                      "position_embd.weight": .bf16, "blk.0.attn_norm.weight": .f16]

    /// `url` written again with the tensors of `mixedFloatTypes` in F16 / BF16.
    func mixedFloats(_ url: URL, into tmp: URL) throws -> URL {
        let f = try GGUFFile(url: url), types = Self.mixedFloatTypes
        let out = tmp.appendingPathComponent("mixed-floats.gguf")
        try GGUFWriter(metadata: f.entries, tensors: f.tensors.map { GGUFTensorDescription(name: $0.name, shape: $0.shape, type: types[$0.name] ?? $0.type) })
            .write(to: out) { t, sink in try f.floats(of: t.name).withUnsafeBufferPointer { try GGUFWriter.writeFloats($0, as: t.type, to: sink) } }
        return out
    }

    /// F16 and BF16 tensors (not written by the export, allowed by llama.cpp) load as their values.
    func testF16AndBF16TensorsLoad() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let (url, _) = try export("tiny-gpt2-64", .f32, into: tmp)
        let types = Self.mixedFloatTypes, out = try mixedFloats(url, into: tmp)
        let (m, ref) = (try GPT2.load(gguf: out), try GPT2.load(gguf: url))
        func rounded(_ x: Float, _ t: GGMLType) -> Float {
            if t == .f16 { return Float(Float16(x)) }
            let b = x.bitPattern
            return Float(bitPattern: ((b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16) << 16)
        }
        for e in GGUFLayout.entries(m.config) {
            let n = m.params.slot(e.parameter).count, got = m.params.value(e.parameter), want = ref.params.value(e.parameter)
            let t = types[e.name] ?? .f32
            XCTAssertTrue((0..<n).allSatisfy { got[$0] == rounded(want[$0], t) || t == .f32 && got[$0] == want[$0] }, "\(e.name) as \(t)")
        }
    }

    /// `PackedGPT2.load(gguf:)` (weights read where they lie in the mapped file: F32, F16 and
    /// BF16 rows, Q8_0 / Q4_0 blocks) gives the logits of the trainable model the same file loads
    /// into, in prefill (GEMM) and decode (GEMV through the KV cache), for every export type and
    /// for F16 / BF16 tensors; the weight bytes it reads are the file's. Sums run in another
    /// order (rows against HF layout; a decode row's GEMV against the model's GEMM), so the
    /// logits agree to rounding (decode: 5e-4 of each logit above 1e-3; measured up to 1.7e-4),
    /// and Q8_0 / Q4_0 decode multiplies int8 activations (1% of the largest logit).
    func testPackedLoadGivesTheLoadedModelsLogits() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        var files: [(String, URL)] = []
        for model in ["tiny-gpt2-64", "tiny-gpt2-64-mixed"] {
            for type in GGUFExportType.allCases { files.append(("\(model) \(type.rawValue)", try export(model, type, into: tmp).0)) }
        }
        files.append(("f16/bf16 tensors", try mixedFloats(files[0].1, into: tmp)))
        let ids: [Int32] = (0..<24).map { Int32(($0 * 37 + 11) % 512) }
        for (name, url) in files {
            let model = try GPT2.load(gguf: url), packed = try PackedGPT2.load(gguf: url)
            let V = model.config.vocabSize, T = ids.count
            let want = try model.logits(ids: ids, B: 1, T: T)
            XCTAssertLessThanOrEqual(maxRelativeError(try packed.logits(ids: ids, B: 1, T: T), want, floor: 1e-3), 1e-4, "\(name): prefill")
            let cache = KVCache(config: model.config, precision: .f32)
            _ = try packed.logits(ids: Array(ids[0..<(T - 1)]), B: 1, T: T - 1, cache: cache, lastRowOnly: true)
            let last = try packed.logits(ids: [ids[T - 1]], B: 1, T: 1, cache: cache, lastRowOnly: true)
            let wantLast = Array(want[((T - 1) * V)...])
            if name.hasSuffix("q8_0") || name.hasSuffix("q4_0") {   // int8 activations (PackedModelTests.assertDecodeLogits)
                XCTAssertLessThanOrEqual(maxAbsDifference(last, wantLast) / wantLast.map(abs).max()!, 1e-2, "\(name): decode")
            } else {
                XCTAssertLessThanOrEqual(maxRelativeError(last, wantLast, floor: 1e-3), 5e-4, "\(name): decode")
            }
            let f = try GGUFFile(url: url)
            let weights = GGUFLayout.entries(model.config).filter(\.quantizable).reduce(0) { $0 + (try! f.tensor(named: $1.name)).byteCount }
            let biases = GGUFLayout.entries(model.config).filter { $0.role == .linear }.reduce(0) { $0 + 4 * $1.shape[0] }
            XCTAssertEqual(packed.weightBytes, weights + biases, "\(name): the packed weights are the file's")
        }
    }

    func testGGUFPathsAreRecognized() throws {
        let tmp = try Fixtures.temporaryDirectory(self)
        let (url, _) = try export("tiny-gpt2-64", .f16, into: tmp)
        let renamed = tmp.appendingPathComponent("model.bin")
        try FileManager.default.copyItem(at: url, to: renamed)
        XCTAssertTrue(GGUFLayout.isGGUF(url))
        XCTAssertTrue(GGUFLayout.isGGUF(renamed), "a file starting with GGUF")
        XCTAssertFalse(GGUFLayout.isGGUF(Fixtures.tinyGPT2))
        XCTAssertEqual(try GPT2.forms(model: renamed).config, try GPT2.load(gguf: renamed).config)
    }
}
