//! The replicated key-value state machine: an ordered map of key → (value, version), and the
//! client sessions that make retried writes apply exactly once.
//!
//! It is a pure function of the log: [`StateMachine::apply`] takes a committed entry's index and
//! its [`Proposal`] and returns the [`Outcome`], touching no clock, no randomness and no I/O, so
//! that every replica that applies the same log from the same snapshot reaches the same state
//! (checked by [`StateMachine::digest`]). A key's version is the log index of the write that last
//! set it, so versions strictly increase across the whole store.
//!
//! Sessions (Raft thesis §6.3): a client first registers a session ([`Command::RegisterSession`];
//! its id is the log index of that entry), then each write carries the id and a sequence number.
//! The machine caches each session's outcomes until the client acknowledges them (via
//! `first_unacked_seq`), so a write retried after a lost reply returns the cached outcome instead
//! of applying twice. A write naming a session the machine does not hold is refused with
//! [`Outcome::SessionExpired`], never executed: it may be the retry of a write applied before
//! the session expired. Sessions expire deterministically: at most [`MAX_SESSIONS`] are kept, and
//! the one least recently used (by log index) is evicted first.
//!
//! A session can also open with its first write, in the same entry
//! ([`Command::OpenSessionWith`]): the client chooses the id (at or above
//! [`CLIENT_CHOSEN_SESSION_IDS`], below which ids are log indexes), so it can retry that first
//! write under the same id. One case needs care: a retry arriving after the session was
//! applied *and evicted* would open it afresh and apply the write twice. The request therefore
//! names `opened_after`, a log index the client saw before it first sent the write, so the write
//! can only have applied after it. No eviction has happened while fewer than [`MAX_SESSIONS`]
//! sessions are held (eviction only makes room in a full table), and every evicted session was
//! last active at or before the least recently active session still held (each eviction took
//! the least recent); so a session is opened only if the table is not full or `opened_after`
//! is at least that least recent activity. Otherwise the write is refused with
//! [`Outcome::SessionExpired`], never executed.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::Result;

/// Sessions kept at most; the least recently used is evicted beyond this.
pub const MAX_SESSIONS: usize = 10_000;
/// Outcomes a session may hold unacknowledged (a client's writes in flight at once).
pub const MAX_SESSION_WINDOW: u64 = 1024;
/// Session ids from here up are chosen by clients ([`Command::OpenSessionWith`]); ids below are
/// the log indexes of [`Command::RegisterSession`] entries, so the two never collide.
pub const CLIENT_CHOSEN_SESSION_IDS: u64 = 1 << 63;

/// A value and the version (log index) of the write that set it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Versioned {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub version: u64,
}

/// What a compare-and-swap requires of the key's current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expectation {
    /// The key holds exactly this value.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The key exists at exactly this version.
    Version(u64),
    /// The key does not exist.
    Absent,
}

/// An operation on the store, as it is written into the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Read a key through the log (a linearizable read without ReadIndex). The node never
    /// proposes one; see [`Command::is_deduplicated_by_session`].
    Get {
        key: Vec<u8>,
    },
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Set `key` to `new_value` if `expect` holds.
    Cas {
        key: Vec<u8>,
        expect: Expectation,
        #[serde(with = "serde_bytes")]
        new_value: Vec<u8>,
    },
    /// Open a client session; its id is this entry's log index (unique, the same on every replica).
    RegisterSession,
    /// Open the proposal's session (an id the client chose) unless it is open, then run
    /// `command` in it: a session and its first write in one entry. `opened_after` is a log
    /// index the client saw before it first sent the write (see the module's documentation).
    OpenSessionWith {
        opened_after: u64,
        command: Box<Command>,
    },
}

impl Command {
    /// Whether a session de-duplicates the command (Raft thesis §6.3): its outcome is cached
    /// under the session's sequence number, so a retried proposal is answered, not run again.
    /// Everything but a `Get`, which changes nothing and may simply run twice.
    ///
    /// Not to be confused with the protocol's `Request::is_write` (whether a client's request may
    /// have changed data, for its retry logic). The node never proposes a `Get` (reads go through
    /// ReadIndex or the lease); the variant stays because the enum's tags are on disk (a `Get` is
    /// tag 0) and the state machine's tests drive reads through the log.
    pub fn is_deduplicated_by_session(&self) -> bool {
        !matches!(self, Command::Get { .. })
    }
}

/// A client's identity for exactly-once writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRef {
    /// The session id: the log index of the entry that registered the session
    /// (`Command::RegisterSession`), or, at or above [`CLIENT_CHOSEN_SESSION_IDS`], an id the
    /// client chose and opened with a write (`Command::OpenSessionWith`).
    pub client_id: u64,
    /// This request's number; a retry reuses it.
    pub seq: u64,
    /// Every request below this number has been answered to the client: forget their outcomes.
    pub first_unacked_seq: u64,
}

/// One log entry's worth of work for the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub session: Option<SessionRef>,
    pub command: Command,
}

/// The result of applying a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// A get's answer.
    Value(Option<Versioned>),
    /// A put or successful cas; the key's new version.
    Written { version: u64 },
    /// A delete; whether the key existed.
    Deleted { existed: bool },
    /// A cas whose expectation did not hold; the key's current state.
    CasMismatch { current: Option<Versioned> },
    /// The session's outcome for this sequence number was already acknowledged and forgotten,
    /// or the session expired: the request cannot be answered exactly once.
    SessionExpired,
    /// The client has more than [`MAX_SESSION_WINDOW`] writes in flight.
    SessionWindowFull,
    /// A session was opened with this id.
    SessionRegistered { client_id: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Session {
    /// Outcomes not yet acknowledged, by sequence number.
    outcomes: BTreeMap<u64, Outcome>,
    /// Requests below this were acknowledged.
    first_unacked_seq: u64,
    /// The log index of the session's last request (for least-recently-used eviction).
    last_active_index: u64,
}

/// The key-value state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    /// A persistent map: cloning the state machine shares its nodes (O(1)), so a snapshot is
    /// cut on the node's loop and encoded off it while applying goes on.
    data: imbl::OrdMap<Vec<u8>, Versioned>,
    sessions: BTreeMap<u64, Session>,
    applied_index: u64,
}

impl StateMachine {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Reads a key from the local state (no consensus involved).
    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.data.get(key)
    }

    /// The keys starting with `prefix` (after `start_after`, if given), in key order, from the
    /// local state (no consensus involved).
    pub fn scan<'a>(
        &'a self,
        prefix: &'a [u8],
        start_after: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a Versioned)> + 'a {
        use std::ops::Bound;
        let start = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        self.data
            .range((start, Bound::<Vec<u8>>::Unbounded))
            .take_while(move |(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.as_slice(), value))
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Records that the entry at `index` carried no command (a leader's no-op).
    pub fn apply_noop(&mut self, index: u64) {
        debug_assert!(
            index > self.applied_index,
            "entries apply in order, exactly once"
        );
        self.applied_index = index;
    }

    /// Applies the committed entry at `index`. Entries must be applied in increasing order.
    pub fn apply(&mut self, index: u64, proposal: &Proposal) -> Outcome {
        self.apply_planted(index, proposal, None)
    }

    /// [`StateMachine::apply`] with a deliberate bug planted (see [`crate::planted`]); the bug
    /// is ignored without the `planted-bugs` feature.
    pub fn apply_planted(
        &mut self,
        index: u64,
        proposal: &Proposal,
        planted_bug: Option<crate::planted::StorageBug>,
    ) -> Outcome {
        debug_assert!(
            index > self.applied_index,
            "entry {index} applied after {}: entries apply in order, exactly once",
            self.applied_index
        );
        self.applied_index = index;
        let Some(session_ref) = proposal.session else {
            return self.execute(index, &proposal.command);
        };
        if !proposal.command.is_deduplicated_by_session() {
            return self.execute(index, &proposal.command);
        }
        let command = match &proposal.command {
            Command::OpenSessionWith {
                opened_after,
                command,
            } => {
                if !self.sessions.contains_key(&session_ref.client_id) {
                    if !self.may_open(session_ref.client_id, *opened_after) {
                        return Outcome::SessionExpired;
                    }
                    self.open_session(session_ref.client_id, index);
                }
                command.as_ref()
            }
            command => command,
        };
        // Sessions exist only once registered: an unknown one was never opened or has expired,
        // and executing the write could apply it a second time.
        let Some(session) = self.sessions.get_mut(&session_ref.client_id) else {
            return Outcome::SessionExpired;
        };
        session.last_active_index = index;
        if session_ref.first_unacked_seq > session.first_unacked_seq {
            session.first_unacked_seq = session_ref.first_unacked_seq;
            session.outcomes = session.outcomes.split_off(&session_ref.first_unacked_seq);
        }
        if session_ref.seq < session.first_unacked_seq {
            return Outcome::SessionExpired;
        }
        if let Some(cached) = session.outcomes.get(&session_ref.seq) {
            return cached.clone();
        }
        if session_ref.seq >= session.first_unacked_seq + MAX_SESSION_WINDOW {
            return Outcome::SessionWindowFull;
        }
        let outcome = self.execute(index, command);
        // Planted (thesis §6.3): the outcome is not cached, so a retry executes again.
        let forget = crate::planted::active(
            planted_bug,
            crate::planted::StorageBug::SessionOutcomeNotCached,
        );
        if let Some(session) = self
            .sessions
            .get_mut(&session_ref.client_id)
            .filter(|_| !forget)
        {
            session.outcomes.insert(session_ref.seq, outcome.clone());
        }
        outcome
    }

    /// Whether a session the client named `client_id` may be opened by a write it first sent
    /// after seeing `opened_after`: only if that write cannot have been applied already under
    /// a session since evicted (see the module's documentation).
    fn may_open(&self, client_id: u64, opened_after: u64) -> bool {
        if client_id < CLIENT_CHOSEN_SESSION_IDS {
            return false; // an id the log assigns: not the client's to open
        }
        if self.sessions.len() < MAX_SESSIONS {
            return true; // never full, so nothing was ever evicted
        }
        let least_recent = self
            .sessions
            .values()
            .map(|session| session.last_active_index)
            .min()
            .unwrap_or(0);
        opened_after >= least_recent
    }

    fn open_session(&mut self, client_id: u64, index: u64) {
        self.evict_sessions_beyond(MAX_SESSIONS - 1);
        self.sessions.insert(
            client_id,
            Session {
                outcomes: BTreeMap::new(),
                first_unacked_seq: 1,
                last_active_index: index,
            },
        );
    }

    fn evict_sessions_beyond(&mut self, keep: usize) {
        while self.sessions.len() > keep {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(client_id, session)| (session.last_active_index, **client_id))
                .map(|(client_id, _)| *client_id);
            match oldest {
                Some(client_id) => self.sessions.remove(&client_id),
                None => break,
            };
        }
    }

    fn execute(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::RegisterSession => {
                self.open_session(index, index);
                Outcome::SessionRegistered { client_id: index }
            }
            // Opening needs the proposal's session (see `apply_planted`); without one, or
            // nested, it is refused, never executed.
            Command::OpenSessionWith { .. } => Outcome::SessionExpired,
            Command::Get { key } => Outcome::Value(self.data.get(key).cloned()),
            Command::Put { key, value } => self.write(index, key, value),
            Command::Delete { key } => Outcome::Deleted {
                existed: self.data.remove(key).is_some(),
            },
            Command::Cas {
                key,
                expect,
                new_value,
            } => {
                let current = self.data.get(key);
                let holds = match (expect, current) {
                    (Expectation::Absent, None) => true,
                    (Expectation::Value(expected), Some(current)) => *expected == current.value,
                    (Expectation::Version(expected), Some(current)) => *expected == current.version,
                    _ => false,
                };
                if holds {
                    self.write(index, key, new_value)
                } else {
                    Outcome::CasMismatch {
                        current: current.cloned(),
                    }
                }
            }
        }
    }

    fn write(&mut self, index: u64, key: &[u8], value: &[u8]) -> Outcome {
        let versioned = Versioned {
            value: value.to_vec(),
            version: index,
        };
        if let Some(previous) = self.data.insert(key.to_vec(), versioned) {
            debug_assert!(previous.version < index, "versions strictly increase");
        }
        Outcome::Written { version: index }
    }

    /// Serializes the whole state (data, sessions, applied index) for a snapshot.
    pub fn to_snapshot(&self) -> Result<Vec<u8>> {
        codec::encode(self, "state machine snapshot")
    }

    /// Restores a state serialized by [`StateMachine::to_snapshot`].
    pub fn from_snapshot(bytes: &[u8]) -> Result<StateMachine> {
        codec::decode(bytes, "state machine snapshot")
    }

    /// A digest of the whole state, equal on replicas that applied the same log.
    pub fn digest(&self) -> u64 {
        // DefaultHasher::new() is SipHash with fixed keys: the same in every process of one build.
        let mut hasher = std::hash::DefaultHasher::new();
        self.applied_index.hash(&mut hasher);
        self.data.hash(&mut hasher);
        self.sessions.hash(&mut hasher);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_snapshot_encoding_is_the_one_a_btree_map_gave_and_a_clone_is_unaffected_by_later_writes()
    {
        // Snapshots written before the state moved to a persistent map must still load: the
        // same fields, the map encoded as the same sequence of (key, value) pairs.
        #[derive(Serialize)]
        struct BeforePersistentMap<'a> {
            data: BTreeMap<Vec<u8>, Versioned>,
            sessions: &'a BTreeMap<u64, Session>,
            applied_index: u64,
        }
        let mut machine = StateMachine::new();
        for index in 1..=50u64 {
            let proposal = Proposal {
                session: None,
                command: Command::Put {
                    key: format!("k{}", index % 20).into_bytes(),
                    value: index.to_be_bytes().to_vec(),
                },
            };
            machine.apply(index, &proposal);
        }
        let before = BeforePersistentMap {
            data: machine
                .data
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
            sessions: &machine.sessions,
            applied_index: machine.applied_index,
        };
        let encoded = machine.to_snapshot().expect("encode");
        assert_eq!(
            encoded,
            codec::encode(&before, "old layout").expect("encode")
        );
        // A cut for a snapshot, then more writes: the cut still encodes the state it was cut at.
        let cut = machine.clone();
        machine.apply(
            51,
            &Proposal {
                session: None,
                command: Command::Delete {
                    key: b"k1".to_vec(),
                },
            },
        );
        assert_eq!(cut.to_snapshot().expect("encode"), encoded);
        assert_eq!(StateMachine::from_snapshot(&encoded).expect("decode"), cut);
    }

    use super::*;

    /// The commands' tags are in every log on disk: reordering, removing or inserting a variant
    /// would make an old log decode as other commands.
    #[test]
    fn command_tags_on_disk_are_pinned() {
        let key = b"k".to_vec();
        let commands = [
            Command::Get { key: key.clone() },
            Command::Put {
                key: key.clone(),
                value: vec![],
            },
            Command::Delete { key: key.clone() },
            Command::Cas {
                key: key.clone(),
                expect: Expectation::Absent,
                new_value: vec![],
            },
            Command::RegisterSession,
            Command::OpenSessionWith {
                opened_after: 0,
                command: Box::new(Command::Delete { key }),
            },
        ];
        for (tag, command) in commands.iter().enumerate() {
            let bytes = crate::codec::encode(command, "command").unwrap();
            assert_eq!(usize::from(bytes[0]), tag, "{command:?}");
        }
        let dedup: Vec<bool> = commands
            .iter()
            .map(Command::is_deduplicated_by_session)
            .collect();
        assert_eq!(dedup, [false, true, true, true, true, true]);
    }
}

#[cfg(test)]
mod opening_tests {
    use super::*;

    const CHOSEN: u64 = CLIENT_CHOSEN_SESSION_IDS + 42;

    fn opening(client_id: u64, seq: u64, opened_after: u64, key: &str, value: &str) -> Proposal {
        Proposal {
            session: Some(SessionRef {
                client_id,
                seq,
                first_unacked_seq: 1,
            }),
            command: Command::OpenSessionWith {
                opened_after,
                command: Box::new(Command::Put {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                }),
            },
        }
    }

    fn register(machine: &mut StateMachine, index: u64) {
        let proposal = Proposal {
            session: None,
            command: Command::RegisterSession,
        };
        machine.apply(index, &proposal);
    }

    #[test]
    fn a_session_opens_with_its_first_write_in_one_entry_and_a_retry_is_answered_not_rerun() {
        let mut machine = StateMachine::new();
        let first = opening(CHOSEN, 1, 0, "k", "v");
        assert_eq!(machine.apply(1, &first), Outcome::Written { version: 1 });
        // The reply was lost: the client sends the same request again.
        assert_eq!(machine.apply(2, &first), Outcome::Written { version: 1 });
        assert_eq!(machine.get(b"k").map(|v| v.version), Some(1));
        // Later writes of the session need no opening.
        let second = Proposal {
            session: Some(SessionRef {
                client_id: CHOSEN,
                seq: 2,
                first_unacked_seq: 2,
            }),
            command: Command::Put {
                key: b"k".to_vec(),
                value: b"w".to_vec(),
            },
        };
        assert_eq!(machine.apply(3, &second), Outcome::Written { version: 3 });
        // Two first writes sent at once, the second arriving first: both open the same session.
        let (a, b) = (
            opening(CHOSEN + 1, 1, 0, "a", "1"),
            opening(CHOSEN + 1, 2, 0, "b", "2"),
        );
        assert_eq!(machine.apply(4, &b), Outcome::Written { version: 4 });
        assert_eq!(machine.apply(5, &a), Outcome::Written { version: 5 });
        assert_eq!(machine.apply(6, &b), Outcome::Written { version: 4 });
    }

    #[test]
    fn ids_the_log_assigns_cannot_be_opened_by_a_client() {
        let mut machine = StateMachine::new();
        let proposal = opening(7, 1, 0, "k", "v");
        assert_eq!(machine.apply(1, &proposal), Outcome::SessionExpired);
        assert_eq!(machine.get(b"k"), None);
        // Nor can an opening run without a session.
        let sessionless = Proposal {
            session: None,
            ..opening(CHOSEN, 1, 0, "k", "v")
        };
        assert_eq!(machine.apply(2, &sessionless), Outcome::SessionExpired);
        assert_eq!(machine.get(b"k"), None);
    }

    #[test]
    fn a_retried_first_write_whose_session_was_evicted_is_refused_not_applied_twice() {
        let mut machine = StateMachine::new();
        // The first write applies at index 10 (the client saw index 5 before sending it)...
        machine.applied_index = 9;
        let first = opening(CHOSEN, 1, 5, "k", "v");
        assert_eq!(machine.apply(10, &first), Outcome::Written { version: 10 });
        // ...then enough other sessions open to fill the table and evict it.
        let mut index = 10;
        for _ in 0..MAX_SESSIONS {
            index += 1;
            register(&mut machine, index);
        }
        assert_eq!(machine.sessions.len(), MAX_SESSIONS);
        assert!(!machine.sessions.contains_key(&CHOSEN), "evicted");
        // Its retry arrives: it might have applied (it did), so it is refused.
        index += 1;
        assert_eq!(machine.apply(index, &first), Outcome::SessionExpired);
        assert_eq!(
            machine.get(b"k").map(|v| v.version),
            Some(10),
            "not applied twice"
        );
        // A new client that saw a recent index opens its session in the full table.
        index += 1;
        let fresh = opening(CHOSEN + 1, 1, index - 1, "n", "v");
        assert_eq!(
            machine.apply(index, &fresh),
            Outcome::Written { version: index }
        );
        // One that saw only an index older than every session still held is refused.
        index += 1;
        let stale = opening(CHOSEN + 2, 1, 5, "s", "v");
        assert_eq!(machine.apply(index, &stale), Outcome::SessionExpired);
        assert_eq!(machine.get(b"s"), None);
    }
}
