//! The on-disk framing of one WAL record.
//!
//! ```text
//! +----------------+-----------------+--------------------+-----------------+----------------------+
//! | payload_len u32| payload_crc u32 | durable_before u64 | header_crc u32  | payload (payload_len)|
//! +----------------+-----------------+--------------------+-----------------+----------------------+
//! ```
//! All integers little-endian; CRC32 (Castagnoli-free IEEE, via crc32fast). The header has its own
//! checksum so that a flipped bit in the length is detected as corruption instead of looking like
//! a record that runs past the end of the file (which recovery would treat as a torn tail and
//! truncate). Payloads are never empty, so an all-zero header is never valid: a zero-filled tail
//! left by a crash is recognisable.
//!
//! `durable_before` stamps each record with the writer's durability point when it was written:
//! every record with a lower LSN had been fsynced. Recovery uses it to tell a torn write from
//! damage: a bad record followed by a valid one whose stamp is above the bad record's LSN was
//! durable before the later one was written, so it cannot be torn (see `wal.rs`).

/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 20;
/// Where the header checksum sits: it covers the bytes before it.
const HEADER_CRC_AT: usize = 16;

/// Appends one framed record to `out`, stamped with the writer's durability point.
pub fn encode_record(payload: &[u8], durable_before: u64, out: &mut Vec<u8>) {
    debug_assert!(!payload.is_empty(), "WAL payloads are never empty");
    let len = u32::try_from(payload.len()).expect("record length checked against max_record_bytes");
    let payload_crc = crc32fast::hash(payload);
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    header[8..16].copy_from_slice(&durable_before.to_le_bytes());
    let header_crc = crc32fast::hash(&header[0..HEADER_CRC_AT]);
    header[HEADER_CRC_AT..].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// The payload length a record header at `offset` claims, if the header is whole and its
/// checksum holds (then the length can be trusted).
pub fn intact_header_len(buf: &[u8], offset: usize) -> Option<usize> {
    let header = buf.get(offset..offset + RECORD_HEADER_BYTES)?;
    let crc = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    (crc32fast::hash(&header[0..HEADER_CRC_AT]) == crc)
        .then(|| u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize)
}

/// What a scan found at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, checksummed record; `next` is the offset just past it.
    Record {
        payload: &'a [u8],
        durable_before: u64,
        next: usize,
    },
    /// Fewer bytes remain than the header or the payload needs.
    Incomplete,
    /// From this offset to the end of the buffer every byte is zero (a zero-filled tail).
    ZeroTail,
    /// The bytes here are not a valid record.
    Invalid { reason: String },
}

/// Decodes the record starting at `offset` of `buf`, refusing lengths above `max_record_bytes`.
pub fn decode_record(buf: &[u8], offset: usize, max_record_bytes: usize) -> Decoded<'_> {
    let rest = &buf[offset..];
    if rest.iter().all(|&byte| byte == 0) {
        return Decoded::ZeroTail;
    }
    if rest.len() < RECORD_HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let word = |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
    let (len, payload_crc, header_crc) = (word(0), word(4), word(HEADER_CRC_AT));
    if crc32fast::hash(&rest[0..HEADER_CRC_AT]) != header_crc {
        return Decoded::Invalid {
            reason: "record header checksum mismatch".into(),
        };
    }
    let len = len as usize;
    if len == 0 || len > max_record_bytes {
        return Decoded::Invalid {
            reason: format!("impossible record length {len} (limit {max_record_bytes})"),
        };
    }
    let Some(payload) = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len) else {
        return Decoded::Incomplete;
    };
    if crc32fast::hash(payload) != payload_crc {
        return Decoded::Invalid {
            reason: "record payload checksum mismatch".into(),
        };
    }
    let mut stamp = [0u8; 8];
    stamp.copy_from_slice(&rest[8..16]);
    Decoded::Record {
        payload,
        durable_before: u64::from_le_bytes(stamp),
        next: offset + RECORD_HEADER_BYTES + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_is_incomplete() {
        let mut buf = Vec::new();
        encode_record(b"hello world", 42, &mut buf);
        assert_eq!(
            decode_record(&buf, 0, 1024),
            Decoded::Record {
                payload: b"hello world",
                durable_before: 42,
                next: buf.len()
            }
        );
        for cut in 1..buf.len() {
            assert_eq!(
                decode_record(&buf[..cut], 0, 1024),
                Decoded::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut clean = Vec::new();
        encode_record(b"some payload bytes", 7, &mut clean);
        for bit in 0..clean.len() * 8 {
            let mut buf = clean.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            let decoded = decode_record(&buf, 0, 1024);
            assert!(
                matches!(decoded, Decoded::Invalid { .. }),
                "bit {bit}: {decoded:?}"
            );
        }
    }

    #[test]
    fn oversized_length_is_invalid_not_incomplete() {
        let mut buf = Vec::new();
        encode_record(&[7u8; 100], 1, &mut buf);
        assert!(matches!(
            decode_record(&buf, 0, 99),
            Decoded::Invalid { .. }
        ));
    }
}
