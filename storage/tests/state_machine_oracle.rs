//! The state machine checked against an independent model: a plain `BTreeMap` of key → (value,
//! version) and a small session table, written from the documented behaviour (storage/src/kv.rs
//! module docs, docs/storage.md) rather than from the code, so that a wrong rule in the machine
//! shows up as a difference instead of being compared with itself (which is all
//! `replay_property.rs` does: replay versus direct application, determinism only).
//!
//! The rules the model encodes:
//! - a key's version is the log index of the write that last set it;
//! - put sets; delete removes and says whether the key existed; cas writes iff its expectation
//!   holds (the exact value, the exact version of an existing key, or absence), otherwise it
//!   reports the current state;
//! - `RegisterSession` opens a session whose id is its own log index; at most `MAX_SESSIONS` are
//!   kept, the least recently active (log index of its last write) evicted first;
//! - a write naming a session the machine does not hold is refused (`SessionExpired`) and not
//!   executed; otherwise it marks the session active, acknowledges (forgets) outcomes below its
//!   `first_unacked_seq`, refuses a seq already acknowledged (`SessionExpired`), returns the first
//!   outcome for a seq it has seen (a retry is not applied twice), refuses a seq at or beyond
//!   `first_unacked_seq + MAX_SESSION_WINDOW` (`SessionWindowFull`, not remembered), and executes
//!   anything else once, remembering the outcome;
//! - `OpenSessionWith { opened_after, command }` under a session the machine does not hold opens
//!   it (evicting as a registration does) and runs `command` in it, but only if the id is at or
//!   above `CLIENT_CHOSEN_SESSION_IDS` and the table is not full or `opened_after` is at least the
//!   least recent activity of the sessions held; otherwise it is refused (`SessionExpired`) and
//!   not executed. Under a session held, it is `command` with that session. Without a session
//!   it is refused;
//! - reads ignore the session; a no-op entry consumes its index and changes nothing;
//! - a machine restored from its snapshot carries on exactly where it was (sessions included).
//!
//! The generator reaches every one of these: clients are referred to by slot (resolved at run
//! time to the id their registration got), retries reuse small seqs, seqs near the window edge
//! are drawn on purpose, and half the cases start from a store already holding
//! `MAX_SESSIONS - 3` sessions so that registrations evict, including sessions the run still uses.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use storage::kv::{
    Command, Expectation, Outcome, Proposal, SessionRef, StateMachine, Versioned,
    CLIENT_CHOSEN_SESSION_IDS, MAX_SESSIONS, MAX_SESSION_WINDOW,
};

/// Keys drawn from a handful, so that operations collide.
const KEYS: [&[u8]; 3] = [b"a", b"b", b"long-key"];
/// Sessions opened before a prefilled case's operations: three short of the limit.
const PREFILLED_SESSIONS: u64 = MAX_SESSIONS as u64 - 3;
/// Prefilled sessions the operations may name (the oldest ones, first in line for eviction).
const PREFILLED_SLOTS: u64 = 3;

/// One session as the model sees it.
#[derive(Debug, Clone)]
struct ModelSession {
    /// Seqs below this were acknowledged by the client.
    acked_below: u64,
    /// The first outcome of each seq not yet acknowledged.
    remembered: BTreeMap<u64, Outcome>,
}

/// The oracle: data, sessions, and a recency list for eviction kept as its own ordered index
/// (last activity → client id), a different structure from the machine's scan.
#[derive(Debug, Clone, Default)]
struct Model {
    data: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
    sessions: BTreeMap<u64, ModelSession>,
    by_recency: BTreeMap<u64, u64>,
    last_active: BTreeMap<u64, u64>,
}

impl Model {
    fn current(&self, key: &[u8]) -> Option<Versioned> {
        self.data.get(key).map(|(value, version)| Versioned {
            value: value.clone(),
            version: *version,
        })
    }

    fn touch(&mut self, client_id: u64, index: u64) {
        if let Some(previous) = self.last_active.insert(client_id, index) {
            self.by_recency.remove(&previous);
        }
        self.by_recency.insert(index, client_id);
    }

    fn run(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::Get { key } => Outcome::Value(self.current(key)),
            Command::Put { key, value } => {
                self.data.insert(key.clone(), (value.clone(), index));
                Outcome::Written { version: index }
            }
            Command::Delete { key } => Outcome::Deleted {
                existed: self.data.remove(key).is_some(),
            },
            Command::Cas {
                key,
                expect,
                new_value,
            } => {
                let current = self.data.get(key);
                let holds = match expect {
                    Expectation::Absent => current.is_none(),
                    Expectation::Value(value) => current.is_some_and(|(v, _)| v == value),
                    Expectation::Version(version) => current.is_some_and(|(_, v)| v == version),
                };
                if holds {
                    self.data.insert(key.clone(), (new_value.clone(), index));
                    Outcome::Written { version: index }
                } else {
                    Outcome::CasMismatch {
                        current: self.current(key),
                    }
                }
            }
            Command::RegisterSession => {
                self.open(index, index);
                Outcome::SessionRegistered { client_id: index }
            }
            Command::OpenSessionWith { .. } => Outcome::SessionExpired,
        }
    }

    fn open(&mut self, client_id: u64, index: u64) {
        if self.sessions.len() >= MAX_SESSIONS {
            let (&oldest_at, &victim) = self.by_recency.iter().next().expect("a full table");
            self.by_recency.remove(&oldest_at);
            self.last_active.remove(&victim);
            self.sessions.remove(&victim);
        }
        self.sessions.insert(
            client_id,
            ModelSession {
                acked_below: 1,
                remembered: BTreeMap::new(),
            },
        );
        self.touch(client_id, index);
    }

    fn apply(&mut self, index: u64, proposal: &Proposal) -> Outcome {
        let Some(session) = proposal.session else {
            return self.run(index, &proposal.command);
        };
        if matches!(proposal.command, Command::Get { .. }) {
            return self.run(index, &proposal.command);
        }
        let command = match &proposal.command {
            Command::OpenSessionWith {
                opened_after,
                command,
            } => {
                if !self.sessions.contains_key(&session.client_id) {
                    let least_recent = self.by_recency.keys().next().copied().unwrap_or(0);
                    let may_open = session.client_id >= CLIENT_CHOSEN_SESSION_IDS
                        && (self.sessions.len() < MAX_SESSIONS || *opened_after >= least_recent);
                    if !may_open {
                        return Outcome::SessionExpired;
                    }
                    self.open(session.client_id, index);
                }
                command.as_ref()
            }
            command => command,
        };
        if !self.sessions.contains_key(&session.client_id) {
            return Outcome::SessionExpired;
        }
        self.touch(session.client_id, index);
        let state = self
            .sessions
            .get_mut(&session.client_id)
            .expect("checked above");
        state.acked_below = state.acked_below.max(session.first_unacked_seq);
        let acked_below = state.acked_below;
        state.remembered.retain(|&seq, _| seq >= acked_below);
        if session.seq < state.acked_below {
            return Outcome::SessionExpired;
        }
        if let Some(first) = state.remembered.get(&session.seq) {
            return first.clone();
        }
        if session.seq - state.acked_below >= MAX_SESSION_WINDOW {
            return Outcome::SessionWindowFull;
        }
        let outcome = self.run(index, command);
        self.sessions
            .get_mut(&session.client_id)
            .expect("a write does not evict")
            .remembered
            .insert(session.seq, outcome.clone());
        outcome
    }
}

/// A value from a tiny alphabet, so that cas-by-value finds equal values by chance too.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..3)
}

/// How a cas's expectation is chosen; the `Current*` forms are resolved against the model's state
/// when the operation runs, so that expectations hold (or miss by one) often.
#[derive(Debug, Clone)]
enum ExpectChoice {
    Absent,
    AnyValue(Vec<u8>),
    CurrentValue,
    AnyVersion(u64),
    /// The key's current version plus this (−1, 0 or +1).
    CurrentVersion(i64),
}

#[derive(Debug, Clone)]
enum Op {
    Get(usize),
    Put(usize, Vec<u8>),
    Delete(usize),
    Cas(usize, ExpectChoice, Vec<u8>),
    Register,
    /// A leader's no-op entry.
    Noop,
}

/// Which session a request names (if any): a slot among the sessions known to the run, and the
/// seq as an offset from its `first_unacked_seq`.
#[derive(Debug, Clone)]
struct SessionChoice {
    slot: usize,
    first_unacked_seq: u64,
    seq_offset: u64,
    /// The write opens a session the client chose: which of a few ids, and how far before the
    /// entry's index the client's `opened_after` is (past the index: 0).
    opening: Option<(u64, u64)>,
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    session: Option<SessionChoice>,
    /// The log index advances by this (entries the state machine never sees leave gaps).
    index_step: u64,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    prop_oneof![
        2 => key.clone().prop_map(Op::Get),
        4 => (key.clone(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key.clone().prop_map(Op::Delete),
        5 => (key, expect_choice(), value()).prop_map(|(k, e, v)| Op::Cas(k, e, v)),
        2 => Just(Op::Register),
        1 => Just(Op::Noop),
    ]
}

fn expect_choice() -> impl Strategy<Value = ExpectChoice> {
    prop_oneof![
        Just(ExpectChoice::Absent),
        value().prop_map(ExpectChoice::AnyValue),
        Just(ExpectChoice::CurrentValue),
        (0u64..40).prop_map(ExpectChoice::AnyVersion),
        (-1i64..=1).prop_map(ExpectChoice::CurrentVersion),
    ]
}

fn session_choice() -> impl Strategy<Value = SessionChoice> {
    let seq_offset = prop_oneof![
        // Retries and small windows: the same few seqs again and again.
        6 => 0u64..5,
        // The window's edge: the last seq accepted and the first refused.
        1 => (MAX_SESSION_WINDOW - 2)..(MAX_SESSION_WINDOW + 2),
    ];
    let opening = prop::option::weighted(
        0.3,
        (
            0u64..4,
            prop_oneof![Just(0u64), Just(1), 2u64..20, Just(u64::MAX)],
        ),
    );
    (0usize..8, 1u64..4, seq_offset, opening).prop_map(
        |(slot, first_unacked_seq, seq_offset, opening)| SessionChoice {
            slot,
            first_unacked_seq,
            seq_offset,
            opening,
        },
    )
}

fn step() -> impl Strategy<Value = Step> {
    (
        op(),
        prop::option::weighted(0.7, session_choice()),
        prop_oneof![4 => Just(1u64), 1 => 2u64..4],
    )
        .prop_map(|(op, session, index_step)| Step {
            op,
            session,
            index_step,
        })
}

/// A machine and a model holding `PREFILLED_SESSIONS` sessions (ids 1..=PREFILLED_SESSIONS), built
/// once and cloned by the cases that start full.
fn prefilled() -> &'static (StateMachine, Model) {
    static PREFILLED: OnceLock<(StateMachine, Model)> = OnceLock::new();
    PREFILLED.get_or_init(|| {
        let mut machine = StateMachine::new();
        let mut model = Model::default();
        let register = Proposal {
            session: None,
            command: Command::RegisterSession,
        };
        for index in 1..=PREFILLED_SESSIONS {
            let expected = model.apply(index, &register);
            assert_eq!(machine.apply(index, &register), expected);
        }
        (machine, model)
    })
}

/// Runs `steps` on the machine and the model side by side; the first difference fails the case.
/// Returns how many writes were refused as `SessionExpired` after an eviction and how many hit
/// `SessionWindowFull` (so that the test can check the generator reaches them).
///
/// With `restore_at`, the machine is replaced before that step by one restored from its own
/// snapshot, as a node restarting from a snapshot does: sessions and their remembered outcomes
/// must survive it (the model just goes on).
fn check_against_model(
    steps: &[Step],
    start_full: bool,
    restore_at: Option<usize>,
) -> Result<Reached, TestCaseError> {
    let (mut machine, mut model, mut index, mut slots) = if start_full {
        let (machine, model) = prefilled().clone();
        let slots: Vec<u64> = (1..=PREFILLED_SLOTS).collect();
        (machine, model, PREFILLED_SESSIONS, slots)
    } else {
        (StateMachine::new(), Model::default(), 0, Vec::new())
    };
    let mut reached = Reached::default();
    for (position, step) in steps.iter().enumerate() {
        if restore_at == Some(position) {
            let bytes = machine.to_snapshot().expect("encode a snapshot");
            machine = StateMachine::from_snapshot(&bytes).expect("decode a snapshot");
        }
        index += step.index_step;
        let key_of = |k: usize| KEYS[k].to_vec();
        let command = match &step.op {
            Op::Noop => {
                machine.apply_noop(index);
                continue;
            }
            Op::Get(k) => Command::Get { key: key_of(*k) },
            Op::Put(k, value) => Command::Put {
                key: key_of(*k),
                value: value.clone(),
            },
            Op::Delete(k) => Command::Delete { key: key_of(*k) },
            Op::Register => Command::RegisterSession,
            Op::Cas(k, choice, new_value) => {
                let current = model.current(KEYS[*k]);
                let expect = match choice {
                    ExpectChoice::Absent => Expectation::Absent,
                    ExpectChoice::AnyValue(value) => Expectation::Value(value.clone()),
                    ExpectChoice::CurrentValue => {
                        Expectation::Value(current.map(|c| c.value).unwrap_or_default())
                    }
                    ExpectChoice::AnyVersion(version) => Expectation::Version(*version),
                    ExpectChoice::CurrentVersion(delta) => Expectation::Version(
                        current
                            .map_or(index / 2, |c| c.version)
                            .saturating_add_signed(*delta),
                    ),
                };
                Command::Cas {
                    key: key_of(*k),
                    expect,
                    new_value: new_value.clone(),
                }
            }
        };
        // Registrations go without a session, as the client sends them.
        let (session, command) = match (&step.session, command) {
            (Some(choice), c) if c != Command::RegisterSession => match choice.opening {
                Some((id, before)) => (
                    Some(SessionRef {
                        client_id: CLIENT_CHOSEN_SESSION_IDS + id,
                        seq: choice.first_unacked_seq + choice.seq_offset,
                        first_unacked_seq: choice.first_unacked_seq,
                    }),
                    Command::OpenSessionWith {
                        opened_after: index.saturating_sub(before),
                        command: Box::new(c),
                    },
                ),
                None if !slots.is_empty() => (
                    Some(SessionRef {
                        client_id: slots[choice.slot % slots.len()],
                        seq: choice.first_unacked_seq + choice.seq_offset,
                        first_unacked_seq: choice.first_unacked_seq,
                    }),
                    c,
                ),
                None => (None, c),
            },
            (_, c) => (None, c),
        };
        let proposal = Proposal { session, command };
        let known_before = session.is_some_and(|s| model.sessions.contains_key(&s.client_id));
        let expected = model.apply(index, &proposal);
        let actual = machine.apply(index, &proposal);
        prop_assert_eq!(
            &actual,
            &expected,
            "step {} at index {}: {:?}",
            position,
            index,
            proposal
        );
        let opened = session.filter(|s| {
            s.client_id >= CLIENT_CHOSEN_SESSION_IDS && model.sessions.contains_key(&s.client_id)
        });
        if let Some(opened) = opened.filter(|s| !known_before && !slots.contains(&s.client_id)) {
            slots.push(opened.client_id);
        }
        let opening = matches!(proposal.command, Command::OpenSessionWith { .. });
        match &expected {
            Outcome::SessionRegistered { client_id } => slots.push(*client_id),
            Outcome::SessionExpired
                if !known_before && opening && model.sessions.len() >= MAX_SESSIONS =>
            {
                reached.openings_refused_in_a_full_table += 1;
            }
            Outcome::SessionExpired if !known_before && opening => {}
            Outcome::SessionExpired if !known_before => reached.evicted_refusals += 1,
            Outcome::SessionWindowFull => reached.window_full += 1,
            _ if !known_before && opening => reached.openings += 1,
            _ => {}
        }
        for key in KEYS {
            prop_assert_eq!(
                machine.get(key).cloned(),
                model.current(key),
                "key {:?} after step {}",
                key,
                position
            );
        }
        prop_assert_eq!(machine.len(), model.data.len());
    }
    prop_assert_eq!(machine.applied_index(), index);
    Ok(reached)
}

/// What a run reached, for `the_generator_reaches_eviction_and_a_full_window`.
#[derive(Debug, Default)]
struct Reached {
    /// Writes to a session evicted (or never held) refused as `SessionExpired`.
    evicted_refusals: usize,
    window_full: usize,
    /// Writes that opened their session.
    openings: usize,
    /// Openings refused because the table was full and `opened_after` too old.
    openings_refused_in_a_full_table: usize,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_state_machine_agrees_with_an_independent_model(
        steps in prop::collection::vec(step(), 1..120),
        start_full in any::<bool>(),
        restore_at in prop::option::weighted(0.3, 0usize..120),
    ) {
        check_against_model(&steps, start_full, restore_at)?;
    }
}

/// The generator is only as good as what it reaches: over a fixed seed's cases, sessions are
/// evicted and then refused, and the window fills. (Proptest's own RNG, seeded, so the count is
/// the same on every run.)
#[test]
fn the_generator_reaches_eviction_and_a_full_window() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[12; 32]),
    );
    let strategy = (prop::collection::vec(step(), 1..120), Just(true));
    let mut total = Reached::default();
    for _ in 0..64 {
        let (steps, start_full) = strategy.new_tree(&mut runner).expect("generate").current();
        let reached = check_against_model(&steps, start_full, None).expect("the model agrees");
        total.evicted_refusals += reached.evicted_refusals;
        total.window_full += reached.window_full;
        total.openings += reached.openings;
        total.openings_refused_in_a_full_table += reached.openings_refused_in_a_full_table;
    }
    assert!(
        total.evicted_refusals > 0,
        "no write to an evicted session was generated"
    );
    assert!(total.window_full > 0, "no SessionWindowFull was generated");
    assert!(total.openings > 0, "no write opened its session: {total:?}");
    assert!(
        total.openings_refused_in_a_full_table > 0,
        "no opening was refused in a full table: {total:?}"
    );
}

/// Hand-written cases for the rules the random runs must not be the only witness of.
#[test]
fn eviction_takes_the_least_recently_active_session_not_the_oldest_id() {
    let (mut machine, mut model) = prefilled().clone();
    let mut index = PREFILLED_SESSIONS;
    let mut both = |index: u64, proposal: Proposal| {
        let expected = model.apply(index, &proposal);
        assert_eq!(machine.apply(index, &proposal), expected, "index {index}");
        expected
    };
    // Session 1 (the oldest id) writes, so session 2 is now the least recently active.
    index += 1;
    let write = |client_id| Proposal {
        session: Some(SessionRef {
            client_id,
            seq: 1,
            first_unacked_seq: 1,
        }),
        command: Command::Put {
            key: b"a".to_vec(),
            value: vec![client_id as u8],
        },
    };
    assert_eq!(both(index, write(1)), Outcome::Written { version: index });
    // Fill the table (MAX_SESSIONS - 3 + 3 = MAX_SESSIONS), then one more registration evicts.
    for _ in 0..4 {
        index += 1;
        both(
            index,
            Proposal {
                session: None,
                command: Command::RegisterSession,
            },
        );
    }
    index += 1;
    assert_eq!(
        both(index, write(2)),
        Outcome::SessionExpired,
        "session 2 was the least recently active"
    );
    index += 1;
    // Session 1 survived: its seq 1 is remembered, so the retry answers the first outcome.
    assert_eq!(
        both(index, write(1)),
        Outcome::Written {
            version: PREFILLED_SESSIONS + 1
        }
    );
    assert_eq!(
        machine.get(b"a").map(|v| v.version),
        Some(PREFILLED_SESSIONS + 1)
    );
}
