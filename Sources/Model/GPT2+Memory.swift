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
