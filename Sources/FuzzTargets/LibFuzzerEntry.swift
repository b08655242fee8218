// libFuzzer's entry points, compiled only by scripts/fuzz.sh (`-D SQUEEZE_FUZZER`, together with
// `-sanitize=fuzzer -sanitize=address`). The ordinary build has no such symbols: it uses
// `FuzzTarget.run` directly (FuzzRegressionTests).
#if SQUEEZE_FUZZER
import Foundation

nonisolated(unsafe) private var selectedTarget: FuzzTarget?
/// SQUEEZE_FUZZ_VERBOSE=1: print why each input was rejected (when replaying files).
nonisolated(unsafe) private var verbose = false

/// Called once by libFuzzer before the first input: picks the target from SQUEEZE_FUZZ_TARGET.
@_cdecl("LLVMFuzzerInitialize")
public func squeezeFuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>?,
                                    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    let name = ProcessInfo.processInfo.environment["SQUEEZE_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")
        FileHandle.standardError.write(Data("set SQUEEZE_FUZZ_TARGET=\(names) (got '\(name)')\n".utf8))
        exit(2)
    }
    selectedTarget = target
    verbose = ProcessInfo.processInfo.environment["SQUEEZE_FUZZ_VERBOSE"] == "1"
    return 0
}

/// One input.
@_cdecl("LLVMFuzzerTestOneInput")
public func squeezeFuzzerTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let data = size > 0 && bytes != nil ? Data(bytes: bytes!, count: size) : Data()
    let error = selectedTarget!.run(data)
    if verbose { print(error.map { "rejected: \($0)" } ?? "accepted") }
    return 0
}
#endif
