import Foundation
import Kernels
import Tensor

/// `squeeze export --format gguf`: the model in llama.cpp's gpt2 layout (`GGUFLayout`), streamed
/// tensor by tensor.
extension GPT2 {
    /// What `exportGGUF` wrote.
    public struct GGUFExportReport: Sendable {
        /// Where a tensor's bytes came from.
        public enum Source: String, Sendable {
            /// Float values written as F32 or F16 (a dense weight as it is, or densified).
            case values
            /// Squeeze's own blocks of a layer already quantized in the requested format.
            case unchanged
            /// Densified and quantized by ggml's reference rule (`QuantFormat.quantize`).
            case quantized
            /// F16 instead of the requested block type: rows not a multiple of its 32.
            case fallbackF16
        }
        public struct Written: Sendable {
            public let name: String
            public let type: GGMLType
            /// Row-major shape in the file.
            public let shape: [Int]
            public let source: Source
        }
        public var tensors: [Written] = []

        /// The names of the tensors written from `source`.
        public func names(_ source: Source) -> [String] { tensors.filter { $0.source == source }.map(\.name) }
    }

    /// Writes the model to `url` as a GGUF file of llama.cpp's gpt2 layout with tensors of
    /// `type` (`GGUFExportType.tensorType`) and `tokenizer`'s vocabulary and merges. A layer
    /// already quantized in the requested format (one dense weight under a `QuantizedComponent`)
    /// is written from its blocks unchanged; every other weight is densified one layer at a time
    /// and converted or quantized by ggml's reference rule. The file is written atomically,
    /// tensor by tensor: beside the model, memory holds one densified layer and a chunk of rows.
    @discardableResult
    public func exportGGUF(to url: URL, type: GGUFExportType, tokenizer: GPT2Tokenizer, name: String? = nil) throws -> GGUFExportReport {
        if let bad = params.firstNonFinite() {
            throw ModelError.input("refusing to write \(url.path): tensor '\(bad.name)' holds \(bad.value) at element \(bad.index)")
        }
        let entries = GGUFLayout.entries(config)
        let metadata = try ggufMetadata(type: type, tokenizer: tokenizer, name: name, path: url.path)
        let types = entries.map { type.tensorType($0) }
        let writer = GGUFWriter(metadata: metadata, tensors: zip(entries, types).map { GGUFTensorDescription(name: $0.name, shape: $0.shape, type: $1) })
        var report = GGUFExportReport()
        var next = 0
        try writer.write(to: url) { description, sink in
            let e = entries[next]
            precondition(e.name == description.name, "the writer asks for the tensors in order")
            next += 1
            let source = try writeGGUFTensor(e, as: description.type, requested: type, to: sink)
            report.tensors.append(.init(name: e.name, type: description.type, shape: e.shape, source: source))
        }
        return report
    }

    /// The metadata llama.cpp's converter writes for gpt2, in its order.
    func ggufMetadata(type: GGUFExportType, tokenizer: GPT2Tokenizer, name: String?, path: String) throws -> [(key: String, value: GGUFValue)] {
        typealias K = GGUFLayout.Key
        let V = config.vocabSize
        guard tokenizer.idCount <= V else {
            throw ModelError.input("cannot write \(path): the tokenizer has ids up to \(tokenizer.idCount - 1), the model's vocab_size is \(V)")
        }
        var tokens = [String](), types = [Int32]()
        tokens.reserveCapacity(V)
        types.reserveCapacity(V)
        for id in 0..<V {
            // Ids the vocabulary lacks are padding, as the converter writes them.
            let t = tokenizer.token(id)
            tokens.append(t ?? "[PAD\(id)]")
            types.append(t == nil ? Int32(GPT2Tokenizer.unusedTokenType)
                         : id == tokenizer.endOfTextID ? GGUFLayout.controlTokenType : GGUFLayout.normalTokenType)
        }
        for (i, m) in tokenizer.mergeList.enumerated() where m.split(separator: " ", omittingEmptySubsequences: false).count != 2 {
            throw ModelError.input("cannot write \(path): merge \(i) \(m.debugDescription) has a token with a space, which GGUF's \"left right\" cannot hold")
        }
        var out: [(key: String, value: GGUFValue)] = [(K.architecture, .string(GGUFLayout.architecture)), (K.type, .string("model"))]
        if let name { out.append((K.name, .string(name))) }
        out += [(K.blockCount, .uint32(UInt32(config.nLayer))), (K.contextLength, .uint32(UInt32(config.nPositions))),
                (K.embeddingLength, .uint32(UInt32(config.nEmbd))), (K.feedForwardLength, .uint32(UInt32(config.nInner))),
                (K.headCount, .uint32(UInt32(config.nHead))), (K.layerNormEpsilon, .float32(config.layerNormEpsilon)),
                (K.fileType, .uint32(type.fileType)), (K.quantizationVersion, .uint32(GGUFLayout.quantizationVersion)),
                (K.tokenizerModel, .string("gpt2")), (K.tokenizerPre, .string("gpt-2")),
                (K.tokens, .array(.string(tokens))), (K.tokenTypes, .array(.int32(types))),
                (K.merges, .array(.string(tokenizer.mergeList))),
                (K.bosID, .uint32(UInt32(tokenizer.endOfTextID))), (K.eosID, .uint32(UInt32(tokenizer.endOfTextID)))]
        return out
    }

    /// Streams one tensor's bytes as `type`; returns where they came from.
    private func writeGGUFTensor(_ e: GGUFLayout.Entry, as type: GGMLType, requested: GGUFExportType,
                                 to sink: GGUFWriter.Sink) throws -> GGUFExportReport.Source {
        guard let layerName = e.layer, let layer = layer(layerName) else {
            let n = e.shape.reduce(1, *)
            try GGUFWriter.writeFloats(UnsafeBufferPointer(start: params.value(e.parameter), count: n), as: type, to: sink)
            return .values
        }
        let format = requested.quantFormat
        if let format, type.rawValue == format.ggmlType, let blocks = unchangedBlocks(layer, format, shape: e.shape) {
            try blocks.withUnsafeBytes { try sink($0) }
            return .unchanged
        }
        // The dense weight [in, out]: a dense component's own values, else the layer densified.
        let dense: Tensor? = layer.single is DenseComponent ? nil : layer.denseWeight(params: params)
        let (rows, cols) = (e.shape[0], e.shape[1])
        try withDenseValues(layer, dense) { w in
            try Self.streamRows(rows: rows, cols: cols, transposed: e.role == .linear, from: w, as: type, to: sink)
        }
        if type == .f16 && format != nil { return .fallbackF16 }
        return format != nil ? .quantized : .values
    }

    /// The blocks of a layer that is one dense weight quantized in `format`, with the shape
    /// the layout gives it (the blocks of its current masters); nil for any other form.
    private func unchangedBlocks(_ layer: WeightedLayer, _ format: QuantFormat, shape: [Int]) -> [UInt8]? {
        guard let q = layer.single as? QuantizedComponent, q.format == format, q.inner is DenseComponent,
              q.matrices.count == 1, q.matrices[0].rows == shape[0], q.matrices[0].cols == shape[1] else { return nil }
        _ = q.currentGrid(params)
        return q.blocks[q.matrices[0].name]
    }

    private func withDenseValues(_ layer: WeightedLayer, _ dense: Tensor?, _ body: (UnsafePointer<Float>) throws -> Void) throws {
        if let dense { try dense.data.withUnsafeBufferPointer { try body($0.baseAddress!) }; return }
        guard let d = layer.single as? DenseComponent else { preconditionFailure("a dense layer") }
        try body(params.value(d.weightName))
    }

    /// Writes `rows` rows of `cols` values as `type`, a chunk of rows at a time: row r is row r of
    /// `w` [rows, cols], or with `transposed` column r of `w` [cols, rows] (a Conv1D weight).
    static func streamRows(rows: Int, cols: Int, transposed: Bool, from w: UnsafePointer<Float>, as type: GGMLType,
                           to sink: GGUFWriter.Sink) throws {
        let chunk = max(1, (1 << 16) / cols)
        var buffer = [Float](repeating: 0, count: min(chunk, rows) * cols)
        var blocks = [UInt8](repeating: 0, count: type.byteCount(elements: buffer.count) ?? 0)
        var r0 = 0
        while r0 < rows {
            let n = min(chunk, rows - r0), count = n * cols
            buffer.withUnsafeMutableBufferPointer { b in
                if !transposed { b.baseAddress!.update(from: w + r0 * cols, count: count); return }
                for r in 0..<n { for i in 0..<cols { b[r * cols + i] = w[i * rows + r0 + r] } }
            }
            try buffer.withUnsafeBufferPointer { b in
                let values = UnsafeBufferPointer(rebasing: b[0..<count])
                switch type {
                case .q8_0, .q4_0:
                    let format: QuantFormat = type == .q8_0 ? .q8_0 : .q4_0
                    let bytes = format.bytes(count)
                    blocks.withUnsafeMutableBytes { format.quantize(values.baseAddress!, count: count, into: $0.baseAddress!) }
                    try blocks.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<bytes])) }
                default:
                    try GGUFWriter.writeFloats(values, as: type, to: sink)
                }
            }
            r0 += n
        }
    }
}
