import Foundation

/// A JSON value that keeps numbers, strings, arrays and objects exactly (for config.json).
public enum JSONValue: Codable, Equatable, Sendable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d):
            if d == d.rounded() && abs(d) < 1e15 { try c.encode(Int(d)) } else { try c.encode(d) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var numberValue: Double? { if case .number(let d) = self { return d }; return nil }
    /// The number as an Int when it is a whole number that fits (never traps on 1e300).
    public var intValue: Int? {
        guard let d = numberValue, d == d.rounded(), abs(d) < 9.0e15 else { return nil }
        return Int(d)
    }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
}

/// Encodes a JSON object the way Hugging Face writes config.json (Python's
/// `json.dumps(obj, indent=2, sort_keys=True)` plus a newline), so untouched keys read the same.
public func encodeConfigJSON(_ object: [String: JSONValue]) throws -> Data {
    var out = ""
    writeJSON(.object(object), indent: 0, into: &out)
    out += "\n"
    return Data(out.utf8)
}

private func writeJSON(_ v: JSONValue, indent: Int, into out: inout String) {
    let pad = String(repeating: " ", count: indent + 2), end = String(repeating: " ", count: indent)
    switch v {
    case .null: out += "null"
    case .bool(let b): out += b ? "true" : "false"
    case .number(let d):
        if d == d.rounded() && abs(d) < 1e15 { out += String(Int(d)) } else { out += "\(d)" }
    case .string(let s): out += pythonQuoted(s)
    case .array(let a):
        if a.isEmpty { out += "[]"; return }
        out += "[\n"
        for (i, x) in a.enumerated() {
            out += pad
            writeJSON(x, indent: indent + 2, into: &out)
            out += i + 1 < a.count ? ",\n" : "\n"
        }
        out += end + "]"
    case .object(let o):
        if o.isEmpty { out += "{}"; return }
        out += "{\n"
        let keys = o.keys.sorted()
        for (i, k) in keys.enumerated() {
            out += pad + pythonQuoted(k) + ": "
            writeJSON(o[k]!, indent: indent + 2, into: &out)
            out += i + 1 < keys.count ? ",\n" : "\n"
        }
        out += end + "}"
    }
}

/// A JSON string literal with Python's `ensure_ascii` escaping.
private func pythonQuoted(_ s: String) -> String {
    var r = "\""
    for u in s.utf16 {
        switch u {
        case 0x22: r += "\\\""
        case 0x5C: r += "\\\\"
        case 0x0A: r += "\\n"
        case 0x0D: r += "\\r"
        case 0x09: r += "\\t"
        case 0x08: r += "\\b"
        case 0x0C: r += "\\f"
        case 0x20..<0x7F: r += String(UnicodeScalar(UInt8(u)))
        default: r += String(format: "\\u%04x", u)
        }
    }
    return r + "\""
}

extension JSONValue: CustomStringConvertible {
    /// Compact JSON text (for messages).
    public var description: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let d): return d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : "\(d)"
        case .string(let s): return "\"\(s)\""
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case .object(let o): return "{" + o.keys.sorted().map { "\"\($0)\": \(o[$0]!)" }.joined(separator: ", ") + "}"
        }
    }
}
