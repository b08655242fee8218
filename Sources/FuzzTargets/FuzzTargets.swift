import Compression
import Foundation
import Model

/// The parsers fuzzed by scripts/fuzz.sh, one input at a time.
///
/// `run` is the whole harness: libFuzzer's `LLVMFuzzerTestOneInput` (LibFuzzerEntry.swift, compiled
/// only with `-D SQUEEZE_FUZZER`) calls it, and FuzzRegressionTests replays every file under
/// Tests/Fixtures/fuzz/<target>/ through it. It must return for every input: a parser rejecting
/// the input by throwing is the expected outcome for most of them; a trap, a hang or a runaway
/// allocation is a bug. Beyond "does not crash", a few consistency checks (`invariant`) turn
/// silently wrong results into crashes the fuzzer reports.
///
/// Multi-file inputs are the files' bytes joined by `separator`:
/// - `config`: config.json [‖ model.safetensors] (no weights part: an empty weights file);
/// - `tokenizer`: vocab.json [‖ merges.txt [‖ text to encode]] (missing parts: empty merges,
///   `defaultText`), or, for an input starting with `{"model"`, tokenizer.json [‖ text to encode].
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// `SafeTensorsFile(data:url:)`, then every accepted entry through `bytes`, `floats`/`tensor`
    /// or `integers`.
    case safetensors
    /// `GPT2Config(data:url:)` and `GPT2.load(directory:config:weights:)`; a loaded model runs a
    /// forward pass of two tokens.
    case config
    /// `GPT2Tokenizer(vocabData:mergesData:...)` or `GPT2Tokenizer(tokenizerJSONData:url:)`, then
    /// encode/decode round trips of a short text.
    case tokenizer
    /// `Recipe.parse(_:)`.
    case recipe
    /// `GGUFFile(data:url:)`, then every tensor through `bytes(of:)` / `floats(of:)`; an accepted
    /// file is written again by `GGUFWriter` (in memory) and must read back the same; then it is
    /// loaded as a GPT-2 (`GPT2.load(gguf:)`): a model that loads runs a forward pass of two
    /// tokens and its tokenizer round-trips a short text. Every rejection must name the input file.
    case gguf

    /// Separates the files of a multi-file input ("\0--8<--\0": NUL bytes never occur in the
    /// JSON/text parts of a valid input).
    public static let separator: [UInt8] = Array("\u{0}--8<--\u{0}".utf8)

    /// Text encoded when a tokenizer input has no text part.
    public static let defaultText = "Hello, world! It's 2024: naïve café, 日本語 and emoji 🙂.<|endoftext|>  trailing spaces  \n\tx"

    /// Names the in-memory files in error messages.
    static let directory = URL(fileURLWithPath: "/fuzz-input")

    /// Runs one input; returns the error the parser rejected it with (nil: accepted).
    @discardableResult
    public func run(_ data: Data) -> Error? {
        do {
            switch self {
            case .safetensors: try Self.safetensors(data)
            case .config: try Self.config(data)
            case .tokenizer: try Self.tokenizer(data)
            case .recipe: try Self.recipe(data)
            case .gguf: try Self.gguf(data)
            }
            return nil
        } catch {
            // Every rejection must explain itself.
            Self.invariant(!"\(error)".isEmpty, "empty error description for \(type(of: error))")
            return error
        }
    }

    /// The parts of a multi-file input: split at the first `maxParts - 1` separators.
    public static func parts(_ data: Data, maxParts: Int) -> [Data] {
        let bytes = [UInt8](data), sep = separator
        var out: [Data] = [], start = 0, i = 0
        while i + sep.count <= bytes.count, out.count < maxParts - 1 {
            if bytes[i] == sep[0] && bytes[i..<(i + sep.count)].elementsEqual(sep) {
                out.append(Data(bytes[start..<i]))
                i += sep.count
                start = i
            } else {
                i += 1
            }
        }
        out.append(Data(bytes[start...]))
        return out
    }

    /// Joins files into one multi-file input (for seed corpora).
    public static func join(_ files: [Data]) -> Data {
        var out = Data()
        for (k, f) in files.enumerated() {
            if k > 0 { out.append(contentsOf: separator) }
            out.append(f)
        }
        return out
    }

    /// A broken invariant is a bug the fuzzer must report (a crash), not a rejected input.
    static func invariant(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
        if !condition() { fatalError("fuzz invariant violated: \(message())") }
    }

    // MARK: - Targets

    static func safetensors(_ data: Data) throws {
        let file = try SafeTensorsFile(data: data, url: directory.appendingPathComponent("model.safetensors"))
        var firstError: Error?
        for name in file.entries.keys.sorted() {
            let e = file.entries[name]!
            do {
                let raw = try file.bytes(name)
                invariant(raw.count == e.range.count && raw.count == e.count * e.dtype.size,
                          "tensor '\(name)': \(raw.count) bytes for range \(e.range), shape \(e.shape) of \(e.dtype)")
                if e.dtype.isFloat {
                    let values = try file.floats(name)
                    invariant(values.count == e.count, "tensor '\(name)': \(values.count) floats for shape \(e.shape)")
                    let t = try file.tensor(name)
                    invariant(t.shape == e.shape, "tensor '\(name)': Tensor shape \(t.shape) vs \(e.shape)")
                    invariant((try? file.integers(name)) == nil, "tensor '\(name)': integers() accepted \(e.dtype)")
                } else {
                    let values = try file.integers(name)
                    invariant(values.count == e.count, "tensor '\(name)': \(values.count) integers for shape \(e.shape)")
                    invariant((try? file.floats(name)) == nil, "tensor '\(name)': floats() accepted \(e.dtype)")
                }
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
    }

    static func config(_ data: Data) throws {
        let p = parts(data, maxParts: 2)
        let configData = p[0], weights = p.count > 1 ? p[1] : Data()
        let config = try GPT2Config(data: configData, url: directory.appendingPathComponent("config.json"))
        // The config half of `save`: what we would write back must parse to the same values.
        let written = try encodeConfigJSON(config.jsonObject())
        let reread = try GPT2Config(data: written, url: directory.appendingPathComponent("written-config.json"))
        invariant(reread.vocabSize == config.vocabSize && reread.nEmbd == config.nEmbd && reread.nLayer == config.nLayer
                  && reread.nHead == config.nHead && reread.nInner == config.nInner && reread.nPositions == config.nPositions,
                  "config.json does not round-trip: \(config) -> \(reread)")

        let model = try GPT2.load(directory: directory, config: configData, weights: weights)
        // A model that loaded must be usable: its tensors are what its layer forms expect.
        let T = min(2, model.config.nPositions)
        let V = model.config.vocabSize
        let logits = try model.logits(ids: (0..<T).map { Int32($0 % V) }, B: 1, T: T)
        invariant(logits.count == T * V, "forward returned \(logits.count) logits for T=\(T), V=\(V)")
    }

    static func tokenizer(_ data: Data) throws {
        let p = parts(data, maxParts: 3)
        let tok: GPT2Tokenizer
        let textPart: Data?
        if p[0].starts(with: Array("{\"model\"".utf8)) {
            tok = try GPT2Tokenizer(tokenizerJSONData: p[0], url: directory.appendingPathComponent("tokenizer.json"))
            textPart = p.count > 1 ? p[1] : nil
        } else {
            tok = try GPT2Tokenizer(vocabData: p[0], mergesData: p.count > 1 ? p[1] : Data(),
                                    vocabURL: directory.appendingPathComponent("vocab.json"),
                                    mergesURL: directory.appendingPathComponent("merges.txt"))
            textPart = p.count > 2 ? p[2] : nil
        }
        let text = textPart.map { String(decoding: $0, as: UTF8.self) } ?? defaultText
        for allowSpecial in [true, false] {
            let ids = tok.encode(text, allowSpecial: allowSpecial)
            invariant(text.utf8.isEmpty == ids.isEmpty, "\(ids.count) ids for \(text.utf8.count) bytes")
            // Byte-level BPE is lossless: decoding the ids gives the text's bytes back.
            let back = try tok.decode(ids)
            invariant(Array(back.utf8) == Array(text.utf8),
                      "decode(encode(\(text.debugDescription), allowSpecial: \(allowSpecial))) = \(back.debugDescription) (ids \(ids.prefix(32)))")
        }
        invariant(tok.encode("<|endoftext|>") == [tok.endOfTextID], "<|endoftext|> does not encode to endOfTextID")
        // Ids outside the vocabulary are errors, not crashes.
        for id in [-1, tok.vocabSize, Int.max, Int.min] { _ = try? tok.decode([id]) }
    }

    static func recipe(_ data: Data) throws {
        // Recipe.load reads the file as UTF-8; other bytes never reach the parser.
        guard let text = String(data: data, encoding: .utf8) else { return }
        let recipe = try Recipe.parse(text)
        for stage in recipe.stages {
            for pattern in stage.method.targets { _ = globMatch(pattern, "h.11.attn.c_attn") }
        }
    }

    static func gguf(_ data: Data) throws {
        let url = directory.appendingPathComponent("model.gguf")
        let file: GGUFFile
        do { file = try GGUFFile(data: data, url: url) } catch {
            invariant("\(error)".hasPrefix(url.path + ": "), "GGUF error does not name the file: \(error)")
            throw error
        }
        for t in file.tensors {
            invariant(t.range.lowerBound >= file.dataOffset && t.range.upperBound <= data.count
                      && t.range.count == t.type.byteCount(elements: t.elementCount) && t.shape.reduce(1, *) == t.elementCount,
                      "tensor '\(t.name)': range \(t.range) for \(t.dims) of \(t.type) in \(data.count) bytes")
            guard t.type.supported else {
                invariant((try? file.bytes(of: t.name)) == nil, "bytes(of: '\(t.name)') accepted \(t.type)")
                continue
            }
            let bytes = try file.bytes(of: t.name)
            invariant(bytes.count == t.byteCount, "tensor '\(t.name)': \(bytes.count) bytes, expected \(t.byteCount)")
            let floats = try? file.floats(of: t.name)
            invariant(t.type.isFloat ? floats?.count == t.elementCount : floats == nil, "floats(of: '\(t.name)') of \(t.type)")
        }
        try ggufRoundTrip(file, data)
        try ggufModel(file)
    }

    /// The file as a GPT-2 of llama.cpp's layout (most inputs are refused, naming the file): a
    /// model that loads runs, and its tokenizer encodes and decodes losslessly.
    static func ggufModel(_ file: GGUFFile) throws {
        let path = file.url.path
        func named<T>(_ body: () throws -> T) throws -> T {
            do { return try body() } catch {
                invariant("\(error)".hasPrefix(path + ": "), "GGUF model error does not name the file: \(error)")
                throw error
            }
        }
        let model = try named { try GPT2.load(gguf: file) }
        let T = min(2, model.config.nPositions), V = model.config.vocabSize
        let logits = try model.logits(ids: (0..<T).map { Int32($0 % V) }, B: 1, T: T)
        invariant(logits.count == T * V, "forward returned \(logits.count) logits for T=\(T), V=\(V)")
        let tok = try named { try GPT2Tokenizer(gguf: file) }
        let ids = tok.encode(defaultText)
        let back = try tok.decode(ids)
        invariant(Array(back.utf8) == Array(defaultText.utf8), "GGUF tokenizer: decode(encode(text)) != text")
        invariant(ids.allSatisfy { $0 < V }, "GGUF tokenizer: an id beyond the \(V) tokens")
    }

    /// What the reader accepted, the writer writes (same limits) and the reader reads back the same.
    static func ggufRoundTrip(_ file: GGUFFile, _ data: Data) throws {
        // The writer pads the end of the tensor infos to the alignment even without tensors (as
        // gguf-py and ggml do): a file of a few bytes asking for 2^31 would be rewritten as 2 GiB.
        // With tensors, the input itself holds the padding, so the rewrite is about its size.
        if file.tensors.isEmpty && file.alignment > 1 << 16 { return }
        let writer = GGUFWriter(metadata: file.entries,
                                tensors: file.tensors.map { GGUFTensorDescription(name: $0.name, shape: $0.shape, type: $0.type) })
        func write(_ source: GGUFFile, _ bytes: Data) -> Data {
            var out = Data()
            do {
                try writer.write(path: "/fuzz-output/model.gguf", to: { out.append(contentsOf: $0) }) { t, sink in
                    let r = try source.tensor(named: t.name).range
                    try bytes[(bytes.startIndex + r.lowerBound)..<(bytes.startIndex + r.upperBound)].withUnsafeBytes { try sink($0) }
                }
            } catch {
                invariant(false, "GGUFWriter refused what GGUFFile accepted: \(error)")
            }
            return out
        }
        let out = write(file, data)
        let again = try GGUFFile(data: out, url: URL(fileURLWithPath: "/fuzz-output/model.gguf"))
        invariant(again.keys == file.keys && again.alignment == file.alignment, "keys or alignment changed in the round trip")
        for k in file.keys {
            let a = file.metadata[k]!, b = again.metadata[k]!
            invariant(a == b || "\(a)" == "\(b)", "metadata '\(k)': \(a) read back as \(b)")  // NaNs compare by description
        }
        invariant(again.tensors.map(\.name) == file.tensors.map(\.name) && again.tensors.map(\.dims) == file.tensors.map(\.dims)
                  && again.tensors.map(\.type) == file.tensors.map(\.type), "tensor infos changed in the round trip")
        for (a, b) in zip(file.tensors, again.tensors) {
            invariant(data[(data.startIndex + a.range.lowerBound)..<(data.startIndex + a.range.upperBound)] == out[b.range],
                      "tensor '\(a.name)': bytes changed in the round trip")
        }
        invariant(write(again, out) == out, "writing the re-read file gives different bytes")
    }
}
