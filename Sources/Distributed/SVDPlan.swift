/// How to compute one thin SVD when `ranks` ranks, each holding the whole matrix, would otherwise
/// wait for it (see `distributedSVDPath`).
public enum SVDPath: String, Sendable, Codable, CaseIterable {
    /// LAPACK `sgesdd` on one rank with its threads; for a tall row-major matrix preferably
    /// `Tensor.svdColumnMajor()` (LAPACK's QR path), about 3x faster than `Tensor.svd()` there.
    case lapack
    /// `tallSVD`: TSQR over the ranks (also on one rank: QR, then the SVD of R). Needs
    /// rows >= cols; for a wide matrix factor the transpose (`Aᵀ = V S Uᵀ`).
    case tsqr
    /// `scalapackSVD` (`p?gesvd`) on a 2-D block-cyclic grid.
    case scalapack
}

/// The measured thresholds behind `distributedSVDPath`.
public enum SVDPlan {
    /// TSQR on P ranks pays when `max(rows, cols) / (P · min(rows, cols))`, the height of each
    /// rank's block in units of its width, is at least `tsqrAspectBase + tsqrAspectPerKept · k / n`
    /// (7 at k = n/4, 16 at k = n). Below it the SVD of the stacked R on rank 0 (≈ 0.3 s for
    /// n = 768, the other ranks waiting; it grows with P) outweighs what TSQR saves.
    public static let tsqrAspectBase = 4.0
    public static let tsqrAspectPerKept = 12.0
}

/// Measured with `squeeze bench tall` (see its JSON) on a shared 2-core VM (Xeon with AVX-512,
/// OpenBLAS 0.3.21 with its SKYLAKEX kernels, 1-minute load average 3-8 from other users, so
/// single figures move by up to 30%), power-law matrices, wall-clock seconds, best of 2 runs
/// unless noted. LAPACK ran on 1 rank x 2 threads (the other rank asleep), TSQR and ScaLAPACK on
/// 2 ranks x 1 thread, TSQR also on 1 rank x 2 threads (a separate run). "LQ path" is
/// `Tensor.svd()` (sgesdd of the column-major Aᵀ, what the compressor calls), "QR path"
/// `Tensor.svdColumnMajor()` (sgesdd of a column-major copy):
///
///     shape        k     LQ path  QR path  TSQR 2x1  TSQR 1x2  ScaLAPACK 2x1
///     1536x768     192    0.81     0.55     0.84      0.71
///     3072x768     192    1.09     0.51     0.83      0.82
///     4608x768     192    0.98     0.41     0.55
///     6144x768     192    1.29     0.59     0.66      0.48
///     12288x768    192    2.55     1.05     0.63      0.65
///     50257x768    192   10.66     3.89     1.81      1.64     195 (1 run; 445 in an earlier one)
///     3072x768     768    0.70     0.31     0.92
///     6144x768     768    1.04     0.53     1.05      0.66
///     12288x768    768    2.44     1.16     1.63      1.10
///     50257x768    768    9.05     4.30     2.97      3.43
///     50257x1600   400   36.4     17.1     10.5
///     1024x1024    256    0.67                                   18.9 (1 run)
///     2048x2048    512    4.42                                  122   (1 run)
///     3072x3072    768   18.5                                   248   (1 run)
///     4096x4096   1024   18.2                                   554   (1 run)
///
/// TSQR beats the QR path from a per-rank aspect (rows / (ranks · cols)) of about 5-8 at
/// k = n/4 and 10-30 at k = n, and the LQ path from about 2; on this 2-core machine 2 ranks x
/// 1 thread are no faster than 1 rank x 2 threads, the gain is the algorithm's (no Q formed, U
/// only for k columns, `sgeqrt`). ScaLAPACK's `psgesvd` (QR iteration, the singular vectors
/// updated by BLAS-1 rotations) was 13-30x slower than `sgesdd` (divide and conquer) on one
/// rank for every shape measured. Even scaling perfectly from those 2-rank figures it would need
/// about 30-60 ranks to break even: the compressor never picks it unless `--scalapack-min` asks
/// (`Compressor.svdPath`).
///
/// How many of `ranks` ranks `tallSVD` should use for a `rows x cols` matrix truncated to
/// `rank`: the most that keep each rank's block at least `SVDPlan`'s aspect tall (more ranks
/// make the stacked R, whose SVD runs on one rank, taller than the split saves), or 0 when not
/// even one rank's QR + SVD of R beats LAPACK. Run it on a sub-communicator of that many ranks.
public func tsqrRankCount(rows: Int, cols: Int, ranks: Int, rank k: Int? = nil) -> Int {
    let long = max(rows, cols), short = min(rows, cols)
    guard short > 0, ranks >= 1 else { return 0 }
    let kept = Double(min(max(k ?? short, 1), short))
    let aspect = SVDPlan.tsqrAspectBase + SVDPlan.tsqrAspectPerKept * kept / Double(short)
    return min(ranks, Int((Double(long) / (Double(short) * aspect)).rounded(.down)))
}
