import Foundation
import Model

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
    /// Bytes this rank moved through collectives during the step (`Communicator.trafficBytes`).
    public var bytesCommunicated: Int?
    /// Validation perplexity, when evaluated at this step.
    public var validPerplexity: Double?
    /// The intermediate-layer terms (means, unweighted), when distilled.
    public var hidden: Double?
    public var attention: Double?
}

/// Writes an SVG of the training loss (and validation perplexity's log, when measured).
public func writeLossCurve(_ history: [StepLog], to url: URL, title: String) throws {
    var series = [SVGPlot.Series(name: "train loss", points: history.map { (Double($0.step), $0.loss) }, color: SVGPlot.palette[0])]
    let val = history.compactMap { h in h.validPerplexity.map { (Double(h.step), log($0)) } }
    if !val.isEmpty { series.append(.init(name: "valid log-perplexity", points: val, color: SVGPlot.palette[1])) }
    try SVGPlot(title: title, xLabel: "step", yLabel: "nats per token", series: series).write(to: url)
}
