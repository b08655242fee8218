import Kernels
import Model

/// The intermediate-layer terms of a distillation (TinyBERT, KnGPT2, KroneckerBERT):
/// `hidden · (1/L) Σ_l mean_{tokens, channels} (h_s^l − h_t^{m(l)})²` over the student's block
/// outputs (the residual stream) and `attention · (1/L) Σ_l mean_{heads, tokens} KL(P_t ‖ P_s)`
/// over attention probabilities, with m the layer map. It keeps only what these need from the
/// teacher: the mapped blocks' outputs, and their queries, keys and log-sum-exps (attention
/// probabilities are recomputed block by block, never stored).
final class IntermediateDistillation {
    let settings: DistillSettings
    let studentLayers: Int
    let map: [Int]
    let C: Int, NH: Int
    private var rows = 0, B = 0
    private var hidden: [Int: UnsafeMutablePointer<Float>] = [:]
    private var queriesKeys: [Int: (qk: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>)] = [:]
    private var storage: UnsafeMutableBufferPointer<Float>?

    init?(settings: DistillSettings, student: GPT2, teacher: GPT2?) throws {
        guard settings.hidden > 0 || settings.attention > 0 else { return nil }
        guard let teacher else { throw TrainingError.config("distill.hidden and distill.attention need a teacher (alpha > 0)") }
        let s = student.config, t = teacher.config
        if settings.hidden > 0, s.nEmbd != t.nEmbd {
            throw TrainingError.config("distill.hidden: the student's n_embd (\(s.nEmbd)) differs from the teacher's (\(t.nEmbd))")
        }
        if settings.attention > 0, s.nHead != t.nHead {
            throw TrainingError.config("distill.attention: the student has \(s.nHead) heads, the teacher \(t.nHead)")
        }
        if let m = settings.layerMap {
            guard m.count == s.nLayer else { throw TrainingError.config("distill.layer_map has \(m.count) entries; the student has \(s.nLayer) blocks") }
            if let bad = m.first(where: { $0 >= t.nLayer }) { throw TrainingError.config("distill.layer_map: the teacher has no block \(bad) (it has \(t.nLayer))") }
        }
        self.settings = settings
        studentLayers = s.nLayer
        map = (0..<s.nLayer).map { settings.teacherBlock($0, studentLayers: s.nLayer, teacherLayers: t.nLayer) }
        C = t.nEmbd
        NH = t.nHead
    }

    deinit { storage?.deallocate() }

    /// Bytes kept per micro-batch of `rows` rows (for the memory estimate).
    static func bytes(settings: DistillSettings, teacher: GPT2Config, studentLayers: Int, B: Int, T: Int) -> Int {
        guard settings.hidden > 0 || settings.attention > 0 else { return 0 }
        let blocks = Set((0..<studentLayers).map { settings.teacherBlock($0, studentLayers: studentLayers, teacherLayers: teacher.nLayer) }).count
        let perBlock = (settings.hidden > 0 ? B * T * teacher.nEmbd : 0) + (settings.attention > 0 ? B * T * 2 * teacher.nEmbd + B * teacher.nHead * T : 0)
        return 4 * blocks * perBlock
    }

    /// What the teacher's inference forward keeps for a micro-batch of [B, T].
    func capture(B: Int, T: Int) -> ForwardCapture {
        let n = B * T
        if n != rows || B != self.B {
            storage?.deallocate()
            hidden = [:]; queriesKeys = [:]
            let blocks = Set(map).sorted()
            let per = (settings.hidden > 0 ? n * C : 0) + (settings.attention > 0 ? n * 2 * C + B * NH * T : 0)
            let s = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(per * blocks.count, 1))
            s.initialize(repeating: 0)
            var o = 0
            for l in blocks {
                if settings.hidden > 0 { hidden[l] = s.baseAddress! + o; o += n * C }
                if settings.attention > 0 { queriesKeys[l] = (s.baseAddress! + o, s.baseAddress! + o + n * 2 * C); o += n * 2 * C + B * NH * T }
            }
            storage = s
            rows = n
            self.B = B
        }
        return ForwardCapture(output: { [hidden] in hidden[$0] }, queriesKeys: { [queriesKeys] in queriesKeys[$0] })
    }

    /// The student's targets for its backward; gradients scaled by 1/globalTokens like the KD term.
    func targets(globalTokens: Int) -> GPT2.IntermediateTargets {
        let L = Float(studentLayers), C = self.C, NH = Float(self.NH), rows = self.rows
        var t = GPT2.IntermediateTargets()
        if settings.hidden > 0 {
            let g = 2 * settings.hidden / (L * Float(C) * Float(globalTokens))
            t.hidden = { [map, hidden] l, output, gradient in
                guard let target = hidden[map[l]] else { return 0 }
                // Σ over this micro-batch's tokens of mean_c (h_s − h_t)²; d/dh_s = 2 (h_s − h_t) · weight / (L C N_global).
                var sum = 0.0
                for i in 0..<(rows * C) {
                    let d = output[i] - target[i]
                    sum += Double(d * d)
                    gradient[i] += g * d
                }
                return sum / Double(C)
            }
        }
        if settings.attention > 0 {
            let w = settings.attention / (L * NH * Float(globalTokens))
            t.attention = { [map, queriesKeys] l in
                queriesKeys[map[l]].map { AttentionTeacher(qk: $0.qk, stride: 2 * C, lse: $0.lse, weight: w) }
            }
        }
        return t
    }

    /// Per-token loss sums → the terms' means over mapped blocks (hidden: per channel; attention: per head).
    func means(hiddenSum: Double, attentionSum: Double, globalTokens: Int) -> (hidden: Double, attention: Double) {
        (hiddenSum / Double(studentLayers) / Double(globalTokens), attentionSum / Double(studentLayers) / Double(NH) / Double(globalTokens))
    }
}
