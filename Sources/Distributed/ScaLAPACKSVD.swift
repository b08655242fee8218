import CScaLAPACK
import MPI
import Tensor

/// Thin SVD of a matrix held on `root`, computed collectively with ScaLAPACK `psgesvd`
/// (or `pdgesvd` with `precision: .double`) on a near-square BLACS grid over all world ranks,
/// block-cyclic with `blockSize` blocks. Every rank must call it; the result is returned on
/// `root` (`nil` elsewhere) unless `broadcastResult` is set.
///
/// Row-major `A` (m x n) is column-major `Aᵀ`, so ScaLAPACK factors `Aᵀ = U' S V'ᵀ`; the
/// column-major `V'ᵀ` gathered on root is row-major `U`, and `U'` is row-major `Vᵀ`.
public func scalapackSVD(_ matrix: Tensor?, rows m: Int, cols n: Int, root: Int = 0,
                         blockSize: Int = 64, precision: SVDPrecision = .single,
                         broadcastResult: Bool = false) throws -> SVD? {
    let world = Communicator.world
    guard root == 0 else { throw DistributedError.grid("scalapackSVD gathers onto the grid's first rank; root must be 0, got \(root)") }
    // Validate collectively: a check that failed on one rank only would leave the others in BLACS forever.
    let shapeOK = world.rank != root || matrix?.shape == [m, n]
    var agreed = [shapeOK ? 0 : 1, m, -m, n, -n]
    try world.allreduce(&agreed, op: .max)
    if agreed[0] != 0 {
        throw TensorError.shape("scalapackSVD", world.rank == root
            ? "root holds \(matrix?.shape.description ?? "no matrix"), expected [\(m), \(n)]"
            : "rank \(root)'s matrix is not [\(m), \(n)]")
    }
    if agreed[1] != m || -agreed[2] != m || agreed[3] != n || -agreed[4] != n {
        throw TensorError.shape("scalapackSVD", "ranks passed different sizes (this rank: [\(m), \(n)])")
    }
    let result: SVD?
    switch precision {
    case .single:
        result = try distributedSVD(matrix?.data, m: m, n: n, blockSize: blockSize, as: Float.self)
    case .double:
        result = try distributedSVD(matrix?.data.map(Double.init), m: m, n: n, blockSize: blockSize, as: Double.self)
    }
    guard broadcastResult else { return result }
    let k = min(m, n)
    var u = result?.U.data ?? [], s = result?.S ?? [], vt = result?.Vt.data ?? []
    try world.broadcast(&u, root: root)
    try world.broadcast(&s, root: root)
    try world.broadcast(&vt, root: root)
    return SVD(U: try Tensor(shape: [m, k], data: u), S: s, Vt: try Tensor(shape: [k, n], data: vt))
}

/// Working precision of a distributed SVD.
public enum SVDPrecision: String, Sendable, Codable {
    case single, double
}

/// The two element types ScaLAPACK is called with.
protocol ScaLAPACKScalar: MPIScalar {
    static func gemr2d(_ m: Int32, _ n: Int32, _ a: UnsafePointer<Self>, _ desca: UnsafePointer<Int32>,
                       _ b: UnsafeMutablePointer<Self>, _ descb: UnsafePointer<Int32>, _ ctxt: Int32)
    static func gesvd(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ desca: UnsafePointer<Int32>,
                      _ s: UnsafeMutablePointer<Self>, _ u: UnsafeMutablePointer<Self>, _ descu: UnsafePointer<Int32>,
                      _ vt: UnsafeMutablePointer<Self>, _ descvt: UnsafePointer<Int32>,
                      _ work: UnsafeMutablePointer<Self>, _ lwork: Int32) -> Int32
    var asFloat: Float { get }
    var asInt: Int { get }
}

private let one: Int32 = 1
private let jobV: [CChar] = [CChar(UInt8(ascii: "V")), 0]

extension Float: ScaLAPACKScalar {
    static func gemr2d(_ m: Int32, _ n: Int32, _ a: UnsafePointer<Float>, _ desca: UnsafePointer<Int32>,
                       _ b: UnsafeMutablePointer<Float>, _ descb: UnsafePointer<Int32>, _ ctxt: Int32) {
        var m = m, n = n, ctxt = ctxt, o = one
        psgemr2d_(&m, &n, a, &o, &o, desca, b, &o, &o, descb, &ctxt)
    }
    static func gesvd(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Float>, _ desca: UnsafePointer<Int32>,
                      _ s: UnsafeMutablePointer<Float>, _ u: UnsafeMutablePointer<Float>, _ descu: UnsafePointer<Int32>,
                      _ vt: UnsafeMutablePointer<Float>, _ descvt: UnsafePointer<Int32>,
                      _ work: UnsafeMutablePointer<Float>, _ lwork: Int32) -> Int32 {
        var m = m, n = n, lwork = lwork, o = one, info: Int32 = 0
        psgesvd_(jobV, jobV, &m, &n, a, &o, &o, desca, s, u, &o, &o, descu, vt, &o, &o, descvt, work, &lwork, &info)
        return info
    }
    var asFloat: Float { self }
    /// Workspace sizes come back as floats: above 2^24 they may be rounded down, so pad a little.
    var asInt: Int { Int((Double(self) * (1 + 1e-6)).rounded(.up)) + 1 }
}

extension Double: ScaLAPACKScalar {
    static func gemr2d(_ m: Int32, _ n: Int32, _ a: UnsafePointer<Double>, _ desca: UnsafePointer<Int32>,
                       _ b: UnsafeMutablePointer<Double>, _ descb: UnsafePointer<Int32>, _ ctxt: Int32) {
        var m = m, n = n, ctxt = ctxt, o = one
        pdgemr2d_(&m, &n, a, &o, &o, desca, b, &o, &o, descb, &ctxt)
    }
    static func gesvd(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Double>, _ desca: UnsafePointer<Int32>,
                      _ s: UnsafeMutablePointer<Double>, _ u: UnsafeMutablePointer<Double>, _ descu: UnsafePointer<Int32>,
                      _ vt: UnsafeMutablePointer<Double>, _ descvt: UnsafePointer<Int32>,
                      _ work: UnsafeMutablePointer<Double>, _ lwork: Int32) -> Int32 {
        var m = m, n = n, lwork = lwork, o = one, info: Int32 = 0
        pdgesvd_(jobV, jobV, &m, &n, a, &o, &o, desca, s, u, &o, &o, descu, vt, &o, &o, descvt, work, &lwork, &info)
        return info
    }
    var asFloat: Float { Float(self) }
    var asInt: Int { Int((self * (1 + 1e-12)).rounded(.up)) + 1 }
}

/// A BLACS array descriptor for a `rows x cols` column-major matrix in `grid` (or an empty
/// descriptor with context -1 on ranks outside it).
private func descriptor(rows: Int, cols: Int, block: (Int, Int), context: Int32, localRows: Int) throws -> [Int32] {
    var desc = [Int32](repeating: 0, count: 9)
    guard context >= 0 else { desc[1] = -1; return desc }
    var m = Int32(rows), n = Int32(cols), mb = Int32(block.0), nb = Int32(block.1)
    var zero: Int32 = 0, ctxt = context, lld = Int32(max(1, localRows)), info: Int32 = 0
    descinit_(&desc, &m, &n, &mb, &nb, &zero, &zero, &ctxt, &lld, &info)
    guard info == 0 else { throw DistributedError.scalapack("descinit_", info: info) }
    return desc
}

/// Rows (or columns) of a block-cyclic dimension stored locally.
private func localExtent(_ n: Int, block: Int, index: Int, procs: Int) -> Int {
    var n = Int32(n), nb = Int32(block), i = Int32(index), src: Int32 = 0, p = Int32(procs)
    return Int(numroc_(&n, &nb, &i, &src, &p))
}

private func distributedSVD<T: ScaLAPACKScalar>(_ data: [T]?, m: Int, n: Int, blockSize: Int, as: T.Type) throws -> SVD? {
    let world = Communicator.world
    // The matrix ScaLAPACK sees: column-major Aᵀ, gm x gn.
    let gm = n, gn = m, k = min(m, n)
    let grid = try ProcessGrid()
    let rootGrid = try ProcessGrid(rows: 1, cols: 1)
    let nb = max(1, min(blockSize, max(gm, gn)))

    let isRoot = world.rank == 0
    let lr = { (rows: Int) in grid.contains ? localExtent(rows, block: nb, index: grid.myRow, procs: grid.rows) : 0 }
    let lc = { (cols: Int) in grid.contains ? localExtent(cols, block: nb, index: grid.myCol, procs: grid.cols) : 0 }

    // Whole matrices on root (1 x 1 grid) and their block-cyclic copies on the full grid.
    let descA0 = try descriptor(rows: gm, cols: gn, block: (gm, gn), context: rootGrid.context, localRows: gm)
    let descU0 = try descriptor(rows: gm, cols: k, block: (gm, k), context: rootGrid.context, localRows: gm)
    let descVT0 = try descriptor(rows: k, cols: gn, block: (k, gn), context: rootGrid.context, localRows: k)
    let descA = try descriptor(rows: gm, cols: gn, block: (nb, nb), context: grid.context, localRows: lr(gm))
    let descU = try descriptor(rows: gm, cols: k, block: (nb, nb), context: grid.context, localRows: lr(gm))
    let descVT = try descriptor(rows: k, cols: gn, block: (nb, nb), context: grid.context, localRows: lr(k))

    var a0 = isRoot ? data! : [T](repeating: 0, count: 1)
    var aLocal = [T](repeating: 0, count: max(1, lr(gm) * lc(gn)))
    var uLocal = [T](repeating: 0, count: max(1, lr(gm) * lc(k)))
    var vtLocal = [T](repeating: 0, count: max(1, lr(k) * lc(gn)))
    var s = [T](repeating: 0, count: k)

    // Scatter: root's whole matrix -> block-cyclic over the grid (context spanning all ranks).
    T.gemr2d(Int32(gm), Int32(gn), &a0, descA0, &aLocal, descA, grid.context)

    var info: Int32 = 0
    if grid.contains {
        var query = [T](repeating: 0, count: 1)
        info = T.gesvd(Int32(gm), Int32(gn), &aLocal, descA, &s, &uLocal, descU, &vtLocal, descVT, &query, -1)
        if info == 0 {
            let lwork = max(1, query[0].asInt)
            var work = [T](repeating: 0, count: lwork)
            info = T.gesvd(Int32(gm), Int32(gn), &aLocal, descA, &s, &uLocal, descU, &vtLocal, descVT, &work, Int32(lwork))
        }
    }
    let worst = try world.allreduce(Int(info), op: .max)
    let least = try world.allreduce(Int(info), op: .min)
    if worst != 0 || least != 0 {
        throw DistributedError.scalapack(T.self == Float.self ? "psgesvd_" : "pdgesvd_", info: Int32(least < 0 ? least : worst))
    }

    // Gather U' (gm x k) and V'ᵀ (k x gn) back to root.
    var u0 = [T](repeating: 0, count: isRoot ? gm * k : 1)
    var vt0 = [T](repeating: 0, count: isRoot ? k * gn : 1)
    T.gemr2d(Int32(gm), Int32(k), &uLocal, descU, &u0, descU0, grid.context)
    T.gemr2d(Int32(k), Int32(gn), &vtLocal, descVT, &vt0, descVT0, grid.context)
    guard isRoot else { return nil }
    // Column-major V'ᵀ (k x m) is row-major U (m x k); column-major U' (n x k) is row-major Vᵀ (k x n).
    return SVD(U: try Tensor(shape: [m, k], data: vt0.map { $0.asFloat }),
               S: s.map { $0.asFloat },
               Vt: try Tensor(shape: [k, n], data: u0.map { $0.asFloat }))
}
