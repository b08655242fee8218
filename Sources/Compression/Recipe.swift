import Foundation
import Kernels
import Model
import Training
import Yams

/// A compression recipe: stages run in order, each compressing some layers and optionally
/// distilling after (README "Recipes" lists every key):
///
/// ```yaml
/// stages:
///   - prune: {sparsity: 0.5, method: magnitude, scope: global, schedule: cubic, targets: ["h.*.mlp.*"]}
///     distill: {steps: 2000, batch: 8, seq: 256, lr: 1.0e-4, temperature: 2.0, alpha: 0.5}
///   - kronecker: {targets: ["h.*.mlp.c_fc"], factors: auto, terms: 1}
///   - lowrank: {targets: ["h.*.attn.c_attn"], rank_ratio: 0.5, progressive: 4}
///     distill: {steps: 1000}
/// ```
/// Unknown keys and impossible values are errors naming the key and what is allowed.
public struct Recipe {
    public var name: String?
    public var stages: [Stage]
    /// Calibration data for Wanda and SparseGPT.
    public var calibration: Calibration
    /// Seed for calibration sampling and randomized SVDs.
    public var seed: UInt64

    public struct Calibration: Equatable, Sendable {
        public var samples = 64
        public var seq = 128
    }

    public struct Stage {
        public var method: Method
        /// Quantization after the stage's method (GPTQ with SparseGPT in the same stage: one joint sweep).
        public var quantize: QuantizeSpec?
        public var distill: DistillSettings?
        /// Position in the recipe (0-based), for messages.
        public var index: Int
    }

    public enum Method {
        case prune(PruneSpec)
        case kronecker(KroneckerSpec)
        case lowrank(LowRankSpec)
        /// No compression: the stage only distils (the dense-distillation control).
        case distillOnly

        public var name: String {
            switch self { case .prune: return "prune"; case .kronecker: return "kronecker"; case .lowrank: return "lowrank"; case .distillOnly: return "distill" }
        }
        /// Progressive steps of a low-rank or Kronecker stage (1 otherwise).
        public var progressive: Int {
            switch self {
            case .lowrank(let l): return l.progressive
            case .kronecker(let k): return k.progressive
            default: return 1
            }
        }
        public var targets: [String] {
            switch self {
            case .prune(let p): return p.targets
            case .kronecker(let k): return k.targets
            case .lowrank(let l): return l.targets
            case .distillOnly: return []
            }
        }
        /// Whether the method runs the calibration windows through the model (Wanda, SparseGPT,
        /// whitened low rank and Kronecker): it needs calibration text.
        public var calibrated: Bool {
            switch self {
            case .prune(let p): return p.method != .magnitude
            case .kronecker(let k): return k.whiten
            case .lowrank(let l): return l.whiten
            case .distillOnly: return false
            }
        }
    }

    public struct PruneSpec: Equatable {
        public enum Method: String, CaseIterable { case magnitude, wanda, sparsegpt }
        public enum Scope: String, CaseIterable { case layer, global }
        public enum Schedule: String, CaseIterable { case oneshot, cubic }
        public var sparsity: Double
        public var method: Method = .magnitude
        public var scope: Scope = .layer
        public var schedule: Schedule = .oneshot
        public var targets: [String]
        /// N:M structure (e.g. 2:4) instead of unstructured sparsity.
        public var nm: (n: Int, m: Int)?
        /// Cubic schedule: starting sparsity, pruning every `frequency` steps, reaching the
        /// final sparsity at fraction `end` of the distill steps (then masks stay fixed).
        public var initial: Double = 0
        public var frequency: Int = 10
        public var end: Double = 0.7
        public var blockSize: Int = 128
        public var percdamp: Double = 0.01

        public static func == (a: PruneSpec, b: PruneSpec) -> Bool {
            a.sparsity == b.sparsity && a.method == b.method && a.scope == b.scope && a.schedule == b.schedule && a.targets == b.targets
                && a.nm?.n == b.nm?.n && a.nm?.m == b.nm?.m && a.initial == b.initial && a.frequency == b.frequency && a.end == b.end
                && a.blockSize == b.blockSize && a.percdamp == b.percdamp
        }
    }

    public struct KroneckerSpec: Equatable {
        /// How the factors start: Van Loan's SVD of R(W), or Krony-PT-style block selection.
        public enum Initialization: String, CaseIterable { case vanloan, select }
        public var targets: [String]
        /// nil: auto (least error within the budget).
        public var factors: (m1: Int, n1: Int)?
        /// Number of terms; nil (`terms: auto`): the most that fit the budget, with the shape of
        /// least error.
        public var terms: Int? = 1
        /// Parameter budget for `factors: auto` and `terms: auto`, as a fraction of the dense layer.
        public var budget: Double = 0.5
        public var initialization: Initialization = .vanloan
        /// Learnable per-term scales starting at ‖W‖_F / ‖Σ A ⊗ B‖_F (norm-matched). A recipe's
        /// `scale` defaults to true only where a distillation follows in the same stage; without
        /// one the factors stay the least-squares ones.
        public var scale = false
        /// Progressive: the budget falls from 1 to `budget` in this many steps, distillation between.
        public var progressive = 1
        /// Data-aware factors (`WhitenedKronecker`): whitened by the Kronecker approximation of
        /// the calibration's XᵀX + λI, then `als` alternating least-squares sweeps on it.
        public var whiten = false
        public var percdamp = 0.01
        public var als = 3
        /// How `terms: auto` shares the budget among the targets.
        public var allocate: Allocation = .uniform

        public static func == (a: KroneckerSpec, b: KroneckerSpec) -> Bool {
            a.targets == b.targets && a.factors?.m1 == b.factors?.m1 && a.factors?.n1 == b.factors?.n1 && a.terms == b.terms && a.budget == b.budget
                && a.initialization == b.initialization && a.scale == b.scale && a.progressive == b.progressive && a.whiten == b.whiten
                && a.percdamp == b.percdamp && a.als == b.als && a.allocate == b.allocate
        }
    }

    /// `quantize: {format, method, targets, skip, blocksize, percdamp, order}`.
    public struct QuantizeSpec: Equatable {
        /// Round to nearest (ggml's reference quantizer) or GPTQ (calibrated error feedback).
        public enum Method: String, CaseIterable { case rtn, gptq }
        /// GPTQ's column order: as stored, or by descending activation energy (diag of XᵀX, with
        /// every block's scale fixed up front from the weights).
        public enum Order: String, CaseIterable { case natural, activation }
        public var format: QuantFormat
        public var method: Method = .rtn
        public var targets: [String]
        /// Layers matched by `targets` to leave unquantized (e.g. a layer whose inputs are not a multiple of 32).
        public var skip: [String] = []
        public var blockSize = 128
        public var percdamp = 0.01
        public var order: Order = .natural
    }

    public struct LowRankSpec: Equatable {
        public var targets: [String]
        public var rule: LowRank.RankRule
        /// Number of progressive steps (distillation between them), 1 = one shot.
        public var progressive: Int = 1
        /// Keep this fraction of the residual W − W0 W1ᵀ as a sparse correction (low rank + sparse).
        public var sparseResidual: Double?
        /// Data-aware truncation (`Whitening`): least ‖X(W − Ŵ)‖_F on the calibration, XᵀX damped
        /// by `percdamp` · its mean diagonal.
        public var whiten = false
        public var percdamp = 0.01
        /// How a `budget` rule shares the parameters among the targets.
        public var allocate: Allocation = .uniform
    }

    // MARK: - Parsing

    public static let topKeys = ["name", "description", "stages", "calibration", "seed"]
    public static let pruneKeys = ["sparsity", "method", "scope", "schedule", "targets", "n", "m", "initial", "frequency", "end", "blocksize", "percdamp"]
    public static let kroneckerKeys = ["targets", "factors", "terms", "budget", "init", "scale", "progressive", "whiten", "percdamp", "als", "allocate"]
    public static let lowrankKeys = ["targets", "rank_ratio", "energy", "budget", "rank", "progressive", "sparse_residual", "whiten", "percdamp", "allocate"]
    public static let quantizeKeys = ["format", "method", "targets", "skip", "blocksize", "percdamp", "order"]

    /// Parses and validates a recipe file.
    public static func load(_ url: URL) throws -> Recipe {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { throw CompressionError.recipe("\(url.path): cannot read") }
        do { return try parse(text) } catch let e as CompressionError {
            throw CompressionError.recipe("\(url.path): \(e.description.replacingOccurrences(of: "recipe: ", with: ""))")
        }
    }

    /// Most YAML nodes a recipe may expand to, counting every use of an alias (real recipes have
    /// a few dozen).
    public static let maxYAMLNodes = 100_000

    /// Parses YAML text.
    public static func parse(_ text: String) throws -> Recipe {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch { throw CompressionError.recipe("not valid YAML: \(error)") }
        // Check the node tree before Yams constructs values from it (see `checkedSize`): nested
        // aliases hung and a non-scalar mapping key crashed (fuzzer inputs).
        if let node {
            var sizes: [ObjectIdentifier: Int] = [:]
            _ = try checkedSize(node, &sizes)
        }
        let root = node?.any
        guard let top = root as? [String: Any] else { throw CompressionError.recipe("the recipe must be a mapping with a 'stages' list") }
        try checkKeys(top, allowed: topKeys, at: "")
        var recipe = Recipe(name: top["name"] as? String, stages: [], calibration: Calibration(), seed: 0)
        if let s = top["seed"] { recipe.seed = UInt64(try int(s, "seed", min: 0)) }
        if let c = top["calibration"] {
            guard let cd = c as? [String: Any] else { throw CompressionError.recipe("calibration must be a mapping {samples, seq}") }
            try checkKeys(cd, allowed: ["samples", "seq"], at: "calibration.")
            if let v = cd["samples"] { recipe.calibration.samples = try int(v, "calibration.samples", min: 1) }
            if let v = cd["seq"] { recipe.calibration.seq = try int(v, "calibration.seq", min: 2) }
        }
        guard let stages = top["stages"] as? [Any], !stages.isEmpty else { throw CompressionError.recipe("'stages' must be a non-empty list") }
        for (i, item) in stages.enumerated() {
            let at = "stages[\(i)]"
            guard let st = item as? [String: Any] else { throw CompressionError.recipe("\(at) must be a mapping") }
            let methods = st.keys.filter { ["prune", "kronecker", "lowrank"].contains($0) }
            try checkKeys(st, allowed: ["prune", "kronecker", "lowrank", "quantize", "distill"], at: "\(at).")
            let method: Method
            if methods.isEmpty && (st["distill"] != nil || st["quantize"] != nil) {
                method = .distillOnly
            } else {
                guard methods.count == 1, let key = methods.first, let body = st[key] as? [String: Any] else {
                    throw CompressionError.recipe("\(at) needs at most one of prune, kronecker, lowrank (a mapping), with or without quantize and distill")
                }
                switch key {
                case "prune": method = .prune(try parsePrune(body, at: "\(at).prune"))
                case "kronecker": method = .kronecker(try parseKronecker(body, at: "\(at).kronecker", distilled: st["distill"] != nil))
                default: method = .lowrank(try parseLowRank(body, at: "\(at).lowrank"))
                }
            }
            var distill: DistillSettings?
            if let d = st["distill"] {
                guard let dd = d as? [String: Any] else { throw CompressionError.recipe("\(at).distill must be a mapping") }
                distill = try parseDistill(dd, at: "\(at).distill")
            }
            if case .prune(let p) = method, p.schedule == .cubic, distill == nil {
                throw CompressionError.recipe("\(at).prune.schedule: cubic prunes during distillation and needs a 'distill' block in the same stage")
            }
            var quantize: QuantizeSpec?
            if let q = st["quantize"] {
                guard let qd = q as? [String: Any] else { throw CompressionError.recipe("\(at).quantize must be a mapping") }
                quantize = try parseQuantize(qd, at: "\(at).quantize")
                if case .prune(let p) = method, p.schedule == .cubic {
                    throw CompressionError.recipe("\(at).quantize: a cubic pruning schedule prunes during distillation; quantize in a later stage")
                }
                if method.progressive > 1 { throw CompressionError.recipe("\(at).quantize: a progressive stage changes its layers step by step; quantize in a later stage") }
                if case .prune(let p) = method, p.method == .sparsegpt, quantize?.method == .gptq, quantize?.order == .activation {
                    throw CompressionError.recipe("\(at).quantize.order: activation order cannot prune in the same sweep; use natural")
                }
            }
            recipe.stages.append(Stage(method: method, quantize: quantize, distill: distill, index: i))
        }
        return recipe
    }

    /// The number of nodes of `node` with aliases expanded, after checking what Yams' value
    /// construction cannot take:
    /// - an alias shares its anchor's parsed node, but construction copies it at every use, so a
    ///   few lines of nested aliases ("billion laughs") expand exponentially: more than
    ///   `maxYAMLNodes` is an error;
    /// - Yams force-unwraps mapping keys as strings, so a sequence or mapping used as a key
    ///   (`{[a]: 1}`, `? [a]`) would crash it: keys must be scalars.
    /// Anchored nodes are counted once (memoised by their anchor, one object per definition), so
    /// the walk is linear in the text.
    static func checkedSize(_ node: Node, _ sizes: inout [ObjectIdentifier: Int]) throws -> Int {
        let key = node.anchor.map(ObjectIdentifier.init)
        if let key, let known = sizes[key] { return known }
        var size = 1
        func add(_ child: Node) throws {
            size += try checkedSize(child, &sizes)
            if size > maxYAMLNodes {
                throw CompressionError.recipe("the YAML expands to more than \(maxYAMLNodes) nodes (aliases included); a recipe needs a few dozen")
            }
        }
        switch node {
        case .mapping(let m):
            for (k, v) in m {
                guard case .scalar = k else {
                    let at = k.mark.map { " (line \($0.line), column \($0.column))" } ?? ""
                    throw CompressionError.recipe("a mapping key must be a plain string, not a list or mapping\(at)")
                }
                try add(k)
                try add(v)
            }
        case .sequence(let seq): for child in seq { try add(child) }
        case .scalar, .alias: break
        }
        if let key { sizes[key] = size }
        return size
    }

    static func checkKeys(_ d: [String: Any], allowed: [String], at: String) throws {
        for k in d.keys.sorted() where !allowed.contains(k) {
            throw CompressionError.recipe("unknown key '\(at)\(k)' (allowed: \(allowed.joined(separator: ", ")))")
        }
    }

    static func number(_ v: Any, _ key: String) throws -> Double {
        if let d = v as? Double { return d }
        if let i = v as? Int { return Double(i) }
        if let s = v as? String, let d = Double(s) { return d }
        throw CompressionError.recipe("\(key) must be a number, got '\(v)'")
    }

    static func int(_ v: Any, _ key: String, min lo: Int) throws -> Int {
        guard let i = v as? Int else { throw CompressionError.recipe("\(key) must be an integer, got '\(v)'") }
        guard i >= lo else { throw CompressionError.recipe("\(key) must be >= \(lo), got \(i)") }
        return i
    }

    static func fraction(_ v: Any, _ key: String, open: Bool = false) throws -> Double {
        let x = try number(v, key)
        guard x >= 0 && (open ? x < 1 : x <= 1), x.isFinite else {
            throw CompressionError.recipe("\(key) must be in [0, 1\(open ? ")" : "]"), got \(x)")
        }
        return x
    }

    static func targets(_ d: [String: Any], at: String) throws -> [String] {
        guard let t = d["targets"] else { throw CompressionError.recipe("\(at).targets is required (glob patterns such as \"h.*.mlp.c_fc\", \"wte\")") }
        let list = (t as? [Any])?.compactMap { $0 as? String } ?? (t as? String).map { [$0] } ?? []
        guard !list.isEmpty else { throw CompressionError.recipe("\(at).targets must be a non-empty list of glob patterns") }
        return list
    }

    static func parsePrune(_ d: [String: Any], at: String) throws -> PruneSpec {
        try checkKeys(d, allowed: pruneKeys, at: at + ".")
        let hasNM = d["n"] != nil || d["m"] != nil
        guard d["sparsity"] != nil || hasNM else { throw CompressionError.recipe("\(at).sparsity is required (a fraction in [0, 1), e.g. 0.5), or n and m for N:M") }
        var p = PruneSpec(sparsity: 0, targets: try targets(d, at: at))
        if let s = d["sparsity"] { p.sparsity = try fraction(s, "\(at).sparsity", open: true) }
        p.method = try choice(d, "method", PruneSpec.Method.self, at: at) ?? .magnitude
        p.scope = try choice(d, "scope", PruneSpec.Scope.self, at: at) ?? .layer
        p.schedule = try choice(d, "schedule", PruneSpec.Schedule.self, at: at) ?? .oneshot
        if hasNM {
            guard let n = d["n"], let m = d["m"] else { throw CompressionError.recipe("\(at): give both n and m for N:M sparsity") }
            let ni = try int(n, "\(at).n", min: 1), mi = try int(m, "\(at).m", min: 2)
            guard ni < mi else { throw CompressionError.recipe("\(at).n must be smaller than m, got \(ni):\(mi)") }
            p.nm = (ni, mi)
            p.sparsity = 1 - Double(ni) / Double(mi)
            guard p.schedule == .oneshot, p.scope == .layer else { throw CompressionError.recipe("\(at): N:M sparsity is one-shot and per layer") }
        }
        if p.scope == .global && p.method != .magnitude { throw CompressionError.recipe("\(at).scope: global works with method magnitude only") }
        if p.schedule == .cubic && p.method != .magnitude { throw CompressionError.recipe("\(at).schedule: cubic works with method magnitude only") }
        if let v = d["initial"] { p.initial = try fraction(v, "\(at).initial", open: true) }
        if let v = d["frequency"] { p.frequency = try int(v, "\(at).frequency", min: 1) }
        if let v = d["end"] {
            p.end = try fraction(v, "\(at).end")
            guard p.end > 0 else { throw CompressionError.recipe("\(at).end must be in (0, 1], got 0") }
        }
        if let v = d["blocksize"] { p.blockSize = try int(v, "\(at).blocksize", min: 1) }
        if let v = d["percdamp"] { p.percdamp = try number(v, "\(at).percdamp"); guard p.percdamp > 0 else { throw CompressionError.recipe("\(at).percdamp must be > 0") } }
        if p.initial > p.sparsity { throw CompressionError.recipe("\(at).initial (\(p.initial)) must not exceed sparsity (\(p.sparsity))") }
        return p
    }

    static func parseQuantize(_ d: [String: Any], at: String) throws -> QuantizeSpec {
        try checkKeys(d, allowed: quantizeKeys, at: at + ".")
        guard let f = d["format"] else { throw CompressionError.recipe("\(at).format is required (\(QuantFormat.allCases.map(\.rawValue).joined(separator: " or ")))") }
        guard let s = f as? String, let format = QuantFormat(rawValue: s) else {
            throw CompressionError.recipe("\(at).format must be one of \(QuantFormat.allCases.map(\.rawValue).joined(separator: ", ")), got '\(f)'")
        }
        var q = QuantizeSpec(format: format, targets: try targets(d, at: at))
        q.method = try choice(d, "method", QuantizeSpec.Method.self, at: at) ?? .rtn
        q.order = try choice(d, "order", QuantizeSpec.Order.self, at: at) ?? .natural
        if d["skip"] != nil { q.skip = try targets(["targets": d["skip"]!], at: "\(at).skip") }
        if let v = d["blocksize"] {
            q.blockSize = try int(v, "\(at).blocksize", min: QuantFormat.blockSize)
            guard q.blockSize % QuantFormat.blockSize == 0 else {
                throw CompressionError.recipe("\(at).blocksize must be a multiple of \(QuantFormat.blockSize) (whole ggml blocks), got \(q.blockSize)")
            }
        }
        if let v = d["percdamp"] { q.percdamp = try number(v, "\(at).percdamp"); guard q.percdamp > 0 else { throw CompressionError.recipe("\(at).percdamp must be > 0") } }
        if q.method == .rtn && (d["blocksize"] != nil || d["percdamp"] != nil || d["order"] != nil) {
            throw CompressionError.recipe("\(at): blocksize, percdamp and order are GPTQ's; method rtn takes none of them")
        }
        return q
    }

    /// One of an enumeration's raw values, or nil when the key is absent; errors list the choices.
    static func choice<E: RawRepresentable & CaseIterable>(_ d: [String: Any], _ key: String, _: E.Type, at: String) throws -> E? where E.RawValue == String {
        guard let v = d[key] else { return nil }
        guard let s = v as? String, let e = E(rawValue: s) else {
            throw CompressionError.recipe("\(at).\(key) must be one of \(E.allCases.map(\.rawValue).joined(separator: ", ")), got '\(v)'")
        }
        return e
    }

    /// A kronecker block; `distilled`: the stage distils after it (the default of `scale`).
    static func parseKronecker(_ d: [String: Any], at: String, distilled: Bool = false) throws -> KroneckerSpec {
        try checkKeys(d, allowed: kroneckerKeys, at: at + ".")
        var k = KroneckerSpec(targets: try targets(d, at: at))
        if let f = d["factors"] {
            if let s = f as? String {
                guard s == "auto" else { throw CompressionError.recipe("\(at).factors must be 'auto' or [m1, n1], got '\(s)'") }
            } else if let l = f as? [Any], l.count == 2 {
                k.factors = (try int(l[0], "\(at).factors[0]", min: 1), try int(l[1], "\(at).factors[1]", min: 1))
            } else {
                throw CompressionError.recipe("\(at).factors must be 'auto' or [m1, n1], got '\(f)'")
            }
        }
        if let t = d["terms"] {
            if let s = t as? String {
                guard s == "auto" else { throw CompressionError.recipe("\(at).terms must be 'auto' or an integer >= 1, got '\(s)'") }
                k.terms = nil
            } else {
                k.terms = try int(t, "\(at).terms", min: 1)
            }
        }
        if let b = d["budget"] {
            k.budget = try fraction(b, "\(at).budget")
            guard k.budget > 0 else { throw CompressionError.recipe("\(at).budget must be in (0, 1], got 0") }
        }
        if let v = d["init"] {
            guard let s = v as? String, let i = KroneckerSpec.Initialization(rawValue: s) else {
                throw CompressionError.recipe("\(at).init must be one of \(KroneckerSpec.Initialization.allCases.map(\.rawValue).joined(separator: ", ")), got '\(v)'")
            }
            k.initialization = i
        }
        k.scale = try bool(d, "scale", at: at) ?? distilled
        if let p = d["progressive"] { k.progressive = try int(p, "\(at).progressive", min: 1) }
        if k.terms == nil && k.factors != nil { throw CompressionError.recipe("\(at): terms: auto chooses the factor shape too; drop factors or give terms") }
        (k.whiten, k.percdamp, k.allocate) = try dataAware(d, at: at, progressive: k.progressive, budgeted: k.terms == nil, budgetKey: "terms: auto")
        if let v = d["als"] {
            guard k.whiten else { throw CompressionError.recipe("\(at).als refines whitened factors; it needs whiten: true") }
            k.als = try int(v, "\(at).als", min: 0)
        }
        if k.whiten && k.initialization == .select { throw CompressionError.recipe("\(at).init: select keeps blocks of W itself; whiten: true starts from the whitened SVD (use vanloan)") }
        return k
    }

    static func parseLowRank(_ d: [String: Any], at: String) throws -> LowRankSpec {
        try checkKeys(d, allowed: lowrankKeys, at: at + ".")
        let rules = ["rank_ratio", "energy", "budget", "rank"].filter { d[$0] != nil }
        guard rules.count == 1 else {
            throw CompressionError.recipe("\(at): give exactly one of rank_ratio, energy, budget, rank (got \(rules.isEmpty ? "none" : rules.joined(separator: ", ")))")
        }
        let rule: LowRank.RankRule
        switch rules[0] {
        case "rank_ratio":
            let x = try fraction(d["rank_ratio"]!, "\(at).rank_ratio")
            guard x > 0 else { throw CompressionError.recipe("\(at).rank_ratio must be in (0, 1], got 0") }
            rule = .ratio(x)
        case "energy":
            let x = try fraction(d["energy"]!, "\(at).energy")
            guard x > 0 else { throw CompressionError.recipe("\(at).energy must be in (0, 1], got 0") }
            rule = .energy(x)
        case "budget":
            let x = try fraction(d["budget"]!, "\(at).budget")
            guard x > 0 else { throw CompressionError.recipe("\(at).budget must be in (0, 1], got 0") }
            rule = .budget(x)
        default: rule = .rank(try int(d["rank"]!, "\(at).rank", min: 1))
        }
        var l = LowRankSpec(targets: try targets(d, at: at), rule: rule)
        if let p = d["progressive"] { l.progressive = try int(p, "\(at).progressive", min: 1) }
        if let s = d["sparse_residual"] {
            let x = try fraction(s, "\(at).sparse_residual", open: true)
            guard x > 0 else { throw CompressionError.recipe("\(at).sparse_residual must be in (0, 1), got 0") }
            l.sparseResidual = x
        }
        let budgeted: Bool
        if case .budget = rule { budgeted = true } else { budgeted = false }
        (l.whiten, l.percdamp, l.allocate) = try dataAware(d, at: at, progressive: l.progressive, budgeted: budgeted, budgetKey: "budget")
        return l
    }

    /// The keys a data-aware factorization shares (whiten, percdamp, allocate), checked together:
    /// percdamp and allocate: sensitivity need whiten: true (the whitened spectra), allocate needs
    /// a budget shared by the targets (`budgetKey`), and a whitened stage is one-shot.
    static func dataAware(_ d: [String: Any], at: String, progressive: Int, budgeted: Bool, budgetKey: String) throws
        -> (whiten: Bool, percdamp: Double, allocate: Allocation) {
        let whiten = try bool(d, "whiten", at: at) ?? false
        var percdamp = 0.01
        if let v = d["percdamp"] {
            guard whiten else { throw CompressionError.recipe("\(at).percdamp dampens the whitening's XᵀX; it needs whiten: true") }
            percdamp = try number(v, "\(at).percdamp")
            guard percdamp > 0, percdamp.isFinite else { throw CompressionError.recipe("\(at).percdamp must be > 0") }
        }
        let allocate = try choice(d, "allocate", Allocation.self, at: at) ?? .uniform
        if d["allocate"] != nil && !budgeted { throw CompressionError.recipe("\(at).allocate shares a budget among the targets; it needs \(budgetKey)") }
        if allocate == .sensitivity && !whiten {
            throw CompressionError.recipe("\(at).allocate: sensitivity ranks layers by their whitened spectra; it needs whiten: true")
        }
        if whiten && progressive > 1 { throw CompressionError.recipe("\(at).whiten: a whitened factorization is one-shot; drop progressive") }
        return (whiten, percdamp, allocate)
    }

    /// A boolean key, or nil when absent.
    static func bool(_ d: [String: Any], _ key: String, at: String) throws -> Bool? {
        guard let v = d[key] else { return nil }
        guard let b = v as? Bool else { throw CompressionError.recipe("\(at).\(key) must be true or false, got '\(v)'") }
        return b
    }

    /// A distill block through `DistillSettings`'s table (its keys, defaults and checks).
    static func parseDistill(_ d: [String: Any], at: String) throws -> DistillSettings {
        var values: [String: JSONValue] = [:]
        for (k, v) in d { values[k] = JSONValue(yaml: v) }
        do { return try DistillSettings(values: values, context: at) } catch let e as TrainingError { throw CompressionError.recipe(e.description) }
    }
}

extension JSONValue {
    /// A YAML scalar, list or mapping as Yams returns it (numbers written as strings stay numbers).
    init(yaml v: Any) {
        switch v {
        case let b as Bool: self = .bool(b)
        case let i as Int: self = .number(Double(i))
        case let d as Double: self = .number(d)
        case let s as String: self = Double(s).map { .number($0) } ?? .string(s)
        case let a as [Any]: self = .array(a.map { JSONValue(yaml: $0) })
        case let o as [String: Any]: self = .object(o.mapValues { JSONValue(yaml: $0) })
        default: self = .null
        }
    }
}

/// Glob matching on layer names: `*` any run of characters, `?` one character.
public func globMatch(_ pattern: String, _ name: String) -> Bool {
    let p = Array(pattern), s = Array(name)
    var pi = 0, si = 0, star = -1, mark = 0
    while si < s.count {
        if pi < p.count && (p[pi] == "?" || p[pi] == s[si]) { pi += 1; si += 1 }
        else if pi < p.count && p[pi] == "*" { star = pi; mark = si; pi += 1 }
        else if star >= 0 { pi = star + 1; mark += 1; si = mark }
        else { return false }
    }
    while pi < p.count && p[pi] == "*" { pi += 1 }
    return pi == p.count
}
