import Reporting
import Foundation
import Model
import MPI
import Tensor

/// A token stream made from UTF-8 text (a file, or a directory of .txt files joined with
/// `<|endoftext|>`), tokenized once and cached as a token file that is reused while the text
/// and the tokenizer are unchanged.
///
/// Cache file: magic `SQZTOK1\n`, UInt64 tokenizer hash, UInt64 text hash, UInt64 count, then
/// `count` little-endian UInt16 ids.
public struct TokenDataset: @unchecked Sendable {
    /// The token ids (in node-shared memory when loaded under MPI).
    public let tokens: UnsafeBufferPointer<UInt16>
    public let source: URL
    /// Keeps the ids' memory alive (an array box or a node-shared window).
    private let storage: AnyObject

    /// A dataset over a copy of `tokens`.
    public init(tokens: [UInt16], source: URL) {
        let box = TokenBox(tokens)
        self.init(tokens: UnsafeBufferPointer(rebasing: box.storage[0..<tokens.count]), source: source, storage: box)
    }

    init(tokens: UnsafeBufferPointer<UInt16>, source: URL, storage: AnyObject) {
        self.tokens = tokens
        self.source = source
        self.storage = storage
    }

    public var count: Int { tokens.count }

    /// A hash of the token ids (to check that ranks hold the same data).
    public var contentHash: UInt64 { hashContents(UnsafeRawBufferPointer(tokens)) }

    /// Loads or builds the token file for `url`. Rank 0 tokenizes (or reads its cache) and sends
    /// the ids to the first rank of every node; the ranks of a node share one copy (an MPI-3
    /// shared window). Only rank 0 needs the tokenizer and the files.
    public static func load(_ url: URL, tokenizer: GPT2Tokenizer?, tokenizerDirectory: URL, comm: Communicator, cacheDirectory: URL,
                            sharedFS: Bool = true) throws -> TokenDataset {
        var failure = ""
        var tokens: [UInt16] = []
        if comm.rank == 0 {
            do {
                guard let tokenizer else { throw TrainingError.data("a tokenizer is needed on rank 0 to read the data") }
                if tokenizer.vocabSize > 65536 { throw TrainingError.data("vocabulary of \(tokenizer.vocabSize) ids does not fit uint16 token files") }
                tokens = try loadOrBuild(url, tokenizer: tokenizer, fingerprint: tokenizerFingerprint(directory: tokenizerDirectory),
                                         cacheDirectory: cacheDirectory)
            } catch { failure = "\(error)" }
        }
        guard comm.size > 1 else {
            if !failure.isEmpty { throw TrainingError.data(failure) }
            return TokenDataset(tokens: tokens, source: url)
        }
        if let f = try comm.firstFailure(failure.isEmpty ? nil : failure) { throw TrainingError.data(f.message(on: comm.rank, doing: "read the data")) }
        let count = try comm.allreduce(comm.rank == 0 ? tokens.count : 0, op: .max)
        // One copy per node: rank 0 -> the nodes' first ranks -> their node's window.
        let node = try comm.splitShared()
        let shared = try NodeSharedBuffer(bytes: count * 2, node: node)
        let ids = shared.pointer.bindMemory(to: UInt16.self, capacity: max(count, 1))
        if comm.rank == 0 { tokens.withUnsafeBufferPointer { ids.update(from: $0.baseAddress!, count: count) } }
        if let leaders = try comm.split(color: node.rank == 0 ? 0 : nil) {
            try leaders.broadcast(UnsafeMutableBufferPointer(start: shared.pointer.bindMemory(to: UInt8.self, capacity: count * 2), count: count * 2), root: 0)
            _ = shared.pointer.bindMemory(to: UInt16.self, capacity: max(count, 1))
        }
        try node.barrier()
        return TokenDataset(tokens: UnsafeBufferPointer(start: ids, count: count), source: url, storage: shared)
    }

    /// The text of a file, or of every .txt file in a directory (sorted by name, joined by
    /// `<|endoftext|>`).
    public static func readText(_ url: URL) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else { throw TrainingError.data("\(url.path): no such file or directory") }
        func read(_ u: URL) throws -> String {
            guard let d = FileManager.default.contents(atPath: u.path) else { throw TrainingError.data("\(u.path): cannot read") }
            guard let s = String(data: d, encoding: .utf8) else { throw TrainingError.data("\(u.path): not valid UTF-8") }
            return s
        }
        guard isDir.boolValue else { return try read(url) }
        let files = try FileManager.default.contentsOfDirectory(at: url, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "txt" }.sorted { $0.lastPathComponent < $1.lastPathComponent }
        guard !files.isEmpty else { throw TrainingError.data("\(url.path): directory has no .txt files") }
        return try files.map(read).joined(separator: "<|endoftext|>")
    }

    static func cacheURL(for url: URL, textHash: UInt64, cacheDirectory: URL) -> URL {
        cacheDirectory.appendingPathComponent("\(url.deletingPathExtension().lastPathComponent)-\(String(textHash, radix: 16)).tokens")
    }

    /// Where token files are cached, given the process environment (the executable reads it):
    /// `$SQUEEZE_CACHE`, else `$XDG_CACHE_HOME/squeeze`, else `~/.cache/squeeze`.
    public static func cacheDirectory(environment env: [String: String]) -> URL {
        if let d = env["SQUEEZE_CACHE"] { return URL(fileURLWithPath: d) }
        if let x = env["XDG_CACHE_HOME"] { return URL(fileURLWithPath: x).appendingPathComponent("squeeze") }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/squeeze")
    }

    static let magic = Array("SQZTOK1\n".utf8)

    static func loadOrBuild(_ url: URL, tokenizer: GPT2Tokenizer, fingerprint tokHash: UInt64, cacheDirectory: URL) throws -> [UInt16] {
        let text = try readText(url)
        let textHash = fnv1a(Array(text.utf8))
        let cache = cacheURL(for: url, textHash: textHash, cacheDirectory: cacheDirectory)
        if let data = FileManager.default.contents(atPath: cache.path), data.count >= 32, Array(data.prefix(8)) == magic {
            let header = data.withUnsafeBytes { p in (0..<3).map { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 + 8 * $0, as: UInt64.self)) } }
            if header[0] == tokHash, header[1] == textHash, data.count == 32 + Int(header[2]) * 2 {
                return data.withUnsafeBytes { p in (0..<Int(header[2])).map { UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 32 + 2 * $0, as: UInt16.self)) } }
            }
        }
        Console.status("tokenizing \(url.lastPathComponent) (\(text.utf8.count / 1024) KiB) ...")
        let ids = tokenizer.encode(text)
        var data = Data(magic)
        for v in [tokHash, textHash, UInt64(ids.count)] { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        var packed = [UInt8](repeating: 0, count: ids.count * 2)
        for (i, id) in ids.enumerated() { packed[2 * i] = UInt8(id & 0xFF); packed[2 * i + 1] = UInt8(id >> 8) }
        data.append(contentsOf: packed)
        do {
            try FileManager.default.createDirectory(at: cache.deletingLastPathComponent(), withIntermediateDirectories: true)
            try writeAtomically(data, to: cache)
            Console.status("cached \(ids.count) tokens in \(cache.path)")
        } catch {
            Console.warning("could not write the token cache \(cache.path): \(error)")
        }
        return ids.map { UInt16($0) }
    }

    /// Training and validation streams: `valid` when given, else the last `validFraction` of
    /// `data` (see `load`).
    public static func trainAndValidation(data: URL, valid: URL?, validFraction: Double, tokenizer: GPT2Tokenizer?, tokenizerDirectory: URL,
                                          comm: Communicator, cacheDirectory: URL, sharedFS: Bool = true) throws -> (train: TokenDataset, valid: TokenDataset) {
        let all = try load(data, tokenizer: tokenizer, tokenizerDirectory: tokenizerDirectory, comm: comm, cacheDirectory: cacheDirectory, sharedFS: sharedFS)
        if let valid {
            return (all, try load(valid, tokenizer: tokenizer, tokenizerDirectory: tokenizerDirectory, comm: comm, cacheDirectory: cacheDirectory, sharedFS: sharedFS))
        }
        guard validFraction > 0 && validFraction < 0.5 else { throw TrainingError.config("the validation fraction must be in (0, 0.5), got \(validFraction)") }
        return all.split(validationFraction: validFraction)
    }

    /// Splits off the last `fraction` of the stream as validation data (views of the same ids).
    public func split(validationFraction fraction: Double) -> (train: TokenDataset, valid: TokenDataset) {
        let n = Int(Double(count) * (1 - fraction))
        return (TokenDataset(tokens: UnsafeBufferPointer(rebasing: tokens[..<n]), source: source, storage: storage),
                TokenDataset(tokens: UnsafeBufferPointer(rebasing: tokens[n...]), source: source, storage: storage))
    }
}

/// Hash of a directory's tokenizer files (vocab.json and merges.txt, else tokenizer.json), or of a
/// GGUF file's tokens, token types and merges: token caches are valid for this tokenizer only.
public func tokenizerFingerprint(directory: URL) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    if GGUFLayout.isGGUF(directory) {
        guard let f = try? GGUFFile(url: directory) else { return h }
        typealias K = GGUFLayout.Key
        for key in [K.tokens, K.tokenTypes, K.merges] {
            h = fnv1a(Array(key.utf8), seed: h)
            for v in f.metadata[key]?.array?.values ?? [] { h = fnv1a(Array("\(v)\n".utf8), seed: h) }
        }
        return h
    }
    for f in GPT2Tokenizer.files(in: directory) {
        let bytes = FileManager.default.contents(atPath: f.path).map { [UInt8]($0) } ?? []
        h = fnv1a(bytes, seed: h)
    }
    return h
}

/// 64-bit FNV-1a hash (cache keys; not cryptographic).
public func fnv1a(_ bytes: [UInt8], seed: UInt64 = 0xcbf2_9ce4_8422_2325) -> UInt64 {
    var h = seed
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

/// Deterministic batches of `T + 1`-token windows: batch `s` of a run with seed `seed` is the
/// same whatever the number of ranks; rank r takes sequences `[lo, hi)` of the global batch.
public struct BatchSampler: Sendable {
    public let data: TokenDataset
    public let T: Int
    public let seed: UInt64

    public init(data: TokenDataset, T: Int, seed: UInt64) throws {
        guard data.count > T + 1 else { throw TrainingError.data("\(data.source.lastPathComponent): \(data.count) tokens is too few for sequences of \(T)") }
        self.data = data
        self.T = T
        self.seed = seed
    }

    /// Start offsets of the `globalBatch` windows of step `step`.
    public func starts(step: Int, globalBatch: Int) -> [Int] {
        var rng = RandomGenerator(seed: seed &+ UInt64(step) &* 0x9E37_79B9_7F4A_7C15)
        let span = UInt64(data.count - T - 1)
        return (0..<globalBatch).map { _ in Int(rng.next() % span) }
    }

    /// Inputs and targets `[n, T]` for the windows starting at `starts`.
    public func batch(_ starts: [Int]) -> (ids: [Int32], targets: [Int32]) {
        var ids = [Int32](), tg = [Int32]()
        ids.reserveCapacity(starts.count * T); tg.reserveCapacity(starts.count * T)
        for s in starts {
            for t in 0..<T { ids.append(Int32(data.tokens[s + t])); tg.append(Int32(data.tokens[s + t + 1])) }
        }
        return (ids, tg)
    }
}

/// Keeps an array of ids at a stable address.
final class TokenBox {
    let storage: UnsafeMutableBufferPointer<UInt16>
    init(_ ids: [UInt16]) {
        storage = .allocate(capacity: max(ids.count, 1))
        _ = storage.initialize(from: ids)
        if ids.isEmpty { storage.baseAddress!.initialize(to: 0) }
    }
    deinit { storage.deallocate() }
}
