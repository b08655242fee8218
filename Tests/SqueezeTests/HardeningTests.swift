import Foundation
import Model
import MPI
import Tensor
import Training
import XCTest

/// Bad input and bad numbers: configs checked against the weights before any allocation,
/// non-finite weights and losses refused, interruptions consumed, checkpoints swapped atomically.
final class HardeningTests: XCTestCase {
    /// A copy of the tiny fixture whose config.json has `key` set to the JSON text `value`.
    func modelWithConfig(_ key: String, _ value: String) throws -> URL {
        let dir = try Fixtures.temporaryDirectory(self).appendingPathComponent("m")
        try FileManager.default.copyItem(at: Fixtures.tinyGPT2, to: dir)
        let cfg = dir.appendingPathComponent("config.json")
        var text = try String(contentsOf: cfg, encoding: .utf8)
        let pattern = try NSRegularExpression(pattern: "\"\(key)\": [^,\\n]*")
        text = pattern.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "\"\(key)\": \(value)")
        try text.write(to: cfg, atomically: true, encoding: .utf8)
        return dir
    }

    func loadError(_ dir: URL) -> String {
        let t0 = Date()
        defer { XCTAssertLessThan(Date().timeIntervalSince(t0), 5, "refusal took too long") }
        do { _ = try GPT2.load(directory: dir); return "no error" } catch { return "\(error)" }
    }

    func testConfigSizesAreCheckedAgainstTheWeights() throws {
        let cases: [(String, String, [String])] = [
            ("n_layer", "2147483648", ["'n_layer' = 2147483648", "beyond any GPT-2"]),
            ("n_layer", "4000", ["n_layer = 4000", "holds 2 block"]),
            ("n_layer", "1000000000000", ["'n_layer'", "beyond any GPT-2"]),
            ("n_layer", "3", ["n_layer = 3", "holds 2 block"]),
            ("n_layer", "1", ["n_layer = 1", "unexpected tensor 'transformer.h.1."]),
            ("n_embd", "32", ["n_embd = 32", "wpe.weight"]),
            ("n_head", "64", ["n_embd 16 is not divisible by n_head 64"]),
            ("vocab_size", "50000", ["vocab_size = 50000", "wte.weight"]),
            ("n_positions", "64", ["n_positions = 64", "wpe.weight"]),
            ("n_inner", "32", ["n_inner = 32", "h.0.mlp.c_fc.bias"]),
            ("n_inner", "1e300", ["'n_inner'", "beyond any GPT-2"]),
            ("n_embd", "-16", ["'n_embd' must be a positive integer"]),
            ("layer_norm_epsilon", "-1", ["'layer_norm_epsilon' must be in (0, 1)"]),
        ]
        for (key, value, expect) in cases {
            let e = loadError(try modelWithConfig(key, value))
            for piece in expect { XCTAssertTrue(e.contains(piece), "\(key) = \(value): \(e)") }
            XCTAssertTrue(e.contains("config.json") || e.contains("model.safetensors"), "names the file: \(e)")
        }
    }

    func testNonFiniteWeightsAreRefusedNamingTheTensor() throws {
        let dir = try Fixtures.temporaryDirectory(self).appendingPathComponent("nan")
        let m = try GPT2.load(directory: Fixtures.tinyGPT2)
        try m.save(to: dir)
        // Write a NaN into h.0.mlp.c_fc.weight through the file itself (save refuses NaN).
        var w = SafeTensorsWriter(metadata: ["format": "pt"])
        let f = try SafeTensorsFile(url: dir.appendingPathComponent("model.safetensors"))
        for name in f.entries.keys.sorted() {
            var t = try f.tensor(name)
            if name.hasSuffix("h.0.mlp.c_fc.weight") { t.data[5] = .nan }
            w.add(name, t)
        }
        try w.write(to: dir.appendingPathComponent("model.safetensors"))
        let e = loadError(dir)
        XCTAssertTrue(e.contains("h.0.mlp.c_fc.weight") && e.contains("nan") && e.contains("--allow-non-finite"), e)
        let allowed = try GPT2.load(directory: dir, allowNonFinite: true)
        XCTAssertTrue(allowed.params.tensor("h.0.mlp.c_fc.weight").data[5].isNaN)
        XCTAssertThrowsError(try allowed.save(to: dir.appendingPathComponent("copy"))) {
            XCTAssertTrue("\($0)".contains("h.0.mlp.c_fc.weight"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir.appendingPathComponent("copy/model.safetensors").path))
    }

    func testNonFiniteLossStopsAtTheFirstStepAndKeepsTheLastCheckpoint() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let cp = Checkpoint(directory: dir.appendingPathComponent("cp"))
        // Two good steps with a checkpoint, then a resumed run whose student holds an Inf weight.
        _ = try TrainerFixture.run(comm: .world, steps: 4, stopAfter: 2, checkpoint: cp)
        let before = try cp.readState()
        let teacher = try GPT2.load(directory: Fixtures.tinyGPT2)
        let student = try GPT2.load(directory: cp.modelDirectory)
        student.params.value("h.1.mlp.c_proj.weight")[3] = .infinity
        let (train, valid) = try TrainerFixture.tokens().split(validationFraction: 0.2)
        let t = try Trainer(student: student, teacher: teacher, settings: TrainerFixture.settings(steps: 4), train: train, valid: valid, comm: .world)
        t.checkpoint = cp
        t.label = "stage 2/3 lowrank"
        let start = try t.resume(from: cp)
        XCTAssertThrowsError(try t.run(from: start)) { e in
            let s = "\(e)"
            XCTAssertTrue(s.contains("stage 2/3 lowrank") && s.contains("step 3") && s.contains(cp.directory.path), s)
        }
        XCTAssertEqual(try cp.readState(), before, "the last good checkpoint is untouched")
        XCTAssertNil(try GPT2.load(directory: cp.modelDirectory).params.firstNonFinite())
    }

    func testInterruptionIsConsumedSoALaterTrainerRunsToTheEnd() throws {
        var pending = true
        let poll: () -> Bool = { defer { pending = false }; return pending }
        let (train, valid) = try TrainerFixture.tokens().split(validationFraction: 0.2)
        func trainer() throws -> Trainer {
            var run = RunOptions()
            run.interruptRequested = poll
            return try Trainer(student: try GPT2.load(directory: Fixtures.tinyGPT2), teacher: nil,
                               settings: TrainerFixture.settings(steps: 3), train: train, valid: valid, comm: .world, run: run)
        }
        XCTAssertThrowsError(try trainer().run()) { XCTAssertTrue("\($0)".contains("interrupted at step 1"), "\($0)") }
        XCTAssertEqual(try trainer().run().count, 3)
    }

    func testCheckpointSwapLeavesOneCompleteVersion() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let cp = Checkpoint(directory: dir.appendingPathComponent("cp"))
        // Leftovers of a write that crashed before its swap must not matter.
        try FileManager.default.createDirectory(at: dir.appendingPathComponent(".cp.v9-1-1/model"), withIntermediateDirectories: true)
        _ = try TrainerFixture.run(comm: .world, steps: 4, stopAfter: 1, checkpoint: cp)
        let first = try FileManager.default.destinationOfSymbolicLink(atPath: cp.directory.path)
        _ = try TrainerFixture.run(comm: .world, steps: 4, stopAfter: 2, checkpoint: cp)
        let second = try FileManager.default.destinationOfSymbolicLink(atPath: cp.directory.path)
        XCTAssertNotEqual(first, second)
        XCTAssertEqual(try cp.readState().step, 2)
        let versions = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".cp.") }
        XCTAssertEqual(versions, [second], "only the current version remains")
        cp.remove()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])
    }
}
