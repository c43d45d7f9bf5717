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

    func notebook(_ code: String, _ expected: String) -> String {
        "# A notebook\n\nSome prose.\n\n```sh\n\(code)\n```\n\nMore prose.\n\n```text\n\(expected)\n```\n"
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
}
