import Foundation
import Model
import MPI
import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// A training checkpoint: `model/` (a model directory, compressed layers included),
/// `optimizer.safetensors` (AdamW moments) and `state.json` (step, settings, loss history and
/// the caller's own state such as the recipe stage).
///
/// `directory` (e.g. `OUT/checkpoint`) is a symbolic link to a hidden sibling directory that
/// holds one complete checkpoint. Rank 0 writes a new checkpoint into a fresh sibling, syncs it,
/// and swaps the link with one rename(2), which is atomic: at every moment, a crash included,
/// `directory` names either the old or the new complete checkpoint. Leftovers of an interrupted
/// write are removed by the next one.
public struct Checkpoint {
    public struct State: Codable, Equatable {
        /// Next step to run (steps completed so far).
        public var step: Int
        /// AdamW's step counter (bias correction).
        public var optimizerStep: Int
        public var settings: DistillSettings
        public var history: [StepLog]
        /// The caller's own state (a recipe's progress), as its Codable encoding.
        public var extra: JSONValue?

        public init(step: Int, optimizerStep: Int, settings: DistillSettings, history: [StepLog], extra: JSONValue?) {
            self.step = step
            self.optimizerStep = optimizerStep
            self.settings = settings
            self.history = history
            self.extra = extra
        }
    }

    public let directory: URL

    public init(directory: URL) { self.directory = directory }

    public var modelDirectory: URL { directory.appendingPathComponent("model") }
    public var exists: Bool { FileManager.default.fileExists(atPath: directory.appendingPathComponent("state.json").path) }

    /// Hidden siblings holding checkpoint versions: `.<name>.v<unique>`.
    private var versionPrefix: String { ".\(directory.lastPathComponent).v" }

    /// The version directory the link points to (nil if there is none).
    private func currentVersion() -> String? {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: directory.path)).map { ($0 as NSString).lastPathComponent }
    }

    /// The optimizer state to store: the moment count and a collective producer that hands rank
    /// 0 the flat moments ("m" then "v"), piece by piece in flat order (see
    /// `GradientSync.gatherToRoot`); every rank calls it, the sink only matters on rank 0.
    public struct Moments {
        public let count: Int
        public let produce: (_ which: Int, _ sink: (UnsafeBufferPointer<Float>) -> Void) throws -> Void
        public init(count: Int, produce: @escaping (_ which: Int, _ sink: (UnsafeBufferPointer<Float>) -> Void) throws -> Void) {
            self.count = count
            self.produce = produce
        }
    }

    /// Writes model, optimizer moments (if any) and state. Collective over `comm`: rank 0 writes
    /// the files, every rank takes part in gathering the moments, and every rank throws if rank 0
    /// failed, so no rank is left waiting.
    public func write(model: GPT2, state: State, moments: Moments?, comm: Communicator) throws {
        let fm = FileManager.default
        let parent = directory.deletingLastPathComponent()
        let name = versionPrefix + "\(state.step)-\(getpid())-\(UInt64(Date().timeIntervalSince1970 * 1e6))"
        let version = parent.appendingPathComponent(name)
        func agree(_ failure: String?) throws {
            if let f = try comm.firstFailure(failure) { throw TrainingError.checkpoint(f.message) }
        }
        var failure: String?
        if comm.rank == 0 {
            do {
                try fm.createDirectory(at: version, withIntermediateDirectories: true)
                try model.save(to: version.appendingPathComponent("model"), dtype: .f32)
            } catch { failure = "\(error)" }
        }
        try agree(failure)
        if let moments {
            // Stream "m" and "v" into optimizer.safetensors as they arrive; rank 0 keeps taking
            // part in the gathers after a write error and reports it afterwards.
            var entries = SafeTensorsWriter()
            entries.add("m", shape: [moments.count], pointer: UnsafePointer(bitPattern: 64)!)
            entries.add("v", shape: [moments.count], pointer: UnsafePointer(bitPattern: 64)!)
            if comm.rank == 0 {
                do {
                    let header = try entries.headerBytes()
                    try writeAtomically(to: version.appendingPathComponent("optimizer.safetensors")) { out in
                        var n = UInt64(header.count).littleEndian
                        try withUnsafeBytes(of: &n) { try out($0) }
                        try header.withUnsafeBytes { try out($0) }
                        var writeError: Error?
                        for which in 0..<2 {
                            try moments.produce(which) { piece in
                                guard writeError == nil else { return }
                                do { try out(UnsafeRawBufferPointer(piece)) } catch { writeError = error }
                            }
                        }
                        if let writeError { throw writeError }
                    }
                } catch { failure = "\(error)" }
            } else {
                for which in 0..<2 { try moments.produce(which) { _ in } }
            }
            try agree(failure)
        }
        if comm.rank == 0 {
            do { try commit(state: state, version: version, name: name) } catch { failure = "\(error)" }
        }
        try agree(failure)
    }

    /// Writes state.json into a complete version directory and swaps the link to it.
    private func commit(state: State, version: URL, name: String) throws {
        let fm = FileManager.default
        let parent = directory.deletingLastPathComponent()
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writeAtomically(try enc.encode(state), to: version.appendingPathComponent("state.json"))
        // A checkpoint directory written by an older Squeeze is a real directory: set it aside once.
        var isDir: ObjCBool = false
        if (try? fm.destinationOfSymbolicLink(atPath: directory.path)) == nil,
           fm.fileExists(atPath: directory.path, isDirectory: &isDir), isDir.boolValue {
            try fm.moveItem(at: directory, to: parent.appendingPathComponent(versionPrefix + "legacy-\(getpid())"))
        }
        // The swap: a new link renamed over the old one.
        let link = parent.appendingPathComponent(".\(directory.lastPathComponent).link-\(getpid())")
        try? fm.removeItem(at: link)
        try fm.createSymbolicLink(atPath: link.path, withDestinationPath: name)
        guard rename(link.path, directory.path) == 0 else {
            let e = String(cString: strerror(errno))
            try? fm.removeItem(at: link)
            throw TrainingError.checkpoint("\(directory.path): cannot install the new checkpoint: \(e)")
        }
        syncDirectory(parent)
        removeStaleVersions(keeping: name)
    }

    /// Removes the checkpoint: the link and every version directory.
    public func remove() {
        removeStaleVersions(keeping: nil)
        try? FileManager.default.removeItem(at: directory)
    }

    /// Deletes version directories other than `keeping` (left by earlier or interrupted writes).
    private func removeStaleVersions(keeping: String?) {
        let parent = directory.deletingLastPathComponent()
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent.path)) ?? []
        for n in names where n.hasPrefix(versionPrefix) && n != keeping {
            try? FileManager.default.removeItem(at: parent.appendingPathComponent(n))
        }
    }

    /// Reads the state.
    public func readState() throws -> State {
        let url = directory.appendingPathComponent("state.json")
        guard let data = FileManager.default.contents(atPath: url.path) else { throw TrainingError.checkpoint("\(url.path): missing") }
        do { return try JSONDecoder().decode(State.self, from: data) } catch {
            throw TrainingError.checkpoint("\(url.path): unreadable (\(error))")
        }
    }

    /// Restores the optimizer's moments and step.
    /// Restores the optimizer's step and the moments of the flat ranges it owns (any rank count
    /// can resume: the file holds the whole flat moments). A checkpoint written between stages
    /// has no optimizer state; the optimizer then starts fresh.
    public func restore(optimizer: AdamW, state: State, parameterCount: Int) throws {
        let url = directory.appendingPathComponent("optimizer.safetensors")
        guard FileManager.default.fileExists(atPath: url.path) else {
            guard state.optimizerStep == 0 else { throw TrainingError.checkpoint("\(url.path): missing") }
            return
        }
        let f = try SafeTensorsFile(url: url)
        for key in ["m", "v"] {
            guard let n = f.entries[key]?.count, n == parameterCount else {
                throw TrainingError.checkpoint("\(url.path): '\(key)' holds \(f.entries[key]?.count ?? 0) moments, the model has \(parameterCount) parameters")
            }
        }
        try optimizer.restore(step: state.optimizerStep, m: { r, dst in try f.readFloats("m", range: r, into: dst) },
                              v: { r, dst in try f.readFloats("v", range: r, into: dst) })
    }
}
