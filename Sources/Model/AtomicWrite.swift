import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes `data` to `url` atomically: a temp file in the same directory, fsync, rename, fsync
/// of the directory. A reader never sees a half-written file; a crash leaves the old one.
public func writeAtomically(_ data: Data, to url: URL) throws {
    try writeAtomically(to: url) { out in try data.withUnsafeBytes { try out($0) } }
}

/// Streams a file into place atomically: `produce` hands its bytes, in pieces, to the writer it
/// is given; then fsync, rename over `url`, fsync of the directory.
public func writeAtomically(to url: URL, _ produce: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
    let dir = url.deletingLastPathComponent()
    let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
    let fd = open(tmp.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw FileError.io(tmp.path, "cannot create: \(String(cString: strerror(errno)))") }
    var failure: String?
    do {
        try produce { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw FileError.io(url.path, "write failed: \(String(cString: strerror(errno)))") }
                offset += n
            }
        }
        if fsync(fd) != 0 { failure = "fsync failed: \(String(cString: strerror(errno)))" }
    } catch {
        close(fd)
        unlink(tmp.path)
        throw error
    }
    close(fd)
    if let failure {
        unlink(tmp.path)
        throw FileError.io(url.path, failure)
    }
    guard rename(tmp.path, url.path) == 0 else {
        let e = String(cString: strerror(errno))
        unlink(tmp.path)
        throw FileError.io(url.path, "rename failed: \(e)")
    }
    syncDirectory(dir)
}

/// fsyncs a directory, so the renames inside it are durable.
public func syncDirectory(_ dir: URL) {
    let dfd = open(dir.path, O_RDONLY)
    if dfd >= 0 { fsync(dfd); close(dfd) }
}
