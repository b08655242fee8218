/// A fast 64-bit hash of raw bytes, eight at a time over four lanes (to tell whether ranks hold
/// the same contents: several GB per second; not cryptographic).
public func hashContents(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
    let k1: UInt64 = 0x9E37_79B1_85EB_CA87, k2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    @inline(__always) func round(_ h: UInt64, _ w: UInt64) -> UInt64 {
        ((h &+ w &* k2) << 31 | (h &+ w &* k2) >> 33) &* k1
    }
    var lanes: (UInt64, UInt64, UInt64, UInt64) = (seed &+ k1 &+ k2, seed &+ k2, seed, seed &- k1)
    let words = bytes.count / 8
    var i = 0
    while i + 4 <= words {
        lanes.0 = round(lanes.0, bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
        lanes.1 = round(lanes.1, bytes.loadUnaligned(fromByteOffset: 8 * i + 8, as: UInt64.self))
        lanes.2 = round(lanes.2, bytes.loadUnaligned(fromByteOffset: 8 * i + 16, as: UInt64.self))
        lanes.3 = round(lanes.3, bytes.loadUnaligned(fromByteOffset: 8 * i + 24, as: UInt64.self))
        i += 4
    }
    var h = round(round(round(round(UInt64(bytes.count), lanes.0), lanes.1), lanes.2), lanes.3)
    while i < words { h = round(h, bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)); i += 1 }
    var tail: UInt64 = 0
    for j in (8 * words)..<bytes.count { tail = tail << 8 | UInt64(bytes[j]) }
    h = round(h, tail)
    // Final avalanche.
    h ^= h >> 33; h = h &* k2; h ^= h >> 29; h = h &* k1; h ^= h >> 32
    return h
}

/// `hashContents` of an array's elements.
public func hashContents<T>(_ array: [T], seed: UInt64 = 0) -> UInt64 {
    array.withUnsafeBytes { hashContents($0, seed: seed) }
}
