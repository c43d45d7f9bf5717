import InterpCore

/// The four parameters every SAELens SAE has, in SAELens's names and layouts:
/// `W_enc [d_in, d_sae]`, `b_enc [d_sae]`, `W_dec [d_sae, d_in]`, `b_dec [d_in]`.
public struct SAEParameters: Equatable, Sendable {
    public var wEnc: Tensor
    public var bEnc: Tensor
    public var wDec: Tensor
    public var bDec: Tensor

    public init(wEnc: Tensor, bEnc: Tensor, wDec: Tensor, bDec: Tensor) {
        precondition(wEnc.rank == 2 && wDec.shape == [wEnc.shape[1], wEnc.shape[0]]
                     && bEnc.shape == [wEnc.shape[1]] && bDec.shape == [wEnc.shape[0]], "inconsistent SAE parameter shapes")
        self.wEnc = wEnc
        self.bEnc = bEnc
        self.wDec = wDec
        self.bDec = bDec
    }

    public static func zeros(dIn: Int, dSAE: Int) -> SAEParameters {
        SAEParameters(wEnc: Tensor(zeros: [dIn, dSAE]), bEnc: Tensor(zeros: [dSAE]), wDec: Tensor(zeros: [dSAE, dIn]), bDec: Tensor(zeros: [dIn]))
    }

    public var dIn: Int { wEnc.shape[0] }
    public var dSAE: Int { wEnc.shape[1] }

    /// The tensors by SAELens name, in the order SAELens registers them.
    public static let names = ["b_dec", "W_dec", "W_enc", "b_enc"]

    public subscript(name: String) -> Tensor {
        get {
            switch name {
            case "W_enc": return wEnc
            case "b_enc": return bEnc
            case "W_dec": return wDec
            case "b_dec": return bDec
            default: preconditionFailure("no SAE parameter \(name)")
            }
        }
        set {
            switch name {
            case "W_enc": wEnc = newValue
            case "b_enc": bEnc = newValue
            case "W_dec": wDec = newValue
            case "b_dec": bDec = newValue
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
        default: preconditionFailure("no SAE parameter \(name)")
        }
    }

    /// `‖W_dec,i‖` for every latent.
    public var decoderNorms: [Float] {
        (0..<dSAE).map { i in
            var sum: Float = 0
            for j in 0..<dIn { let w = wDec.scalars[i * dIn + j]; sum += w * w }
            return sum.squareRoot()
        }
    }
}
