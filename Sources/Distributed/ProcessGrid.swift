import CScaLAPACK
import MPI

/// A 2-D BLACS process grid over MPI_COMM_WORLD (row-major rank order), as square as the
/// world size allows (`rows <= cols`). Every rank must create and release it together.
public final class ProcessGrid {
    /// The BLACS context handle (-1 on a rank outside the grid).
    public let context: Int32
    public let rows: Int, cols: Int
    public let myRow: Int, myCol: Int

    /// The near-square factorization `rows x cols = size` with `rows <= cols`.
    public static func shape(forSize size: Int) -> (rows: Int, cols: Int) {
        var r = Int(Double(size).squareRoot())
        while r > 1 && size % r != 0 { r -= 1 }
        return (max(r, 1), size / max(r, 1))
    }

    /// A `rows x cols` grid over the first `rows * cols` world ranks (collective over the world).
    public init(rows: Int, cols: Int) throws {
        let world = Communicator.world
        guard rows >= 1, cols >= 1, rows * cols <= world.size else {
            throw DistributedError.grid("a \(rows) x \(cols) BLACS grid needs \(rows * cols) ranks; the world has \(world.size)")
        }
        var ctxt: Int32 = 0
        Cblacs_get(-1, 0, &ctxt)
        Cblacs_gridinit(&ctxt, squeeze_blacs_row_order(), Int32(rows), Int32(cols))
        var nr: Int32 = 0, nc: Int32 = 0, r: Int32 = -1, c: Int32 = -1
        if ctxt >= 0 { Cblacs_gridinfo(ctxt, &nr, &nc, &r, &c) }
        self.context = ctxt
        self.rows = rows
        self.cols = cols
        self.myRow = Int(r)
        self.myCol = Int(c)
    }

    /// The near-square grid over the whole world.
    public convenience init() throws {
        let s = ProcessGrid.shape(forSize: Communicator.world.size)
        try self.init(rows: s.rows, cols: s.cols)
    }

    /// True when this rank is part of the grid.
    public var contains: Bool { context >= 0 && myRow >= 0 }

    deinit {
        if contains { Cblacs_gridexit(context) }
    }
}
