/// The large buffers of one training step, kept from step to step. Arrays of tens of megabytes are mapped fresh by
/// the allocator each time and fault their pages in again; reusing them avoids that. Results built from these arrays
/// share their storage; once a result is dropped the next step writes in place.
public final class SAEWorkspace {
    var centred: [Float] = [], pre: [Float] = [], xhat: [Float] = [], g: [Float] = [], dCentred: [Float] = []
    var dz: [Float] = [], z: [Float] = [], gWEnc: [Float] = [], gWDec: [Float] = []

    public init() {}

    func prepare(rows: Int, dIn: Int, dSAE: Int) {
        func size(_ a: inout [Float], _ n: Int) { if a.count != n { a = [Float](repeating: 0, count: n) } }
        size(&centred, rows * dIn); size(&xhat, rows * dIn); size(&g, rows * dIn); size(&dCentred, rows * dIn)
        size(&pre, rows * dSAE); size(&dz, rows * dSAE); size(&z, rows * dSAE)
        size(&gWEnc, dIn * dSAE); size(&gWDec, dSAE * dIn)
    }

    /// Moves a buffer out (leaving an empty array) so the caller holds the only reference and writes in place.
    func take(_ path: ReferenceWritableKeyPath<SAEWorkspace, [Float]>) -> [Float] {
        let buffer = self[keyPath: path]
        self[keyPath: path] = []
        return buffer
    }

    func giveBack(centred: [Float], pre: [Float], xhat: [Float], g: [Float], dCentred: [Float], dz: [Float], z: [Float],
                  gWEnc: [Float], gWDec: [Float]) {
        self.centred = centred; self.pre = pre; self.xhat = xhat; self.g = g; self.dCentred = dCentred
        self.dz = dz; self.z = z; self.gWEnc = gWEnc; self.gWDec = gWDec
    }
}
