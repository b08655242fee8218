import Foundation
import Model

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

    /// Runtime, MPI and BLAS buffers of one process, measured on an idle `squeeze` rank.
    public static let processOverhead = 160 << 20

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

    /// MemAvailable from /proc/meminfo (nil where there is none).
    public static func availableBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let parts = line.split(separator: " ")
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }

    /// A distillation on `ranks` ranks (`ranksPerNode` of them here): the student's weights,
    /// gradients, optimizer shard and activations per rank; the teacher and the token data per
    /// node.
    /// With `loaded`, only what a trainer allocates on top of models and data already in memory.
    public static func distillation(student: GPT2Config, studentFloats: Int, teacher: (config: GPT2Config, floats: Int)?,
                                    settings: DistillSettings, microBatch: Int, ranks: Int, ranksPerNode: Int, shardOptimizer: Bool,
                                    recompute: Bool, tokens: Int, loaded: Bool = false, gradientsAllocated: Bool = false,
                                    available: Int? = availableBytes()) -> MemoryEstimate {
        var e = MemoryEstimate(ranksPerNode: ranksPerNode, available: available)
        let rows = microBatch * settings.seq
        if !loaded {
            e.add("process (runtime, MPI, BLAS)", processOverhead)
            e.add("student weights", 4 * studentFloats)
        }
        if !gradientsAllocated { e.add("student gradients", 4 * studentFloats) }   // an earlier stage's stay allocated
        e.add("AdamW moments" + (shardOptimizer && ranks > 1 ? " (1/\(ranks) shard)" : ""), 8 * studentFloats / (shardOptimizer ? max(ranks, 1) : 1))
        e.add("activations (micro-batch \(microBatch) x \(settings.seq)\(recompute ? ", recompute" : ""))",
              GPT2.trainingActivationBytes(config: student, B: microBatch, T: settings.seq, recompute: recompute))
        e.add("LM head chunks", GPT2.headBytes(config: student, rows: rows, buffers: teacher == nil ? 2 : 3))
        e.add("validation workspace", GPT2.inferenceBytes(config: student, rows: rows))
        if let t = teacher {
            if !loaded { e.add("teacher weights", 4 * t.floats, perNode: true) }
            e.add("teacher workspace", GPT2.inferenceBytes(config: t.config, rows: rows))
            let kept = IntermediateDistillation.bytes(settings: settings, teacher: t.config, studentLayers: student.nLayer, B: microBatch, T: settings.seq)
            if kept > 0 { e.add("teacher hidden states and attention keys", kept) }
        }
        if !loaded { e.add("token data", 2 * tokens, perNode: true) }
        return e
    }

    /// The micro-batch of a distillation: `settings.microBatch`, or the largest that fits (the
    /// rank's share of the batch, halved until the estimate fits 90% of what the node has).
    /// Throws, with the estimate and the options that would help, when even the given or the
    /// smallest does not fit.
    public static func microBatch(settings: DistillSettings, student: GPT2Config, studentFloats: Int, teacher: (config: GPT2Config, floats: Int)?,
                                  ranks: Int, ranksPerNode: Int, shardOptimizer: Bool, recompute: Bool, tokens: Int,
                                  loaded: Bool, gradientsAllocated: Bool = false,
                                  available: Int? = availableBytes()) throws -> (microBatch: Int, estimate: MemoryEstimate) {
        let local = max(1, (settings.batch + ranks - 1) / ranks)
        var candidates = settings.microBatch.map { [$0] } ?? []
        if candidates.isEmpty { var mb = local; while mb >= 1 { candidates.append(mb); mb = mb == 1 ? 0 : (mb + 1) / 2 } }
        var last: MemoryEstimate?
        for mb in candidates {
            let e = distillation(student: student, studentFloats: studentFloats, teacher: teacher, settings: settings, microBatch: mb, ranks: ranks,
                                 ranksPerNode: ranksPerNode, shardOptimizer: shardOptimizer, recompute: recompute, tokens: tokens,
                                 loaded: loaded, gradientsAllocated: gradientsAllocated, available: available)
            if e.fits { return (mb, e) }
            last = e
        }
        var help = [String]()
        if !recompute { help.append("--recompute (keep one block's activations)") }
        if settings.microBatch.map({ $0 > 1 }) ?? false { help.append("a smaller distill.micro_batch") }
        if !shardOptimizer || ranks == 1 { help.append("more ranks with the sharded optimizer (memory per rank falls with the ranks)") }
        help.append("a shorter distill.seq")
        throw TrainingError.config("""
            the distillation does not fit in 90% of this node's available memory:
            \(last!.describe())
            try \(help.joined(separator: ", or "))
            """)
    }

    /// The evaluation batch (windows per forward): `given`, or the most (up to 8) whose workspace
    /// stays within 768 MiB, so evaluation peaks at about the weights plus 1 GiB.
    public static func evaluationBatch(config: GPT2Config, context: Int, given: Int?) -> Int {
        if let given { return given }
        var b = 8
        while b > 1 && GPT2.inferenceBytes(config: config, rows: b * context) + GPT2.headBytes(config: config, rows: b * context, buffers: 1) > 768 << 20 { b /= 2 }
        return b
    }

    /// Evaluation: the weights (once per node) and the workspace for `rows` rows per rank.
    public static func evaluation(config: GPT2Config, floats: Int, rows: Int, ranksPerNode: Int, tokens: Int) -> MemoryEstimate {
        var e = MemoryEstimate(ranksPerNode: ranksPerNode)
        e.add("process (runtime, MPI, BLAS)", processOverhead)
        e.add("weights", 4 * floats, perNode: true)
        e.add("inference workspace (\(rows) rows)", GPT2.inferenceBytes(config: config, rows: rows))
        e.add("LM head chunks", GPT2.headBytes(config: config, rows: rows, buffers: 1))
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
