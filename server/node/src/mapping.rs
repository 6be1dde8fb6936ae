//! The one home for the mappings between the mirrored types of the crates a node joins.
//!
//! Each crate owns its types so that it depends on no other: `consensus` has its `Entry` and
//! `HardState`, `storage` its `StoredEntry` and `HardState` (what is made durable), the state
//! machine its `Expectation`, `SessionRef` and `Versioned`, and the wire protocol its `Expect`,
//! `Session` and `Versioned` (what clients see). The node is where they meet; every conversion
//! between them lives here, so a field added to one side has one place to be mapped.

use consensus::{Entry, EntryPayload};
use ringleader_protocol::{ErrorKind, Expect, Response, Session, Versioned};
use serde::Serialize;
use storage::kv::{Expectation, Outcome, SessionRef};
use storage::{codec, StorageError, StoredEntry, StoredEntryRef};

// Consensus ↔ storage: what is made durable.

/// A Raft entry's payload borrowed, encoded as [`EntryPayload`] is (same tags, same bytes) but
/// with its command copied in one piece rather than byte by byte, as serde does a `Vec<u8>`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename = "EntryPayload")]
pub enum PayloadRef<'a> {
    Noop,
    Command(codec::Bytes<'a>),
}

/// A Raft entry as the log stores it, borrowed: [`storage::LogStore::append_borrowed`] encodes
/// its payload straight into the WAL record (the proposal's bytes are copied once, into the
/// record, and encoded nowhere else on the way).
pub fn to_stored_entry_ref(entry: &Entry) -> StoredEntryRef<PayloadRef<'_>> {
    StoredEntryRef {
        index: entry.index,
        term: entry.term,
        payload: match &entry.payload {
            EntryPayload::Noop => PayloadRef::Noop,
            EntryPayload::Command(command) => PayloadRef::Command(codec::Bytes(command)),
        },
    }
}

/// A stored entry back as a Raft entry (its payload decoded).
pub fn from_stored_entry(stored: &StoredEntry) -> Result<Entry, StorageError> {
    Ok(Entry {
        index: stored.index,
        term: stored.term,
        payload: codec::decode(&stored.payload, "entry payload")?,
    })
}

/// Raft's hard state as the log stores it.
pub fn to_stored_hard_state(hard_state: &consensus::HardState) -> storage::HardState {
    storage::HardState {
        term: hard_state.term,
        vote: hard_state.vote,
        commit: hard_state.commit,
    }
}

/// The stored hard state back as Raft's.
pub fn from_stored_hard_state(hard_state: &storage::HardState) -> consensus::HardState {
    consensus::HardState {
        term: hard_state.term,
        vote: hard_state.vote,
        commit: hard_state.commit,
    }
}

// Protocol ↔ state machine: what clients see.

/// A compare-and-set's condition as the state machine checks it.
pub fn to_expectation(expect: Expect) -> Expectation {
    match expect {
        Expect::Value(value) => Expectation::Value(value),
        Expect::Version(version) => Expectation::Version(version),
        Expect::Absent => Expectation::Absent,
    }
}

/// A request's session as the state machine de-duplicates by it.
// The client and the state machine must agree where client-chosen session ids begin.
const _: () = assert!(
    ringleader_protocol::CLIENT_CHOSEN_SESSION_IDS == storage::kv::CLIENT_CHOSEN_SESSION_IDS
);

pub fn to_session_ref(session: Session) -> SessionRef {
    SessionRef {
        client_id: session.client_id,
        seq: session.seq,
        first_unacked_seq: session.first_unacked_seq,
    }
}

/// A stored value and its version, as a client receives it.
pub fn to_versioned(value: &storage::kv::Versioned) -> Versioned {
    Versioned {
        value: value.value.clone(),
        version: value.version,
    }
}

/// What applying a command did, as the answer to the client that asked for it.
pub fn to_response(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Value(value) => Response::Value(value.as_ref().map(to_versioned)),
        Outcome::Written { version } => Response::Written { version },
        Outcome::Deleted { existed } => Response::Deleted { existed },
        Outcome::CasMismatch { current } => Response::CasMismatch {
            current: current.as_ref().map(to_versioned),
        },
        Outcome::SessionExpired => Response::Error {
            kind: ErrorKind::SessionExpired,
            message: "the session expired".into(),
        },
        Outcome::SessionRegistered { client_id } => Response::SessionRegistered { client_id },
        Outcome::SessionWindowFull => Response::Error {
            kind: ErrorKind::Unavailable,
            message: "too many writes in flight for this session".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use consensus::EntryPayload;

    use super::*;

    #[test]
    fn entries_and_hard_states_round_trip_through_their_stored_forms() {
        for payload in [
            EntryPayload::Noop,
            EntryPayload::Command(Vec::new()),
            EntryPayload::Command(b"put k v".to_vec()),
            // A length of more than one varint byte.
            EntryPayload::Command(vec![7; 70_000]),
        ] {
            let entry = Entry {
                index: 7,
                term: 3,
                payload,
            };
            let borrowed = to_stored_entry_ref(&entry);
            assert_eq!((borrowed.index, borrowed.term), (7, 3));
            // The mirror encodes as the payload itself does: logs read back the same.
            let encoded = codec::encode(&borrowed.payload, "payload").unwrap();
            assert_eq!(encoded, codec::encode(&entry.payload, "payload").unwrap());
            let stored = StoredEntry {
                index: borrowed.index,
                term: borrowed.term,
                payload: encoded,
            };
            assert_eq!(from_stored_entry(&stored).unwrap(), entry);
        }
        let hard_state = consensus::HardState {
            term: 9,
            vote: Some(2),
            commit: 40,
        };
        assert_eq!(
            from_stored_hard_state(&to_stored_hard_state(&hard_state)),
            hard_state
        );
    }

    #[test]
    fn a_stored_payload_that_does_not_decode_is_an_error_not_a_panic() {
        let stored = StoredEntry {
            index: 1,
            term: 1,
            payload: vec![0xff; 3],
        };
        assert!(from_stored_entry(&stored).is_err());
    }
}
