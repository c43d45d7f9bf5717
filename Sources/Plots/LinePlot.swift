import Foundation

/// A line chart as a standalone SVG document: one or more series over a shared x axis (linear or log10), axis ticks,
/// labels and a legend. Plain SVG 1.1, no scripts or external references.
public struct LinePlot {
    public struct Series {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: String
        public init(name: String, points: [(x: Double, y: Double)], color: String) {
            self.name = name
            self.points = points
            self.color = color
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var logX: Bool
    public var series: [Series]
    /// Optional horizontal reference lines (value, label).
    public var references: [(y: Double, label: String)] = []
    /// Tick labels for the x axis instead of numbers (x values 0, 1, 2, …).
    public var categories: [String]? = nil

    public init(title: String, xLabel: String, yLabel: String, logX: Bool = false, series: [Series]) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.logX = logX
        self.series = series
    }

    public static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"]

    public func svg(width: Double = 640, height: Double = 400) -> String {
        let (left, right, top, bottom) = (70.0, 150.0, 40.0, 56.0)
        let plotW = width - left - right, plotH = height - top - bottom
        let points = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite && (!logX || $0.x > 0) }
        func tx(_ x: Double) -> Double { logX ? log10(x) : x }
        let xs = points.map { tx($0.x) }, ys = points.map(\.y) + references.map(\.y)
        var (x0, x1) = (xs.min() ?? 0, xs.max() ?? 1), (y0, y1) = (min(ys.min() ?? 0, 0), ys.max() ?? 1)
        if let categories { (x0, x1) = (-0.5, Double(categories.count) - 0.5) }
        if x1 <= x0 { x1 = x0 + 1 }
        if y1 <= y0 { y1 = y0 + 1 }
        y1 += (y1 - y0) * 0.05
        func px(_ x: Double) -> Double { left + (tx(x) - x0) / (x1 - x0) * plotW }
        func py(_ y: Double) -> Double { top + plotH - (y - y0) / (y1 - y0) * plotH }
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="22" font-size="14" font-weight="bold">\(xmlEscaped(title))</text>
        <rect x="\(left)" y="\(top)" width="\(plotW)" height="\(plotH)" fill="none" stroke="#888"/>

        """
        for t in Self.ticks(y0, y1) {
            out += "<line x1=\"\(left)\" x2=\"\(left + plotW)\" y1=\"\(f(py(t)))\" y2=\"\(f(py(t)))\" stroke=\"#eee\"/>"
            out += "<text x=\"\(left - 6)\" y=\"\(f(py(t) + 4))\" text-anchor=\"end\">\(Self.label(t))</text>\n"
        }
        if let categories {
            for (i, name) in categories.enumerated() {
                out += "<text x=\"\(f(px(Double(i))))\" y=\"\(f(top + plotH + 16))\" text-anchor=\"middle\">\(xmlEscaped(name))</text>\n"
            }
        } else {
            var xTicks = Self.ticks(x0, x1)
            if logX {
                let decades = (Int(floor(x0))...Int(ceil(x1))).map { pow(10, Double($0)) }
                xTicks = x1 - x0 < 2 ? decades.flatMap { [$0, 2 * $0, 5 * $0] } : decades
            }
            for t in xTicks where tx(t) >= x0 - 1e-9 && tx(t) <= x1 + 1e-9 {
                out += "<line x1=\"\(f(px(t)))\" x2=\"\(f(px(t)))\" y1=\"\(top)\" y2=\"\(top + plotH)\" stroke=\"#eee\"/>"
                out += "<text x=\"\(f(px(t)))\" y=\"\(f(top + plotH + 16))\" text-anchor=\"middle\">\(Self.label(t))</text>\n"
            }
        }
        for reference in references {
            out += "<line x1=\"\(left)\" x2=\"\(left + plotW)\" y1=\"\(f(py(reference.y)))\" y2=\"\(f(py(reference.y)))\" stroke=\"#555\" stroke-dasharray=\"4 3\"/>"
            out += "<text x=\"\(left + plotW - 4)\" y=\"\(f(py(reference.y) - 4))\" text-anchor=\"end\" fill=\"#555\">\(xmlEscaped(reference.label))</text>\n"
        }
        for (n, s) in series.enumerated() {
            let valid = s.points.filter { $0.x.isFinite && $0.y.isFinite && (!logX || $0.x > 0) }
            let path = valid.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            out += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\"/>\n"
            for p in valid { out += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"2.5\" fill=\"\(s.color)\"/>" }
            let ly = top + 14 + Double(n) * 18
            out += "\n<line x1=\"\(left + plotW + 12)\" x2=\"\(left + plotW + 32)\" y1=\"\(ly - 4)\" y2=\"\(ly - 4)\" stroke=\"\(s.color)\" stroke-width=\"2\"/>"
            out += "<text x=\"\(left + plotW + 38)\" y=\"\(ly)\">\(xmlEscaped(s.name))</text>\n"
        }
        out += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(height - 14))\" text-anchor=\"middle\">\(xmlEscaped(xLabel))</text>\n"
        out += "<text transform=\"translate(18 \(f(top + plotH / 2))) rotate(-90)\" text-anchor=\"middle\">\(xmlEscaped(yLabel))</text>\n"
        return out + "</svg>\n"
    }

    /// About five round tick values covering [lo, hi].
    static func ticks(_ lo: Double, _ hi: Double) -> [Double] {
        let raw = (hi - lo) / 5
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude
        return stride(from: ceil(lo / step) * step, through: hi + step * 1e-9, by: step).map { $0 }
    }

    static func label(_ v: Double) -> String {
        if v != 0 && (abs(v) >= 1e5 || abs(v) < 1e-3) { return String(format: "%.0e", v) }
        return v == v.rounded() ? String(Int(v)) : String(format: "%.3g", v)
    }

    private func f(_ v: Double) -> String { String(format: "%.1f", v) }
}

/// Text for SVG/XML content and attributes.
public func xmlEscaped(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}
