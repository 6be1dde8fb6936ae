//! Frame bodies (bincode, whole bodies only) and the length-delimited framing around them.

use serde::de::DeserializeOwned;
use serde::Serialize;

fn config() -> impl bincode::config::Config {
    // Frames are already bounded by the length prefix; the limit guards nested lengths.
    bincode::config::standard().with_limit::<{ 16 * 1024 * 1024 }>()
}

/// Encodes a frame body.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| e.to_string())
}

/// Decodes a whole frame body; trailing bytes are refused.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    decode_with(bytes, config())
}

/// The largest body [`decode_large_frame`] accepts.
pub const MAX_LARGE_FRAME_BYTES: usize = 512 * 1024 * 1024;

fn decode_with<T: DeserializeOwned, C: bincode::config::Config>(
    bytes: &[u8],
    config: C,
) -> Result<T, String> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the frame body",
            bytes.len() - used
        ));
    }
    Ok(value)
}

/// Decodes a body that may be larger than [`decode_frame`]'s 16 MiB limit (a reassembled
/// snapshot from a peer), with the smallest limit that fits it: the limit bounds what nested
/// lengths may claim, so a body can never make the decoder allocate much more than its own size.
pub fn decode_large_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    const MIB: usize = 1024 * 1024;
    let standard = bincode::config::standard();
    match bytes.len() {
        len if len <= 16 * MIB => decode_frame(bytes),
        len if len <= 64 * MIB => decode_with(bytes, standard.with_limit::<{ 64 * MIB }>()),
        len if len <= 256 * MIB => decode_with(bytes, standard.with_limit::<{ 256 * MIB }>()),
        len if len <= MAX_LARGE_FRAME_BYTES => {
            decode_with(bytes, standard.with_limit::<{ MAX_LARGE_FRAME_BYTES }>())
        }
        len => Err(format!(
            "body of {len} bytes exceeds the limit of {MAX_LARGE_FRAME_BYTES} bytes"
        )),
    }
}

/// The length-delimited framing, bounded by `max_frame_bytes`.
pub fn frame_codec(max_frame_bytes: usize) -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec()
}
