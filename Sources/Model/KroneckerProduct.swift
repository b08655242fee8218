import Kernels
import Tensor

/// `out [N, n1·n2] += x [N, m1·m2] · Σ_i A_i ⊗ B_i` as two GEMMs over all terms at once, and its
/// backward. Every buffer comes from an `Arena`: `Saved` (what backward needs: the concatenated
/// factors and the intermediate product) from the component's slice of the training arena, the
/// rest from the shared scratch; the same layout functions size both (`Arena.floats`).
enum KroneckerProduct {
    /// The factors of every term side by side, so each product is one GEMM over all terms, and the
    /// intermediate product backward needs:
    /// B first: aCat [k·m1, n1] (rows (i, a) = s_i A_i[a, :]), bCat [m2, k·n2] (columns (i, d)),
    ///          mid = Z'' [k·m1, N·n2];
    /// A first: aCat [m1, k·n1] (columns (i, c)), bCat [k·m2, n2] (rows (i, b)),
    ///          mid = U [N·n1, k·m2].
    struct Saved {
        let aCat: UnsafeMutablePointer<Float>, bCat: UnsafeMutablePointer<Float>, mid: UnsafeMutablePointer<Float>
        init(_ a: Arena, shape s: KroneckerShape, terms k: Int, rows N: Int) {
            aCat = a.take(k * s.m1 * s.n1)
            bCat = a.take(k * s.m2 * s.n2)
            mid = intermediate(a, shape: s, terms: k, rows: N)
        }
        init(aCat: UnsafeMutablePointer<Float>, bCat: UnsafeMutablePointer<Float>, mid: UnsafeMutablePointer<Float>) {
            self.aCat = aCat
            self.bCat = bCat
            self.mid = mid
        }
    }

    /// The intermediate product of N rows (Z'' or U).
    @discardableResult
    static func intermediate(_ a: Arena, shape s: KroneckerShape, terms k: Int, rows N: Int) -> UnsafeMutablePointer<Float> {
        a.take(s.bFirst ? k * s.m1 * N * s.n2 : N * s.n1 * k * s.m2)
    }

    /// Lays out the scaled factors `a` [m1, n1] and `b` [m2, n2] of every term as `Saved` says.
    static func concatenate(a: [[Float]], b: [[Float]], shape s: KroneckerShape, into saved: Saved) {
        concatenate(a: a, b: b, shape: s, aCat: saved.aCat, bCat: saved.bCat)
    }

    static func concatenate(a: [[Float]], b: [[Float]], shape s: KroneckerShape, aCat: UnsafeMutablePointer<Float>, bCat: UnsafeMutablePointer<Float>) {
        let (m1, n1, m2, n2, k) = (s.m1, s.n1, s.m2, s.n2, a.count), bFirst = s.bFirst
        for i in 0..<k {
            for r in 0..<m1 { for c in 0..<n1 { aCat[bFirst ? (i * m1 + r) * n1 + c : r * k * n1 + i * n1 + c] = a[i][r * n1 + c] } }
            for r in 0..<m2 { for c in 0..<n2 { bCat[bFirst ? r * k * n2 + i * n2 + c : (i * m2 + r) * n2 + c] = b[i][r * n2 + c] } }
        }
    }

    /// Scratch of `forward` (after its `Saved` when that is scratch too).
    @discardableResult
    static func forwardScratch(_ a: Arena, _ s: KroneckerShape, _ k: Int, _ N: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) {
        s.bFirst ? (a.take(N * s.m1 * k * s.n2), a.take(s.n1 * N * s.n2))     // Z, Y'
                 : (a.take(s.m1 * N * s.m2), a.take(k * s.n1 * N * s.m2))     // X', U'
    }

    /// out [N, n1·n2] += x [N, m1·m2] · Σ A_i ⊗ B_i, with the factors already in `saved`.
    static func forward(_ x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, shape s: KroneckerShape, terms k: Int,
                        saved: Saved, scratch: Arena) {
        let (m1, n1, m2, n2) = (s.m1, s.n1, s.m2, s.n2)
        let (t0, t1) = forwardScratch(scratch, s, k, N)
        if s.bFirst {
            // Z [N·m1, k·n2] = X [N·m1, m2] · bCat;  Z'' [k·m1, N·n2] = Z with the N and k axes swapped;
            // Y' [n1, N·n2] = aCatᵀ · Z'';  out[n, c, d] += Y'[c, n·n2 + d].
            let z = t0, y = t1
            sgemm(m: N * m1, n: k * n2, k: m2, a: x, b: saved.bCat, c: z)
            swapAxes02(z, N, m1, k, n2, into: saved.mid)
            sgemm(transA: true, m: n1, n: N * n2, k: k * m1, a: saved.aCat, b: saved.mid, c: y)
            parallelFor(N, minChunk: 16) { rows in
                for n in rows {
                    for c in 0..<n1 { add(y + c * N * n2 + n * n2, into: out + n * n1 * n2 + c * n2, count: n2) }
                }
            }
            return
        }
        // X' [m1, N·m2];  U' [k·n1, N·m2] = aCatᵀ · X';  U [N·n1, k·m2] = U' with the axes swapped;
        // out [N·n1, n2] += U · bCat.
        let xp = t0, up = t1
        permuteOuter(x, N, m1, m2, into: xp)
        sgemm(transA: true, m: k * n1, n: N * m2, k: m1, a: saved.aCat, b: xp, c: up)
        swapAxes02(up, k, n1, N, m2, into: saved.mid)
        sgemm(m: N * n1, n: n2, k: k * m2, a: saved.mid, b: saved.bCat, beta: 1, c: out)
    }

    /// Scratch of `backward`.
    static func backwardScratch(_ a: Arena, _ s: KroneckerShape, _ k: Int, _ N: Int) {
        _ = a.take(s.m1 * s.n1); _ = a.take(s.m2 * s.n2)                      // G_A, dB of one term
        if s.bFirst {
            _ = a.take(s.n1 * N * s.n2); _ = a.take(k * s.m1 * s.n1)           // dY', G_A of all terms
            _ = a.take(k * s.m1 * N * s.n2); _ = a.take(N * s.m1 * k * s.n2)   // dZ'', dZ
            _ = a.take(s.m2 * k * s.n2)                                        // dB of all terms
        } else {
            _ = a.take(k * s.m2 * s.n2); _ = a.take(N * s.n1 * k * s.m2)       // dB of all terms, dU
            _ = a.take(k * s.n1 * N * s.m2); _ = a.take(s.m1 * N * s.m2)       // dU', X'
            _ = a.take(s.m1 * k * s.n1); _ = a.take(s.m1 * N * s.m2)           // G_A of all terms, dX'
            _ = a.take(N * s.m1 * s.m2)                                        // dX to accumulate
        }
    }

    /// Backward of `forward`: `termGradients(i, G_A, dB)` receives each term's factor gradients
    /// (G_A with the scale at 1; it may overwrite G_A); dx [N, in] (+)= dY · Wᵀ.
    static func backward(_ x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool, N: Int,
                         shape s: KroneckerShape, terms k: Int, saved: Saved, scratch a: Arena,
                         termGradients: (Int, UnsafeMutablePointer<Float>, UnsafePointer<Float>) -> Void) {
        let (m1, n1, m2, n2) = (s.m1, s.n1, s.m2, s.n2)
        let gA = a.take(m1 * n1), dB = a.take(m2 * n2)
        if s.bFirst {
            let dyp = a.take(n1 * N * n2), gAll = a.take(k * m1 * n1), dzpp = a.take(k * m1 * N * n2), dz = a.take(N * m1 * k * n2)
            let dBAll = a.take(m2 * k * n2)
            permuteOuter(dout, N, n1, n2, into: dyp)
            // G_A for all terms [k·m1, n1] = Z'' · dY'ᵀ;  dZ'' [k·m1, N·n2] = aCat · dY'
            sgemm(transB: true, m: k * m1, n: n1, k: N * n2, a: saved.mid, b: dyp, c: gAll)
            sgemm(m: k * m1, n: N * n2, k: n1, a: saved.aCat, b: dyp, c: dzpp)
            // dZ [N·m1, k·n2];  dB for all terms [m2, k·n2] = Xᵀ · dZ;  dX (+)= dZ · bCatᵀ
            swapAxes02(dzpp, k, m1, N, n2, into: dz)
            sgemm(transA: true, m: m2, n: k * n2, k: N * m1, a: x, b: dz, c: dBAll)
            if let dx { sgemm(transB: true, m: N * m1, n: m2, k: k * n2, a: dz, b: saved.bCat, beta: accumulate ? 1 : 0, c: dx) }
            for i in 0..<k {
                gA.update(from: gAll + i * m1 * n1, count: m1 * n1)
                for r in 0..<m2 { (dB + r * n2).update(from: dBAll + r * k * n2 + i * n2, count: n2) }
                termGradients(i, gA, dB)
            }
            return
        }
        let dBAll = a.take(k * m2 * n2), du = a.take(N * n1 * k * m2), dup = a.take(k * n1 * N * m2), xp = a.take(m1 * N * m2)
        let gAll = a.take(m1 * k * n1), dxp = a.take(m1 * N * m2), t = a.take(N * m1 * m2)
        // dB for all terms [k·m2, n2] = Uᵀ · dY;  dU [N·n1, k·m2] = dY · bCatᵀ;  dU' [k·n1, N·m2]
        sgemm(transA: true, m: k * m2, n: n2, k: N * n1, a: saved.mid, b: dout, c: dBAll)
        sgemm(transB: true, m: N * n1, n: k * m2, k: n2, a: dout, b: saved.bCat, c: du)
        swapAxes02(du, N, n1, k, m2, into: dup)
        // G_A for all terms [m1, k·n1] = X' · dU'ᵀ;  dX' [m1, N·m2] = aCat · dU'
        permuteOuter(x, N, m1, m2, into: xp)
        sgemm(transB: true, m: m1, n: k * n1, k: N * m2, a: xp, b: dup, c: gAll)
        if let dx {
            sgemm(m: m1, n: N * m2, k: k * n1, a: saved.aCat, b: dup, c: dxp)
            if accumulate {
                permuteOuter(dxp, m1, N, m2, into: t)
                parallelFor(N * m1 * m2, minChunk: 8192) { r in for j in r { dx[j] += t[j] } }
            } else {
                permuteOuter(dxp, m1, N, m2, into: dx)
            }
        }
        for i in 0..<k {
            for r in 0..<m1 { (gA + r * n1).update(from: gAll + r * k * n1 + i * n1, count: n1) }
            dB.update(from: dBAll + i * m2 * n2, count: m2 * n2)
            termGradients(i, gA, dB)
        }
    }
}

/// src [P, Q, R] -> dst [Q, P, R] (swap the two outer axes; its own inverse with P and Q exchanged).
func permuteOuter(_ src: UnsafePointer<Float>, _ P: Int, _ Q: Int, _ R: Int, into dst: UnsafeMutablePointer<Float>) {
    parallelFor(P, minChunk: 16) { ps in
        for p in ps {
            for q in 0..<Q { (dst + (q * P + p) * R).update(from: src + (p * Q + q) * R, count: R) }
        }
    }
}

/// src [P, Q, R, S] -> dst [R, Q, P, S] (swap the first and third axes; its own inverse with P
/// and R exchanged).
func swapAxes02(_ src: UnsafePointer<Float>, _ P: Int, _ Q: Int, _ R: Int, _ S: Int, into dst: UnsafeMutablePointer<Float>) {
    parallelFor(P, minChunk: 4) { ps in
        for p in ps {
            for q in 0..<Q {
                for r in 0..<R { (dst + ((r * Q + q) * P + p) * S).update(from: src + ((p * Q + q) * R + r) * S, count: S) }
            }
        }
    }
}
