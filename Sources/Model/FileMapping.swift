import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A whole file mapped read-only (`mmap`, unmapped when the last reference goes): what a packed
/// model reads its weights from in place, as llama.cpp does, so they are resident once, as page
/// cache, and only while used. `data` views it without a copy.
public final class FileMapping: @unchecked Sendable {
    public let base: UnsafeRawPointer
    public let count: Int

    public init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FileError.io(path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError.io(path, "cannot stat: \(String(cString: strerror(errno)))") }
        count = Int(st.st_size)
        guard count > 0 else {   // mmap refuses empty files; the parser reports the truncation
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        guard let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw FileError.io(path, "cannot map: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if count > 0 { munmap(UnsafeMutableRawPointer(mutating: base), count) } else { UnsafeMutableRawPointer(mutating: base).deallocate() }
    }

    /// The mapped bytes as `Data`, without a copy; the Data (and every slice of it) keeps the
    /// mapping alive.
    public var data: Data {
        Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base), count: count, deallocator: .custom { _, _ in withExtendedLifetime(self) {} })
    }
}
