import Foundation
import FuzzTargets
import XCTest

/// Replays Tests/Fixtures/fuzz/<target>/ (a small corpus from scripts/fuzz.sh plus every input that
/// once crashed, hung or ran out of memory) through the fuzz harnesses' own code, `FuzzTarget.run`.
/// Returning is the assertion: rejecting an input with a Swift error is fine, a crash is not; and
/// every rejection must say what was wrong where: the message names the input file (or, for a
/// recipe, which is parsed from text, starts "recipe:" and names the key).
final class FuzzRegressionTests: XCTestCase {
    func testSafeTensorsInputs() throws { try replay(.safetensors, errorsName: ["/fuzz-input/model.safetensors: "]) }
    func testConfigInputs() throws { try replay(.config, errorsName: ["/fuzz-input/config.json: ", "/fuzz-input/model.safetensors: "]) }
    func testTokenizerInputs() throws {
        try replay(.tokenizer, errorsName: ["/fuzz-input/vocab.json", "/fuzz-input/merges.txt", "/fuzz-input/tokenizer.json"])
    }
    func testRecipeInputs() throws { try replay(.recipe, errorsName: ["recipe: "]) }
    /// GGUF inputs; every rejection must name the input file (the harness asserts it too).
    func testGGUFInputs() throws { try replay(.gguf, errorsName: ["/fuzz-input/model.gguf: "]) }

    func testSeparatorSplitsAtMostIntoParts() {
        let sep = Data(FuzzTarget.separator)
        let joined = FuzzTarget.join([Data("a".utf8), Data(), Data("b".utf8) + sep + Data("c".utf8)])
        XCTAssertEqual(FuzzTarget.parts(joined, maxParts: 3), [Data("a".utf8), Data(), Data("b".utf8) + sep + Data("c".utf8)])
        XCTAssertEqual(FuzzTarget.parts(Data("abc".utf8), maxParts: 2), [Data("abc".utf8)])
    }

    private func replay(_ target: FuzzTarget, errorsName names: [String]) throws {
        let dir = Fixtures.root.appendingPathComponent("fuzz").appendingPathComponent(target.rawValue)
        let files = try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { !$0.lastPathComponent.hasPrefix(".") }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
        XCTAssertFalse(files.isEmpty, "no inputs in \(dir.path)")
        var accepted: [String] = []
        for file in files {
            let error = target.run(try Data(contentsOf: file))
            if error == nil { accepted.append(file.lastPathComponent) }
            if let error {
                XCTAssertTrue(names.contains { "\(error)".contains($0) }, "\(file.lastPathComponent): the error names none of \(names): \(error)")
            }
        }
        print("fuzz corpus \(target.rawValue): \(accepted.count) of \(files.count) inputs accepted")
        // The corpus keeps valid inputs too: the harness must reach past the parser's first checks.
        XCTAssertFalse(accepted.isEmpty, "\(target.rawValue): every input was rejected; the harness no longer reaches valid inputs")
    }
}
