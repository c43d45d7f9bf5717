import InterpCore

/// The parameters of a SAELens SAE, in SAELens's names and layouts: `W_enc [d_in, d_sae]`, `b_enc [d_sae]`,
/// `W_dec [d_sae, d_in]`, `b_dec [d_in]`, and for JumpReLU `threshold [d_sae]`.
public struct SAEParameters: Equatable, Sendable {
    public var wEnc: Tensor
    public var bEnc: Tensor
    public var wDec: Tensor
    public var bDec: Tensor
    /// JumpReLU's per-latent threshold; nil for the other architectures.
    public var threshold: Tensor?

    public init(wEnc: Tensor, bEnc: Tensor, wDec: Tensor, bDec: Tensor, threshold: Tensor? = nil) {
        precondition(wEnc.rank == 2 && wDec.shape == [wEnc.shape[1], wEnc.shape[0]]
                     && bEnc.shape == [wEnc.shape[1]] && bDec.shape == [wEnc.shape[0]]
                     && (threshold == nil || threshold!.shape == [wEnc.shape[1]]), "inconsistent SAE parameter shapes")
        self.wEnc = wEnc
        self.bEnc = bEnc
        self.wDec = wDec
        self.bDec = bDec
        self.threshold = threshold
    }

    public static func zeros(dIn: Int, dSAE: Int, threshold: Bool = false) -> SAEParameters {
        SAEParameters(wEnc: Tensor(zeros: [dIn, dSAE]), bEnc: Tensor(zeros: [dSAE]), wDec: Tensor(zeros: [dSAE, dIn]),
                      bDec: Tensor(zeros: [dIn]), threshold: threshold ? Tensor(zeros: [dSAE]) : nil)
    }

    /// Zeros with the same tensors as `self`.
    public var zerosLike: SAEParameters { .zeros(dIn: dIn, dSAE: dSAE, threshold: threshold != nil) }

    public var dIn: Int { wEnc.shape[0] }
    public var dSAE: Int { wEnc.shape[1] }

    /// The four tensors every SAE has, in the order SAELens registers them.
    public static let names = ["b_dec", "W_dec", "W_enc", "b_enc"]

    /// This SAE's tensor names: the four, then `threshold` if present.
    public var names: [String] { threshold == nil ? Self.names : Self.names + ["threshold"] }

    public subscript(name: String) -> Tensor {
        get {
            switch name {
            case "W_enc": return wEnc
            case "b_enc": return bEnc
            case "W_dec": return wDec
            case "b_dec": return bDec
            case "threshold" where threshold != nil: return threshold!
            default: preconditionFailure("no SAE parameter \(name)")
            }
        }
        set {
            switch name {
            case "W_enc": wEnc = newValue
            case "b_enc": bEnc = newValue
            case "W_dec": wDec = newValue
            case "b_dec": bDec = newValue
            case "threshold": threshold = newValue
            default: preconditionFailure("no SAE parameter \(name)")
            }
        }
    }

    /// Runs `body` on the named tensor in place (no copy-on-write, unlike reading it out and writing it back).
    public mutating func modify<R>(_ name: String, _ body: (inout Tensor) throws -> R) rethrows -> R {
        switch name {
        case "W_enc": return try body(&wEnc)
        case "b_enc": return try body(&bEnc)
        case "W_dec": return try body(&wDec)
        case "b_dec": return try body(&bDec)
        case "threshold" where threshold != nil: return try body(&threshold!)
        default: preconditionFailure("no SAE parameter \(name)")
        }
    }

    /// `‖W_dec,i‖` for every latent.
    public var decoderNorms: [Float] {
        wDec.withUnsafeBufferPointer { w in
            (0..<dSAE).map { i in
                var sum: Float = 0
                for j in 0..<dIn { let v = w[i * dIn + j]; sum += v * v }
                return sum.squareRoot()
            }
        }
    }
}
