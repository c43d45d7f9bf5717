import Foundation
import InterpCore
import SafeTensors

/// SAELens v6 inference directories: `cfg.json` and `sae_weights.safetensors` (SAELens `save_inference_model`,
/// `SAE.load_from_disk`).
public struct SAELensConfig: Codable, Equatable, Sendable {
    public struct Metadata: Codable, Equatable, Sendable {
        public var hookName: String?
        public var modelName: String?
        public var contextSize: Int?
        public var prependBOS: Bool?
        public var saeLensVersion: String?
        /// interp's own, for SAEs it trained: its version, the architecture trained (BatchTopK is saved as JumpReLU),
        /// the whole training settings, and with `--init subspace` the rank of the subspace the decoder started in.
        public var interpVersion: String?
        public var trainingArchitecture: String?
        public var interpTraining: SAETrainingSettings?
        public var interpSubspaceRank: Int?

        public init(hookName: String? = nil, modelName: String? = nil, contextSize: Int? = nil, prependBOS: Bool? = nil,
                    saeLensVersion: String? = nil) {
            self.hookName = hookName
            self.modelName = modelName
            self.contextSize = contextSize
            self.prependBOS = prependBOS
            self.saeLensVersion = saeLensVersion
        }

        enum CodingKeys: String, CodingKey {
            case hookName = "hook_name", modelName = "model_name", contextSize = "context_size", prependBOS = "prepend_bos"
            case saeLensVersion = "sae_lens_version", interpVersion = "interp_version", trainingArchitecture = "training_architecture"
            case interpTraining = "interp_training", interpSubspaceRank = "interp_subspace_rank"
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            hookName = try c.decodeIfPresent(String.self, forKey: .hookName)
            modelName = try c.decodeIfPresent(String.self, forKey: .modelName)
            contextSize = try c.decodeIfPresent(Int.self, forKey: .contextSize)
            prependBOS = try c.decodeIfPresent(Bool.self, forKey: .prependBOS)
            saeLensVersion = try c.decodeIfPresent(String.self, forKey: .saeLensVersion)
            interpVersion = try c.decodeIfPresent(String.self, forKey: .interpVersion)
            trainingArchitecture = try c.decodeIfPresent(String.self, forKey: .trainingArchitecture)
            // Settings of another interp version may have other fields: they describe the run, they do not change
            // what the SAE computes, so a mismatch leaves them out rather than refusing the SAE.
            interpTraining = try? c.decodeIfPresent(SAETrainingSettings.self, forKey: .interpTraining)
            interpSubspaceRank = try c.decodeIfPresent(Int.self, forKey: .interpSubspaceRank)
        }
    }

    public var architecture: String
    public var dIn: Int
    public var dSAE: Int
    public var dtype: String?
    public var device: String?
    public var applyBDecToInput: Bool
    public var normalizeActivations: String?
    public var reshapeActivations: String?
    /// TopK only.
    public var k: Int?
    public var rescaleActsByDecoderNorm: Bool?
    public var metadata: Metadata?

    enum CodingKeys: String, CodingKey {
        case architecture, dIn = "d_in", dSAE = "d_sae", dtype, device, applyBDecToInput = "apply_b_dec_to_input"
        case normalizeActivations = "normalize_activations", reshapeActivations = "reshape_activations", metadata
        case k, rescaleActsByDecoderNorm = "rescale_acts_by_decoder_norm"
    }

    public init(architecture: String, dIn: Int, dSAE: Int, dtype: String? = "float32", device: String? = "cpu",
                applyBDecToInput: Bool = true, normalizeActivations: String? = "none", reshapeActivations: String? = "none",
                metadata: Metadata? = nil) {
        self.architecture = architecture
        self.dIn = dIn
        self.dSAE = dSAE
        self.dtype = dtype
        self.device = device
        self.applyBDecToInput = applyBDecToInput
        self.normalizeActivations = normalizeActivations
        self.reshapeActivations = reshapeActivations
        self.metadata = metadata
    }

    /// cfg.json as interp writes it: compact, keys sorted, slashes unescaped, a final newline.
    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self) + Data("\n".utf8)
    }
}

/// A loaded SAE for inference: encode activations into latents and decode them back, through its architecture's
/// inference face (`SAERegistry.inference`).
public struct SparseAutoencoder: Sendable {
    public let config: SAELensConfig
    public let parameters: SAEParameters
    public let architecture: any SAEInferenceArchitecture

    /// Loads a SAELens directory. Strict: the tensors with the shapes `cfg.json` implies, nothing unknown.
    public static func load(directory: String) throws -> SparseAutoencoder {
        let configPath = directory + "/cfg.json"
        let config = try decodeJSON(SAELensConfig.self, from: readFile(configPath), file: configPath)
        guard let kind = SAERegistry.inference(named: config.architecture) else {
            let names = SAERegistry.inference.map { $0.name }
            throw InterpError("architecture '\(config.architecture)' is not supported yet (interp reads \(names.dropLast().joined(separator: ", ")) and \(names.last!))",
                              file: configPath)
        }
        guard config.dIn > 0, config.dSAE > 0 else { throw InterpError("d_in and d_sae must be positive", file: configPath) }
        let architecture = try kind.init(config: config, file: configPath)
        if let norm = config.normalizeActivations, norm != "none" {
            throw InterpError("normalize_activations '\(norm)' is not supported yet", file: configPath)
        }
        // "hook_z": the SAE reads attention heads concatenated, [n, heads, d_head] as [n, heads·d_head], which is how
        // interp reads such datasets and splices at such hooks anyway.
        if let reshape = config.reshapeActivations, !["none", "hook_z"].contains(reshape) {
            throw InterpError("reshape_activations '\(reshape)' is not supported yet", file: configPath)
        }
        let weightsPath = directory + "/sae_weights.safetensors"
        let file = try SafeTensorsFile(path: weightsPath)
        var expected = ["W_enc": [config.dIn, config.dSAE], "b_enc": [config.dSAE], "W_dec": [config.dSAE, config.dIn], "b_dec": [config.dIn]]
        if kind.hasThreshold { expected["threshold"] = [config.dSAE] }
        var tensors: [String: Tensor] = [:]
        for (name, shape) in expected {
            guard file.entries[name] != nil else { throw InterpError("missing tensor '\(name)' (expected shape \(shape))", file: weightsPath) }
            let tensor = try file.tensor(name)
            guard tensor.shape == shape else {
                throw InterpError("tensor '\(name)' has shape \(tensor.shape) but cfg.json implies \(shape)", file: weightsPath)
            }
            tensors[name] = tensor
        }
        if let extra = file.names.first(where: { expected[$0] == nil }) {
            throw InterpError("unexpected tensor '\(extra)' for a \(config.architecture) SAE", file: weightsPath)
        }
        let parameters = SAEParameters(wEnc: tensors["W_enc"]!, bEnc: tensors["b_enc"]!, wDec: tensors["W_dec"]!, bDec: tensors["b_dec"]!,
                                       threshold: tensors["threshold"])
        return SparseAutoencoder(config: config, parameters: parameters, architecture: architecture)
    }

    /// Latent activations `[batch, d_sae]` of `x [batch, d_in]`.
    public func encode(_ x: Tensor) throws -> Tensor {
        try check(x, width: config.dIn, what: "activations", size: "d_in")
        return architecture.encode(parameters, x)
    }

    /// Reconstruction `[batch, d_in]` of latents `z [batch, d_sae]`.
    public func decode(_ z: Tensor) throws -> Tensor {
        try check(z, width: config.dSAE, what: "latents", size: "d_sae")
        return architecture.decode(parameters, z)
    }

    /// Reconstruction `[batch, d_in]` of `x`.
    public func reconstruct(_ x: Tensor) throws -> Tensor {
        try encodeAndReconstruct(x).reconstruction
    }

    /// Both in one pass: latent activations `[batch, d_sae]` and the reconstruction `[batch, d_in]`.
    public func encodeAndReconstruct(_ x: Tensor) throws -> (featureActs: Tensor, reconstruction: Tensor) {
        let z = try encode(x)
        return (z, architecture.decode(parameters, z))
    }

    private func check(_ x: Tensor, width: Int, what: String, size: String) throws {
        guard x.rank == 2, x.shape[1] == width else {
            throw InterpError("\(what) of shape \(x.shape) do not fit an SAE with \(size) \(width)")
        }
    }
}
