import COpenBLAS
import Tensor

/// `squeeze bench blas`: sgemm peak and the overhead of our BLAS/LAPACK wrappers.
public struct BLASBenchResult: Codable, Sendable {
    public var threads: Int
    public var sgemmSize: Int
    public var sgemmGflops: Double
    public var matmulWrapperSeconds: Double
    public var matmulBareSeconds: Double
    public var matmulRatio: Double
    public var svdShape: [Int]
    public var svdWrapperSeconds: Double
    public var svdBareSeconds: Double
    public var svdRatio: Double
}

/// Measures single-process sgemm GFLOP/s at `size`^3 and wrapper / bare-call time ratios.
public func runBLASBench(size: Int = 2048, svdRows: Int = 1024, svdCols: Int = 768, repeats: Int = 5) throws -> BLASBenchResult {
    let a = Tensor.randomNormal(shape: [size, size], seed: 1)
    let b = Tensor.randomNormal(shape: [size, size], seed: 2)
    var c = [Float](repeating: 0, count: size * size)
    let bare = {
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(size), Int32(size), Int32(size),
                                1, pa.baseAddress, Int32(size), pb.baseAddress, Int32(size), 0, pc.baseAddress, Int32(size))
                }
            }
        }
    }
    var sink: Float = 0
    let (tWrap, tBare) = try bestTimes(repeats: repeats, { sink += try a.matmul(b).data[0] }, bare)
    let flops = 2.0 * Double(size) * Double(size) * Double(size)

    let m = Tensor.randomNormal(shape: [svdRows, svdCols], seed: 3)
    let k = min(svdRows, svdCols)
    var s = [Float](repeating: 0, count: k), u = [Float](repeating: 0, count: svdRows * k), vt = [Float](repeating: 0, count: k * svdCols)
    let bareSVD = {
        var work = m.data
        _ = LAPACKE_sgesdd(LAPACK_COL_MAJOR, Int8(UInt8(ascii: "S")), Int32(svdCols), Int32(svdRows),
                           &work, Int32(svdCols), &s, &vt, Int32(svdCols), &u, Int32(k))
    }
    let (sWrap, sBare) = try bestTimes(repeats: max(3, repeats / 2), { sink += try m.svd().S[0] }, bareSVD)
    _ = sink
    return BLASBenchResult(threads: BLAS.threads, sgemmSize: size, sgemmGflops: flops / tBare / 1e9,
                           matmulWrapperSeconds: tWrap, matmulBareSeconds: tBare, matmulRatio: tWrap / tBare,
                           svdShape: [svdRows, svdCols], svdWrapperSeconds: sWrap, svdBareSeconds: sBare,
                           svdRatio: sWrap / sBare)
}

/// OpenBLAS sgemm GFLOP/s at `size`^3 (best of `repeats`): the peak other benchmarks compare to.
public func measureSgemmPeak(size: Int = 2048, repeats: Int = 3) -> Double {
    let a = Tensor.randomNormal(shape: [size, size], seed: 1)
    let b = Tensor.randomNormal(shape: [size, size], seed: 2)
    var c = [Float](repeating: 0, count: size * size)
    let t = bestTime(repeats: repeats) {
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    sgemm(m: size, n: size, k: size, a: pa.baseAddress!, b: pb.baseAddress!, c: pc.baseAddress!)
                }
            }
        }
    }
    return 2.0 * Double(size * size) * Double(size) / t / 1e9
}
