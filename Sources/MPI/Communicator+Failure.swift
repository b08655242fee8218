/// A failure one rank had, as every rank of a communicator learns it (`firstFailure`).
public struct RankFailure: Error, CustomStringConvertible {
    /// The first (lowest) rank that failed.
    public let rank: Int
    public let message: String

    public var description: String { message }

    /// The message as rank `me` reports it: the failing rank's own words on that rank, else
    /// "rank R could not <doing>: <message>" (so every rank's error says where it started).
    public func message(on me: Int, doing: String) -> String { me == rank ? message : "rank \(rank) could not \(doing): \(message)" }
}

extension Communicator {
    /// Collective: agrees on a failure across ranks. `failure` is this rank's error message (nil
    /// when it is fine); every rank returns the first failing rank's message (nil when none
    /// failed), so all of them stop together instead of leaving some waiting in a later
    /// collective. One small all-reduce; the message travels only when some rank failed.
    public func firstFailure(_ failure: String?) throws -> RankFailure? {
        guard size > 1 else { return failure.map { RankFailure(rank: rank, message: $0) } }
        let first = try allreduce(failure == nil ? size : rank, op: .min)
        guard first < size else { return nil }
        var message = failure ?? ""
        try broadcast(&message, root: first)
        return RankFailure(rank: first, message: message)
    }

    /// `firstFailure` of an error.
    public func firstFailure(_ error: Error?) throws -> RankFailure? { try firstFailure(error.map { "\($0)" }) }
}
