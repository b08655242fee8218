import Reporting
import COpenBLAS
import Distributed
import Foundation
import MPI
import Tensor

/// `squeeze bench tall`: the distributed SVDs against LAPACK on one rank, on power-law matrices.
///
/// For each shape, on the same matrix (generated on rank 0, broadcast):
///   - LAPACK `sgesdd` on rank 0 with `lapackThreads` BLAS threads, while the other ranks sleep
///     (polling a non-blocking all-reduce every millisecond, so they take no CPU): by default the
///     sum of the BLAS threads of the ranks on rank 0's node, i.e. the same cores; twice: as
///     `Tensor.svd()` (what the compressor calls: LAPACK's LQ path on the wide Aᵀ) and as
///     `Tensor.svdColumnMajor()` (LAPACK's QR path, the stronger baseline for tall matrices);
///   - `tallSVD` (TSQR, truncated to k) on all ranks (tall shapes only);
///   - ScaLAPACK `scalapackSVD` (`psgesvd`, full thin SVD, result broadcast) on all ranks.
/// Times are wall clock, the best of `repeats` runs, a distributed run timed by its slowest rank.
/// Errors are ‖A − U_k S_k V_kᵀ‖_F at the bench's k for each method, against the Eckart–Young value
/// sqrt(Σ_{i>k} σ_i²) from LAPACK's singular values.
public struct TallBenchRow: Codable, Sendable {
    public var shape: [Int]
    public var k: Int
    public var ranks: Int
    public var threadsPerRank: Int
    public var lapackThreads: Int
    public var lapackSeconds: Double
    /// LAPACK's QR path: `Tensor.svdColumnMajor()` (sgesdd of a column-major copy, transposes
    /// included) on rank 0 with `lapackThreads`. `lapackSeconds` is `Tensor.svd()`, which the
    /// compressor calls today: sgesdd of the column-major Aᵀ, i.e. LAPACK's (slower) LQ path.
    public var lapackQRPathSeconds: Double
    public var tsqrSeconds: Double?
    public var scalapackSeconds: Double?
    /// lapack / tsqr and lapack / scalapack: above 1, the distributed method is faster.
    public var lapackOverTSQR: Double?
    public var lapackOverScaLAPACK: Double?
    /// lapackQRPath / tsqr.
    public var lapackQRPathOverTSQR: Double?
    /// Rank 0's phases of its best `tallSVD` run.
    public var tsqrProfile: TallSVDProfile?
    public var eckartYoungError: Double
    public var lapackError: Double
    public var tsqrError: Double?
    public var scalapackError: Double?
    /// 100 · (error − LAPACK's error) / LAPACK's error.
    public var tsqrErrorDifferencePercent: Double?
    public var scalapackErrorDifferencePercent: Double?
    /// 100 · (error − Eckart–Young) / Eckart–Young: the criterion (within 0.1%).
    public var lapackOverEckartYoungPercent: Double?
    public var tsqrOverEckartYoungPercent: Double?
    /// Max relative difference of the leading k singular values from LAPACK's.
    public var tsqrSingularValueDifference: Double?
    /// 1-minute load average before and after this row (other users of the machine).
    public var loadBefore: Double
    public var loadAfter: Double

    enum CodingKeys: String, CodingKey {
        case shape, k, ranks
        case threadsPerRank = "threads_per_rank", lapackThreads = "lapack_threads"
        case lapackSeconds = "lapack_seconds", lapackQRPathSeconds = "lapack_qr_path_seconds"
        case lapackQRPathOverTSQR = "lapack_qr_path_over_tsqr"
        case tsqrSeconds = "tsqr_seconds", scalapackSeconds = "scalapack_seconds"
        case lapackOverTSQR = "lapack_over_tsqr", lapackOverScaLAPACK = "lapack_over_scalapack"
        case tsqrProfile = "tsqr_profile"
        case eckartYoungError = "eckart_young_error", lapackError = "lapack_error", tsqrError = "tsqr_error"
        case scalapackError = "scalapack_error"
        case tsqrErrorDifferencePercent = "tsqr_error_difference_percent"
        case scalapackErrorDifferencePercent = "scalapack_error_difference_percent"
        case lapackOverEckartYoungPercent = "lapack_over_eckart_young_percent"
        case tsqrOverEckartYoungPercent = "tsqr_over_eckart_young_percent"
        case tsqrSingularValueDifference = "tsqr_singular_value_difference"
        case loadBefore = "load_before", loadAfter = "load_after"
    }
}

/// What `runTallBench` measures.
public struct TallBenchOptions: Sendable {
    public var shapes: [[Int]] = [[50257, 768]]
    /// Truncation rank as a fraction of the columns (0.25: k = 192 for 768 columns).
    public var rankRatio = 0.25
    public var repeats = 2
    /// Runs of ScaLAPACK (nil: `repeats`); it can take minutes per run.
    public var scalapackRepeats: Int?
    /// BLAS threads for LAPACK on rank 0 (nil: the BLAS threads of all ranks on its node).
    public var lapackThreads: Int?
    public var tsqr = true
    public var scalapack = true
    public init() {}
}

public func runTallBench(comm: Communicator, options: TallBenchOptions) throws -> [TallBenchRow] {
    let node = try comm.splitShared()
    let nodeThreads = try node.allreduce(BLAS.threads)
    var lapackThreads = [options.lapackThreads ?? nodeThreads]
    try comm.broadcast(&lapackThreads, root: 0)
    let threads = lapackThreads[0]
    var rows: [TallBenchRow] = []
    for (index, shape) in options.shapes.enumerated() {
        let m = shape[0], n = shape[1], k = max(1, Int((Double(min(m, n)) * options.rankRatio).rounded()))
        let loadBefore = loadAverage()
        Console.status("[\(m) x \(n)] generating a power-law matrix on rank 0")
        let generated = try onRoot(comm, threads: threads) { try powerLawMatrix(rows: m, cols: n, seed: UInt64(100 + index)) }
        var data = generated.value?.data ?? []
        try comm.broadcast(&data, root: 0)
        let a = try Tensor(shape: [m, n], data: data)
        data = []

        // LAPACK on rank 0, the other ranks asleep.
        Console.status("[\(m) x \(n)] LAPACK sgesdd on rank 0 with \(threads) BLAS thread(s), \(options.repeats) run(s)")
        var lapackSeconds = Double.infinity
        var lapackLocal: (s: [Float], truncated: SVD)?
        for _ in 0..<options.repeats {
            let run = try onRoot(comm, threads: threads) { try a.svd() }
            lapackSeconds = min(lapackSeconds, run.seconds)
            if let f = run.value { lapackLocal = (f.S, f.truncated(to: k)) }
        }
        Console.status("[\(m) x \(n)] LAPACK sgesdd, QR path (column-major copy), on rank 0 with \(threads) BLAS thread(s)")
        var qrPathSeconds = Double.infinity
        for _ in 0..<options.repeats {
            qrPathSeconds = min(qrPathSeconds, try onRoot(comm, threads: threads) { _ = try a.svdColumnMajor() }.seconds)
        }
        var spectrum = lapackLocal?.s ?? []
        try comm.broadcast(&spectrum, root: 0)
        let lapack = try broadcastFactors(lapackLocal?.truncated, rows: m, cols: n, rank: k, comm: comm)
        let eckartYoung = spectrum.dropFirst(k).reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        let lapackError = try residual(a, lapack, comm: comm)
        var row = TallBenchRow(shape: [m, n], k: k, ranks: comm.size, threadsPerRank: BLAS.threads, lapackThreads: threads,
                               lapackSeconds: lapackSeconds, lapackQRPathSeconds: qrPathSeconds, eckartYoungError: eckartYoung, lapackError: lapackError,
                               lapackOverEckartYoungPercent: percent(lapackError, eckartYoung),
                               loadBefore: loadBefore, loadAfter: 0)

        if options.tsqr && m >= n { try measureTSQR(a, rank: k, repeats: options.repeats, into: &row, spectrum: spectrum, comm: comm) }

        if options.scalapack {
            Console.status("[\(m) x \(n)] ScaLAPACK psgesvd on \(comm.size) rank(s) x \(BLAS.threads) thread(s), \(options.scalapackRepeats ?? options.repeats) run(s)")
            var best = Double.infinity
            var result: SVD?
            for _ in 0..<(options.scalapackRepeats ?? options.repeats) {
                try comm.barrier()
                let t0 = Runtime.wtime()
                let f = try scalapackSVD(comm.rank == 0 ? a : nil, rows: m, cols: n, broadcastResult: true)!
                best = min(best, try comm.allreduce(Runtime.wtime() - t0, op: .max))
                result = f
            }
            let error = try residual(a, result!.truncated(to: k), comm: comm)
            row.scalapackSeconds = best
            row.lapackOverScaLAPACK = lapackSeconds / best
            row.scalapackError = error
            row.scalapackErrorDifferencePercent = percent(error, lapackError)
        }
        row.loadAfter = loadAverage()
        rows.append(row)
    }
    return rows
}

/// Runs `body` on rank 0 alone with `threads` BLAS threads, while the other ranks sleep (they
/// poll a non-blocking all-reduce every millisecond instead of spinning in a blocking one).
/// Returns rank 0's value (nil elsewhere) and its wall time, known on every rank.
func onRoot<T>(_ comm: Communicator, threads: Int, _ body: () throws -> T) throws -> (value: T?, seconds: Double) {
    var value: T?
    var seconds = [0.0]
    if comm.rank == 0 {
        let before = BLAS.threads
        BLAS.setThreads(threads)
        defer { BLAS.setThreads(before) }
        let t0 = Runtime.wtime()
        value = try body()
        seconds[0] = Runtime.wtime() - t0
    }
    try seconds.withUnsafeMutableBufferPointer { buffer in
        let request = try comm.iallreduce(buffer, op: .max)
        while try !request.test() { usleep(1000) }
    }
    return (value, seconds[0])
}

/// Rank 0's rank-k factors (`U: m x k`, `S`, `Vt: k x n`) on every rank.
func broadcastFactors(_ f: SVD?, rows m: Int, cols n: Int, rank k: Int, comm: Communicator) throws -> SVD {
    var flat = f.map { $0.S + $0.U.data + $0.Vt.data } ?? [Float](repeating: 0, count: k + m * k + k * n)
    try comm.broadcast(&flat, root: 0)
    return SVD(U: try Tensor(shape: [m, k], data: Array(flat[k..<(k + m * k)])), S: Array(flat[0..<k]),
               Vt: try Tensor(shape: [k, n], data: Array(flat[(k + m * k)...])))
}

/// ‖A − U diag(S) Vt‖_F, each rank computing its share of the rows (sgemm), summed in Double.
func residual(_ a: Tensor, _ f: SVD, comm: Communicator) throws -> Double {
    let m = a.shape[0], n = a.shape[1], k = f.S.count
    let rows = tallSVDRows(m, rank: comm.rank, ranks: comm.size)
    var local = 0.0
    if !rows.isEmpty && k > 0 {
        let mr = rows.count
        var us = Array(f.U.data[(rows.lowerBound * k)..<(rows.upperBound * k)])
        for i in 0..<mr { for j in 0..<k { us[i * k + j] *= f.S[j] } }
        var c = Array(a.data[(rows.lowerBound * n)..<(rows.upperBound * n)])
        us.withUnsafeBufferPointer { u in
            f.Vt.data.withUnsafeBufferPointer { v in
                c.withUnsafeMutableBufferPointer { cp in
                    sgemm(m: mr, n: n, k: k, alpha: -1, a: u.baseAddress!, b: v.baseAddress!, beta: 1, c: cp.baseAddress!)
                }
            }
        }
        for x in c { local += Double(x) * Double(x) }
    }
    return try comm.allreduce(local).squareRoot()
}

/// 100 · (x − reference) / reference, or nil when the reference is 0 (k = all columns).
func percent(_ x: Double, _ reference: Double) -> Double? {
    reference > 0 ? 100 * (x - reference) / reference : nil
}

/// The 1-minute load average (/proc/loadavg), or -1 when unavailable.
func loadAverage() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8),
          let first = text.split(separator: " ").first, let value = Double(first) else { return -1 }
    return value
}

/// TSQR's figures for one matrix: the best of `repeats` runs, its phases, its error against
/// LAPACK's (already in `row`) and the Eckart–Young bound, its singular values against `spectrum`.
private func measureTSQR(_ a: Tensor, rank k: Int, repeats: Int, into row: inout TallBenchRow, spectrum: [Float], comm: Communicator) throws {
    let (m, n) = (a.shape[0], a.shape[1])
    Console.status("[\(m) x \(n)] tallSVD (TSQR, k = \(k)) on \(comm.size) rank(s) x \(BLAS.threads) thread(s)")
    var best = Double.infinity
    var bestProfile = TallSVDProfile()
    var result: SVD?
    for _ in 0..<repeats {
        var profile = TallSVDProfile()
        try comm.barrier()
        let t0 = Runtime.wtime()
        let f = try tallSVD(a, rank: k, comm: comm, profile: &profile)
        let seconds = try comm.allreduce(Runtime.wtime() - t0, op: .max)
        if seconds < best { best = seconds; bestProfile = profile }
        result = f
    }
    let f = result!
    let error = try residual(a, f, comm: comm)
    row.tsqrSeconds = best
    row.tsqrProfile = bestProfile
    row.lapackOverTSQR = row.lapackSeconds / best
    row.lapackQRPathOverTSQR = row.lapackQRPathSeconds / best
    row.tsqrError = error
    row.tsqrErrorDifferencePercent = percent(error, row.lapackError)
    row.tsqrOverEckartYoungPercent = percent(error, row.eckartYoungError)
    row.tsqrSingularValueDifference = zip(f.S, spectrum).map { Double(abs($0 - $1) / $1) }.max() ?? 0
}
