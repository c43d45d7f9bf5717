import ArgumentParser
import Foundation
import Interp

/// BENCHMARKS.md `patch-resid` and `patch-heads`: GPT-2-small shape, random weights, one prompt of 20 tokens with two
/// positions corrupted, metric logit[11] − logit[22] at the last position.
struct PatchBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "patch",
        abstract: "Activation patching on the GPT-2-small shape: resid_pre by (layer, pos) = 240 cells, head_out by (layer, head) = 144 cells.")
    @Option(help: "Tokens in the prompt.") var positions = 20
    @Option(help: ArgumentHelp("The corrupted positions, comma-separated.", valueName: "p,q")) var corrupt = "3,11"
    @Option(help: "resid, heads or both.") var workload = "both"
    @Flag(help: "Also run the one-forward-per-cell reference and report the largest difference.") var check = false
    @OptionGroup var options: RunOptions

    func run() throws {
        let config = gpt2SmallShape
        let model = try randomModel(config, seed: 0)
        var rng = SeededRandom(seed: 3)
        let clean = (0..<positions).map { _ in Int(rng.next() % UInt64(config.dVocab)) }
        var corrupted = clean
        let corruptedPositions = corrupt.split(separator: ",").compactMap { Int($0) }
        guard !corruptedPositions.isEmpty, corruptedPositions.allSatisfy({ (0..<positions).contains($0) }) else {
            throw ValidationError("--corrupt needs positions in 0..<\(positions)")
        }
        for p in corruptedPositions { corrupted[p] = (clean[p] + 1) % config.dVocab }
        let cleanBatch = try TokenBatch([clean], config: config), corruptedBatch = try TokenBatch([corrupted], config: config)
        let metric = PatchingMetric.logitDifference(answers: [11], wrongs: [22])
        let workloads: [(String, PatchSite, PatchIndexing)] = [("patch-resid", .residPre, .layerPos), ("patch-heads", .headOut, .layerHead)]
            .filter { workload == "both" || $0.0 == "patch-" + workload }
        guard !workloads.isEmpty else { throw ValidationError("--workload is resid, heads or both") }
        for (name, site, indexing) in workloads {
            var table: PatchingTable?, failure: Error?
            let times = measure(runs: options.runs) {
                do {
                    table = try ActivationPatching.table(model: model, clean: cleanBatch, corrupted: corruptedBatch, site: site,
                                                         indexing: indexing, metric: metric)
                } catch { failure = error }
            }
            if let failure { throw failure }
            var extra: [String: Double] = ["cells": Double(table!.values.count), "cells/s": Double(table!.values.count) / median(times)]
            if check {
                let start = DispatchTime.now().uptimeNanoseconds
                let slow = try ActivationPatching.reference(model: model, clean: cleanBatch, corrupted: corruptedBatch, site: site,
                                                            indexing: indexing, metric: metric)
                extra["reference s"] = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                extra["max |fast − reference| ×1e6"] = zip(slow.values, table!.values).map { abs($0 - $1) }.max()! * 1e6
            }
            report("\(name) (\(site.rawValue) by \(indexing.rawValue), 1 × \(positions) tokens, corrupted at \(corrupt))", times: times, extra: extra)
        }
    }
}
