import Compression
import Foundation
import XCTest
import Model
import Tensor
@testable import Training

/// The memory estimate against what the allocations really take: the resident memory a training
/// step adds (activations with every component's saved state, the head's chunk buffers,
/// gradients), measured, for a dense, a low-rank and a Kronecker model.
final class MemoryEstimateTests: XCTestCase {
    /// Resident bytes of this process now (VmRSS).
    func residentBytes() throws -> Int {
        let text = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
        return try XCTUnwrap(Int(line.split(separator: " ")[1])) * 1024
    }

    /// A 4 x 256 model with a 4096-token vocabulary, its block linears in `form`.
    func model(_ form: String) throws -> GPT2 {
        var c = GPT2Config()
        (c.vocabSize, c.nEmbd, c.nLayer, c.nHead, c.nPositions, c.nInner) = (4096, 256, 4, 4, 256, 1024)
        let m = try GPT2(config: c, seed: 3)
        var tensors: [String: Tensor] = [:]
        var g = RandomGenerator(seed: 5)
        for lin in m.linears {
            switch form {
            case "lowrank":
                let comp = LowRankComponent(layer: lin.name, inFeatures: lin.inFeatures, outFeatures: lin.outFeatures, rank: 96)
                lin.components = [comp]
            case "kronecker":
                let s = KroneckerShape(m1: 16, n1: lin.outFeatures / 32, m2: lin.inFeatures / 16, n2: 32)
                lin.components = [KroneckerComponent(prefix: lin.name, shape: s, terms: 2)]
            default: continue
            }
            for p in lin.components[0].parameters {
                tensors[p.name] = try Tensor(shape: p.shape, data: (0..<p.shape.reduce(1, *)).map { _ in 0.02 * g.nextGaussian() })
            }
        }
        try m.rebuildParameters(from: tensors)
        return m
    }

    /// Peak resident bytes of this process since the last `resetPeak` (VmHWM).
    func peakBytes() throws -> Int {
        let text = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("VmHWM:") })
        return try XCTUnwrap(Int(line.split(separator: " ")[1])) * 1024
    }

    /// Resets VmHWM to the current resident set (Linux's clear_refs "5").
    func resetPeak() throws { try "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8) }

    /// A packed model loaded from its directory holds its packed weights, not an F32 copy: for a
    /// Q4_0 model (block linears 4.5 bits per weight) the load's peak adds about the packed bytes
    /// plus one layer's F32 transient, far below the F32 block linears that packing a loaded
    /// trainable model holds (measured too, so the test can tell the two apart).
    func testPackedLoadingHoldsNoF32Copy() throws {
        var c = GPT2Config()
        (c.vocabSize, c.nEmbd, c.nLayer, c.nHead, c.nPositions, c.nInner) = (512, 384, 6, 6, 64, 1536)
        let m = try GPT2(config: c, seed: 3)
        let compressor = Compressor(model: m, comm: .world)
        for st in try Recipe.parse("stages:\n  - quantize: {format: q4_0, targets: [\"h.*\"]}").stages { try compressor.quantize(st.quantize!, stage: st.index) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("packed-rss-\(getpid())")
        defer { try? FileManager.default.removeItem(at: dir) }
        try m.save(to: dir)
        let f32 = 4 * m.linears.reduce(0) { $0 + $1.inFeatures * $1.outFeatures }
        func peakOfLoad(_ load: () throws -> PackedGPT2) throws -> (bytes: Int, packed: Int) {
            let before = try residentBytes()
            try resetPeak()
            let p = try load()
            return (try peakBytes() - before, p.weightBytes)
        }
        let direct = try peakOfLoad { try PackedGPT2.load(directory: dir) }
        let viaModel = try peakOfLoad { try PackedGPT2(try GPT2.load(directory: dir)) }
        XCTAssertGreaterThan(viaModel.bytes, f32, "packing a loaded trainable model holds its F32 masters")
        XCTAssertLessThan(direct.bytes, direct.packed + f32 / 4,
                          "direct packed load: peak \(direct.bytes >> 10) KiB for \(direct.packed >> 10) KiB packed, F32 \(f32 >> 10) KiB")
        // A GGUF file (Q4_0, F16): read where it lies in the mapped file, as llama.cpp reads it.
        for type in [GGUFExportType.q4_0, .f16] {
            let gguf = dir.appendingPathComponent("model-\(type.rawValue).gguf")
            try m.exportGGUF(to: gguf, type: type, tokenizer: try GPT2Tokenizer(directory: Fixtures.root.appendingPathComponent("tiny-gpt2-64")))
            let mapped = try peakOfLoad { try PackedGPT2.load(gguf: gguf) }
            XCTAssertLessThan(mapped.bytes, mapped.packed + f32 / 4,
                              "\(type.rawValue) GGUF packed load: peak \(mapped.bytes >> 10) KiB for \(mapped.packed >> 10) KiB packed, F32 \(f32 >> 10) KiB")
        }
    }

    func testATrainingStepAllocatesWhatTheEstimateCounts() throws {
        for form in ["dense", "lowrank", "kronecker"] {
            let m = try model(form)
            let (B, T) = (8, 256)
            let ids = (0..<(B * T)).map { Int32(($0 * 7919) % 4096) }
            let before = try residentBytes()
            try m.forward(ids: ids, B: B, T: T)
            _ = try m.crossEntropy(targets: ids, computeGradient: true)
            try m.backward()
            let measured = try residentBytes() - before
            // What the step allocated: activations (component state included), the head's logits
            // and their gradient, and the gradients.
            let f = m.forms
            let estimate = f.trainingActivationBytes(B: B, T: T, recompute: false) + f.headBytes(rows: B * T, buffers: 2, backward: true)
                + 4 * f.parameterFloats
            let ratio = Double(estimate) / Double(measured)
            XCTAssertEqual(ratio, 1, accuracy: 0.1, "\(form): estimate \(estimate >> 20) MiB, measured \(measured >> 20) MiB")
            m.releaseActivations()
            m.params.releaseGradients()
        }
    }

    /// The component state is most of the difference between forms: a 2-term Kronecker layer keeps
    /// its intermediate product for backward, as large as the layer's output.
    func testComponentStateIsCounted() throws {
        let dense = try model("dense").forms, kron = try model("kronecker").forms
        let extra = kron.trainingActivationBytes(B: 8, T: 256, recompute: false) - dense.trainingActivationBytes(B: 8, T: 256, recompute: false)
        let saved = kron.blocks.flatMap(\.linears).reduce(0) { $0 + 4 * $1.savedFloats(rows: 8 * 256) }
        XCTAssertGreaterThan(saved, 0)
        XCTAssertGreaterThanOrEqual(extra, saved)
    }

    func testShardedMomentsFallWithTheRanks() throws {
        var s = DistillSettings()
        s.seq = 256
        let forms = try model("dense").forms
        func perRank(_ ranks: Int, shard: Bool) -> Int {
            var job = MemoryEstimate.DistillationJob(student: forms, teacher: forms, settings: s)
            (job.ranks, job.ranksPerNode, job.shardOptimizer, job.loaded) = (ranks, ranks, shard, true)
            return MemoryEstimate.distillation(job, microBatch: 1, available: nil).perRank
        }
        let floats = forms.parameterFloats
        XCTAssertEqual(perRank(1, shard: true) - perRank(4, shard: true), 8 * floats - 8 * floats / 4)
        XCTAssertEqual(perRank(4, shard: false), perRank(1, shard: true))
    }
}
