import InterpCore
import InterpModels

/// ACDC's computational graph of a transformer (Conmy et al.; `TLACDCCorrespondence.setup_from_model`).
///
/// Senders write into the residual stream: the input (`input`, or `embed` and `pos_embed` apart), every head's output
/// `a{l}.{h}` (its `hook_result`, without the layer's `b_O`) and every MLP `m{l}`. Receivers read a sum of senders:
/// every head's query, key and value inputs `a{l}.{h}.q|k|v`, every MLP's input `m{l}` and the final residual
/// `output`. An addition edge joins each sender to each later receiver (a layer's heads feed its own MLP); each head
/// also has three direct edges `a{l}.{h}.q|k|v → a{l}.{h}` (without one, the head uses the ablated query, key or
/// value). Biases (`b_O` of earlier layers) belong to no sender and are always in a receiver's input.
public struct CircuitGraph: Sendable {
    public enum QKV: Int, CaseIterable, Sendable {
        case q, k, v
        public var letter: String { ["q", "k", "v"][rawValue] }
    }

    public enum Sender: Hashable, Sendable, CustomStringConvertible {
        case input, embed, posEmbed
        case head(layer: Int, head: Int)
        case mlp(layer: Int)

        public var description: String {
            switch self {
            case .input: return "input"
            case .embed: return "embed"
            case .posEmbed: return "pos_embed"
            case let .head(l, h): return "a\(l).\(h)"
            case let .mlp(l): return "m\(l)"
            }
        }
    }

    public enum Receiver: Hashable, Sendable, CustomStringConvertible {
        case head(layer: Int, head: Int, QKV)
        case mlp(layer: Int)
        case output

        public var description: String {
            switch self {
            case let .head(l, h, x): return "a\(l).\(h).\(x.letter)"
            case let .mlp(l): return "m\(l)"
            case .output: return "output"
            }
        }
    }

    public struct Edge: Hashable, Sendable {
        public enum Kind: String, Sendable { case addition, direct }
        public let kind: Kind
        /// Addition edges: the sender. Direct edges: the head's (layer, head).
        public let sender: Sender
        /// Addition edges: the receiver. Direct edges: the head input `a{l}.{h}.x` the edge leaves from.
        public let receiver: Receiver

        public var source: String { kind == .addition ? sender.description : receiver.description }
        public var destination: String { kind == .addition ? receiver.description : sender.description }
    }

    public let config: ModelConfig
    public let splitEmbeddings: Bool
    /// Senders in forward order: the input(s), then per layer its heads and its MLP.
    public let senders: [Sender]
    /// Every edge, in the order ACDC tries them when none is skipped: receivers in reverse topological order (the
    /// output; then per layer from the last: the MLP input, the direct edges of v, k, q for heads H−1…0, the value,
    /// key and query inputs of heads H−1…0), and into each receiver its senders from the latest (the MLP of a layer,
    /// then its heads H−1…0, then the layer below, …, the input last).
    public let edges: [Edge]
    /// Index in `senders` of each sender.
    public let senderIndex: [Sender: Int]

    public init(config: ModelConfig, splitEmbeddings: Bool = false) {
        self.config = config
        self.splitEmbeddings = splitEmbeddings
        let L = config.nLayers, H = config.nHeads, mlps = !config.attnOnly
        var senders: [Sender] = splitEmbeddings ? [.embed, .posEmbed] : [.input]
        for l in 0..<L {
            for h in 0..<H { senders.append(.head(layer: l, head: h)) }
            if mlps { senders.append(.mlp(layer: l)) }
        }
        let index = Dictionary(uniqueKeysWithValues: senders.enumerated().map { ($1, $0) })

        /// Senders feeding a receiver, latest first (ACDC's insertion order).
        func feeding(_ receiver: Receiver) -> [Sender] {
            let upTo: Int   // senders with index < upTo feed it
            switch receiver {
            case .output: upTo = senders.count
            case let .head(l, _, _): upTo = senders.firstIndex(of: .head(layer: l, head: 0))!
            case let .mlp(l): upTo = senders.firstIndex(of: .mlp(layer: l))!
            }
            // Latest first, but within a layer's heads H−1…0 and the embeddings in their own order.
            var out: [Sender] = []
            for l in stride(from: L - 1, through: 0, by: -1) {
                if mlps, let i = index[.mlp(layer: l)], i < upTo { out.append(.mlp(layer: l)) }
                for h in stride(from: H - 1, through: 0, by: -1) where index[.head(layer: l, head: h)]! < upTo {
                    out.append(.head(layer: l, head: h))
                }
            }
            out += splitEmbeddings ? [.embed, .posEmbed] : [.input]
            return out
        }

        var edges: [Edge] = feeding(.output).map { Edge(kind: .addition, sender: $0, receiver: .output) }
        for l in stride(from: L - 1, through: 0, by: -1) {
            if mlps { edges += feeding(.mlp(layer: l)).map { Edge(kind: .addition, sender: $0, receiver: .mlp(layer: l)) } }
            for x in [QKV.v, .k, .q] {
                for h in stride(from: H - 1, through: 0, by: -1) {
                    edges.append(Edge(kind: .direct, sender: .head(layer: l, head: h), receiver: .head(layer: l, head: h, x)))
                }
            }
            for x in [QKV.v, .k, .q] {
                for h in stride(from: H - 1, through: 0, by: -1) {
                    let receiver = Receiver.head(layer: l, head: h, x)
                    edges += feeding(receiver).map { Edge(kind: .addition, sender: $0, receiver: receiver) }
                }
            }
        }
        self.senders = senders
        senderIndex = index
        self.edges = edges
    }

    /// The layer a receiver reads in (`nLayers` for the output).
    public func layer(of receiver: Receiver) -> Int {
        switch receiver {
        case let .head(l, _, _), let .mlp(l): return l
        case .output: return config.nLayers
        }
    }

    public var additionEdgeCount: Int { edges.filter { $0.kind == .addition }.count }
    public var directEdgeCount: Int { edges.filter { $0.kind == .direct }.count }
}
