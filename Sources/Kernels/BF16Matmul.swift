import CDNNL
import CKernels
import Dispatch
import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// BF16 matrix products with F32 accumulation and output: `C = A · op(B) + beta · C` with
/// A F32 activations `[m, k]` (rounded to BF16 here) and B BF16 weights, either `[n, k]` rows
/// (`transB: true`, the inference layout: y = x · Wᵀ) or `[k, n]`.
///
/// Dispatch, per call: oneDNN's matmul (Debian's libdnnl, its AVX-512 BF16 `vdpbf16ps` kernels)
/// when the CPU has AVX-512 BF16, `squeeze_isa()` allows AVX-512 (SQUEEZE_ISA / `squeeze_set_isa`
/// cap it), `forceFallback` is off and oneDNN's implementation for the shape is not a reference
/// one ("ref:..."); otherwise the fallback: the BF16 weights widened to F32 panel by panel and
/// OpenBLAS `sgemm` on the BF16-rounded activations. Both paths multiply the same BF16 values
/// exactly and accumulate in F32; they differ only in summation order (and oneDNN's kernels treat
/// subnormal BF16 inputs as zero).
///
/// Buffers: the BF16 copy of A, oneDNN's scratchpad, dense blocks of a strided C and the
/// fallback's F32 panels live in a per-thread context (grown on demand, kept for the thread's
/// life, freed when it exits), so a thread's repeated calls allocate nothing. Primitives are
/// cached per block shape, strides and beta in a process-wide, lock-protected cache: a repeated
/// shape creates nothing.
///
/// Threads: C is split into `threads` blocks (default `loopThreads`, the rank's BLAS thread count)
/// of rows (m >= 128) or else of 64-column groups, run on Dispatch's workers like our other
/// parallel loops, each block one single-threaded oneDNN primitive. oneDNN's own OpenMP (libgomp)
/// team is never started: with OMP_WAIT_POLICY's default its idle threads spin for milliseconds
/// after each parallel region, which made the next OpenBLAS sgemm about 1.15x slower and, next to
/// OpenBLAS's waiting threads, let small BF16 products (m = 17) drop to 2-40 GFLOP/s on 2 cores
/// (see docs/ARCHITECTURE.md). A caller that already runs on several threads of its own passes 1.
public enum BF16Matmul {
    /// Tests and benchmarks: always take the fallback (widened weights + sgemm).
    nonisolated(unsafe) public static var forceFallback = false

    /// Whether `gemm` runs on oneDNN's native BF16 kernels on this machine (under the current ISA
    /// cap): the CPU has AVX-512 BF16, squeeze_isa() >= AVX-512, and oneDNN's implementation of a
    /// representative product is not a reference one.
    public static var isAvailable: Bool {
        guard cpuAllowsBF16 else { return false }
        return probeImplementation.map { !isReference($0) } ?? false
    }

    /// The CPU part of the dispatch rule (no oneDNN call).
    static var cpuAllowsBF16: Bool {
        !forceFallback && squeeze_cpu_has_avx512_bf16() != 0 && squeeze_isa() >= Int32(SQUEEZE_ISA_AVX512)
    }

    /// oneDNN's implementation of a 64x64x64 transB product (nil if oneDNN refused it), once.
    static let probeImplementation: String? = {
        let key = PrimitiveKey(m: 64, n: 64, k: 64, ldb: 64, ldc: 64, transB: true, beta: 0)
        return primitiveCache.primitive(for: key)?.implementation
    }()

    static func isReference(_ implementation: String) -> Bool { implementation.hasPrefix("ref") }

    /// Keys in the primitive cache (shapes oneDNN was asked for), for tests and reports.
    public static var cachedPrimitives: Int { primitiveCache.count }

    /// The oneDNN implementation `gemm` would run for this shape ("brg:avx512_core_bf16",
    /// "gemm:jit", ...), or nil when it takes the fallback. Creates (and caches) the primitive.
    public static func implementation(m: Int, n: Int, k: Int, ldb: Int? = nil, transB: Bool, ldc: Int? = nil,
                                      beta: Float = 0, threads: Int? = nil) -> String? {
        guard cpuAllowsBF16, m > 0, n > 0, k > 0 else { return nil }
        let (alongN, ranges) = blocks(m: m, n: n, threads: max(1, threads ?? loopThreads))
        var names: [String] = []
        for r in ranges {
            let key = blockKey(r, alongN: alongN, m: m, n: n, k: k, ldb: ldb ?? (transB ? k : n), ldc: ldc ?? n,
                               transB: transB, beta: beta)
            guard let p = primitiveCache.primitive(for: key), !isReference(p.implementation) else { return nil }
            if !names.contains(p.implementation) { names.append(p.implementation) }
        }
        return names.joined(separator: ",")
    }

    /// `C [m, n] (ldc) = A [m, k] (lda, F32, rounded to BF16) · op(B) + beta · C`, F32 accumulation.
    /// `b` is BF16 `[n, k]` with row stride `ldb` when `transB` (so op(B) = Bᵀ), else `[k, n]` with
    /// row stride `ldb`. Leading dimensions default to the packed ones. `c` must not overlap a or b.
    public static func gemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int? = nil,
                            b: UnsafePointer<UInt16>, ldb: Int? = nil, transB: Bool,
                            c: UnsafeMutablePointer<Float>, ldc: Int? = nil, beta: Float = 0, threads: Int? = nil) {
        let lda = lda ?? k, ldb = ldb ?? (transB ? k : n), ldc = ldc ?? n
        precondition(m >= 0 && n >= 0 && k >= 0, "BF16Matmul.gemm: negative size \(m)x\(n)x\(k)")
        precondition(lda >= max(k, 1) && ldb >= max(transB ? k : n, 1) && ldc >= max(n, 1),
                     "BF16Matmul.gemm: leading dimensions lda \(lda) ldb \(ldb) ldc \(ldc) too small for \(m)x\(n)x\(k)")
        guard m > 0, n > 0 else { return }
        guard k > 0 else { scale(c, rows: m, cols: n, ldc: ldc, by: beta); return }
        let threads = max(1, threads ?? loopThreads)
        let context = ThreadContext.current
        if cpuAllowsBF16 && native(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, transB: transB, c: c, ldc: ldc,
                                   beta: beta, threads: threads, context: context) {
            return
        }
        fallback(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, transB: transB, c: c, ldc: ldc, beta: beta,
                 threads: threads, context: context)
    }

    /// How `native` splits C over threads: row blocks (at least 64 rows each) when m allows, as
    /// their A and C stay dense (oneDNN's brgemm kernels; strided views get its gemm:jit ones), else
    /// column blocks (64-column aligned), else one block.
    static func blocks(m: Int, n: Int, threads: Int) -> (alongN: Bool, ranges: [Range<Int>]) {
        let byM = min(threads, m / 64), byN = min(threads, n / 64)
        if byM >= 2 { return (false, (0..<byM).map { b in (m * b / byM)..<(m * (b + 1) / byM) }) }
        if byN >= 2 {
            let units = (n + 63) / 64
            return (true, (0..<byN).map { b in min(n, 64 * (units * b / byN))..<min(n, 64 * (units * (b + 1) / byN)) })
        }
        return (true, [0..<n])
    }

    /// The primitive of block `r` of C: rows x cols of C, written dense (ldc = cols). A block whose
    /// part of C is strided (ldc > cols) gets a beta = 0 primitive into a dense buffer, merged into
    /// C afterwards: oneDNN's brgemm kernels take dense blocks only, its gemm:jit ones on strided
    /// views ran 1.1-1.7x slower on one thread.
    static func blockKey(_ r: Range<Int>, alongN: Bool, m: Int, n: Int, k: Int, ldb: Int, ldc: Int, transB: Bool,
                         beta: Float) -> PrimitiveKey {
        let (rows, cols) = alongN ? (m, r.count) : (r.count, n)
        return PrimitiveKey(m: rows, n: cols, k: k, ldb: ldb, ldc: cols, transB: transB, beta: cols == ldc ? beta : 0)
    }

    /// The oneDNN path: A rounded to BF16 (in the calling thread's context), then each block of C on
    /// its own thread with its own single-threaded primitive. Returns false, having written nothing,
    /// if oneDNN refuses a block or gives it a reference implementation.
    static func native(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<UInt16>, ldb: Int,
                       transB: Bool, c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float, threads: Int,
                       context: ThreadContext) -> Bool {
        let (alongN, ranges) = blocks(m: m, n: n, threads: threads)
        let primitives = ranges.compactMap { r -> MatmulPrimitive? in
            let key = blockKey(r, alongN: alongN, m: m, n: n, k: k, ldb: ldb, ldc: ldc, transB: transB, beta: beta)
            guard let p = primitiveCache.primitive(for: key), !isReference(p.implementation) else { return nil }
            return p
        }
        guard primitives.count == ranges.count else { return false }
        let a16 = context.activations.bytes(2 * m * k).assumingMemoryBound(to: UInt16.self)
        let rowBlocks = m * k >= 1 << 16 ? min(threads, m) : 1
        if rowBlocks > 1 {
            DispatchQueue.concurrentPerform(iterations: rowBlocks) { t in
                let i0 = m * t / rowBlocks, i1 = m * (t + 1) / rowBlocks
                roundToBF16(a + i0 * lda, lda: lda, rows: i1 - i0, cols: k, into: a16 + i0 * k)
            }
        } else {
            roundToBF16(a, lda: lda, rows: m, cols: k, into: a16)
        }
        func run(_ i: Int, _ context: ThreadContext) {
            let r = ranges[i], p = primitives[i]
            let block = alongN ? c + r.lowerBound : c + r.lowerBound * ldc
            let a = alongN ? a16 : a16 + r.lowerBound * k
            let b = alongN ? (transB ? b + r.lowerBound * ldb : b + r.lowerBound) : b
            if p.key.ldc == ldc {
                p.execute(a: a, b: b, c: block, context: context)
                return
            }
            let dense = context.block.bytes(4 * p.key.m * p.key.n).assumingMemoryBound(to: Float.self)
            p.execute(a: a, b: b, c: dense, context: context)
            merge(dense, rows: p.key.m, cols: p.key.n, into: block, ldc: ldc, beta: beta)
        }
        if ranges.count == 1 {
            run(0, context)
        } else {
            DispatchQueue.concurrentPerform(iterations: ranges.count) { i in run(i, ThreadContext.current) }
        }
        return true
    }

    /// C [rows, cols] (ldc) = T [rows, cols] (dense) + beta · C.
    static func merge(_ t: UnsafePointer<Float>, rows: Int, cols: Int, into c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float) {
        for i in 0..<rows {
            let src = t + i * cols, dst = c + i * ldc
            if beta == 0 {
                dst.update(from: src, count: cols)
            } else if beta == 1 {
                for j in 0..<cols { dst[j] += src[j] }
            } else {
                for j in 0..<cols { dst[j] = src[j] + beta * dst[j] }
            }
        }
    }

    /// A [rows, cols] (row stride lda) -> packed BF16 (round to nearest even; the CKernels rule).
    static func roundToBF16(_ a: UnsafePointer<Float>, lda: Int, rows: Int, cols: Int, into dst: UnsafeMutablePointer<UInt16>) {
        if lda == cols {
            squeeze_f32_to_bf16_n(a, dst, rows * cols)
        } else {
            for i in 0..<rows { squeeze_f32_to_bf16_n(a + i * lda, dst + i * cols, cols) }
        }
    }

    /// C = beta · C (k = 0: an empty sum).
    static func scale(_ c: UnsafeMutablePointer<Float>, rows: Int, cols: Int, ldc: Int, by beta: Float) {
        for i in 0..<rows {
            let row = c + i * ldc
            if beta == 0 { row.update(repeating: 0, count: cols) } else if beta != 1 { for j in 0..<cols { row[j] *= beta } }
        }
    }

    /// Floats of one widened weight panel: about 8 MiB (as `PackedRows.panelRows`).
    static let panelFloats = 2 << 20

    /// The fallback: activations rounded to BF16 and widened back to F32 (exact), the weights widened
    /// to F32 panel by panel (rows of W, or column blocks of a [k, n] B), one sgemm per panel.
    static func fallback(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<UInt16>, ldb: Int,
                         transB: Bool, c: UnsafeMutablePointer<Float>, ldc: Int, beta: Float, threads: Int,
                         context: ThreadContext) {
        let a16 = context.activations.bytes(2 * m * k).assumingMemoryBound(to: UInt16.self)
        roundToBF16(a, lda: lda, rows: m, cols: k, into: a16)
        let a32 = context.widenedActivations.bytes(4 * m * k).assumingMemoryBound(to: Float.self)
        squeeze_bf16_to_f32_n(a16, a32, m * k)
        let width = min(n, max(16, panelFloats / k))
        let panel = context.panel.bytes(4 * width * k).assumingMemoryBound(to: Float.self)
        let run = {
            for j0 in stride(from: 0, to: n, by: width) {
                let cols = min(width, n - j0)
                if transB {
                    // Rows j0 ..< j0 + cols of W [n, k]: panel [cols, k].
                    for j in 0..<cols { squeeze_bf16_to_f32_n(b + (j0 + j) * ldb, panel + j * k, k) }
                    sgemm(transB: true, m: m, n: cols, k: k, a: a32, lda: k, b: panel, ldb: k, beta: beta, c: c + j0, ldc: ldc)
                } else {
                    // Columns j0 ..< j0 + cols of B [k, n]: panel [k, cols].
                    for l in 0..<k { squeeze_bf16_to_f32_n(b + l * ldb + j0, panel + l * cols, cols) }
                    sgemm(m: m, n: cols, k: k, a: a32, lda: k, b: panel, ldb: cols, beta: beta, c: c + j0, ldc: ldc)
                }
            }
        }
        if threads == 1 && BLAS.threads > 1 { BLAS.singleThreaded(run) } else { run() }
    }
}

// MARK: - oneDNN primitives

/// What a oneDNN matmul primitive is specialised for (A is always the packed BF16 copy, lda = k;
/// C is written dense, ldc = n; every primitive runs on one thread).
struct PrimitiveKey: Hashable {
    var m: Int, n: Int, k: Int, ldb: Int, ldc: Int
    var transB: Bool
    var beta: Float
}

/// Keeps oneDNN on the calling thread: OpenMP's thread count for the calling thread's parallel
/// regions is 1 (so libgomp starts no team), set before every primitive creation and execution.
@inline(__always)
func keepOpenMPSingleThreaded() {
    if omp_get_max_threads() != 1 { omp_set_num_threads(1) }
}

/// The CPU engine, once (nil if oneDNN cannot create one).
nonisolated(unsafe) let dnnlEngine: OpaquePointer? = {
    var engine: OpaquePointer?
    guard dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success else { return nil }
    return engine
}()

/// One oneDNN matmul primitive: BF16 [m, k] (packed) x BF16 op(B) -> F32 [m, n] (ldc), with a sum
/// post-op for beta != 0, and a user-provided scratchpad (so concurrent calls from several threads
/// each bring their own). Destroyed when the cache and every caller running it let go.
final class MatmulPrimitive: @unchecked Sendable {
    let key: PrimitiveKey
    let primitive: OpaquePointer
    let implementation: String
    let src: dnnl_memory_desc_t, weights: dnnl_memory_desc_t, dst: dnnl_memory_desc_t, scratch: dnnl_memory_desc_t
    let scratchBytes: Int

    private init(key: PrimitiveKey, primitive: OpaquePointer, implementation: String, src: dnnl_memory_desc_t,
                 weights: dnnl_memory_desc_t, dst: dnnl_memory_desc_t, scratch: dnnl_memory_desc_t) {
        self.key = key
        self.primitive = primitive
        self.implementation = implementation
        (self.src, self.weights, self.dst, self.scratch) = (src, weights, dst, scratch)
        var pad = scratch
        scratchBytes = dnnl_memory_desc_get_size(&pad)
    }

    /// Creates the primitive for `key` on `engine`, or nil if oneDNN refuses the descriptor.
    static func make(_ key: PrimitiveKey, engine: OpaquePointer) -> MatmulPrimitive? {
        let (m, n, k) = (Int64(key.m), Int64(key.n), Int64(key.k))
        var src = dnnl_memory_desc_t(), weights = dnnl_memory_desc_t(), dst = dnnl_memory_desc_t()
        guard dnnl_memory_desc_init_by_strides(&src, 2, [m, k], dnnl_bf16, [k, 1]) == dnnl_success,
              dnnl_memory_desc_init_by_strides(&weights, 2, [k, n], dnnl_bf16,
                                               key.transB ? [1, Int64(key.ldb)] : [Int64(key.ldb), 1]) == dnnl_success,
              dnnl_memory_desc_init_by_strides(&dst, 2, [m, n], dnnl_f32, [Int64(key.ldc), 1]) == dnnl_success
        else { return nil }
        var desc = dnnl_matmul_desc_t()
        guard dnnl_matmul_desc_init(&desc, &src, &weights, nil, &dst) == dnnl_success else { return nil }
        var attr: OpaquePointer?
        guard dnnl_primitive_attr_create(&attr) == dnnl_success else { return nil }
        defer { dnnl_primitive_attr_destroy(attr) }
        dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user)
        if key.beta != 0 {
            var ops: OpaquePointer?
            guard dnnl_post_ops_create(&ops) == dnnl_success else { return nil }
            defer { dnnl_post_ops_destroy(ops) }
            guard dnnl_post_ops_append_sum(ops, key.beta) == dnnl_success,
                  dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success else { return nil }
        }
        // oneDNN sizes its blocking for the thread count it sees at creation.
        keepOpenMPSingleThreaded()
        var pd: OpaquePointer?
        guard dnnl_primitive_desc_create(&pd, &desc, attr, engine, nil) == dnnl_success, let pd else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        var name: UnsafePointer<CChar>?
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name)
        guard let md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0) else { return nil }
        var p: OpaquePointer?
        guard dnnl_primitive_create(&p, pd) == dnnl_success, let p else { return nil }
        return MatmulPrimitive(key: key, primitive: p, implementation: name.map { String(cString: $0) } ?? "unknown",
                               src: src, weights: weights, dst: dst, scratch: md.pointee)
    }

    deinit { dnnl_primitive_destroy(primitive) }

    /// Runs the product on the calling thread's stream (blocking) with its scratchpad.
    func execute(a: UnsafePointer<UInt16>, b: UnsafePointer<UInt16>, c: UnsafeMutablePointer<Float>, context: ThreadContext) {
        guard let engine = dnnlEngine, let stream = context.stream(engine) else {
            preconditionFailure("BF16Matmul: oneDNN stream unavailable")
        }
        let pad = scratchBytes > 0 ? context.scratchpad.bytes(scratchBytes) : nil
        var (srcMD, weightsMD, dstMD, scratchMD) = (src, weights, dst, scratch)
        var memories: [OpaquePointer?] = [nil, nil, nil, nil]
        defer { for mem in memories where mem != nil { dnnl_memory_destroy(mem) } }
        let made = dnnl_memory_create(&memories[0], &srcMD, engine, UnsafeMutableRawPointer(mutating: a)) == dnnl_success
            && dnnl_memory_create(&memories[1], &weightsMD, engine, UnsafeMutableRawPointer(mutating: b)) == dnnl_success
            && dnnl_memory_create(&memories[2], &dstMD, engine, c) == dnnl_success
            && dnnl_memory_create(&memories[3], &scratchMD, engine, pad) == dnnl_success
        precondition(made, "BF16Matmul: oneDNN memory creation failed")
        var args = [dnnl_exec_arg_t(arg: squeeze_dnnl_arg_src(), memory: memories[0]),
                    dnnl_exec_arg_t(arg: squeeze_dnnl_arg_weights(), memory: memories[1]),
                    dnnl_exec_arg_t(arg: squeeze_dnnl_arg_dst(), memory: memories[2]),
                    dnnl_exec_arg_t(arg: squeeze_dnnl_arg_scratchpad(), memory: memories[3])]
        keepOpenMPSingleThreaded()
        let status = dnnl_primitive_execute(primitive, stream, Int32(args.count), &args)
        precondition(status == dnnl_success && dnnl_stream_wait(stream) == dnnl_success,
                     "BF16Matmul: oneDNN matmul (\(implementation)) failed with status \(status.rawValue)")
    }
}

/// Process-wide primitive cache (lock-protected). A key oneDNN refused is remembered too (as nil),
/// so the fallback decision costs one lookup. Past `capacity` keys the cache starts over.
final class PrimitiveCache: @unchecked Sendable {
    private var entries: [PrimitiveKey: MatmulPrimitive?] = [:]
    private var mutex = pthread_mutex_t()
    let capacity = 256

    init() { pthread_mutex_init(&mutex, nil) }

    func primitive(for key: PrimitiveKey) -> MatmulPrimitive? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if let hit = entries[key] { return hit }
        if entries.count >= capacity { entries.removeAll() }
        let made = dnnlEngine.flatMap { MatmulPrimitive.make(key, engine: $0) }
        entries[key] = .some(made)
        return made
    }

    /// Number of cached keys (tests and reports).
    var count: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return entries.count
    }
}

let primitiveCache = PrimitiveCache()

// MARK: - Per-thread buffers

/// A growable, 64-byte aligned byte buffer.
final class GrowableBuffer {
    private(set) var pointer: UnsafeMutableRawPointer?
    private(set) var capacity = 0

    func bytes(_ n: Int) -> UnsafeMutableRawPointer {
        if n > capacity || pointer == nil {
            pointer?.deallocate()
            capacity = max(n, 64, capacity + capacity / 2)
            pointer = .allocate(byteCount: capacity, alignment: 64)
        }
        return pointer!
    }

    deinit { pointer?.deallocate() }
}

/// One thread's oneDNN stream and buffers (see `BF16Matmul`), created at its first call and
/// released by a pthread key destructor when the thread exits.
final class ThreadContext {
    let activations = GrowableBuffer(), block = GrowableBuffer(), scratchpad = GrowableBuffer()
    let widenedActivations = GrowableBuffer(), panel = GrowableBuffer()
    private var dnnlStream: OpaquePointer?

    func stream(_ engine: OpaquePointer) -> OpaquePointer? {
        if dnnlStream == nil {
            var s: OpaquePointer?
            if dnnl_stream_create(&s, engine, UInt32(dnnl_stream_default_flags.rawValue)) == dnnl_success { dnnlStream = s }
        }
        return dnnlStream
    }

    deinit { if let s = dnnlStream { dnnl_stream_destroy(s) } }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let status = pthread_key_create(&key) { p in
            if let p { Unmanaged<ThreadContext>.fromOpaque(p).release() }
        }
        precondition(status == 0, "BF16Matmul: pthread_key_create failed")
        return key
    }()

    /// The calling thread's context.
    static var current: ThreadContext {
        if let p = pthread_getspecific(key) { return Unmanaged<ThreadContext>.fromOpaque(p).takeUnretainedValue() }
        let context = ThreadContext()
        pthread_setspecific(key, Unmanaged.passRetained(context).toOpaque())
        return context
    }
}
