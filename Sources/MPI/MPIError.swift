import CMPI

/// An MPI failure or a misuse of a `Communicator` call, naming the call that failed.
public enum MPIError: Error, CustomStringConvertible, Equatable {
    /// MPI returned an error code; `message` is MPI's own error string.
    case call(String, code: Int32, message: String)
    /// The arguments were wrong (invalid root, mismatched counts across ranks, ...).
    case usage(String, reason: String)

    public var description: String {
        switch self {
        case let .call(name, code, message): return "\(name) failed (MPI error \(code)): \(message)"
        case let .usage(name, reason): return "\(name): \(reason)"
        }
    }
}

/// Turns an MPI return code into a thrown `MPIError` carrying MPI's message.
@inline(__always)
func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
    if code == MPI_SUCCESS { return }
    var length: Int32 = 0
    var buffer = [CChar](repeating: 0, count: Int(squeeze_max_error_string()) + 1)
    MPI_Error_string(code, &buffer, &length)
    let message = String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    throw MPIError.call(call(), code: code, message: message)
}
