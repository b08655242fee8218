/// Something in a compression request or computation was wrong; names the key or layer.
public enum CompressionError: Error, CustomStringConvertible {
    case value(String, String)
    case recipe(String)
    case numerical(String)
    case layer(String, String)
    /// The output could not be written (a file error on the rank that writes).
    case output(String)

    public var description: String {
        switch self {
        case let .value(what, detail): return "\(what): \(detail)"
        case let .recipe(s): return "recipe: \(s)"
        case let .numerical(s): return s
        case let .layer(name, detail): return "layer \(name): \(detail)"
        case let .output(s): return s
        }
    }
}
