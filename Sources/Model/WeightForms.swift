/// Every weight form, by its config.json kind: the one registry (loading reads forms through it).
public let weightForms: [String: WeightComponent.Type] = Dictionary(
    uniqueKeysWithValues: ([DenseComponent.self, LowRankComponent.self, KroneckerComponent.self, QuantizedComponent.self] as [WeightComponent.Type]).map { ($0.kind, $0) })

/// A component read from its config.json entry; errors name `at`.
public func decodeWeightComponent(_ entry: [String: JSONValue], layer: String, inFeatures: Int, outFeatures: Int, at: String) throws -> WeightComponent {
    guard let kind = entry["kind"]?.stringValue else { throw ModelError.input("\(at): each component needs a 'kind'") }
    guard let form = weightForms[kind] else {
        throw ModelError.input("\(at): unknown component kind '\(kind)' (\(weightForms.keys.sorted().joined(separator: ", ")))")
    }
    return try form.decode(entry, layer: layer, inFeatures: inFeatures, outFeatures: outFeatures, at: at)
}
