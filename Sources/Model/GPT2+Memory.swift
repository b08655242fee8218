import Foundation

/// Bytes the model's buffers take, from the same layout tables that allocate them, for memory
/// estimates made before anything big is allocated.
extension GPT2 {
    /// The parameter floats (with alignment padding) of the model in `directory`, from config.json
    /// and the weights headers only, and its config.
    public static func parameterFloats(directory: URL) throws -> (config: GPT2Config, floats: Int) {
        let dir = directory.standardizedFileURL
        let configURL = dir.appendingPathComponent("config.json")
        let config = try GPT2Config(data: try readConfig(directory: dir), url: configURL)
        let layout = try CompressionLayout(config: config, path: configURL.path)
        let blocks = (0..<config.nLayer).map { Block(index: $0, config: config) }
        for b in blocks { for lin in b.linears { if let c = layout.layers[lin.name] { lin.components = c } } }
        return (config, ParameterSet.floats(for: GPT2.layout(config: config, embedding: layout.embedding, blocks: blocks)))
    }

    /// Bytes of the training forward's activations for a micro-batch of [B, T].
    public static func trainingActivationBytes(config: GPT2Config, B: Int, T: Int, recompute: Bool) -> Int {
        4 * TrainingActivations.floats(ActivationShape(B: B, T: T, config: config), layers: config.nLayer, recompute: recompute)
    }

    /// Bytes of the inference forward's workspace for `rows` rows.
    public static func inferenceBytes(config: GPT2Config, rows: Int) -> Int {
        4 * InferenceWorkspace.floats(rows: rows, config: config)
    }

    /// Bytes of the fused head's chunk buffers: student logits, plus teacher logits and their
    /// gradient when distilling (`buffers` 3), student logits only when evaluating (1).
    public static func headBytes(config: GPT2Config, rows: Int, buffers: Int) -> Int {
        4 * buffers * min(HeadScratch.rows(vocab: config.vocabSize), max(rows, 1)) * config.vocabSize
    }
}
