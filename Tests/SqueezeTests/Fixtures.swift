import Foundation
import Model
import Tensor
import TestSupport
import XCTest

/// Paths of the committed fixtures written by scripts/make_reference.py.
enum Fixtures {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures")
    static let tinyGPT2 = root.appendingPathComponent("tiny-gpt2")
    static let tinyGPT2F16Base = root.appendingPathComponent("tiny-gpt2-f16-base")
    /// Model A with every parameter perturbed (fixture H: the student of intermediate_kd.json).
    static let tinyGPT2Student = root.appendingPathComponent("tiny-gpt2-student")
    static func reference(_ name: String) -> URL { root.appendingPathComponent("reference").appendingPathComponent(name) }

    /// A JSON fixture as a dictionary.
    static func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: reference(name))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// A fresh temporary directory, removed when the test finishes.
    static func temporaryDirectory(_ test: XCTestCase) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("squeeze-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
        return url
    }
}

extension Array where Element == Any {
    /// JSON numbers as Int32 token ids.
    var int32s: [Int32] { map { Int32(($0 as! NSNumber).intValue) } }
    var doubles: [Double] { map { ($0 as! NSNumber).doubleValue } }
}

/// Asserts every element of `got` is within `rtol` of `want`, relative to max(|want|, floor),
/// where the floor is `floorFraction` of the largest |want| (so near-zero entries are compared
/// absolutely at that scale). Reports the worst element.
func assertRelativeClose(_ got: [Float], _ want: [Float], rtol: Float, floorFraction: Float = 1e-3,
                         _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, want.count, "\(what): element counts", file: file, line: line)
    guard got.count == want.count, !want.isEmpty else { return }
    let scale = want.reduce(0) { max($0, abs($1)) }
    let floor = max(scale * floorFraction, 1e-12)
    let err = maxRelativeError(got, want, floor: floor)
    XCTAssertLessThanOrEqual(err, rtol, "\(what): max relative error \(err) (floor \(floor))", file: file, line: line)
}
