//! The client: routes each request by the ring to its shard's leader, retries, and makes writes
//! exactly-once.
//!
//! On first use the client asks an endpoint for its status, which carries the ring (the shards,
//! their replicas and the ring's epoch) and the leaders of the groups that node hosts. Each keyed
//! request then goes to the group holding its key (`ring.shard_for_key`), with a header naming the
//! group and the ring's epoch: to the group's cached leader, else its preferred leader, else its
//! other replicas. A redirect (`NotLeader` with the leader's address) is followed at once and
//! cached; "no leader yet" is retried with a short backoff; a `RingChanged` answer (the node
//! routes by another epoch) replaces the ring and the request is routed again; a node that cannot
//! be reached is skipped for the next replica; everything stops at the per-request deadline. A
//! one-shard ring is served over the configured endpoints exactly as before sharding.
//!
//! Every write carries a session of its group (sessions are per group: an id and a per-group
//! sequence number), so the client can resend a write after a timeout or a lost connection, to
//! the same node or to a new leader, and the group's replicated state machine applies it once
//! (Raft thesis §6.3). The client chooses the id itself (at or above
//! [`CLIENT_CHOSEN_SESSION_IDS`], from a seed) and its first write to a group opens the session
//! in the same log entry, naming a log index of the group it saw before (`opened_after`: a commit
//! index from a status at most [`OPENED_AFTER_FRESHNESS`] old, asked again if older), so that a
//! retry of that first write after its session was evicted is refused rather than applied twice
//! (`storage::kv`). Only a commit index will do: a reply's index may be a leader-acknowledged
//! entry that never commits, or (routed by a node) another group's. Until a write of the session
//! is answered with a committed outcome, every write carries the opening.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::routing::Routing;
use ringleader_protocol::connection::{Answer, CallError, Connection};
use ringleader_protocol::message::MAX_SCAN_LIMIT;
use ringleader_protocol::net::{Connector, TokioConnector};
use ringleader_protocol::ring::Ring;
use ringleader_protocol::{
    ErrorKind, Expect, GroupId, Header, Limits, NodeStatus, ReadConsistency, Receipt, Request,
    Response, ServedAt, Session, Versioned, WriteAck, CLIENT_CHOSEN_SESSION_IDS, ONLY_GROUP,
};

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Node addresses (`host:port`); any of them will do, the client finds the leader.
    pub endpoints: Vec<String>,
    /// A call gives up after this long, retries included.
    pub request_timeout: Duration,
    /// One attempt at one node gives up after this long; the client then drops that connection
    /// and tries another node (a leader that went silent without closing the connection).
    pub attempt_timeout: Duration,
    /// One connection attempt gives up after this long.
    pub connect_timeout: Duration,
    /// Pause before retrying when no leader is known.
    pub retry_backoff: Duration,
    /// When every endpoint refuses the connection (nothing listens, or the connect times out),
    /// the client keeps trying for this long and then gives up with [`Error::Unreachable`]
    /// instead of waiting out the whole request timeout: a request that was never sent cannot
    /// have been applied, and a cluster whose every node is down will not answer soon. Long
    /// enough to ride over a node restarting.
    pub connect_retry_window: Duration,
    /// Request size limits, checked before sending.
    pub limits: Limits,
    /// Talk to the one endpoint given and no other: no leader discovery, no redirects. A
    /// `NotLeader` answer becomes [`Error::NotLeader`] instead of a redirect. This is what a
    /// client stuck on one side of a network partition sees (`ringleader ... --pin`); it needs
    /// exactly one endpoint. Requests go with epoch 0: the node routes each one, and forwards
    /// it to the shard's leader when it holds no replica of the shard (the receipt's
    /// `forwarded_by` names it). The client still learns the ring from that node, to open each
    /// write's session in the key's group.
    pub pinned: bool,
    /// Seeds the session ids this client chooses; clients of one cluster need different seeds.
    /// `None` (the default): a random seed (the process's random hash keys), as applications
    /// want; the simulation gives each client its own seed so that runs repeat.
    pub session_id_seed: Option<u64>,
}

impl ClientConfig {
    /// Defaults: 5 s request timeout, 2 s per attempt, 1 s connect timeout, 50 ms retry backoff,
    /// 1 s connect-retry window.
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            request_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retry_backoff: Duration::from_millis(50),
            connect_retry_window: Duration::from_secs(1),
            limits: Limits::default(),
            pinned: false,
            session_id_seed: None,
        }
    }
}

/// How fresh a read must be (see `docs/consistency.md` for each level's guarantee and price).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLevel {
    /// The leader confirms it still leads before answering (a heartbeat round).
    #[default]
    Linearizable,
    /// The leader answers alone while its lease holds (assumes bounded clock drift).
    Lease,
    /// Any replica that has applied this client's session position: read-your-writes and
    /// monotonic reads.
    Session,
    /// Any replica's local state, possibly stale; refused when it may be older than
    /// `max_staleness`.
    Stale { max_staleness: Option<Duration> },
}

/// A read's answer and its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub value: Option<Versioned>,
    pub receipt: Option<Receipt>,
}

/// A put's new version and its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub version: u64,
    pub receipt: Option<Receipt>,
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The expectation held; the key now has this version.
    Swapped { version: u64 },
    /// The expectation did not hold; the key's current state.
    Mismatch { current: Option<Versioned> },
}

/// A scan's answer: the entries in key order, and whether more keys matched than the limit
/// let through.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scanned {
    pub entries: Vec<(Vec<u8>, Versioned)>,
    /// More keys with the prefix exist after the last entry.
    pub truncated: bool,
}

/// A ringleader client. Cheap to clone; clones share connections, the ring and the sessions.
#[derive(Clone)]
pub struct Client<C: Connector = TokioConnector> {
    config: Arc<ClientConfig>,
    connector: C,
    routing: Arc<Mutex<Routing>>,
    /// When the last attempt to learn the ring failed: no new attempt before
    /// `connect_retry_window` has passed, so that calls to a cluster that will not say its ring
    /// do not each pay for asking.
    ring_fetch_failed_at: Arc<Mutex<Option<tokio::time::Instant>>>,
    /// One exactly-once session per group written to (at most one per group of the ring).
    sessions: Arc<Mutex<BTreeMap<GroupId, SessionState>>>,
    /// Per group, the session position (see [`Client::session_position_in`]).
    positions: Arc<Mutex<BTreeMap<GroupId, u64>>>,
    /// Per group, the highest commit index a status showed, and when (a new session's
    /// `opened_after`).
    commit_seen: Arc<Mutex<BTreeMap<GroupId, (u64, tokio::time::Instant)>>>,
    /// Where the next session id comes from.
    session_ids: Arc<Mutex<SessionIds>>,
}

/// The session ids a client chooses: a seeded sequence of 63-bit draws, each at or above
/// [`CLIENT_CHOSEN_SESSION_IDS`] (below are the ids the log assigns).
struct SessionIds {
    seed: u64,
    drawn: u64,
}

impl SessionIds {
    fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            // Keyed from the OS's randomness, differently in every process.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(0x5e55_10e5);
            hasher.finish()
        });
        SessionIds { seed, drawn: 0 }
    }

    fn next(&mut self) -> u64 {
        self.drawn += 1;
        // splitmix64: consecutive inputs give unrelated outputs.
        let mut z = self
            .seed
            .wrapping_add(self.drawn.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        CLIENT_CHOSEN_SESSION_IDS | (z >> 1)
    }
}

/// A new session's `opened_after` comes from a status at most this old; an older one is asked
/// again. The older it is, the likelier the group evicted every session active since, and then
/// the opening is refused (`SessionExpired`).
pub const OPENED_AFTER_FRESHNESS: Duration = Duration::from_secs(1);

/// Writes whose outcome stayed unknown are remembered (so the cluster keeps their outcome, and so
/// a session whose first write never arrived still gets created) for at most this many.
const MAX_UNKNOWN_WRITES_REMEMBERED: usize = 256;

/// Times a request is routed again because the ring moved its key to another group, before the
/// call gives up (a ring does not change several times within one call).
const MAX_REGROUPS: usize = 3;

/// Shards a scan asks at the same time; the others wait for one of them to finish.
const MAX_CONCURRENT_SHARD_SCANS: usize = 8;

/// The exactly-once session of one group: the id the client chose, whether the group holds it
/// yet, the next sequence number, and the writes not yet answered. `first_unacked_seq` is the
/// smallest of `in_flight` and `unknown`.
struct SessionState {
    client_id: u64,
    /// `None` once a write of the session was answered (the group holds it); until then every
    /// write carries the opening, with this index (see the module's documentation).
    opened_after: Option<u64>,
    next_seq: u64,
    /// Writes being sent right now (never forgotten while in flight).
    in_flight: BTreeSet<u64>,
    /// Writes whose call ended with an unknown outcome, most recent last (bounded).
    unknown: BTreeSet<u64>,
}

impl SessionState {
    fn new(client_id: u64, opened_after: u64) -> Self {
        SessionState {
            client_id,
            opened_after: Some(opened_after),
            next_seq: 1,
            in_flight: BTreeSet::new(),
            unknown: BTreeSet::new(),
        }
    }

    fn first_unacked_seq(&self) -> u64 {
        let in_flight = self.in_flight.first().copied().unwrap_or(self.next_seq);
        let unknown = self.unknown.first().copied().unwrap_or(self.next_seq);
        in_flight.min(unknown)
    }
}

/// Where a request goes.
#[derive(Clone, Copy)]
enum Dest<'a> {
    /// This group, whatever the ring (a session's registration, a shard's scan).
    Group(GroupId),
    /// This group, which held the key when the request was made (it carries that group's
    /// session, or position): if a new ring moves the key, the call ends with
    /// [`Outcome::Moved`] and the caller makes the request again for the new group.
    KeyInGroup(&'a [u8], GroupId),
}

/// How a routed call ended, short of an error.
enum Outcome {
    Answered(Answer),
    /// A new ring put the key in another group than the request was made for; nothing was
    /// done by the answer that said so.
    Moved,
}

impl Client<TokioConnector> {
    /// A client over real TCP. Connections are opened lazily, on the first request.
    pub fn new(config: ClientConfig) -> Result<Self> {
        Self::with_connector(config, TokioConnector)
    }
}

impl<C: Connector> Client<C> {
    /// A client over any [`Connector`] (turmoil's simulated network, say).
    pub fn with_connector(config: ClientConfig, connector: C) -> Result<Self> {
        if config.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        if config.pinned && config.endpoints.len() != 1 {
            return Err(Error::Invalid(format!(
                "a pinned client talks to exactly one endpoint; {} were given",
                config.endpoints.len()
            )));
        }
        Ok(Client {
            connector,
            routing: Arc::new(Mutex::new(Routing::new())),
            ring_fetch_failed_at: Arc::default(),
            session_ids: Arc::new(Mutex::new(SessionIds::new(config.session_id_seed))),
            config: Arc::new(config),
            sessions: Arc::default(),
            positions: Arc::default(),
            commit_seen: Arc::default(),
        })
    }

    fn routing(&self) -> MutexGuard<'_, Routing> {
        // A panic while holding the lock leaves only caches behind: still usable.
        self.routing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions(&self) -> MutexGuard<'_, BTreeMap<GroupId, SessionState>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a key, linearizably.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Versioned>> {
        Ok(self.read(key, ReadLevel::Linearizable).await?.value)
    }

    /// Reads a key at the given level; the answer comes with its receipt. A session read
    /// carries the session position of the key's group.
    pub async fn read(&self, key: impl Into<Vec<u8>>, level: ReadLevel) -> Result<Read> {
        let key = key.into();
        for _ in 0..MAX_REGROUPS {
            let group = self.group_of(&key).await;
            let request = Request::Get {
                key: key.clone(),
                consistency: self.consistency(level, group),
            };
            match self.call_to(Dest::KeyInGroup(&key, group), request).await? {
                Outcome::Moved => continue,
                Outcome::Answered((Response::Value(value), receipt)) => {
                    return Ok(Read { value, receipt })
                }
                Outcome::Answered((other, _)) => return Err(unexpected(other)),
            }
        }
        Err(ring_kept_changing())
    }

    /// The protocol's consistency for a read of `group` at `level`.
    fn consistency(&self, level: ReadLevel, group: GroupId) -> ReadConsistency {
        match level {
            ReadLevel::Linearizable => ReadConsistency::Linearizable,
            ReadLevel::Lease => ReadConsistency::Lease,
            ReadLevel::Session => ReadConsistency::Session {
                min_index: self.session_position_in(group),
            },
            ReadLevel::Stale { max_staleness } => ReadConsistency::Stale {
                max_staleness_ms: max_staleness.map(|d| d.as_millis() as u64),
            },
        }
    }

    /// Sets a key; returns its new version.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<u64> {
        Ok(self.put_with(key, value, WriteAck::Majority).await?.version)
    }

    /// Sets a key, acknowledged as `ack` asks; returns its new version and the receipt.
    pub async fn put_with(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        ack: WriteAck,
    ) -> Result<Written> {
        let (key, value) = (key.into(), value.into());
        let answer = self
            .write(&key, |session| Request::Put {
                key: key.clone(),
                value: value.clone(),
                session: Some(session),
                ack,
            })
            .await?;
        match answer {
            (Response::Written { version }, receipt) => Ok(Written { version, receipt }),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Deletes a key; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool> {
        Ok(self.delete_with(key, WriteAck::Majority).await?.0)
    }

    /// Deletes a key, acknowledged as `ack` asks (not [`WriteAck::Leader`]); returns whether it
    /// existed, and the receipt.
    pub async fn delete_with(
        &self,
        key: impl Into<Vec<u8>>,
        ack: WriteAck,
    ) -> Result<(bool, Option<Receipt>)> {
        let key = key.into();
        match self
            .write(&key, |session| Request::Delete {
                key: key.clone(),
                session: Some(session),
                ack,
            })
            .await?
        {
            (Response::Deleted { existed }, receipt) => Ok((existed, receipt)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Sets `key` to `new_value` if `expect` holds.
    pub async fn cas(
        &self,
        key: impl Into<Vec<u8>>,
        expect: Expect,
        new_value: impl Into<Vec<u8>>,
    ) -> Result<CasOutcome> {
        Ok(self
            .cas_with(key, expect, new_value, WriteAck::Majority)
            .await?
            .0)
    }

    /// Sets `key` to `new_value` if `expect` holds, acknowledged as `ack` asks (not
    /// [`WriteAck::Leader`]); the outcome comes with its receipt.
    pub async fn cas_with(
        &self,
        key: impl Into<Vec<u8>>,
        expect: Expect,
        new_value: impl Into<Vec<u8>>,
        ack: WriteAck,
    ) -> Result<(CasOutcome, Option<Receipt>)> {
        let (key, new_value) = (key.into(), new_value.into());
        match self
            .write(&key, |session| Request::Cas {
                key: key.clone(),
                expect: expect.clone(),
                new_value: new_value.clone(),
                session: Some(session),
                ack,
            })
            .await?
        {
            (Response::Written { version }, receipt) => {
                Ok((CasOutcome::Swapped { version }, receipt))
            }
            (Response::CasMismatch { current }, receipt) => {
                Ok((CasOutcome::Mismatch { current }, receipt))
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The keys starting with `prefix`, in key order, at most `limit` of them, read at `level`.
    ///
    /// Each shard is asked on its own (at most 8 at a time, page
    /// after page while it has more and the limit is not reached); the answers are merged in
    /// key order and cut at `limit`. The consistency is **per shard**: each shard's part is
    /// read at one point of that shard's log at `level`, but the shards are read at different
    /// moments, so the result is not a snapshot of the whole store (a write to two shards
    /// between the reads may show in one part and not the other). Holds up to `limit` entries
    /// per shard in memory while merging.
    pub async fn scan(
        &self,
        prefix: impl Into<Vec<u8>>,
        limit: usize,
        level: ReadLevel,
    ) -> Result<Scanned> {
        if limit == 0 {
            return Err(Error::Invalid("a scan's limit must be at least 1".into()));
        }
        let prefix = prefix.into();
        for _ in 0..MAX_REGROUPS {
            // Without the ring the client cannot know the shards: a scan of group 0 alone
            // would silently miss the others.
            let ring = self.load_ring().await?;
            let epoch = ring.epoch();
            let groups: Vec<GroupId> = ring.shards().iter().map(|shard| shard.group).collect();
            let parts: Vec<Scanned> = futures::stream::iter(groups)
                .map(|group| self.scan_group(group, &prefix, limit, level))
                .buffer_unordered(MAX_CONCURRENT_SHARD_SCANS)
                .try_collect()
                .await?;
            if self.routing().epoch() != epoch {
                continue; // the shards changed under the scan: read them again
            }
            let mut truncated = false;
            let mut entries = Vec::new();
            for part in parts {
                truncated |= part.truncated;
                entries.extend(part.entries);
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            debug_assert!(
                entries.windows(2).all(|pair| pair[0].0 < pair[1].0),
                "a key is in one shard only"
            );
            if entries.len() > limit {
                truncated = true;
                entries.truncate(limit);
            }
            return Ok(Scanned { entries, truncated });
        }
        Err(ring_kept_changing())
    }

    /// One shard's part of a scan: up to `limit` entries, and whether it has more.
    async fn scan_group(
        &self,
        group: GroupId,
        prefix: &[u8],
        limit: usize,
        level: ReadLevel,
    ) -> Result<Scanned> {
        let mut entries: Vec<(Vec<u8>, Versioned)> = Vec::new();
        loop {
            let page_limit = (limit - entries.len()).min(MAX_SCAN_LIMIT as usize) as u32;
            let request = Request::Scan {
                prefix: prefix.to_vec(),
                start_after: entries.last().map(|(key, _)| key.clone()),
                limit: page_limit,
                consistency: self.consistency(level, group),
            };
            match self.call_to(Dest::Group(group), request).await? {
                Outcome::Answered((
                    Response::Entries {
                        entries: page,
                        more,
                    },
                    _,
                )) => {
                    let empty = page.is_empty();
                    entries.extend(page);
                    if !more || entries.len() >= limit {
                        return Ok(Scanned {
                            entries,
                            truncated: more,
                        });
                    }
                    if empty {
                        // More, but nothing to continue after: asking again would loop.
                        return Err(Error::Server(format!(
                            "group {group} answered a scan page with no entries and more to come"
                        )));
                    }
                }
                Outcome::Answered((other, _)) => return Err(unexpected(other)),
                Outcome::Moved => return Err(ring_kept_changing()),
            }
        }
    }

    /// The client's session position, the highest over the groups it used (see
    /// [`Client::session_position_in`]); with one shard, that of group 0.
    pub fn session_position(&self) -> u64 {
        self.positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// The client's session position in `group`: the highest log index of that group its
    /// replies have shown it (a write it made, a value it read). A [`ReadLevel::Session`] read
    /// of a key is served only by a replica of the key's group that has applied at least this
    /// far, so the client reads its own writes and never goes back in time, whichever replica
    /// answers. (Log indexes of different groups are not comparable, hence one per group.)
    pub fn session_position_in(&self, group: GroupId) -> u64 {
        self.positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .copied()
            .unwrap_or(0)
    }

    /// The ring the client routes by, once it has learned it (from the first node that
    /// answered its status, on the first request); `None` before, or when no node said it.
    pub fn ring(&self) -> Option<Ring> {
        self.routing().ring().cloned()
    }

    /// The ring the client routes by, asking the endpoints for it if it is not known yet
    /// ([`Error::Unreachable`] when none answers with it).
    pub async fn load_ring(&self) -> Result<Ring> {
        if let Some(ring) = self.ring() {
            return Ok(ring);
        }
        *self
            .ring_fetch_failed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.ensure_ring().await;
        self.ring().ok_or_else(|| Error::Unreachable {
            last_problem: "no endpoint answered with its ring".into(),
        })
    }

    /// Asks one node (not the leader) for its status. A node that refuses the connection gives
    /// [`Error::Unreachable`]; one that does not answer in time, [`Error::Timeout`].
    pub async fn status_of(&self, addr: &str) -> Result<NodeStatus> {
        let timeout = self.config.request_timeout;
        let response = tokio::time::timeout(timeout, async {
            let connection = self
                .connection(addr)
                .await
                .map_err(|last_problem| Error::Unreachable { last_problem })?;
            connection
                .call(Request::Status)
                .await
                .map_err(|e| Error::Timeout {
                    timeout,
                    maybe_applied: false,
                    last_problem: format!("{addr}: {e}"),
                })
        })
        .await;
        match response {
            Ok(Ok((Response::Status(status), _))) => {
                self.note_commit_indexes(&status);
                Ok(*status)
            }
            Ok(Ok((other, _))) => Err(unexpected(other)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(Error::Timeout {
                timeout,
                maybe_applied: false,
                last_problem: format!("{addr} did not answer"),
            }),
        }
    }

    /// The session id of group 0's session; `None` before the first write there opens one.
    pub fn client_id(&self) -> Option<u64> {
        self.client_id_in(ONLY_GROUP)
    }

    /// The session id writes to `group` carry; `None` before the first write to it opens one
    /// (sessions are per group: each group's state machine knows only its own).
    pub fn client_id_in(&self, group: GroupId) -> Option<u64> {
        self.sessions().get(&group).map(|state| state.client_id)
    }

    /// A commit index of `group` at most [`OPENED_AFTER_FRESHNESS`] old, for a new session's
    /// `opened_after`: the last one a status showed, or a fresh status from a replica of the
    /// group. 0 when none answers (the opening then works while the group has never evicted a
    /// session).
    async fn commit_index_for_opening(&self, group: GroupId) -> u64 {
        let noted = |client: &Self| {
            client
                .commit_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&group)
                .copied()
        };
        if let Some((index, at)) = noted(self) {
            if at.elapsed() <= OPENED_AFTER_FRESHNESS {
                return index;
            }
        }
        let (addr, _) = self.target(group, false);
        let asked = tokio::time::timeout(self.config.attempt_timeout, self.status_of(&addr)).await;
        if let Ok(Err(error)) = &asked {
            tracing::debug!(node = %addr, %error, "no commit index for a new session");
        }
        noted(self).map_or(0, |(index, _)| index)
    }

    /// Remembers the commit index of every group a status shows.
    fn note_commit_indexes(&self, status: &NodeStatus) {
        let now = tokio::time::Instant::now();
        let mut seen = self.commit_seen.lock().unwrap_or_else(|p| p.into_inner());
        for group in &status.groups {
            let noted = seen.entry(group.group).or_insert((0, now));
            *noted = (noted.0.max(group.commit_index), now);
        }
    }

    /// Learns the ring if it is not known: asks the endpoints in turn for their status, for at
    /// most a quarter of the request timeout (or one attempt timeout). Without an answer the
    /// call goes on with epoch 0 (the node routes it), as a client did before sharding, and no
    /// new attempt is made for `connect_retry_window`.
    async fn ensure_ring(&self) {
        if self.routing().ring().is_some() {
            return;
        }
        let now = tokio::time::Instant::now();
        {
            let failed_at = self
                .ring_fetch_failed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if failed_at.is_some_and(|at| now - at < self.config.connect_retry_window) {
                return;
            }
        }
        let budget = self
            .config
            .attempt_timeout
            .min(self.config.request_timeout / 4);
        let asked = tokio::time::timeout(budget, async {
            for addr in &self.config.endpoints {
                match self.status_of(addr).await {
                    Ok(status) => return Some((addr, status)),
                    Err(error) => {
                        tracing::debug!(node = %addr, %error, "no ring from {addr}");
                    }
                }
            }
            None
        })
        .await;
        let learned = match asked {
            Ok(Some((addr, status))) => match self.routing().learn(&status) {
                Ok(()) => {
                    tracing::debug!(node = %addr, epoch = status.ring.epoch, shards = status.ring.shards, "learned the ring from {addr}");
                    true
                }
                Err(error) => {
                    tracing::warn!(node = %addr, %error, "{addr} sent a ring that is not one");
                    false
                }
            },
            _ => false,
        };
        if !learned {
            *self
                .ring_fetch_failed_at
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(now);
        }
    }

    /// The group of `key` on the ring, learning the ring first if needed.
    async fn group_of(&self, key: &[u8]) -> GroupId {
        self.ensure_ring().await;
        self.routing().group_for_key(key)
    }

    /// Sends a write of `key` made by `make` with the session of the key's group (opened by
    /// the first write there, in the same entry) and the group's next sequence number.
    async fn write(&self, key: &[u8], make: impl Fn(Session) -> Request) -> Result<Answer> {
        for _ in 0..MAX_REGROUPS {
            let group = self.group_of(key).await;
            let opened_after = match self.client_id_in(group) {
                Some(_) => 0, // the session exists here: its own opened_after is kept
                None => self.commit_index_for_opening(group).await,
            };
            let session = {
                let mut sessions = self.sessions();
                let state = sessions.entry(group).or_insert_with(|| {
                    let client_id = self
                        .session_ids
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .next();
                    SessionState::new(client_id, opened_after)
                });
                let seq = state.next_seq;
                state.next_seq += 1;
                state.in_flight.insert(seq);
                Session {
                    client_id: state.client_id,
                    seq,
                    first_unacked_seq: state.first_unacked_seq(),
                    opened_after: state.opened_after,
                }
            };
            let result = self
                .call_to(Dest::KeyInGroup(key, group), make(session))
                .await;
            {
                let mut sessions = self.sessions();
                if let Some(state) = sessions
                    .get_mut(&group)
                    .filter(|state| state.client_id == session.client_id)
                {
                    // Applied and committed in the session: the group holds it now. (A write
                    // acknowledged by the leader alone may not commit, its session with it.)
                    if let Ok(Outcome::Answered((_, receipt))) = &result {
                        if receipt.is_none_or(|r| r.served_at != ServedAt::Leader) {
                            state.opened_after = None;
                        }
                    }
                    // A definite answer lets the cluster forget this write's outcome; an
                    // unknown one (or one sent before the ring moved its key) is kept
                    // unacknowledged (bounded), so the cluster keeps its outcome for a retry.
                    state.in_flight.remove(&session.seq);
                    if result.as_ref().is_err_and(Error::outcome_unknown)
                        || matches!(result, Ok(Outcome::Moved))
                    {
                        state.unknown.insert(session.seq);
                        while state.unknown.len() > MAX_UNKNOWN_WRITES_REMEMBERED {
                            state.unknown.pop_first();
                        }
                    }
                    if matches!(result, Err(Error::SessionExpired)) {
                        // The group forgot this session (or could not open it): the next write
                        // opens a new one.
                        sessions.remove(&group);
                    }
                }
            }
            match result? {
                Outcome::Answered(answer) => return Ok(answer),
                Outcome::Moved => continue,
            }
        }
        Err(ring_kept_changing())
    }

    async fn connection(&self, addr: &str) -> std::result::Result<Connection, String> {
        if let Some(existing) = self.routing().connections.get(addr) {
            if !existing.is_closed() {
                return Ok(existing.clone());
            }
        }
        let opened = tokio::time::timeout(
            self.config.connect_timeout,
            Connection::open(&self.connector, addr, self.config.limits.max_frame_bytes),
        )
        .await
        .map_err(|_| format!("connect to {addr} timed out"))??;
        self.routing()
            .connections
            .insert(addr.to_string(), opened.clone());
        Ok(opened)
    }

    /// The node to send a request for `group` to, and the header to send it with.
    fn target(&self, group: GroupId, spread_read: bool) -> (String, Header) {
        let endpoints = &self.config.endpoints;
        let mut routing = self.routing();
        if self.config.pinned {
            // Epoch 0: the pinned node routes the request itself and forwards it if it holds
            // no replica of the group.
            return (endpoints[0].clone(), Header { group, epoch: 0 });
        }
        let addr = routing.target(group, spread_read, endpoints);
        let epoch = routing.epoch();
        (addr, Header { group, epoch })
    }

    /// Sends `request` to the leader of its group (or, for a stale or session read on a
    /// sharded ring, to the next replica of the group), following redirects and new rings,
    /// retrying until the deadline.
    ///
    /// `maybe_applied` stays false while every attempt failed before the request left this
    /// process (a refused or timed-out connect, a connection closed before it took the request):
    /// then the error says the request was certainly not applied. When every node that may
    /// serve the group refuses connections for [`ClientConfig::connect_retry_window`], the call
    /// fails early with [`Error::Unreachable`] rather than waiting out the request timeout.
    async fn call_to(&self, dest: Dest<'_>, request: Request) -> Result<Outcome> {
        request.check(&self.config.limits).map_err(Error::Invalid)?;
        let timeout = self.config.request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        self.ensure_ring().await;
        let spread_read = match &request {
            Request::Get { consistency, .. } | Request::Scan { consistency, .. } => {
                !consistency.needs_leader()
            }
            _ => false,
        };
        let mut maybe_applied = false;
        let mut last_problem = String::from("no attempt finished");
        // Nodes that refused a connection since the last connection that worked, and since
        // when every candidate has been refusing (a whole round failed to connect).
        let mut refused: BTreeSet<String> = BTreeSet::new();
        let mut all_refusing_since: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                if !maybe_applied && all_refusing_since.is_some() {
                    return Err(Error::Unreachable { last_problem });
                }
                return Err(Error::Timeout {
                    timeout,
                    maybe_applied: maybe_applied && request.is_write(),
                    last_problem,
                });
            }
            let group = match dest {
                Dest::Group(group) => group,
                Dest::KeyInGroup(key, group) => {
                    if self.routing().group_for_key(key) != group {
                        return Ok(Outcome::Moved);
                    }
                    group
                }
            };
            let (addr, header) = self.target(group, spread_read);
            tracing::debug!(group, node = %addr, epoch = header.epoch, "group {group} -> node {addr}");
            let connected = tokio::time::timeout(deadline - now, self.connection(&addr))
                .await
                .unwrap_or_else(|_| Err(format!("connect to {addr} timed out")));
            let connection = match connected {
                Ok(connection) => {
                    refused.clear();
                    all_refusing_since = None;
                    connection
                }
                Err(problem) => {
                    // Nothing was sent: this attempt cannot have applied the request.
                    last_problem = problem;
                    self.routing().forget(&addr, true);
                    refused.insert(addr);
                    let candidates = if self.config.pinned {
                        self.config.endpoints.clone()
                    } else {
                        self.routing().candidates(group, &self.config.endpoints)
                    };
                    if candidates.iter().all(|e| refused.contains(e)) {
                        let since = *all_refusing_since.get_or_insert(now);
                        if !maybe_applied && now - since >= self.config.connect_retry_window {
                            return Err(Error::Unreachable { last_problem });
                        }
                        refused.clear(); // the next round
                    }
                    tokio::time::sleep(self.config.retry_backoff).await;
                    continue;
                }
            };
            let now = tokio::time::Instant::now();
            let attempt_timeout = deadline
                .saturating_duration_since(now)
                .min(self.config.attempt_timeout);
            let response = match tokio::time::timeout(
                attempt_timeout,
                connection.call_in(header, request.clone()),
            )
            .await
            {
                Err(_elapsed) => {
                    maybe_applied = true;
                    last_problem = format!(
                        "{addr} did not answer within {} ms",
                        attempt_timeout.as_millis()
                    );
                    self.routing().forget(&addr, true);
                    continue;
                }
                Ok(Err(CallError::NotSent)) => {
                    last_problem = format!("{addr}: connection closed before the request was sent");
                    self.routing().forget(&addr, true);
                    tokio::time::sleep(self.config.retry_backoff).await;
                    continue;
                }
                Ok(Err(CallError::Lost)) => {
                    maybe_applied = true;
                    last_problem = format!("{addr}: connection lost before the answer");
                    self.routing().forget(&addr, true);
                    tokio::time::sleep(self.config.retry_backoff).await;
                    continue;
                }
                Ok(Ok(response)) => response,
            };
            let (response, receipt) = response;
            match response {
                Response::NotLeader {
                    leader_addr,
                    leader,
                } if self.config.pinned => {
                    return Err(Error::NotLeader {
                        addr,
                        leader,
                        leader_addr,
                    });
                }
                Response::NotLeader {
                    leader_addr,
                    leader,
                } => {
                    last_problem = match (leader, &leader_addr) {
                        (Some(id), Some(at)) => {
                            format!("{addr} is not the leader (node {id} at {at} is)")
                        }
                        (Some(id), None) => format!("{addr} is not the leader (node {id} is)"),
                        (None, _) => format!("{addr} knows no leader yet"),
                    };
                    let redirect = leader_addr.filter(|leader_addr| *leader_addr != addr);
                    match redirect {
                        Some(leader_addr) => {
                            tracing::debug!(group, from = %addr, to = %leader_addr, "redirected");
                            self.routing().set_leader(group, leader_addr);
                        }
                        None => {
                            self.routing().clear_leader(group);
                            tokio::time::sleep(self.config.retry_backoff).await;
                        }
                    }
                }
                Response::RingChanged { ring } => {
                    let ring = Ring::new(ring).map_err(|error| {
                        Error::Server(format!(
                            "{addr} answered with a ring that is not one: {error}"
                        ))
                    })?;
                    let epoch = ring.epoch();
                    last_problem = format!("{addr} routes by the ring of epoch {epoch}");
                    let changed = {
                        let mut routing = self.routing();
                        let changed = routing.epoch() != epoch;
                        routing.install(ring);
                        changed
                    };
                    tracing::debug!(group, node = %addr, epoch, "the ring changed: routing again");
                    if !changed {
                        // Routed by this very epoch, and still told otherwise (nodes
                        // disagreeing during a change): let them settle.
                        tokio::time::sleep(self.config.retry_backoff).await;
                    }
                }
                Response::Error { kind, message } => match kind {
                    ErrorKind::Unavailable | ErrorKind::ShuttingDown => {
                        // A node shutting down may have had the write in flight.
                        maybe_applied |= kind == ErrorKind::ShuttingDown;
                        last_problem = format!("{addr}: {message}");
                        self.routing()
                            .forget(&addr, kind == ErrorKind::ShuttingDown);
                        tokio::time::sleep(self.config.retry_backoff).await;
                    }
                    ErrorKind::Unknown => {
                        // Proposed but not known to commit: resend with the same session.
                        maybe_applied = true;
                        last_problem = format!("{addr}: {message}");
                        self.routing().forget(&addr, false);
                        tokio::time::sleep(self.config.retry_backoff).await;
                    }
                    ErrorKind::Invalid => return Err(Error::Invalid(message)),
                    ErrorKind::AckTimeout => return Err(Error::NotOnAllReplicas(message)),
                    ErrorKind::SessionExpired => return Err(Error::SessionExpired),
                    ErrorKind::Internal => return Err(Error::Server(message)),
                    ErrorKind::DiskFull => {
                        return Err(Error::DiskFull {
                            node: addr,
                            message,
                        })
                    }
                },
                answer => {
                    if let Some(receipt) = &receipt {
                        let mut positions =
                            self.positions.lock().unwrap_or_else(|p| p.into_inner());
                        let position = positions.entry(group).or_insert(0);
                        *position = (*position).max(receipt.index);
                    }
                    // Only the leader serves writes and linearizable reads; a replica that
                    // answered a stale or session read is not thereby the leader, nor is a
                    // node that forwarded the request to the leader.
                    let from_leader = !spread_read
                        && receipt.as_ref().is_none_or(|r| {
                            !matches!(r.served_at, ServedAt::Stale | ServedAt::Session)
                                && r.forwarded_by.is_none()
                        });
                    if from_leader {
                        self.routing().set_leader(group, addr);
                    }
                    return Ok(Outcome::Answered((answer, receipt)));
                }
            }
        }
    }
}

fn unexpected(response: Response) -> Error {
    Error::Server(format!("unexpected response {response:?}"))
}

fn ring_kept_changing() -> Error {
    Error::Server(format!(
        "the ring moved the request's key {MAX_REGROUPS} times; giving up"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address where nothing listens.
    fn refused_addr() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        addr
    }

    // Paused time: the deadline and the retry window are virtual, so "before the deadline" is
    // exact and costs no wall-clock wait.
    #[tokio::test(start_paused = true)]
    async fn refused_everywhere_fails_within_the_retry_window_and_is_certainly_not_applied() {
        let mut config = ClientConfig::new(vec![refused_addr(), refused_addr()]);
        config.request_timeout = Duration::from_secs(600);
        let client = Client::new(config).unwrap();
        let started = tokio::time::Instant::now();
        let error = client.put("k", "v").await.unwrap_err();
        assert!(
            matches!(error, Error::Unreachable { .. }),
            "a typed error: {error:?}"
        );
        assert!(
            !error.outcome_unknown(),
            "never sent, so certainly not applied"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "failed fast, not at the request deadline"
        );
        assert!(
            error.to_string().contains("certainly not applied"),
            "{error}"
        );
    }

    // --- Retry, redirect and session logic against fake nodes (no sockets, virtual time). ---

    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::codec::Framed;

    use ringleader_protocol::ring::RingSpec;
    use ringleader_protocol::{
        decode_frame, encode_frame, frame_codec, GroupStatus, Handshake, RequestFrame,
        ResponseFrame, Role, HANDSHAKE_BYTES,
    };

    /// How the fake node at an address answers a request sent with a header: `Some(answer)`,
    /// or `None` to close the connection after reading it (the request reached the node, its
    /// answer never came). `Status` is answered by the cluster itself (see `FakeCluster::ring`).
    type Script = Arc<dyn Fn(&str, &Header, &Request) -> Option<Response> + Send + Sync>;

    /// A [`Connector`] whose every address is a fake node run by a script, over an in-memory
    /// pipe: it records every request a node received, in order (`Status` requests apart).
    #[derive(Clone)]
    struct FakeCluster {
        script: Script,
        /// The ring every fake node reports in its status.
        ring: Arc<Mutex<RingSpec>>,
        received: Arc<Mutex<Vec<(String, Header, Request)>>>,
        statuses: Arc<AtomicU64>,
    }

    /// A one-shard ring over the fake nodes "a", "b" and "c": the cluster before sharding.
    fn unsharded_spec() -> RingSpec {
        let nodes = [(1, "a"), (2, "b"), (3, "c")]
            .into_iter()
            .map(|(id, addr)| (id, addr.to_string()))
            .collect();
        RingSpec::new(nodes, 1)
    }

    impl FakeCluster {
        fn new(
            script: impl Fn(&str, &Request) -> Option<Response> + Send + Sync + 'static,
        ) -> Self {
            Self::with_headers(move |addr, _, request| script(addr, request))
        }

        fn with_headers(
            script: impl Fn(&str, &Header, &Request) -> Option<Response> + Send + Sync + 'static,
        ) -> Self {
            FakeCluster {
                script: Arc::new(script),
                ring: Arc::new(Mutex::new(unsharded_spec())),
                received: Arc::default(),
                statuses: Arc::default(),
            }
        }

        fn received(&self) -> Vec<(String, Request)> {
            self.received
                .lock()
                .unwrap()
                .iter()
                .map(|(addr, _, request)| (addr.clone(), request.clone()))
                .collect()
        }

        fn received_with_headers(&self) -> Vec<(String, Header, Request)> {
            self.received.lock().unwrap().clone()
        }

        /// The sessions of the writes received, in order.
        fn write_sessions(&self) -> Vec<Session> {
            self.received()
                .into_iter()
                .filter_map(|(_, request)| session_of(&request))
                .collect()
        }

        fn client(&self, endpoints: &[&str]) -> Client<FakeCluster> {
            let mut config = ClientConfig::new(endpoints.iter().map(|e| e.to_string()).collect());
            config.request_timeout = Duration::from_secs(1);
            config.attempt_timeout = Duration::from_millis(300);
            Client::with_connector(config, self.clone()).unwrap()
        }
    }

    impl Connector for FakeCluster {
        type Stream = tokio::io::DuplexStream;
        async fn connect(&self, addr: &str) -> std::io::Result<Self::Stream> {
            let (client_end, node_end) = tokio::io::duplex(64 * 1024);
            tokio::spawn(fake_node(addr.to_string(), node_end, self.clone()));
            Ok(client_end)
        }
    }

    async fn fake_node(addr: String, mut stream: tokio::io::DuplexStream, cluster: FakeCluster) {
        let mut hello = [0u8; HANDSHAKE_BYTES];
        if stream.read_exact(&mut hello).await.is_err() {
            return;
        }
        let reply = Handshake::new(Role::Peer { node_id: 0 }).encode();
        if stream.write_all(&reply).await.is_err() {
            return;
        }
        let mut framed = Framed::new(stream, frame_codec(Limits::default().max_frame_bytes));
        while let Some(Ok(bytes)) = framed.next().await {
            let frame: RequestFrame = decode_frame(&bytes).unwrap();
            let response = if frame.request == Request::Status {
                cluster.statuses.fetch_add(1, Ordering::SeqCst);
                let ring = cluster.ring.lock().unwrap().clone();
                Some(Response::Status(Box::new(NodeStatus {
                    id: 0,
                    addr: addr.clone(),
                    log_bytes: 0,
                    log_batches: 0,
                    log_group_writes: 0,
                    // Every group of the ring, with a commit index (a new session's
                    // `opened_after`) that grows with each status asked.
                    groups: (0..u64::from(ring.shards))
                        .map(|group| GroupStatus {
                            group,
                            range: ringleader_protocol::ring::HashRange {
                                start: 0,
                                end_inclusive: u64::MAX,
                            },
                            epoch: 0,
                            role: "leader".into(),
                            term: 1,
                            leader: None,
                            commit_index: 10 * cluster.statuses.load(Ordering::SeqCst),
                            applied_index: 0,
                            last_index: 0,
                            snapshot_index: 0,
                            snapshots_installed: 0,
                            keys: 0,
                            digest: 0,
                            replicas: Vec::new(),
                        })
                        .collect(),
                    ring,
                })))
            } else {
                cluster.received.lock().unwrap().push((
                    addr.clone(),
                    frame.header,
                    frame.request.clone(),
                ));
                (cluster.script)(&addr, &frame.header, &frame.request)
            };
            let Some(response) = response else {
                return; // drop the connection with the request unanswered
            };
            let mut answer = ResponseFrame::new(frame.id, response);
            // A write acknowledged by the leader alone says so, with its entry's index (which
            // may never commit).
            if let (
                Request::Put {
                    ack: WriteAck::Leader,
                    ..
                },
                Response::Written { version },
            ) = (&frame.request, &answer.response)
            {
                answer.receipt = Some(Receipt {
                    served_at: ServedAt::Leader,
                    node: 1,
                    term: 1,
                    index: *version,
                    staleness_bound_ms: None,
                    forwarded_by: None,
                });
            }
            let body = encode_frame(&answer).unwrap();
            if framed.send(Bytes::from(body)).await.is_err() {
                return;
            }
        }
    }

    fn session_of(request: &Request) -> Option<Session> {
        match request {
            Request::Put { session, .. }
            | Request::Delete { session, .. }
            | Request::Cas { session, .. } => *session,
            _ => None,
        }
    }

    fn refusal(kind: ErrorKind) -> Response {
        Response::Error {
            kind,
            message: format!("fake {kind:?}"),
        }
    }

    /// Pinned to "a": its NotLeader answer is the result, the leader it names ("b") is never
    /// contacted, and a stale read "a" can answer is answered by "a".
    #[tokio::test(start_paused = true)]
    async fn a_pinned_client_follows_no_redirect() {
        let cluster = FakeCluster::new(|addr, request| match (addr, request) {
            (
                "a",
                Request::Get {
                    consistency: ReadConsistency::Stale { .. },
                    ..
                },
            ) => Some(Response::Value(None)),
            ("a", _) => Some(Response::NotLeader {
                leader: Some(2),
                leader_addr: Some("b".into()),
            }),
            _ => Some(Response::Written { version: 3 }),
        });
        let mut config = ClientConfig::new(vec!["a".into()]);
        config.pinned = true;
        let client = Client::with_connector(config, cluster.clone()).unwrap();
        let error = client.get("k").await.unwrap_err();
        assert_eq!(
            error,
            Error::NotLeader {
                addr: "a".into(),
                leader: Some(2),
                leader_addr: Some("b".into())
            }
        );
        assert!(error.to_string().contains("node 2 at b is"), "{error}");
        let stale = ReadLevel::Stale {
            max_staleness: None,
        };
        assert_eq!(
            client.read("k", stale).await.map(|read| read.value),
            Ok(None)
        );
        assert!(
            cluster.received().iter().all(|(addr, _)| addr == "a"),
            "only the pinned endpoint was asked: {:?}",
            cluster.received()
        );
        assert!(
            cluster
                .received_with_headers()
                .iter()
                .all(|(_, header, _)| header.epoch == 0),
            "a pinned client lets the node route (epoch 0): {:?}",
            cluster.received_with_headers()
        );
        let mut two = ClientConfig::new(vec!["a".into(), "b".into()]);
        two.pinned = true;
        assert!(matches!(
            Client::with_connector(two, cluster.clone()),
            Err(Error::Invalid(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn follows_a_redirect_to_a_leader_it_was_not_configured_with() {
        // "b" leads but is not among the endpoints: only the redirect from "a" leads there.
        let cluster = FakeCluster::new(|addr, request| match (addr, request) {
            ("b", _) => Some(Response::Written { version: 3 }),
            ("a", _) => Some(Response::NotLeader {
                leader: Some(2),
                leader_addr: Some("b".into()),
            }),
            _ => Some(Response::NotLeader {
                leader: None,
                leader_addr: None,
            }),
        });
        let client = cluster.client(&["a", "c"]);
        assert_eq!(client.put("k", "v1").await, Ok(3));
        assert_eq!(client.put("k", "v2").await, Ok(3));
        let addrs: Vec<String> = cluster.received().into_iter().map(|(a, _)| a).collect();
        // Redirected once, then the leader is remembered: no request to a follower again.
        assert_eq!(addrs, ["a", "b", "b"]);
        let id = client.client_id().expect("a session");
        assert!(id >= CLIENT_CHOSEN_SESSION_IDS, "the client chose its id");
        let seqs: Vec<(u64, u64, Option<u64>)> = cluster
            .write_sessions()
            .iter()
            .map(|s| (s.client_id, s.seq, s.opened_after))
            .collect();
        // The first write (sent twice: to "a", then to "b") opens the session; the next one,
        // after an answer showed the group holds it, does not.
        // `opened_after`: the commit index of the status the client learned the ring from.
        assert_eq!(seqs, [(id, 1, Some(10)), (id, 1, Some(10)), (id, 2, None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_unavailable_until_it_succeeds_or_the_deadline_and_says_not_applied() {
        // Unavailable three times, then the write goes through.
        let refusals = Arc::new(AtomicU64::new(3));
        let left = refusals.clone();
        let cluster = FakeCluster::new(move |_, request| match request {
            _ if left.load(Ordering::SeqCst) > 0 => {
                left.fetch_sub(1, Ordering::SeqCst);
                Some(refusal(ErrorKind::Unavailable))
            }
            _ => Some(Response::Written { version: 9 }),
        });
        assert_eq!(cluster.client(&["a"]).put("k", "v").await, Ok(9));
        assert_eq!(cluster.write_sessions().len(), 4, "3 refusals, 1 success");

        // Unavailable for ever: retried until the deadline, and certainly not applied.
        let cluster = FakeCluster::new(|_, _| Some(refusal(ErrorKind::Unavailable)));
        let error = cluster.client(&["a"]).put("k", "v").await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    maybe_applied: false,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(!error.outcome_unknown());
        let attempts = cluster.write_sessions().len();
        // 1 s of deadline at a 50 ms backoff: about 20 attempts, all of them the same write.
        assert!(attempts >= 10, "retried {attempts} times only");
        assert!(cluster.write_sessions().iter().all(|s| s.seq == 1));
    }

    /// A write acknowledged by the leader alone may never commit, and the session it opened
    /// with it: the opening goes on until a committed answer, and its index, which never
    /// committed, is never taken for a later session's `opened_after` (it could be above
    /// entries that will commit, and let a retried first write open an evicted session again).
    #[tokio::test(start_paused = true)]
    async fn a_leader_only_answer_neither_ends_the_opening_nor_feeds_opened_after() {
        let cluster = FakeCluster::new(|_, request| match request {
            Request::Put {
                ack: WriteAck::Leader,
                ..
            } => Some(Response::Written { version: 1_000_000 }),
            _ => Some(Response::Written { version: 5 }),
        });
        let client = cluster.client(&["a"]);
        let leader_only = client.put_with("k", "v", WriteAck::Leader).await.unwrap();
        assert_eq!(leader_only.version, 1_000_000);
        assert_eq!(client.put("k", "w").await, Ok(5));
        assert_eq!(client.put("k", "x").await, Ok(5));
        let opened_after: Vec<Option<u64>> = cluster
            .write_sessions()
            .iter()
            .map(|session| session.opened_after)
            .collect();
        assert_eq!(
            opened_after,
            [Some(10), Some(10), None],
            "still opening after the leader-only answer; the status's commit index, never the \
             leader-only entry's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_a_new_session_after_the_cluster_expired_the_old_one() {
        // The first session the client opens is refused (expired, or not openable).
        let first_id = Arc::new(Mutex::new(None));
        let cluster = FakeCluster::new(move |_, request| {
            let session = session_of(request)?;
            let mut first = first_id.lock().unwrap();
            if *first.get_or_insert(session.client_id) == session.client_id {
                Some(refusal(ErrorKind::SessionExpired))
            } else {
                Some(Response::Written { version: 4 })
            }
        });
        let client = cluster.client(&["a"]);
        let error = client.put("k", "v").await.unwrap_err();
        assert_eq!(error, Error::SessionExpired);
        assert!(
            error.outcome_unknown(),
            "an expired session's write may have applied"
        );
        assert_eq!(client.client_id(), None, "the expired session is dropped");
        assert_eq!(cluster.statuses.load(Ordering::SeqCst), 1);
        // Later than a status's freshness: the new session asks the group's commit index
        // again (an old one might be older than every session the group still holds).
        tokio::time::advance(OPENED_AFTER_FRESHNESS * 2).await;
        assert_eq!(client.put("k", "v").await, Ok(4));
        assert_eq!(cluster.statuses.load(Ordering::SeqCst), 2);
        let sessions = cluster.write_sessions();
        let (first, last) = (sessions[0], *sessions.last().unwrap());
        assert_ne!(first.client_id, last.client_id, "a new id");
        assert_eq!(
            first.opened_after,
            Some(10),
            "the first status's commit index"
        );
        assert_eq!(client.client_id(), Some(last.client_id));
        assert_eq!(
            (last.seq, last.first_unacked_seq, last.opened_after),
            (1, 1, Some(20)),
            "a fresh session starts at sequence 1, opened by its first write, after the \
             fresh commit index"
        );
        assert!(
            !cluster
                .received()
                .iter()
                .any(|(_, r)| matches!(r, Request::RegisterSession)),
            "no registration round trip"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn maybe_applied_is_set_once_a_write_may_have_reached_a_node() {
        // The node takes the write but never learns whether it committed (`Unknown`), for ever.
        let cluster = FakeCluster::new(|_, request| match (request, session_of(request)) {
            (_, Some(session)) if session.seq == 1 => Some(refusal(ErrorKind::Unknown)),
            _ => Some(Response::Written { version: 8 }),
        });
        let client = cluster.client(&["a"]);
        let error = client.put("k", "v").await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    maybe_applied: true,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.outcome_unknown());
        let sessions = cluster.write_sessions();
        assert!(sessions.len() >= 2, "resent");
        assert!(
            sessions.iter().all(|s| s.seq == 1),
            "every resend is the same write (same session and sequence)"
        );
        // The next write keeps the unknown one unacknowledged, so the cluster keeps its outcome.
        assert_eq!(client.put("k", "w").await, Ok(8));
        let last = *cluster.write_sessions().last().unwrap();
        assert_eq!((last.seq, last.first_unacked_seq), (2, 1));

        // The connection drops after the node read the write: the write may have applied.
        let cluster = FakeCluster::new(|_, _| None);
        let error = cluster.client(&["a"]).put("k", "v").await.unwrap_err();
        assert!(
            matches!(
                error,
                Error::Timeout {
                    maybe_applied: true,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    /// A ring of `shards` shards of 3 replicas over the fake nodes "a" to "e".
    fn sharded_spec(shards: u32, epoch: u64) -> RingSpec {
        let nodes = ["a", "b", "c", "d", "e"]
            .into_iter()
            .zip(1..)
            .map(|(addr, id)| (id, addr.to_string()))
            .collect();
        RingSpec {
            epoch,
            ..RingSpec::new(nodes, shards)
        }
    }

    /// A key in a group other than 0 on `ring`.
    fn key_off_group_0(ring: &Ring) -> String {
        (0..)
            .map(|i| format!("key{i}"))
            .find(|key| ring.shard_for_key(key.as_bytes()) != 0)
            .unwrap()
    }

    /// Every node answers a request routed by epoch 1 with the ring of epoch 2, which has 4
    /// shards instead of 1: the client routes again by it, and the write, whose key moved from
    /// group 0 to another group, is made again with a session of its new group.
    #[tokio::test(start_paused = true)]
    async fn a_ring_changed_answer_makes_the_client_route_again_by_the_new_ring() {
        let new_spec = sharded_spec(4, 2);
        let new_ring = Ring::new(new_spec.clone()).unwrap();
        let cluster = FakeCluster::with_headers(move |_, header, _request| {
            if header.epoch != 2 {
                return Some(Response::RingChanged {
                    ring: new_spec.clone(),
                });
            }
            Some(Response::Written { version: 7 })
        });
        *cluster.ring.lock().unwrap() = RingSpec {
            epoch: 1,
            ..unsharded_spec()
        };
        let client = cluster.client(&["a", "b", "c"]);
        let key = key_off_group_0(&new_ring);
        let group = new_ring.shard_for_key(key.as_bytes());
        assert_eq!(client.put(key.as_str(), "v").await, Ok(7));
        assert_eq!(client.ring().map(|ring| ring.epoch()), Some(2));
        assert_eq!(
            cluster.statuses.load(Ordering::SeqCst),
            2,
            "the answer carried the ring; the one status more is the new group's commit index, \
             for its session's opening"
        );
        let received = cluster.received_with_headers();
        let (_, first_header, _) = &received[0];
        assert_eq!(first_header.epoch, 1, "routed by the status's ring first");
        let (_, last_header, last) = received.last().unwrap();
        assert_eq!(
            *last_header,
            Header { group, epoch: 2 },
            "the write went to its group on the new ring"
        );
        let id = client
            .client_id_in(group)
            .expect("a session in the new group");
        assert_eq!(
            session_of(last).map(|s| (s.client_id, s.seq, s.opened_after.is_some())),
            Some((id, 1, true)),
            "with a session of that group, opened by this write: {received:?}"
        );
        assert_ne!(
            client.client_id_in(0),
            Some(id),
            "sessions are per group: group 0's first write had its own"
        );
    }

    /// On a sharded ring, stale reads of one key go round-robin over its group's replicas; a
    /// linearizable read goes to the (preferred) leader.
    #[tokio::test(start_paused = true)]
    async fn stale_reads_are_spread_over_the_replicas_of_the_keys_group() {
        let spec = sharded_spec(4, 1);
        let ring = Ring::new(spec.clone()).unwrap();
        let cluster = FakeCluster::new(|_, _| Some(Response::Value(None)));
        *cluster.ring.lock().unwrap() = spec.clone();
        let client = cluster.client(&["a"]);
        let stale = ReadLevel::Stale {
            max_staleness: None,
        };
        for _ in 0..3 {
            assert_eq!(client.read("k", stale).await.map(|r| r.value), Ok(None));
        }
        assert_eq!(client.get("k").await, Ok(None));
        let shard = ring.shard(ring.shard_for_key(b"k")).unwrap();
        let addr = |node: &u64| spec.nodes[node].clone();
        let mut expected: Vec<String> = std::iter::once(shard.preferred_leader)
            .chain(
                shard
                    .replicas
                    .iter()
                    .copied()
                    .filter(|node| *node != shard.preferred_leader),
            )
            .map(|node| addr(&node))
            .collect();
        expected.push(addr(&shard.preferred_leader));
        let asked: Vec<String> = cluster.received().into_iter().map(|(a, _)| a).collect();
        assert_eq!(asked, expected);
    }

    /// Writes to two groups open a session in each (with that group in the header) and number
    /// each session's writes from 1; a write whose answer is lost is resent with the same
    /// session and sequence number of its own group (and, as the group has not yet answered a
    /// write of it, still opening it).
    #[tokio::test(start_paused = true)]
    async fn sessions_are_per_group_and_a_lost_answer_is_resent_with_the_same_seq() {
        let spec = sharded_spec(4, 1);
        let ring = Ring::new(spec.clone()).unwrap();
        let lost = Arc::new(Mutex::new(BTreeSet::new()));
        let cluster = FakeCluster::with_headers(move |_, _, request| {
            let session = session_of(request).unwrap();
            // The first answer of each session is lost (the connection drops).
            if lost.lock().unwrap().insert(session.client_id) {
                return None;
            }
            Some(Response::Written {
                version: session.seq,
            })
        });
        *cluster.ring.lock().unwrap() = spec;
        let client = cluster.client(&["a"]);
        let one = "key0".to_string();
        let other = (1..)
            .map(|i| format!("key{i}"))
            .find(|key| ring.shard_for_key(key.as_bytes()) != ring.shard_for_key(b"key0"))
            .unwrap();
        let (g1, g2) = (
            ring.shard_for_key(one.as_bytes()),
            ring.shard_for_key(other.as_bytes()),
        );
        assert_eq!(client.put(one.as_str(), "v").await, Ok(1));
        assert_eq!(client.put(other.as_str(), "v").await, Ok(1));
        assert_eq!(client.put(one.as_str(), "w").await, Ok(2));
        let (id1, id2) = (
            client.client_id_in(g1).unwrap(),
            client.client_id_in(g2).unwrap(),
        );
        assert_ne!(id1, id2);
        let received = cluster.received_with_headers();
        assert!(
            !received
                .iter()
                .any(|(_, _, r)| *r == Request::RegisterSession),
            "sessions open with their first write"
        );
        let writes: Vec<(u64, u64, u64, bool)> = received
            .iter()
            .filter_map(|(_, header, r)| {
                session_of(r).map(|s| (header.group, s.client_id, s.seq, s.opened_after.is_some()))
            })
            .collect();
        assert_eq!(
            writes,
            [
                (g1, id1, 1, true),
                (g1, id1, 1, true),
                (g2, id2, 1, true),
                (g2, id2, 1, true),
                (g1, id1, 2, false)
            ],
            "each group's session numbers its own writes, a resend keeps its seq"
        );
    }

    /// A scan asks every shard, page after page (continuing after the last key while the page
    /// says there is more), and merges the shards' keys in order, cut at the limit.
    #[tokio::test(start_paused = true)]
    async fn a_scan_pages_through_every_shard_and_merges_in_key_order() {
        let spec = sharded_spec(4, 1);
        let ring = Ring::new(spec.clone()).unwrap();
        let keys: Vec<String> = (0..40).map(|i| format!("p/{i:02}")).collect();
        let by_group = {
            let ring = ring.clone();
            let keys = keys.clone();
            move |group: u64| -> Vec<Vec<u8>> {
                keys.iter()
                    .filter(|k| ring.shard_for_key(k.as_bytes()) == group)
                    .map(|k| k.clone().into_bytes())
                    .collect()
            }
        };
        // Each node answers at most 3 entries a page, whatever the limit asked.
        let cluster = FakeCluster::with_headers(move |_, header, request| match request {
            Request::Scan {
                start_after, limit, ..
            } => {
                let rest: Vec<Vec<u8>> = by_group(header.group)
                    .into_iter()
                    .filter(|k| start_after.as_ref().is_none_or(|after| k > after))
                    .collect();
                let page = rest.len().min(3).min(*limit as usize);
                Some(Response::Entries {
                    entries: rest[..page]
                        .iter()
                        .map(|k| {
                            let value = Versioned {
                                value: k.clone(),
                                version: 1,
                            };
                            (k.clone(), value)
                        })
                        .collect(),
                    more: rest.len() > page,
                })
            }
            _ => Some(refusal(ErrorKind::Invalid)),
        });
        *cluster.ring.lock().unwrap() = spec;
        let client = cluster.client(&["a"]);
        let all = client
            .scan("p/", 1000, ReadLevel::Linearizable)
            .await
            .unwrap();
        let expected: Vec<Vec<u8>> = keys.iter().map(|k| k.clone().into_bytes()).collect();
        let got: Vec<Vec<u8>> = all.entries.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(got, expected);
        assert!(!all.truncated);
        let scans = cluster
            .received()
            .iter()
            .filter(|(_, r)| matches!(r, Request::Scan { .. }))
            .count();
        assert!(scans > 4, "paged: {scans} requests for 4 shards");

        let cut = client.scan("p/", 7, ReadLevel::Linearizable).await.unwrap();
        let got: Vec<Vec<u8>> = cut.entries.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(got, expected[..7]);
        assert!(cut.truncated);
    }
}
