import Distributed
import Foundation
import Model
import MPI
import Tensor

/// Calibration, the piece every data-aware method shares (Wanda, SparseGPT, GPTQ, whitened low rank
/// and Kronecker): the calibration windows run block by block through the model being compressed,
/// as in the papers — block l's inputs come from blocks < l as already compressed. For each block holding a target, the Gram
/// matrices XᵀX of the targets' inputs are accumulated (Double) over this rank's windows and
/// summed over ranks; the method then changes the block's layers (its per-layer solves spread
/// over ranks by the caller), and the windows move on through the changed block.
extension Compressor {
    /// Calibration sequences for this rank: `samples` windows of `seq` tokens (seeded), split over ranks.
    func calibrationBatches(at: String) throws -> [[Int32]] {
        let seq = min(calibration.seq, model.config.nPositions)
        guard calibrationTokens.count > seq + 1 else {
            throw CompressionError.recipe("\(at): calibrated methods (Wanda, SparseGPT, GPTQ, whitened low rank and Kronecker) need calibration text (--data) of more than \(seq) tokens")
        }
        var rng = RandomGenerator(seed: seed &+ 0x5EED)
        let starts = (0..<calibration.samples).map { _ in Int(rng.next() % UInt64(calibrationTokens.count - seq)) }
        return starts[share(starts.count, rank: comm.rank, size: comm.size)].map { s in (0..<seq).map { Int32(calibrationTokens[s + $0]) } }
    }

    /// Runs the calibration for the block linears `names`: `solve(block, layers, grams)` receives
    /// each block's targeted layers and their XᵀX ([in, in], symmetric, equal on every rank) and
    /// changes them before the windows move on.
    func calibrate(_ names: [String], at: String, solve: (_ block: Int, _ layers: [Linear], _ grams: [String: [Double]]) throws -> Void) throws {
        let batches = try calibrationBatches(at: at)
        let seq = min(calibration.seq, model.config.nPositions), C = model.config.nEmbd
        let wanted = Set(names)
        let model = self.model
        var workspace = InferenceWorkspace(rows: seq, config: model.config, scratchFloats: model.layerScratchFloats(rows: seq))
        // Residual streams [windows, seq, C] and a scratch copy for the collecting pass.
        var streams = [Float](repeating: 0, count: batches.count * seq * C), scratch = [Float](repeating: 0, count: seq * C)
        streams.withUnsafeMutableBufferPointer { x in
            for (w, ids) in batches.enumerated() { model.embed(ids: ids, B: 1, T: seq, into: x.baseAddress! + w * seq * C, workspace: workspace) }
        }
        for l in 0..<model.config.nLayer {
            let layers = model.blocks[l].linears.filter { wanted.contains($0.name) }
            if !layers.isEmpty {
                var grams: [String: [Double]] = [:]
                for lin in layers { grams[lin.name] = [Double](repeating: 0, count: lin.inFeatures * lin.inFeatures) }
                for w in batches.indices {
                    streams.withUnsafeBufferPointer { x in scratch.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: x.baseAddress! + w * seq * C, count: seq * C) } }
                    try scratch.withUnsafeMutableBufferPointer { x in
                        try model.inferBlock(l, x: x.baseAddress!, B: 1, T: seq, workspace: workspace) { inputs in
                            for (lin, input) in inputs.pairs(model.blocks[l]) where wanted.contains(lin.name) {
                                grams[lin.name]!.withUnsafeMutableBufferPointer { accumulateGram(input, rows: seq, cols: lin.inFeatures, into: $0.baseAddress!) }
                            }
                        }
                    }
                }
                for lin in layers {
                    let n = lin.inFeatures
                    grams[lin.name]!.withUnsafeMutableBufferPointer { h in
                        for i in 0..<n { for j in 0..<i { h[i * n + j] = h[j * n + i] } }   // syrk filled the upper triangle
                    }
                    try comm.allreduce(&grams[lin.name]!)
                }
                try solve(l, layers, grams)
                model.releaseActivations()   // the forms may have changed (a factorized layer needs scratch)
                workspace = InferenceWorkspace(rows: seq, config: model.config, scratchFloats: model.layerScratchFloats(rows: seq))
            }
            try streams.withUnsafeMutableBufferPointer { x in
                for w in batches.indices { try model.inferBlock(l, x: x.baseAddress! + w * seq * C, B: 1, T: seq, workspace: workspace) }
            }
        }
    }
}
