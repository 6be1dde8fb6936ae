//! The on-disk framing of one WAL record.
//!
//! Format 3 (what this build writes):
//!
//! ```text
//! +-----------------+-----------------+--------------------+--------------+----------------+----------------------+
//! | payload_len u32 | payload_crc u32 | durable_before u64 | group u64    | header_crc u32 | payload (payload_len)|
//! +-----------------+-----------------+--------------------+--------------+----------------+----------------------+
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
//!
//! `group` names the Raft group the record belongs to, so that one log can later be shared by
//! many groups without another format change. It is a `u64` because Raft group (region) ids are
//! allocated from an ever-growing counter that is never reused (TiKV's region ids are `u64` for
//! the same reason); the 4 bytes a `u32` would save per record are noise next to a payload. It
//! sits inside the header checksum, so a flipped group bit is damage (or a torn write) like any
//! other byte, never a record silently handed to the wrong group.
//!
//! Format 2 (segments written before group ids) is the same without the `group` field (a 20-byte
//! header); it is still read, every record as group 0, and never written
//! ([`RecordFormat::V2`]).

/// Which Raft group a record belongs to. Group 0 is the one group a node holds today.
pub type GroupId = u64;

/// The group of a single-group node, and of every record read from a format-2 segment.
pub const GROUP_ZERO: GroupId = 0;

/// The record framings this build reads. A segment's header says which one its records use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// 20-byte header without a group id (segment format 2): read as group 0, never written.
    V2,
    /// 28-byte header with a group id (segment format 3): what this build writes.
    V3,
}

impl RecordFormat {
    /// Bytes of a record header in this format.
    pub const fn header_bytes(self) -> usize {
        match self {
            RecordFormat::V2 => 20,
            RecordFormat::V3 => RECORD_HEADER_BYTES,
        }
    }

    /// Where the header checksum sits: it covers the bytes before it.
    const fn header_crc_at(self) -> usize {
        self.header_bytes() - 4
    }
}

/// Bytes of a record header as this build writes it (format 3).
pub const RECORD_HEADER_BYTES: usize = 28;
/// Where a format-3 header's checksum sits: it covers the bytes before it.
const HEADER_CRC_AT: usize = RECORD_HEADER_BYTES - 4;

/// Appends one framed record of `group` to `out`, stamped with the writer's durability point.
pub fn encode_record(group: GroupId, payload: &[u8], durable_before: u64, out: &mut Vec<u8>) {
    debug_assert!(!payload.is_empty(), "WAL payloads are never empty");
    let len = u32::try_from(payload.len()).expect("record length checked against max_record_bytes");
    let payload_crc = crc32fast::hash(payload);
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    header[8..16].copy_from_slice(&durable_before.to_le_bytes());
    header[16..24].copy_from_slice(&group.to_le_bytes());
    let header_crc = crc32fast::hash(&header[0..HEADER_CRC_AT]);
    header[HEADER_CRC_AT..].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// The payload length a record header at `offset` claims, if the header is whole and its
/// checksum holds (then the length can be trusted).
pub fn intact_header_len(buf: &[u8], offset: usize, format: RecordFormat) -> Option<usize> {
    let header = buf.get(offset..offset + format.header_bytes())?;
    let crc_at = format.header_crc_at();
    let crc = u32::from_le_bytes([
        header[crc_at],
        header[crc_at + 1],
        header[crc_at + 2],
        header[crc_at + 3],
    ]);
    (crc32fast::hash(&header[0..crc_at]) == crc)
        .then(|| u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize)
}

/// What a scan found at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, checksummed record; `next` is the offset just past it.
    Record {
        group: GroupId,
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

/// Decodes the record in `format` starting at `offset` of `buf`, refusing lengths above
/// `max_record_bytes`.
pub fn decode_record(
    buf: &[u8],
    offset: usize,
    max_record_bytes: usize,
    format: RecordFormat,
) -> Decoded<'_> {
    let rest = &buf[offset..];
    if rest.iter().all(|&byte| byte == 0) {
        return Decoded::ZeroTail;
    }
    let header_bytes = format.header_bytes();
    if rest.len() < header_bytes {
        return Decoded::Incomplete;
    }
    let word = |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
    let long = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&rest[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let crc_at = format.header_crc_at();
    let (len, payload_crc, header_crc) = (word(0), word(4), word(crc_at));
    if crc32fast::hash(&rest[0..crc_at]) != header_crc {
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
    let Some(payload) = rest.get(header_bytes..header_bytes + len) else {
        return Decoded::Incomplete;
    };
    if crc32fast::hash(payload) != payload_crc {
        return Decoded::Invalid {
            reason: "record payload checksum mismatch".into(),
        };
    }
    let group = match format {
        RecordFormat::V2 => GROUP_ZERO,
        RecordFormat::V3 => long(16),
    };
    Decoded::Record {
        group,
        payload,
        durable_before: long(8),
        next: offset + header_bytes + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_is_incomplete() {
        let mut buf = Vec::new();
        encode_record(7, b"hello world", 42, &mut buf);
        assert_eq!(
            decode_record(&buf, 0, 1024, RecordFormat::V3),
            Decoded::Record {
                group: 7,
                payload: b"hello world",
                durable_before: 42,
                next: buf.len()
            }
        );
        for cut in 1..buf.len() {
            assert_eq!(
                decode_record(&buf[..cut], 0, 1024, RecordFormat::V3),
                Decoded::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut clean = Vec::new();
        encode_record(u64::MAX - 1, b"some payload bytes", 7, &mut clean);
        for bit in 0..clean.len() * 8 {
            let mut buf = clean.clone();
            buf[bit / 8] ^= 1 << (bit % 8);
            let decoded = decode_record(&buf, 0, 1024, RecordFormat::V3);
            assert!(
                matches!(decoded, Decoded::Invalid { .. }),
                "bit {bit}: {decoded:?}"
            );
        }
    }

    #[test]
    fn oversized_length_is_invalid_not_incomplete() {
        let mut buf = Vec::new();
        encode_record(GROUP_ZERO, &[7u8; 100], 1, &mut buf);
        assert!(matches!(
            decode_record(&buf, 0, 99, RecordFormat::V3),
            Decoded::Invalid { .. }
        ));
    }

    /// A format-2 record, framed by hand as the previous build wrote it: read as group 0.
    #[test]
    fn a_format_2_record_is_read_as_group_zero() {
        let payload = b"written before group ids";
        let mut header = [0u8; 20];
        header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
        header[8..16].copy_from_slice(&5u64.to_le_bytes());
        let crc = crc32fast::hash(&header[0..16]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        let mut buf = header.to_vec();
        buf.extend_from_slice(payload);
        assert_eq!(
            decode_record(&buf, 0, 1024, RecordFormat::V2),
            Decoded::Record {
                group: GROUP_ZERO,
                payload,
                durable_before: 5,
                next: buf.len()
            }
        );
        // Read in the wrong framing, it is never a record.
        assert!(!matches!(
            decode_record(&buf, 0, 1024, RecordFormat::V3),
            Decoded::Record { .. }
        ));
    }

    /// Each group-id byte is covered by the header checksum.
    #[test]
    fn a_flipped_group_byte_is_invalid() {
        let mut clean = Vec::new();
        encode_record(3, b"payload", 1, &mut clean);
        for byte in 16..24 {
            let mut buf = clean.clone();
            buf[byte] ^= 0x01;
            assert_eq!(
                decode_record(&buf, 0, 1024, RecordFormat::V3),
                Decoded::Invalid {
                    reason: "record header checksum mismatch".into()
                },
                "byte {byte}"
            );
        }
    }
}
