/// A file could not be read, parsed or written; names the file.
public enum FileError: Error, CustomStringConvertible {
    case io(String, String)
    case format(String, String)

    /// A weight file's tensor holding NaN or ±Inf (refused unless the user allows it).
    static func nonFinite(_ path: String, tensor: String, value: Float, index: Int) -> FileError {
        .format(path, "tensor '\(tensor)' holds \(value) at element \(index); "
                + "refusing a model with NaN or infinite weights (--allow-non-finite to load it anyway)")
    }

    public var description: String {
        switch self {
        case let .io(path, detail): return "\(path): \(detail)"
        case let .format(path, detail): return "\(path): \(detail)"
        }
    }
}
