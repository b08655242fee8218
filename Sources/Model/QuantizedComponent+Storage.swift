import Kernels

/// A quantized form in a weights file: each matrix's blocks as `<key>.<format>` (U8 `[rows, row
/// bytes]`), the other parameters as floats, a masked weight's bitmask. Loading checks the
/// untrusted blocks (shapes, finite non-zero scales where codes are non-zero) and names the tensor.
extension QuantizedComponent {
    /// The key of matrix `name`'s blocks.
    func blockKey(_ name: String, _ key: (String) -> String) -> String { key(name) + "." + format.rawValue }

    private var quantizedNames: Set<String> { Set(matrices.map(\.name)) }

    public func store(in writer: inout SafeTensorsWriter, key: (String) -> String, params: ParameterSet, dtype: SafeTensorsDType) {
        _ = currentGrid(params)   // the blocks of the current masters
        for m in matrices {
            writer.add(blockKey(m.name, key), shape: [m.rows, format.bytes(m.cols)], bytes: blocks[m.name]!, dtype: .u8)
        }
        for p in inner.parameters where !quantizedNames.contains(p.name) {
            writer.add(key(p.name), shape: p.shape, pointer: params.value(p.name), dtype: dtype, owner: params)
        }
        for m in inner.maskedParts {
            if let mask = m.mask { writer.add(key(m.weightName) + ".bitmask", shape: [(mask.count + 7) / 8], bytes: mask.bytes, dtype: .u8) }
        }
    }

    public func checkStored(in weights: WeightFiles, key: (String) -> String) throws {
        for m in matrices {
            let k = blockKey(m.name, key)
            guard let e = weights.entries[k] else { throw FileError.format(weights.url.path, "tensor '\(k)' is missing") }
            let want = [m.rows, format.bytes(m.cols)]
            guard e.dtype == .u8, e.shape == want else {
                throw FileError.format(weights.url.path, "tensor '\(k)' is \(e.dtype.rawValue) \(e.shape), expected U8 \(want) (\(format.name) blocks of \(m.name) \(m.shape))")
            }
        }
        for p in inner.parameters where !quantizedNames.contains(p.name) { try weights.expect(key(p.name), shape: p.shape) }
    }

    public func load(from weights: WeightFiles, key: (String) -> String, into params: ParameterSet, fill: Bool) throws {
        let path = weights.url.path
        for m in matrices {
            let k = blockKey(m.name, key), bytes = try weights.bytes(k)
            try checkBlocks(bytes, tensor: k, path: path)
            setBlocks(m.name, bytes, params: params, fill: fill)
        }
        for p in inner.parameters where fill && !quantizedNames.contains(p.name) { try weights.readFloats(key(p.name), into: params.value(p.name)) }
        for part in inner.maskedParts {
            let k = key(part.weightName) + ".bitmask"
            guard weights.entries[k] != nil else { continue }
            let n = part.inFeatures * part.outFeatures
            guard let mask = BitMask(bytes: try weights.bytes(k), count: n) else {
                throw FileError.format(path, "tensor '\(k)' does not match shape \([part.inFeatures, part.outFeatures])")
            }
            part.mask = mask
        }
    }

    /// Refuses blocks whose scale is not finite, or is zero where codes are not (a grid that
    /// cannot be what ggml's rule or GPTQ wrote), naming the tensor and the block.
    func checkBlocks(_ bytes: [UInt8], tensor: String, path: String) throws {
        try bytes.withUnsafeBytes { try checkBlocks($0, tensor: tensor, path: path) }
    }

    func checkBlocks(_ raw: UnsafeRawBufferPointer, tensor: String, path: String) throws {
        let zeroCode: UInt8 = format == .q8_0 ? 0 : 0x88
        for b in 0..<(raw.count / format.blockBytes) {
            let base = b * format.blockBytes
            let d = float(fp16: UInt16(raw[base]) | UInt16(raw[base + 1]) << 8)
            guard d.isFinite else { throw FileError.format(path, "tensor '\(tensor)': block \(b) has scale \(d)") }
            if d == 0, (2..<format.blockBytes).contains(where: { raw[base + $0] != zeroCode }) {
                throw FileError.format(path, "tensor '\(tensor)': block \(b) has a zero scale but non-zero codes")
            }
        }
    }
}
