import ActivationStore
import Testing

@Suite struct HDF5LibraryTests {
    /// The build links the HDF5 C library (the activation store's foundation) and can call into it.
    @Test func reportsLinkedVersion() throws {
        let parts = try HDF5Library.version().split(separator: ".").compactMap { Int($0) }
        #expect(parts.count == 3)
        #expect(parts[0] == 1 && parts[1] >= 10)
    }
}
