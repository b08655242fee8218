/// A frozen 0/1 pruning mask, one bit per weight (32x smaller than a Float mask). Bit i of
/// word i/64 set means weight i is kept; as bytes (little-endian words) it is exactly the
/// `<name>.bitmask` tensor of a compressed model file.
public struct BitMask: Equatable, Sendable {
    public let count: Int
    private(set) var words: [UInt64]

    /// From a 0/1 float mask (non-zero = kept).
    public init(_ floats: [Float]) {
        count = floats.count
        words = [UInt64](repeating: 0, count: (floats.count + 63) / 64)
        for (i, f) in floats.enumerated() where f != 0 { words[i >> 6] |= 1 << UInt64(i & 63) }
    }

    /// From the file's bitmask bytes (bit i of byte i/8 = element i kept); nil if the byte count
    /// does not match `count`.
    public init?(bytes: [UInt8], count: Int) {
        guard bytes.count == (count + 7) / 8 else { return nil }
        self.count = count
        words = [UInt64](repeating: 0, count: (count + 63) / 64)
        for (j, b) in bytes.enumerated() { words[j >> 3] |= UInt64(b) << UInt64(8 * (j & 7)) }
        // Bits past `count` are not elements: clear them.
        if count % 64 != 0 { words[words.count - 1] &= (1 << UInt64(count % 64)) - 1 }
    }

    /// Whether weight i is kept.
    @inline(__always) public subscript(i: Int) -> Bool { words[i >> 6] >> UInt64(i & 63) & 1 != 0 }

    /// Number of kept weights.
    public var kept: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// The 0/1 float mask.
    public var floats: [Float] { (0..<count).map { self[$0] ? 1 : 0 } }

    /// The file's bitmask bytes.
    public var bytes: [UInt8] { (0..<((count + 7) / 8)).map { UInt8(truncatingIfNeeded: words[$0 >> 3] >> UInt64(8 * ($0 & 7))) } }

    /// Zeroes the pruned entries of `x` (count elements).
    public func apply(to x: UnsafeMutablePointer<Float>) {
        words.withUnsafeBufferPointer { w in
            for k in w.indices where w[k] != UInt64.max {
                let word = w[k], base = k << 6
                for j in 0..<min(64, count - base) where word >> UInt64(j) & 1 == 0 { x[base + j] = 0 }
            }
        }
    }
}
