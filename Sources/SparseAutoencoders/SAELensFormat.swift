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
        enum CodingKeys: String, CodingKey {
            case hookName = "hook_name", modelName = "model_name", contextSize = "context_size", prependBOS = "prepend_bos"
            case saeLensVersion = "sae_lens_version"
        }
    }

    public var architecture: String
    public var dIn: Int
    public var dSAE: Int
    public var dtype: String?
    public var applyBDecToInput: Bool
    public var normalizeActivations: String?
    public var reshapeActivations: String?
    /// TopK only.
    public var k: Int?
    public var rescaleActsByDecoderNorm: Bool?
    public var metadata: Metadata?

    enum CodingKeys: String, CodingKey {
        case architecture, dIn = "d_in", dSAE = "d_sae", dtype, applyBDecToInput = "apply_b_dec_to_input"
        case normalizeActivations = "normalize_activations", reshapeActivations = "reshape_activations", metadata
        case k, rescaleActsByDecoderNorm = "rescale_acts_by_decoder_norm"
    }
}

/// A loaded SAE for inference: encode activations into latents and decode them back.
public struct SparseAutoencoder: Sendable {
    public let config: SAELensConfig
    public let parameters: SAEParameters

    /// Loads a SAELens directory. Strict: the four tensors with the shapes `cfg.json` implies, nothing unknown.
    public static func load(directory: String) throws -> SparseAutoencoder {
        let configPath = directory + "/cfg.json"
        let config = try decodeJSON(SAELensConfig.self, from: readFile(configPath), file: configPath)
        guard ["standard", "topk", "jumprelu"].contains(config.architecture) else {
            throw InterpError("architecture '\(config.architecture)' is not supported yet (interp reads standard, topk and jumprelu)", file: configPath)
        }
        if config.architecture == "topk" {
            guard let k = config.k, k > 0, k <= config.dSAE else { throw InterpError("a topk SAE needs k between 1 and d_sae", file: configPath) }
        }
        guard config.dIn > 0, config.dSAE > 0 else { throw InterpError("d_in and d_sae must be positive", file: configPath) }
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
        if config.architecture == "jumprelu" { expected["threshold"] = [config.dSAE] }
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
        return SparseAutoencoder(config: config, parameters: SAEParameters(wEnc: tensors["W_enc"]!, bEnc: tensors["b_enc"]!,
                                                                              wDec: tensors["W_dec"]!, bDec: tensors["b_dec"]!,
                                                                              threshold: tensors["threshold"]))
    }

    /// Latent activations `[batch, d_sae]` of `x [batch, d_in]`.
    public func encode(_ x: Tensor) throws -> Tensor {
        try run(x).featureActs
    }

    /// Reconstruction `[batch, d_in]` of `x`.
    public func reconstruct(_ x: Tensor) throws -> Tensor {
        try run(x).reconstruction
    }

    /// Both in one pass: latent activations `[batch, d_sae]` and the reconstruction `[batch, d_in]`.
    public func encodeAndReconstruct(_ x: Tensor) throws -> (featureActs: Tensor, reconstruction: Tensor) {
        try run(x)
    }

    private func run(_ x: Tensor) throws -> (featureActs: Tensor, reconstruction: Tensor) {
        try check(x)
        if config.architecture == "jumprelu" {
            return JumpReLUSAE.encodeAndDecode(parameters, x: x, applyBDecToInput: config.applyBDecToInput)
        }
        if config.architecture == "topk" {
            let options = TopKSAE.Options(k: config.k!, rescaleByDecoderNorm: config.rescaleActsByDecoderNorm ?? false,
                                          applyBDecToInput: config.applyBDecToInput)
            let result = TopKSAE.lossAndGradients(parameters, x: x, options: options, deadMask: nil)
            return (result.featureActs, result.reconstruction)
        }
        let result = StandardSAE.lossAndGradients(parameters, x: x, l1Coefficient: 0, applyBDecToInput: config.applyBDecToInput)
        return (result.featureActs, result.reconstruction)
    }

    private func check(_ x: Tensor) throws {
        guard x.rank == 2, x.shape[1] == config.dIn else {
            throw InterpError("activations of shape \(x.shape) do not fit an SAE with d_in \(config.dIn)")
        }
    }
}
