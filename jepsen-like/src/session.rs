//! The session-guarantee checker: per client, read-your-writes, monotonic reads, monotonic
//! writes and writes-follow-reads (Terry et al., "Session Guarantees for Weakly Consistent
//! Replicated Data", 1994), checked on versions.
//!
//! Why a checker of its own: `session` reads are served by any replica that has applied the
//! client's session position, so they are not linearizable (another client's newer write may
//! be missing) and the linearizability checker leaves them out; what they promise is that a
//! client never sees the store go back in time from its own point of view. That promise is
//! about one client's operations in their order, and versions make it checkable without a
//! search: a value's version is the log index of the write that set it, and a write's `ok`
//! completion carries its version (recorded by the simulation, see `crate::history`).
//!
//! What is checked, for each client (history `process`, whose one client keeps its session
//! position for the whole run), over its operations whose level keeps the session guarantees
//! ([`crate::levels::Level::promises_session`]: not `stale` reads, not `leader`-acknowledged writes):
//! - **read-your-writes**: a read of a key returns at least the version of the client's last
//!   write to it; and more generally, once the client saw version `F` (of any key, by its own
//!   write), a read of key `k` returns at least the newest write to `k` acknowledged (to
//!   anyone, at a level that commits) with a version up to `F`: the replica serving it has
//!   applied the log up to `F`, so it holds every committed write before that index;
//! - **monotonic reads**: the same, for a version `F` the client read (a read of a key never
//!   returns an older version than an earlier read of that key, nor misses a write the
//!   client's earlier reads imply);
//! - **monotonic writes**: the client's writes get increasing versions;
//! - **writes-follow-reads**: a write gets a version above every version the client read
//!   before it.
//!
//! Reads whose version was not recorded (histories without versions) are skipped. A compare-
//! and-set that found another value counts as a read of that value.

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{History, Input, OpId, Outcome};

/// How many violations a report keeps (it counts them all).
pub const MAX_REPORTED: usize = 20;

/// A session guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Guarantee {
    ReadYourWrites,
    MonotonicReads,
    MonotonicWrites,
    WritesFollowReads,
}

impl Guarantee {
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::ReadYourWrites => "read-your-writes",
            Guarantee::MonotonicReads => "monotonic reads",
            Guarantee::MonotonicWrites => "monotonic writes",
            Guarantee::WritesFollowReads => "writes-follow-reads",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken guarantee: operation `op` of `process` got version `version`, where the
/// guarantee demanded at least `at_least` (for a write: more than `at_least`) because of the
/// client's earlier operation `because`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionViolation {
    pub guarantee: Guarantee,
    pub process: u64,
    pub op: OpId,
    pub key: String,
    pub version: u64,
    pub at_least: u64,
    pub because: OpId,
}

impl fmt::Display for SessionViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: process {} op {} on {:?} got version {}, needed {} {} (because of op {})",
            self.guarantee,
            self.process,
            self.op,
            self.key,
            self.version,
            if self.guarantee.is_write() {
                "more than"
            } else {
                "at least"
            },
            self.at_least,
            self.because
        )
    }
}

impl Guarantee {
    fn is_write(self) -> bool {
        matches!(
            self,
            Guarantee::MonotonicWrites | Guarantee::WritesFollowReads
        )
    }
}

/// What [`check_sessions`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionReport {
    /// Reads (and compare-and-set mismatches) checked.
    pub reads_checked: usize,
    /// Writes (and successful compare-and-sets) checked.
    pub writes_checked: usize,
    /// The first [`MAX_REPORTED`] violations, in the order found (process by process).
    pub violations: Vec<SessionViolation>,
    /// Every violation found.
    pub violations_found: usize,
}

impl SessionReport {
    /// Whether every guarantee held.
    pub fn held(&self) -> bool {
        self.violations_found == 0
    }
}

/// A version the client has seen, and the operation it came from.
#[derive(Debug, Clone, Copy)]
struct Seen {
    version: u64,
    op: OpId,
    by_write: bool,
}

fn newer(current: Option<Seen>, candidate: Seen) -> Option<Seen> {
    match current {
        Some(seen) if seen.version >= candidate.version => Some(seen),
        _ => Some(candidate),
    }
}

/// The session state of one client as its operations are replayed.
#[derive(Default)]
struct Client {
    /// Per key: the newest version the client wrote, and the newest it read.
    wrote: BTreeMap<String, Seen>,
    read: BTreeMap<String, Seen>,
    /// The newest version seen at all (its session position, as far as the data shows).
    seen: Option<Seen>,
    /// The newest version read (any key).
    read_any: Option<Seen>,
    /// The client's last write.
    last_write: Option<Seen>,
}

/// Checks every client's session guarantees in a history of a sharded store, group by group:
/// `group_of` names the group (shard) holding a key.
///
/// Why per group: a version is the log index of the write in its key's group, and each group
/// has its own log, so versions of keys in different groups are not comparable (version 9 in
/// one group says nothing about version 5 in another), and a client's session position is
/// per group too. The guarantees hold per group: each group's operations of a client are
/// checked with [`check_sessions`] as if they were the whole history (keys of one group share
/// the log, so the cross-key rules still apply within it). With every key in one group this is
/// [`check_sessions`] itself. Reports are merged in group order.
pub fn check_sessions_per_group(
    history: &History,
    group_of: impl Fn(&str) -> u64,
) -> SessionReport {
    let mut groups: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        groups.entry(group_of(&op.key)).or_default().push(index);
    }
    if groups.len() <= 1 {
        return check_sessions(history);
    }
    let mut report = SessionReport::default();
    for indexes in groups.values() {
        // The group's operations in the history's (invocation) order, ids kept, so that a
        // violation names the operations of the whole history.
        let part = History {
            ops: indexes.iter().map(|&i| history.ops[i].clone()).collect(),
        };
        let found = check_sessions(&part);
        report.reads_checked += found.reads_checked;
        report.writes_checked += found.writes_checked;
        report.violations_found += found.violations_found;
        let room = MAX_REPORTED.saturating_sub(report.violations.len());
        report
            .violations
            .extend(found.violations.into_iter().take(room));
    }
    report
}

/// Checks every client's session guarantees in `history` (one log: every version comparable
/// with every other; for a sharded store see [`check_sessions_per_group`]).
pub fn check_sessions(history: &History) -> SessionReport {
    // Writes acknowledged at a level that commits, per key, by version: a replica that has
    // applied index F holds every one of them up to F.
    let mut committed: BTreeMap<&str, Vec<(u64, OpId)>> = BTreeMap::new();
    for op in &history.ops {
        if !op.effective_level().promises_session() || op.input == Input::Read {
            continue;
        }
        if let (Outcome::Ok { .. }, Some(version)) = (&op.outcome, op.receipt.version) {
            committed
                .entry(op.key.as_str())
                .or_default()
                .push((version, op.id));
        }
    }
    for writes in committed.values_mut() {
        writes.sort_unstable();
    }
    let newest_committed_up_to = |key: &str, limit: u64| -> Option<(u64, OpId)> {
        let writes = committed.get(key)?;
        let end = writes.partition_point(|&(version, _)| version <= limit);
        end.checked_sub(1).map(|i| writes[i])
    };

    let mut report = SessionReport::default();
    let mut clients: BTreeMap<u64, Client> = BTreeMap::new();
    let found = |report: &mut SessionReport, violation: SessionViolation| {
        report.violations_found += 1;
        if report.violations.len() < MAX_REPORTED {
            report.violations.push(violation);
        }
    };
    // `history.ops` is in invocation order, and a client has one operation at a time, so each
    // client's operations come in its own order.
    for op in &history.ops {
        if !op.effective_level().promises_session() {
            continue;
        }
        let client = clients.entry(op.process).or_default();
        let violation = |guarantee, version, at_least: Seen| SessionViolation {
            guarantee,
            process: op.process,
            op: op.id,
            key: op.key.clone(),
            version,
            at_least: at_least.version,
            because: at_least.op,
        };
        // What the operation observed: a value read (with its version), or a version written.
        let read_version = match (&op.input, &op.outcome) {
            (Input::Read, Outcome::Ok { read: None }) => Some(op.receipt.version.unwrap_or(0)),
            (Input::Read, Outcome::Ok { read: Some(_) }) | (_, Outcome::CasMismatch) => {
                op.receipt.version
            }
            _ => None,
        };
        if let Some(version) = read_version {
            report.reads_checked += 1;
            if let Some(&wrote) = client.wrote.get(&op.key) {
                if version < wrote.version {
                    found(
                        &mut report,
                        violation(Guarantee::ReadYourWrites, version, wrote),
                    );
                }
            }
            if let Some(&read) = client.read.get(&op.key) {
                if version < read.version {
                    found(
                        &mut report,
                        violation(Guarantee::MonotonicReads, version, read),
                    );
                }
            }
            if let Some(seen) = client.seen {
                if let Some((needed, _)) = newest_committed_up_to(&op.key, seen.version) {
                    // Already reported above as a per-key violation.
                    let already = client
                        .wrote
                        .get(&op.key)
                        .into_iter()
                        .chain(client.read.get(&op.key))
                        .any(|s| s.version > version);
                    if needed > version && !already {
                        let guarantee = if seen.by_write {
                            Guarantee::ReadYourWrites
                        } else {
                            Guarantee::MonotonicReads
                        };
                        let mut v = violation(guarantee, version, seen);
                        v.at_least = needed;
                        found(&mut report, v);
                    }
                }
            }
            let seen = Seen {
                version,
                op: op.id,
                by_write: false,
            };
            let per_key = client.read.entry(op.key.clone()).or_insert(seen);
            if per_key.version < version {
                *per_key = seen;
            }
            client.seen = newer(client.seen, seen);
            client.read_any = newer(client.read_any, seen);
            continue;
        }
        let (Outcome::Ok { .. }, Some(version), false) =
            (&op.outcome, op.receipt.version, op.input == Input::Read)
        else {
            continue;
        };
        report.writes_checked += 1;
        if let Some(last) = client.last_write {
            if version <= last.version {
                found(
                    &mut report,
                    violation(Guarantee::MonotonicWrites, version, last),
                );
            }
        }
        if let Some(read) = client.read_any {
            if version <= read.version {
                found(
                    &mut report,
                    violation(Guarantee::WritesFollowReads, version, read),
                );
            }
        }
        let seen = Seen {
            version,
            op: op.id,
            by_write: true,
        };
        client.wrote.insert(op.key.clone(), seen);
        client.last_write = Some(seen);
        client.seen = newer(client.seen, seen);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::parse_jsonl;

    /// One operation: `(process, f, key, value, level, version)`.
    type Row<'a> = (u64, &'a str, &'a str, Option<i64>, &'a str, u64);

    /// A history from rows, each operation completing `ok` before the next is invoked.
    fn history(rows: &[Row<'_>]) -> History {
        let mut text = String::new();
        for &(process, f, key, value, level, version) in rows {
            let value = value.map_or("null".to_string(), |v| v.to_string());
            let invoked = if f == "read" { "null" } else { value.as_str() };
            text.push_str(&format!(
                "{{\"process\":{process},\"type\":\"invoke\",\"f\":\"{f}\",\"key\":\"{key}\",\"value\":{invoked},\"level\":\"{level}\"}}\n\
                 {{\"process\":{process},\"type\":\"ok\",\"f\":\"{f}\",\"key\":\"{key}\",\"value\":{value},\"version\":{version}}}\n"
            ));
        }
        parse_jsonl(&text).unwrap()
    }

    fn guarantees(report: &SessionReport) -> Vec<Guarantee> {
        report.violations.iter().map(|v| v.guarantee).collect()
    }

    #[test]
    fn a_session_that_keeps_its_guarantees_passes() {
        let h = history(&[
            (1, "write", "a", Some(1), "majority", 10),
            (1, "read", "a", Some(1), "session", 10),
            (2, "write", "b", Some(2), "majority", 12),
            (1, "read", "b", None, "session", 0), // b's write is newer than anything 1 saw
            (1, "read", "a", Some(1), "stale", 10),
            (1, "write", "a", Some(3), "all", 14),
            (1, "read", "a", Some(3), "linearizable", 14),
        ]);
        let report = check_sessions(&h);
        assert!(report.held(), "{:?}", report.violations);
        assert_eq!((report.reads_checked, report.writes_checked), (3, 3));
    }

    #[test]
    fn each_guarantee_is_caught() {
        // read-your-writes: the client's own write is missing.
        let h = history(&[
            (1, "write", "a", Some(1), "majority", 10),
            (1, "read", "a", None, "session", 0),
        ]);
        assert_eq!(guarantees(&check_sessions(&h)), [Guarantee::ReadYourWrites]);
        // monotonic reads: back in time on one key.
        let h = history(&[
            (2, "write", "a", Some(1), "majority", 10),
            (2, "write", "a", Some(2), "majority", 11),
            (1, "read", "a", Some(2), "session", 11),
            (1, "read", "a", Some(1), "session", 10),
        ]);
        assert_eq!(guarantees(&check_sessions(&h)), [Guarantee::MonotonicReads]);
        // monotonic reads across keys: having read b at 20, a write of a at 15 must show.
        let h = history(&[
            (2, "write", "a", Some(1), "majority", 15),
            (2, "write", "b", Some(2), "majority", 20),
            (1, "read", "b", Some(2), "session", 20),
            (1, "read", "a", None, "session", 0),
        ]);
        let report = check_sessions(&h);
        assert_eq!(guarantees(&report), [Guarantee::MonotonicReads]);
        assert_eq!(report.violations[0].at_least, 15);
        // monotonic writes and writes-follow-reads.
        let h = history(&[
            (1, "write", "a", Some(1), "majority", 30),
            (1, "write", "b", Some(2), "majority", 25),
        ]);
        assert_eq!(
            guarantees(&check_sessions(&h)),
            [Guarantee::MonotonicWrites]
        );
        let h = history(&[
            (2, "write", "a", Some(1), "majority", 30),
            (1, "read", "a", Some(1), "linearizable", 30),
            (1, "write", "b", Some(2), "majority", 29),
        ]);
        assert_eq!(
            guarantees(&check_sessions(&h)),
            [Guarantee::WritesFollowReads]
        );
    }

    /// In a sharded store versions are per group: a client's writes to two groups may go back
    /// in version without breaking anything, while within a group the rules still hold across
    /// keys.
    #[test]
    fn versions_are_compared_within_a_group_only() {
        // Keys starting with `x` in group 1, the rest in group 0.
        let group_of = |key: &str| u64::from(key.starts_with('x'));
        let h = history(&[
            (1, "write", "a", Some(1), "majority", 30),
            (1, "write", "x1", Some(2), "majority", 5),
            (2, "write", "x2", Some(3), "majority", 4),
            (1, "read", "a", Some(1), "session", 30),
            (1, "write", "b", Some(4), "majority", 31),
        ]);
        assert_eq!(
            guarantees(&check_sessions(&h)),
            [Guarantee::MonotonicWrites]
        );
        let report = check_sessions_per_group(&h, group_of);
        assert!(report.held(), "{:?}", report.violations);
        assert_eq!((report.reads_checked, report.writes_checked), (1, 4));
        // Within group 1, across its keys: having seen x1 at 5, x2's write at 4 must show.
        let h = history(&[
            (2, "write", "x2", Some(3), "majority", 4),
            (1, "write", "a", Some(1), "majority", 30),
            (1, "write", "x1", Some(2), "majority", 5),
            (1, "read", "x2", None, "session", 0),
        ]);
        let report = check_sessions_per_group(&h, group_of);
        assert_eq!(guarantees(&report), [Guarantee::ReadYourWrites]);
        assert_eq!(report.violations[0].at_least, 4);
        // One group: the same report as the whole-history check.
        assert_eq!(check_sessions_per_group(&h, |_| 0), check_sessions(&h));
    }

    #[test]
    fn stale_reads_and_leader_acks_promise_nothing_here() {
        let h = history(&[
            (1, "write", "a", Some(1), "leader", 40),
            (1, "read", "a", None, "session", 0), // the leader-acked write was lost
            (1, "write", "a", Some(2), "majority", 10),
            (1, "read", "a", None, "stale", 0),
        ]);
        let report = check_sessions(&h);
        assert!(report.held(), "{:?}", report.violations);
    }
}
