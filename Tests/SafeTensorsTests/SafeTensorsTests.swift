import Foundation
import InterpCore
import InterpTestSupport
import SafeTensors
import Testing

@Suite struct SafeTensorsReadTests {
    /// F16 and BF16 tensors written by the safetensors package, beside their float32 values computed by PyTorch.
    @Test func halfPrecisionConvertsExactly() throws {
        let file = try SafeTensorsFile(path: Fixtures.reference("dtypes.safetensors"))
        for name in ["f16", "bf16", "specials_f16"] {
            let converted = try file.tensor(name), expected = try file.tensor(name + "_as_f32")
            #expect(converted.shape == expected.shape)
            #expect(converted.scalars.map(\.bitPattern) == expected.scalars.map(\.bitPattern), "\(name)")
        }
        #expect(try file.entry("f16").dtype == .f16)
        #expect(try file.entry("bf16").dtype == .bf16)
        #expect(try file.tensor("scalar") == Tensor(shape: [], scalars: [2.5]))
        #expect(try file.tensor("empty").shape == [0, 3])
        #expect(file.metadata == ["format": "pt", "made_by": "make_models.py"])
    }

    @Test func roundTripWithMetadataAndIntegers() throws {
        let dir = try Fixtures.temporaryDirectory()
        let path = dir + "/t.safetensors"
        let a = Tensor(shape: [2, 3], scalars: [1, -2, 3.5, .infinity, 0, -0.0])
        let b = Tensor(shape: [], scalars: [7])
        try SafeTensorsWriter.write(payloads: ["a": .float(a), "b \"quoted\"": .float(b),
                                               "ids": .int32(shape: [3], values: [0, -5, 50256])],
                                    metadata: ["note": "line\nbreak"], to: path)
        let file = try SafeTensorsFile(path: path)
        #expect(try file.tensor("a").scalars.map(\.bitPattern) == a.scalars.map(\.bitPattern))
        #expect(try file.tensor("b \"quoted\"") == b)
        #expect(try file.integers("ids").values == [0, -5, 50256])
        #expect(file.metadata["note"] == "line\nbreak")
        #expect(file.names == ["a", "b \"quoted\"", "ids"])
        #expect(throws: InterpError.self) { try file.tensor("ids") }
        #expect(throws: InterpError.self) { try file.tensor("missing") }
        // Header padded to a multiple of 8, so F32 data is aligned.
        let header = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(8)
        #expect(header.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } % 8 == 0)
    }

    @Test func writerFailsCleanlyIntoMissingDirectory() throws {
        let path = try Fixtures.temporaryDirectory() + "/no/such/dir/x.safetensors"
        #expect {
            try SafeTensorsWriter.write(["x": Tensor(zeros: [2])], to: path)
        } throws: { ($0 as? InterpError)?.file == path }
    }
}

/// Crafted bad files: each must give a one-line error naming the file, never a crash.
@Suite struct CorruptSafeTensorsTests {
    static func file(header: String, data: Int = 0, declaredLength: UInt64? = nil, truncateTo: Int? = nil) -> Data {
        var bytes = Data()
        let headerBytes = Data(header.utf8)
        var length = (declaredLength ?? UInt64(headerBytes.count)).littleEndian
        withUnsafeBytes(of: &length) { bytes.append(contentsOf: $0) }
        bytes.append(headerBytes)
        bytes.append(Data(repeating: 0, count: data))
        if let truncateTo { bytes = bytes.prefix(truncateTo) }
        return bytes
    }

    static let cases: [(String, Data, String)] = [
        ("empty file", Data(), "shorter than the 8-byte header length"),
        ("truncated length", Data([1, 0, 0]), "shorter than the 8-byte header length"),
        ("header too long", file(header: "{}", declaredLength: 200_000_000), "exceeds the limit"),
        ("header past end", file(header: "{}", declaredLength: 4096), "runs past the end of the file"),
        ("huge length", file(header: "{}", declaredLength: UInt64.max), "exceeds the limit"),
        ("bad JSON", file(header: "{\"a\": [1, 2"), "not valid JSON"),
        ("not an object", file(header: "[1, 2, 3]"), "not a JSON object"),
        ("entry not an object", file(header: "{\"a\": 3}"), "tensor 'a' is not an object"),
        ("missing dtype", file(header: "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", data: 4), "has no dtype"),
        ("unknown dtype", file(header: "{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,4]}}", data: 4), "unknown dtype 'F128'"),
        ("negative shape", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", data: 4), "invalid shape"),
        ("fractional shape", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", data: 4), "invalid shape"),
        ("boolean shape", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}", data: 4), "invalid shape"),
        ("overflowing shape", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", data: 4), "overflows"),
        ("size mismatch", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", data: 4), "needs 8 bytes but data_offsets cover 4"),
        ("reversed offsets", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", data: 4), "invalid data_offsets"),
        ("overlap", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data: 8), "overlaps"),
        ("gap", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data: 8), "gap in the data section"),
        ("out of file", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data: 8), "past the end of the data section"),
        ("truncated data", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", data: 16, truncateTo: 66), "past the end of the data section"),
        ("trailing bytes", file(header: "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data: 12), "data section is 12 bytes but the tensors cover 4"),
        ("metadata not strings", file(header: "{\"__metadata__\":{\"k\":1}}"), "__metadata__ value for 'k' is not a string"),
        ("metadata not object", file(header: "{\"__metadata__\":[]}"), "__metadata__ is not an object"),
    ]

    @Test(arguments: cases)
    func corruptFileGivesOneLineError(name: String, bytes: Data, expected: String) throws {
        let path = try Fixtures.temporaryDirectory() + "/bad.safetensors"
        try bytes.write(to: URL(fileURLWithPath: path))
        #expect {
            _ = try SafeTensorsFile(path: path)
        } throws: { error in
            guard let error = error as? InterpError else { return false }
            return error.file == path && error.message.contains(expected) && !error.description.contains("\n")
        }
    }

    @Test func missingFileAndDirectoryAreErrors() throws {
        let dir = try Fixtures.temporaryDirectory()
        #expect(throws: InterpError("cannot open (No such file or directory)", file: dir + "/nope")) {
            _ = try SafeTensorsFile(path: dir + "/nope")
        }
        #expect(throws: InterpError("not a regular file", file: dir)) { _ = try SafeTensorsFile(path: dir) }
    }

    @Test func zeroTensorsIsValid() throws {
        let path = try Fixtures.temporaryDirectory() + "/empty.safetensors"
        try Self.file(header: "{}").write(to: URL(fileURLWithPath: path))
        #expect(try SafeTensorsFile(path: path).entries.isEmpty)
    }
}
