import SparseAutoencoders
import Testing

/// Central differences (step ±1e-3) of `loss` for every parameter entry, against `gradients`, skipping entries where
/// `regime` (the ReLU signs or the selected latents) differs between the two evaluations: the loss has a kink there.
/// Returns how many entries were checked.
func checkFiniteDifferences(_ parameters: SAEParameters, gradients: SAEParameters,
                            loss: (SAEParameters) -> Double, regime: (SAEParameters) -> [Bool],
                            sourceLocation: SourceLocation = #_sourceLocation) -> Int {
    var p = parameters
    var checked = 0
    for name in SAEParameters.names {
        for k in 0..<p[name].count {
            let original = p[name].scalars[k]
            let plus = original + 1e-3, minus = original - 1e-3
            p[name].scalars[k] = plus
            let up = loss(p), upRegime = regime(p)
            p[name].scalars[k] = minus
            let down = loss(p), downRegime = regime(p)
            p[name].scalars[k] = original
            guard upRegime == downRegime else { continue }
            let numeric = (up - down) / (Double(plus) - Double(minus))
            let analytic = Double(gradients[name].scalars[k])
            #expect(Swift.abs(numeric - analytic) < 1e-3 * max(1, Swift.abs(numeric)), "\(name)[\(k)]: numeric \(numeric) vs \(analytic)",
                    sourceLocation: sourceLocation)
            checked += 1
        }
    }
    return checked
}
