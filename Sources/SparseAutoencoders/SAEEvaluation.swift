import ActivationStore
import Foundation
import InterpCore

/// How well an SAE reconstructs a dataset: MSE in SAELens's convention (sum over features, mean over rows) and per
/// element, explained variance `1 − SSE / Σ‖x − mean‖²`, L0 and L1 per row, latents that never fire, and a histogram
/// of log10 firing densities. Two streaming passes (the mean first), memory of one batch.
public struct SAEEvaluation: Encodable, Sendable {
    public let rows: Int
    public let mse: Double
    public let msePerElement: Double
    public let explainedVariance: Double
    public let l0: Double
    public let l1: Double
    public let deadLatents: Int
    public let latents: Int
    /// Counts of latents by log10 firing density, in bins `[lower, lower + 0.5)` from −10 to 0; never-firing latents
    /// are counted in `deadLatents` instead.
    public let densityHistogram: [Bin]

    public struct Bin: Encodable, Sendable {
        public let lower: Double
        public let count: Int
    }

    enum CodingKeys: String, CodingKey {
        case rows, mse, msePerElement = "mse_per_element", explainedVariance = "explained_variance", l0, l1
        case deadLatents = "dead_latents", latents, densityHistogram = "density_histogram"
    }

    public static func evaluate(_ sae: SparseAutoencoder, reader: ActivationReader, batchSize: Int = 4096,
                                rows range: Range<Int>? = nil) throws -> SAEEvaluation {
        guard sae.config.dIn == reader.width else {
            throw InterpError("the SAE's d_in (\(sae.config.dIn)) does not match dataset '\(reader.dataset.name)' (rows of \(reader.width))", file: reader.path)
        }
        let range = range ?? 0..<reader.rows
        guard !range.isEmpty else { throw InterpError("the dataset has no rows to evaluate on", file: reader.path) }
        let (mean, _, _) = try reader.statistics(rows: range)
        let D = reader.width, S = sae.config.dSAE
        var sse = 0.0, total = 0.0, l0 = 0.0, l1 = 0.0
        var firings = [Double](repeating: 0, count: S)
        var start = range.lowerBound
        while start < range.upperBound {
            let end = min(start + batchSize, range.upperBound)
            let x = try reader.read(rows: start..<end)
            guard x.scalars.allSatisfy(\.isFinite) else {
                throw InterpError("rows \(start)..<\(end) of dataset '\(reader.dataset.name)' contain NaN or infinite values", file: reader.path)
            }
            let (z, xhat) = try sae.encodeAndReconstruct(x)
            for r in 0..<(end - start) {
                for j in 0..<D {
                    let v = Double(x.scalars[r * D + j])
                    let e = v - Double(xhat.scalars[r * D + j]), c = v - Double(mean[j])
                    sse += e * e
                    total += c * c
                }
                for i in 0..<S {
                    let a = z.scalars[r * S + i]
                    if a != 0 {
                        l0 += 1
                        l1 += Double(Swift.abs(a))
                        firings[i] += 1
                    }
                }
            }
            start = end
        }
        let n = Double(range.count)
        var bins = stride(from: -10.0, to: 0.0, by: 0.5).map { Bin(lower: $0, count: 0) }
        var counts = [Int](repeating: 0, count: bins.count)
        for f in firings where f > 0 {
            let index = min(max(Int(((Foundation.log10(f / n) + 10) / 0.5).rounded(.down)), 0), counts.count - 1)
            counts[index] += 1
        }
        bins = zip(bins, counts).map { Bin(lower: $0.lower, count: $1) }
        return SAEEvaluation(rows: range.count, mse: sse / n, msePerElement: sse / (n * Double(D)),
                             explainedVariance: total > 0 ? 1 - sse / total : 0, l0: l0 / n, l1: l1 / n,
                             deadLatents: firings.filter { $0 == 0 }.count, latents: S, densityHistogram: bins)
    }

    public var text: String {
        var lines = [
            String(format: "rows                %d", rows),
            String(format: "MSE                 %.6g (sum over features, mean over rows); %.6g per element", mse, msePerElement),
            String(format: "explained variance  %.4f", explainedVariance),
            String(format: "L0                  %.2f", l0),
            String(format: "L1                  %.4g", l1),
            "dead latents        \(deadLatents) of \(latents) never fire",
            "log10 density       latents",
        ]
        let peak = max(densityHistogram.map(\.count).max() ?? 1, 1)
        for bin in densityHistogram where bin.count > 0 {
            lines.append(String(format: "  [%5.1f, %5.1f)     %5d ", bin.lower, bin.lower + 0.5, bin.count) + String(repeating: "█", count: max(1, bin.count * 40 / peak)))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
