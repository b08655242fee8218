/// A training run failed; names the file, key or rank.
public enum TrainingError: Error, CustomStringConvertible {
    case data(String)
    case checkpoint(String)
    case config(String)
    case interrupted(step: Int)
    /// A loss or gradient norm that is NaN or infinite: the step's update was not applied.
    case nonFinite(label: String, step: Int, detail: String, checkpoint: String?)

    public var description: String {
        switch self {
        case .data(let s): return "data: \(s)"
        case .checkpoint(let s): return "checkpoint: \(s)"
        case .config(let s): return s
        case .interrupted(let step): return "interrupted at step \(step); checkpoint written, continue with --resume"
        case let .nonFinite(label, step, detail, checkpoint):
            return "\(label): non-finite loss or gradient at step \(step) (\(detail)); stopped before updating the weights. "
                + (checkpoint.map { "The last good checkpoint is kept in \($0). " } ?? "No checkpoint was written. ")
                + "Try a lower learning rate, a higher temperature, or check the inputs for NaN."
        }
    }
}
