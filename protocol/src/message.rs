//! What a client asks and a node answers: requests, responses, their frames (an id and a
//! [`Header`] naming the Raft group and routing epoch), and the size limits both sides enforce.

use serde::{Deserialize, Serialize};

use crate::ring::{HashRange, RingSpec};

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

/// How fresh a read must be, and so which replica may answer it and what it costs
/// (docs/consistency.md has each level's guarantee, price and anomaly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ReadConsistency {
    /// Linearizable: the leader confirms it still leads (ReadIndex: a heartbeat round shared
    /// with the reads arriving at the same time) before answering.
    #[default]
    Linearizable,
    /// Linearizable through the leader's lease: the leader answers alone, no round trip, while
    /// a quorum acknowledged it within the lease (shorter than the election timeout by the
    /// clock-drift bound). Falls back to a ReadIndex round when the lease does not hold; the
    /// receipt says which served it.
    Lease,
    /// Read-your-writes and monotonic reads: any replica that has applied at least
    /// `min_index` (the client's session position: the highest index its replies showed it).
    Session { min_index: u64 },
    /// Whatever the contacted replica has applied: answers while that replica is reachable,
    /// possibly stale. With `max_staleness_ms`, refused (`Unavailable`) rather than answered
    /// when the replica cannot promise its state is at most that old.
    Stale { max_staleness_ms: Option<u64> },
}

impl ReadConsistency {
    /// Whether only the leader may answer (a follower redirects the client to it).
    pub fn needs_leader(&self) -> bool {
        matches!(self, ReadConsistency::Linearizable | ReadConsistency::Lease)
    }
}

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WriteAck {
    /// Once committed: durable on a majority and applied on the leader. Survives any minority
    /// of crashes.
    #[default]
    Majority,
    /// Once every replica of the group has applied it: a read at any replica afterwards sees
    /// it. Fails with [`ErrorKind::AckTimeout`] (the write still commits) while one is down.
    All,
    /// Once durable on the leader alone, before any follower has it: faster, and **lost** if
    /// that leader dies before replicating it. Puts only (the outcome of a delete or a
    /// compare-and-set is not known before it is applied).
    Leader,
}

/// The level a reply was actually served at (see [`Receipt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServedAt {
    Linearizable,
    Lease,
    Session,
    Stale,
    Majority,
    All,
    Leader,
}

/// What a reply can prove about its own consistency: the level actually served, by which
/// node, and the Raft term and log index the answer reflects (for a read, the replica's
/// applied index; for a write, the entry's index). A client keeps its session position from
/// these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub served_at: ServedAt,
    pub node: u64,
    pub term: u64,
    pub index: u64,
    /// Stale and session reads: an upper bound on how far behind the cluster's committed
    /// state the answer may be (`None`: the replica cannot bound it, e.g. it never heard a
    /// leader). Measured from the last leader message whose commit the replica had applied, so
    /// it leaves out that message's transit time.
    pub staleness_bound_ms: Option<u64>,
    /// The node that took the client's request and forwarded it to the node that served it
    /// (`None`: served where it arrived). A client that routes well sees `None`.
    pub forwarded_by: Option<u64>,
}

/// What a compare-and-swap requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Version(u64),
    Absent,
}

/// Session ids from here up are chosen by clients (see [`Session::opened_after`]); ids below
/// are the log indexes of [`Request::RegisterSession`] entries. The same constant as
/// `storage::kv::CLIENT_CHOSEN_SESSION_IDS`, which the node checks when it compiles.
pub const CLIENT_CHOSEN_SESSION_IDS: u64 = 1 << 63;

/// Exactly-once identity of a write (Raft thesis §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub client_id: u64,
    pub seq: u64,
    pub first_unacked_seq: u64,
    /// `Some(index)`: the client chose `client_id` itself (at or above
    /// [`CLIENT_CHOSEN_SESSION_IDS`]) and this write opens the session if the group
    /// does not hold it, in the same log entry; `index` is a log index of the group the client
    /// saw before it first sent the write. `None`: the session must exist already (registered
    /// with [`Request::RegisterSession`], or opened by an earlier write).
    pub opened_after: Option<u64>,
}

/// An operation a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Get {
        key: Vec<u8>,
        consistency: ReadConsistency,
    },
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        session: Option<Session>,
        ack: WriteAck,
    },
    Delete {
        key: Vec<u8>,
        session: Option<Session>,
        ack: WriteAck,
    },
    Cas {
        key: Vec<u8>,
        expect: Expect,
        #[serde(with = "serde_bytes")]
        new_value: Vec<u8>,
        session: Option<Session>,
        ack: WriteAck,
    },
    /// The node's view of itself and its group.
    Status,
    /// Open an exactly-once session (a log entry); the answer is `SessionRegistered`.
    /// Sessions are per group: a client opens one in each group it writes to.
    RegisterSession,
    /// The keys starting with `prefix` that the header's group holds, in key order, after
    /// `start_after` if given, at most `limit` of them (and fewer when their bytes would
    /// not fit in one frame); the answer is [`Response::Entries`]. One group's scan is read at
    /// one point of its log, at the asked consistency; a scan over several groups is not one
    /// snapshot of the whole store (see docs/sharding.md).
    Scan {
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
        consistency: ReadConsistency,
    },
}

/// The largest `limit` a scan may ask for.
pub const MAX_SCAN_LIMIT: u32 = 10_000;

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
            Request::Scan {
                prefix,
                start_after,
                limit,
                ..
            } => {
                if *limit == 0 || *limit > MAX_SCAN_LIMIT {
                    return Err(format!(
                        "a scan's limit must be 1..={MAX_SCAN_LIMIT}, not {limit}"
                    ));
                }
                for key in std::iter::once(prefix).chain(start_after) {
                    if key.len() > limits.max_key_bytes {
                        return Err(format!(
                            "key of {} bytes exceeds the limit of {} bytes",
                            key.len(),
                            limits.max_key_bytes
                        ));
                    }
                }
                return Ok(());
            }
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
    #[serde(with = "serde_bytes")]
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
    /// A write asked to be acknowledged by every replica ([`WriteAck::All`]) committed — it is
    /// durable on a majority and will not be lost — but not every replica applied it in time
    /// (one is down or cut off). Retrying it with the same session is safe.
    AckTimeout,
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

/// A node's answer to [`Request::Status`]: the node itself, then one entry per Raft group it
/// hosts.
///
/// Only what a client may see: server-side details such as the data directory stay in the
/// node's logs (protocol version 6 removed `data_dir`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u64,
    pub addr: String,
    /// Bytes of the node's write-ahead log on disk.
    pub log_bytes: u64,
    /// Batches written to the log since the node started (one write and, under the default
    /// sync policy, one fsync each), and the groups' writes they carried: their ratio is how
    /// many groups shared each fsync of the one log all the node's groups share.
    pub log_batches: u64,
    pub log_group_writes: u64,
    /// The ring the node routes by (its epoch, nodes, shards and replicas): a client builds
    /// its routing table from it.
    pub ring: RingSpec,
    /// One entry per hosted group, in ascending group order.
    pub groups: Vec<GroupStatus>,
}

impl NodeStatus {
    /// The node's view of `group`, if it hosts it.
    pub fn group(&self, group: GroupId) -> Option<&GroupStatus> {
        self.groups.iter().find(|g| g.group == group)
    }
}

/// One Raft group as a node hosting it sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group: GroupId,
    /// The key hashes the group's shard holds.
    pub range: HashRange,
    /// The epoch of the ring that placed it.
    pub epoch: u64,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: u64,
    pub applied_index: u64,
    /// The index of the last entry in this node's log of the group.
    pub last_index: u64,
    /// The index the node's newest snapshot covers (taken locally or installed from the leader).
    pub snapshot_index: u64,
    /// Snapshots received from a leader (InstallSnapshot) since this node started.
    pub snapshots_installed: u64,
    pub keys: u64,
    /// A digest of the state machine at `applied_index`: replicas that applied the same log
    /// report the same digest (the simulation compares them after healing).
    pub digest: u64,
    /// Filled in by the group's leader only.
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
    /// The request was routed by a ring older (or newer) than the node's: here is the node's;
    /// route again by it. Nothing was done.
    RingChanged {
        ring: RingSpec,
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
    /// A scan's answer: entries in key order; `more` when the limit or the frame size cut it
    /// short (continue after the last key).
    Entries {
        entries: Vec<(Vec<u8>, Versioned)>,
        more: bool,
    },
}

/// Names a Raft group: a shard of the key space with its own log and leader.
pub type GroupId = u64;

/// The first shard's group: the only one of a cluster with one shard (and where a node of the
/// single-group releases kept its data).
pub const ONLY_GROUP: GroupId = 0;

/// What every request and response carries besides its id, so that a request can be routed to
/// one of several Raft groups and a stale route can be noticed (protocol version 5).
///
/// Epoch 0 means "not routed": the node finds the key's group itself (a client without the
/// ring sends `Header::default()`). A request with a ring's epoch is checked against the node's
/// ring: a different epoch is answered [`Response::RingChanged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Header {
    /// The group the request is for; in a response, the group of the request it answers.
    pub group: GroupId,
    /// The ring epoch: in a request, that of the ring the sender routed by (0: none); in a
    /// response, that of the answering node's ring.
    pub epoch: u64,
}

/// A request with its connection-local id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    pub header: Header,
    pub request: Request,
}

impl RequestFrame {
    /// A request for [`ONLY_GROUP`] at epoch 0.
    pub fn new(id: u64, request: Request) -> Self {
        RequestFrame {
            id,
            header: Header::default(),
            request,
        }
    }
}

/// A response to the request with the same id, with its receipt (every answer to a read or
/// a write has one; refusals and errors do not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub id: u64,
    pub header: Header,
    pub response: Response,
    pub receipt: Option<Receipt>,
}

impl ResponseFrame {
    /// An answer from [`ONLY_GROUP`] at epoch 0, without a receipt.
    pub fn new(id: u64, response: Response) -> Self {
        ResponseFrame {
            id,
            header: Header::default(),
            response,
            receipt: None,
        }
    }
}
