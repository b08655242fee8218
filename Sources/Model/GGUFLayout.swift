import Foundation
import Kernels

/// llama.cpp's `gpt2` GGUF layout, as its converter (convert_hf_to_gguf.py) writes it and
/// llama.cpp loads it: the metadata keys and their value types, the tensor names, which tensors
/// hold a HF Conv1D weight transposed, and the types each export type gives them. The one table
/// the GGUF export (`GPT2+GGUFExport.swift`) and the GGUF loader (`GPT2+GGUFLoad.swift`) follow.
public enum GGUFLayout {
    public static let architecture = "gpt2"
    /// `general.quantization_version` (ggml's `GGML_QNT_VERSION`).
    public static let quantizationVersion: UInt32 = 2

    /// Metadata keys. Sizes are UINT32, the epsilon FLOAT32, names STRING; tokens and merges are
    /// STRING arrays, token types an INT32 array.
    public enum Key {
        public static let architecture = "general.architecture"
        public static let type = "general.type"
        public static let name = "general.name"
        public static let fileType = "general.file_type"
        public static let quantizationVersion = "general.quantization_version"
        public static let blockCount = "gpt2.block_count"
        public static let contextLength = "gpt2.context_length"
        public static let embeddingLength = "gpt2.embedding_length"
        public static let feedForwardLength = "gpt2.feed_forward_length"
        public static let headCount = "gpt2.attention.head_count"
        public static let layerNormEpsilon = "gpt2.attention.layer_norm_epsilon"
        public static let tokenizerModel = "tokenizer.ggml.model"
        public static let tokenizerPre = "tokenizer.ggml.pre"
        public static let tokens = "tokenizer.ggml.tokens"
        public static let tokenTypes = "tokenizer.ggml.token_type"
        public static let merges = "tokenizer.ggml.merges"
        public static let bosID = "tokenizer.ggml.bos_token_id"
        public static let eosID = "tokenizer.ggml.eos_token_id"
    }

    /// Token types (`llama_token_type`): a normal token, the control token `<|endoftext|>`.
    public static let normalTokenType: Int32 = 1, controlTokenType: Int32 = 3

    /// What a tensor of the layout holds.
    public enum Role: Equatable {
        /// token_embd: wte [V, C] as is (V rows of C).
        case tokenEmbedding
        /// position_embd: wpe [n_positions, C] as is; kept F32 by every export type.
        case positionEmbedding
        /// A block linear's weight: HF's Conv1D [in, out] transposed to [out, in] (out rows of in).
        case linear
        /// A LayerNorm weight or bias, or a linear's bias: 1-D, F32.
        case vector
    }

    /// One tensor of the layout.
    public struct Entry: Equatable {
        /// The GGUF name ("blk.0.attn_qkv.weight").
        public let name: String
        /// The Squeeze parameter it holds ("h.0.attn.c_attn.weight"); for a weight, the name of
        /// its dense form, whatever form the layer has.
        public let parameter: String
        /// The compressible layer whose weight it is ("wte", "h.0.attn.c_attn"), nil otherwise.
        public let layer: String?
        /// Row-major shape in the file (its ggml dims reversed): [out, in] for a linear.
        public let shape: [Int]
        public let role: Role

        /// Elements per row (ggml's ne[0]).
        public var rowLength: Int { shape.last! }
        /// Whether an export type may quantize it (token_embd and the block matrices).
        public var quantizable: Bool { role == .tokenEmbedding || role == .linear }
    }

    /// Every tensor of a GPT-2 of `c`, in the order Squeeze writes them: token_embd,
    /// position_embd, each block (attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down,
    /// weight before bias), output_norm. No `output`: the head is tied to token_embd.
    public static func entries(_ c: GPT2Config) -> [Entry] {
        let C = c.nEmbd
        var out = [Entry(name: "token_embd.weight", parameter: TokenEmbedding.denseName, layer: "wte", shape: [c.vocabSize, C], role: .tokenEmbedding),
                   Entry(name: "position_embd.weight", parameter: "wpe.weight", layer: nil, shape: [c.nPositions, C], role: .positionEmbedding)]
        func norm(_ gguf: String, _ hf: String) -> [Entry] {
            [Entry(name: gguf + ".weight", parameter: hf + ".weight", layer: nil, shape: [C], role: .vector),
             Entry(name: gguf + ".bias", parameter: hf + ".bias", layer: nil, shape: [C], role: .vector)]
        }
        for l in 0..<c.nLayer {
            for kind in BlockLinear.allCases {
                if kind == .attention { out += norm("blk.\(l).attn_norm", "h.\(l).ln_1") }
                if kind == .fc { out += norm("blk.\(l).ffn_norm", "h.\(l).ln_2") }
                let s = kind.shape(c), hf = kind.name(block: l), gguf = "blk.\(l).\(kind.ggufName)"
                out.append(Entry(name: gguf + ".weight", parameter: hf + ".weight", layer: hf, shape: [s.out, s.in], role: .linear))
                out.append(Entry(name: gguf + ".bias", parameter: hf + ".bias", layer: nil, shape: [s.out], role: .vector))
            }
        }
        return out + norm("output_norm", "ln_f")
    }

    /// The optional separate output head llama.cpp would use instead of token_embd.
    public static let outputName = "output.weight"

    /// Whether `url` names a GGUF file: a `.gguf` path, or a file that starts with "GGUF".
    public static func isGGUF(_ url: URL) -> Bool {
        if url.pathExtension.lowercased() == "gguf" { return true }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir), !isDir.boolValue,
              let h = FileHandle(forReadingAtPath: url.path) else { return false }
        defer { try? h.close() }
        return (try? h.read(upToCount: 4)).map { [UInt8]($0) == GGUFFile.magic } ?? false
    }
}

/// The tensor types of `squeeze export --format gguf --type ...`, as llama.cpp's converter
/// (`--outtype f32|f16`) and llama-quantize (`Q8_0`, `Q4_0`) give them.
public enum GGUFExportType: String, CaseIterable, Sendable {
    case f32, f16, q8_0, q4_0

    /// `general.file_type` (`llama_ftype`): ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_Q4_0 2.
    public var fileType: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q8_0: return 7
        case .q4_0: return 2
        }
    }

    /// The ggml block format of a quantized type.
    public var quantFormat: QuantFormat? { self == .q8_0 ? .q8_0 : self == .q4_0 ? .q4_0 : nil }

    /// The type `entry` takes: vectors and position_embd F32; token_embd and the block matrices
    /// the export type, or F16 when their rows are not whole blocks of it (as llama.cpp falls back).
    public func tensorType(_ entry: GGUFLayout.Entry) -> GGMLType {
        guard entry.quantizable else { return .f32 }
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .q8_0, .q4_0:
            let t: GGMLType = self == .q8_0 ? .q8_0 : .q4_0
            return entry.rowLength % t.blockSize == 0 ? t : .f16
        }
    }
}
