import Foundation
import InterpModels
import Plots

/// A patching table with its labels: RESULT.json of `interp patch`, and its heatmap.
public struct PatchingResult {
    public let site: String, axes: [String], shape: [Int], values: [Double]
    public let cleanMetric: Double, corruptedMetric: Double, metric: String, normalized: Bool, direction: String
    public let labels: [String: [String]]

    public init(site: String, axes: [String], shape: [Int], values: [Double], cleanMetric: Double, corruptedMetric: Double,
                metric: String, normalized: Bool, direction: String, labels: [String: [String]]) {
        (self.site, self.axes, self.shape, self.values) = (site, axes, shape, values)
        (self.cleanMetric, self.corruptedMetric, self.metric, self.normalized, self.direction) = (cleanMetric, corruptedMetric, metric, normalized, direction)
        self.labels = labels
    }

    /// Labels for each axis: L0, L1, … for layers, H0, … for heads, `positions` for position-like axes.
    public static func labels(axes: [String], config: ModelConfig, positions: [String]) -> [String: [String]] {
        var labels: [String: [String]] = [:]
        for axis in axes {
            switch axis {
            case "layer": labels[axis] = (0..<config.nLayers).map { "L\($0)" }
            case "head": labels[axis] = (0..<config.nHeads).map { "H\($0)" }
            default: labels[axis] = positions
            }
        }
        return labels
    }

    public func json() throws -> Data {
        func nested(_ offset: Int, _ dims: ArraySlice<Int>) -> Any {
            guard let first = dims.first else { return values[offset] }
            let stride = dims.dropFirst().reduce(1, *)
            return (0..<first).map { nested(offset + $0 * stride, dims.dropFirst()) }
        }
        let object: [String: Any] = ["site": site, "axes": axes, "shape": shape, "values": nested(0, shape[...]),
                                     "clean_metric": cleanMetric, "corrupted_metric": corruptedMetric, "metric": metric,
                                     "normalized": normalized, "direction": direction, "labels": labels]
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }

    /// Rows: every axis but the column one, combined (layers first); columns: the last position-like axis, else heads.
    public func heatmap(title: String) -> Heatmap {
        let columnAxis = axes.lastIndex { ["pos", "dest", "src"].contains($0) } ?? axes.count - 1
        let rowAxes = axes.indices.filter { $0 != columnAxis }
        let rowShape = rowAxes.map { shape[$0] }, rowCount = rowShape.reduce(1, *)
        var strides = [Int](repeating: 1, count: shape.count)
        for d in stride(from: shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * shape[d + 1] }
        var matrix: [[Double]] = [], rowLabels: [String] = []
        for r in 0..<rowCount {
            var rest = r, offset = 0, parts: [String] = []
            for (k, axis) in rowAxes.enumerated().reversed() {
                let i = rest % rowShape[k]
                rest /= rowShape[k]
                offset += i * strides[axis]
                let name = axes[axis]
                parts.insert(["pos", "dest", "src"].contains(name) ? "\(name) \(i)" : (labels[name]?[i] ?? "\(i)"), at: 0)
            }
            rowLabels.append(parts.joined(separator: " "))
            matrix.append((0..<shape[columnAxis]).map { values[offset + $0 * strides[columnAxis]] })
        }
        return Heatmap(title: title, values: matrix, rowLabels: rowLabels, columnLabels: labels[axes[columnAxis]] ?? [],
                       rowAxis: rowAxes.map { axes[$0] }.joined(separator: " · "), columnAxis: axes[columnAxis],
                       valueLabel: normalized ? "restored" : metric)
    }
}
