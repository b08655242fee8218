/// A file could not be read, parsed or written; names the file.
public enum FileError: Error, CustomStringConvertible {
    case io(String, String)
    case format(String, String)

    public var description: String {
        switch self {
        case let .io(path, detail): return "\(path): \(detail)"
        case let .format(path, detail): return "\(path): \(detail)"
        }
    }
}
