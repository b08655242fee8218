import CKernels
import Foundation
import Kernels

extension PackedGPT2 {
    /// Loads a GGUF file of llama.cpp's gpt2 layout straight into its packed form, for a process
    /// that only runs it forward (eval, generate). The file is mapped, and the token embedding and
    /// block linears are read where they lie: the file keeps them as `[out, in]` rows (F32, F16,
    /// BF16) or ggml blocks along the inputs (Q8_0, Q4_0), which are the packed forms' own
    /// layouts, so nothing is copied or widened (only F32 weights packed for `--precision bf16`
    /// are converted). Positions, norms and biases are read into the parameter buffer, whose
    /// weight slots are never written, hence never resident. Peak memory: the file's pages as
    /// they are used, plus the small tensors, as llama.cpp's own loader. Every weight is checked
    /// (finite values, valid blocks) as `GPT2.load(gguf:)` checks it; refusals name the file and
    /// the tensor.
    public static func load(gguf url: URL, precision: PackedPrecision = .f32, allowNonFinite: Bool = false) throws -> PackedGPT2 {
        let file = try GGUFFile(url: url)
        let header = try GGUFModelHeader(file)
        let forms = header.forms, params = ParameterSet(layout: forms.parameterLayout)
        var prepacked: [ObjectIdentifier: PackedOperator] = [:]
        var embedding: PackedRows?
        for (e, info) in header.tensors {
            guard e.quantizable else {
                let values = try file.floats(of: e.name)
                if !allowNonFinite, let i = values.firstIndex(where: { !$0.isFinite }) {
                    throw FileError.nonFinite(url.path, tensor: e.name, value: values[i], index: i)
                }
                params.value(e.parameter).update(from: values, count: values.count)
                continue
            }
            let rows = try packedRows(file, e.name, info, blocks: header.quantized[e.name], precision: precision, allowNonFinite: allowNonFinite)
            if e.role == .tokenEmbedding {
                embedding = rows
            } else {
                prepacked[ObjectIdentifier(forms.layer(e.layer!)!.components[0])] = rows
            }
        }
        let model = GPT2(config: header.config, embedding: forms.embedding, blocks: forms.blocks, params: params)
        return try PackedGPT2(model, precision: precision, prepacked: prepacked, embedding: embedding.map(RowsEmbedding.init))
    }

    /// One weight of the file as packed rows [out, in] over the mapped bytes (F32 converted to
    /// BF16 for `precision` bf16); its values or blocks checked first.
    private static func packedRows(_ file: GGUFFile, _ name: String, _ info: GGUFTensorInfo, blocks: QuantizedComponent?,
                                   precision: PackedPrecision, allowNonFinite: Bool) throws -> PackedRows {
        let (rows, cols) = (info.shape[0], info.shape[1]), n = rows * cols, path = file.url.path
        guard let raw = try file.mappedBytes(of: name), let owner = file.mapping else {
            preconditionFailure("PackedGPT2.load(gguf:) maps its file")
        }
        let base = raw.baseAddress!
        guard Int(bitPattern: base) % 4 == 0 else {   // general.alignment may be any value; the kernels want whole elements
            throw FileError.format(path, "tensor '\(name)' is not aligned to 4 bytes in the file (general.alignment = \(file.alignment))")
        }
        switch info.type {
        case .q8_0, .q4_0:
            let q = blocks!   // the header makes every quantized weight's component
            try q.checkBlocks(raw, tensor: name, path: path)
            return Packing.quantized(base, format: q.format, rows: rows, cols: cols, owner: owner)
        case .f32:
            let w = base.assumingMemoryBound(to: Float.self)
            if !allowNonFinite, let i = (0..<n).first(where: { !w[$0].isFinite }) {
                throw FileError.nonFinite(path, tensor: name, value: w[i], index: i)
            }
            return Packing.rowMajor(w, rows: rows, cols: cols, precision: precision, owner: owner)
        case .f16, .bf16:
            let h = base.assumingMemoryBound(to: UInt16.self), f16 = info.type == .f16
            let exponent: UInt16 = f16 ? 0x7C00 : 0x7F80
            if !allowNonFinite, let i = (0..<n).first(where: { h[$0] & exponent == exponent }) {
                throw FileError.nonFinite(path, tensor: name, value: f16 ? squeeze_fp16_to_fp32(h[i]) : squeeze_bf16_to_fp32(h[i]), index: i)
            }
            return PackedRows(rows: rows, cols: cols, storage: f16 ? .f16(h) : .bf16(h), bytes: 2 * n, owner: owner)
        default:
            preconditionFailure("GGUFModelHeader admits F32, F16, BF16, Q8_0 and Q4_0 weights only")
        }
    }
}
