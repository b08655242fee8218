import Foundation
import Kernels
import Tensor

/// Every trainable tensor of a model in one flat Float buffer, with a matching flat gradient
/// buffer: the optimizer and the gradient reductions work on the whole buffer at once. The
/// values may live in memory the set does not own (a node-shared MPI window for a read-only
/// teacher); the gradients are only allocated when first used (never for a teacher).
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

    /// A parameter to lay out: name, shape, weight-decay flag.
    public typealias Spec = (name: String, shape: [Int], decay: Bool)

    public private(set) var slots: [Slot] = []
    private var index: [String: Int] = [:]
    /// All parameter values, slot after slot (each slot 16-float aligned, padding zero).
    public let values: UnsafeMutableBufferPointer<Float>
    private var gradStorage: UnsafeMutableBufferPointer<Float>?
    private let ownsValues: Bool
    /// Keeps external storage alive (e.g. the shared window holding a teacher's values).
    private let storageOwner: AnyObject?

    /// Total number of scalars (with alignment padding).
    public var count: Int { values.count }

    /// Floats a layout occupies with its alignment padding.
    public static func floats(for layout: [Spec]) -> Int {
        layout.reduce(0) { $0 + ($1.shape.reduce(1, *) + 15) / 16 * 16 }
    }

    /// Lays out `layout`, in order, over `storage` (at least `floats(for:)` floats, which the
    /// caller fills; `owner` is kept alive with the set) or over new zeroed memory.
    public init(layout: [Spec], storage: UnsafeMutableBufferPointer<Float>? = nil, owner: AnyObject? = nil) {
        var offset = 0
        for t in layout {
            precondition(index[t.name] == nil, "ParameterSet: duplicate parameter \(t.name)")
            index[t.name] = slots.count
            slots.append(Slot(name: t.name, shape: t.shape, offset: offset, decay: t.decay))
            // Keep every slot 16-float aligned (64 bytes) for vector loads.
            offset += (t.shape.reduce(1, *) + 15) / 16 * 16
        }
        if let storage {
            precondition(storage.count >= offset, "ParameterSet: storage of \(storage.count) floats for a layout of \(offset)")
            values = UnsafeMutableBufferPointer(rebasing: storage[0..<max(offset, 0)])
            ownsValues = false
        } else {
            // calloc: zeroed pages the kernel maps on first touch, so slots nobody writes (a
            // packed model's weights kept in their packed form) cost no resident memory.
            guard let raw = calloc(max(offset, 1), MemoryLayout<Float>.stride) else { fatalError("ParameterSet: out of memory for \(offset) floats") }
            values = UnsafeMutableBufferPointer(start: raw.bindMemory(to: Float.self, capacity: max(offset, 1)), count: max(offset, 1))
            ownsValues = true
        }
        storageOwner = owner
    }

    /// Lays out `tensors` in order and copies their values in.
    public convenience init(_ tensors: [(name: String, tensor: Tensor, decay: Bool)]) {
        self.init(layout: tensors.map { ($0.name, $0.tensor.shape, $0.decay) })
        for (slot, t) in zip(slots, tensors) {
            t.tensor.data.withUnsafeBufferPointer { src in
                (values.baseAddress! + slot.offset).update(from: src.baseAddress!, count: slot.count)
            }
        }
    }

    deinit {
        if ownsValues { free(values.baseAddress) }
        gradStorage?.deallocate()
    }

    /// Gradients, same layout as `values` (allocated, zeroed, on first use).
    public var grads: UnsafeMutableBufferPointer<Float> {
        if let g = gradStorage { return g }
        let g = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(values.count, 1))
        g.initialize(repeating: 0)
        gradStorage = g
        return g
    }

    /// Whether gradients have been allocated (a model that only runs forward has none).
    public var hasGradients: Bool { gradStorage != nil }

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
    public func tensor(_ name: String) -> Tensor { copy(name, from: values) }

    /// A copy of a parameter's gradient as a tensor.
    public func gradTensor(_ name: String) -> Tensor { copy(name, from: grads) }

    private func copy(_ name: String, from buffer: UnsafeMutableBufferPointer<Float>) -> Tensor {
        let s = slot(name)
        do { return try Tensor(shape: s.shape, data: Array(UnsafeBufferPointer(start: buffer.baseAddress! + s.offset, count: s.count))) }
        catch { preconditionFailure("parameter \(name): a slot's count is its shape's product: \(error)") }
    }

    /// Overwrites a parameter's values (shapes must agree).
    public func set(_ name: String, _ t: Tensor) throws {
        let s = slot(name)
        guard s.shape == t.shape else {
            throw TensorError.shape("ParameterSet.set(\(name))", "expected \(s.shape), got \(t.shape)")
        }
        t.data.withUnsafeBufferPointer { (values.baseAddress! + s.offset).update(from: $0.baseAddress!, count: s.count) }
    }

    /// The first parameter element that is NaN or ±Inf, if any (slot order; among the slots
    /// `only` names, when given).
    public func firstNonFinite(only names: Set<String>? = nil) -> (name: String, index: Int, value: Float)? {
        for s in slots where names?.contains(s.name) ?? true {
            let p = values.baseAddress! + s.offset
            // A sum is non-finite iff some element is (or it overflowed): scan only then.
            if sum8(p, count: s.count).isFinite { continue }
            for i in 0..<s.count where !p[i].isFinite { return (s.name, i, p[i]) }
        }
        return nil
    }

    /// Sets every gradient to zero.
    public func zeroGrads() { grads.update(repeating: 0) }

    /// Releases the gradients (a model that stops training, e.g. a student kept for evaluation).
    public func releaseGradients() {
        gradStorage?.deallocate()
        gradStorage = nil
    }

    /// Name, tensor and decay flag of every parameter (to rebuild a new set).
    public var all: [(name: String, tensor: Tensor, decay: Bool)] {
        slots.map { ($0.name, tensor($0.name), $0.decay) }
    }

    /// Number of scalars excluding alignment padding.
    public var parameterCount: Int { slots.reduce(0) { $0 + $1.count } }
}
