import CHDF5
import Foundation
import InterpCore

/// Thin, checked access to the HDF5 C library. Every identifier is owned by an object that closes it; every call's
/// status is checked and a failure becomes a one-line `InterpError` naming the file.
enum HDF5 {
    /// HDF5 prints its error stack unless told not to, and (thread-safe build) that switch is per thread: every entry
    /// point calls this first, which switches the printing off once per thread.
    static func enter() {
        let key = "interp.hdf5.silenced"
        let local = Thread.current.threadDictionary
        if local[key] == nil {
            _ = H5open()
            _ = interp_h5_silence_errors()
            local[key] = true
        }
    }

    static func check(_ status: herr_t, _ what: @autoclosure () -> String, file: String) throws {
        if status < 0 { throw InterpError(what(), file: file) }
    }

    static func check(_ id: hid_t, _ what: @autoclosure () -> String, file: String) throws -> hid_t {
        if id < 0 { throw InterpError(what(), file: file) }
        return id
    }
}

/// An HDF5 identifier closed by `close` when the owner goes away.
final class HDF5Handle {
    let id: hid_t
    private let closer: (hid_t) -> herr_t

    init(_ id: hid_t, close: @escaping (hid_t) -> herr_t) {
        self.id = id
        closer = close
    }

    deinit { _ = closer(id) }
}

/// An open HDF5 file.
public final class HDF5File {
    public let path: String
    let handle: HDF5Handle
    public let writable: Bool

    /// Creates a new file (failing if it exists unless `truncate`).
    public init(creating path: String, truncate: Bool = false) throws {
        HDF5.enter()
        let fapl = HDF5Handle(try HDF5.check(H5Pcreate(interp_h5p_file_access()), "cannot create file-access properties", file: path), close: H5Pclose)
        try HDF5.check(H5Pset_libver_bounds(fapl.id, H5F_LIBVER_EARLIEST, H5F_LIBVER_V110), "cannot set the file format version", file: path)
        let flags = truncate ? interp_h5f_acc_trunc() : interp_h5f_acc_excl()
        let id = H5Fcreate(path, flags, interp_h5p_default(), fapl.id)
        guard id >= 0 else {
            throw InterpError(FileManager.default.fileExists(atPath: path) ? "cannot create: the file exists" : "cannot create the HDF5 file", file: path)
        }
        self.path = path
        handle = HDF5Handle(id, close: H5Fclose)
        writable = true
    }

    /// Opens an existing file read-only.
    public init(reading path: String) throws {
        HDF5.enter()
        guard FileManager.default.fileExists(atPath: path) else { throw InterpError("no such file", file: path) }
        guard H5Fis_hdf5(path) > 0 else { throw InterpError("not an HDF5 file", file: path) }
        let id = H5Fopen(path, interp_h5f_acc_rdonly(), interp_h5p_default())
        guard id >= 0 else { throw InterpError("HDF5 could not open it (truncated or damaged)", file: path) }
        self.path = path
        handle = HDF5Handle(id, close: H5Fclose)
        writable = false
    }

    public func flush() throws {
        HDF5.enter()
        try HDF5.check(H5Fflush(handle.id, H5F_SCOPE_GLOBAL), "flush failed", file: path)
    }

    /// Names of the datasets at the root, sorted.
    public func datasetNames() throws -> [String] {
        HDF5.enter()
        final class Names { var list: [String] = [] }
        let names = Names()
        var index: hsize_t = 0
        let status = withUnsafeMutablePointer(to: &index) { indexPointer in
            H5Literate(handle.id, H5_INDEX_NAME, H5_ITER_INC, indexPointer, { group, name, _, data in
                guard let name, let data else { return 0 }
                var info = H5O_info_t()
                if H5Oget_info_by_name2(group, name, &info, UInt32(H5O_INFO_BASIC), interp_h5p_default()) >= 0, info.type == H5O_TYPE_DATASET {
                    Unmanaged<Names>.fromOpaque(data).takeUnretainedValue().list.append(String(cString: name))
                }
                return 0
            }, Unmanaged.passUnretained(names).toOpaque())
        }
        try HDF5.check(status, "cannot list the datasets", file: path)
        return names.list
    }

    public func exists(_ name: String) -> Bool {
        HDF5.enter()
        return H5Lexists(handle.id, name, interp_h5p_default()) > 0
    }

    // MARK: Attributes on the root group

    public func setAttribute(_ name: String, string value: String) throws {
        HDF5.enter()
        let type = HDF5Handle(try HDF5.check(H5Tcopy(interp_h5t_c_s1()), "cannot make a string type", file: path), close: H5Tclose)
        try HDF5.check(H5Tset_size(type.id, interp_h5t_variable()), "cannot make a string type", file: path)
        try HDF5.check(H5Tset_cset(type.id, H5T_CSET_UTF8), "cannot make a string type", file: path)
        let space = HDF5Handle(try HDF5.check(H5Screate(H5S_SCALAR), "cannot make a dataspace", file: path), close: H5Sclose)
        try replaceAttribute(name)
        let attribute = HDF5Handle(try HDF5.check(H5Acreate2(handle.id, name, type.id, space.id, interp_h5p_default(), interp_h5p_default()),
                                                  "cannot create attribute '\(name)'", file: path), close: H5Aclose)
        try value.withCString { pointer in
            var p: UnsafePointer<CChar>? = pointer
            try HDF5.check(H5Awrite(attribute.id, type.id, &p), "cannot write attribute '\(name)'", file: path)
        }
    }

    public func setAttribute(_ name: String, integer value: Int64) throws {
        HDF5.enter()
        let space = HDF5Handle(try HDF5.check(H5Screate(H5S_SCALAR), "cannot make a dataspace", file: path), close: H5Sclose)
        try replaceAttribute(name)
        let attribute = HDF5Handle(try HDF5.check(H5Acreate2(handle.id, name, interp_h5t_std_i64le(), space.id, interp_h5p_default(), interp_h5p_default()),
                                                  "cannot create attribute '\(name)'", file: path), close: H5Aclose)
        var v = value
        try HDF5.check(H5Awrite(attribute.id, interp_h5t_native_int64(), &v), "cannot write attribute '\(name)'", file: path)
    }

    private func replaceAttribute(_ name: String) throws {
        if H5Aexists(handle.id, name) > 0 {
            try HDF5.check(H5Adelete(handle.id, name), "cannot replace attribute '\(name)'", file: path)
        }
    }

    public func hasAttribute(_ name: String) -> Bool {
        HDF5.enter()
        return H5Aexists(handle.id, name) > 0
    }

    public func stringAttribute(_ name: String) throws -> String? {
        HDF5.enter()
        guard H5Aexists(handle.id, name) > 0 else { return nil }
        let attribute = HDF5Handle(try HDF5.check(H5Aopen(handle.id, name, interp_h5p_default()), "cannot open attribute '\(name)'", file: path), close: H5Aclose)
        let stored = HDF5Handle(try HDF5.check(H5Aget_type(attribute.id), "cannot read attribute '\(name)'", file: path), close: H5Tclose)
        guard H5Tget_class(stored.id) == H5T_STRING else { throw InterpError("attribute '\(name)' is not a string", file: path) }
        let type = HDF5Handle(try HDF5.check(H5Tcopy(interp_h5t_c_s1()), "cannot make a string type", file: path), close: H5Tclose)
        try HDF5.check(H5Tset_cset(type.id, H5Tget_cset(stored.id)), "cannot make a string type", file: path)
        if H5Tis_variable_str(stored.id) > 0 {
            try HDF5.check(H5Tset_size(type.id, interp_h5t_variable()), "cannot make a string type", file: path)
            var pointer: UnsafeMutablePointer<CChar>?
            try HDF5.check(H5Aread(attribute.id, type.id, &pointer), "cannot read attribute '\(name)'", file: path)
            defer { if let pointer { H5free_memory(pointer) } }
            return pointer.map { String(cString: $0) } ?? ""
        }
        let size = H5Tget_size(stored.id)
        try HDF5.check(H5Tset_size(type.id, size + 1), "cannot make a string type", file: path)
        var buffer = [CChar](repeating: 0, count: size + 1)
        try HDF5.check(H5Aread(attribute.id, type.id, &buffer), "cannot read attribute '\(name)'", file: path)
        return String(cString: buffer)
    }

    public func integerAttribute(_ name: String) throws -> Int64? {
        HDF5.enter()
        guard H5Aexists(handle.id, name) > 0 else { return nil }
        let attribute = HDF5Handle(try HDF5.check(H5Aopen(handle.id, name, interp_h5p_default()), "cannot open attribute '\(name)'", file: path), close: H5Aclose)
        var value: Int64 = 0
        try HDF5.check(H5Aread(attribute.id, interp_h5t_native_int64(), &value), "attribute '\(name)' is not an integer", file: path)
        return value
    }
}

/// Element types interp stores.
public enum StoredType: Sendable {
    case float32, int32

    var fileType: hid_t { self == .float32 ? interp_h5t_ieee_f32le() : interp_h5t_std_i32le() }
    var memoryType: hid_t { self == .float32 ? interp_h5t_native_float() : interp_h5t_native_int32() }
}

/// A dataset whose first axis is rows: `[n, trailing...]`.
public final class HDF5Dataset {
    public let file: HDF5File
    public let name: String
    let handle: HDF5Handle
    /// Full shape; `shape[0]` is the row count.
    public private(set) var shape: [Int]
    public var rows: Int { shape[0] }
    /// Elements per row (product of the trailing dimensions).
    public var rowWidth: Int { shape.dropFirst().reduce(1, *) }

    var describe: String { "dataset '\(name)'" }

    /// Creates an extendible dataset with `rowShape` per row, chunked by `chunkRows` rows.
    public init(creating name: String, in file: HDF5File, type: StoredType, rowShape: [Int], chunkRows: Int, gzipLevel: Int? = nil) throws {
        HDF5.enter()
        let path = file.path
        let dims = [hsize_t(0)] + rowShape.map { hsize_t($0) }
        let maxDims = [interp_h5s_unlimited()] + rowShape.map { hsize_t($0) }
        let space = HDF5Handle(try HDF5.check(H5Screate_simple(Int32(dims.count), dims, maxDims), "cannot make a dataspace", file: path), close: H5Sclose)
        let dcpl = HDF5Handle(try HDF5.check(H5Pcreate(interp_h5p_dataset_create()), "cannot make dataset properties", file: path), close: H5Pclose)
        let chunk = [hsize_t(max(chunkRows, 1))] + rowShape.map { hsize_t(max($0, 1)) }
        try HDF5.check(H5Pset_chunk(dcpl.id, Int32(chunk.count), chunk), "cannot set chunking", file: path)
        try HDF5.check(H5Pset_fill_time(dcpl.id, H5D_FILL_TIME_NEVER), "cannot set fill time", file: path)
        if let gzipLevel {
            try HDF5.check(H5Pset_shuffle(dcpl.id), "cannot enable shuffle", file: path)
            try HDF5.check(H5Pset_deflate(dcpl.id, UInt32(gzipLevel)), "cannot enable gzip", file: path)
        }
        let id = H5Dcreate2(file.handle.id, name, type.fileType, space.id, interp_h5p_default(), dcpl.id, interp_h5p_default())
        self.file = file
        self.name = name
        handle = HDF5Handle(try HDF5.check(id, "cannot create dataset '\(name)'", file: path), close: H5Dclose)
        shape = [0] + rowShape
    }

    /// Opens an existing dataset.
    public init(opening name: String, in file: HDF5File) throws {
        HDF5.enter()
        let path = file.path
        guard file.exists(name) else { throw InterpError("no dataset named '\(name)'", file: path) }
        let id = H5Dopen2(file.handle.id, name, interp_h5p_default())
        self.file = file
        self.name = name
        handle = HDF5Handle(try HDF5.check(id, "cannot open dataset '\(name)'", file: path), close: H5Dclose)
        let space = HDF5Handle(try HDF5.check(H5Dget_space(handle.id), "cannot read the shape of '\(name)'", file: path), close: H5Sclose)
        let rank = Int(H5Sget_simple_extent_ndims(space.id))
        guard rank >= 0 else { throw InterpError("cannot read the shape of '\(name)'", file: path) }
        var dims = [hsize_t](repeating: 0, count: max(rank, 1))
        try HDF5.check(H5Sget_simple_extent_dims(space.id, &dims, nil), "cannot read the shape of '\(name)'", file: path)
        shape = rank == 0 ? [] : dims.prefix(rank).map { Int($0) }
    }

    /// Whether the dataset passes its chunks through filters (compression).
    public func isFiltered() throws -> Bool {
        HDF5.enter()
        let plist = HDF5Handle(try HDF5.check(H5Dget_create_plist(handle.id), "cannot read the layout of '\(name)'", file: file.path), close: H5Pclose)
        return H5Pget_nfilters(plist.id) > 0
    }

    /// The stored element class and size: ("float", 4), ("integer", 4), …
    public func storedType() throws -> (isFloat: Bool, isInteger: Bool, bytes: Int) {
        HDF5.enter()
        let type = HDF5Handle(try HDF5.check(H5Dget_type(handle.id), "cannot read the type of '\(name)'", file: file.path), close: H5Tclose)
        let typeClass = H5Tget_class(type.id)
        return (typeClass == H5T_FLOAT, typeClass == H5T_INTEGER, H5Tget_size(type.id))
    }

    /// Appends `count` rows from `values` (row-major, `count × rowWidth` elements of the memory type).
    public func append(_ values: UnsafeRawPointer, rows count: Int, type: StoredType) throws {
        HDF5.enter()
        guard count > 0 else { return }
        let start = rows
        var newDims = shape.map { hsize_t($0) }
        newDims[0] = hsize_t(start + count)
        try HDF5.check(H5Dset_extent(handle.id, newDims), "cannot extend \(describe)", file: file.path)
        shape[0] = start + count
        try write(values, at: start, rows: count, type: type)
    }

    func write(_ values: UnsafeRawPointer, at start: Int, rows count: Int, type: StoredType) throws {
        let (fileSpace, memorySpace) = try selection(start: start, count: count)
        try HDF5.check(H5Dwrite(handle.id, type.memoryType, memorySpace.id, fileSpace.id, interp_h5p_default(), values),
                       "cannot write rows \(start)..<\(start + count) of \(describe)", file: file.path)
    }

    /// Reads rows `start..<start+count` converted to the memory type (float32 or int32).
    public func read(rows range: Range<Int>, into destination: UnsafeMutableRawPointer, type: StoredType) throws {
        HDF5.enter()
        guard !range.isEmpty else { return }
        guard range.lowerBound >= 0, range.upperBound <= rows else {
            throw InterpError("rows \(range) are outside \(describe) (\(rows) rows)", file: file.path)
        }
        let (fileSpace, memorySpace) = try selection(start: range.lowerBound, count: range.count)
        try HDF5.check(H5Dread(handle.id, type.memoryType, memorySpace.id, fileSpace.id, interp_h5p_default(), destination),
                       "cannot read rows \(range) of \(describe) (damaged file?)", file: file.path)
    }

    private func selection(start: Int, count: Int) throws -> (HDF5Handle, HDF5Handle) {
        let path = file.path
        let fileSpace = HDF5Handle(try HDF5.check(H5Dget_space(handle.id), "cannot select rows of \(describe)", file: path), close: H5Sclose)
        let offset = [hsize_t(start)] + shape.dropFirst().map { _ in hsize_t(0) }
        let counts = [hsize_t(count)] + shape.dropFirst().map { hsize_t($0) }
        try HDF5.check(H5Sselect_hyperslab(fileSpace.id, H5S_SELECT_SET, offset, nil, counts, nil), "cannot select rows of \(describe)", file: path)
        let memorySpace = HDF5Handle(try HDF5.check(H5Screate_simple(Int32(counts.count), counts, nil), "cannot make a dataspace", file: path), close: H5Sclose)
        return (fileSpace, memorySpace)
    }

    /// Sets a string attribute on the dataset.
    public func setAttribute(_ attributeName: String, string value: String) throws {
        HDF5.enter()
        let path = file.path
        let type = HDF5Handle(try HDF5.check(H5Tcopy(interp_h5t_c_s1()), "cannot make a string type", file: path), close: H5Tclose)
        try HDF5.check(H5Tset_size(type.id, interp_h5t_variable()), "cannot make a string type", file: path)
        try HDF5.check(H5Tset_cset(type.id, H5T_CSET_UTF8), "cannot make a string type", file: path)
        let space = HDF5Handle(try HDF5.check(H5Screate(H5S_SCALAR), "cannot make a dataspace", file: path), close: H5Sclose)
        let attribute = HDF5Handle(try HDF5.check(H5Acreate2(handle.id, attributeName, type.id, space.id, interp_h5p_default(), interp_h5p_default()),
                                                  "cannot create attribute '\(attributeName)' on \(describe)", file: path), close: H5Aclose)
        try value.withCString { pointer in
            var p: UnsafePointer<CChar>? = pointer
            try HDF5.check(H5Awrite(attribute.id, type.id, &p), "cannot write attribute '\(attributeName)'", file: path)
        }
    }
}
