import Model

/// A weight component run on plain arrays, with the saved state and scratch its passes need
/// allocated as the component sizes them (as the activation arena does for a model).
public final class ComponentPasses {
    public let component: WeightComponent
    public let rows: Int
    private var saved: [Float]
    private var scratch: [Float]

    public init(_ component: WeightComponent, rows: Int) {
        self.component = component
        self.rows = rows
        saved = [Float](repeating: .nan, count: max(component.savedFloats(rows: rows), 1))
        scratch = [Float](repeating: .nan, count: max(component.scratchFloats(rows: rows), 1))
    }

    /// out += x · W, keeping what `backward` needs.
    public func forward(x: [Float], out: inout [Float], params: ParameterSet) {
        saved.withUnsafeMutableBufferPointer { s in
            scratch.withUnsafeMutableBufferPointer { t in
                component.forward(x: x, N: rows, out: &out, params: params, buffers: ComponentBuffers(saved: s.baseAddress!, scratch: t.baseAddress!))
            }
        }
    }

    /// The inference forward: nothing kept.
    public func infer(x: [Float], out: inout [Float], params: ParameterSet) {
        scratch.withUnsafeMutableBufferPointer { t in
            component.forward(x: x, N: rows, out: &out, params: params, buffers: ComponentBuffers(saved: nil, scratch: t.baseAddress!))
        }
    }

    /// Gradients of the last `forward`; dx (+)= dY · Wᵀ.
    public func backward(x: [Float], dout: [Float], dx: inout [Float], accumulate: Bool, params: ParameterSet) {
        saved.withUnsafeMutableBufferPointer { s in
            scratch.withUnsafeMutableBufferPointer { t in
                component.backward(x: x, dout: dout, dx: &dx, accumulate: accumulate, N: rows, params: params,
                                   buffers: ComponentBuffers(saved: s.baseAddress!, scratch: t.baseAddress!))
            }
        }
    }

    /// y (+)= x [rows, out] · Wᵀ.
    public func multiplyTransposed(_ x: [Float], into y: inout [Float], accumulate: Bool, params: ParameterSet) {
        scratch.withUnsafeMutableBufferPointer { t in
            component.multiplyTransposed(x, N: rows, into: &y, accumulate: accumulate, params: params, scratch: t.baseAddress!)
        }
    }
}

extension WeightedLayer {
    /// The one-word form of each component joined by "+" ("dense", "sparse", "lowrank",
    /// "kronecker", "lowrank+sparse"), for assertions.
    public var formKinds: String {
        components.map { c in (c as? Maskable)?.mask != nil ? "sparse" : c.kind }.joined(separator: "+")
    }
}
