import Foundation
import InterpTestSupport
import Testing

/// `notebook-check`, which keeps notebooks-md/ true in CI, on small notebooks whose outputs do and do not match what
/// they claim.
@Suite struct NotebookCheckTests {
    func check(_ notebooks: [String: String]) throws -> CommandResult {
        let directory = try Fixtures.temporaryDirectory()
        for (name, text) in notebooks { try Data(text.utf8).write(to: URL(fileURLWithPath: directory + "/" + name)) }
        return try InterpBinary.runSibling("notebook-check", ["--shell-only"] + notebooks.keys.sorted(), in: directory)
    }

    func notebook(_ code: String, _ expected: String, fence: String = "text") -> String {
        "# A notebook\n\nSome prose.\n\n```sh\n\(code)\n```\n\nMore prose.\n\n```\(fence)\n\(expected)\n```\n"
    }

    @Test func matchingOutputPasses() throws {
        let code = """
        echo "loss 3.1416 after 3000 steps in 12.5 s"
        printf '  step 1 of 2\\r  step 2 of 2\\n' >&2
        echo "wrote run-a/sae.safetensors"
        echo "wrote run-a/cfg.json"
        echo "F 69.22 (95% CI 68.8–69.4)"
        """
        // Numbers within 1% or two units of the last printed digit; timings match any number; the progress line
        // may be left out; "…" stands for any characters or any lines.
        let expected = """
        loss 3.14 after 3000 steps in 2.0 s
        wrote run-…/sae.safetensors
        …
        F 69.23 (95% CI 68.8–69.4)
        """
        let result = try check(["a.md": notebook(code, expected)])
        #expect(result.status == 0, "\(result.stdout)")
        #expect(result.stdout.hasPrefix("ok   a.md (1 shell, 0 Swift blocks)"))
    }

    @Test func changedOutputFails() throws {
        let cases = [
            ("echo 'loss 3.1416'", "loss 3.30"),                      // a number moved by more than the tolerance
            ("echo 'loss 3.1416 over 3000 steps'", "loss 3.14 over 300 steps"),
            ("echo 'tokenizer none'", "tokenizer byte-level BPE"),     // text changed
            ("echo one; echo two", "one"),                             // a line the notebook does not show
            ("echo one", "one\ntwo"),                                  // a line the command no longer prints
            ("echo one; false", "one"),                                // non-zero exit without "error:" expected
        ]
        for (code, expected) in cases {
            let result = try check(["b.md": notebook(code, expected)])
            #expect(result.status == 1, "\(code) / \(expected)")
            #expect(result.stdout.hasPrefix("FAIL b.md"), "\(result.stdout)")
        }
    }

    /// Notebooks run in order in one directory, so a later one may use what an earlier one wrote; a failing command
    /// may be shown on purpose when its expected output has the error line.
    @Test func notebooksShareADirectoryAndShowErrors() throws {
        let result = try check([
            "1.md": notebook("echo 42 > shared.txt && echo done", "done"),
            "2.md": notebook("cat shared.txt", "42"),
            "3.md": notebook("echo 'error: x.json: not found' >&2; exit 1", "error: x.json: not found"),
        ])
        #expect(result.status == 0, "\(result.stdout)")
        #expect(result.stdout.split(separator: "\n").filter { $0.hasPrefix("ok   ") }.count == 3)
    }

    /// A `tolerance=P%` fence widens the numbers' tolerance for figures that move with the BLAS kernel (a trained SAE's
    /// F), and nothing else: a figure beyond it, changed text or a missing line still fail.
    @Test func aStatedToleranceWidensNumbersOnly() throws {
        let code = "echo 'F = 198.4 features: psi = 1.55, dead 19 of 512'"
        let expected = "F = 203.4 features: psi = 1.59, dead 18 of 512"      // 2.5% lower F, 2.5% lower ψ
        let passes = try check(["t.md": notebook(code, expected, fence: "text tolerance=5%")])
        #expect(passes.status == 0, "\(passes.stdout)")
        let strict = try check(["t.md": notebook(code, expected)])
        #expect(strict.status == 1 && strict.stdout.hasPrefix("FAIL t.md"), "\(strict.stdout)")
        let cases = [
            ("F = 180.0 features: psi = 1.55, dead 19 of 512", "F = 203.4 features: psi = 1.59, dead 18 of 512"),   // 11.5% off
            ("F = 198.4 features: phi = 1.55, dead 19 of 512", "F = 203.4 features: psi = 1.59, dead 18 of 512"),   // text
            ("F = 198.4 features", "F = 203.4 features\nkept 59 of 527 edges"),                                    // a line
        ]
        for (printed, shown) in cases {
            let result = try check(["t.md": notebook("echo '\(printed)'", shown, fence: "text tolerance=5%")])
            #expect(result.status == 1 && result.stdout.hasPrefix("FAIL t.md"), "\(printed) / \(shown): \(result.stdout)")
        }
    }

    /// A fence attribute the checker does not know, or a tolerance out of range, is an error naming the notebook and
    /// line (exit 2), before anything runs.
    @Test func anUnknownFenceAttributeIsAnError() throws {
        let cases = [("sh", "text tolerence=5%"), ("sh", "text tolerance=5"), ("sh", "text tolerance=0%"),
                     ("sh", "text tolerance=80%"), ("sh tolerance=5%", "text")]
        for (codeFence, textFence) in cases {
            let text = "```\(codeFence)\necho ran\n```\n\n```\(textFence)\nran\n```\n"
            let result = try check(["u.md": text])
            #expect(result.status == 2, "\(codeFence) / \(textFence): \(result.stdout)")
            #expect(result.stderr.hasPrefix("error: u.md:"), "\(codeFence) / \(textFence): \(result.stderr)")
        }
    }
}

/// Scripts run under `set -o pipefail` (CI, the fixture checks, the notebooks' shell blocks) must not pipe into a
/// reader that exits early (`head`, `grep -q`, `grep -m`, `sed …q`, `awk … exit`): the writer then dies of SIGPIPE,
/// by chance, and the script with it.
@Suite struct PipelineTests {
    static let earlyExitingReader = try! NSRegularExpression(
        pattern: #"\|\s*(head\b|grep\s+(-\w*\s+)*-\w*[qm]|sed\s+(-n\s+)?['"]?[0-9,]*q|awk\b[^|]*\bexit\b)"#)

    static func offenders(_ text: String, in file: String) -> [String] {
        text.components(separatedBy: "\n").enumerated().compactMap { n, line in
            let range = NSRange(location: 0, length: (line as NSString).length)
            return earlyExitingReader.firstMatch(in: line, range: range) == nil ? nil : "\(file):\(n + 1): \(line)"
        }
    }

    @Test func noScriptPipesIntoAnEarlyExitingReader() throws {
        let root = Fixtures.repositoryRoot, fm = FileManager.default
        var scripts = [".ci/run"] + (try fm.contentsOfDirectory(atPath: root + "/fixtures")).filter { $0.hasSuffix(".sh") }.map { "fixtures/" + $0 }
        scripts.sort()
        var found: [String] = []
        for path in scripts { found += Self.offenders(try String(contentsOfFile: root + "/" + path, encoding: .utf8), in: path) }
        for name in try fm.contentsOfDirectory(atPath: root + "/notebooks-md").filter({ $0.hasSuffix(".md") }).sorted() {
            let text = try String(contentsOfFile: root + "/notebooks-md/" + name, encoding: .utf8)
            // The shell blocks only (a pipe character in prose or a table is no pipeline).
            var inShell = false, shell: [String] = []
            for line in text.components(separatedBy: "\n") {
                if line.hasPrefix("```") { inShell = !inShell && line == "```sh"; shell.append(""); continue }
                shell.append(inShell ? line : "")
            }
            found += Self.offenders(shell.joined(separator: "\n"), in: "notebooks-md/" + name)
        }
        #expect(scripts.count >= 2)
        #expect(found.isEmpty, "\(found.joined(separator: "\n"))")
        // The check itself finds the pipeline that made CI fail one run in three, and lets a whole-input reader pass.
        #expect(!Self.offenders(#"first=$(ls feature-*.html | sort -t- -k2 -n | head -1)"#, in: "x").isEmpty)
        #expect(!Self.offenders("interp info | grep -q layers", in: "x").isEmpty)
        #expect(Self.offenders("interp info | sed -n 1,10p | grep -v '^$'", in: "x").isEmpty)
    }
}
