import Foundation
import InterpCore

extension CircuitResult {
    /// CIRCUIT.json's object: every edge with its type, effect and whether it was kept; the counts; the metric of the
    /// full model, the circuit and the empty graph; τ and the settings.
    public func jsonObject(extra: [String: Any] = [:]) -> [String: Any] {
        let edgeObjects: [[String: Any]] = graph.edges.indices.map { i in
            let edge = graph.edges[i]
            return ["src": edge.source, "dst": edge.destination, "type": edge.kind.rawValue,
                    "effect": effects[i].map { $0 as Any } ?? NSNull(), "kept": kept[i]]
        }
        let keptAddition = zip(graph.edges, kept).filter { $0.1 && $0.0.kind == .addition }.count
        var object: [String: Any] = [
            "edges": edgeObjects,
            "counts": ["edges": graph.edges.count, "kept": keptCount, "kept_addition": keptAddition,
                       "kept_direct": keptCount - keptAddition, "tried": effects.compactMap { $0 }.count],
            "metric": metricName, "minimised": true, "threshold": threshold,
            "full_metric": fullMetric, "circuit_metric": circuitMetric, "empty_metric": emptyMetric,
            "settings": ["ablation": ablation.rawValue, "split_embeddings": graph.splitEmbeddings],
            "forward_passes": forwardPasses, "graph_states_run": statesRun,
        ]
        for (key, value) in extra { object[key] = value }
        return object
    }

    /// The kept graph in Graphviz DOT: heads and MLPs as labelled nodes by layer, the input at the bottom and the
    /// output at the top, addition edges solid and direct edges dashed, wider for larger effects.
    public func dot(title: String) -> String {
        let keptEdges = graph.edges.indices.filter { kept[$0] }
        let largest = keptEdges.compactMap { effects[$0].map(Swift.abs) }.max() ?? 1
        // A direct edge a{l}.{h}.x → a{l}.{h} draws the head input as its own small node.
        var nodes = Set<String>()
        var lines = ["digraph circuit {", "  rankdir=BT;", "  label=\"\(escaped(title))\"; labelloc=t; fontname=\"Helvetica\";",
                     "  node [fontname=\"Helvetica\", fontsize=11]; edge [color=\"#555555\"];"]
        var body: [String] = []
        for i in keptEdges {
            let edge = graph.edges[i]
            nodes.insert(edge.source)
            nodes.insert(edge.destination)
            let width = 0.6 + 4 * (effects[i].map { Swift.abs($0) / max(largest, 1e-12) } ?? 0)
            let label = effects[i].map { String(format: "%.3g", $0) } ?? ""
            let style = edge.kind == .direct ? "dashed" : "solid"
            body.append("  \"\(edge.source)\" -> \"\(edge.destination)\" [penwidth=\(String(format: "%.2f", width)), style=\(style), tooltip=\"\(label)\"];")
        }
        for node in nodes.sorted() {
            let shape: String, fill: String
            if ["input", "embed", "pos_embed", "output"].contains(node) {
                (shape, fill) = ("ellipse", "#eeeeee")
            } else if node.hasPrefix("m") {
                (shape, fill) = ("box", "#d9ead3")
            } else if node.split(separator: ".").count == 3 {
                (shape, fill) = ("box", "#fff2cc")    // a head's q, k or v input
            } else {
                (shape, fill) = ("box", "#cfe2f3")
            }
            lines.append("  \"\(node)\" [shape=\(shape), style=\"filled,rounded\", fillcolor=\"\(fill)\"];")
        }
        return (lines + body + ["}"]).joined(separator: "\n") + "\n"
    }

    private func escaped(_ s: String) -> String { s.replacingOccurrences(of: "\"", with: "\\\"") }
}

/// Graphviz's `dot`, run on DOT text: SVG out.
public enum Graphviz {
    public static func svg(fromDOT dot: String) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["dot", "-Tsvg"]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch {
            throw InterpError("cannot run Graphviz's dot (install the Debian package graphviz)")
        }
        input.fileHandleForWriting.write(Data(dot.utf8))
        try input.fileHandleForWriting.close()
        let svg = output.fileHandleForReading.readDataToEndOfFile()
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let first = message.split(separator: "\n").first.map(String.init) ?? "exit \(process.terminationStatus)"
            throw InterpError(process.terminationStatus == 127 ? "cannot run Graphviz's dot (install the Debian package graphviz)" : "dot failed: \(first)")
        }
        return svg
    }
}
