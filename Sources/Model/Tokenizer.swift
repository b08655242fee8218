import Foundation

// GPT-2 byte-level BPE tokenizer, bit-compatible with OpenAI's encoder.py and Hugging Face's
// GPT2Tokenizer (slow and fast) for vocab.json + merges.txt, or the fast tokenizer's tokenizer.json.
//
// Pipeline for `encode`:
//  1. (allowSpecial) split the text on the literal "<|endoftext|>"; each occurrence becomes
//     `endOfTextID`, nothing around it is stripped.
//  2. Pre-tokenize every remaining chunk with a hand-written scanner equivalent to
//     `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//     (Python `regex` semantics: \s = Unicode White_Space, \p{L} = L*, \p{N} = N*; the
//     contractions are case-sensitive).
//  3. Run BPE on the UTF-8 bytes of each pre-token (the byte-to-unicode mapping only matters
//     for reading vocab.json / merges.txt, so all work is done on byte strings and token ids).
//
// Unicode classes come from Swift's Unicode.Scalar.Properties (Unicode 16 in Swift 6.3). They
// agree with Python `regex` and with HF's Rust tokenizer on every code point assigned in Unicode
// 16; only scalars first assigned in Unicode 17 differ (Python `regex` 2026 already knows them,
// HF's Rust tokenizer and this file treat them as unassigned, i.e. "other").
//
// Everything is keyed by bytes, never by `String`: Swift's String equality and hashing use
// canonical equivalence ("é" == "e\u{301}"), which would make the cache return the ids of the
// wrong byte sequence.
/// GPT-2's byte-level BPE tokenizer (vocab.json + merges.txt), matching Hugging Face's
/// `GPT2Tokenizer` id for id. Thread-safe: the only mutable state is a locked cache.
public final class GPT2Tokenizer: @unchecked Sendable {
    /// The literal text of the end-of-text special token.
    public static let endOfTextToken = "<|endoftext|>"

    /// Number of entries in vocab.json (50257 for GPT-2, including `<|endoftext|>`).
    public var vocabSize: Int { vocabCount }

    /// Id of `<|endoftext|>` (50256 in GPT-2's vocabulary).
    public let endOfTextID: Int

    private let vocabCount: Int
    /// Token id -> its bytes (nil for ids absent from vocab.json).
    private let idToBytes: [[UInt8]?]
    /// Token id -> its string as the vocabulary spells it (byte-level unicode, "Ġthe"), nil for
    /// ids absent from it: what a GGUF export writes as `tokenizer.ggml.tokens`.
    private let idToToken: [String?]
    /// The merge rules in rank order as `"left right"` (merges.txt's lines without the header).
    public let mergeList: [String]
    /// Byte value -> id of the single-byte token.
    private let byteIDs: [Int32]
    /// (left id << 32 | right id) -> (rank << 32 | merged id).
    private let merges: [UInt64: UInt64]
    private let specialBytes: [UInt8] = Array(GPT2Tokenizer.endOfTextToken.utf8)
    /// Pre-tokenizer class of every BMP scalar (shared, computed once per process).
    let classTable: [UInt8] = GPT2Tokenizer.bmpClasses

    private let lock = NSLock()
    private var shortCache: [ShortKey: [Int32]] = [:]
    private var longCache: [[UInt8]: [Int32]] = [:]
    /// Entries allowed in each cache before it is emptied (bounds memory on huge, diverse corpora;
    /// 8 MB of English has about 47k distinct pre-tokens).
    private let shortCacheLimit = 1 << 18
    private let longCacheLimit = 1 << 14
    /// Pre-tokens longer than this many bytes are not cached.
    private let longestCachedToken = 1024

    /// Loads a tokenizer from `vocab.json` (token string -> id) and `merges.txt`
    /// (`#version` header, then one `left right` pair per line in rank order).
    public convenience init(vocabURL: URL, mergesURL: URL) throws {
        // merges.txt is only read once vocab.json has been validated (errors keep that order).
        try self.init(vocabData: Self.readFile(vocabURL), vocabURL: vocabURL,
                      mergesData: { try Self.readFile(mergesURL) }, mergesURL: mergesURL)
    }

    /// Builds a tokenizer from the bytes of `vocab.json` and `merges.txt` already in memory
    /// (e.g. read by rank 0 and broadcast); the URLs only name the files in error messages.
    public convenience init(vocabData: Data, mergesData: Data, vocabURL: URL, mergesURL: URL) throws {
        try self.init(vocabData: vocabData, vocabURL: vocabURL, mergesData: { mergesData }, mergesURL: mergesURL)
    }

    private convenience init(vocabData: Data, vocabURL: URL, mergesData readMerges: () throws -> Data, mergesURL: URL) throws {
        let vocab: [String: Int]
        do {
            vocab = try JSONDecoder().decode([String: Int].self, from: vocabData)
        } catch {
            throw TokenizerError.invalidVocab(vocabURL, reason: "expected a JSON object of token -> integer id (\(Self.describe(error)))")
        }
        try self.init(vocab: vocab.map { ($0.key, $0.value) }, vocabURL: vocabURL, mergeRules: { try Self.mergeRules(mergesTxt: readMerges(), url: mergesURL) },
                      vocabError: { .invalidVocab(vocabURL, reason: $0) }, mergeError: { .malformedMerges(mergesURL, line: $0, reason: $1) })
    }

    /// Loads the `tokenizer.json` that Hugging Face's fast tokenizers write (transformers 5 writes
    /// only this file): a byte-level BPE `model` with `vocab` (token -> id) and `merges` (pairs in
    /// rank order, as `"left right"` strings or `["left", "right"]` arrays).
    public convenience init(tokenizerJSON url: URL) throws {
        try self.init(tokenizerJSONData: Self.readFile(url), url: url)
    }

    /// Builds a tokenizer from the bytes of a `tokenizer.json`; `url` names it in errors.
    public convenience init(tokenizerJSONData data: Data, url: URL) throws {
        func invalid(_ reason: String) -> TokenizerError { .invalidTokenizerJSON(url, reason: reason) }
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw invalid("not a JSON object")
        }
        guard let model = root["model"] as? [String: Any] else { throw invalid("no \"model\" object") }
        guard (model["type"] as? String) == "BPE" else {
            throw invalid("model.type is \(String(describing: model["type"] ?? "missing")), expected \"BPE\" (GPT-2's byte-level BPE)")
        }
        let byteLevel = { (node: Any?) -> Bool in
            guard let node = node as? [String: Any] else { return false }
            if node["type"] as? String == "ByteLevel" { return true }
            return (node["pretokenizers"] as? [[String: Any]])?.contains { $0["type"] as? String == "ByteLevel" } ?? false
        }
        guard byteLevel(root["pre_tokenizer"]) else { throw invalid("pre_tokenizer is not ByteLevel (not a GPT-2 tokenizer)") }
        guard let rawVocab = model["vocab"] as? [String: Any] else { throw invalid("model.vocab is not an object of token -> id") }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(rawVocab.count)
        for (token, value) in rawVocab {
            guard let number = value as? NSNumber, let id = Int(exactly: number.doubleValue) else {
                throw invalid("model.vocab[\(token.debugDescription)] is not an integer id")
            }
            vocab[token] = id
        }
        guard let rawMerges = model["merges"] as? [Any] else { throw invalid("model.merges is not an array") }
        try self.init(vocab: vocab.map { ($0.key, $0.value) }, vocabURL: url, mergeRules: {
            try rawMerges.enumerated().map { index, entry in
                if let text = entry as? String {
                    let parts = text.split(separator: " ", omittingEmptySubsequences: false)
                    if parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty { return MergeRule(left: String(parts[0]), right: String(parts[1]), index: index) }
                } else if let pair = entry as? [String], pair.count == 2, !pair[0].isEmpty, !pair[1].isEmpty {
                    return MergeRule(left: pair[0], right: pair[1], index: index)
                }
                throw invalid("model.merges[\(index)] is not a pair of tokens")
            }
        }, vocabError: { .invalidVocab(url, reason: $0) }, mergeError: { invalid("model.merges[\($0)]: \($1)") })
    }

    /// Builds a tokenizer from a GGUF file's `tokenizer.ggml.tokens` (the token strings in id
    /// order, byte-level unicode as in vocab.json), `tokenizer.ggml.merges` (`"left right"` in
    /// rank order) and, when present, `tokenizer.ggml.token_type` (ids of type 5, UNUSED, are
    /// padding and left out of the vocabulary). Validated as vocab.json and merges.txt are; errors
    /// name `url` and the metadata field.
    public convenience init(ggufTokens tokens: [String], merges: [String], tokenTypes: [Int]? = nil, url: URL) throws {
        func invalid(_ field: String, _ reason: String) -> TokenizerError { .invalidGGUF(url, field: field, reason: reason) }
        if let types = tokenTypes, types.count != tokens.count {
            throw invalid("tokenizer.ggml.token_type", "\(types.count) entries for \(tokens.count) tokens")
        }
        let vocab = tokens.enumerated().compactMap { id, token in tokenTypes?[id] == Self.unusedTokenType ? nil : (token, id) }
        try self.init(vocab: vocab, vocabURL: url, mergeRules: {
            try merges.enumerated().map { index, text in
                let parts = text.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw invalid("tokenizer.ggml.merges[\(index)]", "expected two tokens separated by one space, got \(String(text.prefix(200)).debugDescription)")
                }
                return MergeRule(left: String(parts[0]), right: String(parts[1]), index: index)
            }
        }, vocabError: { invalid("tokenizer.ggml.tokens", $0) }, mergeError: { invalid("tokenizer.ggml.merges[\($0)]", $1) })
    }

    /// GGUF's token type of padding ids (`LLAMA_TOKEN_TYPE_UNUSED`).
    public static let unusedTokenType = 5

    /// The string of token `id` as the vocabulary spells it (byte-level unicode: "Ġthe"); nil for
    /// an id the vocabulary does not have.
    public func token(_ id: Int) -> String? { id >= 0 && id < idToToken.count ? idToToken[id] : nil }

    /// One more than the largest id in the vocabulary.
    public var idCount: Int { idToToken.count }

    /// One BPE merge rule in rank order; `index` is the 1-based line of merges.txt or the
    /// 0-based entry of tokenizer.json's `model.merges` (errors only).
    private struct MergeRule {
        let left: String, right: String, index: Int
    }

    /// merges.txt's rules: a `#version` header, then one `left right` pair per line.
    private static func mergeRules(mergesTxt data: Data, url: URL) throws -> [MergeRule] {
        var rules: [MergeRule] = []
        rules.reserveCapacity(50_000)
        var lineNumber = 0
        let bytes = [UInt8](data)
        var lineStart = 0
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count && bytes[lineEnd] != 0x0A { lineEnd += 1 }
            lineNumber += 1
            var end = lineEnd
            if end > lineStart && bytes[end - 1] == 0x0D { end -= 1 }
            let line = bytes[lineStart..<end]
            lineStart = lineEnd + 1
            if line.isEmpty || line.starts(with: "#version".utf8) { continue }
            let parts = line.split(separator: 0x20, omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw TokenizerError.malformedMerges(url, line: lineNumber,
                    reason: "expected two tokens separated by one space, got \(String(decoding: line.prefix(200), as: UTF8.self).debugDescription)")
            }
            guard let leftText = String(bytes: parts[0], encoding: .utf8),
                  let rightText = String(bytes: parts[1], encoding: .utf8) else {
                throw TokenizerError.malformedMerges(url, line: lineNumber, reason: "not valid UTF-8")
            }
            rules.append(MergeRule(left: leftText, right: rightText, index: lineNumber))
        }
        return rules
    }

    /// The shared construction: validates the vocabulary, then the merge rules (read only once the
    /// vocabulary is valid, so errors keep that order). `mergeError(index, reason)` names a bad rule.
    private init(vocab: [(token: String, id: Int)], vocabURL: URL, mergeRules: () throws -> [MergeRule],
                 vocabError: (String) -> TokenizerError, mergeError: (Int, String) -> TokenizerError) throws {
        let unicodeToByte = Self.byteLevelDecoder()
        var bytesToID: [[UInt8]: Int32] = [:]
        bytesToID.reserveCapacity(vocab.count)
        var maxID = -1
        for (token, id) in vocab {
            guard id >= 0, id < Self.maxTokenID else {
                throw vocabError("token \(token.debugDescription) has id \(id) outside 0..<\(Self.maxTokenID)")
            }
            maxID = max(maxID, id)
        }
        // Every id decodes to its own token's bytes. Two tokens sharing an id would make decoding
        // ambiguous (a fuzzer input had 'U' and 'ŀ' both at id 52: "日" came back as "�U").
        var table = [[UInt8]?](repeating: nil, count: maxID + 1)
        var strings = [String?](repeating: nil, count: maxID + 1)
        for (token, id) in vocab {
            guard table[id] == nil else {
                let names = vocab.filter { $0.id == id }.map(\.token).sorted().map(\.debugDescription)
                throw vocabError("tokens \(names.joined(separator: " and ")) share id \(id)")
            }
            let bytes = Self.tokenBytes(token, unicodeToByte)
            table[id] = bytes
            strings[id] = token
            // Two token strings can stand for the same bytes (only outside the byte alphabet): encode
            // with the lower id, not with whichever the dictionary's (per-process) order gives last.
            if let other = bytesToID[bytes], other < id { continue }
            bytesToID[bytes] = Int32(id)
        }
        var bytesIDs = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            guard let id = bytesToID[[UInt8(b)]] else {
                let symbol = String(Character(Self.byteLevelEncoder[b]))
                throw vocabError("missing the single-byte token \(symbol.debugDescription) for byte \(b)")
            }
            bytesIDs[b] = id
        }
        guard let eot = bytesToID[Array(GPT2Tokenizer.endOfTextToken.utf8)] else {
            throw vocabError("missing the special token \(GPT2Tokenizer.endOfTextToken)")
        }

        var mergeTable: [UInt64: UInt64] = [:]
        mergeTable.reserveCapacity(50_000)
        var rank: UInt64 = 0
        let rules = try mergeRules()
        for rule in rules {
            let left = Self.tokenBytes(rule.left, unicodeToByte)
            let right = Self.tokenBytes(rule.right, unicodeToByte)
            var ids: [Int32] = []
            for (text, key) in [(rule.left, left), (rule.right, right), (rule.left + rule.right, left + right)] {
                guard let id = bytesToID[key] else {
                    throw mergeError(rule.index, "token \(text.debugDescription) is not in \(vocabURL.lastPathComponent)")
                }
                ids.append(id)
            }
            // A repeated pair keeps its last rank, like Python's dict and HF's HashMap.
            mergeTable[UInt64(UInt32(ids[0])) << 32 | UInt64(UInt32(ids[1]))] = rank << 32 | UInt64(UInt32(ids[2]))
            rank += 1
        }

        vocabCount = vocab.count
        idToBytes = table
        idToToken = strings
        mergeList = rules.map { $0.left + " " + $0.right }
        byteIDs = bytesIDs
        merges = mergeTable
        endOfTextID = Int(eot)
    }

    /// The tokenizer files of a model directory, in the order they are looked for: `vocab.json` +
    /// `merges.txt` (what GPT-2's slow tokenizer and the Hub's gpt2 repositories carry), else
    /// `tokenizer.json` (all transformers 5 writes).
    public static func files(in directory: URL) -> [URL] {
        let pair = ["vocab.json", "merges.txt"].map { directory.appendingPathComponent($0) }
        let json = directory.appendingPathComponent("tokenizer.json")
        if !FileManager.default.fileExists(atPath: pair[0].path) && FileManager.default.fileExists(atPath: json.path) { return [json] }
        return pair
    }

    /// Loads the tokenizer of a model directory: `vocab.json` and `merges.txt`, else `tokenizer.json`.
    public convenience init(directory: URL) throws {
        let files = Self.files(in: directory)
        if files.count == 1 { try self.init(tokenizerJSON: files[0]); return }
        guard FileManager.default.fileExists(atPath: files[0].path) else {
            throw TokenizerError.missingFile(files[0], alternative: "tokenizer.json")
        }
        try self.init(vocabURL: files[0], mergesURL: files[1])
    }

    /// Token ids of `text`; a literal `<|endoftext|>` becomes `endOfTextID`.
    public func encode(_ text: String) -> [Int] {
        encode(text, allowSpecial: true)
    }

    /// Token ids of `text`. With `allowSpecial`, each literal `<|endoftext|>` becomes
    /// `endOfTextID` (the text is split on it first, nothing around it is stripped);
    /// without, it is tokenized as ordinary text.
    public func encode(_ text: String, allowSpecial: Bool) -> [Int] {
        var text = text
        var ids: [Int] = []
        text.withUTF8 { buf in
            guard let base = buf.baseAddress, buf.count > 0 else { return }
            ids.reserveCapacity(buf.count / 3 + 1)
            if !allowSpecial {
                encodeChunk(base, 0, buf.count, into: &ids)
                return
            }
            let special = specialBytes
            let n = buf.count, m = special.count
            var chunkStart = 0, i = 0
            while i + m <= n {
                if base[i] == special[0] && special.withUnsafeBufferPointer({ memcmp(base + i, $0.baseAddress!, m) == 0 }) {
                    encodeChunk(base, chunkStart, i, into: &ids)
                    ids.append(endOfTextID)
                    i += m
                    chunkStart = i
                } else {
                    i += 1
                }
            }
            encodeChunk(base, chunkStart, n, into: &ids)
        }
        return ids
    }

    /// The text of `ids`: their bytes joined and decoded as UTF-8, invalid sequences replaced
    /// by U+FFFD (like Hugging Face's `errors="replace"`). Throws for an id not in the vocabulary.
    public func decode(_ ids: [Int]) throws -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            guard id >= 0, id < idToBytes.count, let tokenBytes = idToBytes[id] else {
                throw TokenizerError.unknownTokenID(id, vocabSize: vocabCount)
            }
            bytes.append(contentsOf: tokenBytes)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Pre-tokenization

    /// Appends the ids of the UTF-8 bytes `p[start..<end]` (no special tokens inside).
    private func encodeChunk(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, into ids: inout [Int]) {
        var i = start
        while i < end {
            let j = preTokenEnd(p, i, end)
            appendBPE(p + i, j - i, into: &ids)
            i = j
        }
    }

    /// End (exclusive) of the pre-token starting at `i`, i.e. of the leftmost alternative of
    /// GPT-2's pattern that matches there.
    @inline(__always)
    private func preTokenEnd(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int) -> Int {
        let (c, n) = Self.decodeScalar(p, i)
        // 's|'t|'re|'ve|'m|'ll|'d  (lowercase only, as in the original pattern)
        if c == 0x27 && i + 1 < end {
            let b1 = p[i + 1]
            if b1 == 0x73 || b1 == 0x74 || b1 == 0x6D || b1 == 0x64 { return i + 2 }   // s t m d
            if i + 2 < end {
                let b2 = p[i + 2]
                if (b1 == 0x72 && b2 == 0x65) || (b1 == 0x76 && b2 == 0x65) || (b1 == 0x6C && b2 == 0x6C) {
                    return i + 3                                                        // re ve ll
                }
            }
        }
        var cls = scalarClass(c)
        var k = i + n          // end of the first scalar of the run
        if c == 0x20 && k < end {
            // ` ?X+`: a space immediately followed by a letter, number or other symbol joins it.
            let (c2, n2) = Self.decodeScalar(p, k)
            let cls2 = scalarClass(c2)
            if cls2 != ScalarClass.space {
                cls = cls2
                k += n2
            }
        }
        if cls != ScalarClass.space {
            // \p{L}+ | \p{N}+ | [^\s\p{L}\p{N}]+  (greedy run of one class)
            while k < end {
                let (c2, n2) = Self.decodeScalar(p, k)
                if scalarClass(c2) != cls { break }
                k += n2
            }
            return k
        }
        // \s+(?!\S) | \s+ : take the whole whitespace run; if a non-space follows it and the run
        // has more than one scalar, give its last scalar back (it may start the next token).
        var lastStart = i
        while k < end {
            let (c2, n2) = Self.decodeScalar(p, k)
            if scalarClass(c2) != ScalarClass.space { break }
            lastStart = k
            k += n2
        }
        if k < end && lastStart > i { return lastStart }
        return k
    }

    // MARK: - BPE with cache

    /// BPE ids of the bytes `p[0..<n]` through one of the caches (cleared when it reaches `limit`).
    private func cachedBPE<K: Hashable>(_ key: K, _ cache: ReferenceWritableKeyPath<GPT2Tokenizer, [K: [Int32]]>, limit: Int,
                                        _ p: UnsafePointer<UInt8>, _ n: Int) -> [Int32] {
        lock.lock()
        let cached = self[keyPath: cache][key]
        lock.unlock()
        if let cached { return cached }
        let result = bpe(p, n)
        lock.lock()
        if self[keyPath: cache].count >= limit { self[keyPath: cache].removeAll(keepingCapacity: true) }
        self[keyPath: cache][key] = result
        lock.unlock()
        return result
    }

    /// Appends the BPE ids of one pre-token, consulting and filling the cache.
    @inline(__always)
    private func appendBPE(_ p: UnsafePointer<UInt8>, _ n: Int, into ids: inout [Int]) {
        if n == 1 {
            ids.append(Int(byteIDs[Int(p[0])]))
            return
        }
        if n <= ShortKey.capacity {
            for id in cachedBPE(ShortKey(p, n), \.shortCache, limit: shortCacheLimit, p, n) { ids.append(Int(id)) }
        } else if n <= longestCachedToken {
            for id in cachedBPE(Array(UnsafeBufferPointer(start: p, count: n)), \.longCache, limit: longCacheLimit, p, n) { ids.append(Int(id)) }
        } else {
            for id in bpe(p, n) { ids.append(Int(id)) }
        }
    }

    /// BPE of `n` bytes: repeatedly take the lowest-ranked adjacent pair present and merge all
    /// its non-overlapping occurrences left to right (exactly the reference algorithm), using
    /// a linked list and a heap of (rank, position) so long pre-tokens stay O(n log n).
    private func bpe(_ p: UnsafePointer<UInt8>, _ n: Int) -> [Int32] {
        var sym = [Int32](repeating: 0, count: n)
        for k in 0..<n { sym[k] = byteIDs[Int(p[k])] }
        if n < 2 { return sym }
        var next = [Int32](repeating: -1, count: n)
        var prev = [Int32](repeating: -1, count: n)
        for k in 0..<n {
            next[k] = k + 1 < n ? Int32(k + 1) : -1
            prev[k] = Int32(k - 1)
        }
        var heap = MinHeap()
        for k in 0..<(n - 1) {
            if let m = merges[Self.pairKey(sym[k], sym[k + 1])] { heap.push(m & Self.rankMask | UInt64(k)) }
        }
        var batch: [Int] = []
        while let top = heap.pop() {
            let rank = top >> 32
            batch.removeAll(keepingCapacity: true)
            batch.append(Int(top & 0xFFFF_FFFF))
            // All entries of this rank (= this pair), in position order; pairs created while
            // merging them are only considered afterwards, as in the reference's full pass.
            while let t = heap.peek, t >> 32 == rank {
                batch.append(Int(t & 0xFFFF_FFFF))
                _ = heap.pop()
            }
            for pos in batch {
                let q = next[pos]
                guard sym[pos] >= 0, q >= 0, let m = merges[Self.pairKey(sym[pos], sym[Int(q)])], m >> 32 == rank else {
                    continue   // stale: one of the two symbols has been merged since
                }
                sym[pos] = Int32(truncatingIfNeeded: m & 0xFFFF_FFFF)
                sym[Int(q)] = -1
                let after = next[Int(q)]
                next[pos] = after
                if after >= 0 { prev[Int(after)] = Int32(pos) }
                let before = prev[pos]
                if before >= 0, let m2 = merges[Self.pairKey(sym[Int(before)], sym[pos])] {
                    heap.push(m2 & Self.rankMask | UInt64(before))
                }
                if after >= 0, let m2 = merges[Self.pairKey(sym[pos], sym[Int(after)])] {
                    heap.push(m2 & Self.rankMask | UInt64(pos))
                }
            }
        }
        var out: [Int32] = []
        var k: Int32 = 0
        while k >= 0 {
            out.append(sym[Int(k)])
            k = next[Int(k)]
        }
        return out
    }
}

// MARK: - Helpers

// Kept inside the type so that they cannot clash with other files of the module.
