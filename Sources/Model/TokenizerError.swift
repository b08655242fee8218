import Foundation

/// An error raised while loading tokenizer files or decoding token ids.
public enum TokenizerError: Error, CustomStringConvertible {
    /// The file does not exist (nor the alternative, if one is named).
    case missingFile(URL, alternative: String? = nil)
    /// The file exists but could not be read.
    case unreadableFile(URL, reason: String)
    /// vocab.json is not a JSON object mapping token strings to non-negative integer ids, or
    /// lacks a token the tokenizer needs.
    case invalidVocab(URL, reason: String)
    /// A line of merges.txt (1-based line number, counting the `#version` header) is malformed.
    case malformedMerges(URL, line: Int, reason: String)
    /// tokenizer.json is not a GPT-2 (byte-level BPE) tokenizer or is malformed.
    case invalidTokenizerJSON(URL, reason: String)
    /// A GGUF file's tokenizer metadata (`field`: `tokenizer.ggml.tokens`, a merge) is malformed.
    case invalidGGUF(URL, field: String, reason: String)
    /// `decode` was given an id that is not in the vocabulary.
    case unknownTokenID(Int, vocabSize: Int)

    /// A human-readable description naming the file and the problem.
    public var description: String {
        switch self {
        case .missingFile(let url, let alternative):
            return "tokenizer file not found: \(url.path)" + (alternative.map { " (nor \($0) beside it)" } ?? "")
        case .unreadableFile(let url, let reason):
            return "cannot read tokenizer file \(url.path): \(reason)"
        case .invalidVocab(let url, let reason):
            return "invalid vocabulary \(url.path): \(reason)"
        case .malformedMerges(let url, let line, let reason):
            return "malformed merges file \(url.path), line \(line): \(reason)"
        case .invalidTokenizerJSON(let url, let reason):
            return "invalid tokenizer \(url.path): \(reason)"
        case .invalidGGUF(let url, let field, let reason):
            return "\(url.path): \(field): \(reason)"
        case .unknownTokenID(let id, let vocabSize):
            return "token id \(id) is not in the vocabulary (\(vocabSize) tokens)"
        }
    }
}
