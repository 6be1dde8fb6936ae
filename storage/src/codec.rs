//! The one place that turns log records and snapshots into bytes and back.
//!
//! bincode 2.0.1 (final; the crate is no longer developed) behind two functions, with a decode
//! size limit so a damaged length can never make it allocate without bound. Every file format
//! that uses it carries its own version byte (segment and snapshot headers), so the encoding can
//! be replaced (postcard, say) without touching callers.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, StorageError};

/// No encoded record or snapshot may claim more than this many bytes.
pub const MAX_DECODE_BYTES: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes `value`; `what` names it in the error.
pub fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| StorageError::Decode {
        what,
        reason: format!("encoding failed: {e}"),
    })
}

/// How many bytes [`encode`] would produce for `value`, without producing them (a serialization
/// pass that only counts: no allocation, no copy).
pub fn encoded_bytes<T: Serialize>(value: &T, what: &'static str) -> Result<u64> {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config()).map_err(|e| {
        StorageError::Decode {
            what,
            reason: format!("encoding failed: {e}"),
        }
    })?;
    Ok(size.bytes_written as u64)
}

/// A byte string serialized in one piece (serde's `serialize_bytes`): the same bytes as a
/// `Vec<u8>` field (a length, then the bytes), but copied with one `memcpy` instead of one call
/// per byte, which is how serde serializes a `Vec<u8>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Decodes a whole `T` from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| StorageError::Decode {
            what,
            reason: e.to_string(),
        })?;
    if used != bytes.len() {
        return Err(StorageError::Decode {
            what,
            reason: format!("{} trailing bytes", bytes.len() - used),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct ElementByElement {
        key: Vec<u8>,
        value: Vec<u8>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct AsOneSlice {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    }

    /// The byte strings of log entries, snapshots and frames are marked `serde_bytes` (one
    /// `memcpy` instead of a visit per byte, 60% of a loaded leader's CPU before): the encoding
    /// must stay the one logs and peers of earlier versions wrote, both ways.
    #[test]
    fn byte_strings_encode_the_same_as_one_slice_or_element_by_element() {
        for len in [0, 1, 127, 128, 250, 251, 300, 65_535, 65_536, 300_000] {
            let value: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let plain = ElementByElement {
                key: b"k".to_vec(),
                value: value.clone(),
            };
            let sliced = AsOneSlice {
                key: b"k".to_vec(),
                value,
            };
            let plain_bytes = encode(&plain, "test").unwrap();
            let sliced_bytes = encode(&sliced, "test").unwrap();
            assert_eq!(plain_bytes, sliced_bytes, "length {len}");
            assert_eq!(decode::<AsOneSlice>(&plain_bytes, "test").unwrap(), sliced);
            assert_eq!(
                decode::<ElementByElement>(&sliced_bytes, "test").unwrap(),
                plain
            );
        }
    }
}
