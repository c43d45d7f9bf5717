import Foundation
import InterpCore

/// A hook point, named as TransformerLens names it (`blocks.3.attn.hook_z`, `hook_embed`, …).
/// Parsing an unknown name is an error, never a silent empty result.
public struct HookName: Hashable, Comparable, CustomStringConvertible, Sendable {
    /// Sizes a hook's shape is made of.
    public enum Dimension: String, Sendable {
        case batch, pos, dModel = "d_model", heads = "n_heads", dHead = "d_head", dMLP = "d_mlp", one = "1"
        case queryPos = "q_pos", keyPos = "k_pos"
    }

    /// Every hook site, in the order the forward pass reaches it, with its shape and the condition for it to exist.
    /// This table is the single source of hook names and shapes; a test checks it against every forward.
    public enum Site: String, CaseIterable, Sendable {
        case embed = "hook_embed"
        case posEmbed = "hook_pos_embed"
        case residPre = "hook_resid_pre"
        case ln1Scale = "ln1.hook_scale"
        case ln1Normalized = "ln1.hook_normalized"
        case q = "attn.hook_q"
        case k = "attn.hook_k"
        case v = "attn.hook_v"
        case attnScores = "attn.hook_attn_scores"
        case pattern = "attn.hook_pattern"
        case z = "attn.hook_z"
        case result = "attn.hook_result"
        case attnOut = "hook_attn_out"
        case residMid = "hook_resid_mid"
        case ln2Scale = "ln2.hook_scale"
        case ln2Normalized = "ln2.hook_normalized"
        case mlpPre = "mlp.hook_pre"
        case mlpPost = "mlp.hook_post"
        case mlpOut = "hook_mlp_out"
        case residPost = "hook_resid_post"
        case lnFinalScale = "ln_final.hook_scale"
        case lnFinalNormalized = "ln_final.hook_normalized"

        public var isPerLayer: Bool {
            switch self {
            case .embed, .posEmbed, .lnFinalScale, .lnFinalNormalized: return false
            default: return true
            }
        }

        public var shape: [Dimension] {
            switch self {
            case .embed, .posEmbed, .residPre, .ln1Normalized, .attnOut, .residMid, .ln2Normalized, .mlpOut,
                 .residPost, .lnFinalNormalized:
                return [.batch, .pos, .dModel]
            case .ln1Scale, .ln2Scale, .lnFinalScale: return [.batch, .pos, .one]
            case .q, .k, .v, .z: return [.batch, .pos, .heads, .dHead]
            case .attnScores, .pattern: return [.batch, .heads, .queryPos, .keyPos]
            case .result: return [.batch, .pos, .heads, .dModel]
            case .mlpPre, .mlpPost: return [.batch, .pos, .dMLP]
            }
        }

        /// Whether a model with this config has the site.
        public func exists(in config: ModelConfig) -> Bool {
            switch self {
            case .ln1Scale, .ln1Normalized, .lnFinalScale, .lnFinalNormalized:
                return config.normalization != .none
            case .ln2Scale, .ln2Normalized:
                return config.normalization != .none && !config.attnOnly
            case .residMid, .mlpPre, .mlpPost, .mlpOut:
                return !config.attnOnly
            default:
                return true
            }
        }
    }

    public let site: Site
    /// The block index for per-layer sites, nil for global ones.
    public let layer: Int?

    public init(_ site: Site, layer: Int? = nil) {
        precondition(site.isPerLayer == (layer != nil), "hook site \(site.rawValue) \(site.isPerLayer ? "needs" : "takes no") layer")
        self.site = site
        self.layer = layer
    }

    public static func block(_ layer: Int, _ site: Site) -> HookName { HookName(site, layer: layer) }

    /// Parses a TransformerLens hook name.
    public init(parsing text: String) throws {
        if let site = Site(rawValue: text), !site.isPerLayer {
            self.init(site)
            return
        }
        let parts = text.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "blocks", let layer = Int(parts[1]), layer >= 0,
              String(layer) == parts[1], let site = Site(rawValue: String(parts[2])), site.isPerLayer else {
            throw InterpError("unknown hook name '\(text)'")
        }
        self.init(site, layer: layer)
    }

    public var description: String {
        guard let layer else { return site.rawValue }
        return "blocks.\(layer).\(site.rawValue)"
    }

    /// Forward order: global embedding hooks, then blocks in order, then the final layer norm.
    public static func < (lhs: HookName, rhs: HookName) -> Bool {
        lhs.orderKey < rhs.orderKey
    }

    private var orderKey: (Int, Int, Int) {
        let siteIndex = Site.allCases.firstIndex(of: site)!
        switch site {
        case .embed, .posEmbed: return (0, 0, siteIndex)
        case .lnFinalScale, .lnFinalNormalized: return (2, 0, siteIndex)
        default: return (1, layer ?? 0, siteIndex)
        }
    }

    /// The concrete shape for a batch of `batch × positions` tokens.
    public func shape(for config: ModelConfig, batch: Int, positions: Int) -> [Int] {
        site.shape.map { dim in
            switch dim {
            case .batch: return batch
            case .pos, .queryPos, .keyPos: return positions
            case .dModel: return config.dModel
            case .heads: return config.nHeads
            case .dHead: return config.dHead
            case .dMLP: return config.dMLP
            case .one: return 1
            }
        }
    }
}

extension ModelConfig {
    /// Every hook point of this model, in forward order.
    public var hookPoints: [HookName] {
        var names: [HookName] = []
        for site in HookName.Site.allCases where !site.isPerLayer && !site.rawValue.hasPrefix("ln_final") && site.exists(in: self) {
            names.append(HookName(site))
        }
        for layer in 0..<nLayers {
            for site in HookName.Site.allCases where site.isPerLayer && site.exists(in: self) {
                names.append(HookName(site, layer: layer))
            }
        }
        for site in [HookName.Site.lnFinalScale, .lnFinalNormalized] where site.exists(in: self) {
            names.append(HookName(site))
        }
        return names
    }

    /// The hook points matching comma-free glob patterns (`*` and `?`, as in `blocks.*.hook_resid_post`) or exact
    /// names. A pattern that matches nothing is an error naming it.
    public func hookPoints(matching patterns: [String]) throws -> [HookName] {
        let all = hookPoints
        var chosen = Set<HookName>()
        for pattern in patterns {
            let matches = all.filter { fnmatch(pattern, $0.description, 0) == 0 }
            if matches.isEmpty {
                if (try? HookName(parsing: pattern)) != nil {
                    throw InterpError("hook '\(pattern)' does not exist in this model (see `interp info` for its hooks)")
                }
                throw InterpError("hook pattern '\(pattern)' matches no hook point of this model (see `interp info`)")
            }
            chosen.formUnion(matches)
        }
        return chosen.sorted()
    }
}
