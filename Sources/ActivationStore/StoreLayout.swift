/// The layout of an interp activation store, plain enough for h5py:
///
/// - one float32 dataset per hook, named by its TransformerLens name (`blocks.1.hook_resid_post`), shape
///   `[n_tokens, d]` (`[n_tokens, n_heads, d_head]` for per-head hooks), chunked by rows, extendible, uncompressed
///   unless asked (gzip with byte shuffle);
/// - `tokens`, `sequence`, `position`: int32 `[n_tokens]`, so row i is token `tokens[i]` at position `position[i]`
///   of sequence `sequence[i]` (its index in the input);
/// - root attributes: `format` ("interp-activations"), `format_version`, `interp_version`, `model_name`,
///   `model_format`, `model_weights_hash`, `hook_names` (a JSON array), `source` ("tokens" or "text"),
///   `context_length` (−1 for token input), `prepend_bos`, `exclude_bos`, `bos_token_id` (−1 if none), `n_tokens`,
///   `n_sequences`, and `complete` = 1, written last.
public enum StoreLayout {
    public static let format = "interp-activations"
    public static let formatVersion: Int64 = 1
    public static let tokens = "tokens"
    public static let sequence = "sequence"
    public static let position = "position"
    public static let indexDatasets = [tokens, sequence, position]

    /// Rows per chunk for rows of `rowBytes`: about 4 MiB a chunk, between 64 and 16,384 rows.
    public static func chunkRows(rowBytes: Int) -> Int {
        min(16_384, max(64, (4 << 20) / max(rowBytes, 1)))
    }
}
