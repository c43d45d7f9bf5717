import Foundation

/// Writes a file all or nothing: into a temporary file in the same directory, fsync, then rename over `path`.
/// On any error the temporary file is removed and `path` is untouched.
public enum AtomicFile {
    public typealias Sink = (UnsafeRawBufferPointer) throws -> Void

    public static func write(to path: String, _ produce: (Sink) throws -> Void) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = (directory.isEmpty ? "." : directory) + "/.\((path as NSString).lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else { throw InterpError("cannot create (\(String(cString: strerror(errno))))", file: path) }
        var closed = false
        do {
            try produce { bytes in
                var done = 0
                while done < bytes.count {
                    let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw InterpError("write failed (\(String(cString: strerror(errno))))", file: path)
                    }
                    done += n
                }
            }
            guard fsync(fd) == 0 else { throw InterpError("fsync failed (\(String(cString: strerror(errno))))", file: path) }
            closed = true
            guard close(fd) == 0 else { throw InterpError("close failed (\(String(cString: strerror(errno))))", file: path) }
            guard rename(temporary, path) == 0 else {
                throw InterpError("cannot rename into place (\(String(cString: strerror(errno))))", file: path)
            }
        } catch {
            if !closed { close(fd) }
            unlink(temporary)
            throw error
        }
    }

    /// Convenience: writes `data` atomically.
    public static func write(_ data: Data, to path: String) throws {
        try write(to: path) { sink in try data.withUnsafeBytes { try sink($0) } }
    }
}
