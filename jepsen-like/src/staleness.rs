//! Stale reads, found and measured against the receipts' staleness bounds.
//!
//! A `stale` read is answered from whatever the contacted replica has applied, so it may miss
//! writes acknowledged before it was even sent: that is the level's documented anomaly, and
//! [`check_staleness`] counts how often it happened (per level, so a stale *linearizable* read
//! would show too). What the level does promise is its receipt: `staleness_bound_ms` is an
//! upper bound on how far behind the cluster's committed state the answer may be. So a read
//! with a bound `B`, invoked at time `t`, must reflect every write acknowledged before
//! `t - B`: a write acknowledged more than `B` ms before the read was invoked, newer than the
//! version the read returned, is a [`BoundViolation`].
//!
//! Both use versions (the log index of the write that set a value; see `crate::history`) and
//! only writes acknowledged at a level that commits (`majority`, `all`, or no level recorded):
//! a `leader`-acknowledged write may be lost, so missing it proves nothing. The bound is
//! checked against the simulation's clock (the `time` fields, in simulated nanoseconds), read
//! at the client: the read's invocation comes before the replica served it, and the write's
//! acknowledgement after it committed, so the check never blames a replica for the network.
//! A write counts only if its acknowledgement also comes before the read's invocation in the
//! file's order, which is real-time order: the simulation's hosts read the clock at their own
//! turn within a step, so two `time` fields a few milliseconds apart may disagree with it.

use std::collections::BTreeMap;

use crate::history::{History, Input, OpId, Outcome};
use crate::levels::Level;

/// How many bound violations a report keeps (it counts them all).
pub const MAX_REPORTED: usize = 20;

/// A read that returned state older than its receipt's bound allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundViolation {
    pub read: OpId,
    pub process: u64,
    pub key: String,
    /// The version the read returned (0: absent).
    pub version: u64,
    pub bound_ms: u64,
    /// The newest write the read should have seen, and its version.
    pub missed_write: OpId,
    pub missed_version: u64,
    /// How long before the read's invocation that write was acknowledged, in ms.
    pub acknowledged_before_ms: u64,
}

/// Per level: reads checked, and how many of them were stale.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StaleCount {
    /// Successful reads with a recorded version.
    pub reads: usize,
    /// Of those, reads that returned a version older than a write acknowledged before the
    /// read was invoked.
    pub stale: usize,
}

/// What [`check_staleness`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StalenessReport {
    /// Per read level.
    pub per_level: BTreeMap<Level, StaleCount>,
    /// Reads whose receipt carried a staleness bound, checked against it.
    pub bounded_reads: usize,
    /// The first [`MAX_REPORTED`] bound violations, in invocation order.
    pub bound_violations: Vec<BoundViolation>,
    /// Every bound violation found.
    pub bound_violations_found: usize,
}

impl StalenessReport {
    /// Whether every receipt's bound held.
    pub fn bounds_held(&self) -> bool {
        self.bound_violations_found == 0
    }

    /// Stale reads found at `level`.
    pub fn stale_reads(&self, level: Level) -> usize {
        self.per_level.get(&level).map_or(0, |c| c.stale)
    }
}

/// One acknowledged write of a key: when it was acknowledged (history position, time) and
/// the version it wrote.
#[derive(Debug, Clone, Copy)]
struct Acked {
    at: u64,
    version: u64,
    op: OpId,
}

/// `writes` sorted by `at`, with at each position the newest (highest-version) write so far.
fn newest_so_far(mut writes: Vec<Acked>) -> Vec<Acked> {
    writes.sort_unstable_by_key(|w| (w.at, w.op));
    let mut newest: Option<Acked> = None;
    for write in &mut writes {
        if newest.is_none_or(|n| n.version < write.version) {
            newest = Some(*write);
        }
        if let Some(n) = newest {
            *write = Acked { at: write.at, ..n };
        }
    }
    writes
}

/// The newest write acknowledged strictly before `at`.
fn newest_before(writes: &[Acked], at: u64) -> Option<Acked> {
    let end = writes.partition_point(|w| w.at < at);
    end.checked_sub(1).map(|i| writes[i])
}

/// The newest version among writes added so far, by acknowledgement time: a Fenwick tree of
/// maxima over the key's acknowledgement times (a version only ever grows at a position).
struct NewestByTime {
    times: Vec<u64>,
    tree: Vec<Option<(u64, OpId)>>,
}

impl NewestByTime {
    fn new(mut times: Vec<u64>) -> NewestByTime {
        times.sort_unstable();
        times.dedup();
        let tree = vec![None; times.len() + 1];
        NewestByTime { times, tree }
    }

    fn add(&mut self, time: u64, version: u64, op: OpId) {
        let mut i = self.times.partition_point(|&t| t < time) + 1;
        while i < self.tree.len() {
            if self.tree[i].is_none_or(|(v, _)| v < version) {
                self.tree[i] = Some((version, op));
            }
            i += i & i.wrapping_neg();
        }
    }

    /// The newest write acknowledged strictly before `time`.
    fn newest_before(&self, time: u64) -> Option<(u64, OpId)> {
        let mut i = self.times.partition_point(|&t| t < time);
        let mut best: Option<(u64, OpId)> = None;
        while i > 0 {
            if let Some((v, op)) = self.tree[i] {
                if best.is_none_or(|(b, _)| b < v) {
                    best = Some((v, op));
                }
            }
            i -= i & i.wrapping_neg();
        }
        best
    }
}

/// Counts the stale reads of `history` per level and checks every receipt's staleness bound.
pub fn check_staleness(history: &History) -> StalenessReport {
    let mut by_seq: BTreeMap<&str, Vec<Acked>> = BTreeMap::new();
    // Per key, acknowledged writes with a time: (position in the file, time, version, op).
    let mut by_time: BTreeMap<&str, Vec<(u64, u64, u64, OpId)>> = BTreeMap::new();
    for op in &history.ops {
        if op.input == Input::Read || !op.effective_level().promises_session() {
            continue;
        }
        let (Outcome::Ok { .. }, Some(version), Some(seq)) =
            (&op.outcome, op.receipt.version, op.complete_seq)
        else {
            continue;
        };
        let key = op.key.as_str();
        by_seq.entry(key).or_default().push(Acked {
            at: seq,
            version,
            op: op.id,
        });
        if let Some(time) = op.complete_time_ns {
            by_time
                .entry(key)
                .or_default()
                .push((seq, time, version, op.id));
        }
    }
    let by_seq: BTreeMap<&str, Vec<Acked>> = by_seq
        .into_iter()
        .map(|(k, w)| (k, newest_so_far(w)))
        .collect();
    // Swept along the file: a read sees the writes acknowledged before it was invoked.
    let mut swept: BTreeMap<&str, (usize, NewestByTime)> = by_time
        .iter_mut()
        .map(|(&k, writes)| {
            writes.sort_unstable();
            let index = NewestByTime::new(writes.iter().map(|w| w.1).collect());
            (k, (0, index))
        })
        .collect();

    let mut report = StalenessReport::default();
    for op in &history.ops {
        let Outcome::Ok { read } = &op.outcome else {
            continue;
        };
        if op.input != Input::Read {
            continue;
        }
        let version = match (read, op.receipt.version) {
            (_, Some(version)) => version,
            (None, None) => 0,
            (Some(_), None) => continue,
        };
        let key = op.key.as_str();
        let count = report.per_level.entry(op.effective_level()).or_default();
        count.reads += 1;
        let missed = by_seq
            .get(key)
            .and_then(|writes| newest_before(writes, op.invoke_seq));
        if missed.is_some_and(|w| w.version > version) {
            count.stale += 1;
        }
        let (Some(bound_ms), Some(invoked_ns)) = (op.receipt.staleness_bound_ms, op.invoke_time_ns)
        else {
            continue;
        };
        report.bounded_reads += 1;
        // Writes acknowledged more than `bound_ms` before the invocation.
        let Some(horizon_ns) = invoked_ns.checked_sub(bound_ms.saturating_mul(1_000_000)) else {
            continue;
        };
        let (Some(writes), Some((next, index))) = (by_time.get(key), swept.get_mut(key)) else {
            continue;
        };
        while let Some(&(seq, time, version, id)) = writes.get(*next) {
            if seq >= op.invoke_seq {
                break;
            }
            index.add(time, version, id);
            *next += 1;
        }
        let Some((missed_version, missed_op)) = index
            .newest_before(horizon_ns)
            .filter(|&(v, _)| v > version)
        else {
            continue;
        };
        let acked_ns = history.ops[missed_op].complete_time_ns.unwrap_or(0);
        report.bound_violations_found += 1;
        if report.bound_violations.len() < MAX_REPORTED {
            report.bound_violations.push(BoundViolation {
                read: op.id,
                process: op.process,
                key: op.key.clone(),
                version,
                bound_ms,
                missed_write: missed_op,
                missed_version,
                acknowledged_before_ms: invoked_ns.saturating_sub(acked_ns) / 1_000_000,
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::parse_jsonl;

    /// One line of a history: `(process, type, f, value, extra fields)` on key `k`, at
    /// `time` ms.
    fn line(process: u64, kind: &str, f: &str, value: &str, extra: &str, time_ms: u64) -> String {
        format!(
            "{{\"process\":{process},\"type\":\"{kind}\",\"f\":\"{f}\",\"key\":\"k\",\"value\":{value},\"time\":{}{extra}}}\n",
            time_ms * 1_000_000
        )
    }

    /// A write of version 10 acknowledged at 100 ms, then a stale read invoked at `read_ms`
    /// that returned absent with the bound `bound_ms`.
    fn history(read_ms: u64, bound_ms: u64) -> History {
        let mut text = line(1, "invoke", "write", "1", ",\"level\":\"majority\"", 90);
        text += &line(1, "ok", "write", "1", ",\"version\":10", 100);
        text += &line(2, "invoke", "read", "null", ",\"level\":\"stale\"", read_ms);
        text += &line(
            2,
            "ok",
            "read",
            "null",
            &format!(",\"version\":0,\"bound_ms\":{bound_ms}"),
            read_ms + 5,
        );
        parse_jsonl(&text).unwrap()
    }

    #[test]
    fn a_stale_read_within_its_bound_is_counted_not_blamed() {
        let report = check_staleness(&history(150, 60));
        assert_eq!(report.stale_reads(Level::Stale), 1);
        assert_eq!(report.bounded_reads, 1);
        assert!(report.bounds_held(), "{:?}", report.bound_violations);
    }

    #[test]
    fn a_read_older_than_its_bound_is_a_violation() {
        let report = check_staleness(&history(150, 40));
        assert_eq!(report.bound_violations_found, 1);
        let v = &report.bound_violations[0];
        assert_eq!((v.missed_version, v.version, v.bound_ms), (10, 0, 40));
        assert_eq!(v.acknowledged_before_ms, 50);
    }

    #[test]
    fn only_writes_acknowledged_before_the_invocation_in_file_order_count() {
        // The write's acknowledgement is stamped earlier but recorded after the invocation
        // (another host's clock, read at its turn in the same step): they were concurrent.
        let mut text = line(1, "invoke", "write", "1", ",\"level\":\"majority\"", 90);
        text += &line(2, "invoke", "read", "null", ",\"level\":\"stale\"", 104);
        text += &line(1, "ok", "write", "1", ",\"version\":10", 100);
        text += &line(
            2,
            "ok",
            "read",
            "null",
            ",\"version\":0,\"bound_ms\":0",
            106,
        );
        let report = check_staleness(&parse_jsonl(&text).unwrap());
        assert!(report.bounds_held(), "{:?}", report.bound_violations);
        assert_eq!(report.stale_reads(Level::Stale), 0);
    }

    #[test]
    fn leader_acknowledged_writes_may_be_missed() {
        let text = history(150, 40)
            .to_jsonl()
            .replace("\"level\":\"majority\"", "\"level\":\"leader\"");
        let report = check_staleness(&parse_jsonl(&text).unwrap());
        assert_eq!(report.stale_reads(Level::Stale), 0);
        assert!(report.bounds_held());
    }
}
