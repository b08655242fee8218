import Foundation
import Model
import Tensor

/// Spectral statistics of a model's weight matrices (`squeeze analyze`).
///
/// Stable rank `srank(W) = ‖W‖_F² / ‖W‖_2²` (the seed report writes the ratio without squares;
/// both are given); effective rank at energy e = the smallest r with Σ_{i≤r} σ_i² ≥ e Σ σ_i²;
/// the bound proxy `Π_i ‖W_i‖_2² · Σ_i srank(W_i)` (Arora et al. 2018) over the block linears.
public struct LayerStats: Codable, Sendable, Equatable {
    public var name: String
    public var form: String
    public var shape: [Int]
    public var params: Int
    public var nonzero: Int
    /// Bytes the weight takes as saved (values, masks, codes, scales, factors).
    public var bytes: Int
    public var fro: Double
    public var spectral: Double
    public var stableRank: Double
    public var stableRankUnsquared: Double
    public var effectiveRank90: Int
    public var effectiveRank99: Int

    enum CodingKeys: String, CodingKey {
        case name, form, shape, params, nonzero, bytes, fro, spectral
        case stableRank = "stable_rank", stableRankUnsquared = "stable_rank_unsquared"
        case effectiveRank90 = "effective_rank_90", effectiveRank99 = "effective_rank_99"
    }

    /// Statistics of one dense matrix; `stored` is the parameter count of its compressed form,
    /// `bytes` what it takes as saved.
    public static func of(_ w: Tensor, name: String, form: String, stored: Int, bytes: Int) throws -> LayerStats {
        let sigma = try w.singularValuesDouble()
        var fro2 = 0.0
        var nz = 0
        for x in w.data { fro2 += Double(x) * Double(x); if x != 0 { nz += 1 } }
        let spec = sigma.first ?? 0
        let energy = sigma.reduce(0) { $0 + $1 * $1 }
        func effective(_ e: Double) -> Int {
            var acc = 0.0
            for (i, s) in sigma.enumerated() { acc += s * s; if acc >= e * energy { return i + 1 } }
            return sigma.count
        }
        let sr = spec > 0 ? fro2 / (spec * spec) : 0
        return LayerStats(name: name, form: form, shape: w.shape, params: stored, nonzero: nz, bytes: bytes, fro: fro2.squareRoot(), spectral: spec,
                          stableRank: sr, stableRankUnsquared: sr.squareRoot(), effectiveRank90: effective(0.9), effectiveRank99: effective(0.99))
    }
}

/// A whole model's analysis.
public struct ModelAnalysis: Codable, Sendable {
    public var layers: [LayerStats]
    public var totalParams: Int
    public var totalNonzero: Int
    /// The whole model's stored size (every tensor) and bits per weight.
    public var size: StoredSize
    /// Σ srank over the block linears.
    public var sumStableRank: Double
    /// Π ‖W_i‖_2² · Σ srank(W_i) over the block linears, and its log10.
    public var boundProxy: Double
    public var log10BoundProxy: Double

    enum CodingKeys: String, CodingKey {
        case layers, totalParams = "total_params", totalNonzero = "total_nonzero", size, sumStableRank = "sum_stable_rank"
        case boundProxy = "bound_proxy", log10BoundProxy = "log10_bound_proxy"
    }

    /// Analyses every 2-D weight: wte, wpe and the block linears (their dense equivalents).
    public static func of(_ model: GPT2) throws -> ModelAnalysis {
        let p = model.params, v = model.storageDType.size
        func bytes(_ l: WeightedLayer) -> Int { l.components.reduce(0) { $0 + $1.storedBytes(valueBytes: v) } }
        var layers: [LayerStats] = []
        layers.append(try .of(model.embedding.denseWeight(params: p), name: "wte.weight", form: model.embedding.summary,
                              stored: model.embedding.counts.stored, bytes: bytes(model.embedding)))
        layers.append(try .of(p.tensor("wpe.weight"), name: "wpe.weight", form: "dense", stored: p.slot("wpe.weight").count,
                              bytes: v * p.slot("wpe.weight").count))
        for lin in model.linears {
            layers.append(try .of(lin.denseWeight(params: p), name: lin.name + ".weight", form: lin.summary, stored: lin.counts.stored, bytes: bytes(lin)))
        }
        let blockLayers = layers.filter { $0.name.hasPrefix("h.") }
        let sumSR = blockLayers.reduce(0) { $0 + $1.stableRank }
        let log10Prod = blockLayers.reduce(0.0) { $0 + 2 * log10(max($1.spectral, 1e-300)) }
        let log10Bound = log10Prod + log10(max(sumSR, 1e-300))
        return ModelAnalysis(layers: layers, totalParams: layers.reduce(0) { $0 + $1.params },
                             totalNonzero: layers.reduce(0) { $0 + $1.nonzero }, size: model.storedSize(), sumStableRank: sumSR,
                             boundProxy: pow(10, log10Bound), log10BoundProxy: log10Bound)
    }

    /// SVG of stable rank per block linear, optionally against another analysis (before vs after).
    public func plot(compare other: ModelAnalysis?, title: String, labels: (String, String) = ("before", "after")) -> SVGPlot {
        let mine = layers.filter { $0.name.hasPrefix("h.") }
        var series: [SVGPlot.Series] = []
        if let other {
            let theirs = other.layers.filter { $0.name.hasPrefix("h.") }
            series.append(.init(name: "\(labels.0): stable rank", points: theirs.enumerated().map { (Double($0.offset), $0.element.stableRank) }, color: SVGPlot.palette[0]))
            series.append(.init(name: "\(labels.1): stable rank", points: mine.enumerated().map { (Double($0.offset), $0.element.stableRank) }, color: SVGPlot.palette[1]))
        } else {
            series.append(.init(name: "stable rank ‖W‖F²/‖W‖2²", points: mine.enumerated().map { (Double($0.offset), $0.element.stableRank) }, color: SVGPlot.palette[0]))
        }
        return SVGPlot(title: title, xLabel: "layer", yLabel: "stable rank", series: series,
                       xTickLabels: mine.map { $0.name.replacingOccurrences(of: ".weight", with: "") })
    }
}
