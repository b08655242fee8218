import Model
import MPI
import Tensor

/// Sums gradients over ranks in large fused buckets of the flat gradient buffer, and (with
/// `sharded`, ZeRO stage 1) splits the optimizer's work: each bucket is cut into one part per
/// rank; gradients are reduce-scattered so each rank holds the summed gradient of its parts, it
/// runs AdamW there only (moments for its parts only), and the parameters are all-gathered. The
/// bytes on the wire are those of an all-reduce (reduce-scatter + all-gather), the optimizer
/// memory is divided by the ranks, and the result equals the all-reduce's up to summation order.
///
/// Buckets follow the backward order: the last transformer blocks first (their gradients are
/// final first), embeddings and the final LayerNorm last. With `overlap`, a bucket's reduction
/// starts as soon as backward has finished its blocks and is polled while the rest runs.
public final class GradientSync {
    public let comm: Communicator
    public let overlap: Bool
    /// ZeRO-1: reduce-scatter + sharded optimizer + all-gather (else all-reduce, full optimizer).
    public let sharded: Bool
    /// Flat ranges, in the order they are reduced.
    public private(set) var buckets: [Range<Int>] = []
    /// For each bucket, the lowest block index it contains (it is ready once that block is done).
    private var readyAfterLayer: [Int] = []
    private var pending: [Request] = []
    private var started = 0
    private let params: ParameterSet
    /// This rank's receive buffer for its parts of the reduce-scatter (sharded only).
    private var received: UnsafeMutableBufferPointer<Float>
    private var receivedOffset: [Int] = []

    /// Plans buckets of at least `bucketBytes` from the model's parameter layout.
    public init(model: GPT2, comm: Communicator, bucketBytes: Int = 32 << 20, overlap: Bool = true, sharded: Bool = false) throws {
        self.comm = comm
        self.overlap = overlap
        self.sharded = sharded && comm.size > 1
        self.params = model.params
        let L = model.config.nLayer
        var blockRange: [Range<Int>] = []
        for l in 0..<L {
            let prefix = model.blocks[l].prefix + "."
            let slots = model.params.slots.filter { $0.name.hasPrefix(prefix) }
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
        var total = 0
        for b in buckets {
            receivedOffset.append(total)
            // This rank's part of the bucket (see `part`).
            if sharded && comm.size > 1 { total += share(b.count, rank: comm.rank, size: comm.size).count }
        }
        received = .allocate(capacity: max(total, 1))
        received.initialize(repeating: 0)
    }

    deinit { received.deallocate() }

    /// Rank r's part of bucket b (the whole bucket without sharding).
    public func part(_ b: Int, _ r: Int) -> Range<Int> {
        let bucket = buckets[b]
        guard sharded else { return bucket }
        let mine = share(bucket.count, rank: r, size: comm.size)
        return (bucket.lowerBound + mine.lowerBound)..<(bucket.lowerBound + mine.upperBound)
    }

    /// The flat ranges whose optimizer step this rank runs, in flat order (everything without sharding).
    public var ownedRanges: [Range<Int>] {
        guard sharded else { return [0..<params.count] }
        return buckets.indices.map { part($0, comm.rank) }.filter { !$0.isEmpty }.sorted { $0.lowerBound < $1.lowerBound }
    }

    /// Bytes each rank sends and receives per step for the gradients (and parameters): the same
    /// for an all-reduce and for reduce-scatter + all-gather, 2 (P − 1)/P of the buffer each way
    /// in a ring.
    public var bytesPerStep: Int { comm.size > 1 ? 2 * (comm.size - 1) * params.count * 4 / comm.size : 0 }

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

    /// Reduces whatever has not been started and waits for everything. Afterwards the gradients
    /// of `ownedRanges` are summed over ranks (with sharding, the rest is this rank's own).
    public func finish() throws {
        guard comm.size > 1 else { return }
        if overlap {
            while started < buckets.count { try startBucket(started); started += 1 }
            for r in pending { try r.wait() }
        } else if sharded {
            for b in buckets.indices { try startBucket(b).wait() }
        } else {
            for b in buckets {
                try comm.allreduceUnchecked(UnsafeMutableBufferPointer(rebasing: params.grads[b]))
            }
        }
        pending = []
        if sharded {
            // This rank's summed parts back into place in the gradient buffer.
            for b in buckets.indices {
                let p = part(b, comm.rank)
                (params.grads.baseAddress! + p.lowerBound).update(from: received.baseAddress! + receivedOffset[b], count: p.count)
            }
        }
    }

    @discardableResult
    private func startBucket(_ b: Int) throws -> Request {
        let bucket = buckets[b]
        let r: Request
        if sharded {
            let counts = (0..<comm.size).map { part(b, $0).count }
            r = try comm.ireduceScatter(send: params.grads.baseAddress! + bucket.lowerBound, recv: received.baseAddress! + receivedOffset[b],
                                        counts: counts)
        } else {
            r = try comm.iallreduce(UnsafeMutableBufferPointer(rebasing: params.grads[bucket]))
        }
        pending.append(r)
        return r
    }

    /// After the optimizer updated this rank's parts: every rank gets every part (sharded only).
    public func gatherParameters() throws {
        guard sharded else { return }
        for b in buckets.indices {
            try comm.allgatherInPlace(UnsafeMutableBufferPointer(rebasing: params.values[buckets[b]]),
                                      counts: (0..<comm.size).map { part(b, $0).count })
        }
    }

    /// Streams a flat, sharded buffer to rank 0 in flat order: for each bucket (by offset),
    /// every rank sends its part of `moments` (its moments laid out as `ownedRanges`) and rank 0
    /// receives the whole bucket into a scratch buffer and hands it to `write`. Collective.
    public func gatherToRoot(_ moments: UnsafePointer<Float>, write: (UnsafeBufferPointer<Float>) -> Void) throws {
        guard sharded else {
            if comm.rank == 0 { write(UnsafeBufferPointer(start: moments, count: params.count)) }
            return
        }
        let owned = ownedRanges
        var ownedOffset: [Int: Int] = [:]   // lowerBound -> offset in `moments`
        var o = 0
        for r in owned { ownedOffset[r.lowerBound] = o; o += r.count }
        let order = buckets.indices.sorted { buckets[$0].lowerBound < buckets[$1].lowerBound }
        let largest = buckets.map(\.count).max() ?? 0
        let scratch = UnsafeMutableBufferPointer<Float>.allocate(capacity: comm.rank == 0 ? max(largest, 1) : 1)
        defer { scratch.deallocate() }
        for b in order {
            let mine = part(b, comm.rank)
            let src = mine.isEmpty ? UnsafeBufferPointer<Float>(start: nil, count: 0)
                                   : UnsafeBufferPointer(start: moments + ownedOffset[mine.lowerBound]!, count: mine.count)
            try comm.gather(src, counts: (0..<comm.size).map { part(b, $0).count }, into: scratch.baseAddress, root: 0)
            if comm.rank == 0 { write(UnsafeBufferPointer(rebasing: scratch[0..<buckets[b].count])) }
        }
    }
}

extension GradientSync {
    /// True when the model's parameter buffer was rebuilt (a layer changed form) since planning.
    public func bucketsStale(for model: GPT2) -> Bool { model.params !== params }
}
