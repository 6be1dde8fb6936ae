//! The simulation's side of the node's fault seam ([`ringleader_node::faults`]): a plan, shared
//! by every node of a run, that drops, duplicates, reorders and delays Raft messages per directed
//! link, and stops nodes' clocks. The nemesis edits the plan ([`MessageFaults::set_link`],
//! [`MessageFaults::stop_clock`]); each node consults it for every message it sends.
//!
//! Why at the seam and not on turmoil's links: peer messages ride TCP, which never loses,
//! duplicates or reorders, and turmoil can only hold or break a link in both directions (a
//! one-way TCP link is not a connection). Raft is specified for a network that does all of these.
//!
//! Determinism: the plan draws from its own generator, seeded from the run's seed, in the order
//! nodes send messages, which turmoil's single-threaded scheduler fixes for a seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use consensus::{AppendResult, Message, MessageBody, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringleader_node::faults::TransportFaults;

/// What happens to messages on one directed link. Percentages are per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkFaults {
    /// Messages dropped (100: the link is cut one way).
    pub drop_percent: u32,
    /// Messages sent twice (the copy may be delayed on its own, so it can arrive out of order).
    pub duplicate_percent: u32,
    /// Messages delayed by up to `reorder_max_ms`, so later ones overtake them.
    pub reorder_percent: u32,
    pub reorder_max_ms: u64,
    /// Messages held for `stale_ms` and delivered long after newer ones: a stale AppendEntries,
    /// InstallSnapshot or vote from an old term.
    pub stale_percent: u32,
    pub stale_ms: (u64, u64),
}

impl LinkFaults {
    /// Every message dropped: a one-way cut.
    pub fn cut() -> LinkFaults {
        LinkFaults {
            drop_percent: 100,
            ..LinkFaults::default()
        }
    }

    /// The stronger of two fault settings on the same link, field by field.
    fn combine(self, other: LinkFaults) -> LinkFaults {
        LinkFaults {
            drop_percent: self.drop_percent.max(other.drop_percent),
            duplicate_percent: self.duplicate_percent.max(other.duplicate_percent),
            reorder_percent: self.reorder_percent.max(other.reorder_percent),
            reorder_max_ms: self.reorder_max_ms.max(other.reorder_max_ms),
            stale_percent: self.stale_percent.max(other.stale_percent),
            stale_ms: (
                self.stale_ms.0.max(other.stale_ms.0),
                self.stale_ms.1.max(other.stale_ms.1),
            ),
        }
    }
}

impl fmt::Display for LinkFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.drop_percent >= 100 {
            return write!(f, "cut");
        }
        write!(
            f,
            "drop {}%, duplicate {}%, reorder {}% (≤{} ms), stale {}% ({}–{} ms)",
            self.drop_percent,
            self.duplicate_percent,
            self.reorder_percent,
            self.reorder_max_ms,
            self.stale_percent,
            self.stale_ms.0,
            self.stale_ms.1
        )
    }
}

/// What the seam did to the messages of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageStats {
    /// Messages the nodes sent.
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub stale: u64,
    /// AppendEntries carrying entries (a leader replicating).
    pub appends_with_entries: u64,
}

/// Who set a link's faults, so that two overlapping faults on one link can end independently.
pub type FaultOwner = usize;

#[derive(Debug)]
struct Plan {
    rng: ChaCha8Rng,
    links: BTreeMap<(NodeId, NodeId), BTreeMap<FaultOwner, LinkFaults>>,
    stopped_clocks: BTreeMap<NodeId, u32>,
    stats: MessageStats,
    /// The nodes that sent AppendEntries with entries since the last look.
    replicating: BTreeSet<NodeId>,
    /// The nodes a follower acknowledged entries to since the last look.
    replicated: BTreeSet<NodeId>,
}

/// The fault plan every simulated node routes its peer messages through.
#[derive(Debug)]
pub struct MessageFaults {
    plan: Mutex<Plan>,
    /// Whether a paused node's clock catches up on resume (see
    /// `TransportFaults::paused_clock_catches_up`).
    pause_catches_up: bool,
}

fn percent(rng: &mut ChaCha8Rng, p: u32) -> bool {
    p > 0 && rng.random_range(0..100u32) < p
}

impl MessageFaults {
    /// `pause_catches_up`: whether a paused node's missed ticks are delivered on resume (a
    /// process pause) or lost (a clock stall).
    pub fn new(seed: u64, pause_catches_up: bool) -> MessageFaults {
        MessageFaults {
            pause_catches_up,
            plan: Mutex::new(Plan {
                rng: ChaCha8Rng::seed_from_u64(seed),
                links: BTreeMap::new(),
                stopped_clocks: BTreeMap::new(),
                stats: MessageStats::default(),
                replicating: BTreeSet::new(),
                replicated: BTreeSet::new(),
            }),
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        // A panic while holding the lock would already have failed the run; the plan is
        // still consistent (every update is a single insert or remove).
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets (`Some`) or clears (`None`) `owner`'s faults on the link `from → to`.
    pub fn set_link(
        &self,
        from: NodeId,
        to: NodeId,
        owner: FaultOwner,
        faults: Option<LinkFaults>,
    ) {
        let mut plan = self.plan();
        let owners = plan.links.entry((from, to)).or_default();
        match faults {
            Some(faults) => {
                owners.insert(owner, faults);
            }
            None => {
                owners.remove(&owner);
                if owners.is_empty() {
                    plan.links.remove(&(from, to));
                }
            }
        }
    }

    /// Stops (`true`) or restarts `node`'s clock; stops nest.
    pub fn stop_clock(&self, node: NodeId, stopped: bool) {
        let mut plan = self.plan();
        let count = plan.stopped_clocks.entry(node).or_default();
        if stopped {
            *count += 1;
        } else {
            debug_assert!(*count > 0, "restarted a clock that was not stopped");
            *count = count.saturating_sub(1);
            if *count == 0 {
                plan.stopped_clocks.remove(&node);
            }
        }
    }

    /// Whether any fault is set (the heal must leave none).
    pub fn is_clear(&self) -> bool {
        let plan = self.plan();
        plan.links.is_empty() && plan.stopped_clocks.is_empty()
    }

    pub fn stats(&self) -> MessageStats {
        self.plan().stats
    }

    /// The nodes that sent entries to a follower since the last call (a leader replicating),
    /// and the nodes a follower acknowledged entries to (a leader whose entries were
    /// replicated), both since the last call.
    pub fn take_replication(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let mut plan = self.plan();
        (
            std::mem::take(&mut plan.replicating),
            std::mem::take(&mut plan.replicated),
        )
    }
}

impl TransportFaults for MessageFaults {
    fn fate(&self, message: &Message) -> Vec<Duration> {
        let mut plan = self.plan();
        plan.stats.sent += 1;
        match &message.body {
            MessageBody::AppendEntries { entries, .. } if !entries.is_empty() => {
                plan.stats.appends_with_entries += 1;
                plan.replicating.insert(message.from);
            }
            MessageBody::AppendEntriesResponse {
                result: AppendResult::Success { .. },
                ..
            } => {
                plan.replicated.insert(message.to);
            }
            _ => {}
        }
        let Some(faults) = plan
            .links
            .get(&(message.from, message.to))
            .and_then(|owners| owners.values().copied().reduce(LinkFaults::combine))
        else {
            return vec![Duration::ZERO];
        };
        let Plan { rng, stats, .. } = &mut *plan;
        if percent(rng, faults.drop_percent) {
            stats.dropped += 1;
            return Vec::new();
        }
        let copies = if percent(rng, faults.duplicate_percent) {
            stats.duplicated += 1;
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                if percent(rng, faults.stale_percent) {
                    stats.stale += 1;
                    let (low, high) = faults.stale_ms;
                    Duration::from_millis(rng.random_range(low..=high.max(low)))
                } else if percent(rng, faults.reorder_percent) {
                    stats.reordered += 1;
                    Duration::from_millis(rng.random_range(1..=faults.reorder_max_ms.max(1)))
                } else {
                    Duration::ZERO
                }
            })
            .collect()
    }

    fn clock_stopped(&self, node: NodeId) -> bool {
        self.plan().stopped_clocks.contains_key(&node)
    }

    fn paused_clock_catches_up(&self) -> bool {
        self.pause_catches_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(from: NodeId, to: NodeId) -> Message {
        Message {
            from,
            to,
            term: 1,
            body: MessageBody::TimeoutNow,
        }
    }

    #[test]
    fn a_clear_link_delivers_once_at_once_and_a_cut_one_way_drops_one_direction() {
        let faults = MessageFaults::new(1, false);
        assert_eq!(faults.fate(&heartbeat(1, 2)), vec![Duration::ZERO]);
        faults.set_link(1, 2, 0, Some(LinkFaults::cut()));
        assert!(faults.fate(&heartbeat(1, 2)).is_empty());
        assert_eq!(faults.fate(&heartbeat(2, 1)), vec![Duration::ZERO]);
        faults.set_link(1, 2, 0, None);
        assert_eq!(faults.fate(&heartbeat(1, 2)), vec![Duration::ZERO]);
        assert!(faults.is_clear());
    }

    #[test]
    fn overlapping_faults_end_independently() {
        let faults = MessageFaults::new(1, false);
        faults.set_link(1, 2, 0, Some(LinkFaults::cut()));
        faults.set_link(
            1,
            2,
            1,
            Some(LinkFaults {
                duplicate_percent: 100,
                ..LinkFaults::default()
            }),
        );
        assert!(faults.fate(&heartbeat(1, 2)).is_empty(), "the cut wins");
        faults.set_link(1, 2, 0, None);
        assert_eq!(
            faults.fate(&heartbeat(1, 2)).len(),
            2,
            "the duplication stays"
        );
        faults.set_link(1, 2, 1, None);
        assert!(faults.is_clear());
    }

    #[test]
    fn faults_happen_at_about_their_rates() {
        let faults = MessageFaults::new(7, false);
        faults.set_link(
            1,
            2,
            0,
            Some(LinkFaults {
                drop_percent: 20,
                duplicate_percent: 10,
                reorder_percent: 30,
                reorder_max_ms: 50,
                stale_percent: 5,
                stale_ms: (1_000, 2_000),
            }),
        );
        let mut delays = Vec::new();
        for _ in 0..10_000 {
            delays.push(faults.fate(&heartbeat(1, 2)));
        }
        let stats = faults.stats();
        assert_eq!(stats.sent, 10_000);
        assert!((1_700..2_300).contains(&stats.dropped), "{stats:?}");
        assert!((500..1_100).contains(&stats.duplicated), "{stats:?}");
        assert!(stats.stale > 200 && stats.reordered > 1_500, "{stats:?}");
        let all: Vec<Duration> = delays.into_iter().flatten().collect();
        assert!(all.iter().any(|d| *d >= Duration::from_secs(1)));
        assert!(all.iter().all(|d| *d <= Duration::from_secs(2)));
    }

    #[test]
    fn clock_stops_nest() {
        let faults = MessageFaults::new(1, false);
        faults.stop_clock(3, true);
        faults.stop_clock(3, true);
        faults.stop_clock(3, false);
        assert!(faults.clock_stopped(3));
        faults.stop_clock(3, false);
        assert!(!faults.clock_stopped(3) && faults.is_clear());
    }
}
