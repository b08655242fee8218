import Foundation
import Model
import Tensor
import TestSupport
import XCTest

/// The GPT-2 forward and backward passes against transformers (float64 reference, fixture D).
final class GPT2Tests: XCTestCase {
    func loadStep() throws -> (model: GPT2, ids: [Int32], targets: [Int32], B: Int, T: Int, json: [String: Any]) {
        let model = try GPT2.load(directory: Fixtures.tinyGPT2)
        let j = try Fixtures.json("gpt2_step.json")
        let ids = (j["input_ids"] as! [Any]).int32s
        let targets = (j["targets"] as! [Any]).int32s
        return (model, ids, targets, j["B"] as! Int, j["T"] as! Int, j)
    }

    func testLogitsAndLossMatchTransformers() throws {
        let (model, ids, targets, B, T, j) = try loadStep()
        let logits = try model.logits(ids: ids, B: B, T: T)
        try model.forward(ids: ids, B: B, T: T)
        let ref = try SafeTensorsFile(url: Fixtures.reference("gpt2_logits.safetensors")).floats("logits")
        let diff = maxAbsDifference(logits, ref)
        XCTAssertLessThanOrEqual(diff, 1e-4, "logits max |diff| \(diff)")
        let (loss, _) = try model.crossEntropy(targets: targets, computeGradient: false)
        let want = j["loss"] as! Double
        XCTAssertLessThanOrEqual(abs(loss - want) / want, 1e-5, "loss \(loss) vs \(want)")
    }

    func testEveryGradientMatchesTransformers() throws {
        let (model, ids, targets, B, T, _) = try loadStep()
        model.params.zeroGrads()
        try model.forward(ids: ids, B: B, T: T)
        _ = try model.crossEntropy(targets: targets, computeGradient: true)
        try model.backward()
        let ref = try SafeTensorsFile(url: Fixtures.reference("gpt2_step.safetensors"))
        XCTAssertEqual(ref.entries.count, model.params.slots.count, "one reference gradient per parameter")
        for slot in model.params.slots {
            let want = try ref.floats("grad." + slot.name)
            let got = model.params.gradTensor(slot.name).data
            assertRelativeClose(got, want, rtol: 1e-3, "grad \(slot.name)")
        }
    }

    func testF16BaseCheckpointLoadsSameWeights() throws {
        let f32 = try GPT2.load(directory: Fixtures.tinyGPT2)
        let f16 = try GPT2.load(directory: Fixtures.tinyGPT2F16Base)
        XCTAssertEqual(f16.keyPrefix, "")
        XCTAssertEqual(f32.keyPrefix, "transformer.")
        XCTAssertEqual(f16.storageDType, .f16)
        for slot in f32.params.slots {
            let a = f32.params.tensor(slot.name).data.map { Float(Float16($0)) }
            XCTAssertEqual(a, f16.params.tensor(slot.name).data, slot.name)
        }
    }
}
