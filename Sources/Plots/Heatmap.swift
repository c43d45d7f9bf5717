import Foundation

/// A matrix as a standalone SVG heatmap: a diverging scale centred on 0 (blue below, white at 0, red above, symmetric
/// about 0), row and column labels, and a colour bar.
public struct Heatmap {
    public var title: String
    public var values: [[Double]]
    public var rowLabels: [String]
    public var columnLabels: [String]
    public var rowAxis: String
    public var columnAxis: String
    public var valueLabel: String

    public init(title: String, values: [[Double]], rowLabels: [String], columnLabels: [String], rowAxis: String, columnAxis: String,
                valueLabel: String) {
        self.title = title
        self.values = values
        self.rowLabels = rowLabels
        self.columnLabels = columnLabels
        self.rowAxis = rowAxis
        self.columnAxis = columnAxis
        self.valueLabel = valueLabel
    }

    /// The colour of `v` on a scale running from −limit (blue) through 0 (white) to +limit (red).
    public static func color(_ v: Double, limit: Double) -> String {
        let t = limit > 0 ? max(-1, min(1, v / limit)) : 0
        let (r, g, b): (Double, Double, Double) = t >= 0 ? (1, 1 - 0.85 * t, 1 - 0.85 * t) : (1 + 0.85 * t, 1 + 0.85 * t, 1)
        return String(format: "#%02x%02x%02x", Int(r * 255), Int(g * 255), Int(b * 255))
    }

    public func svg() -> String {
        let rows = values.count, cols = values.first?.count ?? 0
        let cell = max(14.0, min(40.0, 720.0 / Double(max(cols, 1))))
        let labelWidth = 8.0 * Double(rowLabels.map(\.count).max() ?? 4) + 24
        let (left, top) = (labelWidth + 30, 48.0)
        let bottom = 8.0 * Double(columnLabels.map(\.count).max() ?? 4) + 40
        let width = left + cell * Double(cols) + 120, height = top + cell * Double(rows) + bottom
        let limit = values.flatMap { $0 }.filter(\.isFinite).map { abs($0) }.max() ?? 1
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="11">
        <rect width="100%" height="100%" fill="white"/>
        <text x="10" y="22" font-size="14" font-weight="bold">\(xmlEscaped(title))</text>

        """
        for r in 0..<rows {
            let y = top + Double(r) * cell
            out += "<text x=\"\(f(left - 6))\" y=\"\(f(y + cell / 2 + 4))\" text-anchor=\"end\">\(xmlEscaped(rowLabels[r]))</text>"
            for c in 0..<cols {
                let v = values[r][c]
                out += "<rect x=\"\(f(left + Double(c) * cell))\" y=\"\(f(y))\" width=\"\(f(cell))\" height=\"\(f(cell))\" fill=\"\(Self.color(v, limit: limit))\"><title>\(xmlEscaped(rowLabels[r])), \(xmlEscaped(columnLabels[c])): \(String(format: "%.4g", v))</title></rect>"
            }
            out += "\n"
        }
        for c in 0..<cols {
            let x = left + (Double(c) + 0.5) * cell, y = top + Double(rows) * cell + 8
            out += "<text transform=\"translate(\(f(x + 4)) \(f(y))) rotate(-60)\" text-anchor=\"end\">\(xmlEscaped(columnLabels[c]))</text>\n"
        }
        out += "<text x=\"\(f(left + cell * Double(cols) / 2))\" y=\"\(f(height - 8))\" text-anchor=\"middle\">\(xmlEscaped(columnAxis))</text>\n"
        out += "<text transform=\"translate(14 \(f(top + cell * Double(rows) / 2))) rotate(-90)\" text-anchor=\"middle\">\(xmlEscaped(rowAxis))</text>\n"
        // Colour bar.
        let barX = left + cell * Double(cols) + 30, barH = max(cell * Double(rows), 80)
        for k in 0..<50 {
            let v = limit * (1 - 2 * Double(k) / 49)
            out += "<rect x=\"\(f(barX))\" y=\"\(f(top + barH * Double(k) / 50))\" width=\"14\" height=\"\(f(barH / 50 + 0.5))\" fill=\"\(Self.color(v, limit: limit))\"/>"
        }
        out += "\n<text x=\"\(f(barX + 18))\" y=\"\(f(top + 8))\">\(String(format: "%.3g", limit))</text>"
        out += "<text x=\"\(f(barX + 18))\" y=\"\(f(top + barH / 2 + 4))\">0</text>"
        out += "<text x=\"\(f(barX + 18))\" y=\"\(f(top + barH))\">\(String(format: "%.3g", -limit))</text>\n"
        out += "<text x=\"\(f(barX))\" y=\"\(f(top - 8))\">\(xmlEscaped(valueLabel))</text>\n"
        return out + "</svg>\n"
    }

    private func f(_ v: Double) -> String { String(format: "%.1f", v) }
}
