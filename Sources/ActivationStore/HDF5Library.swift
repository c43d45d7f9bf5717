import CHDF5
import InterpCore

/// The HDF5 C library interp is linked against (`interp --version` prints it).
public enum HDF5Library {
    public static func version() throws -> String {
        var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
        guard H5get_libversion(&major, &minor, &release) >= 0 else { throw InterpError("HDF5 did not report its version") }
        return "\(major).\(minor).\(release)"
    }
}
