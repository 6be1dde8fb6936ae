//! The wire protocol between clients, nodes and peers.
//!
//! A connection opens with a fixed handshake ([`Handshake`]: magic, protocol version, role), then
//! carries length-delimited frames (a `u32` big-endian length, then a bincode body, see
//! [`encode_frame`] / [`decode_frame`]). Every frame is bounded by [`Limits::max_frame_bytes`]; a
//! longer length is refused before any byte of it is buffered. Requests carry an id so a
//! connection can pipeline them; responses may come back in any order.
//!
//! Peer connections (node to node Raft traffic) share the port and the framing; their handshake
//! names the sending node and is followed by an HMAC challenge proving both sides know the
//! cluster secret; their frame bodies (Raft messages, large ones in chunks) are defined by the
//! server. Version 4 added the challenge and the chunks.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bumped whenever a frame's encoding changes; a peer speaking another version is refused.
pub const PROTOCOL_VERSION: u8 = 4;
const MAGIC: &[u8; 3] = b"RLG";
/// Bytes of a handshake.
pub const HANDSHAKE_BYTES: usize = 13;

/// Size limits of requests; both sides enforce them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_frame_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 64 * 1024,
            max_value_bytes: 4 * 1024 * 1024,
            // A value, an expected value (cas) and a key, plus framing.
            max_frame_bytes: 8 * 1024 * 1024 + 128 * 1024,
        }
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    /// Another node, sending Raft messages.
    Peer {
        node_id: u64,
    },
}

/// The first bytes of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    pub version: u8,
    pub role: Role,
}

impl Handshake {
    /// A handshake of this build's protocol version.
    pub fn new(role: Role) -> Self {
        Handshake {
            version: PROTOCOL_VERSION,
            role,
        }
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_BYTES] {
        let mut bytes = [0u8; HANDSHAKE_BYTES];
        bytes[0..3].copy_from_slice(MAGIC);
        bytes[3] = self.version;
        let (role, node_id) = match self.role {
            Role::Client => (0u8, 0u64),
            Role::Peer { node_id } => (1u8, node_id),
        };
        bytes[4] = role;
        bytes[5..13].copy_from_slice(&node_id.to_le_bytes());
        bytes
    }

    /// Parses a handshake; the version is returned as sent, for the caller to check.
    pub fn decode(bytes: &[u8; HANDSHAKE_BYTES]) -> Result<Self, String> {
        if &bytes[0..3] != MAGIC {
            return Err("not a ringleader connection (bad magic)".into());
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[5..13]);
        let role = match bytes[4] {
            0 => Role::Client,
            1 => Role::Peer {
                node_id: u64::from_le_bytes(id),
            },
            other => return Err(format!("unknown connection role {other}")),
        };
        Ok(Handshake {
            version: bytes[3],
            role,
        })
    }
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// Linearizable: the leader confirms it still leads (ReadIndex) before answering.
    #[default]
    Linearizable,
    /// Linearizable through a leader lease: no round trip, assumes bounded clock drift.
    Lease,
    /// Whatever the contacted node has applied: fast, possibly stale.
    Stale,
}

/// What a compare-and-swap requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    Value(Vec<u8>),
    Version(u64),
    Absent,
}

/// Exactly-once identity of a write (Raft thesis §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub client_id: u64,
    pub seq: u64,
    pub first_unacked_seq: u64,
}

/// An operation a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Get {
        key: Vec<u8>,
        consistency: ReadConsistency,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        session: Option<Session>,
    },
    Delete {
        key: Vec<u8>,
        session: Option<Session>,
    },
    Cas {
        key: Vec<u8>,
        expect: Expect,
        new_value: Vec<u8>,
        session: Option<Session>,
    },
    /// The node's view of itself and its group.
    Status,
    /// Open an exactly-once session (a log entry); the answer is `SessionRegistered`.
    RegisterSession,
}

impl Request {
    /// Checks the request against `limits` before it is sent or acted on.
    pub fn check(&self, limits: &Limits) -> Result<(), String> {
        let (key, values): (&[u8], Vec<&[u8]>) = match self {
            Request::Get { key, .. } | Request::Delete { key, .. } => (key, vec![]),
            Request::Put { key, value, .. } => (key, vec![value]),
            Request::Cas {
                key,
                expect,
                new_value,
                ..
            } => match expect {
                Expect::Value(expected) => (key, vec![new_value, expected]),
                _ => (key, vec![new_value]),
            },
            Request::Status | Request::RegisterSession => return Ok(()),
        };
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        if key.len() > limits.max_key_bytes {
            return Err(format!(
                "key of {} bytes exceeds the limit of {} bytes",
                key.len(),
                limits.max_key_bytes
            ));
        }
        for value in values {
            if value.len() > limits.max_value_bytes {
                return Err(format!(
                    "value of {} bytes exceeds the limit of {} bytes",
                    value.len(),
                    limits.max_value_bytes
                ));
            }
        }
        Ok(())
    }

    /// Whether the request changes data.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Put { .. } | Request::Delete { .. } | Request::Cas { .. }
        )
    }
}

/// A value with the version (log index) of the write that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

/// Kinds of failure a node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No leader, or no quorum, right now: retry (the write did not happen).
    Unavailable,
    /// The request was proposed but leadership changed before it committed: it may or may not
    /// have happened. Retrying with the same session is safe.
    Unknown,
    /// The request breaks a limit or is malformed; retrying will not help.
    Invalid,
    /// The session expired before this retry arrived; the outcome is unknown.
    SessionExpired,
    /// The node is shutting down.
    ShuttingDown,
    /// A bug or a disk failure on the node.
    Internal,
    /// The node's disk is full: the write was not applied (certainly), and writes will succeed
    /// again once space is freed. Reads keep working.
    DiskFull,
}

/// One peer's replication state as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub node: u64,
    pub match_index: u64,
    pub last_heard_ms: Option<u64>,
    /// The leader sees this replica falling further behind: its lag has grown over the last
    /// several status checks and exceeds a snapshot's worth of entries (the group is degraded).
    pub lagging: bool,
}

/// A node's answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    pub addr: String,
    pub data_dir: String,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The index of the last entry in this node's log.
    pub last_index: u64,
    /// The index the node's newest snapshot covers (taken locally or installed from the leader).
    pub snapshot_index: u64,
    /// Snapshots received from a leader (InstallSnapshot) since this node started.
    pub snapshots_installed: u64,
    pub log_bytes: u64,
    pub keys: u64,
    /// A digest of the state machine at `applied_index`: replicas that applied the same log
    /// report the same digest (the simulation compares them after healing).
    pub digest: u64,
    /// Filled in by the leader only.
    pub replicas: Vec<ReplicaStatus>,
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Value(Option<Versioned>),
    Written {
        version: u64,
    },
    Deleted {
        existed: bool,
    },
    CasMismatch {
        current: Option<Versioned>,
    },
    /// This node does not lead; the leader, if known, is at this address.
    NotLeader {
        leader: Option<u64>,
        leader_addr: Option<String>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    Status(Box<NodeStatus>),
    /// A session was opened with this id.
    SessionRegistered {
        client_id: u64,
    },
}

/// A request with its connection-local id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    pub request: Request,
}

/// A response to the request with the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u64,
    pub response: Response,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_round_trips_and_rejects_garbage() {
        let handshake = Handshake::new(Role::Peer { node_id: 7 });
        assert_eq!(Handshake::decode(&handshake.encode()).unwrap(), handshake);
        let mut bad = handshake.encode();
        bad[0] = b'X';
        assert!(Handshake::decode(&bad).is_err());
        bad = handshake.encode();
        bad[4] = 9;
        assert!(Handshake::decode(&bad).is_err());
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits::default();
        let put = |key_len, value_len| Request::Put {
            key: vec![1; key_len],
            value: vec![2; value_len],
            session: None,
        };
        assert!(put(1, 0).check(&limits).is_ok());
        assert!(put(0, 1).check(&limits).is_err());
        assert!(put(limits.max_key_bytes + 1, 1).check(&limits).is_err());
        assert!(put(1, limits.max_value_bytes + 1).check(&limits).is_err());
        assert!(put(limits.max_key_bytes, limits.max_value_bytes)
            .check(&limits)
            .is_ok());
    }

    #[test]
    fn truncated_or_padded_frames_are_refused() {
        let frame = RequestFrame {
            id: 3,
            request: Request::Get {
                key: b"k".to_vec(),
                consistency: ReadConsistency::Linearizable,
            },
        };
        let bytes = encode_frame(&frame).unwrap();
        assert_eq!(decode_frame::<RequestFrame>(&bytes).unwrap(), frame);
        for cut in 0..bytes.len() {
            assert!(
                decode_frame::<RequestFrame>(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode_frame::<RequestFrame>(&padded).is_err());
    }

    #[test]
    fn bodies_over_16_mib_decode_with_a_limit_that_fits() {
        let value: Vec<u8> = vec![7; 20 * 1024 * 1024];
        let bytes = encode_frame(&value).unwrap();
        assert!(
            decode_frame::<Vec<u8>>(&bytes).is_err(),
            "the client limit refuses it"
        );
        assert_eq!(decode_large_frame::<Vec<u8>>(&bytes).unwrap(), value);
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode_large_frame::<Vec<u8>>(&padded).is_err());
        // A short body claiming a huge vector is refused, not allocated.
        let claim = encode_frame(&(u64::MAX / 2)).unwrap();
        assert!(decode_large_frame::<Vec<u8>>(&claim).is_err());
    }
}
