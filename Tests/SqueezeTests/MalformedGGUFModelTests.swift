import Foundation
import FuzzTargets
import Model
import XCTest

/// GGUF files that parse but are not a GPT-2 Squeeze can load: each is refused within a second
/// with an error naming the file and the metadata key or tensor. The base is the gguf fuzz seed
/// model-micro-q4_0 (1 block, n_embd 32, 257 tokens, Q4_0), rewritten with GGUFWriter.
final class MalformedGGUFModelTests: XCTestCase {
    static let micro = Fixtures.root.appendingPathComponent("fuzz/gguf/model-micro-q4_0")

    /// A file being edited: its metadata, tensor descriptions and tensor bytes.
    struct Edit {
        var metadata: [(key: String, value: GGUFValue)]
        var tensors: [GGUFTensorDescription]
        var data: [String: Data]

        mutating func set(_ key: String, _ value: GGUFValue) {
            if let i = metadata.firstIndex(where: { $0.key == key }) { metadata[i].value = value } else { metadata.append((key, value)) }
        }
        mutating func remove(_ key: String) { metadata.removeAll { $0.key == key } }
        mutating func setTensor(_ name: String, shape: [Int]? = nil, type: GGMLType, bytes: Data) {
            let old = tensors.first { $0.name == name }
            let t = GGUFTensorDescription(name: name, shape: shape ?? old!.shape, type: type)
            if let i = tensors.firstIndex(where: { $0.name == name }) { tensors[i] = t } else { tensors.append(t) }
            data[name] = bytes
        }
        mutating func drop(_ name: String) { tensors.removeAll { $0.name == name } }
    }

    /// `base` (default: the micro model) changed by `change`, as bytes.
    func variant(_ base: URL = micro, _ change: (inout Edit) -> Void) throws -> Data {
        let f = try GGUFFile(url: base)
        var e = Edit(metadata: f.entries, tensors: f.tensors.map { GGUFTensorDescription(name: $0.name, shape: $0.shape, type: $0.type) }, data: [:])
        for t in f.tensors { e.data[t.name] = try f.bytes(of: t.name) }
        change(&e)
        var out = Data()
        try GGUFWriter(metadata: e.metadata, tensors: e.tensors).write(path: "/malformed/variant.gguf", to: { out.append(contentsOf: $0) }) { t, sink in
            try e.data[t.name]!.withUnsafeBytes { try sink($0) }
        }
        return out
    }

    /// The error loading `data` as a model and its tokenizer raises; "accepted" if none.
    func refusal(_ data: Data, _ name: String, file: StaticString = #filePath, line: UInt = #line) -> String {
        let url = URL(fileURLWithPath: "/malformed/\(name).gguf")
        return refusal(name, path: url.path, file: file, line: line) {
            _ = try GPT2.load(gguf: url, data: data)
            _ = try GPT2Tokenizer(gguf: try GGUFFile(data: data, url: url))
        }
    }

    /// The error the packed loader (`PackedGPT2.load(gguf:)`: the file mapped, its weights
    /// checked where they lie) raises on `data` written to a file, that file's path given as
    /// `refusal` names it; "accepted" if none.
    func packedRefusal(_ data: Data, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let real = try Fixtures.temporaryDirectory(self).appendingPathComponent("\(name).gguf")
        try data.write(to: real)
        return refusal(name, path: real.path, file: file, line: line) {
            _ = try PackedGPT2.load(gguf: real)
            _ = try GPT2Tokenizer(gguf: try GGUFFile(url: real))
        }
            .replacingOccurrences(of: real.path, with: "/malformed/\(name).gguf")
    }

    /// What `load` throws (checked to name `path` first, and to come within a second), or "accepted".
    private func refusal(_ name: String, path: String, file: StaticString, line: UInt, _ load: () throws -> Void) -> String {
        let t0 = Date()
        defer { XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "\(name): refusal took too long", file: file, line: line) }
        do {
            try load()
            return "accepted"
        } catch {
            let s = "\(error)"
            XCTAssertTrue(s.hasPrefix(path + ": "), "\(name): the error names the file: \(s)", file: file, line: line)
            return s
        }
    }

    /// Both loaders (the trainable model's and the packed one's) refuse the variant with `expected` in the message.
    func assertRefused(_ name: String, _ expected: String..., base: URL = micro, file: StaticString = #filePath, line: UInt = #line,
                       _ change: (inout Edit) -> Void) throws {
        let data = try variant(base, change)
        for (loader, s) in [("model", refusal(data, name, file: file, line: line)), ("packed", try packedRefusal(data, name, file: file, line: line))] {
            for piece in expected { XCTAssertTrue(s.contains(piece), "\(name) (\(loader)): expected '\(piece)' in: \(s)", file: file, line: line) }
        }
    }

    static func floats(_ values: [Float]) -> Data { values.withUnsafeBytes { Data($0) } }

    func testTheBaseAndTiedOrF16VariantsAreAccepted() throws {
        XCTAssertEqual(refusal(try variant { _ in }, "base"), "accepted")
        XCTAssertEqual(try packedRefusal(try variant { _ in }, "base"), "accepted")
        // The fuzz seed loads through the harness (so the gguf target reaches the model code).
        XCTAssertNil(FuzzTarget.gguf.run(try Data(contentsOf: Self.micro)))
        let tied = try variant { e in e.setTensor("output.weight", shape: [257, 32], type: .q4_0, bytes: e.data["token_embd.weight"]!) }
        XCTAssertEqual(refusal(tied, "tied-output"), "accepted")
        let f16 = try variant { e in e.setTensor("position_embd.weight", type: .f16, bytes: Data(count: 4 * 32 * 2)) }
        XCTAssertEqual(refusal(f16, "position-f16"), "accepted")
    }

    func testOtherArchitecturesAndNonModels() throws {
        try assertRefused("llama", "architecture \"llama\" is not supported (only \"gpt2\")") { $0.set("general.architecture", .string("llama")) }
        try assertRefused("no-arch", "metadata 'general.architecture' is missing") { $0.remove("general.architecture") }
        try assertRefused("arch-type", "metadata 'general.architecture' must be STRING, not UINT32") { $0.set("general.architecture", .uint32(2)) }
        let reference = try Data(contentsOf: GGUFTests.dir.appendingPathComponent("reference.gguf"))
        XCTAssertTrue(refusal(reference, "container-only").contains("architecture \"squeeze-test\" is not supported"))
    }

    func testMissingOrMistypedMetadata() throws {
        try assertRefused("block-count-int32", "metadata 'gpt2.block_count' must be UINT32, not INT32") { $0.set("gpt2.block_count", .int32(1)) }
        try assertRefused("no-context", "metadata 'gpt2.context_length' is missing") { $0.remove("gpt2.context_length") }
        try assertRefused("no-ffn", "metadata 'gpt2.feed_forward_length' is missing") { $0.remove("gpt2.feed_forward_length") }
        try assertRefused("eps-f64", "metadata 'gpt2.attention.layer_norm_epsilon' must be FLOAT32, not FLOAT64") {
            $0.set("gpt2.attention.layer_norm_epsilon", .float64(1e-5))
        }
        try assertRefused("eps-zero", "metadata 'gpt2.attention.layer_norm_epsilon' = 0.0 must be in (0, 1)") { $0.set("gpt2.attention.layer_norm_epsilon", .float32(0)) }
        try assertRefused("embd-zero", "metadata 'gpt2.embedding_length' = 0 must be between 1 and 65536") { $0.set("gpt2.embedding_length", .uint32(0)) }
        try assertRefused("heads", "metadata 'gpt2.embedding_length' = 32 is not divisible by 'gpt2.attention.head_count' = 3") {
            $0.set("gpt2.attention.head_count", .uint32(3))
        }
        try assertRefused("tokens-int32", "metadata 'tokenizer.ggml.tokens' must be an array of STRING, not of INT32") {
            $0.set("tokenizer.ggml.tokens", .array(.int32(Array(repeating: 1, count: 257))))
        }
        try assertRefused("no-merges", "metadata 'tokenizer.ggml.merges' is missing") { $0.remove("tokenizer.ggml.merges") }
        try assertRefused("tokenizer-llama", "metadata 'tokenizer.ggml.model' is \"llama\": only GPT-2's byte-level BPE") {
            $0.set("tokenizer.ggml.model", .string("llama"))
        }
        try assertRefused("types-count", "metadata 'tokenizer.ggml.token_type' has 3 entries for 257 tokens") {
            $0.set("tokenizer.ggml.token_type", .array(.int32([1, 1, 1])))
        }
        try assertRefused("bos", "metadata 'tokenizer.ggml.bos_token_id' = 1000 is not a token id (257 tokens)") { $0.set("tokenizer.ggml.bos_token_id", .uint32(1000)) }
        try assertRefused("bad-merge", "tokenizer.ggml.merges[0]: expected two tokens separated by one space") {
            $0.set("tokenizer.ggml.merges", .array(.string(["Ġt"])))
        }
        try assertRefused("merge-not-in-vocab", "tokenizer.ggml.merges[0]: token \"Ġt\" is not in") { $0.set("tokenizer.ggml.merges", .array(.string(["Ġ t"]))) }
        try assertRefused("no-eot", "tokenizer.ggml.tokens: missing the special token <|endoftext|>") {
            guard case .array(.string(var ts))? = $0.metadata.first(where: { $0.key == "tokenizer.ggml.tokens" })?.value else { return }
            ts[256] = "<|notend|>"
            $0.set("tokenizer.ggml.tokens", .array(.string(ts)))
        }
    }

    func testShapesThatDisagreeWithTheMetadata() throws {
        try assertRefused("context", "tensor 'position_embd.weight' has ggml dims [32, 4], expected [32, 8] from the metadata (gpt2.embedding_length 32, gpt2.context_length 8") {
            $0.set("gpt2.context_length", .uint32(8))
        }
        try assertRefused("ffn", "tensor 'blk.0.ffn_up.weight' has ggml dims [32, 32], expected [32, 64]") { $0.set("gpt2.feed_forward_length", .uint32(64)) }
        try assertRefused("blocks-2", "tensor 'blk.1.attn_norm.weight' is missing (gpt2.block_count = 2)") { $0.set("gpt2.block_count", .uint32(2)) }
        try assertRefused("tokens-256", "tensor 'token_embd.weight' has ggml dims [32, 257], expected [32, 256]", "256 tokens") {
            guard case .array(.string(let ts))? = $0.metadata.first(where: { $0.key == "tokenizer.ggml.tokens" })?.value else { return }
            $0.set("tokenizer.ggml.tokens", .array(.string(Array(ts.prefix(256)))))
            for k in ["tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"] { $0.remove(k) }
        }
    }

    func testMissingExtraAndUnsupportedTensors() throws {
        try assertRefused("missing", "tensor 'blk.0.ffn_down.bias' is missing") { $0.drop("blk.0.ffn_down.bias") }
        try assertRefused("extra", "unexpected tensor 'blk.0.attn_q.weight' (not part of a gpt2 model with gpt2.block_count = 1)") {
            $0.setTensor("blk.0.attn_q.weight", shape: [32], type: .f32, bytes: Data(count: 128))
        }
        try assertRefused("untied", "tensor 'output.weight': a separate output head (not tied to token_embd.weight) is not supported") {
            $0.setTensor("output.weight", shape: [257, 32], type: .f32, bytes: Data(count: 257 * 32 * 4))
        }
        try assertRefused("q5_0", "tensor 'token_embd.weight' is Q5_0 (6), which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0)") {
            $0.setTensor("token_embd.weight", type: .q5_0, bytes: Data(count: 257 * 22))
        }
        try assertRefused("q8_0-norm", "tensor 'blk.0.attn_norm.weight' is Q8_0 (8): norms, biases and position_embd must be F32, F16 or BF16") {
            $0.setTensor("blk.0.attn_norm.weight", type: .q8_0, bytes: Data(count: 34))
        }
        // Q6_K (what llama-quantize makes token_embd for Q4_0) needs rows of 256: the 64-wide model's ffn_down.
        let tmp = try Fixtures.temporaryDirectory(self)
        let wide = tmp.appendingPathComponent("wide.gguf")
        let m = try GPT2.load(directory: Fixtures.root.appendingPathComponent("tiny-gpt2-64"))
        try m.exportGGUF(to: wide, type: .q8_0, tokenizer: try GPT2Tokenizer(directory: Fixtures.root.appendingPathComponent("tiny-gpt2-64")))
        try assertRefused("q6_k", "tensor 'blk.0.ffn_down.weight' is Q6_K (14), which is not supported", base: wide) {
            $0.setTensor("blk.0.ffn_down.weight", type: .q6_K, bytes: Data(count: 64 * 210))
        }
    }

    func testNonFiniteWeightsAndBadBlocks() throws {
        try assertRefused("nan", "tensor 'position_embd.weight' holds nan at element 3", "--allow-non-finite") {
            var v = [Float](repeating: 0.5, count: 4 * 32)
            v[3] = .nan
            $0.setTensor("position_embd.weight", type: .f32, bytes: Self.floats(v))
        }
        // A block linear in F16 with an infinity (the packed loader checks it in the mapped file).
        try assertRefused("f16-inf", "tensor 'blk.0.attn_qkv.weight' holds inf", "--allow-non-finite") {
            var h = [UInt16](repeating: 0x3C00, count: 96 * 32)
            h[5] = 0x7C00
            $0.setTensor("blk.0.attn_qkv.weight", type: .f16, bytes: h.withUnsafeBytes { Data($0) })
        }
        try assertRefused("inf-scale", "tensor 'token_embd.weight': block 0 has scale inf") {
            var b = $0.data["token_embd.weight"]!
            b[b.startIndex] = 0x00
            b[b.startIndex + 1] = 0x7C
            $0.setTensor("token_embd.weight", type: .q4_0, bytes: b)
        }
    }
}
