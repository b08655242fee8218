import Model
import MPI

/// Sums gradients over ranks in large fused buckets of the flat gradient buffer.
///
/// Buckets follow the backward order: the last transformer blocks first (their gradients are
/// final first), embeddings and the final LayerNorm last. With `overlap`, a bucket's
/// `MPI_Iallreduce` starts as soon as backward has finished its layers and is polled while the
/// remaining layers run; without it, every bucket is reduced after backward.
public final class GradientSync {
    public let comm: Communicator
    public let overlap: Bool
    /// Flat ranges, in the order they are reduced.
    public private(set) var buckets: [Range<Int>] = []
    /// For each bucket, the lowest block index it contains (it is ready once that block is done).
    private var readyAfterLayer: [Int] = []
    private var pending: [Request] = []
    private var started = 0
    private let params: ParameterSet

    /// Plans buckets of at least `bucketBytes` from the model's parameter layout.
    public init(model: GPT2, comm: Communicator, bucketBytes: Int = 32 << 20, overlap: Bool = true) throws {
        self.comm = comm
        self.overlap = overlap
        self.params = model.params
        let L = model.config.nLayer
        var blockRange: [Range<Int>] = []
        for l in 0..<L {
            let slots = model.params.slots.filter { $0.name.hasPrefix("h.\(l).") }
            guard let lo = slots.map(\.offset).min(), let hi = slots.map({ $0.offset + $0.count }).max() else {
                throw DistributedError.plan("block h.\(l) has no parameters")
            }
            blockRange.append(lo..<hi)
        }
        let floats = max(1, bucketBytes / 4)
        var l = L - 1
        while l >= 0 {
            var lo = blockRange[l].lowerBound
            let hi = blockRange[l].upperBound
            var first = l
            while first > 0 && hi - lo < floats { first -= 1; lo = blockRange[first].lowerBound }
            buckets.append(lo..<hi)
            readyAfterLayer.append(first)
            l = first - 1
        }
        // Everything outside the blocks (embeddings, positions, final LayerNorm): after backward.
        let blocksLo = blockRange.first?.lowerBound ?? params.count, blocksHi = blockRange.last?.upperBound ?? params.count
        if blocksLo > 0 { buckets.append(0..<blocksLo); readyAfterLayer.append(-1) }
        if blocksHi < params.count { buckets.append(blocksHi..<params.count); readyAfterLayer.append(-1) }
        // The layout must agree on every rank, or the fused reductions would mix tensors.
        let sig = buckets.flatMap { [$0.lowerBound, $0.upperBound] }
        let all = try comm.allgatherv(sig)
        for (r, s) in all.enumerated() where s != sig {
            throw DistributedError.plan("rank \(r) has a different parameter layout than rank \(comm.rank)")
        }
    }

    /// Call before a backward pass whose gradients are the step's last contribution.
    public func begin() {
        pending = []
        started = 0
    }

    /// Backward has finished block `layer` (blocks finish from last to first).
    public func layerDone(_ layer: Int) throws {
        guard overlap, comm.size > 1 else { return }
        while started < buckets.count && readyAfterLayer[started] >= 0 && readyAfterLayer[started] >= layer {
            try startBucket(started)
            started += 1
        }
        for r in pending { _ = try r.test() }
    }

    /// Reduces whatever has not been started and waits for everything.
    public func finish() throws {
        guard comm.size > 1 else { return }
        if overlap {
            while started < buckets.count { try startBucket(started); started += 1 }
            for r in pending { try r.wait() }
        } else {
            for b in buckets {
                try comm.allreduceUnchecked(UnsafeMutableBufferPointer(rebasing: params.grads[b]))
            }
        }
        pending = []
    }

    private func startBucket(_ i: Int) throws {
        pending.append(try comm.iallreduce(UnsafeMutableBufferPointer(rebasing: params.grads[buckets[i]])))
    }
}

extension GradientSync {
    /// True when the model's parameter buffer was rebuilt (a layer changed form) since planning.
    public func bucketsStale(for model: GPT2) -> Bool { model.params !== params }
}
