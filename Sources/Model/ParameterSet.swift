import Kernels
import Tensor

/// Every trainable tensor of a model in one flat Float buffer, with a matching flat gradient
/// buffer: the optimizer and the gradient all-reduce work on the whole buffer at once.
public final class ParameterSet: @unchecked Sendable {
    /// One named tensor inside the flat buffer.
    public struct Slot: Sendable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
        /// Whether AdamW applies weight decay (matrices yes; biases and LayerNorm no).
        public let decay: Bool
    }

    public private(set) var slots: [Slot] = []
    private var index: [String: Int] = [:]
    /// All parameter values, slot after slot.
    public let values: UnsafeMutableBufferPointer<Float>
    /// Gradients, same layout as `values`.
    public let grads: UnsafeMutableBufferPointer<Float>

    /// Total number of scalars.
    public var count: Int { values.count }

    /// Lays out `tensors` in order and copies their values in.
    public init(_ tensors: [(name: String, tensor: Tensor, decay: Bool)]) {
        var offset = 0
        var slots: [Slot] = []
        for t in tensors {
            precondition(index[t.name] == nil, "ParameterSet: duplicate parameter \(t.name)")
            index[t.name] = slots.count
            slots.append(Slot(name: t.name, shape: t.tensor.shape, offset: offset, decay: t.decay))
            // Keep every slot 16-float aligned (64 bytes) for vector loads.
            offset += (t.tensor.count + 15) / 16 * 16
        }
        self.slots = slots
        values = .allocate(capacity: max(offset, 1))
        grads = .allocate(capacity: max(offset, 1))
        values.initialize(repeating: 0)
        grads.initialize(repeating: 0)
        for (slot, t) in zip(slots, tensors) {
            t.tensor.data.withUnsafeBufferPointer { src in
                (values.baseAddress! + slot.offset).update(from: src.baseAddress!, count: slot.count)
            }
        }
    }

    deinit {
        values.deallocate()
        grads.deallocate()
    }

    /// True if a parameter with this name exists.
    public func contains(_ name: String) -> Bool { index[name] != nil }

    /// The slot called `name` (a programming error if absent: layers bind known names).
    public func slot(_ name: String) -> Slot {
        guard let i = index[name] else { preconditionFailure("ParameterSet: no parameter named \(name)") }
        return slots[i]
    }

    /// Pointer to a parameter's values.
    public func value(_ name: String) -> UnsafeMutablePointer<Float> { values.baseAddress! + slot(name).offset }
    /// Pointer to a parameter's gradient.
    public func grad(_ name: String) -> UnsafeMutablePointer<Float> { grads.baseAddress! + slot(name).offset }

    /// A copy of a parameter as a tensor.
    public func tensor(_ name: String) -> Tensor {
        let s = slot(name)
        return try! Tensor(shape: s.shape, data: Array(UnsafeBufferPointer(start: values.baseAddress! + s.offset, count: s.count)))
    }

    /// A copy of a parameter's gradient as a tensor.
    public func gradTensor(_ name: String) -> Tensor {
        let s = slot(name)
        return try! Tensor(shape: s.shape, data: Array(UnsafeBufferPointer(start: grads.baseAddress! + s.offset, count: s.count)))
    }

    /// Overwrites a parameter's values (shapes must agree).
    public func set(_ name: String, _ t: Tensor) throws {
        let s = slot(name)
        guard s.shape == t.shape else {
            throw TensorError.shape("ParameterSet.set(\(name))", "expected \(s.shape), got \(t.shape)")
        }
        t.data.withUnsafeBufferPointer { (values.baseAddress! + s.offset).update(from: $0.baseAddress!, count: s.count) }
    }

    /// The first parameter element that is NaN or ±Inf, if any (slot order).
    public func firstNonFinite() -> (name: String, index: Int, value: Float)? {
        for s in slots {
            let p = values.baseAddress! + s.offset
            // A sum is non-finite iff some element is (or it overflowed): scan only then.
            if sum8(p, count: s.count).isFinite { continue }
            for i in 0..<s.count where !p[i].isFinite { return (s.name, i, p[i]) }
        }
        return nil
    }

    /// Sets every gradient to zero.
    public func zeroGrads() { grads.update(repeating: 0) }

    /// Name, tensor and decay flag of every parameter (to rebuild a new set).
    public var all: [(name: String, tensor: Tensor, decay: Bool)] {
        slots.map { ($0.name, tensor($0.name), $0.decay) }
    }

    /// Number of scalars excluding alignment padding.
    public var parameterCount: Int { slots.reduce(0) { $0 + $1.count } }
}
