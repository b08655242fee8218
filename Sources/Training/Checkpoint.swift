import Foundation
import Model
import Tensor

/// A training checkpoint directory: `model/` (a model directory, compressed layers included),
/// `optimizer.safetensors` (AdamW moments) and `state.json` (step, settings, loss history and
/// the caller's own state such as the recipe stage). Written by rank 0 into a temporary
/// directory that replaces the old checkpoint by rename, so a crash never leaves half of one.
public struct Checkpoint {
    public struct State: Codable, Equatable {
        /// Next step to run (steps completed so far).
        public var step: Int
        /// AdamW's step counter (bias correction).
        public var optimizerStep: Int
        public var settings: DistillSettings
        public var history: [StepLog]
        /// Free-form state of the caller (e.g. recipe stage index, pruning schedule position).
        public var extra: [String: JSONValue]

        public init(step: Int, optimizerStep: Int, settings: DistillSettings, history: [StepLog], extra: [String: JSONValue]) {
            self.step = step
            self.optimizerStep = optimizerStep
            self.settings = settings
            self.history = history
            self.extra = extra
        }
    }

    public let directory: URL

    public init(directory: URL) { self.directory = directory }

    public var modelDirectory: URL { directory.appendingPathComponent("model") }
    public var exists: Bool { FileManager.default.fileExists(atPath: directory.appendingPathComponent("state.json").path) }

    /// Writes model, optimizer and state (call on rank 0 only).
    public func write(model: GPT2, optimizer: AdamW, state: State) throws {
        let fm = FileManager.default
        let parent = directory.deletingLastPathComponent()
        try fm.createDirectory(at: parent, withIntermediateDirectories: true)
        let tmp = parent.appendingPathComponent(".\(directory.lastPathComponent).tmp")
        let old = parent.appendingPathComponent(".\(directory.lastPathComponent).old")
        try? fm.removeItem(at: tmp)
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        try model.save(to: tmp.appendingPathComponent("model"), dtype: .f32)
        var w = SafeTensorsWriter()
        w.add("m", shape: [optimizer.m.count], values: optimizer.m)
        w.add("v", shape: [optimizer.v.count], values: optimizer.v)
        try w.write(to: tmp.appendingPathComponent("optimizer.safetensors"))
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try enc.encode(state), to: tmp.appendingPathComponent("state.json"))
        try? fm.removeItem(at: old)
        if fm.fileExists(atPath: directory.path) { try fm.moveItem(at: directory, to: old) }
        try fm.moveItem(at: tmp, to: directory)
        try? fm.removeItem(at: old)
    }

    /// Reads the state.
    public func readState() throws -> State {
        let url = directory.appendingPathComponent("state.json")
        guard let data = FileManager.default.contents(atPath: url.path) else { throw TrainingError.checkpoint("\(url.path): missing") }
        do { return try JSONDecoder().decode(State.self, from: data) } catch {
            throw TrainingError.checkpoint("\(url.path): unreadable (\(error))")
        }
    }

    /// Restores the optimizer's moments and step.
    public func restore(optimizer: AdamW, state: State) throws {
        let f = try SafeTensorsFile(url: directory.appendingPathComponent("optimizer.safetensors"))
        try optimizer.restore(step: state.optimizerStep, m: f.floats("m"), v: f.floats("v"))
    }
}

/// One logged optimizer step.
public struct StepLog: Codable, Equatable, Sendable {
    public var step: Int
    /// Total loss (KD term + CE term), mean per token.
    public var loss: Double
    /// α T² KL part, mean per token.
    public var kd: Double
    /// Cross-entropy of the student, mean per token (unweighted).
    public var ce: Double
    public var lr: Double
    public var gradNorm: Double
    public var tokensPerSecond: Double
    /// Validation perplexity, when evaluated at this step.
    public var validPerplexity: Double?
}

/// Writes an SVG of the training loss (and validation perplexity's log, when measured).
public func writeLossCurve(_ history: [StepLog], to url: URL, title: String) throws {
    var series = [SVGPlot.Series(name: "train loss", points: history.map { (Double($0.step), $0.loss) }, color: SVGPlot.palette[0])]
    let val = history.compactMap { h in h.validPerplexity.map { (Double(h.step), log($0)) } }
    if !val.isEmpty { series.append(.init(name: "valid log-perplexity", points: val, color: SVGPlot.palette[1])) }
    try SVGPlot(title: title, xLabel: "step", yLabel: "nats per token", series: series).write(to: url)
}
