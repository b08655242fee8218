import Foundation

/// The weights of a model directory: `model.safetensors`, or Hugging Face's sharded layout
/// (`model.safetensors.index.json` naming, for every tensor, the shard file that holds it).
/// Headers are read and checked up front; tensor data is read on demand.
public struct WeightFiles {
    /// The file the weights are named by: model.safetensors or the index.
    public let url: URL
    public let files: [SafeTensorsFile]
    /// Every tensor of every file, by key.
    public let entries: [String: SafeTensorsFile.Entry]
    private let fileOf: [String: Int]

    /// One file.
    public init(file: SafeTensorsFile) {
        url = file.url
        files = [file]
        entries = file.entries
        fileOf = file.entries.mapValues { _ in 0 }
    }

    /// The weights of `directory`. Errors name the file (and the shard and tensor).
    public static func open(directory: URL) throws -> WeightFiles {
        let dir = directory.standardizedFileURL
        let single = dir.appendingPathComponent("model.safetensors"), index = dir.appendingPathComponent("model.safetensors.index.json")
        let fm = FileManager.default
        if fm.fileExists(atPath: single.path) { return WeightFiles(file: try SafeTensorsFile(url: single)) }
        if fm.fileExists(atPath: index.path) { return try sharded(index: index) }
        if fm.fileExists(atPath: dir.appendingPathComponent("pytorch_model.bin").path) {
            throw FileError.io(single.path, "missing; only safetensors weights are supported (convert pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))")
        }
        throw FileError.io(single.path, "missing (and no model.safetensors.index.json)")
    }

    /// Hugging Face's sharded layout: {"metadata": {...}, "weight_map": {tensor: shard file}}.
    static func sharded(index: URL) throws -> WeightFiles {
        let path = index.path
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError.io(path, "cannot read") }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let map = obj["weight_map"] as? [String: Any] else {
            throw FileError.format(path, "not a safetensors index (a JSON object with a 'weight_map')")
        }
        var shardNames: [String] = []
        var wanted: [String: String] = [:]
        for (tensor, value) in map {
            guard let shard = value as? String, !shard.contains("/"), shard.hasSuffix(".safetensors") else {
                throw FileError.format(path, "weight_map['\(tensor)'] must name a .safetensors file in the same directory")
            }
            wanted[tensor] = shard
            if !shardNames.contains(shard) { shardNames.append(shard) }
        }
        shardNames.sort()
        var files: [SafeTensorsFile] = [], entries: [String: SafeTensorsFile.Entry] = [:], fileOf: [String: Int] = [:]
        for (k, name) in shardNames.enumerated() {
            let f = try SafeTensorsFile(url: index.deletingLastPathComponent().appendingPathComponent(name))
            for (key, e) in f.entries {
                guard entries[key] == nil else { throw FileError.format(f.url.path, "tensor '\(key)' is also in \(files[fileOf[key]!].url.lastPathComponent)") }
                guard wanted[key] == name else {
                    throw FileError.format(path, "tensor '\(key)' is in \(name), but the index names \(wanted[key].map { "\($0)" } ?? "no shard") for it")
                }
                entries[key] = e
                fileOf[key] = k
            }
            files.append(f)
        }
        for (tensor, shard) in wanted where entries[tensor] == nil {
            throw FileError.format(path, "tensor '\(tensor)' is not in \(shard)")
        }
        return WeightFiles(url: index, files: files, entries: entries, fileOf: fileOf)
    }

    private init(url: URL, files: [SafeTensorsFile], entries: [String: SafeTensorsFile.Entry], fileOf: [String: Int]) {
        self.url = url
        self.files = files
        self.entries = entries
        self.fileOf = fileOf
    }

    private func file(_ key: String) throws -> SafeTensorsFile {
        guard let k = fileOf[key] else { throw FileError.format(url.path, "no tensor named '\(key)'") }
        return files[k]
    }

    /// Reads a float tensor into `dst` as Float32.
    public func readFloats(_ key: String, into dst: UnsafeMutablePointer<Float>) throws { try file(key).readFloats(key, into: dst) }
    /// A float tensor as Float32 values.
    public func floats(_ key: String) throws -> [Float] { try file(key).floats(key) }
    /// A tensor's raw bytes.
    public func bytes(_ key: String) throws -> [UInt8] { try file(key).bytes(key) }
}
