import CMPI

/// Memory shared by the ranks of one node: an MPI-3 shared window (`MPI_Win_allocate_shared` on
/// the node's communicator) that the node's first rank allocates and every rank of the node maps.
/// Used for read-only data every rank needs whole (a teacher's weights, the token data), so a
/// node holds one copy instead of one per rank. The windows are freed at MPI_Finalize (freeing
/// is collective, so it cannot follow each object's lifetime).
public final class NodeSharedBuffer: @unchecked Sendable {
    /// The node's copy, at the same contents on every rank of the node.
    public let pointer: UnsafeMutableRawPointer
    public let bytes: Int
    /// The ranks of this node (rank 0 of it filled the buffer).
    public let node: Communicator
    /// True on the rank that allocated (and should fill) the buffer.
    public var isLeader: Bool { node.rank == 0 }

    /// Collective over `node` (ranks that share memory, see `Communicator.splitShared`): every
    /// rank passes the same `bytes`.
    public init(bytes: Int, node: Communicator) throws {
        self.bytes = bytes
        self.node = node
        let agreed = try node.allreduce(bytes, op: .max)
        guard agreed == bytes, try node.allreduce(bytes, op: .min) == bytes else {
            throw MPIError.usage("NodeSharedBuffer", reason: "ranks of this node asked for different sizes (\(bytes) here, up to \(agreed))")
        }
        var base: UnsafeMutableRawPointer?
        var win: MPI_Win? = squeeze_win_null()
        let mine = node.rank == 0 ? MPI_Aint(max(bytes, 1)) : 0
        try withUnsafeMutablePointer(to: &base) { bp in
            try check(MPI_Win_allocate_shared(mine, 1, squeeze_info_null(), node.handle, bp, &win), "MPI_Win_allocate_shared (\(bytes) bytes)")
        }
        var size: MPI_Aint = 0
        var unit: Int32 = 0
        var leaderBase: UnsafeMutableRawPointer?
        try withUnsafeMutablePointer(to: &leaderBase) { bp in
            try check(MPI_Win_shared_query(win, 0, &size, &unit, bp), "MPI_Win_shared_query")
        }
        guard let p = leaderBase, Int(size) >= bytes else {
            throw MPIError.usage("NodeSharedBuffer", reason: "the node's shared window has \(size) bytes, expected \(bytes)")
        }
        pointer = p
        Runtime.atFinalize { MPI_Win_free(&win) }
    }
}
