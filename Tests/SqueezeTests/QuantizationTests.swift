import Compression
import Foundation
import Kernels
import Model
import Tensor
import TestSupport
import Training
import XCTest

/// GPTQ against an independent PyTorch implementation on ggml's grids
/// (scripts/make_gptq_reference.py), and its calibration error against round to nearest's.
final class GPTQTests: XCTestCase {
    struct Case { let name: String, w: String, h: String, format: QuantFormat, blockSize: Int, percdamp: Double, activationOrder: Bool, inputs: Int, outputs: Int }

    func cases() throws -> [Case] {
        let j = try Fixtures.json("gptq.json")
        let cases = try XCTUnwrap(j["cases"] as? [String: [String: Any]])
        return try cases.keys.sorted().map { name in
            let c = cases[name]!
            return Case(name: name, w: c["w"] as! String, h: c["h"] as! String,
                        format: try XCTUnwrap(QuantFormat(rawValue: (c["format"] as! String).lowercased())),
                        blockSize: c["blocksize"] as! Int, percdamp: c["percdamp"] as! Double, activationOrder: c["act_order"] as! Bool,
                        inputs: c["in"] as! Int, outputs: c["out"] as! Int)
        }
    }

    /// A float64 tensor's values, exactly.
    func doubles(_ f: SafeTensorsFile, _ name: String) throws -> [Double] {
        try f.bytes(name).withUnsafeBytes { p in (0..<(p.count / 8)).map { Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * $0, as: UInt64.self))) } }
    }

    /// trace((W − Ŵ)ᵀ H (W − Ŵ)) = ‖X(W − Ŵ)‖²_F.
    func outputError(_ w: [Float], _ q: [Float], _ h: [Double], inputs n: Int, outputs m: Int) -> Double {
        var e = 0.0
        for o in 0..<m {
            let d = (0..<n).map { Double(w[$0 * m + o]) - Double(q[$0 * m + o]) }
            for i in 0..<n { var s = 0.0; for k in 0..<n { s += h[i * n + k] * d[k] }; e += d[i] * s }
        }
        return e
    }

    func testSameCodesAsThePyTorchReference() throws {
        let f = try SafeTensorsFile(url: Fixtures.reference("gptq.safetensors"))
        for c in try cases() {
            let w = try f.floats(c.w), h = try doubles(f, c.h)
            let r = try gptq(weight: w, rows: c.inputs, cols: c.outputs, hessian: h, format: c.format, activationOrder: c.activationOrder,
                             blockSize: c.blockSize, percdamp: c.percdamp)
            XCTAssertEqual(r.weight, try f.floats("\(c.name).q"), "\(c.name): dequantized weight")
            // The blocks: fp16 scales and codes as the reference stored them.
            let codes = try f.integers("\(c.name).codes"), scales = try f.floats("\(c.name).scales")
            var want = [UInt8](repeating: 0, count: c.format.bytes(c.inputs * c.outputs))
            want.withUnsafeMutableBytes { raw in
                for o in 0..<c.outputs {
                    for g in 0..<(c.inputs / 32) {
                        let block = (o * c.inputs / 32 + g)
                        let k = (0..<32).map { codes[o * c.inputs + g * 32 + $0] }
                        k.withUnsafeBufferPointer { c.format.encodeBlock(scale: fp16(scales[block]), codes: $0.baseAddress!, into: raw.baseAddress! + block * c.format.blockBytes) }
                    }
                }
            }
            XCTAssertEqual(r.blocks, want, "\(c.name): blocks")
            // Better than round to nearest on the calibration, as the reference says.
            let errGPTQ = outputError(w, r.weight, h, inputs: c.inputs, outputs: c.outputs)
            XCTAssertEqual(errGPTQ, try doubles(f, "\(c.name).err_gptq")[0], accuracy: 1e-6 * errGPTQ, c.name)
            XCTAssertLessThan(errGPTQ, outputError(w, try f.floats("\(c.name).rtn"), h, inputs: c.inputs, outputs: c.outputs), c.name)
        }
    }

    /// With H = I there is no error to feed back: GPTQ is round to nearest, bit for bit ggml's.
    func testIdentityHessianGivesRoundToNearest() throws {
        var g = RandomGenerator(seed: 11)
        let n = 64, m = 8, w = (0..<(n * m)).map { _ in g.nextGaussian() }
        var h = [Double](repeating: 0, count: n * n)
        for i in 0..<n { h[i * n + i] = 1 }
        for format in QuantFormat.allCases {
            let r = try gptq(weight: w, rows: n, cols: m, hessian: h, format: format, percdamp: 1e-9)
            var rows = [Float](repeating: 0, count: n * m)
            for i in 0..<n { for o in 0..<m { rows[o * n + i] = w[i * m + o] } }
            var want = [UInt8](repeating: 0, count: format.bytes(n * m))
            want.withUnsafeMutableBytes { format.quantize(rows, count: rows.count, into: $0.baseAddress!) }
            XCTAssertEqual(r.blocks, want, format.rawValue)
        }
    }
}

/// ggml's block table against the GGUF type table (no drift between the two), and the quantized
/// weight form: forward on the grid, save/load of its blocks, refusal of malformed blocks.
final class QuantizedFormTests: XCTestCase {
    func testFormatTableMatchesGGML() {
        for f in QuantFormat.allCases {
            let t = GGMLType(rawValue: f.ggmlType)
            XCTAssertEqual(t?.blockSize, QuantFormat.blockSize, f.name)
            XCTAssertEqual(t?.bytesPerBlock, f.blockBytes, f.name)
            XCTAssertEqual(t?.name, f.name)
        }
    }

    /// A model whose layers' inputs are multiples of 32 (n_embd 64, MLP 256, vocabulary 512).
    static func wide() throws -> GPT2 {
        try GPT2(config: GPT2Config(vocabSize: 512, nPositions: 64, nEmbd: 64, nLayer: 2, nHead: 2, nInner: 256), seed: 3)
    }

    func compressed(_ yaml: String, model: GPT2? = nil) throws -> GPT2 {
        let m = try model ?? GPT2.load(directory: Fixtures.tinyGPT2)
        let c = Compressor(model: m, comm: .world)
        let r = try Recipe.parse(yaml)
        for st in r.stages { try c.compress(st) }
        return m
    }

    let ids: [Int32] = [464, 290, 286, 257, 149, 318, 115, 13, 506, 40, 16, 407, 248, 11, 44, 198]

    func testEveryFormQuantizesAndRoundTrips() throws {
        for yaml in ["stages:\n  - quantize: {format: q8_0, targets: [\"h.*\", \"wte\"]}",
                     "stages:\n  - prune: {sparsity: 0.5, targets: [\"h.*\"]}\n    quantize: {format: q4_0, targets: [\"h.*\"]}",
                     "stages:\n  - lowrank: {targets: [\"h.*.mlp.*\"], rank: 32}\n    quantize: {format: q4_0, targets: [\"h.*.mlp.*\"]}"] {
            let m = try compressed(yaml, model: try Self.wide())
            // The forward runs on the grid: it equals the dense export of the dequantized weights.
            let d = try m.densified()
            XCTAssertLessThanOrEqual(maxAbsDifference(try m.logits(ids: ids, B: 2, T: 8), try d.logits(ids: ids, B: 2, T: 8)), 1e-4, yaml)
            // Pruned weights stay exactly zero on the grid.
            for lin in m.linears { for part in lin.components.flatMap(\.maskedParts) {
                guard let mask = part.mask else { continue }
                let w = lin.denseWeight(params: m.params).data
                XCTAssertEqual((0..<mask.count).filter { !mask[$0] && w[$0] != 0 }.count, 0, lin.name)
            } }
            let dir = try Fixtures.temporaryDirectory(self).appendingPathComponent("q")
            try m.save(to: dir)
            let back = try GPT2.load(directory: dir)
            XCTAssertEqual(back.linears.map(\.summary), m.linears.map(\.summary), yaml)
            XCTAssertEqual(try back.logits(ids: ids, B: 2, T: 8), try m.logits(ids: ids, B: 2, T: 8), yaml)
            for (a, b) in zip(back.linears, m.linears) {
                for case let (qa as QuantizedComponent, qb as QuantizedComponent) in zip(a.components, b.components) {
                    XCTAssertEqual(qa.blocks, qb.blocks, "\(a.name): blocks written unchanged")
                }
            }
        }
    }

    func testALayerWhoseInputsAreNotAMultipleOf32IsRefusedOrSkipped() throws {
        // tiny-gpt2: n_embd 16 (block linears take 16 inputs, c_proj of the MLP 64).
        XCTAssertThrowsError(try compressed("stages:\n  - quantize: {format: q8_0, targets: [\"h.0.attn.c_attn\"]}")) {
            XCTAssertTrue("\($0)".contains("h.0.attn.c_attn") && "\($0)".contains("multiple of 32"), "\($0)")
        }
        let m = try compressed("stages:\n  - quantize: {format: q8_0, targets: [\"h.*\"], skip: [\"h.*.attn.*\", \"h.*.mlp.c_fc\"]}")
        XCTAssertEqual(m.linears.filter { $0.single is QuantizedComponent }.map(\.name), ["h.0.mlp.c_proj", "h.1.mlp.c_proj"])
    }

    func testMalformedBlocksAreRefusedNamingTheTensor() throws {
        let m = try compressed("stages:\n  - quantize: {format: q8_0, targets: [\"h.0.mlp.c_proj\"]}", model: try Self.wide())
        let dir = try Fixtures.temporaryDirectory(self)
        try m.save(to: dir.appendingPathComponent("ok"))
        let key = "transformer.h.0.mlp.c_proj.weight.q8_0"
        func rewrite(_ name: String, _ change: (inout [String: (SafeTensorsDType, [Int], [UInt8])]) -> Void) throws -> URL {
            let src = try SafeTensorsFile(url: dir.appendingPathComponent("ok/model.safetensors"))
            var tensors: [String: (SafeTensorsDType, [Int], [UInt8])] = [:]
            for (k, e) in src.entries { tensors[k] = (e.dtype, e.shape, try src.bytes(k)) }
            change(&tensors)
            var w = SafeTensorsWriter(metadata: ["format": "pt"])
            for k in tensors.keys.sorted() { let t = tensors[k]!; w.add(k, shape: t.1, bytes: t.2, dtype: t.0) }
            let out = dir.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: dir.appendingPathComponent("ok/config.json"), to: out.appendingPathComponent("config.json"))
            try w.write(to: out.appendingPathComponent("model.safetensors"))
            return out
        }
        let nanScale = try rewrite("nan") { t in t[key]!.2[0] = 0x00; t[key]!.2[1] = 0x7E }
        let zeroScale = try rewrite("zero") { t in t[key]!.2[0] = 0; t[key]!.2[1] = 0; t[key]!.2[2] = 5 }
        let shape = try rewrite("shape") { t in t[key]!.1 = [t[key]!.1[1], t[key]!.1[0]] }
        for (d, words) in [(nanScale, "scale nan"), (zeroScale, "zero scale but non-zero codes"), (shape, "expected U8")] {
            XCTAssertThrowsError(try GPT2.load(directory: d)) { XCTAssertTrue("\($0)".contains(key) && "\($0)".contains(words), "\($0)") }
        }
        var cfg = try String(contentsOf: dir.appendingPathComponent("ok/config.json"), encoding: .utf8)
        cfg = cfg.replacingOccurrences(of: "\"q8_0\"", with: "\"q3_k\"")
        try cfg.write(to: dir.appendingPathComponent("ok/config.json"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try GPT2.load(directory: dir.appendingPathComponent("ok"))) { XCTAssertTrue("\($0)".contains("q3_k"), "\($0)") }
    }
}

/// Quantization-aware distillation: after `quantize`, a distillation trains the F32 masters through
/// the quantizer (straight through); masks stay; what is saved is the grid, and it reloads to the
/// same logits.
final class QuantizationAwareDistillationTests: XCTestCase {
    func testDistillationTrainsThroughTheGridAndSavesIt() throws {
        let teacher = try QuantizedFormTests.wide()
        let student = try QuantizedFormTests.wide()
        var g = RandomGenerator(seed: 9)
        let data = TokenDataset(tokens: (0..<4000).map { _ in UInt16(g.next() % 512) }, source: URL(fileURLWithPath: "/random"))
        let runner = RecipeRunner(recipe: try Recipe.parse("""
            stages:
              - prune: {sparsity: 0.5, targets: ["h.*.mlp.*"]}
                quantize: {format: q4_0, targets: ["h.*"]}
                distill: {steps: 4, batch: 4, seq: 16, lr: 1.0e-2, micro_batch: 2, eval_tokens: 64}
            """), student: student, teacher: teacher, comm: .world)
        runner.train = data
        let before = student.linears.map { ($0.single as? QuantizedComponent)?.blocks }
        try runner.run()
        let quantized = student.linears.compactMap { $0.single as? QuantizedComponent }
        XCTAssertEqual(quantized.count, student.linears.count)
        // The masters moved, so the blocks were re-quantized from them.
        XCTAssertNotEqual(quantized.map(\.blocks), before.compactMap { $0 }, "distillation changed nothing")
        XCTAssertTrue(before.allSatisfy { $0 == nil })
        // Pruned weights stay exactly zero on the grid.
        for lin in student.linears where lin.name.contains("mlp") {
            let mask = try XCTUnwrap(lin.components[0].maskedParts.first?.mask), w = lin.denseWeight(params: student.params).data
            XCTAssertEqual((0..<mask.count).filter { !mask[$0] && w[$0] != 0 }.count, 0, lin.name)
        }
        // Saved: the grid. Reloaded: the same logits as the distilled model runs.
        let dir = try Fixtures.temporaryDirectory(self).appendingPathComponent("qat")
        try student.save(to: dir)
        let back = try GPT2.load(directory: dir)
        let ids: [Int32] = (0..<16).map { Int32($0 * 31 % 512) }
        XCTAssertEqual(try back.logits(ids: ids, B: 1, T: 16), try student.logits(ids: ids, B: 1, T: 16))
    }
}
