//! The nemesis: which faults the simulation injects, and when, all drawn from the run's seed.
//!
//! Each enabled [`Nemesis`] is a *track* that alternates between quiet and active phases of
//! random lengths; tracks run independently, so faults combine (a partition while a node is
//! paused and another is down). When a fault starts its targets are chosen from the cluster
//! as it is then (the current leader is a favourite target). This module is pure: it turns
//! simulated time and a [`ClusterView`] into [`Action`]s, which `run.rs` applies to turmoil.
//!
//! Why partitions *hold* messages instead of dropping them: turmoil's TCP has no
//! retransmission, so a dropped segment would leave a permanent hole in a stream that real TCP
//! would have filled after the partition healed. Holding, then releasing, is what a real
//! network partition looks like to a TCP connection shorter-lived than its retransmission
//! timeout. For the same reason "loss" is modelled as what TCP makes of it: long and variable
//! delays.
//!
//! Invariant kept: every link this module held is released, every latency it raised is
//! restored and every node it crashed is restarted by [`Nemeses::heal`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nemesis {
    /// Network partitions between nodes: random halves, the leader isolated, a majority ring,
    /// a bridge. Clients still reach every node (an old leader keeps hearing from them).
    Partition,
    /// Power loss of a minority of nodes: everything not fsynced is lost (torn writes
    /// included); the node restarts from its disk later.
    Crash,
    /// Slow, lossy links: message delays of up to a second on random links.
    Loss,
    /// A node stops talking (all its links held, clients' too) and later resumes, receiving
    /// everything at once, like a process pause.
    Pause,
    /// A process restart that keeps the page cache: unsynced writes survive.
    Bounce,
    /// Power loss of a majority or of the whole cluster at once: every node it hits loses what
    /// it had not fsynced (torn writes included), so quorum replication cannot hide a lost
    /// tail; they all restart from their disks shortly after. Not in [`Nemesis::ALL`] yet (the
    /// simulation issue adds it to the default mix with swarm testing); ask for it by name.
    PowerLoss,
}

impl Nemesis {
    /// Every nemesis, in a fixed order.
    pub const ALL: [Nemesis; 5] = [
        Nemesis::Partition,
        Nemesis::Crash,
        Nemesis::Loss,
        Nemesis::Pause,
        Nemesis::Bounce,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Partition => "partition",
            Nemesis::Crash => "crash",
            Nemesis::Loss => "loss",
            Nemesis::Pause => "pause",
            Nemesis::Bounce => "bounce",
            Nemesis::PowerLoss => "power-loss",
        }
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nemesis {
    type Err = String;

    fn from_str(s: &str) -> Result<Nemesis, String> {
        Nemesis::ALL
            .into_iter()
            .chain([Nemesis::PowerLoss])
            .find(|n| n.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown nemesis {s:?} (expected partition, crash, loss, pause, bounce or \
                     power-loss)"
                )
            })
    }
}

/// Parses a comma-separated nemesis list; `all` means every nemesis, `none` or `` none.
/// Duplicates are dropped; the order is [`Nemesis::ALL`]'s.
pub fn parse_nemeses(list: &str) -> Result<Vec<Nemesis>, String> {
    let mut chosen = BTreeSet::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "all" => chosen.extend(Nemesis::ALL),
            "none" => {}
            other => {
                chosen.insert(other.parse::<Nemesis>()?);
            }
        }
    }
    Ok(chosen.into_iter().collect())
}

/// A simulated host, by name: `n1`… for nodes, [`CLIENT_HOST`] for the workload's clients.
pub type Host = String;

/// The host every client runs on.
pub const CLIENT_HOST: &str = "client";

/// The host name of node `id`.
pub fn node_host(id: u64) -> Host {
    format!("n{id}")
}

/// Something the simulation driver must do to turmoil.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Hold every message between two hosts (both directions) until released.
    Hold(Host, Host),
    /// Deliver what was held and let messages flow again.
    Release(Host, Host),
    /// Set the link's maximum message latency.
    SetMaxLatency(Host, Host, Duration),
    /// Power loss: kill the node and drop its unsynced writes.
    Crash(u64),
    /// Restart a crashed node from its disk.
    Restart(u64),
    /// Restart a running node's process; its page cache survives.
    Bounce(u64),
}

/// What the nemesis may know about the cluster when it picks targets.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The node most recently seen leading (highest term), if any.
    pub leader: Option<u64>,
}

/// A fault injected, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEvent {
    /// Simulated milliseconds since the start of the run.
    pub at_ms: u64,
    pub nemesis: Nemesis,
    /// `true` when the fault starts (or is instantaneous), `false` when it ends.
    pub starts: bool,
    pub description: String,
}

/// Lengths of the quiet and active phases of each track, in simulated milliseconds.
const QUIET_MS: (u64, u64) = (1_000, 5_000);
const FIRST_FAULT_MS: (u64, u64) = (1_500, 4_000);
const PARTITION_MS: (u64, u64) = (1_000, 6_000);
const CRASH_DOWN_MS: (u64, u64) = (300, 4_000);
/// A cluster-wide outage is kept short: nothing can be served while it lasts.
const POWER_LOSS_DOWN_MS: (u64, u64) = (200, 1_500);
const LOSS_MS: (u64, u64) = (1_000, 5_000);
const LOSS_MAX_LATENCY_MS: (u64, u64) = (100, 1_000);
const PAUSE_MS: (u64, u64) = (300, 3_000);

/// A fault in progress, with what undoing it takes.
#[derive(Debug, Clone)]
enum Active {
    /// Links this fault holds.
    Cut(Vec<(Host, Host)>),
    Crashed(Vec<u64>),
    Slowed(Vec<(Host, Host)>),
}

#[derive(Debug)]
struct Track {
    nemesis: Nemesis,
    /// When this track next starts or ends a fault.
    next_at_ms: u64,
    active: Option<Active>,
}

/// All tracks, and the shared state they must agree on (which links are held for how many
/// faults, which nodes are down).
pub struct Nemeses<R> {
    rng: R,
    nodes: Vec<u64>,
    /// Node-to-node link latency when no fault slows it.
    normal_max_latency: Duration,
    tracks: Vec<Track>,
    /// How many active faults hold each link (a link is released when none does).
    holds: BTreeMap<(Host, Host), u32>,
    crashed: BTreeSet<u64>,
    log: Vec<FaultEvent>,
    healed: bool,
}

fn link(a: &str, b: &str) -> (Host, Host) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

fn between<R: RngCore>(rng: &mut R, (low, high): (u64, u64)) -> u64 {
    rng.random_range(low..=high)
}

fn list(nodes: &[u64]) -> String {
    let names: Vec<String> = nodes.iter().map(|&id| node_host(id)).collect();
    format!("{{{}}}", names.join(","))
}

impl<R: RngCore> Nemeses<R> {
    /// Tracks for `enabled`, each starting with a quiet phase from time 0.
    pub fn new(
        mut rng: R,
        nodes: Vec<u64>,
        enabled: &[Nemesis],
        normal_max_latency: Duration,
    ) -> Self {
        debug_assert!(
            nodes.windows(2).all(|w| w[0] < w[1]),
            "nodes sorted, unique"
        );
        let mut enabled = enabled.to_vec();
        enabled.sort();
        enabled.dedup();
        let tracks = enabled
            .into_iter()
            .map(|nemesis| Track {
                nemesis,
                next_at_ms: between(&mut rng, FIRST_FAULT_MS),
                active: None,
            })
            .collect();
        Nemeses {
            rng,
            nodes,
            normal_max_latency,
            tracks,
            holds: BTreeMap::new(),
            crashed: BTreeSet::new(),
            log: Vec::new(),
            healed: false,
        }
    }

    /// The faults injected so far.
    pub fn log(&self) -> &[FaultEvent] {
        &self.log
    }

    /// Nodes currently down.
    pub fn crashed(&self) -> &BTreeSet<u64> {
        &self.crashed
    }

    /// Whether some active fault holds the link between two hosts.
    pub fn is_held(&self, a: &str, b: &str) -> bool {
        self.holds.contains_key(&link(a, b))
    }

    /// Every host of the simulation: the nodes, then the client host.
    pub fn hosts(&self) -> Vec<Host> {
        let mut hosts: Vec<Host> = self.nodes.iter().map(|&id| node_host(id)).collect();
        hosts.push(CLIENT_HOST.to_string());
        hosts
    }

    /// Starts and ends the faults due at `now_ms`, in track order.
    pub fn poll(&mut self, now_ms: u64, view: &ClusterView) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.healed {
            return actions;
        }
        for index in 0..self.tracks.len() {
            if self.tracks[index].next_at_ms > now_ms {
                continue;
            }
            let nemesis = self.tracks[index].nemesis;
            match self.tracks[index].active.take() {
                Some(active) => {
                    self.end(now_ms, nemesis, active, &mut actions);
                    self.tracks[index].next_at_ms = now_ms + between(&mut self.rng, QUIET_MS);
                }
                None => {
                    let (active, length_ms) = self.start(now_ms, nemesis, view, &mut actions);
                    self.tracks[index].active = active;
                    let quiet_ms = between(&mut self.rng, QUIET_MS);
                    self.tracks[index].next_at_ms = now_ms + length_ms.unwrap_or(quiet_ms);
                }
            }
        }
        actions
    }

    /// Ends every fault and stops the schedule: links released, latencies restored, crashed
    /// nodes restarted.
    pub fn heal(&mut self, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        for index in 0..self.tracks.len() {
            if let Some(active) = self.tracks[index].active.take() {
                let nemesis = self.tracks[index].nemesis;
                self.end(now_ms, nemesis, active, &mut actions);
            }
        }
        self.healed = true;
        debug_assert!(self.holds.is_empty(), "a held link outlived its faults");
        debug_assert!(self.crashed.is_empty(), "a crashed node was not restarted");
        actions
    }

    fn record(&mut self, at_ms: u64, nemesis: Nemesis, starts: bool, description: String) {
        self.log.push(FaultEvent {
            at_ms,
            nemesis,
            starts,
            description,
        });
    }

    /// A target favouring the leader: half the time the leader (if known and eligible).
    fn pick_target(&mut self, eligible: &[u64], view: &ClusterView) -> Option<u64> {
        if let Some(leader) = view.leader.filter(|l| eligible.contains(l)) {
            if self.rng.random_bool(0.5) {
                return Some(leader);
            }
        }
        eligible
            .get(self.rng.random_range(0..eligible.len().max(1)))
            .copied()
    }

    /// Cuts the power of `count` of the `eligible` nodes (the leader favoured): they lose what
    /// they had not fsynced. Returns them, sorted.
    fn crash(
        &mut self,
        mut eligible: Vec<u64>,
        count: usize,
        view: &ClusterView,
        actions: &mut Vec<Action>,
    ) -> Vec<u64> {
        let mut victims = Vec::new();
        for _ in 0..count {
            let Some(victim) = self.pick_target(&eligible, view) else {
                break;
            };
            eligible.retain(|&id| id != victim);
            victims.push(victim);
        }
        victims.sort_unstable();
        for &victim in &victims {
            self.crashed.insert(victim);
            actions.push(Action::Crash(victim));
        }
        victims
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .copied()
            .filter(|id| !self.crashed.contains(id))
            .collect()
    }

    fn hold(&mut self, a: &str, b: &str, actions: &mut Vec<Action>) {
        let key = link(a, b);
        let count = self.holds.entry(key.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            actions.push(Action::Hold(key.0, key.1));
        }
    }

    fn release(&mut self, key: &(Host, Host), actions: &mut Vec<Action>) {
        let Some(count) = self.holds.get_mut(key) else {
            debug_assert!(false, "released a link no fault held");
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.holds.remove(key);
            actions.push(Action::Release(key.0.clone(), key.1.clone()));
        }
    }

    /// Starts a fault; returns what undoing it takes and how long it lasts (`None` for an
    /// instantaneous fault, or when there was nothing to do).
    fn start(
        &mut self,
        now_ms: u64,
        nemesis: Nemesis,
        view: &ClusterView,
        actions: &mut Vec<Action>,
    ) -> (Option<Active>, Option<u64>) {
        match nemesis {
            Nemesis::Partition => {
                let (shape, cut) = self.partition_shape(view);
                if cut.is_empty() {
                    return (None, None);
                }
                let mut links = Vec::new();
                for (a, b) in &cut {
                    let (a, b) = (node_host(*a), node_host(*b));
                    self.hold(&a, &b, actions);
                    links.push(link(&a, &b));
                }
                self.record(now_ms, nemesis, true, shape);
                (
                    Some(Active::Cut(links)),
                    Some(between(&mut self.rng, PARTITION_MS)),
                )
            }
            Nemesis::Crash => {
                let running = self.running();
                let minority = (self.nodes.len() - 1) / 2;
                // Never more than a minority down at once, counting nodes already down.
                let room = minority.saturating_sub(self.crashed.len());
                if room == 0 || running.is_empty() {
                    return (None, None);
                }
                let count = self.rng.random_range(1..=room);
                let victims = self.crash(running, count, view, actions);
                self.record(now_ms, nemesis, true, format!("crash {}", list(&victims)));
                (
                    Some(Active::Crashed(victims)),
                    Some(between(&mut self.rng, CRASH_DOWN_MS)),
                )
            }
            Nemesis::PowerLoss => {
                let running = self.running();
                let majority = self.nodes.len() / 2 + 1;
                if running.len() < majority {
                    return (None, None);
                }
                // The whole cluster, or a majority chosen at random.
                let count = if self.rng.random_bool(0.5) {
                    running.len()
                } else {
                    majority
                };
                let victims = self.crash(running, count, view, actions);
                self.record(
                    now_ms,
                    nemesis,
                    true,
                    format!("power loss {}", list(&victims)),
                );
                (
                    Some(Active::Crashed(victims)),
                    Some(between(&mut self.rng, POWER_LOSS_DOWN_MS)),
                )
            }
            Nemesis::Loss => {
                let hosts = self.hosts();
                let mut links = Vec::new();
                for i in 0..hosts.len() {
                    for j in (i + 1)..hosts.len() {
                        if self.rng.random_bool(0.5) {
                            links.push(link(&hosts[i], &hosts[j]));
                        }
                    }
                }
                if links.is_empty() {
                    return (None, None);
                }
                let max_ms = between(&mut self.rng, LOSS_MAX_LATENCY_MS);
                for (a, b) in &links {
                    actions.push(Action::SetMaxLatency(
                        a.clone(),
                        b.clone(),
                        Duration::from_millis(max_ms),
                    ));
                }
                let names: Vec<String> = links.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                self.record(
                    now_ms,
                    nemesis,
                    true,
                    format!("slow links (max {max_ms} ms): {}", names.join(" ")),
                );
                (
                    Some(Active::Slowed(links)),
                    Some(between(&mut self.rng, LOSS_MS)),
                )
            }
            Nemesis::Pause => {
                let running = self.running();
                let Some(node) = self.pick_target(&running, view) else {
                    return (None, None);
                };
                let me = node_host(node);
                let mut links = Vec::new();
                let others: Vec<Host> = self
                    .nodes
                    .iter()
                    .filter(|&&id| id != node)
                    .map(|&id| node_host(id))
                    .chain([CLIENT_HOST.to_string()])
                    .collect();
                for other in &others {
                    self.hold(&me, other, actions);
                    links.push(link(&me, other));
                }
                self.record(now_ms, nemesis, true, format!("pause {me}"));
                (
                    Some(Active::Cut(links)),
                    Some(between(&mut self.rng, PAUSE_MS)),
                )
            }
            Nemesis::Bounce => {
                let running = self.running();
                if let Some(node) = self.pick_target(&running, view) {
                    actions.push(Action::Bounce(node));
                    self.record(
                        now_ms,
                        nemesis,
                        true,
                        format!("restart {}", node_host(node)),
                    );
                }
                (None, None)
            }
        }
    }

    fn end(&mut self, now_ms: u64, nemesis: Nemesis, active: Active, actions: &mut Vec<Action>) {
        let description = match active {
            Active::Cut(links) => {
                for key in &links {
                    self.release(key, actions);
                }
                match nemesis {
                    Nemesis::Pause => "resume".to_string(),
                    _ => "heal partition".to_string(),
                }
            }
            Active::Crashed(nodes) => {
                for &node in &nodes {
                    self.crashed.remove(&node);
                    actions.push(Action::Restart(node));
                }
                format!("restart {}", list(&nodes))
            }
            Active::Slowed(links) => {
                for (a, b) in links {
                    actions.push(Action::SetMaxLatency(a, b, self.normal_max_latency));
                }
                "links back to normal".to_string()
            }
        };
        self.record(now_ms, nemesis, false, description);
    }

    /// A partition shape over the nodes: a description and the node pairs to cut.
    fn partition_shape(&mut self, view: &ClusterView) -> (String, Vec<(u64, u64)>) {
        let n = self.nodes.len();
        if n < 2 {
            return (String::new(), Vec::new());
        }
        let mut shuffled = self.nodes.clone();
        shuffled.shuffle(&mut self.rng);
        let mut connected: BTreeSet<(u64, u64)> = BTreeSet::new();
        let connect_all = |group: &[u64], connected: &mut BTreeSet<(u64, u64)>| {
            for &a in group {
                for &b in group {
                    if a < b {
                        connected.insert((a, b));
                    }
                }
            }
        };
        let shape = match self.rng.random_range(0..4u32) {
            // Random halves: a minority and a majority.
            0 => {
                let (minority, majority) = shuffled.split_at(n / 2);
                connect_all(minority, &mut connected);
                connect_all(majority, &mut connected);
                format!("partition halves {} | {}", list(minority), list(majority))
            }
            // The leader alone (or a random node, when no leader is known).
            1 => {
                let lonely = view
                    .leader
                    .filter(|l| self.nodes.contains(l))
                    .unwrap_or(shuffled[0]);
                let rest: Vec<u64> = self
                    .nodes
                    .iter()
                    .copied()
                    .filter(|&id| id != lonely)
                    .collect();
                connect_all(&rest, &mut connected);
                format!(
                    "partition isolating {} | {}",
                    node_host(lonely),
                    list(&rest)
                )
            }
            // A ring: each node sees its neighbours only; with five nodes each sees a
            // majority, but no two majorities are the same (Jepsen's majorities-ring).
            2 if n >= 4 => {
                for i in 0..n {
                    let (a, b) = (shuffled[i], shuffled[(i + 1) % n]);
                    connected.insert((a.min(b), a.max(b)));
                }
                format!("partition ring {}", list(&shuffled))
            }
            // A bridge: two halves that only one node talks to.
            _ => {
                let bridge = shuffled[0];
                let (left, right) = shuffled[1..].split_at((n - 1) / 2);
                let mut left = left.to_vec();
                let mut right = right.to_vec();
                connect_all(&left, &mut connected);
                connect_all(&right, &mut connected);
                left.push(bridge);
                right.push(bridge);
                connect_all(&left, &mut connected);
                connect_all(&right, &mut connected);
                format!(
                    "partition bridge {} between {} and {}",
                    node_host(bridge),
                    list(&left[..left.len() - 1]),
                    list(&right[..right.len() - 1])
                )
            }
        };
        let mut cut = Vec::new();
        for (i, &a) in self.nodes.iter().enumerate() {
            for &b in &self.nodes[i + 1..] {
                if !connected.contains(&(a, b)) {
                    cut.push((a, b));
                }
            }
        }
        (shape, cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn nemeses(seed: u64, enabled: &[Nemesis]) -> Nemeses<ChaCha8Rng> {
        Nemeses::new(
            ChaCha8Rng::seed_from_u64(seed),
            vec![1, 2, 3, 4, 5],
            enabled,
            Duration::from_millis(10),
        )
    }

    #[test]
    fn nemesis_lists_parse() {
        assert_eq!(parse_nemeses("all").unwrap(), Nemesis::ALL.to_vec());
        assert_eq!(
            parse_nemeses("crash, partition,crash").unwrap(),
            vec![Nemesis::Partition, Nemesis::Crash]
        );
        assert!(parse_nemeses("none").unwrap().is_empty());
        assert!(parse_nemeses("gremlins").is_err());
    }

    /// Whatever the schedule did, healing leaves every link released and every node up, and
    /// never more than a minority was down at once.
    #[test]
    fn heal_undoes_every_fault() {
        for seed in 0..50 {
            let mut n = nemeses(seed, &Nemesis::ALL);
            let mut held: BTreeSet<(Host, Host)> = BTreeSet::new();
            let mut down: BTreeSet<u64> = BTreeSet::new();
            let view = ClusterView { leader: Some(2) };
            let mut apply = |actions: Vec<Action>| {
                for action in actions {
                    match action {
                        Action::Hold(a, b) => assert!(held.insert((a, b))),
                        Action::Release(a, b) => assert!(held.remove(&(a, b))),
                        Action::Crash(id) => assert!(down.insert(id)),
                        Action::Restart(id) => assert!(down.remove(&id)),
                        Action::Bounce(id) => assert!(!down.contains(&id)),
                        Action::SetMaxLatency(..) => {}
                    }
                    assert!(down.len() <= 2, "seed {seed}: a majority crashed");
                }
            };
            let end_ms = 20_000 + seed * 500;
            for now_ms in (0..end_ms).step_by(10) {
                apply(n.poll(now_ms, &view));
            }
            apply(n.heal(end_ms));
            assert!(held.is_empty() && down.is_empty(), "seed {seed}");
            assert!(n.log().len() > 4, "seed {seed}: too few faults");
        }
    }

    #[test]
    fn schedules_are_a_function_of_the_seed() {
        let run = |seed| {
            let mut n = nemeses(seed, &Nemesis::ALL);
            let view = ClusterView::default();
            (0..30_000)
                .step_by(5)
                .flat_map(|t| n.poll(t, &view))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
