import Compression
import Foundation
import Kernels
import Model
import Tensor
import TestSupport
import XCTest

/// The packed inference model against the trainable one it was packed from, for every weight
/// form: the same logits (F32 values: to rounding; BF16: against a dense model with its weights
/// rounded to BF16), the same perplexity, the same greedy tokens, decode (one row, GEMV kernels)
/// agreeing with prefill (GEMM).
final class PackedModelTests: XCTestCase {
    /// n_embd 64, MLP 256, vocabulary 512: every layer's inputs a multiple of 32 (quantizable).
    func wide() throws -> GPT2 {
        try GPT2(config: GPT2Config(vocabSize: 512, nPositions: 64, nEmbd: 64, nLayer: 2, nHead: 2, nInner: 256), seed: 7)
    }

    func compressed(_ yaml: String) throws -> GPT2 {
        let m = try wide()
        let c = Compressor(model: m, comm: .world)
        for st in try Recipe.parse(yaml).stages { try c.compress(st) }
        return m
    }

    static let forms: [(String, String)] = [
        ("dense", "stages:\n  - distill: {steps: 1}"),
        ("sparse 50%", "stages:\n  - prune: {sparsity: 0.5, targets: [\"h.*\", \"wte\"]}"),
        ("2:4", "stages:\n  - prune: {n: 2, m: 4, targets: [\"h.*\"]}"),
        ("low rank", "stages:\n  - lowrank: {targets: [\"h.*\"], rank_ratio: 0.5}"),
        ("low rank + sparse", "stages:\n  - lowrank: {targets: [\"h.*.mlp.*\"], rank_ratio: 0.25, sparse_residual: 0.05}"),
        ("kronecker", "stages:\n  - kronecker: {targets: [\"h.*\"], factors: [8, 16], terms: 2}"),
        ("low-rank wte", "stages:\n  - lowrank: {targets: [\"wte\"], rank: 16}"),
        ("q8_0", "stages:\n  - quantize: {format: q8_0, targets: [\"h.*\", \"wte\"]}"),
        ("q4_0", "stages:\n  - quantize: {format: q4_0, targets: [\"h.*\", \"wte\"]}"),
        ("50% + q4_0", "stages:\n  - prune: {sparsity: 0.5, targets: [\"h.*\"]}\n    quantize: {format: q4_0, targets: [\"h.*\"]}"),
        ("low rank q4_0", "stages:\n  - lowrank: {targets: [\"h.*.mlp.*\"], rank: 32}\n    quantize: {format: q4_0, targets: [\"h.*.mlp.*\"]}"),
    ]

    let ids: [Int32] = (0..<32).map { Int32(($0 * 37 + 11) % 512) }

    func testEveryFormGivesTheTrainableModelsLogits() throws {
        for (name, yaml) in Self.forms {
            let m = try compressed(yaml)
            let packed = try PackedGPT2(m)
            let want = try m.logits(ids: ids, B: 2, T: 16), got = try packed.logits(ids: ids, B: 2, T: 16)
            XCTAssertLessThanOrEqual(maxRelativeError(got, want, floor: 1e-3), 1e-4, "\(name): prefill logits")
            // Decode: the same last-row logits through the KV cache, one row (GEMV) at a time.
            let cache = KVCache(config: m.config, precision: .f32)
            _ = try packed.logits(ids: Array(ids[0..<15]), B: 1, T: 15, cache: cache, lastRowOnly: true)
            let last = try packed.logits(ids: [ids[15]], B: 1, T: 1, cache: cache, lastRowOnly: true)
            assertDecodeLogits(last, Array(want[(15 * 512)..<(16 * 512)]), quantized: name.contains("q"), name)
            // Greedy generation: the same tokens.
            let greedy = GPT2.Sampling(temperature: 0)
            XCTAssertEqual(try packed.generate(prompt: [3, 14, 15], maxTokens: 8, sampling: greedy, kvCache: .f32),
                           try m.generate(prompt: [3, 14, 15], maxTokens: 8, sampling: greedy, kvCache: .f32), name)
        }
    }

    /// Decode logits against the model's: to rounding (1e-4 of each logit above 1e-3); a
    /// quantized form's GEMV multiplies int8 activations (Q8_0 blocks, F32 scales), whose rounding
    /// (at most half a step, 1/254 of a block's largest value) moves the logits by up to 1% of
    /// their largest magnitude.
    func assertDecodeLogits(_ got: [Float], _ want: [Float], quantized: Bool, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        if quantized {
            let scale = want.map(abs).max()!
            XCTAssertLessThanOrEqual(maxAbsDifference(got, want) / scale, 1e-2, "\(what): decode logits (int8 activations)", file: file, line: line)
            XCTAssertGreaterThan(maxAbsDifference(got, want), 0, "\(what): the GEMV multiplies quantized activations", file: file, line: line)
        } else {
            XCTAssertLessThanOrEqual(maxRelativeError(got, want, floor: 1e-3), 1e-4, "\(what): decode logits", file: file, line: line)
        }
    }

    /// The BF16 KV cache: the prompt's logits exactly the F32 cache's (offset 0 attends over its
    /// own F32 rows); each decoded row's logits close to the F32 cache's (BF16 keeps 8 bits of
    /// each key and value) with the same argmax; rows decoded together or one by one the same.
    func testBF16CacheDecodesLikeTheF32Cache() throws {
        let m = try PackedGPT2(try compressed(Self.forms[0].1))
        let f32 = KVCache(config: m.config, precision: .f32), bf16 = KVCache(config: m.config, maxT: 40, precision: .bf16)
        XCTAssertEqual(try m.logits(ids: Array(ids[0..<9]), B: 1, T: 9, cache: bf16), try m.logits(ids: Array(ids[0..<9]), B: 1, T: 9, cache: f32))
        var worst: Float = 0
        for t in 9..<32 {
            let a = try m.logits(ids: [ids[t]], B: 1, T: 1, cache: bf16), b = try m.logits(ids: [ids[t]], B: 1, T: 1, cache: f32)
            worst = max(worst, maxRelativeError(a, b, floor: 1e-2))
            XCTAssertEqual(a.indices.max { a[$0] < a[$1] }, b.indices.max { b[$0] < b[$1] }, "position \(t): the same argmax")
        }
        XCTAssertLessThan(worst, 2e-2)
        XCTAssertGreaterThan(worst, 0, "the BF16 cache is in use (its rows are rounded)")
        // Two rows at once at an offset (a prompt continued) equal one row at a time.
        let c2 = KVCache(config: m.config, precision: .bf16), c1 = KVCache(config: m.config, precision: .bf16)
        _ = try m.logits(ids: Array(ids[0..<5]), B: 1, T: 5, cache: c2)
        _ = try m.logits(ids: Array(ids[0..<5]), B: 1, T: 5, cache: c1)
        let two = try m.logits(ids: [ids[5], ids[6]], B: 1, T: 2, cache: c2)
        _ = try m.logits(ids: [ids[5]], B: 1, T: 1, cache: c1)
        let one = try m.logits(ids: [ids[6]], B: 1, T: 1, cache: c1)
        XCTAssertLessThanOrEqual(maxRelativeError(Array(two[512...]), one, floor: 1e-3), 1e-4)   // GEMM vs GEMV order
        XCTAssertEqual(KVCache.bytes(config: m.config, positions: 40, precision: .bf16) * 2, KVCache.bytes(config: m.config, positions: 40, precision: .f32))
    }

    /// Loading a directory straight into the packed form (`PackedGPT2.load`, no trainable model)
    /// gives the same logits, bit for bit, as packing the loaded trainable model, for every form
    /// in F32 and BF16, with the saved masks and blocks as they were.
    func testPackedLoadingEqualsPackingTheLoadedModel() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("packed-load-\(getpid())")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, yaml) in Self.forms {
            try compressed(yaml).save(to: dir)
            for precision in [PackedPrecision.f32, .bf16] {
                let direct = try PackedGPT2.load(directory: dir, precision: precision)
                let viaModel = try PackedGPT2(try GPT2.load(directory: dir), precision: precision)
                XCTAssertEqual(try direct.logits(ids: ids, B: 2, T: 16), try viaModel.logits(ids: ids, B: 2, T: 16), "\(name) \(precision)")
                XCTAssertEqual(direct.weightBytes, viaModel.weightBytes, "\(name) \(precision)")
            }
        }
    }

    /// BF16 values: the packed model equals the dense model whose weights are rounded to BF16.
    func testBF16EqualsTheModelWithBF16Weights() throws {
        for (name, yaml) in Self.forms where ["dense", "sparse 50%", "2:4", "low rank"].contains(name) {
            let m = try compressed(yaml)
            let packed = try PackedGPT2(m, precision: .bf16)
            let rounded = try m.densified()
            for lin in rounded.linears {
                let p = rounded.params.value(lin.name + ".weight")
                for i in 0..<(lin.inFeatures * lin.outFeatures) { p[i] = float(bf16: bf16(p[i])) }
            }
            let e = rounded.params.value("wte.weight")
            for i in 0..<(512 * 64) { e[i] = float(bf16: bf16(e[i])) }
            if name == "low rank" { continue }   // its factors, not the product, are rounded
            let got = try packed.logits(ids: ids, B: 2, T: 16), want = try rounded.logits(ids: ids, B: 2, T: 16)
            // Prefill runs BF16 products where the CPU has them (activations rounded to BF16 too,
            // about 2^-9 relative each): the logits agree to 1e-2 of their scale. Without them,
            // and always in decode (one row: the GEMV, F32 activations), to 1e-3 relative.
            let scale = want.map(abs).max()!
            if BF16Matmul.isAvailable {
                XCTAssertLessThanOrEqual(maxAbsDifference(got, want) / scale, 1e-2, name)
            } else {
                XCTAssertLessThanOrEqual(maxRelativeError(got, want, floor: 1e-3), 1e-3, name)
            }
            let cache = KVCache(config: m.config, precision: .f32), cacheRounded = KVCache(config: m.config, precision: .f32)
            for t in 0..<16 {
                let a = try packed.logits(ids: [ids[t]], B: 1, T: 1, cache: cache), b = try rounded.logits(ids: [ids[t]], B: 1, T: 1, cache: cacheRounded)
                XCTAssertLessThanOrEqual(maxRelativeError(a, b, floor: 1e-3), 1e-3, "\(name): decode row \(t)")
            }
            XCTAssertLessThan(packed.weightBytes, try PackedGPT2(m).weightBytes, "\(name): BF16 reads fewer bytes")
        }
    }

    /// Bytes read per token fall with the form: sparse < dense, 2:4 < sparse, q4_0 < q8_0 < bf16.
    func testPackedBytesFollowTheForms() throws {
        var bytes: [String: Int] = [:]
        for (name, yaml) in Self.forms { bytes[name] = try PackedGPT2(try compressed(yaml), precision: .bf16).weightBytes }
        XCTAssertLessThan(bytes["q4_0"]!, bytes["q8_0"]!)
        XCTAssertLessThan(bytes["q8_0"]!, bytes["dense"]!)
        XCTAssertLessThan(bytes["2:4"]!, bytes["dense"]!)
        XCTAssertLessThan(bytes["low rank"]!, bytes["dense"]!)
    }
}
