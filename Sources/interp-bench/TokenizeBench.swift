import ArgumentParser
import Foundation
import Interp

struct TokenizeBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode ~8 MB of varied text with the GPT-2 vocabulary: as one string, and line by line.",
        discussion: """
        Without --file the text is made from the fixture corpus (prose, code, numbers, Unicode, emoji) with a third \
        of its words replaced by fresh random words and numbers, so the word cache does not see only repeats. \
        --write-input saves that text so a peer (fixtures/bench_peer_tokenize.py) can encode the same bytes.
        """)
    @Option(help: "Tokenizer (tokenizer.json or a directory).") var tokenizer = "fixtures/tokenizer/gpt2/tokenizer.json"
    @Option(help: "Encode this file instead of the generated text.") var file: String?
    @Option(help: "Approximate size of the generated text in MB.") var megabytes = 8
    @Option(help: "Write the generated text here and exit.") var writeInput: String?
    @OptionGroup var options: RunOptions

    func run() throws {
        let text = try file.map { try String(contentsOfFile: $0, encoding: .utf8) } ?? generatedText(bytes: megabytes << 20)
        if let writeInput {
            try text.write(toFile: writeInput, atomically: true, encoding: .utf8)
            print("wrote \(writeInput): \(text.utf8.count) bytes")
            return
        }
        let megabytesOfText = Double(text.utf8.count) / 1e6
        let lines = text.components(separatedBy: "\n")
        // A fresh tokenizer per run, so the word cache starts empty each time, as it does for a new process.
        var count = 0
        let whole = measure(runs: options.runs) {
            let t = try! BPETokenizer.load(path: tokenizer)
            count = t.encode(text).count
        }
        let byLine = measure(runs: options.runs) {
            let t = try! BPETokenizer.load(path: tokenizer)
            for line in lines { _ = t.encode(line) }
        }
        let loadTime = median(measure(runs: options.runs) { _ = try! BPETokenizer.load(path: tokenizer) })
        report("tokenize one string (\(String(format: "%.2f", megabytesOfText)) MB, \(count) tokens)", times: whole.map { $0 - loadTime },
               extra: ["MB/s": megabytesOfText / (median(whole) - loadTime)])
        report("tokenize by line (\(lines.count) lines)", times: byLine.map { $0 - loadTime },
               extra: ["MB/s": megabytesOfText / (median(byLine) - loadTime), "load s": loadTime])
    }

    func generatedText(bytes: Int) throws -> String {
        let corpus = try String(contentsOfFile: "fixtures/tokenizer/corpus.txt", encoding: .utf8).components(separatedBy: "\n")
        var rng = SeededRandom(seed: 11)
        let letters = Array("abcdefghijklmnopqrstuvwxyzéüßçøABCDEFGHIJKLMNOPQRSTUVWXYZ")
        var out = ""
        out.reserveCapacity(bytes + 1000)
        while out.utf8.count < bytes {
            let line = corpus[Int(rng.next() % UInt64(corpus.count))]
            let words = line.split(separator: " ", omittingEmptySubsequences: false).map { word -> String in
                switch rng.next() % 6 {
                case 0: return String((0..<(2 + Int(rng.next() % 9))).map { _ in letters[Int(rng.next() % UInt64(letters.count))] })
                case 1: return String(rng.next() % 100_000)
                default: return String(word)
                }
            }
            out += words.joined(separator: " ") + "\n"
        }
        return out
    }
}
