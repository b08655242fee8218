import CMPI
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An MPI communicator: rank, size and the collectives Squeeze uses, with MPI errors thrown as
/// `MPIError`. `Communicator.world` initializes MPI on first use (also without mpirun: size 1).
public final class Communicator: @unchecked Sendable {
    /// The raw handle, for interop (ScaLAPACK's BLACS, custom calls).
    public let handle: MPI_Comm
    /// This process's rank in the communicator.
    public let rank: Int
    /// Number of processes in the communicator.
    public let size: Int
    private let owned: Bool

    /// Bytes this process has moved through the collectives of every communicator, counted as
    /// the α-β model's bandwidth-optimal algorithms move them per rank: all-reduce 2(P−1)/P·n,
    /// reduce-scatter and all-gather (P−1)/P·n of the whole buffer, gather (P−1)/P·n, broadcast
    /// and send n (n the buffer's bytes). Traffic inside ScaLAPACK (BLACS) is not counted.
    public static var trafficBytes: Int { traffic.load(ordering: .relaxed) }
    private static let traffic = Atomic<Int>(0)

    /// Adds one collective's bytes (`fraction` of `bytes`, see `trafficBytes`).
    private func count(_ bytes: Int, _ fraction: Double = 1) {
        guard size > 1 else { return }
        Self.traffic.add(Int(Double(bytes) * fraction), ordering: .relaxed)
    }
    private var ring: Double { Double(size - 1) / Double(size) }

    /// The world communicator; MPI is initialized (MPI_Init_thread, funneled) the first time.
    public static let world: Communicator = {
        Runtime.initialize()
        return Communicator(wrapping: squeeze_comm_world(), owned: false)
    }()

    init(wrapping handle: MPI_Comm, owned: Bool) {
        self.handle = handle
        self.owned = owned
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_set_errhandler(handle, squeeze_errors_return())
        MPI_Comm_rank(handle, &r)
        MPI_Comm_size(handle, &s)
        rank = Int(r)
        size = Int(s)
    }

    deinit {
        if owned && !Runtime.isFinalized {
            var h: MPI_Comm? = handle
            MPI_Comm_free(&h)
        }
    }

    /// True on rank 0 (the rank that prints).
    public var isRoot: Bool { rank == 0 }

    // MARK: - Validation

    private func checkRoot(_ root: Int, _ call: String) throws {
        guard (0..<size).contains(root) else {
            throw MPIError.usage(call, reason: "root \(root) is not a rank of this communicator (size \(size))")
        }
    }

    /// Collective: all ranks learn whether every rank passed the same count.
    /// Costs one tiny all-reduce; turns MPI's undefined behaviour into an error on every rank.
    private func checkSameCount(_ count: Int, _ call: String) throws {
        guard size > 1 else { return }
        var bounds: [Int] = [count, -count]
        try bounds.withUnsafeMutableBufferPointer { p in
            try check(MPI_Allreduce(squeeze_in_place(), p.baseAddress, 2, Int.mpiType, squeeze_op_max(), handle),
                      "\(call) (count check)")
        }
        let maxCount = bounds[0], minCount = -bounds[1]
        if maxCount != minCount {
            throw MPIError.usage(call, reason: "ranks passed different element counts (min \(minCount), max \(maxCount)); this rank (\(rank)) passed \(count)")
        }
    }

    // MARK: - Collectives

    /// Blocks until every rank has called it.
    public func barrier() throws {
        try check(MPI_Barrier(handle), "MPI_Barrier")
    }

    /// Broadcasts `buffer` from `root` into every rank's buffer of the same count.
    public func broadcast<T: MPIScalar>(_ buffer: UnsafeMutableBufferPointer<T>, root: Int = 0) throws {
        try checkRoot(root, "broadcast")
        try checkSameCount(buffer.count, "broadcast")
        count(buffer.count * MemoryLayout<T>.stride)
        try chunked(buffer.count) { offset, n in
            try check(MPI_Bcast(buffer.baseAddress.map { UnsafeMutableRawPointer($0 + offset) }, n, T.mpiType, Int32(root), handle), "MPI_Bcast")
        }
    }

    /// Broadcasts an array from `root`; other ranks' arrays are resized to the root's count.
    public func broadcast<T: MPIScalar>(_ array: inout [T], root: Int = 0) throws {
        try checkRoot(root, "broadcast")
        var count = [array.count]
        try count.withUnsafeMutableBufferPointer { p in
            try check(MPI_Bcast(p.baseAddress, 1, Int.mpiType, Int32(root), handle), "MPI_Bcast (count)")
        }
        if rank != root { array = [T](repeating: 0, count: count[0]) }
        try array.withUnsafeMutableBufferPointer { try broadcast($0, root: root) }
    }

    /// Broadcasts raw bytes (for example a serialized header) from `root`.
    public func broadcast(bytes: inout [UInt8], root: Int = 0) throws {
        try broadcast(&bytes, root: root)
    }

    /// Broadcasts a string from `root`.
    public func broadcast(_ string: inout String, root: Int = 0) throws {
        var bytes = Array(string.utf8)
        try broadcast(&bytes, root: root)
        string = String(decoding: bytes, as: UTF8.self)
    }

    /// Element-wise reduction in place: afterwards every rank holds the reduced buffer.
    public func allreduce<T: MPIScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp = .sum) throws {
        try checkSameCount(buffer.count, "allreduce")
        try allreduceUnchecked(buffer, op: op)
    }

    /// `allreduce` without the count check: for hot loops whose layout is already known to agree.
    public func allreduceUnchecked<T: MPIScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp = .sum) throws {
        guard size > 1 else { return }
        count(buffer.count * MemoryLayout<T>.stride, 2 * ring)
        try chunked(buffer.count) { offset, n in
            try check(MPI_Allreduce(squeeze_in_place(), UnsafeMutableRawPointer(buffer.baseAddress! + offset), n, T.mpiType, op.handle, handle), "MPI_Allreduce")
        }
    }

    /// Element-wise reduction of an array in place.
    public func allreduce<T: MPIScalar>(_ array: inout [T], op: ReduceOp = .sum) throws {
        try array.withUnsafeMutableBufferPointer { try allreduce($0, op: op) }
    }

    /// Reduction of one value.
    public func allreduce<T: MPIScalar>(_ value: T, op: ReduceOp = .sum) throws -> T {
        var a = [value]
        try allreduce(&a, op: op)
        return a[0]
    }

    /// Starts a non-blocking in-place all-reduce (no count check: the caller guarantees agreement).
    /// The buffer must stay alive and untouched until `wait()` on the returned request.
    public func iallreduce<T: MPIScalar>(_ buffer: UnsafeMutableBufferPointer<T>, op: ReduceOp = .sum) throws -> Request {
        var request: MPI_Request? = squeeze_request_null()
        if size > 1 {
            guard buffer.count <= Int(Int32.max) else {
                throw MPIError.usage("iallreduce", reason: "buffer of \(buffer.count) elements exceeds MPI's 32-bit count; use smaller buckets")
            }
            count(buffer.count * MemoryLayout<T>.stride, 2 * ring)
            try check(MPI_Iallreduce(squeeze_in_place(), buffer.baseAddress, Int32(buffer.count), T.mpiType, op.handle, handle, &request), "MPI_Iallreduce")
        }
        return Request(request)
    }

    /// Starts a non-blocking reduce-scatter: `send` (Σ counts elements, the same layout on every
    /// rank) is summed over ranks and this rank receives part `rank` (counts[rank] elements) in
    /// `recv`. Both buffers must stay alive and untouched until `wait()`. No count check.
    public func ireduceScatter<T: MPIScalar>(send: UnsafePointer<T>, recv: UnsafeMutablePointer<T>, counts: [Int],
                                             op: ReduceOp = .sum) throws -> Request {
        guard size > 1 else {
            recv.update(from: send, count: counts[0])
            return Request(squeeze_request_null())
        }
        guard counts.count == size, counts.allSatisfy({ $0 >= 0 && $0 <= Int(Int32.max) }) else {
            throw MPIError.usage("ireduceScatter", reason: "need one count per rank, each fitting MPI's 32-bit count")
        }
        count(counts.reduce(0, +) * MemoryLayout<T>.stride, ring)
        let c32 = UnsafeMutableBufferPointer<Int32>.allocate(capacity: size)
        for (i, c) in counts.enumerated() { c32[i] = Int32(c) }
        var request: MPI_Request? = squeeze_request_null()
        do {
            try check(MPI_Ireduce_scatter(send, recv, c32.baseAddress, T.mpiType, op.handle, handle, &request), "MPI_Ireduce_scatter")
        } catch {
            c32.deallocate()
            throw error
        }
        // The counts array must outlive the operation.
        return Request(request, onCompletion: { c32.deallocate() })
    }

    /// All-gather in place: part r of `buffer` (counts[r] elements, parts back to back in rank
    /// order) comes from rank r. No count check.
    public func allgatherInPlace<T: MPIScalar>(_ buffer: UnsafeMutableBufferPointer<T>, counts: [Int]) throws {
        guard size > 1 else { return }
        guard counts.count == size, counts.reduce(0, +) == buffer.count, buffer.count <= Int(Int32.max) else {
            throw MPIError.usage("allgatherInPlace", reason: "need one count per rank summing to the buffer's \(buffer.count) (32-bit)")
        }
        let c32 = counts.map { Int32($0) }
        var displs = [Int32](repeating: 0, count: size)
        for r in 1..<size { displs[r] = displs[r - 1] + c32[r - 1] }
        count(buffer.count * MemoryLayout<T>.stride, ring)
        try check(MPI_Allgatherv(squeeze_in_place(), 0, T.mpiType, buffer.baseAddress, c32, displs, T.mpiType, handle), "MPI_Allgatherv")
    }

    /// Gathers each rank's `part` (counts[r] elements from rank r) into `into` on `root`, parts
    /// back to back in rank order (`into` is ignored elsewhere). No count check.
    public func gather<T: MPIScalar>(_ part: UnsafeBufferPointer<T>, counts: [Int], into: UnsafeMutablePointer<T>?, root: Int = 0) throws {
        try checkRoot(root, "gather")
        guard size > 1 else {
            if let into, let p = part.baseAddress { into.update(from: p, count: part.count) }
            return
        }
        let c32 = counts.map { Int32($0) }
        var displs = [Int32](repeating: 0, count: size)
        for r in 1..<size { displs[r] = displs[r - 1] + c32[r - 1] }
        count(counts.reduce(0, +) * MemoryLayout<T>.stride, ring)
        try check(MPI_Gatherv(part.baseAddress, Int32(part.count), T.mpiType, rank == root ? into : nil, c32, displs, T.mpiType,
                              Int32(root), handle), "MPI_Gatherv")
    }

    /// Gathers an equal-sized contribution from every rank, concatenated in rank order.
    public func allgather<T: MPIScalar>(_ local: [T]) throws -> [T] {
        try checkSameCount(local.count, "allgather")
        var out = [T](repeating: 0, count: local.count * size)
        guard local.count > 0 else { return out }
        guard local.count * size <= Int(Int32.max) else {
            throw MPIError.usage("allgather", reason: "total of \(local.count * size) elements exceeds MPI's 32-bit count")
        }
        count(out.count * MemoryLayout<T>.stride, ring)
        try local.withUnsafeBufferPointer { s in
            try out.withUnsafeMutableBufferPointer { r in
                try check(MPI_Allgather(s.baseAddress, Int32(local.count), T.mpiType, r.baseAddress, Int32(local.count), T.mpiType, handle), "MPI_Allgather")
            }
        }
        return out
    }

    /// Gathers contributions of any size from every rank: element `r` is rank r's array.
    public func allgatherv<T: MPIScalar>(_ local: [T]) throws -> [[T]] {
        var countsWide = [local.count]
        countsWide = try allgather(countsWide)
        let total = countsWide.reduce(0, +)
        guard total <= Int(Int32.max) else {
            throw MPIError.usage("allgatherv", reason: "total of \(total) elements exceeds MPI's 32-bit count")
        }
        let counts = countsWide.map { Int32($0) }
        var displs = [Int32](repeating: 0, count: size)
        for r in 1..<max(size, 1) where r < size { displs[r] = displs[r - 1] + counts[r - 1] }
        var flat = [T](repeating: 0, count: total)
        count(total * MemoryLayout<T>.stride, ring)
        try local.withUnsafeBufferPointer { s in
            try flat.withUnsafeMutableBufferPointer { r in
                try check(MPI_Allgatherv(s.baseAddress, Int32(local.count), T.mpiType, r.baseAddress, counts, displs, T.mpiType, handle), "MPI_Allgatherv")
            }
        }
        return (0..<size).map { r in Array(flat[Int(displs[r])..<Int(displs[r] + counts[r])]) }
    }

    /// Splits into sub-communicators by `color` (ordered by `key`); `nil` color leaves this rank out.
    public func split(color: Int?, key: Int? = nil) throws -> Communicator? {
        var newComm: MPI_Comm? = squeeze_comm_null()
        let c = color.map { Int32($0) } ?? squeeze_undefined()
        // Agree first: a rank that threw alone would leave the others inside MPI_Comm_split.
        if try allreduce((color ?? 0) < 0 ? 1 : 0, op: .max) != 0 {
            throw MPIError.usage("split", reason: color.map { $0 < 0 ? "color must be >= 0 (or nil), got \($0)" : "another rank passed a negative color" } ?? "another rank passed a negative color")
        }
        try check(MPI_Comm_split(handle, c, Int32(key ?? rank), &newComm), "MPI_Comm_split")
        guard let newComm, newComm != squeeze_comm_null() else { return nil }
        return Communicator(wrapping: newComm, owned: true)
    }

    /// The ranks sharing this node's memory (MPI_COMM_TYPE_SHARED).
    public func splitShared() throws -> Communicator {
        var newComm: MPI_Comm? = squeeze_comm_null()
        try check(MPI_Comm_split_type(handle, squeeze_comm_type_shared(), Int32(rank), squeeze_info_null(), &newComm), "MPI_Comm_split_type")
        return Communicator(wrapping: newComm!, owned: true)
    }

    /// Kills every rank of the job with `code` (used when one rank fails, so none hangs).
    public func abort(code: Int32 = 1) -> Never {
        MPI_Abort(handle, code)
        exit(code)
    }

    /// MPI counts are 32-bit: issues one call per chunk of at most 2^30 elements.
    private func chunked(_ count: Int, _ body: (Int, Int32) throws -> Void) throws {
        let chunk = 1 << 30
        var offset = 0
        while offset < count {
            let n = min(chunk, count - offset)
            try body(offset, Int32(n))
            offset += n
        }
    }
}

/// A pending non-blocking operation.
public final class Request: @unchecked Sendable {
    fileprivate var handle: MPI_Request?
    private var onCompletion: (() -> Void)?
    init(_ handle: MPI_Request?, onCompletion: (() -> Void)? = nil) {
        self.handle = handle
        self.onCompletion = onCompletion
        if handle == squeeze_request_null() { completed() }
    }
    deinit { if handle == squeeze_request_null() { completed() } }
    private func completed() {
        onCompletion?()
        onCompletion = nil
    }
    /// Blocks until the operation completes.
    public func wait() throws {
        guard handle != squeeze_request_null() else { completed(); return }
        try check(MPI_Wait(&handle, squeeze_status_ignore()), "MPI_Wait")
        completed()
    }
}

extension Request {
    /// Non-blocking completion check; also lets MPI progress the operation.
    public func test() throws -> Bool {
        guard handle != squeeze_request_null() else { return true }
        var flag: Int32 = 0
        try check(MPI_Test(&handle, &flag, squeeze_status_ignore()), "MPI_Test")
        if flag != 0 { completed() }
        return flag != 0
    }
}
