// notebook-check: runs the shell and Swift code blocks of the Markdown notebooks as written and compares what they
// print with the `text` block that follows each one, so the documentation cannot drift from the code.
//
//     notebook-check [--keep] [--shell-only] [--print] notebooks-md/*.md
//
// --print shows every block's output as the checker sees it (to write a notebook's expected text, or to see what a
// figure became under another BLAS kernel); --keep keeps the scratch directory.
//
// Notebooks run in the order given, in one scratch directory (later notebooks may use files earlier ones wrote),
// where `fixtures` and `.build` point at the repository's. A notebook's Swift blocks become one program (top-level
// code, in order), built against this package in release and run after the notebook's shell blocks.
//
// Expected output: the first ```text block after a code block and before the next one. Its lines must match the
// output's (stdout and stderr together; a line redrawn with \r counts as its last drawing, and progress lines, drawn
// with \r, may be left out of the expected text):
//   - a line "…" matches any number of lines; "…" inside a line matches any characters;
//   - numbers match within 1% or two units of their last printed digit; numbers of seconds, milliseconds or
//     tokens per second ("1.3 s", "12 ms", "4000 tokens/s") match any number;
//   - a block fenced as ```text tolerance=5% lets its numbers move by that fraction instead of 1%: for figures that
//     honestly vary with the BLAS kernel's rounding (an SAE's training trajectory moves with the last bits of every
//     product). The notebook states the tolerance where the reader sees it; text and counts of lines still match.
// A shell block must exit 0 unless its expected output contains "error:".
import Foundation

struct Block {
    let language: String
    let code: String
    let line: Int
    var expected: String?
    /// Relative tolerance of the expected text's numbers (its fence's `tolerance=` attribute), or nil for 1%.
    var tolerance: Double?
}

struct Failure: Error, CustomStringConvertible { let description: String }

/// A fence's info string: the language, then attributes. Only `text` blocks take one, `tolerance=P%` (0 < P ≤ 50).
func fence(_ info: String, path: String, line: Int) throws -> (language: String, tolerance: Double?) {
    let words = info.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
    guard let language = words.first else { return ("", nil) }
    var tolerance: Double?
    for attribute in words.dropFirst() {
        let place = "\(path):\(line): fence attribute '\(attribute)'"
        guard language == "text" else { throw Failure(description: "\(place): only a ```text block takes attributes") }
        guard attribute.hasPrefix("tolerance="), attribute.hasSuffix("%"),
              let percent = Double(attribute.dropFirst("tolerance=".count).dropLast()) else {
            throw Failure(description: "\(place) is not understood (the one attribute is tolerance=P%, e.g. tolerance=5%)")
        }
        guard percent > 0, percent <= 50 else { throw Failure(description: "\(place): the tolerance must be above 0% and at most 50%") }
        tolerance = percent / 100
    }
    return (language, tolerance)
}

func parse(_ text: String, path: String) throws -> [Block] {
    var blocks: [Block] = []
    var current: (language: String, tolerance: Double?, lines: [String], line: Int)?
    for (n, line) in text.components(separatedBy: "\n").enumerated() {
        if var open = current {
            if line == "```" {
                let code = open.lines.joined(separator: "\n")
                if open.language == "text", let last = blocks.indices.last, ["sh", "swift"].contains(blocks[last].language),
                   blocks[last].expected == nil {
                    blocks[last].expected = code
                    blocks[last].tolerance = open.tolerance
                } else {
                    blocks.append(Block(language: open.language, code: code, line: open.line))
                }
                current = nil
            } else {
                open.lines.append(line)
                current = open
            }
        } else if line.hasPrefix("```") {
            let (language, tolerance) = try fence(String(line.dropFirst(3)), path: path, line: n + 1)
            current = (language, tolerance, [], n + 1)
        }
    }
    return blocks
}

/// Runs `arguments` in `directory`; stdout and stderr through one pipe, in the order written.
func run(_ arguments: [String], in directory: String, environment extra: [String: String] = [:]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    var environment = ProcessInfo.processInfo.environment
    for (k, v) in extra { environment[k] = v }
    process.environment = environment
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Output as a reader sees it: each \r-redrawn line as its last drawing, trailing blanks and empty lines dropped.
/// With `withProgress` false, lines drawn with \r (progress lines) are left out.
func screenLines(_ output: String, withProgress: Bool = true) -> [String] {
    var lines: [String] = []
    for line in output.components(separatedBy: "\n") {
        if !withProgress && line.contains("\r") { continue }
        let drawn = line.components(separatedBy: "\r").last { !$0.trimmingCharacters(in: .whitespaces).isEmpty } ?? ""
        lines.append(String(drawn.reversed().drop { $0 == " " }.reversed()))
    }
    while lines.last == "" { lines.removeLast() }
    return lines
}

/// The expected text against the output with its progress lines, then (when a notebook shows only results)
/// without them.
func check(_ output: String, _ expected: String, tolerance: Double?) -> String? {
    let relative = tolerance ?? 0.01
    guard let problem = compare(screenLines(output), screenLines(expected), relative: relative) else { return nil }
    return compare(screenLines(output, withProgress: false), screenLines(expected), relative: relative) == nil ? nil : problem
}

let numberPattern = try! NSRegularExpression(pattern: "[-+−]?(?:\\d[\\d,]*)?\\.?\\d+(?:[eE][-+]?\\d+)?")
let timingUnit = try! NSRegularExpression(pattern: "^(?:\\s?(?:s|ms|µs)\\b|\\s?tokens/s|\\s?rows/s|\\s?s\\))")

/// Splits a line into text pieces and numbers.
func tokens(_ line: String) -> [(text: String, number: Double?, decimals: Int, timing: Bool)] {
    let ns = line as NSString
    var out: [(String, Double?, Int, Bool)] = []
    var last = 0
    for match in numberPattern.matches(in: line, range: NSRange(location: 0, length: ns.length)) {
        if match.range.location > last { out.append((ns.substring(with: NSRange(location: last, length: match.range.location - last)), nil, 0, false)) }
        let raw = ns.substring(with: match.range)
        let value = Double(raw.replacingOccurrences(of: ",", with: "").replacingOccurrences(of: "−", with: "-"))
        let mantissa = raw.split(whereSeparator: { $0 == "e" || $0 == "E" })[0]
        let decimals = mantissa.contains(".") ? mantissa.split(separator: ".").last!.count : 0
        let rest = ns.substring(from: match.range.location + match.range.length)
        let timing = timingUnit.firstMatch(in: rest, range: NSRange(location: 0, length: (rest as NSString).length)) != nil
        out.append((raw, value, decimals, timing))
        last = match.range.location + match.range.length
    }
    if last < ns.length { out.append((ns.substring(from: last), nil, 0, false)) }
    return out
}

/// Whether `actual` matches the expected line `pattern` ("…" wildcards, numbers within `relative` of the expected
/// value or two units of its last printed digit).
func lineMatches(_ actual: String, _ pattern: String, relative: Double) -> Bool {
    if pattern.contains("…") {
        // p0 … p1 … pn: p0 matches a prefix, pn a suffix, the others pieces in between, in order.
        let pieces = pattern.components(separatedBy: "…")
        let characters = Array(actual)
        func match(_ from: Int, _ k: Int) -> Bool {
            let piece = pieces[k]
            let starts = k == 0 ? [from] : Array(from...characters.count)
            for start in starts {
                if k == pieces.count - 1 {
                    if lineMatches(String(characters[start...]), piece, relative: relative) { return true }
                    continue
                }
                for end in start...characters.count where lineMatches(String(characters[start..<end]), piece, relative: relative) {
                    if match(end, k + 1) { return true }
                }
            }
            return false
        }
        return match(0, 0)
    }
    let a = tokens(actual), e = tokens(pattern)
    guard a.count == e.count else { return false }
    for (x, y) in zip(a, e) {
        switch (x.number, y.number) {
        case let (u?, v?):
            if y.timing { continue }
            let tolerance = max(relative * abs(v), 2 * pow(10, -Double(y.decimals)))
            if abs(u - v) > tolerance { return false }
        case (nil, nil):
            if x.text != y.text { return false }
        default:
            return false
        }
    }
    return true
}

/// Matches output lines against expected lines, "…" lines matching any run of lines. Returns a description of the
/// first mismatch, or nil.
func compare(_ actual: [String], _ expected: [String], relative: Double) -> String? {
    func match(_ i: Int, _ j: Int) -> Bool {
        if j == expected.count { return i == actual.count }
        if expected[j] == "…" { return (i...actual.count).contains { match($0, j + 1) } }
        return i < actual.count && lineMatches(actual[i], expected[j], relative: relative) && match(i + 1, j + 1)
    }
    if match(0, 0) { return nil }
    // Report the first expected line that has no counterpart in order.
    var i = 0
    for line in expected where line != "…" {
        guard let found = actual[i...].firstIndex(where: { lineMatches($0, line, relative: relative) }) else {
            return "expected a line matching\n    \(line)\n  output was:\n" + actual.map { "    " + $0 }.joined(separator: "\n")
        }
        i = found + 1
    }
    return "the output has lines the expected text does not account for; output was:\n" + actual.map { "    " + $0 }.joined(separator: "\n")
}

/// One block's output as the checker compares it, under a header naming the block.
func show(_ path: String, _ block: Block, _ output: String) {
    print("--- \(path):\(block.line) (\(block.language)) printed:\n" + screenLines(output).map { "    " + $0 }.joined(separator: "\n"))
}

// MARK: - main

var arguments = Array(CommandLine.arguments.dropFirst())
let keep = arguments.contains("--keep"), shellOnly = arguments.contains("--shell-only"), printOutputs = arguments.contains("--print")
arguments.removeAll { $0 == "--keep" || $0 == "--shell-only" || $0 == "--print" }
guard !arguments.isEmpty, !arguments.contains(where: { $0.hasPrefix("--") }) else {
    FileHandle.standardError.write(Data("usage: notebook-check [--keep] [--shell-only] [--print] NOTEBOOK.md…\n".utf8))
    exit(2)
}
let root = FileManager.default.currentDirectoryPath
let scratch = NSTemporaryDirectory() + "notebook-check-" + UUID().uuidString
let fm = FileManager.default
try fm.createDirectory(atPath: scratch, withIntermediateDirectories: true)
for name in ["fixtures", ".build"] { try fm.createSymbolicLink(atPath: scratch + "/" + name, withDestinationPath: root + "/" + name) }
defer { if !keep { try? fm.removeItem(atPath: scratch) } }

var notebooks: [(path: String, blocks: [Block])] = []
for path in arguments {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
        FileHandle.standardError.write(Data("error: \(path): cannot read\n".utf8))
        exit(1)
    }
    do {
        notebooks.append((path, try parse(text, path: path)))
    } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        exit(2)
    }
}

// Build every notebook's Swift program first: one package, one executable per notebook.
var programs: [Int: String] = [:]
for (k, notebook) in notebooks.enumerated() where notebook.blocks.contains(where: { $0.language == "swift" }) {
    if !shellOnly { programs[k] = "nb\(k)" }
}
let packageDirectory = scratch + "/.notebook-programs"
if !programs.isEmpty {
    var targets: [String] = []
    for (k, name) in programs.sorted(by: { $0.key < $1.key }) {
        let directory = packageDirectory + "/Sources/" + name
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var source = "import Foundation\nfunc notebookBlock(_ n: Int) { fflush(stdout); print(\"\\u{1E}block \\(n)\"); fflush(stdout) }\n"
        for (b, block) in notebooks[k].blocks.enumerated() where block.language == "swift" {
            source += "notebookBlock(\(b))\n// \(notebooks[k].path):\(block.line)\n" + block.code + "\n"
        }
        source += "notebookBlock(-1)\n"
        try Data(source.utf8).write(to: URL(fileURLWithPath: directory + "/main.swift"))
        targets.append(".executableTarget(name: \"\(name)\", dependencies: [.product(name: \"Interp\", package: \"interp\")], swiftSettings: flags)")
    }
    let manifest = """
    // swift-tools-version:6.0
    import PackageDescription
    #if arch(x86_64)
    let flags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
    #else
    let flags: [SwiftSetting] = []
    #endif
    let package = Package(name: "notebook-programs", dependencies: [.package(name: "interp", path: \(String(reflecting: root)))],
                          targets: [\(targets.joined(separator: ",\n    "))], swiftLanguageModes: [.v5])

    """
    try Data(manifest.utf8).write(to: URL(fileURLWithPath: packageDirectory + "/Package.swift"))
    FileHandle.standardError.write(Data("building the notebooks' Swift programs …\n".utf8))
    let build = try run(["swift", "build", "-c", "release", "--package-path", packageDirectory, "--scratch-path", root + "/.build-notebooks"], in: root)
    if build.status != 0 {
        print("FAIL: the notebooks' Swift blocks do not build:\n" + build.output.split(separator: "\n").filter { $0.contains("error") }.joined(separator: "\n"))
        exit(1)
    }
}

var failures = 0
for (k, notebook) in notebooks.enumerated() {
    var problems: [String] = []
    var shellBlocks = 0
    for block in notebook.blocks where block.language == "sh" {
        shellBlocks += 1
        let result = try run(["bash", "-e", "-o", "pipefail", "-c", block.code], in: scratch, environment: ["COLUMNS": "100"])
        if printOutputs { show(notebook.path, block, result.output) }
        let expectsError = block.expected?.contains("error:") ?? false
        if result.status != 0 && !expectsError {
            problems.append("line \(block.line): exit status \(result.status)\n" + screenLines(result.output).map { "    " + $0 }.joined(separator: "\n"))
            break
        }
        if let expected = block.expected, let problem = check(result.output, expected, tolerance: block.tolerance) {
            problems.append("line \(block.line): " + problem)
        }
    }
    var swiftBlocks = 0
    if let name = programs[k], problems.isEmpty {
        let result = try run([root + "/.build-notebooks/release/" + name], in: scratch)
        let parts = result.output.components(separatedBy: "\u{1E}block ")
        var outputs: [Int: String] = [:]
        for part in parts.dropFirst() {
            let header = part.prefix { $0 != "\n" }
            outputs[Int(header) ?? -2] = String(part.dropFirst(header.count + 1))
        }
        if result.status != 0 {
            problems.append("the Swift program stopped with status \(result.status)\n" + screenLines(result.output).suffix(8).map { "    " + $0 }.joined(separator: "\n"))
        }
        for (b, block) in notebook.blocks.enumerated() where block.language == "swift" {
            swiftBlocks += 1
            if printOutputs { show(notebook.path, block, outputs[b] ?? "") }
            if let expected = block.expected, let problem = check(outputs[b] ?? "", expected, tolerance: block.tolerance) {
                problems.append("line \(block.line) (Swift): " + problem)
            }
        }
    }
    if problems.isEmpty {
        print("ok   \(notebook.path) (\(shellBlocks) shell, \(swiftBlocks) Swift blocks)")
    } else {
        failures += 1
        print("FAIL \(notebook.path)\n  " + problems.joined(separator: "\n  "))
    }
}
if keep { print("scratch directory kept: \(scratch)") }
exit(failures == 0 ? 0 : 1)
