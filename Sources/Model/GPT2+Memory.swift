import Foundation

/// The forms of a model directory, for memory estimates made before anything big is allocated.
extension GPT2 {
    /// The layer forms of the model in `directory`, from config.json alone (its compression
    /// section); `parameterFloats`, `trainingActivationBytes` and friends size from them.
    public static func forms(directory: URL) throws -> GPT2Forms {
        let dir = directory.standardizedFileURL
        let configURL = dir.appendingPathComponent("config.json")
        let config = try GPT2Config(data: try readConfig(directory: dir), url: configURL)
        return try CompressionLayout(config: config, path: configURL.path).forms
    }
}

/// A model's real size: the bytes its weights take as saved (values, masks, codes, scales, factors)
/// and bits per weight of the dense model it stands for, next to the parameter counts.
public struct StoredSize: Codable, Sendable, Equatable {
    /// Bytes of every tensor (embeddings, block linears, biases, LayerNorms) and of the block linears alone.
    public var bytes: Int, blockLinearBytes: Int
    /// Weights of the dense model (all parameters; the block linears' [in, out] alone).
    public var denseWeights: Int, denseBlockLinearWeights: Int
    public var bitsPerWeight: Double { 8 * Double(bytes) / Double(max(denseWeights, 1)) }
    public var blockLinearBitsPerWeight: Double { 8 * Double(blockLinearBytes) / Double(max(denseBlockLinearWeights, 1)) }
}

extension GPT2 {
    /// The stored size with `valueBytes` per float (default: the model's weight type).
    public func storedSize(valueBytes: Int? = nil) -> StoredSize {
        let v = valueBytes ?? storageDType.size
        let owned = Set(weightedLayers.flatMap { $0.components.flatMap { $0.parameters.map(\.name) } })
        let others = params.slots.filter { !owned.contains($0.name) }.reduce(0) { $0 + v * $1.count }
        let layerBytes = { (l: WeightedLayer) in l.components.reduce(0) { $0 + $1.storedBytes(valueBytes: v) } }
        let linears = self.linears.reduce(0) { $0 + layerBytes($1) }
        let denseLinears = self.linears.reduce(0) { $0 + $1.inFeatures * $1.outFeatures }
        let denseAll = denseLinears + config.vocabSize * config.nEmbd + params.slots.filter { !owned.contains($0.name) }.reduce(0) { $0 + $1.count }
        return StoredSize(bytes: linears + layerBytes(embedding) + others, blockLinearBytes: linears, denseWeights: denseAll,
                          denseBlockLinearWeights: denseLinears)
    }
}
