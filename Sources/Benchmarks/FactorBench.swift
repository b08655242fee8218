import COpenBLAS
import Compression
import Model
import Foundation
import Tensor

/// `squeeze bench factor`: low rank and nearest-Kronecker factorization of distilgpt2-shaped
/// matrices against a bare LAPACKE_sgesdd on the same matrix, and randomized vs full SVD.
public struct FactorBenchRow: Codable, Sendable {
    public var method: String
    public var shape: [Int]
    /// Our full-SVD factorization time / bare sgesdd on the same (rearranged) matrix.
    public var seconds: Double
    public var bareSeconds: Double
    public var ratioToLAPACK: Double
    /// Small-k case: full-SVD path time / randomized path time, and the extra error.
    public var k: Int
    public var randomizedSeconds: Double
    public var speedup: Double
    public var extraErrorPercent: Double
}

/// A test matrix with a power-law spectrum σ_i = (i + 1)^-0.7 (like trained weights, unlike
/// Gaussian noise), built from random orthonormal factors.
func powerLawMatrix(rows m: Int, cols n: Int, seed: UInt64) throws -> Tensor {
    let k = min(m, n)
    let u = try orthonormalColumns(Tensor.randomNormal(shape: [m, k], seed: seed))
    let v = try orthonormalColumns(Tensor.randomNormal(shape: [n, k], seed: seed + 1))
    var us = u
    for i in 0..<m { for j in 0..<k { us.data[i * k + j] *= Float(pow(Double(j + 1), -0.7)) } }
    return try us.matmul(v, transposeOther: true)
}

func bareSgesdd(_ a: Tensor) -> () -> Void {
    let m = a.shape[0], n = a.shape[1], k = min(m, n)
    var s = [Float](repeating: 0, count: k), u = [Float](repeating: 0, count: m * k), vt = [Float](repeating: 0, count: k * n)
    return {
        var work = a.data
        _ = LAPACKE_sgesdd(LAPACK_COL_MAJOR, Int8(UInt8(ascii: "S")), Int32(n), Int32(m), &work, Int32(n), &s, &vt, Int32(n), &u, Int32(k))
    }
}

public func runFactorBench(includeEmbedding: Bool = true) throws -> [FactorBenchRow] {
    var shapes = [[768, 2304], [768, 768], [768, 3072], [3072, 768]]
    if includeEmbedding { shapes.append([50257, 768]) }
    var rows: [FactorBenchRow] = []
    for (i, sh) in shapes.enumerated() {
        let w = try powerLawMatrix(rows: sh[0], cols: sh[1], seed: UInt64(10 * i + 1))
        let repeats = sh[0] > 10000 ? 1 : 2
        // Low rank, half the rank: a full SVD is needed.
        let r = min(sh[0], sh[1]) / 2
        let (tOurs, tBare) = try bestTimes(repeats: repeats, { _ = try LowRank.factorize(w, rank: r) }, bareSgesdd(w))
        // Small rank: randomized vs full.
        let k = 16
        let tFull = try bestTime(repeats: repeats) { _ = try LowRank.factorize(w, rank: k, randomizedBelow: 0) }
        let tRand = try bestTime(repeats: repeats) { _ = try LowRank.factorize(w, rank: k, randomizedBelow: 1) }
        let eFull = try LowRank.factorize(w, rank: k, randomizedBelow: 0).error
        let eRandF = try LowRank.factorize(w, rank: k, randomizedBelow: 1)
        let eRand = Double((w - (try eRandF.w0.matmul(eRandF.w1, transposeOther: true))).frobeniusNorm)
        rows.append(FactorBenchRow(method: "lowrank", shape: sh, seconds: tOurs, bareSeconds: tBare, ratioToLAPACK: tOurs / tBare,
                                   k: k, randomizedSeconds: tRand, speedup: tFull / tRand, extraErrorPercent: 100 * (eRand - eFull) / eFull))
        // Nearest Kronecker with near-square factors, full SVD of R(W) (all terms) vs bare sgesdd of R(W).
        guard sh[0] < 10000 else { continue }
        let s = KroneckerShape(m1: 32, n1: sh[1] / 24, m2: sh[0] / 32, n2: 24)
        let R = try NearestKronecker.rearrange(w, s)
        let terms = min(R.shape[0], R.shape[1]) / 2
        let (tk, tkb) = try bestTimes(repeats: repeats, { _ = try NearestKronecker.factorize(w, shape: s, terms: terms) }, bareSgesdd(R))
        let kt = 4
        let tkFull = try bestTime(repeats: repeats) { _ = try NearestKronecker.factorize(w, shape: s, terms: kt, randomizedBelow: 0) }
        let tkRand = try bestTime(repeats: repeats) { _ = try NearestKronecker.factorize(w, shape: s, terms: kt, randomizedBelow: 1) }
        let full = try NearestKronecker.factorize(w, shape: s, terms: kt, randomizedBelow: 0)
        let rand = try NearestKronecker.factorize(w, shape: s, terms: kt, randomizedBelow: 1)
        let eR = Double((w - NearestKronecker.reconstruct(a: rand.a, b: rand.b)).frobeniusNorm)
        rows.append(FactorBenchRow(method: "kronecker [\(s.m1)x\(s.n1)]⊗[\(s.m2)x\(s.n2)]", shape: sh, seconds: tk, bareSeconds: tkb,
                                   ratioToLAPACK: tk / tkb, k: kt, randomizedSeconds: tkRand, speedup: tkFull / tkRand,
                                   extraErrorPercent: 100 * (eR - full.error) / full.error))
    }
    return rows
}
