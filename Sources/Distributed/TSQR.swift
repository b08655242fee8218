import MPI
import Tensor

/// Truncated thin SVD of a tall matrix (`rows >= cols`) that every rank holds whole, computed
/// collectively by TSQR (a one-level tall-skinny QR) over the ranks of `comm`:
///
///  1. rank r factors its contiguous row block `A_r = Q_r R_r` (Householder, blocked `sgeqrt`;
///     `Q_r` stays in compact WY form), `rows_r = [m·r/P, m·(r+1)/P)`;
///  2. the `R_r` (each `min(rows_r, n) x n`) are all-gathered into the stacked `R` (`≤ P·n x n`);
///  3. rank 0 computes `R = U_s diag(S) Vᵀ` (QR of the stack, then `?gesdd` of the `n x n` triangle;
///     in Double by default), fixes each pair's sign (`SVD.canonicalSigns`) and broadcasts `S[:k]`,
///     `Vᵀ[:k, :]` and `U_s[:, :k]`;
///  4. rank r computes its rows of `U = Q_r · U_s[block r, :k]` by applying its reflectors to the
///     zero-padded block (`sgemqrt`: about `4·rows_r·n·k` flops, never forming `Q_r`), and the row
///     blocks of `U` are all-gathered.
///
/// Every rank returns the same (bitwise) `U: [m, k]`, `S: [k]`, `Vt: [k, n]`, with `A ≈ U diag(S) Vt`
/// and the singular values descending. `k = nil` keeps all `n`. With one rank this is QR + SVD
/// of R; results for different rank counts differ only by floating-point rounding (and by the sign
/// of a pair whose `Vt` row has two largest-magnitude entries equal up to rounding).
///
/// The work per rank is `2·(m/P)·n² + 4·(m/P)·n·k` flops, plus the small SVD on rank 0
/// (`O(P·n³)`, while the other ranks wait); communication is `P·n²` floats for R and `m·k` for U.
/// It pays when `m / P` is several times `n` (see `distributedSVDPath`).
///
/// Collective: every rank must call it with the same matrix shape and `k` (checked: ranks that
/// disagree all throw), and should pass the same matrix (not checked). A LAPACK failure on any
/// rank makes every rank throw the same error.
public func tallSVD(_ a: Tensor, rank k: Int? = nil, comm: Communicator = .world,
                    smallSVDPrecision: SVDPrecision = .double) throws -> SVD {
    var profile = TallSVDProfile()
    return try tallSVD(a, rank: k, comm: comm, smallSVDPrecision: smallSVDPrecision, profile: &profile)
}

/// `tallSVD`, also reporting the seconds this rank spent in each phase.
public func tallSVD(_ a: Tensor, rank k: Int?, comm: Communicator, smallSVDPrecision: SVDPrecision = .double,
                    profile: inout TallSVDProfile) throws -> SVD {
    let p = comm.size, me = comm.rank
    let start = Runtime.wtime()
    var t = start
    func lap() -> Double { let now = Runtime.wtime(); defer { t = now }; return now - t }

    let (m, n, want) = try agreedProblem(a, rank: k, comm: comm)
    let blocks = (0..<p).map { tallSVDRows(m, rank: $0, ranks: p) }
    let heights = blocks.map { min($0.count, n) }
    var offsets = [0]
    for h in heights { offsets.append(offsets.last! + h) }
    let stackRows = offsets[p]   // >= n because m >= n
    guard m * want <= Int(Int32.max), stackRows * n <= Int(Int32.max) else {
        throw TensorError.shape("tallSVD", "[\(m), \(n)] at rank \(want) on \(p) ranks exceeds MPI's 32-bit counts")
    }

    // 1. This rank's rows: A_r = Q_r R_r.
    var local: HouseholderQR<Float>?
    var failure: Error?
    do { local = try HouseholderQR(a, rows: blocks[me]) } catch { failure = error }
    profile.localQR = lap()
    try agree(failure, comm: comm)

    // 2. The stacked R on every rank.
    var stacked = [Float](repeating: 0, count: stackRows * n)
    let r = local!.r
    stacked.replaceSubrange(offsets[me] * n ..< offsets[me + 1] * n, with: r)
    try stacked.withUnsafeMutableBufferPointer { try comm.allgatherInPlace($0, counts: heights.map { $0 * n }) }
    profile.gatherR = lap()

    // 3. SVD of the stack on rank 0, broadcast: S, Vt (k x n), U_s[:, :k] (stackRows x k), row-major.
    var payload = [Float](repeating: 0, count: want + want * n + stackRows * want)
    if me == 0 {
        do {
            switch smallSVDPrecision {
            case .double: payload = try stackedSVD(stacked, rows: stackRows, cols: n, rank: want, as: Double.self)
            case .single: payload = try stackedSVD(stacked, rows: stackRows, cols: n, rank: want, as: Float.self)
            }
        } catch { failure = error }
    }
    try agree(failure, comm: comm)
    try payload.withUnsafeMutableBufferPointer { try comm.broadcast($0, root: 0) }
    profile.smallSVD = lap()

    // 4. This rank's rows of U = Q_r [U_s block; 0], then all of U.
    let rows = blocks[me], mr = rows.count, hr = heights[me]
    let usBase = want + want * n
    var c = [Float](repeating: 0, count: mr * want)   // column-major mr x k
    for j in 0..<want {
        for i in 0..<hr { c[j * mr + i] = payload[usBase + (offsets[me] + i) * want + j] }
    }
    do { try local!.applyQ(to: &c, columns: want) } catch { failure = error }
    profile.applyQ = lap()
    try agree(failure, comm: comm)
    var u = [Float](repeating: 0, count: m * want)
    if mr > 0 {
        c.withUnsafeBufferPointer { src in
            u.withUnsafeMutableBufferPointer { dst in
                // Column-major mr x k is row-major k x mr; its transpose is U's row-major block.
                transpose(src.baseAddress!, rows: want, cols: mr, into: dst.baseAddress! + rows.lowerBound * want)
            }
        }
    }
    try u.withUnsafeMutableBufferPointer { try comm.allgatherInPlace($0, counts: blocks.map { $0.count * want }) }
    profile.gatherU = lap()
    profile.total = Runtime.wtime() - start

    return SVD(U: try Tensor(shape: [m, want], data: u), S: Array(payload[0..<want]),
               Vt: try Tensor(shape: [want, n], data: Array(payload[want..<usBase])))
}

/// Seconds one rank spent in each phase of a `tallSVD` call (wall clock; a phase that ends in a
/// collective includes waiting for the slowest rank).
public struct TallSVDProfile: Sendable, Codable, Equatable {
    /// Transpose and `sgeqrt` of this rank's row block.
    public var localQR = 0.0
    /// All-gather of the R factors.
    public var gatherR = 0.0
    /// SVD of the stacked R on rank 0 and its broadcast.
    public var smallSVD = 0.0
    /// `sgemqrt`: this rank's rows of U.
    public var applyQ = 0.0
    /// All-gather of U's row blocks.
    public var gatherU = 0.0
    public var total = 0.0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case localQR = "local_qr", gatherR = "gather_r", smallSVD = "small_svd", applyQ = "apply_q"
        case gatherU = "gather_u", total
    }
}

/// A failure inside `tallSVD` on some rank, reported identically on every rank.
public struct TallSVDError: Error, CustomStringConvertible {
    public let description: String
}

/// The problem of a `tallSVD` call ([m, n] and the rank), checked and agreed by all ranks before
/// anything can fail on only some of them.
private func agreedProblem(_ a: Tensor, rank k: Int?, comm: Communicator) throws -> (m: Int, n: Int, want: Int) {
    let is2D = a.shape.count == 2
    let m = is2D ? a.shape[0] : 0, n = is2D ? a.shape[1] : 0
    let want = k ?? n
    var agreed = [is2D ? 0 : 1, m, -m, n, -n, want, -want]
    try comm.allreduce(&agreed, op: .max)
    guard agreed[0] == 0 else {
        throw TensorError.shape("tallSVD", is2D ? "another rank's matrix is not 2-D" : "expected a 2-D matrix, got shape \(a.shape)")
    }
    guard agreed[1] == -agreed[2], agreed[3] == -agreed[4], agreed[5] == -agreed[6] else {
        throw TensorError.shape("tallSVD", "ranks passed different problems (this rank: [\(m), \(n)], rank \(want)); "
                                + "every rank must pass the same matrix and rank")
    }
    guard n >= 1, m >= n else {
        throw TensorError.shape("tallSVD", "needs a tall matrix (rows >= cols >= 1), got [\(m), \(n)]")
    }
    guard (1...n).contains(want) else {
        throw TensorError.argument("tallSVD", "rank must be in 1...\(n), got \(want)")
    }
    return (m, n, want)
}

/// The rows `tallSVD` gives rank `rank` of `ranks`: the contiguous `share`.
public func tallSVDRows(_ m: Int, rank: Int, ranks: Int) -> Range<Int> { share(m, rank: rank, size: ranks) }

/// Collective: if `failure` is set on any rank, every rank throws the same `TallSVDError`,
/// carrying the first failing rank's message.
private func agree(_ failure: Error?, comm: Communicator) throws {
    if let f = try comm.firstFailure(failure) { throw TallSVDError(description: "tallSVD: rank \(f.rank): \(f.message)") }
}

/// SVD of the stacked R (row-major `h x n` floats, `h >= n`) in precision `T`: `QR = R_stack`,
/// `R = U_f diag(S) Vᵀ` (`?gesdd`, n x n), `U_s[:, :k] = Q [U_f[:, :k]; 0]` (`?gemqrt`).
/// Returns `S[:k]`, then `Vᵀ[:k, :]` (k x n) and `U_s[:, :k]` (h x k), both row-major, with the
/// signs of `SVD.canonicalSigns` (decided on the rounded Float values, so the result is a fixed
/// point of `canonicalSigns`).
private func stackedSVD<T: LAPACKScalar>(_ stacked: [Float], rows h: Int, cols n: Int, rank k: Int, as: T.Type) throws -> [Float] {
    var b = [T](repeating: 0, count: h * n)
    for i in 0..<h { for j in 0..<n { b[j * h + i] = T(stacked[i * n + j]) } }
    let qr = try HouseholderQR(columnMajor: b, rows: h, cols: n)
    let rRow = qr.r   // row-major n x n
    var rCol = [T](repeating: 0, count: n * n)
    for i in 0..<n { for j in i..<n { rCol[j * n + i] = rRow[i * n + j] } }
    let (uf, s, vtf) = try thinSVD(columnMajor: rCol, rows: n, cols: n)
    var c = [T](repeating: 0, count: h * k)   // column-major h x k
    for j in 0..<k { for i in 0..<n { c[j * h + i] = uf[j * n + i] } }
    try qr.applyQ(to: &c, columns: k)

    var out = [Float](repeating: 0, count: k + k * n + h * k)
    let vtBase = k, usBase = k + k * n
    var vt = [Float](repeating: 0, count: k * n)
    for i in 0..<k { for j in 0..<n { vt[i * n + j] = Float(vtf[i + j * n]) } }
    for (i, flip) in canonicalSignFlips(vt, rows: k, cols: n).enumerated() {
        out[i] = Float(s[i])
        for j in 0..<n { out[vtBase + i * n + j] = flip ? -vt[i * n + j] : vt[i * n + j] }
        for r in 0..<h {
            let x = Float(c[r + i * h])
            out[usBase + r * k + i] = flip ? -x : x
        }
    }
    return out
}
