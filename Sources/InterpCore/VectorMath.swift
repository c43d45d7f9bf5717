/// Vectorised elementary functions for the hot loops (8 lanes, AVX2 with the package's target CPU).
/// Each is tested against the C library's scalar function.
public typealias Lanes = SIMD8<Float>

@inline(__always)
public func vectorExp(_ input: Lanes) -> Lanes {
    // Cephes-style expf: x = n·ln2 + r, |r| ≤ ln2/2, exp(r) by a degree-6 polynomial, then scale by 2ⁿ.
    // Relative error ≈ 2 ulp on the clamped range; below -87.3 the result flushes to 0, as expf's subnormals do not matter here.
    // Clamp with compares and selects (`clamped` goes through a generic, non-inlined pointwise min/max).
    var x = input.replacing(with: 88.72283, where: input .> Lanes(repeating: 88.72283))
    x.replace(with: -87.33654, where: x .< Lanes(repeating: -87.33654))
    let n = (x * Lanes(repeating: 1.44269504088896341) + Lanes(repeating: 0.5)).rounded(.down)
    x = x - n * Lanes(repeating: 0.693359375)
    x = x - n * Lanes(repeating: -2.12194440e-4)
    var p = Lanes(repeating: 1.9875691500e-4)
    p = p * x + Lanes(repeating: 1.3981999507e-3)
    p = p * x + Lanes(repeating: 8.3334519073e-3)
    p = p * x + Lanes(repeating: 4.1665795894e-2)
    p = p * x + Lanes(repeating: 1.6666665459e-1)
    p = p * x + Lanes(repeating: 5.0000001201e-1)
    let y = p * x * x + x + Lanes(repeating: 1)
    // 2ⁿ from the bits: adding 1.5·2²³ puts the integer n in the low mantissa bits (exact for |n| < 2²²), which
    // avoids Swift's generic (slow) float-to-integer vector conversion.
    let shifted = unsafeBitCast(n + Lanes(repeating: 12_582_912), to: SIMD8<Int32>.self) &- SIMD8<Int32>(repeating: 0x4B40_0000)
    let scale = unsafeBitCast((shifted &+ SIMD8<Int32>(repeating: 127)) &<< SIMD8<Int32>(repeating: 23), to: Lanes.self)
    // Inputs below the clamp give exactly 0 (exp(-inf) = 0 for masked attention scores).
    return (y * scale).replacing(with: 0, where: input .< Lanes(repeating: -87.33654))
}

@inline(__always)
public func vectorTanh(_ x: Lanes) -> Lanes {
    // tanh|x| = (1 − e^{−2|x|}) / (1 + e^{−2|x|}), sign restored after.
    let magnitude = abs(x)
    let t = vectorExp(Lanes(repeating: -2) * magnitude)
    let value = (Lanes(repeating: 1) - t) / (Lanes(repeating: 1) + t)
    return value.replacing(with: -value, where: x .< 0)
}

@inline(__always)
func abs(_ x: Lanes) -> Lanes {
    x.replacing(with: -x, where: x .< 0)
}

/// Sum of a buffer with vector accumulators.
public func vectorSum(_ x: UnsafePointer<Float>, _ count: Int) -> Float {
    var acc0 = Lanes(), acc1 = Lanes()
    var i = 0
    let raw = UnsafeRawPointer(x)
    while i + 16 <= count {
        acc0 += raw.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self)
        acc1 += raw.loadUnaligned(fromByteOffset: (i + 8) * 4, as: Lanes.self)
        i += 16
    }
    var sum = (acc0 + acc1).sum()
    while i < count {
        sum += x[i]
        i += 1
    }
    return sum
}

/// Applies `vector` to whole 8-lane groups and `scalar` to the tail, in place.
@inline(__always)
public func mapInPlace(_ x: UnsafeMutablePointer<Float>, _ count: Int,
                       vector: (Lanes) -> Lanes, scalar: (Float) -> Float) {
    var i = 0
    let raw = UnsafeMutableRawPointer(x)
    while i + 8 <= count {
        let v = raw.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self)
        raw.storeBytes(of: vector(v), toByteOffset: i * 4, as: Lanes.self)
        i += 8
    }
    while i < count {
        x[i] = scalar(x[i])
        i += 1
    }
}

/// `Σ x[i]·y[i]` with vector accumulators (the order of additions differs from a plain loop).
@inline(__always)
public func vectorDot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ count: Int) -> Float {
    var acc0 = Lanes(), acc1 = Lanes()
    var i = 0
    let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
    while i + 16 <= count {
        acc0 += rx.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self) * ry.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self)
        acc1 += rx.loadUnaligned(fromByteOffset: (i + 8) * 4, as: Lanes.self) * ry.loadUnaligned(fromByteOffset: (i + 8) * 4, as: Lanes.self)
        i += 16
    }
    var sum = (acc0 + acc1).sum()
    while i < count {
        sum += x[i] * y[i]
        i += 1
    }
    return sum
}

/// `y += a·x`.
@inline(__always)
public func vectorAddScaled(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>, _ count: Int) {
    var i = 0
    let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
    let av = Lanes(repeating: a)
    while i + 8 <= count {
        let v = ry.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self) + av * rx.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self)
        ry.storeBytes(of: v, toByteOffset: i * 4, as: Lanes.self)
        i += 8
    }
    while i < count {
        y[i] += a * x[i]
        i += 1
    }
}

/// `out = x − y`.
@inline(__always)
public func vectorSubtract(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, _ count: Int) {
    var i = 0
    let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y), ro = UnsafeMutableRawPointer(out)
    while i + 8 <= count {
        let v = rx.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self) - ry.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self)
        ro.storeBytes(of: v, toByteOffset: i * 4, as: Lanes.self)
        i += 8
    }
    while i < count {
        out[i] = x[i] - y[i]
        i += 1
    }
}

/// `y += a·x` and returns `Σ x[i]·w[i]` in the same pass over `x`.
@inline(__always)
public func vectorAddScaledAndDot(_ y: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>,
                                  dot w: UnsafePointer<Float>, _ count: Int) -> Float {
    var i = 0
    let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y), rw = UnsafeRawPointer(w)
    let av = Lanes(repeating: a)
    var acc = Lanes()
    while i + 8 <= count {
        let xv = rx.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self)
        ry.storeBytes(of: ry.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self) + av * xv, toByteOffset: i * 4, as: Lanes.self)
        acc += xv * rw.loadUnaligned(fromByteOffset: i * 4, as: Lanes.self)
        i += 8
    }
    var sum = acc.sum()
    while i < count {
        y[i] += a * x[i]
        sum += x[i] * w[i]
        i += 1
    }
    return sum
}
