import Foundation
import Model
import Tensor

/// What a job will hold in memory, made before anything big is allocated: per rank (student
/// weights, gradients, the optimizer shard, activations, workspaces) and per node (the shared
/// teacher and token data), against what the node has (MemAvailable, shared by its ranks).
public struct MemoryEstimate: Codable, Sendable {
    /// One line of the estimate.
    public struct Item: Codable, Sendable {
        public let name: String
        public let bytes: Int
        /// Held once per node (shared window) rather than once per rank.
        public let perNode: Bool
    }

    public var items: [Item] = []
    public var ranksPerNode: Int
    /// MemAvailable of this node, when known.
    public var available: Int?

    public init(ranksPerNode: Int, available: Int? = MemoryEstimate.availableBytes()) {
        self.ranksPerNode = max(ranksPerNode, 1)
        self.available = available
    }

    /// Runtime, OpenMPI, OpenBLAS and the tokenizer of one process running `threads` BLAS
    /// threads. Measured (peak RSS less what the estimate counts) on a Zen 4 VM with Debian 12's
    /// OpenMPI and OpenBLAS: a compress run without distillation peaked 112 MiB above its weights,
    /// on 1 and 2 ranks alike; a distillation's GEMMs on a second BLAS thread add 60 MiB (its
    /// buffers and malloc arena).
    public static func processOverhead(threads: Int = BLAS.threads) -> Int { (112 << 20) + (60 << 20) * max(threads - 1, 0) }

    public mutating func add(_ name: String, _ bytes: Int, perNode: Bool = false) { items.append(Item(name: name, bytes: bytes, perNode: perNode)) }

    public var perRank: Int { items.filter { !$0.perNode }.reduce(0) { $0 + $1.bytes } }
    public var perNodeShared: Int { items.filter(\.perNode).reduce(0) { $0 + $1.bytes } }
    /// The node's total: every rank's own memory plus one copy of the shared items.
    public var perNode: Int { ranksPerNode * perRank + perNodeShared }
    /// The node total is within 90% of MemAvailable (the rest is headroom for the system).
    public var fits: Bool { available.map { Double(perNode) <= 0.9 * Double($0) } ?? true }

    /// A table of the items and totals.
    public func describe() -> String {
        var lines = ["memory estimate (\(ranksPerNode) rank(s) on this node):"]
        for i in items { lines.append("  " + i.name.padding(toLength: 50, withPad: " ", startingAt: 0) + formatBytes(i.bytes).leftPad(10) + (i.perNode ? "  per node" : "  per rank")) }
        lines.append("  " + "per rank".padding(toLength: 50, withPad: " ", startingAt: 0) + formatBytes(perRank).leftPad(10))
        lines.append("  " + "node total".padding(toLength: 50, withPad: " ", startingAt: 0) + formatBytes(perNode).leftPad(10)
                     + (available.map { "  of \(formatBytes($0)) available (\(fits ? "fits" : "does not fit") in 90%)" } ?? ""))
        return lines.joined(separator: "\n")
    }

    /// This process's peak resident set so far (VmHWM from /proc/self/status; nil where there is none).
    public static func peakResidentBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let parts = line.split(separator: " ")
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }

    /// MemAvailable from /proc/meminfo (nil where there is none).
    public static func availableBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let parts = line.split(separator: " ")
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }

    /// What a distillation holds: the student's forms (its weights, gradients, optimizer shard and
    /// activations per rank, component state included), the teacher's forms and the token data
    /// (once per node), on `ranks` ranks of which `ranksPerNode` share this node.
    public struct DistillationJob {
        public var student: GPT2Forms
        public var teacher: GPT2Forms?
        public var settings: DistillSettings
        public var ranks = 1, ranksPerNode = 1
        public var shardOptimizer = true
        public var recompute = false
        /// Tokens of training data (2 bytes each, once per node).
        public var tokens = 0
        /// Only what a trainer allocates on top of models and data already in memory.
        public var loaded = false
        /// The student's gradients are already allocated (an earlier stage's stay).
        public var gradientsAllocated = false

        public init(student: GPT2Forms, teacher: GPT2Forms?, settings: DistillSettings) {
            self.student = student
            self.teacher = teacher
            self.settings = settings
        }
    }

    /// The estimate of `job` at `microBatch` sequences per forward.
    public static func distillation(_ job: DistillationJob, microBatch: Int, available: Int? = availableBytes()) -> MemoryEstimate {
        var e = MemoryEstimate(ranksPerNode: job.ranksPerNode, available: available)
        let s = job.settings, rows = microBatch * s.seq, floats = job.student.parameterFloats, sharded = job.shardOptimizer && job.ranks > 1
        if !job.loaded {
            e.add("process (runtime, MPI, BLAS)", processOverhead())
            e.add("student weights", 4 * floats)
        }
        if !job.gradientsAllocated { e.add("student gradients", 4 * floats) }
        e.add("AdamW moments" + (sharded ? " (1/\(job.ranks) shard)" : ""), 8 * floats / (sharded ? job.ranks : 1))
        e.add("activations (micro-batch \(microBatch) x \(s.seq)\(job.recompute ? ", recompute" : ""), component state included)",
              job.student.trainingActivationBytes(B: microBatch, T: s.seq, recompute: job.recompute))
        e.add("LM head chunks", job.student.headBytes(rows: rows, buffers: job.teacher == nil ? 2 : 3, backward: true))
        // Validation evaluates windows of seq tokens, at most a micro-batch of them at a time.
        let windows = (s.validationTokens(parameters: floats) + s.seq - 1) / s.seq
        e.add("validation workspace", job.student.inferenceBytes(rows: min(microBatch, max(windows, 1)) * s.seq))
        if let t = job.teacher {
            if !job.loaded { e.add("teacher weights", 4 * t.parameterFloats, perNode: true) }
            e.add("teacher workspace", t.inferenceBytes(rows: rows))
            let kept = IntermediateDistillation.bytes(settings: s, teacher: t.config, studentLayers: job.student.config.nLayer, B: microBatch, T: s.seq)
            if kept > 0 { e.add("teacher hidden states and attention keys", kept) }
        }
        if !job.loaded { e.add("token data", 2 * job.tokens, perNode: true) }
        return e
    }

    /// The micro-batch of a distillation: `settings.microBatch`, or the largest that fits (the
    /// rank's share of the batch, halved until the estimate fits 90% of what the node has).
    /// Throws, with the estimate and the options that would help, when even the given or the
    /// smallest does not fit.
    public static func microBatch(_ job: DistillationJob, available: Int? = availableBytes()) throws -> (microBatch: Int, estimate: MemoryEstimate) {
        let s = job.settings
        let local = max(1, (s.batch + job.ranks - 1) / job.ranks)
        var candidates = s.microBatch.map { [$0] } ?? []
        if candidates.isEmpty { var mb = local; while mb >= 1 { candidates.append(mb); mb = mb == 1 ? 0 : (mb + 1) / 2 } }
        var last: MemoryEstimate?
        for mb in candidates {
            let e = distillation(job, microBatch: mb, available: available)
            if e.fits { return (mb, e) }
            last = e
        }
        var help = [String]()
        if !job.recompute { help.append("--recompute (keep one block's activations)") }
        if s.microBatch.map({ $0 > 1 }) ?? false { help.append("a smaller distill.micro_batch") }
        if !job.shardOptimizer || job.ranks == 1 { help.append("more ranks with the sharded optimizer (memory per rank falls with the ranks)") }
        help.append("a shorter distill.seq")
        throw TrainingError.config("""
            the distillation does not fit in 90% of this node's available memory:
            \(last!.describe())
            try \(help.joined(separator: ", or "))
            """)
    }

    /// The evaluation batch (windows per forward): `given`, or the most (up to 8) whose workspace
    /// stays within 768 MiB, so evaluation peaks at about the weights plus 1 GiB.
    public static func evaluationBatch(forms: GPT2Forms, context: Int, given: Int?) -> Int {
        if let given { return given }
        var b = 8
        while b > 1 && forms.inferenceBytes(rows: b * context) + forms.headBytes(rows: b * context, buffers: 1) > 768 << 20 { b /= 2 }
        return b
    }

    /// Evaluation: the weights (once per node) and the workspace for `rows` rows per rank.
    public static func evaluation(forms: GPT2Forms, rows: Int, ranksPerNode: Int, tokens: Int) -> MemoryEstimate {
        var e = MemoryEstimate(ranksPerNode: ranksPerNode)
        e.add("process (runtime, MPI, BLAS)", processOverhead())
        e.add("weights", 4 * forms.parameterFloats, perNode: true)
        e.add("inference workspace (\(rows) rows)", forms.inferenceBytes(rows: rows))
        e.add("LM head chunks", forms.headBytes(rows: rows, buffers: 1))
        e.add("token data", 2 * tokens, perNode: true)
        return e
    }
}

/// "1.23 GiB", "456 MiB", "12 KiB".
public func formatBytes(_ b: Int) -> String {
    let x = Double(b)
    if b >= 1 << 30 { return String(format: "%.2f GiB", x / 1_073_741_824) }
    if b >= 1 << 20 { return String(format: "%.0f MiB", x / 1_048_576) }
    return String(format: "%.0f KiB", x / 1024)
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
