/// A model could not be built or run; names the tensor or the input problem.
public enum ModelError: Error, CustomStringConvertible {
    case missingTensor(String)
    case shape(String, expected: [Int], got: [Int])
    case input(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .missingTensor(let n): return "tensor '\(n)' is missing"
        case let .shape(n, e, g): return "tensor '\(n)' has shape \(g), expected \(e)"
        case .input(let s): return s
        case .unsupported(let s): return s
        }
    }
}
