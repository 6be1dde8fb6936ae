//! Availability per shard: what a sharded run shows while single nodes are cut off.
//!
//! With one Raft group per shard, a node cut off from everyone takes down only the leadership of
//! the groups it led: they are unavailable until their other replicas elect a leader, while the
//! groups it did not lead (it may hold a follower replica of some) keep serving throughout. That
//! is CAP per shard, and it is what the isolate nemesis ([`crate::sim::Nemesis::Isolate`]) is
//! for. This module reads it off a finished run, after the fact: the nemesis's [`Isolation`]s,
//! the leader changes the monitor saw ([`LeaderSeen`]), and the history with the ring to tell
//! which group each operation's key is in. Pure: it only classifies what the run recorded.

use std::collections::BTreeSet;

use ringleader_client::GroupId;
use ringleader_protocol::ring::Ring;

use crate::history::{History, Outcome};
use crate::sim::nemesis::Isolation;
use crate::sim::workload::{Availability, LeaderSeen};

/// One single-node isolation, and what each shard did during it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationWindow {
    /// The node cut off.
    pub node: u64,
    /// Simulated milliseconds since the start of the run.
    pub from_ms: u64,
    pub to_ms: u64,
    /// The groups the node led when it was cut off, as the leader monitor last saw them
    /// (it polls every 200 ms, so a leadership won just before the cut may be missed).
    pub led_groups: Vec<GroupId>,
    /// Those of `led_groups` for which the monitor saw a leader on another node, at a higher
    /// term, before the isolation ended: the groups that elected anew.
    pub reelected: Vec<GroupId>,
    /// Operations invoked and completed within the window on keys of the groups the node did
    /// not lead, and how many the cluster answered.
    pub other_groups: Availability,
    /// The same for the keys of `led_groups`.
    pub led_group_ops: Availability,
}

impl IsolationWindow {
    /// One line for a report.
    pub fn summary(&self) -> String {
        format!(
            "n{} cut off {}–{} ms: led groups {:?} (re-elected {:?}); answered on their keys {}, \
             on the other groups' keys {}",
            self.node,
            self.from_ms,
            self.to_ms,
            self.led_groups,
            self.reelected,
            self.led_group_ops.ratio(),
            self.other_groups.ratio()
        )
    }
}

/// The isolation windows of a run: each of `isolations` (an isolation never healed ends at
/// `end_ms`), with the groups the node led per `leader_log` and the operations of `history`
/// (the full history, every level) classified by their key's group on `ring`.
pub fn isolation_windows(
    isolations: &[Isolation],
    leader_log: &[LeaderSeen],
    history: &History,
    ring: &Ring,
    end_ms: u64,
) -> Vec<IsolationWindow> {
    isolations
        .iter()
        .map(|isolation| {
            let (from_ms, to_ms) = (isolation.from_ms, isolation.to_ms.unwrap_or(end_ms));
            debug_assert!(from_ms <= to_ms, "an isolation ends after it starts");
            // Each group's leader as last seen at the cut.
            let mut leaders = std::collections::BTreeMap::new();
            for seen in leader_log.iter().take_while(|s| s.at_ms <= from_ms) {
                leaders.insert(seen.group, (seen.term, seen.node));
            }
            let led: BTreeSet<GroupId> = leaders
                .iter()
                .filter(|(_, &(_, node))| node == isolation.node)
                .map(|(&group, _)| group)
                .collect();
            let reelected: Vec<GroupId> = led
                .iter()
                .copied()
                .filter(|group| {
                    let term_at_cut = leaders.get(group).map_or(0, |&(term, _)| term);
                    leader_log.iter().any(|s| {
                        s.group == *group
                            && s.at_ms > from_ms
                            && s.at_ms <= to_ms
                            && s.node != isolation.node
                            && s.term > term_at_cut
                    })
                })
                .collect();
            let (mut other_groups, mut led_group_ops) =
                (Availability::default(), Availability::default());
            let window_ns = from_ms * 1_000_000..=to_ms * 1_000_000;
            for op in &history.ops {
                let (Some(invoked), Some(completed)) = (op.invoke_time_ns, op.complete_time_ns)
                else {
                    continue;
                };
                if !window_ns.contains(&invoked) || !window_ns.contains(&completed) {
                    continue;
                }
                let group = ring.shard_for_key(op.key.as_bytes());
                let tally = if led.contains(&group) {
                    &mut led_group_ops
                } else {
                    &mut other_groups
                };
                tally.total += 1;
                tally.answered += usize::from(answered(&op.outcome));
            }
            IsolationWindow {
                node: isolation.node,
                from_ms,
                to_ms,
                led_groups: led.into_iter().collect(),
                reelected,
                other_groups,
                led_group_ops,
            }
        })
        .collect()
}

/// Whether the cluster answered: `ok`, or a compare-and-set that found another value (the
/// workload's count of availability, [`crate::sim::Availability`]).
fn answered(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Ok { .. } | Outcome::CasMismatch)
}
