import Foundation
import Interp
import InterpTestSupport

/// A copy of a fixture model directory with its config and/or weights edited, for error tests.
func editedModel(_ name: String, config edit: ((inout [String: Any]) -> Void)? = nil,
                 weights editWeights: ((inout [String: Tensor]) -> Void)? = nil) throws -> String {
    let dir = try Fixtures.temporaryDirectory() + "/" + name
    try FileManager.default.copyItem(atPath: Fixtures.model(name), toPath: dir)
    if let edit {
        let path = dir + "/config.json"
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        edit(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    }
    if let editWeights {
        let path = dir + "/model.safetensors"
        let file = try SafeTensorsFile(path: path)
        var tensors: [String: Tensor] = [:]
        for name in file.names { tensors[name] = try file.tensor(name) }
        editWeights(&tensors)
        try SafeTensorsWriter.write(tensors, to: path)
    }
    return dir
}

/// Loading must fail with an InterpError naming `file` (a suffix of its path) and containing `text`.
func loadError(_ dir: String) -> InterpError? {
    do {
        _ = try ModelLoader.load(directory: dir)
        return nil
    } catch {
        return error as? InterpError
    }
}
