/// Errors from distributed work, naming the rank or the matrix involved.
public enum DistributedError: Error, CustomStringConvertible {
    case grid(String)
    case scalapack(String, info: Int32)
    case plan(String)
    /// Ranks started on different inputs.
    case inputs(String)

    public var description: String {
        switch self {
        case let .grid(s): return "process grid: \(s)"
        case let .scalapack(routine, info):
            return info < 0 ? "\(routine): argument \(-info) was invalid" : "\(routine): failed to converge (info \(info))"
        case let .plan(s): return "distribution plan: \(s)"
        case let .inputs(s): return s
        }
    }
}
