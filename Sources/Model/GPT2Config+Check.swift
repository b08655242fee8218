import Foundation

/// Checks of a config against the weights it comes with, made from the safetensors header
/// alone, before anything is allocated from the config's sizes.
extension GPT2Config {
    /// Upper bounds on the sizes a config may declare (far above gpt2-xl's; anything beyond is a
    /// corrupt or hostile file, refused before any allocation).
    public static let limits = (vocabSize: 1 << 22, nPositions: 1 << 17, nEmbd: 1 << 16, nLayer: 4096, nInner: 1 << 18)

    /// Checks every size of the config against the tensors of a weights header (`shapes`: tensor
    /// name without the `transformer.` prefix -> shape). Sparse tensors appear as
    /// `<name>.bitmask`. Errors name the config field, the tensor (as the file spells it, with
    /// `prefix`) and both files.
    public func check(against shapes: [String: [Int]], prefix: String = "", config configPath: String, weights weightsPath: String) throws {
        func mismatch(_ field: String, _ value: Int, _ tensor: String, _ detail: String) -> FileError {
            FileError.format(configPath, "\(field) = \(value) does not match tensor '\(prefix)\(tensor)' of \(weightsPath): \(detail)")
        }
        func expect(_ tensor: String, _ want: [Int], fields: [(String, Int)]) throws {
            guard let got = shapes[tensor] else {
                throw FileError.format(weightsPath, "tensor '\(prefix)\(tensor)' is missing (config \(configPath) describes a GPT-2 with n_layer \(nLayer), n_embd \(nEmbd))")
            }
            guard got != want else { return }
            // Name the first field whose dimension disagrees.
            for (k, (field, value)) in fields.enumerated() where k < got.count && k < want.count && got[k] != want[k] {
                throw mismatch(field, value, tensor, "shape \(got), expected \(want)")
            }
            throw FileError.format(weightsPath, "tensor '\(prefix)\(tensor)' has shape \(got), expected \(want) from \(configPath)")
        }

        // Blocks: exactly h.0 ..< h.(n_layer - 1), counted from the header (never looping to n_layer).
        var blocks = Set<Int>()
        var example: [Int: String] = [:]
        for name in shapes.keys where name.hasPrefix("h.") {
            let parts = name.split(separator: ".", maxSplits: 2)
            guard parts.count == 3, let l = Int(parts[1]), l >= 0, String(l) == parts[1] else {
                throw FileError.format(weightsPath, "unexpected tensor '\(prefix)\(name)' (blocks are named h.<index>.…)")
            }
            if blocks.insert(l).inserted { example[l] = name }
        }
        if let top = blocks.max(), top >= nLayer {
            throw FileError.format(configPath, "n_layer = \(nLayer) but \(weightsPath) holds unexpected tensor '\(prefix)\(example[top]!)' "
                                   + "(\(blocks.count) blocks, up to h.\(top))")
        }
        if blocks.count != nLayer {
            let missing = blocks.isEmpty ? 0 : (0...blocks.max()!).first { !blocks.contains($0) } ?? blocks.count
            throw FileError.format(configPath, "n_layer = \(nLayer) but \(weightsPath) holds \(blocks.count) block(s) (no tensor '\(prefix)h.\(missing).ln_1.weight')")
        }

        // Sizes from tensors that every layer form keeps dense.
        try expect("wpe.weight", [nPositions, nEmbd], fields: [("n_positions", nPositions), ("n_embd", nEmbd)])
        try expect("ln_f.weight", [nEmbd], fields: [("n_embd", nEmbd)])
        if nLayer > 0 {
            // The output sizes of the block linears (their biases stay dense in every form).
            for kind in [BlockLinear.attention, .fc] {
                try expect(kind.name(block: 0) + ".bias", [kind.shape(self).out], fields: [kind == .fc ? ("n_inner", nInner) : ("n_embd", nEmbd)])
            }
        }
        if shapes["wte.weight"] != nil {
            try expect("wte.weight", [vocabSize, nEmbd], fields: [("vocab_size", vocabSize), ("n_embd", nEmbd)])
        } else if let w0 = shapes["wte.w0"] {
            guard w0.count == 2, w0[0] == vocabSize else { throw mismatch("vocab_size", vocabSize, "wte.w0", "shape \(w0)") }
        } else if let bits = shapes["wte.weight.bitmask"] {
            let want = (vocabSize * nEmbd + 7) / 8
            guard bits == [want] else { throw mismatch("vocab_size", vocabSize, "wte.weight.bitmask", "\(bits) bytes, expected [\(want)] for [\(vocabSize), \(nEmbd)]") }
        } else if !shapes.keys.contains(where: { $0.hasPrefix("wte.") }) {
            // (Other embedding forms are checked against the layout, tensor by tensor, before any data is read.)
            throw FileError.format(weightsPath, "tensor '\(prefix)wte.weight' is missing")
        }
    }
}
