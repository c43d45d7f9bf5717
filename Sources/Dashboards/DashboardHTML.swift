import Foundation
import InterpCore
import Plots

/// Static HTML for a `FeatureDashboard`: `index.html` (every latent with its density, strongest token and top
/// promoted tokens) and `feature-N.html` for each latent that fires (density, activation histogram, logit effects,
/// strongest contexts with each token shaded by the latent's activation). Plain HTML and inline SVG, no scripts.
public struct DashboardHTML {
    public let dashboard: FeatureDashboard
    /// The text of one token as it should be shown.
    public let tokenText: (Int32) -> String
    /// A line under the title (which SAE, which model).
    public let subtitle: String

    public init(dashboard: FeatureDashboard, subtitle: String, tokenText: @escaping (Int32) -> String) {
        self.dashboard = dashboard
        self.subtitle = subtitle
        self.tokenText = tokenText
    }

    /// The pages, by file name.
    public func pages(latents: [Int]? = nil) -> [(name: String, html: String)] {
        let shown = (latents ?? dashboard.features.indices.map { $0 }).filter { !dashboard.features[$0].isDead }
        var out = [(name: "index.html", html: index(linked: Set(shown)))]
        for (k, latent) in shown.enumerated() {
            out.append((name: Self.pageName(latent),
                        html: page(latent, previous: k > 0 ? shown[k - 1] : nil, next: k + 1 < shown.count ? shown[k + 1] : nil)))
        }
        return out
    }

    /// Writes the pages into `directory` (created if needed), each file atomically.
    public func write(to directory: String, latents: [Int]? = nil) throws -> Int {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let all = pages(latents: latents)
        for page in all { try AtomicFile.write(Data(page.html.utf8), to: directory + "/" + page.name) }
        return all.count
    }

    public static func pageName(_ latent: Int) -> String { "feature-\(latent).html" }

    // MARK: pages

    func index(linked: Set<Int>) -> String {
        let features = dashboard.features
        let alive = features.filter { !$0.isDead }.sorted { $0.firings != $1.firings ? $0.firings > $1.firings : $0.latent < $1.latent }
        let dead = features.filter(\.isDead).map(\.latent)
        var body = """
        <h1>Feature dashboards</h1>
        <p class="sub">\(escaped(subtitle))</p>
        <p>\(features.count) latents at <code>\(escaped(dashboard.hook.description))</code>, over \(dashboard.tokens) tokens in \
        \(dashboard.sequences.count) sequences: \(alive.count) fire at least once, \(dead.count) never do. Sorted by how often \
        they fire. A latent's page shows its activation histogram, the tokens its decoder direction promotes and \
        suppresses, and the contexts where it fires most strongly.</p>
        \(densityHistogram(alive.map(\.density)))
        <table class="index">
        <tr><th>latent</th><th>density</th><th>max</th><th>mean when firing</th><th>strongest context</th><th>promotes</th></tr>

        """
        for f in alive {
            let name = linked.contains(f.latent) ? "<a href=\"\(Self.pageName(f.latent))\">\(f.latent)</a>" : "\(f.latent)"
            let context = f.examples.first.map { snippet($0, maxActivation: f.maxActivation, before: 6, after: 1) } ?? ""
            let promotes = f.promoted.prefix(5).map { "<span class=\"chip\">\(shown($0.token))</span>" }.joined(separator: " ")
            body += "<tr><td>\(name)</td><td>\(percent(f.density))</td><td>\(number(f.maxActivation))</td>"
                + "<td>\(number(Float(f.meanActivation)))</td><td class=\"ctx\">\(context)</td><td>\(promotes)</td></tr>\n"
        }
        body += "</table>\n"
        if !dead.isEmpty {
            body += "<p><b>Never fire on this text</b> (\(dead.count)): \(dead.map(String.init).joined(separator: ", "))</p>\n"
        }
        return document(title: "Feature dashboards", body: body)
    }

    func page(_ latent: Int, previous: Int?, next: Int?) -> String {
        let f = dashboard.features[latent]
        let nav = [previous.map { "<a href=\"\(Self.pageName($0))\">← latent \($0)</a>" }, "<a href=\"index.html\">all latents</a>",
                   next.map { "<a href=\"\(Self.pageName($0))\">latent \($0) →</a>" }].compactMap { $0 }.joined(separator: " · ")
        var body = """
        <nav>\(nav)</nav>
        <h1>Latent \(latent)</h1>
        <p class="sub">\(escaped(subtitle)) · <code>\(escaped(dashboard.hook.description))</code></p>
        <div class="stats">
        <div><b>\(percent(f.density))</b><span>density (\(f.firings) of \(dashboard.tokens) tokens)</span></div>
        <div><b>\(number(f.maxActivation))</b><span>max activation</span></div>
        <div><b>\(number(Float(f.meanActivation)))</b><span>mean when firing</span></div>
        </div>
        <div class="row">
        <section><h2>Activations when firing</h2>\(activationHistogram(f))</section>

        """
        if !f.promoted.isEmpty {
            body += "<section><h2>Logit effects (W_dec · W_U)</h2><div class=\"effects\">"
                + effectTable("promoted", f.promoted, positive: true) + effectTable("suppressed", f.suppressed, positive: false)
                + "</div></section>\n"
        }
        body += "</div>\n<h2>Strongest contexts</h2>\n<p class=\"note\">Each token is shaded by this latent's activation on it "
            + "(hover for the value); the boxed token is the one the context was chosen for.</p>\n<table class=\"contexts\">\n"
        for example in f.examples {
            body += "<tr><td class=\"act\">\(number(example.activation))</td><td class=\"ctx\">"
                + snippet(example, maxActivation: f.maxActivation, before: .max, after: .max)
                + "</td><td class=\"where\">seq \(example.sequence), pos \(example.position)</td></tr>\n"
        }
        body += "</table>\n"
        return document(title: "Latent \(latent)", body: body)
    }

    // MARK: parts

    /// A context's tokens, each shaded by the latent's activation, the chosen token boxed.
    func snippet(_ example: FeatureExample, maxActivation: Float, before: Int, after: Int) -> String {
        let chosen = example.position - example.contextStart
        let lower = before == .max ? 0 : max(0, chosen - before)
        let upper = after == .max ? example.tokens.count : min(example.tokens.count, chosen + after + 1)
        var out = ""
        for k in lower..<upper {
            let a = k < example.activations.count ? example.activations[k] : 0
            let alpha = maxActivation > 0 ? max(0, min(1, a / maxActivation)) : 0
            let style = a > 0 ? " style=\"background:rgba(255,110,0,\(String(format: "%.2f", 0.1 + 0.8 * alpha)))\"" : ""
            let box = k == chosen ? " chosen" : ""
            out += "<span class=\"tok\(box)\"\(style) title=\"\(number(a))\">\(shown(example.tokens[k]))</span>"
        }
        return out
    }

    func effectTable(_ title: String, _ effects: [TokenEffect], positive: Bool) -> String {
        let scale = effects.map { abs($0.effect) }.max() ?? 1
        var out = "<table class=\"effect\"><tr><th colspan=\"2\">\(title)</th></tr>"
        for e in effects {
            let width = scale > 0 ? Int((abs(e.effect) / scale * 80).rounded()) : 0
            out += "<tr><td><span class=\"chip\">\(shown(e.token))</span></td><td><span class=\"bar \(positive ? "up" : "down")\" "
                + "style=\"width:\(width)px\"></span> \(String(format: "%+.3f", e.effect))</td></tr>"
        }
        return out + "</table>"
    }

    /// Bars of a latent's histogram, 0 to its maximum.
    func activationHistogram(_ f: FeatureSummary) -> String {
        let bins = Double(f.histogram.count), maximum = Double(f.maxActivation)
        return bars(f.histogram, color: "#ff6e00", width: 360, height: 150, caption: "activation",
                    ticks: [(0, "0", "start"), (1, number(f.maxActivation), "end")]) { b, count in
            String(format: "%.3g–%.3g: %d", maximum * Double(b) / bins, maximum * Double(b + 1) / bins, count)
        }
    }

    /// How many latents fire at each log10 density.
    func densityHistogram(_ densities: [Double]) -> String {
        guard !densities.isEmpty else { return "" }
        let lowest = floor(log10(densities.min()!)), decades = Int(max(1, -lowest)), bins = decades * 4
        var counts = [Int](repeating: 0, count: bins)
        for d in densities { counts[min(bins - 1, max(0, Int((log10(d) - lowest) * 4)))] += 1 }
        let ticks = (0...Int(-lowest)).map { (Double($0) / Double(decades), "1e\(Int(lowest) + $0)", "middle") }
        return "<figure>" + bars(counts, color: "#1f77b4", width: 480, height: 140, caption: "density (fraction of tokens a latent fires on)",
                                 ticks: ticks) { b, count in
            String(format: "density 1e%.2f to 1e%.2f: %d latents", lowest + Double(b) / 4, lowest + Double(b + 1) / 4, count)
        } + "</figure>"
    }

    /// An SVG bar chart of `counts`: a hover title per bar, tick labels at fractions of the axis, a caption under it
    /// and the tallest count at the top left.
    func bars(_ counts: [Int], color: String, width: Double, height: Double, caption: String,
              ticks: [(at: Double, label: String, anchor: String)], title: (Int, Int) -> String) -> String {
        let (left, bottom) = (40.0, 28.0)
        let plotW = width - left - 10, plotH = height - bottom - 10, slot = plotW / Double(max(counts.count, 1))
        let top = Double(counts.max() ?? 0)
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"10\">"
        for (b, count) in counts.enumerated() {
            let h = top > 0 ? Double(count) / top * plotH : 0
            svg += "<rect x=\"\(fmt(left + Double(b) * slot))\" y=\"\(fmt(10 + plotH - h))\" width=\"\(fmt(slot - 1))\" height=\"\(fmt(h))\" fill=\"\(color)\">"
                + "<title>\(escaped(title(b, count)))</title></rect>"
        }
        svg += "<line x1=\"\(fmt(left))\" y1=\"\(fmt(10 + plotH))\" x2=\"\(fmt(left + plotW))\" y2=\"\(fmt(10 + plotH))\" stroke=\"#333\"/>"
        for tick in ticks {
            svg += "<text x=\"\(fmt(left + tick.at * plotW))\" y=\"\(fmt(height - 13))\" text-anchor=\"\(tick.anchor)\">\(escaped(tick.label))</text>"
        }
        svg += "<text x=\"\(fmt(left + plotW / 2))\" y=\"\(fmt(height - 2))\" text-anchor=\"middle\">\(escaped(caption))</text>"
        svg += "<text x=\"\(fmt(left - 4))\" y=\"16\" text-anchor=\"end\">\(Int(top))</text>"
        return svg + "</svg>"
    }

    func document(title: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(escaped(title))</title>
        <style>
        body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1100px; }
        h1 { margin-bottom: 4px; } .sub { color: #666; margin-top: 0; } .note { color: #666; font-size: 90%; }
        table { border-collapse: collapse; } td, th { padding: 3px 8px; text-align: left; vertical-align: top; }
        table.index tr:nth-child(even), table.contexts tr:nth-child(even) { background: #f6f6f6; }
        .tok { white-space: pre; font-family: monospace; border-bottom: 1px solid #ddd; }
        .tok.chosen { outline: 2px solid #c00; } .ctx { font-family: monospace; }
        .chip { font-family: monospace; background: #eef; padding: 0 3px; white-space: pre; }
        .bar { display: inline-block; height: 10px; } .bar.up { background: #2a7; } .bar.down { background: #d44; }
        .stats { display: flex; gap: 32px; margin: 12px 0; } .stats div { display: flex; flex-direction: column; }
        .stats b { font-size: 140%; } .stats span { color: #666; font-size: 85%; }
        .row { display: flex; gap: 40px; flex-wrap: wrap; } .effects { display: flex; gap: 24px; }
        .act, .where { font-size: 85%; color: #555; white-space: nowrap; }
        </style></head>
        <body>
        \(body)
        </body></html>

        """
    }

    /// A token for display: HTML-escaped, newlines and tabs visible.
    func shown(_ token: Int32) -> String {
        escaped(tokenText(token).replacingOccurrences(of: "\n", with: "↵").replacingOccurrences(of: "\t", with: "⇥"))
    }

    func escaped(_ text: String) -> String { xmlEscaped(text) }
    func percent(_ d: Double) -> String { d >= 0.001 ? String(format: "%.2f%%", d * 100) : String(format: "%.4f%%", d * 100) }
    func number(_ v: Float) -> String { String(format: "%.3g", v) }
    func fmt(_ v: Double) -> String { String(format: "%.1f", v) }
}
