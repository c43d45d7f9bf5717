import Foundation
import InterpCore
import Tokenization
import InterpModels
import ActivationStore
import SparseAutoencoders
import Plots
import Superposition
import ActivationPatching
import Circuits
import Dashboards

/// DIR/index.html of `interp demo`: the figures of every stage and the pictures, in reading order.
struct DemoPage {
    let report: Demo.Report
    let settings: Demo.Settings

    func html() -> String {
        let r = report
        func f(_ v: Double, _ digits: Int = 3) -> String { String(format: "%.\(digits)f", v) }
        let stages = r.stages.map { "<tr><td>\(xmlEscaped($0.name))</td><td>\(f($0.seconds, 1)) s</td></tr>" }.joined()
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>interp demo: \(xmlEscaped(r.model))</title>
        <style>
        body { font-family: sans-serif; margin: 24px auto; max-width: 1000px; color: #222; line-height: 1.45; }
        h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
        table { border-collapse: collapse; } td, th { padding: 3px 10px; text-align: left; }
        table.figures td:first-child { color: #555; } code { background: #f3f3f3; padding: 0 3px; }
        img { max-width: 100%; border: 1px solid #eee; } .note { color: #666; font-size: 92%; }
        </style></head>
        <body>
        <h1>interp demo: <code>\(xmlEscaped(r.model))</code></h1>
        <p>Every stage of a small interpretability study on one model, run by <code>interp demo</code> in \(f(r.seconds, 1)) s. \
        Text: <code>\(xmlEscaped(r.textFile))</code>, \(r.tokens) tokens (BOS left out) in windows of \(r.contextLength). \
        Each stage is also a command of its own (named below) and a library call.</p>

        <h2>The model</h2>
        <table class="figures">
        <tr><td>next-token loss on the text</td><td>\(f(r.textLoss)) nats</td></tr>
        <tr><td>loss on a run of \(settings.inductionLength) tokens, first time</td><td>\(f(r.firstCopyLoss)) nats</td></tr>
        <tr><td>the same run repeated</td><td>\(f(r.secondCopyLoss)) nats</td></tr>
        </table>
        <p class="note">The drop on the repeat is induction: the model predicts a token by finding where the previous \
        token occurred before and copying what followed it.</p>

        <h2>A sparse autoencoder on <code>\(xmlEscaped(r.hook))</code></h2>
        <p>Cached to <a href="activations.h5">activations.h5</a> (<code>interp cache</code>; h5py reads it), then a TopK SAE \
        (\(r.latents) latents, k = \(settings.k)) trained on it (<code>interp sae train</code>), saved in SAELens's format in \
        <a href="sae/cfg.json">sae/</a>, and evaluated (<code>interp sae eval</code>).</p>
        <table class="figures">
        <tr><td>explained variance</td><td>\(f(r.explainedVariance))</td></tr>
        <tr><td>L0 (active latents per token)</td><td>\(f(r.l0, 1))</td></tr>
        <tr><td>dead latents</td><td>\(r.deadLatents) of \(r.latents)</td></tr>
        <tr><td>cross-entropy: clean / SAE spliced in / layer zeroed</td><td>\(f(r.ceClean)) / \(f(r.ceSpliced)) / \(f(r.ceZero))</td></tr>
        <tr><td>CE loss recovered</td><td>\(f(100 * r.ceRecovered, 1))%</td></tr>
        </table>

        <h2>How many features? (<code>interp sae feature-count</code>)</h2>
        <p>The effective number of features F = exp(entropy of the latents' shares of activation mass): \
        <b>F = \(f(r.effectiveFeatures, 1))</b> on N = \(r.neurons) dimensions, ψ = F / N = <b>\(f(r.superposition, 2))</b>\
        \(r.superposition > 1 ? " — more features than dimensions: superposition." : ".") The curve should flatten before F is trusted.</p>
        <img src="feature-count.svg" alt="effective features against samples">

        <h2>Activation patching (<code>interp patch</code>)</h2>
        <p>\(settings.inductionPrompts) prompts: BOS, a run of \(settings.inductionLength) tokens of the text, then the run again \
        up to its last token; the answer is that last token. Corrupted: the first copy's last token replaced by another \
        token. Logit difference (answer − other) clean \(f(r.patchCleanLogitDiff, 2)), corrupted \(f(r.patchCorruptedLogitDiff, 2)); \
        each cell shows how much of it one clean activation restores in the corrupted run (1 = all).</p>
        <p>Most restored: resid_pre at \(xmlEscaped(r.bestResidCell)) (\(f(r.bestResidValue, 2))), head \(xmlEscaped(r.bestHead)) \
        (\(f(r.bestHeadValue, 2))).</p>
        <img src="patch-resid-pre.svg" alt="patching heatmap, resid_pre by layer and position">
        <img src="patch-heads.svg" alt="patching heatmap, head outputs by layer and head">

        <h2>The induction circuit (<code>interp circuits</code>)</h2>
        <p>ACDC on the same prompts, the corrupted ones having another run as their first copy; the metric is the KL \
        divergence from the model on the second copy. Kept \(r.circuitEdges) of \(r.graphEdges) edges at τ = \(r.threshold): \
        KL \(f(r.circuitKL)) (full model \(String(format: "%.2g", r.fullKL)), no edges \(f(r.emptyKL))). Heads in the circuit: \
        \(r.circuitHeads.isEmpty ? "none" : xmlEscaped(r.circuitHeads.joined(separator: ", "))). Details: <a href="circuit.json">circuit.json</a>.</p>
        <img src="circuit.svg" alt="the circuit ACDC found">

        <h2>Feature dashboards (<code>interp sae dashboard</code>)</h2>
        <p>\(r.aliveLatents) of the SAE's \(r.latents) latents fire on the text. <a href="dashboard/index.html">Open the \
        dashboards</a>: each latent's density, activation histogram, the tokens it promotes and suppresses, and the \
        contexts where it fires most strongly.</p>

        <h2>Time</h2>
        <table>\(stages)<tr><td><b>total</b></td><td><b>\(f(r.seconds, 1)) s</b></td></tr></table>
        <p class="note">All figures are in <a href="report.json">report.json</a>.</p>
        </body></html>

        """
    }
}
