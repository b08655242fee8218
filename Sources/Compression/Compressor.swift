import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// One row of `squeeze compress`'s table: what happened to a layer.
public struct LayerReport: Codable, Sendable, Equatable {
    public var stage: Int
    public var layer: String
    public var method: String
    /// Stored parameters (non-zeros for sparse layers) before and after.
    public var paramsBefore: Int
    public var paramsAfter: Int
    /// Bytes the layer's weight takes as saved (values, masks, codes and scales) before and after.
    public var bytesBefore: Int
    public var bytesAfter: Int
    /// ‖W − W'‖_F / ‖W‖_F of the dense weights.
    public var relativeError: Double

    public init(stage: Int, layer: String, method: String, paramsBefore: Int, paramsAfter: Int, bytesBefore: Int, bytesAfter: Int,
                relativeError: Double) {
        (self.stage, self.layer, self.method, self.paramsBefore, self.paramsAfter) = (stage, layer, method, paramsBefore, paramsAfter)
        (self.bytesBefore, self.bytesAfter, self.relativeError) = (bytesBefore, bytesAfter, relativeError)
    }

    /// Reports of older checkpoints have no bytes: 0.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        (stage, layer, method) = (try c.decode(Int.self, forKey: .stage), try c.decode(String.self, forKey: .layer), try c.decode(String.self, forKey: .method))
        (paramsBefore, paramsAfter) = (try c.decode(Int.self, forKey: .paramsBefore), try c.decode(Int.self, forKey: .paramsAfter))
        bytesBefore = try c.decodeIfPresent(Int.self, forKey: .bytesBefore) ?? 0
        bytesAfter = try c.decodeIfPresent(Int.self, forKey: .bytesAfter) ?? 0
        relativeError = try c.decode(Double.self, forKey: .relativeError)
    }
}

/// What a report compares: a layer's stored parameters, bytes and dense weight.
public struct LayerState {
    public let params: Int, bytes: Int, weight: Tensor
}

/// Applies one-shot compression methods to a model's layers. Every rank holds the same model;
/// per-layer jobs are spread over ranks by cost and their results broadcast (`distributedCompute`);
/// tall matrices (the token embedding) take a TSQR over all ranks, ScaLAPACK only when
/// `scalapackMinElements` asks for it (see `svdPath`).
public final class Compressor {
    public let model: GPT2
    public let comm: Communicator
    /// Token stream for calibration (Wanda, SparseGPT).
    public var calibrationTokens: [UInt16] = []
    public var calibration = Recipe.Calibration()
    public var seed: UInt64 = 0
    /// Matrices with at least this many elements use ScaLAPACK when there are several ranks (nil:
    /// the measured planner decides; see `svdPath`).
    public var scalapackMinElements: Int?

    public init(model: GPT2, comm: Communicator) {
        self.model = model
        self.comm = comm
    }

    /// Every compressible name: "wte" and the block linears.
    public var layerNames: [String] { model.weightedLayers.map(\.name) }

    /// Names matched by the glob patterns, in model order; a pattern matching nothing is an error.
    public func resolve(_ patterns: [String], at: String) throws -> [String] {
        try Self.resolve(patterns, in: layerNames, at: at)
    }

    /// The names of `names` matched by the glob patterns (a trailing ".weight" ignored), in the
    /// order of `names`; a pattern matching nothing is an error naming it (also used by
    /// `FactorizationPlan`, which has layer names but no model).
    static func resolve(_ patterns: [String], in names: [String], at: String) throws -> [String] {
        var chosen = Set<String>()
        for raw in patterns {
            let p = raw.hasSuffix(".weight") ? String(raw.dropLast(7)) : raw
            let hits = names.filter { globMatch(p, $0) }
            guard !hits.isEmpty else {
                let examples = (["wte"] + BlockLinear.allCases.map { $0.name(block: 0) }).joined(separator: ", ")
                throw CompressionError.recipe("\(at): target '\(raw)' matches no layer (names look like \(examples); '*' matches anything)")
            }
            chosen.formUnion(hits)
        }
        return names.filter { chosen.contains($0) }
    }

    /// The layer called `name` (resolved names always exist).
    func layer(_ name: String) -> WeightedLayer { model.layer(name)! }

    /// The dense weight of a layer ([in, out] for linears, [V, C] for wte).
    public func denseWeight(_ name: String) -> Tensor { layer(name).denseWeight(params: model.params) }

    /// Stored non-zero parameters of a layer's weight (bias excluded).
    public func storedParameters(_ name: String) -> Int { layer(name).counts.nonZero }

    /// Bytes a layer's weight takes as saved in the model's weight type (values, masks, codes, scales).
    public func storedBytes(_ name: String) -> Int {
        layer(name).components.reduce(0) { $0 + $1.storedBytes(valueBytes: model.storageDType.size) }
    }

    /// A layer's parameters, bytes and dense weight now (before a method changes it).
    public func state(_ name: String) -> LayerState { LayerState(params: storedParameters(name), bytes: storedBytes(name), weight: denseWeight(name)) }

    /// The report of what `method` made of layer `name` since `before`.
    func report(stage: Int, _ name: String, _ method: String, before: LayerState) -> LayerReport {
        LayerReport(stage: stage, layer: name, method: method, paramsBefore: before.params, paramsAfter: storedParameters(name),
                    bytesBefore: before.bytes, bytesAfter: storedBytes(name), relativeError: relativeError(before.weight, denseWeight(name)))
    }

    /// Current rank of a layer (min(in, out) unless low rank), for progressive schedules.
    public func currentRank(_ name: String) -> Int {
        let l = layer(name)
        return (l.single as? RankedForm)?.rank ?? min(l.inFeatures, l.outFeatures)
    }

    func relativeError(_ before: Tensor, _ after: Tensor) -> Double {
        let d = Double((before - after).frobeniusNorm), n = Double(before.frobeniusNorm)
        return n > 0 ? d / n : 0
    }

    /// A one-shot stage's compression: its method, then its quantization (SparseGPT and GPTQ in
    /// the same stage: one joint sweep). The reports of the layers it changed.
    @discardableResult
    public func compress(_ st: Recipe.Stage) throws -> [LayerReport] {
        var joint: Recipe.PruneSpec?
        var reports: [LayerReport] = []
        switch st.method {
        case .prune(let p) where p.method == .sparsegpt && st.quantize?.method == .gptq: joint = p
        case .prune(let p): reports += try prune(p, stage: st.index)
        case .kronecker(let k): reports += try kronecker(k, stage: st.index)
        case .lowrank(let l): reports += try lowrank(l, stage: st.index)
        case .distillOnly: break
        }
        if let q = st.quantize { reports += try quantize(q, stage: st.index, joint: joint) }
        return reports
    }
}
