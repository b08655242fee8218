/// A tensor operation received arguments it cannot work with, or LAPACK reported a failure.
public enum TensorError: Error, CustomStringConvertible, Equatable {
    /// Shapes do not fit the operation named first.
    case shape(String, String)
    /// A LAPACK routine returned a non-zero `info`.
    case lapack(String, info: Int32)
    /// An argument out of range.
    case argument(String, String)

    public var description: String {
        switch self {
        case let .shape(op, detail): return "\(op): \(detail)"
        case let .lapack(routine, info):
            return info < 0 ? "\(routine): argument \(-info) was invalid"
                            : "\(routine): did not converge (info \(info))"
        case let .argument(op, detail): return "\(op): \(detail)"
        }
    }
}
