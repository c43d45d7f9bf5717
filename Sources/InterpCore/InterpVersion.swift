/// interp's version, recorded in every file it writes.
public enum InterpVersion {
    public static let current = "0.1.0"
}
