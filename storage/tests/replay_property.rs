//! Property tests of the log-structured design: replaying the durable log (from a snapshot plus
//! the entries after it) rebuilds exactly the state that applying the operations directly gives.
//! That is determinism, not correctness: the machine is compared with itself. Its outcomes are
//! checked against an independent model in `state_machine_oracle.rs`.

use proptest::prelude::*;
use storage::kv::{Command, Expectation, Proposal, SessionRef, StateMachine};
use storage::{codec, LogStore, SnapshotPoint, StdFs, StoredEntry, WalOptions};

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"a".to_vec(),
        b"b".to_vec(),
        b"c".to_vec(),
        b"long-key".to_vec(),
    ])
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (key(), prop::collection::vec(any::<u8>(), 0..20))
            .prop_map(|(key, value)| Command::Put { key, value }),
        key().prop_map(|key| Command::Delete { key }),
        key().prop_map(|key| Command::Get { key }),
        (
            key(),
            prop::collection::vec(any::<u8>(), 0..3),
            prop::collection::vec(any::<u8>(), 0..5)
        )
            .prop_map(|(key, expected, new_value)| Command::Cas {
                key,
                expect: Expectation::Value(expected),
                new_value
            }),
        (key(), 0u64..30, prop::collection::vec(any::<u8>(), 0..5)).prop_map(
            |(key, version, new_value)| Command::Cas {
                key,
                expect: Expectation::Version(version),
                new_value
            }
        ),
        (key(), prop::collection::vec(any::<u8>(), 0..5)).prop_map(|(key, new_value)| {
            Command::Cas {
                key,
                expect: Expectation::Absent,
                new_value,
            }
        }),
    ]
}

fn proposal() -> impl Strategy<Value = Proposal> {
    // Session ids are log indexes of registrations: small ones hit registered sessions often.
    (command(), prop::option::of((1u64..8, 1u64..6))).prop_map(|(command, session)| Proposal {
        command,
        // Retries happen: the same (client, seq) may be proposed more than once.
        session: session.map(|(client_id, seq)| SessionRef {
            client_id,
            seq,
            first_unacked_seq: 1,
        }),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn replaying_the_log_rebuilds_the_directly_applied_state(
        proposals in prop::collection::vec(proposal(), 1..60),
        batch_size in 1usize..8,
        snapshot_at in prop::option::of(0usize..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut direct = StateMachine::new();
        let mut outcomes = Vec::new();
        {
            let options = WalOptions { segment_max_bytes: 512, ..WalOptions::default() };
            let (mut log, _) = LogStore::open(StdFs::shared(), dir.path(), options).unwrap();
            let entries: Vec<StoredEntry> = proposals.iter().enumerate().map(|(i, p)| StoredEntry {
                index: i as u64 + 1,
                term: 1,
                payload: codec::encode(p, "proposal").unwrap(),
            }).collect();
            for batch in entries.chunks(batch_size) {
                log.append(None, batch).unwrap();
                for entry in batch {
                    outcomes.push(direct.apply(entry.index, &proposals[entry.index as usize - 1]));
                    if snapshot_at == Some(entry.index as usize) {
                        let point = SnapshotPoint { last_index: entry.index, last_term: 1 };
                        log.save_snapshot(point, &direct.to_snapshot().unwrap(), false).unwrap();
                    }
                }
            }
        }
        // Rebuild from disk, as a restarted node does.
        let (_, recovered) = LogStore::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap();
        let mut rebuilt = match &recovered.snapshot {
            Some(snapshot) => StateMachine::from_snapshot(snapshot.data()).unwrap(),
            None => StateMachine::new(),
        };
        prop_assert_eq!(rebuilt.applied_index() as usize + recovered.entries.len(), proposals.len());
        for entry in &recovered.entries {
            let proposal: Proposal = codec::decode(&entry.payload, "proposal").unwrap();
            let outcome = rebuilt.apply(entry.index, &proposal);
            prop_assert_eq!(&outcome, &outcomes[entry.index as usize - 1]);
        }
        prop_assert_eq!(rebuilt.digest(), direct.digest());
        prop_assert_eq!(rebuilt, direct);
    }
}

#[test]
fn a_retried_write_applies_once_and_versions_strictly_increase() {
    let mut machine = StateMachine::new();
    let registered = machine.apply(
        1,
        &Proposal {
            session: None,
            command: Command::RegisterSession,
        },
    );
    assert_eq!(
        registered,
        storage::kv::Outcome::SessionRegistered { client_id: 1 }
    );
    let put = |seq, value: &[u8]| Proposal {
        session: Some(SessionRef {
            client_id: 1,
            seq,
            first_unacked_seq: 1,
        }),
        command: Command::Put {
            key: b"k".to_vec(),
            value: value.to_vec(),
        },
    };
    let first = machine.apply(2, &put(1, b"one"));
    machine.apply(3, &put(2, b"two"));
    // A retry of request 1 after request 2: the cached outcome, not a third write.
    assert_eq!(machine.apply(4, &put(1, b"one")), first);
    assert_eq!(machine.get(b"k").unwrap().value, b"two");
    assert_eq!(machine.get(b"k").unwrap().version, 3);
    // Once acknowledged (first_unacked_seq past it), the outcome is forgotten: a late retry is refused.
    let ack = Proposal {
        session: Some(SessionRef {
            client_id: 1,
            seq: 3,
            first_unacked_seq: 3,
        }),
        ..put(3, b"three")
    };
    machine.apply(5, &ack);
    assert_eq!(
        machine.apply(6, &put(1, b"one")),
        storage::kv::Outcome::SessionExpired
    );
    assert_eq!(machine.get(b"k").unwrap().version, 5);
    // A session nobody registered (or one evicted) never executes a write.
    let stranger = Proposal {
        session: Some(SessionRef {
            client_id: 99,
            seq: 1,
            first_unacked_seq: 1,
        }),
        ..put(1, b"x")
    };
    assert_eq!(
        machine.apply(7, &stranger),
        storage::kv::Outcome::SessionExpired
    );
    assert_eq!(machine.get(b"k").unwrap().version, 5);
}

#[test]
fn a_replaced_log_is_not_resurrected_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let entry = |index, term| StoredEntry {
        index,
        term,
        payload: vec![index as u8, term as u8],
    };
    {
        let (mut log, _) =
            LogStore::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap();
        log.append(None, &(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        // A conflicting suffix from a new leader overwrites 6..=10.
        log.append(None, &[entry(6, 2), entry(7, 2)]).unwrap();
        // A snapshot from the leader at 5 replaces the log entirely.
        log.save_snapshot(
            SnapshotPoint {
                last_index: 5,
                last_term: 1,
            },
            b"state",
            true,
        )
        .unwrap();
        log.append(None, &[entry(6, 3)]).unwrap();
    }
    let (_, recovered) =
        LogStore::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap();
    assert_eq!(recovered.snapshot.as_ref().unwrap().data(), b"state");
    assert_eq!(recovered.entries, vec![entry(6, 3)]);
}

#[test]
fn a_purge_that_keeps_overwritten_entries_still_reopens() {
    // Found in review: the oldest segment kept after a snapshot can start with entries a new
    // leader overwrote later, at indexes past the snapshot. Replay must not call that a gap.
    let dir = tempfile::tempdir().unwrap();
    let entry = |index, term| StoredEntry {
        index,
        term,
        payload: vec![7u8; 40],
    };
    let options = || WalOptions {
        segment_max_bytes: 200,
        ..WalOptions::default()
    };
    {
        let (mut log, _) = LogStore::open(StdFs::shared(), dir.path(), options()).unwrap();
        for index in 1..=10 {
            log.append(None, &[entry(index, 1)]).unwrap();
        }
        // One at a time, so the segment holding entry 10 (dead) also holds the new entry 3.
        for index in 3..=5 {
            log.append(None, &[entry(index, 2)]).unwrap();
        }
        log.save_snapshot(
            SnapshotPoint {
                last_index: 2,
                last_term: 1,
            },
            b"state",
            false,
        )
        .unwrap();
        assert!(log.wal().segment_count() > 1);
    }
    let (_, recovered) = LogStore::open(StdFs::shared(), dir.path(), options()).unwrap();
    assert_eq!(
        recovered.entries,
        vec![entry(3, 2), entry(4, 2), entry(5, 2)]
    );
}
