import Foundation
import XCTest
import Model

/// GPT-2 tokenizer tests against Hugging Face reference ids (Tests/Fixtures/reference/tokenizer.json)
/// and hand-picked edge cases whose ids were produced by HF's GPT2Tokenizer (transformers 5.24)
/// and the slow-tokenizer port in scripts/make_reference.py (both agree on all of them).
final class TokenizerTests: XCTestCase {
    /// Repository root: this file is <repo>/Tests/SqueezeTests/TokenizerTests.swift.
    static let repoRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let assetsDir = repoRoot.appendingPathComponent("assets/gpt2")
    static let fixtureURL = repoRoot.appendingPathComponent("Tests/Fixtures/reference/tokenizer.json")

    /// Loaded once for the whole class (about 0.1 s in release, more in debug).
    static let shared: Result<GPT2Tokenizer, Error> = Result { try GPT2Tokenizer(directory: assetsDir) }

    func tokenizer() throws -> GPT2Tokenizer { try Self.shared.get() }

    /// Byte-exact comparison (Swift's String == treats canonically equivalent strings as equal).
    func assertSameBytes(_ a: String, _ b: String, _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Array(a.utf8), Array(b.utf8), "\(message) \(a.debugDescription) vs \(b.debugDescription)", file: file, line: line)
    }

    // MARK: - Reference fixture

    struct Fixture: Decodable {
        struct Case: Decodable { let text: String; let ids: [Int]; let roundtrip: Bool }
        let cases: [Case]
    }

    func testFixtureIDsAndRoundTrip() throws {
        let tok = try tokenizer()
        let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: Self.fixtureURL))
        XCTAssertGreaterThanOrEqual(fixture.cases.count, 19)
        for c in fixture.cases {
            XCTAssertEqual(tok.encode(c.text), c.ids, "ids of \(c.text.debugDescription)")
            XCTAssertEqual(tok.encode(c.text, allowSpecial: true), c.ids)
            let decoded = try tok.decode(c.ids)
            if c.roundtrip { assertSameBytes(decoded, c.text, "roundtrip") }
        }
    }

    func testVocabularyBasics() throws {
        let tok = try tokenizer()
        XCTAssertEqual(tok.vocabSize, 50257)
        XCTAssertEqual(tok.endOfTextID, 50256)
        XCTAssertEqual(tok.encode("<|endoftext|>"), [50256])
        XCTAssertEqual(try tok.decode([50256]), "<|endoftext|>")
        XCTAssertEqual(tok.encode(""), [])
        XCTAssertEqual(tok.encode("Hello world"), [15496, 995])
    }

    // MARK: - Edge cases (expected ids from Hugging Face)

    func testEdgeCases() throws {
        let tok = try tokenizer()
        let cases: [(String, [Int])] = [
            // Contractions are case-sensitive; "'" not followed by a contraction is punctuation.
            ("'s'S 's's ''s x'sy", [338, 6, 50, 705, 82, 338, 10148, 82, 2124, 338, 88]),
            ("don't'll've'ss'RE 'd'm", [9099, 470, 1183, 1053, 338, 82, 6, 2200, 705, 67, 1101]),
            // Unicode White_Space (NBSP, ideographic space, line separator, em space) is \s ...
            ("a\u{a0}b\u{3000}\u{3000}c\u{2028}d\u{2003} e", [64, 1849, 65, 5099, 222, 5099, 222, 66, 447, 101, 67, 447, 225, 304]),
            // ... but U+001C...U+001F are not (unlike Python's str.isspace), U+0085 is.
            ("x\u{1c}y\u{1f} z\u{85}w", [87, 216, 88, 219, 1976, 126, 227, 86]),
            // Combining marks are neither letters nor numbers; decomposed and precomposed differ.
            ("e\u{301}t\u{301} \u{e9}t", [68, 136, 223, 83, 136, 223, 220, 25125]),
            // \p{N} includes Nd, Nl and No: Arabic-Indic digits, superscripts, fractions, roman numerals.
            ("\u{663}\u{664} \u{b2}\u{bd} \u{216b} \u{2460}x", [149, 96, 149, 97, 1587, 110, 23141, 2343, 227, 104, 2343, 239, 254, 87]),
            // \s+(?!\S) gives the last whitespace of a run back to the next token; \s+ takes a lone one.
            (" \t x\t\tx  \n\n y\r\n\r\nz \n", [220, 197, 2124, 197, 197, 87, 220, 220, 628, 331, 201, 198, 201, 198, 89, 220, 198]),
            // Special token: split first, nothing stripped around it; an incomplete one is plain text.
            ("<|endoftext|><|endoftext|> <|endoftext|> <|endoftext", [50256, 50256, 220, 50256, 1279, 91, 437, 1659, 5239]),
            // Zero-width space and BOM are format characters (symbols), not whitespace.
            ("a\u{200b}b\u{feff}c", [64, 9525, 65, 171, 119, 123, 66]),
            // A 64-byte word (long-token cache path).
            ("kemubcrdlsbqgbcnnchcrnbsdhuusbssmbhbrejnerdsjrvfdssugldrwcsbtgpv",
             [365, 76, 549, 66, 4372, 7278, 65, 80, 70, 15630, 20471, 354, 6098, 77, 1443, 67, 13415,
              43319, 824, 2022, 71, 4679, 73, 1008, 9310, 73, 81, 85, 16344, 824, 1018, 335, 81, 12712,
              18347, 31197, 85]),
        ]
        for (text, ids) in cases {
            XCTAssertEqual(tok.encode(text), ids, "ids of \(text.debugDescription)")
            assertSameBytes(try tok.decode(ids), text, "roundtrip")
        }
        // Second pass: answers now come from the cache and must not change.
        for (text, ids) in cases { XCTAssertEqual(tok.encode(text), ids) }
    }

    func testCacheDistinguishesCanonicallyEquivalentText() throws {
        let tok = try tokenizer()
        let precomposed = "caf\u{e9}", decomposed = "cafe\u{301}"
        XCTAssertEqual(precomposed, decomposed)          // Swift String equality is canonical ...
        let a = tok.encode(precomposed), b = tok.encode(decomposed), a2 = tok.encode(precomposed)
        XCTAssertNotEqual(a, b)                          // ... but the bytes, hence the ids, differ.
        XCTAssertEqual(a, a2)
        assertSameBytes(try tok.decode(a), precomposed)
        assertSameBytes(try tok.decode(b), decomposed)
    }

    func testAllowSpecialFalseTokenisesTheLiteralText() throws {
        let tok = try tokenizer()
        XCTAssertEqual(tok.encode("<|endoftext|>", allowSpecial: false), [27, 91, 437, 1659, 5239, 91, 29])
        XCTAssertEqual(tok.encode("<|endoftext|>", allowSpecial: true), [50256])
        XCTAssertEqual(tok.encode("a<|endoftext|>b"), [64, 50256, 65])
    }

    func testLongPreTokensRoundTrip() throws {
        let tok = try tokenizer()
        for text in [String(repeating: "a", count: 3000), String(repeating: " ", count: 2000) + "x",
                     String(repeating: "=", count: 5000), String(repeating: "\u{65e5}", count: 600)] {
            let ids = tok.encode(text)
            assertSameBytes(try tok.decode(ids), text)
            XCTAssertEqual(tok.encode(text), ids)
        }
    }

    func testConcurrentEncodingMatchesSerial() throws {
        let tok = try tokenizer()
        let texts = (0..<64).map { i in "Doc \(i): the caf\u{e9} had \(i * 37) espressos; it's \(i)x faster!  \n" }
        let serial = texts.map { tok.encode($0) }
        final class Box: @unchecked Sendable { var results = [[Int]](repeating: [], count: 64); let lock = NSLock() }
        let box = Box()
        DispatchQueue.concurrentPerform(iterations: texts.count) { i in
            let ids = tok.encode(texts[i])
            box.lock.lock(); box.results[i] = ids; box.lock.unlock()
        }
        XCTAssertEqual(box.results, serial)
    }

    // MARK: - Decoding

    func testDecodeReplacesInvalidUTF8LikePython() throws {
        let tok = try tokenizer()
        // Byte token ids: GPT-2's id for each raw byte (vocab entry of its byte-level character).
        let byteID: [UInt8: Int] = [0xED: 169, 0xA0: 254, 0x80: 222, 0xC0: 124, 0xF0: 172, 0x9F: 253,
                                    0x98: 246, 0x41: 32, 0xF5: 177, 0xE2: 158, 0x82: 224, 0xF4: 176, 0x90: 238]
        // Expected strings are Python's bytes.decode("utf-8", errors="replace").
        let cases: [([UInt8], String)] = [
            ([0xED, 0xA0, 0x80], "\u{fffd}\u{fffd}\u{fffd}"),    // surrogate
            ([0xC0, 0x80], "\u{fffd}\u{fffd}"),                   // overlong
            ([0xF0, 0x9F, 0x98], "\u{fffd}"),                     // truncated 4-byte sequence
            ([0xF0, 0x9F, 0x98, 0x41], "\u{fffd}A"),
            ([0x80], "\u{fffd}"),                                 // lone continuation byte
            ([0xF5, 0x80], "\u{fffd}\u{fffd}"),
            ([0xE2, 0x82], "\u{fffd}"),
            ([0xF4, 0x90, 0x80, 0x80], "\u{fffd}\u{fffd}\u{fffd}\u{fffd}"),  // above U+10FFFF
        ]
        for (bytes, expected) in cases {
            assertSameBytes(try tok.decode(bytes.map { byteID[$0]! }), expected, "bytes \(bytes)")
        }
        // Splitting a character's bytes over tokens is fine once they are joined.
        let ids = tok.encode("\u{1f600}")
        XCTAssertGreaterThan(ids.count, 1)
        XCTAssertEqual(try tok.decode(ids), "\u{1f600}")
    }

    func testDecodeRejectsUnknownIDs() throws {
        let tok = try tokenizer()
        for bad in [-1, 50257, 1_000_000] {
            XCTAssertThrowsError(try tok.decode([15496, bad])) { error in
                guard case TokenizerError.unknownTokenID(let id, let size) = error else {
                    return XCTFail("unexpected error \(error)")
                }
                XCTAssertEqual(id, bad)
                XCTAssertEqual(size, 50257)
                XCTAssertTrue("\(error)".contains("\(bad)"))
            }
        }
    }

    // MARK: - Loading errors

    func makeTempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tokenizer-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    func testMissingFile() throws {
        let dir = try makeTempDir()
        XCTAssertThrowsError(try GPT2Tokenizer(directory: dir)) { error in
            guard case TokenizerError.missingFile(let url, _) = error else { return XCTFail("unexpected error \(error)") }
            XCTAssertEqual(url.lastPathComponent, "vocab.json")
            XCTAssertTrue("\(error)".contains(dir.appendingPathComponent("vocab.json").path), "\(error)")
        }
        try FileManager.default.copyItem(at: Self.assetsDir.appendingPathComponent("vocab.json"),
                                         to: dir.appendingPathComponent("vocab.json"))
        XCTAssertThrowsError(try GPT2Tokenizer(directory: dir)) { error in
            guard case TokenizerError.missingFile(let url, _) = error else { return XCTFail("unexpected error \(error)") }
            XCTAssertEqual(url.lastPathComponent, "merges.txt")
            XCTAssertTrue("\(error)".contains("merges.txt"), "\(error)")
        }
    }

    func testMalformedMergesLineReportsLineNumber() throws {
        let dir = try makeTempDir()
        try FileManager.default.copyItem(at: Self.assetsDir.appendingPathComponent("vocab.json"),
                                         to: dir.appendingPathComponent("vocab.json"))
        let merges = dir.appendingPathComponent("merges.txt")
        let bad: [(String, Int)] = [
            ("#version: 0.2\n\u{120} t\n\u{120} a\nhe\n", 4),                // one token
            ("#version: 0.2\n\u{120} t\n\n\u{120} a b\n", 4),                // three tokens (blank line 3 counted)
            ("#version: 0.2\n\u{120} t\n\u{120}  a\n", 3),                   // double space
            ("#version: 0.2\nzzzzqqq x\n", 2),                               // token not in the vocabulary
        ]
        for (text, line) in bad {
            try Data(text.utf8).write(to: merges)
            XCTAssertThrowsError(try GPT2Tokenizer(directory: dir), text.debugDescription) { error in
                guard case TokenizerError.malformedMerges(let url, let l, _) = error else {
                    return XCTFail("unexpected error \(error)")
                }
                XCTAssertEqual(url.lastPathComponent, "merges.txt")
                XCTAssertEqual(l, line, "\(error)")
                XCTAssertTrue("\(error)".contains("merges.txt") && "\(error)".contains("line \(line)"), "\(error)")
            }
        }
        // Blank lines (and a CRLF line end) are ignored; ranks follow file order.
        try Data("#version: 0.2\n\n\u{120} t\r\n\nh e\n\u{120}t he\n".utf8).write(to: merges)
        let tok = try GPT2Tokenizer(directory: dir)
        XCTAssertEqual(tok.encode(" t"), [256])          // "Ġt"
        XCTAssertEqual(tok.encode(" the"), [262])        // "Ġthe"
        XCTAssertEqual(tok.encode(" he"), [220, 258])    // "Ġ" "he": no "Ġ h" merge
        XCTAssertEqual(tok.encode(" in"), [220, 72, 77]) // no merges at all
    }

    func testBadVocabJSON() throws {
        let dir = try makeTempDir()
        try Data("#version: 0.2\n".utf8).write(to: dir.appendingPathComponent("merges.txt"))
        for text in ["{not json", "[1, 2, 3]", "{\"a\": \"b\"}", "{\"a\": 1}"] {
            try Data(text.utf8).write(to: dir.appendingPathComponent("vocab.json"))
            XCTAssertThrowsError(try GPT2Tokenizer(directory: dir), text) { error in
                guard case TokenizerError.invalidVocab(let url, _) = error else { return XCTFail("unexpected error \(error)") }
                XCTAssertEqual(url.lastPathComponent, "vocab.json")
                XCTAssertTrue("\(error)".contains("vocab.json"), "\(error)")
            }
        }
    }

    // MARK: - tokenizer.json (what transformers 5 saves)

    static let tokenizerJSONDir = repoRoot.appendingPathComponent("Tests/Fixtures/reference/tokenizer-json")

    struct IDCases: Decodable {
        struct Case: Decodable { let text: String; let ids: [Int] }
        let cases: [Case]
    }

    /// A directory with only tokenizer.json, written by transformers' save_pretrained (GPT-2's BPE cut
    /// to 2000 merges), gives the ids transformers gives, whichever way the merges are spelled.
    func testTokenizerJSONMatchesTransformers() throws {
        let fixture = try JSONDecoder().decode(IDCases.self, from: Data(contentsOf: Self.tokenizerJSONDir.appendingPathComponent("cases.json")))
        XCTAssertEqual(fixture.cases.count, 19)
        let tok = try GPT2Tokenizer(directory: Self.tokenizerJSONDir)
        XCTAssertEqual(tok.vocabSize, 2257)
        XCTAssertEqual(tok.endOfTextID, 2256)
        for c in fixture.cases {
            XCTAssertEqual(tok.encode(c.text), c.ids, "ids of \(c.text.debugDescription)")
            XCTAssertEqual(try tok.encode(tok.decode(c.ids)), c.ids, "decode then encode \(c.text.debugDescription)")
        }
        XCTAssertTrue(fixture.cases.contains { $0.ids.contains(2256) } && fixture.cases.contains { $0.ids.contains { $0 >= 2000 && $0 < 2256 } },
                      "the cases use late merges and the special token")

        // tokenizers < 0.20 wrote each merge as one "left right" string.
        let url = Self.tokenizerJSONDir.appendingPathComponent("tokenizer.json")
        var root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var model = try XCTUnwrap(root["model"] as? [String: Any])
        model["merges"] = try XCTUnwrap(model["merges"] as? [[String]]).map { $0.joined(separator: " ") }
        root["model"] = model
        let old = try GPT2Tokenizer(tokenizerJSONData: JSONSerialization.data(withJSONObject: root), url: url)
        for c in fixture.cases { XCTAssertEqual(old.encode(c.text), c.ids, "string merges: \(c.text.debugDescription)") }

        // vocab.json + merges.txt win when both are present (they are what the Hub's gpt2 carries).
        let dir = try makeTempDir()
        for f in ["vocab.json", "merges.txt"] {
            try FileManager.default.copyItem(at: Self.assetsDir.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        try FileManager.default.copyItem(at: url, to: dir.appendingPathComponent("tokenizer.json"))
        XCTAssertEqual(try GPT2Tokenizer(directory: dir).vocabSize, 50257)
    }

    func testBadTokenizerJSONNamesFileAndEntry() throws {
        let dir = try makeTempDir()
        let url = dir.appendingPathComponent("tokenizer.json")
        let byteVocab = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: Self.tokenizerJSONDir.appendingPathComponent("tokenizer.json"))) as? [String: Any])
        let model = try XCTUnwrap(byteVocab["model"] as? [String: Any])
        let vocab = try XCTUnwrap(model["vocab"] as? [String: Int])
        func json(_ model: [String: Any], pre: Any = ["type": "ByteLevel"]) throws -> Data {
            try JSONSerialization.data(withJSONObject: ["model": model, "pre_tokenizer": pre])
        }
        let cases: [(Data, String)] = [
            (Data("{not json".utf8), "not a JSON object"),
            (try json(["type": "WordPiece", "vocab": vocab, "merges": []]), "model.type"),
            (try json(["type": "BPE", "vocab": vocab, "merges": []], pre: ["type": "Whitespace"]), "ByteLevel"),
            (try json(["type": "BPE", "vocab": ["a": "x"], "merges": []]), "model.vocab[\"a\"]"),
            (try json(["type": "BPE", "vocab": vocab, "merges": [["\u{120}", "t"], ["x"]]]), "model.merges[1]"),
            (try json(["type": "BPE", "vocab": vocab, "merges": [["\u{120}", "t"], ["zzzq", "x"]]]), "model.merges[1]: token \"zzzq\""),
        ]
        for (data, expected) in cases {
            try data.write(to: url)
            XCTAssertThrowsError(try GPT2Tokenizer(directory: dir), expected) { error in
                guard case TokenizerError.invalidTokenizerJSON(let u, _) = error else { return XCTFail("unexpected error \(error)") }
                XCTAssertEqual(u.lastPathComponent, "tokenizer.json")
                XCTAssertTrue("\(error)".contains(url.path) && "\(error)".contains(expected), "\(error)")
            }
        }
        try FileManager.default.removeItem(at: url)
        XCTAssertThrowsError(try GPT2Tokenizer(directory: dir)) { error in
            XCTAssertTrue("\(error)".contains("vocab.json") && "\(error)".contains("tokenizer.json"), "\(error)")
        }
    }
}
