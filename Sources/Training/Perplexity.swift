import Foundation
import Model
import MPI
import Tensor

/// Result of a perplexity evaluation.
public struct PerplexityResult: Codable, Sendable, Equatable {
    /// exp(mean NLL).
    public var perplexity: Double
    /// Mean negative log-likelihood per scored token (nats).
    public var nll: Double
    /// Number of scored tokens.
    public var tokens: Int
}

/// Which tokens a perplexity evaluation scores.
public enum PerplexityScoring: String, Sendable {
    /// Hugging Face's sliding window: windows of the context starting every stride tokens; each
    /// window scores the labels no earlier window scored, so every token is scored once.
    case slidingWindow
    /// llama-perplexity's: non-overlapping windows of the context (a last partial one dropped),
    /// each scoring only the tokens after its first half (labels context/2 + 1 ..< context of the
    /// window, every one with more than half a window before it).
    case secondHalf
}

/// Perplexity over windows of `context` tokens (by default Hugging Face's sliding window with
/// `stride`: in each window only the labels not scored by an earlier window count, never a
/// window's first token, which has no context; or llama-perplexity's chunks, `scoring`).
/// Windows are spread over the ranks of `comm` (sums all-reduced); `batch` windows run together.
public func evaluatePerplexity(model: InferenceNetwork, tokens: [Int32], context: Int? = nil, stride: Int? = nil, batch: Int = 1,
                               scoring: PerplexityScoring = .slidingWindow,
                               comm: Communicator, progress: ((Int, Int) -> Void)? = nil) throws -> PerplexityResult {
    let ctx = min(context ?? model.config.nPositions, model.config.nPositions)
    let st = stride ?? ctx
    guard ctx >= 2 else { throw TrainingError.config("context must be at least 2 tokens") }
    guard st >= 1, st <= ctx else { throw TrainingError.config("stride must be between 1 and the context (\(ctx)), got \(st)") }
    guard tokens.count >= 2 else { throw TrainingError.data("need at least 2 tokens to evaluate, got \(tokens.count)") }
    // Windows: (begin, end, first scored label index).
    var windows: [(Int, Int, Int)] = []
    switch scoring {
    case .slidingWindow:
        var prevEnd = 0
        var begin = 0
        while begin < tokens.count {
            let end = min(begin + ctx, tokens.count)
            windows.append((begin, end, max(prevEnd, begin + 1)))
            prevEnd = end
            if end == tokens.count { break }
            begin += st
        }
    case .secondHalf:
        guard stride == nil || stride == ctx else { throw TrainingError.config("llama-perplexity's scoring takes no stride (its windows do not overlap)") }
        guard ctx >= 4, tokens.count >= ctx else { throw TrainingError.data("llama-perplexity's scoring needs a context of at least 4 and \(ctx) tokens, got \(tokens.count)") }
        windows = Swift.stride(from: 0, through: tokens.count - ctx, by: ctx).map { ($0, $0 + ctx, $0 + ctx / 2 + 1) }
    }
    let mine = share(windows.count, rank: comm.rank, size: comm.size)
    var nllSum = 0.0, scored = 0
    var done = 0
    // Batch windows of equal length together.
    var i = mine.lowerBound
    while i < mine.upperBound {
        let len = windows[i].1 - windows[i].0
        var group = [windows[i]]
        var j = i + 1
        while j < mine.upperBound && group.count < batch && windows[j].1 - windows[j].0 == len { group.append(windows[j]); j += 1 }
        var ids = [Int32](), targets = [Int32]()
        for (b, e, first) in group {
            ids += tokens[b..<e]
            for p in b..<e {
                let label = p + 1   // position p predicts token p + 1
                targets.append(label < e && label >= first ? tokens[label] : -1)
            }
        }
        let r = try model.negativeLogLikelihood(ids: ids, targets: targets, B: group.count, T: len)
        nllSum += r.sum
        scored += r.scored
        done += group.count
        progress?(done, mine.count)
        i = j
    }
    var sums = [nllSum, Double(scored)]
    try comm.allreduce(&sums)
    let nll = sums[0] / max(sums[1], 1)
    return PerplexityResult(perplexity: exp(nll), nll: nll, tokens: Int(sums[1]))
}
