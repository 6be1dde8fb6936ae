//! The nemesis: which faults the simulation injects, and when, all drawn from the run's seed.
//!
//! Each enabled [`Nemesis`] is a *track* that alternates between quiet and active phases of
//! random lengths; tracks run independently, so faults combine (a partition while a node is
//! paused and another is down). When a fault starts its targets are chosen from the cluster
//! as it is then (the current leader is a favourite target). The leader nemesis waits for its
//! moment instead: it is *armed*, and fires when the [`ClusterView`] shows an acknowledged write,
//! or the leader sending entries, or a follower acknowledging them. This module is pure: it
//! turns simulated time and a [`ClusterView`] into [`Action`]s, which `run.rs` applies to turmoil
//! and to the message seam ([`crate::sim::message_faults`]).
//!
//! Two layers of network faults. On turmoil's links (node to node and client to node),
//! partitions *hold* messages instead of dropping them: turmoil's TCP has no retransmission, so
//! a dropped segment would leave a permanent hole in a stream that real TCP would have filled
//! after the partition healed. Holding, then releasing, is what a real partition looks like to a
//! TCP connection shorter-lived than its retransmission timeout; for the same reason "loss" there
//! is modelled as what TCP makes of it: long and variable delays. Raft messages, though, are
//! also faulted one by one at the node's transport seam, where they can be dropped, duplicated,
//! reordered, delivered seconds late or cut in one direction only: the network Raft is specified
//! for, which TCP hides.
//!
//! Invariant kept: every link this module held is released, every latency it raised is
//! restored, every message fault it set is cleared, every clock it stopped runs again and every
//! node it crashed is restarted by [`Nemeses::heal`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, RngCore};

use crate::sim::message_faults::{FaultOwner, LinkFaults};

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
    /// A process pause: the node's clock stops (its Raft ticks are skipped) and it stops
    /// talking (all its links held, clients' too); later it resumes, receiving everything at
    /// once, unaware of the time it lost.
    Pause,
    /// A process restart that keeps the page cache: unsynced writes survive.
    Bounce,
    /// Power loss of a majority or of the whole cluster at once: every node it hits loses what
    /// it had not fsynced (torn writes included), so quorum replication cannot hide a lost
    /// tail; they all restart from their disks shortly after.
    PowerLoss,
    /// Message-level faults between peers at the node's transport seam: on some directed links,
    /// Raft messages are dropped, duplicated, reordered, or held for seconds and delivered long
    /// after newer ones (stale AppendEntries, InstallSnapshot and votes from old terms).
    Messages,
    /// One-way partitions at the message seam: the leader can send but not hear, or hear but not
    /// send, or random directed links are cut.
    OneWay,
    /// Aimed at the leader at its worst moments: right after it acknowledged a write it is
    /// isolated, paused or crashed; or it is crashed just as it sends entries to its followers.
    Leader,
    /// Clients cut off together with a minority: one client host reaches only a minority of the
    /// nodes (the leader among them, most of the time), the other only the majority, so clients
    /// keep talking to a deposed leader.
    Clients,
    /// Single nodes cut off in turn: one node loses every link (to its peers and to the
    /// clients), is healed, and after a quiet phase the next node is cut off. In a sharded
    /// cluster the groups the node led lose their leader and elect another while the groups it
    /// did not lead keep serving: availability per shard. Not part of `all` ([`Nemesis::ALL`]),
    /// so that `all` draws what it always drew and every seed replays as before; see
    /// [`Nemesis::ALL_SHARDED`].
    Isolate,
}

impl Nemesis {
    /// Every nemesis of `all`, in a fixed order (everything but [`Nemesis::Isolate`]).
    pub const ALL: [Nemesis; 10] = [
        Nemesis::Partition,
        Nemesis::Crash,
        Nemesis::Loss,
        Nemesis::Pause,
        Nemesis::Bounce,
        Nemesis::PowerLoss,
        Nemesis::Messages,
        Nemesis::OneWay,
        Nemesis::Leader,
        Nemesis::Clients,
    ];

    /// Every nemesis, [`Nemesis::Isolate`] included (`all,isolate` on the command line): the
    /// set for sharded runs.
    pub const ALL_SHARDED: [Nemesis; 11] = [
        Nemesis::Partition,
        Nemesis::Crash,
        Nemesis::Loss,
        Nemesis::Pause,
        Nemesis::Bounce,
        Nemesis::PowerLoss,
        Nemesis::Messages,
        Nemesis::OneWay,
        Nemesis::Leader,
        Nemesis::Clients,
        Nemesis::Isolate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Partition => "partition",
            Nemesis::Crash => "crash",
            Nemesis::Loss => "loss",
            Nemesis::Pause => "pause",
            Nemesis::Bounce => "bounce",
            Nemesis::PowerLoss => "power-loss",
            Nemesis::Messages => "messages",
            Nemesis::OneWay => "one-way",
            Nemesis::Leader => "leader",
            Nemesis::Clients => "clients",
            Nemesis::Isolate => "isolate",
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
        Nemesis::ALL_SHARDED
            .into_iter()
            .find(|n| n.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Nemesis::ALL_SHARDED.iter().map(|n| n.name()).collect();
                format!(
                    "unknown nemesis {s:?} (expected {}, all or none)",
                    names.join(", ")
                )
            })
    }
}

/// Parses a comma-separated nemesis list; `all` means every nemesis of [`Nemesis::ALL`] (not
/// `isolate`, which is named on its own), `none` or `` none.
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

/// A simulated host, by name: `n1`… for nodes, [`CLIENT_HOST`] for the control client (the
/// leader monitor and the recovery check), [`worker_host`] for the hosts the workload's clients
/// run on.
pub type Host = String;

/// The host of the leader monitor and the recovery check.
pub const CLIENT_HOST: &str = "client";

/// The host name of node `id`.
pub fn node_host(id: u64) -> Host {
    format!("n{id}")
}

/// The host name of the `index`th (from 0) host of workload clients: `c1`, `c2`, …
pub fn worker_host(index: usize) -> Host {
    format!("c{}", index + 1)
}

/// Something the simulation driver must do to turmoil or to the message seam.
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
    /// Set (or clear, `None`) one fault's message faults on the directed link `from → to`.
    LinkFaults {
        from: u64,
        to: u64,
        owner: FaultOwner,
        faults: Option<LinkFaults>,
    },
    /// Stop (`true`) or restart a node's clock.
    StopClock(u64, bool),
}

/// What the nemesis may know about the cluster when it picks targets and moments.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The node most recently seen leading (highest term), if any.
    pub leader: Option<u64>,
    /// Writes acknowledged to clients so far.
    pub acked_writes: u64,
    /// When the workload acknowledges writes at the leader alone: how many such writes to keys
    /// of their own (the writes whose loss the run can count) were acknowledged so far. The
    /// after-ack moments then wait for one of these rather than any write. `None` otherwise.
    pub acked_lossy_writes: Option<u64>,
    /// Nodes that sent entries to a follower since the last poll.
    pub replicating: BTreeSet<u64>,
    /// Nodes a follower acknowledged entries to since the last poll.
    pub replicated: BTreeSet<u64>,
}

/// One node cut off by the isolate nemesis ([`Nemesis::Isolate`]), from when to when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    pub node: u64,
    /// Simulated milliseconds since the start of the run.
    pub from_ms: u64,
    /// When it was healed; `None` while it lasts.
    pub to_ms: Option<u64>,
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

/// Lengths of the phases of each track, in simulated milliseconds.
const FIRST_FAULT_MS: (u64, u64) = (500, 2_000);
const PARTITION_MS: (u64, u64) = (1_000, 6_000);
const CRASH_DOWN_MS: (u64, u64) = (300, 4_000);
/// A cluster-wide outage is kept short: nothing can be served while it lasts.
const POWER_LOSS_DOWN_MS: (u64, u64) = (200, 1_500);
const LOSS_MS: (u64, u64) = (1_000, 5_000);
const LOSS_MAX_LATENCY_MS: (u64, u64) = (100, 1_000);
const PAUSE_MS: (u64, u64) = (300, 3_000);
/// A single node's isolation: always longer than an election (0.5–1 s), so that the groups it
/// led elect another leader before it comes back.
const ISOLATE_MS: (u64, u64) = (2_000, 6_000);
const MESSAGES_MS: (u64, u64) = (2_000, 8_000);
/// How long a stale message may be held: longer than an election, so it arrives in a later term.
const STALE_MS: (u64, u64) = (500, 5_000);
/// A leader-aimed fault waits at most this long for its moment, then fires anyway.
const AIM_PATIENCE_MS: u64 = 3_000;

/// A fault in progress: everything undoing it takes.
#[derive(Debug, Clone, Default)]
struct Active {
    /// Links held.
    cut: Vec<(Host, Host)>,
    crashed: Vec<u64>,
    /// Links whose latency was raised.
    slowed: Vec<(Host, Host)>,
    /// Directed node links with message faults set by this track.
    faulted: Vec<(u64, u64)>,
    /// Nodes whose clock this fault stopped.
    clocks: Vec<u64>,
    /// The client host this fault cut off with a minority of the nodes.
    stranded: Option<Host>,
    /// For the isolate nemesis: the index of its [`Isolation`] in `Nemeses::isolations`.
    isolation: Option<usize>,
    /// What the end is called in the log.
    end_description: &'static str,
}

/// A leader-aimed fault waiting for its moment.
#[derive(Debug, Clone, Copy)]
struct Armed {
    moment: Moment,
    since_ms: u64,
    acked_writes: u64,
    acked_lossy_writes: Option<u64>,
}

/// When a leader-aimed fault fires, and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// Right after an acknowledged write: isolate the leader.
    IsolateAfterAck,
    /// Right after an acknowledged write: pause the leader (clock stopped, links held).
    PauseAfterAck,
    /// Right after an acknowledged write: cut the leader's power.
    CrashAfterAck,
    /// As the leader sends entries (appended locally, not yet on its followers): cut its power.
    CrashWhileReplicating,
    /// As a follower acknowledges entries to the leader (replicated, not yet acknowledged to the
    /// client): cut the leader's power.
    CrashAfterReplicating,
}

#[derive(Debug)]
struct Track {
    nemesis: Nemesis,
    /// When this track next starts or ends a fault.
    next_at_ms: u64,
    active: Option<Active>,
    armed: Option<Armed>,
}

/// All tracks, and the shared state they must agree on (which links are held for how many
/// faults, which nodes are down).
pub struct Nemeses<R> {
    rng: R,
    nodes: Vec<u64>,
    /// Hosts the workload's clients run on.
    workers: Vec<Host>,
    /// Node-to-node link latency when no fault slows it.
    normal_max_latency: Duration,
    /// Length of a track's quiet phase between two faults.
    quiet_ms: (u64, u64),
    tracks: Vec<Track>,
    /// How many active faults hold each link (a link is released when none does).
    holds: BTreeMap<(Host, Host), u32>,
    crashed: BTreeSet<u64>,
    log: Vec<FaultEvent>,
    healed: bool,
    /// The leader nemesis's isolation cuts the leader from its peers only, leaving its
    /// clients: the shape in which a lease that outlives its guarantee answers a stale read
    /// (set for runs that check lease reads; see [`Nemeses::cut_leader_from_peers_only`]).
    leader_keeps_clients: bool,
    /// With `leader_keeps_clients`: the cut leader's clock also stalls (a run beyond the drift
    /// bound).
    leader_clock_stalls: bool,
    /// The isolate nemesis's cuts so far, in order (one per fault: bounded by the run's length).
    isolations: Vec<Isolation>,
    /// The isolate nemesis's turns: the next node it cuts off is `nodes[turn % nodes.len()]`
    /// (skipping nodes that are down). `None` until its first fault draws where to start.
    isolate_turn: Option<usize>,
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

/// Where the nemesis runs: the nodes, the hosts of the workload's clients, and the rhythm.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Node ids, sorted.
    pub nodes: Vec<u64>,
    /// The hosts the workload's clients run on.
    pub workers: Vec<Host>,
    /// Node-to-node link latency when no fault slows it.
    pub normal_max_latency: Duration,
    /// Length of a track's quiet phase between two faults, in simulated milliseconds.
    pub quiet_ms: (u64, u64),
}

impl<R: RngCore> Nemeses<R> {
    /// Tracks for `enabled`, each starting with a quiet phase from time 0.
    pub fn new(mut rng: R, topology: Topology, enabled: &[Nemesis]) -> Self {
        debug_assert!(
            topology.nodes.windows(2).all(|w| w[0] < w[1]),
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
                armed: None,
            })
            .collect();
        Nemeses {
            rng,
            nodes: topology.nodes,
            workers: topology.workers,
            normal_max_latency: topology.normal_max_latency,
            quiet_ms: topology.quiet_ms,
            tracks,
            holds: BTreeMap::new(),
            crashed: BTreeSet::new(),
            log: Vec::new(),
            healed: false,
            leader_keeps_clients: false,
            leader_clock_stalls: false,
            isolations: Vec::new(),
            isolate_turn: None,
        }
    }

    /// Makes the leader nemesis's isolation cut the leader off from its peers only: clients
    /// still reach it, as a leader on the wrong side of a partition is reached by the clients on
    /// its side. A lease read there is safe only while the clocks drift within the bound. The
    /// random draws are the same either way. `stall_clock`: the cut leader's clock also stops
    /// while it keeps serving (the limit of drift beyond the bound, for runs that claim it).
    pub fn cut_leader_from_peers_only(mut self, stall_clock: bool) -> Self {
        self.leader_keeps_clients = true;
        self.leader_clock_stalls = stall_clock;
        self
    }

    /// The faults injected so far.
    pub fn log(&self) -> &[FaultEvent] {
        &self.log
    }

    /// The single nodes the isolate nemesis cut off so far, in order.
    pub fn isolations(&self) -> &[Isolation] {
        &self.isolations
    }

    /// Nodes currently down.
    pub fn crashed(&self) -> &BTreeSet<u64> {
        &self.crashed
    }

    /// Whether some fault is in progress.
    pub fn faults_active(&self) -> bool {
        self.tracks.iter().any(|t| t.active.is_some())
    }

    /// The client hosts cut off with a minority of the nodes right now (the clients nemesis).
    pub fn stranded_workers(&self) -> Vec<Host> {
        self.tracks
            .iter()
            .filter_map(|t| t.active.as_ref()?.stranded.clone())
            .collect()
    }

    /// Whether some active fault holds the link between two hosts.
    pub fn is_held(&self, a: &str, b: &str) -> bool {
        self.holds.contains_key(&link(a, b))
    }

    /// Every host of the simulation: the nodes, the control client, the workers.
    pub fn hosts(&self) -> Vec<Host> {
        let mut hosts: Vec<Host> = self.nodes.iter().map(|&id| node_host(id)).collect();
        hosts.push(CLIENT_HOST.to_string());
        hosts.extend(self.workers.iter().cloned());
        hosts
    }

    /// Every client host: the control client and the workers.
    fn client_hosts(&self) -> Vec<Host> {
        let mut hosts = vec![CLIENT_HOST.to_string()];
        hosts.extend(self.workers.iter().cloned());
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
            if let Some(armed) = self.tracks[index].armed {
                if !self.moment_has_come(now_ms, armed, view) {
                    continue;
                }
                self.tracks[index].armed = None;
                let (active, length_ms) = self.fire(now_ms, armed.moment, view, &mut actions);
                self.tracks[index].active = active;
                let quiet_ms = between(&mut self.rng, self.quiet_ms);
                self.tracks[index].next_at_ms = now_ms + length_ms.unwrap_or(quiet_ms);
                continue;
            }
            match self.tracks[index].active.take() {
                Some(active) => {
                    self.end(now_ms, index, nemesis, active, &mut actions);
                    self.tracks[index].next_at_ms = now_ms + between(&mut self.rng, self.quiet_ms);
                }
                None if nemesis == Nemesis::Leader => {
                    let moment = match self.rng.random_range(0..5u32) {
                        0 => Moment::IsolateAfterAck,
                        1 => Moment::PauseAfterAck,
                        2 => Moment::CrashAfterAck,
                        3 => Moment::CrashWhileReplicating,
                        _ => Moment::CrashAfterReplicating,
                    };
                    self.tracks[index].armed = Some(Armed {
                        moment,
                        since_ms: now_ms,
                        acked_writes: view.acked_writes,
                        acked_lossy_writes: view.acked_lossy_writes,
                    });
                }
                None => {
                    let (active, length_ms) =
                        self.start(now_ms, index, nemesis, view, &mut actions);
                    self.tracks[index].active = active;
                    let quiet_ms = between(&mut self.rng, self.quiet_ms);
                    self.tracks[index].next_at_ms = now_ms + length_ms.unwrap_or(quiet_ms);
                }
            }
        }
        actions
    }

    /// Ends every fault and stops the schedule: links released, latencies restored, message
    /// faults cleared, clocks restarted, crashed nodes restarted.
    pub fn heal(&mut self, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        for index in 0..self.tracks.len() {
            self.tracks[index].armed = None;
            if let Some(active) = self.tracks[index].active.take() {
                let nemesis = self.tracks[index].nemesis;
                self.end(now_ms, index, nemesis, active, &mut actions);
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

    /// How many more nodes may crash without a majority down (the crash nemesis's limit).
    fn crash_room(&self) -> usize {
        ((self.nodes.len() - 1) / 2).saturating_sub(self.crashed.len())
    }

    fn hold(&mut self, a: &str, b: &str, active: &mut Active, actions: &mut Vec<Action>) {
        let key = link(a, b);
        let count = self.holds.entry(key.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            actions.push(Action::Hold(key.0.clone(), key.1.clone()));
        }
        active.cut.push(key);
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

    /// Holds every link of `node`: to the other nodes and to every client host.
    fn isolate(&mut self, node: u64, active: &mut Active, actions: &mut Vec<Action>) {
        let me = node_host(node);
        let others: Vec<Host> = self
            .nodes
            .iter()
            .filter(|&&id| id != node)
            .map(|&id| node_host(id))
            .chain(self.client_hosts())
            .collect();
        for other in &others {
            self.hold(&me, other, active, actions);
        }
    }

    /// Sets message faults on `from → to`, owned by track `owner`.
    fn fault_link(
        &mut self,
        (from, to): (u64, u64),
        owner: usize,
        faults: LinkFaults,
        active: &mut Active,
        actions: &mut Vec<Action>,
    ) {
        actions.push(Action::LinkFaults {
            from,
            to,
            owner,
            faults: Some(faults),
        });
        active.faulted.push((from, to));
    }

    /// Every directed link between two different nodes.
    fn directed_links(&self) -> Vec<(u64, u64)> {
        let mut links = Vec::new();
        for &a in &self.nodes {
            for &b in &self.nodes {
                if a != b {
                    links.push((a, b));
                }
            }
        }
        links
    }

    /// Whether an armed leader-aimed fault should fire now.
    fn moment_has_come(&self, now_ms: u64, armed: Armed, view: &ClusterView) -> bool {
        if now_ms >= armed.since_ms + AIM_PATIENCE_MS {
            return true;
        }
        let Some(leader) = view.leader else {
            return false;
        };
        match armed.moment {
            Moment::CrashWhileReplicating => view.replicating.contains(&leader),
            Moment::CrashAfterReplicating => view.replicated.contains(&leader),
            _ => match (view.acked_lossy_writes, armed.acked_lossy_writes) {
                (Some(now), Some(then)) => now > then,
                _ => view.acked_writes > armed.acked_writes,
            },
        }
    }

    /// Fires a leader-aimed fault.
    fn fire(
        &mut self,
        now_ms: u64,
        moment: Moment,
        view: &ClusterView,
        actions: &mut Vec<Action>,
    ) -> (Option<Active>, Option<u64>) {
        let running = self.running();
        let Some(leader) = view.leader.filter(|l| running.contains(l)) else {
            return (None, None);
        };
        let nemesis = Nemesis::Leader;
        let mut active = Active::default();
        let wants_crash = matches!(
            moment,
            Moment::CrashAfterAck | Moment::CrashWhileReplicating | Moment::CrashAfterReplicating
        );
        let (description, length) = if wants_crash && self.crash_room() > 0 {
            self.crashed.insert(leader);
            actions.push(Action::Crash(leader));
            active.crashed.push(leader);
            active.end_description = "restart";
            let when = match moment {
                Moment::CrashWhileReplicating => "as it sends entries",
                Moment::CrashAfterReplicating => "as a follower acknowledges its entries",
                _ => "right after an acknowledged write",
            };
            (
                format!("crash leader {} {when}", node_host(leader)),
                CRASH_DOWN_MS,
            )
        } else if moment == Moment::PauseAfterAck {
            self.isolate(leader, &mut active, actions);
            actions.push(Action::StopClock(leader, true));
            active.clocks.push(leader);
            active.end_description = "resume";
            (
                format!(
                    "pause leader {} right after an acknowledged write",
                    node_host(leader)
                ),
                PAUSE_MS,
            )
        } else if self.leader_keeps_clients {
            let me = node_host(leader);
            let peers: Vec<Host> = self
                .nodes
                .iter()
                .filter(|&&id| id != leader)
                .map(|&id| node_host(id))
                .collect();
            for peer in &peers {
                self.hold(&me, peer, &mut active, actions);
            }
            // The second client host goes with the majority: clients on both sides.
            let majority_side: Vec<Host> = self.workers.iter().skip(1).cloned().collect();
            for worker in &majority_side {
                self.hold(&me, worker, &mut active, actions);
            }
            // Beyond the drift bound, its clock stalls while it keeps serving: the limit of
            // drift, under which a lease outlives its guarantee.
            let stalled = if self.leader_clock_stalls {
                actions.push(Action::StopClock(leader, true));
                active.clocks.push(leader);
                ", its clock stalled,"
            } else {
                ""
            };
            active.end_description = "heal partition";
            (
                format!(
                    "cut leader {} from its peers and from client host(s) {}{stalled} right \
                     after an acknowledged write",
                    node_host(leader),
                    majority_side.join(",")
                ),
                PARTITION_MS,
            )
        } else {
            self.isolate(leader, &mut active, actions);
            active.end_description = "heal partition";
            (
                format!(
                    "isolate leader {} right after an acknowledged write",
                    node_host(leader)
                ),
                PARTITION_MS,
            )
        };
        self.record(now_ms, nemesis, true, description);
        (Some(active), Some(between(&mut self.rng, length)))
    }

    /// Starts a fault; returns what undoing it takes and how long it lasts (`None` for an
    /// instantaneous fault, or when there was nothing to do).
    fn start(
        &mut self,
        now_ms: u64,
        owner: usize,
        nemesis: Nemesis,
        view: &ClusterView,
        actions: &mut Vec<Action>,
    ) -> (Option<Active>, Option<u64>) {
        let mut active = Active::default();
        let (description, length) = match nemesis {
            Nemesis::Partition => {
                let (shape, cut) = self.partition_shape(view);
                if cut.is_empty() {
                    return (None, None);
                }
                for (a, b) in &cut {
                    self.hold(&node_host(*a), &node_host(*b), &mut active, actions);
                }
                active.end_description = "heal partition";
                (shape, PARTITION_MS)
            }
            Nemesis::Crash => {
                let running = self.running();
                // Never more than a minority down at once, counting nodes already down.
                let room = self.crash_room();
                if room == 0 || running.is_empty() {
                    return (None, None);
                }
                let count = self.rng.random_range(1..=room);
                let victims = self.crash(running, count, view, actions);
                active.crashed = victims.clone();
                active.end_description = "restart";
                (format!("crash {}", list(&victims)), CRASH_DOWN_MS)
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
                active.crashed = victims.clone();
                active.end_description = "restart";
                (format!("power loss {}", list(&victims)), POWER_LOSS_DOWN_MS)
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
                active.slowed = links;
                active.end_description = "links back to normal";
                (
                    format!("slow links (max {max_ms} ms): {}", names.join(" ")),
                    LOSS_MS,
                )
            }
            Nemesis::Pause => {
                let running = self.running();
                let Some(node) = self.pick_target(&running, view) else {
                    return (None, None);
                };
                self.isolate(node, &mut active, actions);
                actions.push(Action::StopClock(node, true));
                active.clocks.push(node);
                active.end_description = "resume";
                (format!("pause {}", node_host(node)), PAUSE_MS)
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
                return (None, None);
            }
            Nemesis::Messages => {
                let faults = LinkFaults {
                    drop_percent: self.rng.random_range(0..=30),
                    duplicate_percent: self.rng.random_range(0..=30),
                    reorder_percent: self.rng.random_range(0..=50),
                    reorder_max_ms: self.rng.random_range(5..=300),
                    stale_percent: self.rng.random_range(0..=10),
                    stale_ms: STALE_MS,
                };
                let every = self.rng.random_bool(0.5);
                let mut chosen = Vec::new();
                for pair in self.directed_links() {
                    if every || self.rng.random_bool(0.5) {
                        chosen.push(pair);
                    }
                }
                if chosen.is_empty() {
                    return (None, None);
                }
                for &pair in &chosen {
                    self.fault_link(pair, owner, faults, &mut active, actions);
                }
                active.end_description = "messages back to normal";
                let which = if every {
                    "every link".to_string()
                } else {
                    format!("{} directed links", chosen.len())
                };
                (format!("messages on {which}: {faults}"), MESSAGES_MS)
            }
            Nemesis::OneWay => {
                let leader = view
                    .leader
                    .filter(|l| self.nodes.contains(l))
                    .unwrap_or(self.nodes[0]);
                let (shape, cut): (String, Vec<(u64, u64)>) = match self.rng.random_range(0..3u32) {
                    0 => (
                        format!("{} cannot send to its peers", node_host(leader)),
                        self.directed_links()
                            .into_iter()
                            .filter(|&(from, _)| from == leader)
                            .collect(),
                    ),
                    1 => (
                        format!("{} cannot hear its peers", node_host(leader)),
                        self.directed_links()
                            .into_iter()
                            .filter(|&(_, to)| to == leader)
                            .collect(),
                    ),
                    _ => {
                        let mut cut = Vec::new();
                        for pair in self.directed_links() {
                            if self.rng.random_bool(0.3) {
                                cut.push(pair);
                            }
                        }
                        let names: Vec<String> = cut
                            .iter()
                            .map(|(a, b)| format!("{}→{}", node_host(*a), node_host(*b)))
                            .collect();
                        (format!("cut {}", names.join(" ")), cut)
                    }
                };
                if cut.is_empty() {
                    return (None, None);
                }
                for &pair in &cut {
                    self.fault_link(pair, owner, LinkFaults::cut(), &mut active, actions);
                }
                active.end_description = "one-way links healed";
                (format!("one-way: {shape}"), PARTITION_MS)
            }
            Nemesis::Leader => {
                debug_assert!(false, "the leader nemesis arms and fires instead");
                return (None, None);
            }
            Nemesis::Isolate => {
                let running = self.running();
                if running.is_empty() {
                    return (None, None);
                }
                // Where the turns start is drawn once, at the first fault, so a run without
                // this nemesis draws nothing for it.
                let turn = match self.isolate_turn {
                    Some(turn) => turn,
                    None => self.rng.random_range(0..self.nodes.len()),
                };
                // The next node in turn that is running (one is).
                let Some((node, next_turn)) = (0..self.nodes.len())
                    .map(|step| turn + step)
                    .map(|t| (self.nodes[t % self.nodes.len()], t + 1))
                    .find(|(node, _)| running.contains(node))
                else {
                    return (None, None);
                };
                self.isolate_turn = Some(next_turn % self.nodes.len());
                self.isolate(node, &mut active, actions);
                active.isolation = Some(self.isolations.len());
                self.isolations.push(Isolation {
                    node,
                    from_ms: now_ms,
                    to_ms: None,
                });
                active.end_description = "heal partition";
                (format!("isolate {}", node_host(node)), ISOLATE_MS)
            }
            Nemesis::Clients => {
                if self.workers.len() < 2 || self.nodes.len() < 3 {
                    return (None, None);
                }
                let mut shuffled = self.nodes.clone();
                shuffled.shuffle(&mut self.rng);
                let minority_size = (self.nodes.len() - 1) / 2;
                // The minority holds the leader most of the time: its clients keep talking to
                // a leader about to be deposed.
                if let Some(leader) = view.leader.filter(|l| self.nodes.contains(l)) {
                    if self.rng.random_bool(0.7) {
                        shuffled.retain(|&id| id != leader);
                        shuffled.insert(0, leader);
                    }
                }
                let (minority, majority) = shuffled.split_at(minority_size);
                let (minority, majority) = (minority.to_vec(), majority.to_vec());
                let side = self.rng.random_range(0..self.workers.len());
                let stranded = self.workers[side].clone();
                for &a in &minority {
                    for &b in &majority {
                        self.hold(&node_host(a), &node_host(b), &mut active, actions);
                    }
                }
                for (index, worker) in self.workers.clone().iter().enumerate() {
                    let unreachable = if index == side { &majority } else { &minority };
                    for &node in unreachable {
                        self.hold(worker, &node_host(node), &mut active, actions);
                    }
                }
                active.end_description = "heal partition";
                active.stranded = Some(stranded.clone());
                (
                    format!(
                        "clients on {stranded} with the minority {} | the rest with {}",
                        list(&minority),
                        list(&majority)
                    ),
                    PARTITION_MS,
                )
            }
        };
        self.record(now_ms, nemesis, true, description);
        (Some(active), Some(between(&mut self.rng, length)))
    }

    fn end(
        &mut self,
        now_ms: u64,
        owner: usize,
        nemesis: Nemesis,
        active: Active,
        actions: &mut Vec<Action>,
    ) {
        for key in &active.cut {
            self.release(key, actions);
        }
        for &node in &active.crashed {
            self.crashed.remove(&node);
            actions.push(Action::Restart(node));
        }
        for (a, b) in &active.slowed {
            actions.push(Action::SetMaxLatency(
                a.clone(),
                b.clone(),
                self.normal_max_latency,
            ));
        }
        for &(from, to) in &active.faulted {
            actions.push(Action::LinkFaults {
                from,
                to,
                owner,
                faults: None,
            });
        }
        for &node in &active.clocks {
            actions.push(Action::StopClock(node, false));
        }
        if let Some(isolation) = active.isolation.and_then(|i| self.isolations.get_mut(i)) {
            isolation.to_ms = Some(now_ms);
        }
        let description = if active.crashed.is_empty() {
            active.end_description.to_string()
        } else {
            format!("{} {}", active.end_description, list(&active.crashed))
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
    use crate::sim::message_faults::MessageFaults;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn nemeses(seed: u64, enabled: &[Nemesis]) -> Nemeses<ChaCha8Rng> {
        Nemeses::new(
            ChaCha8Rng::seed_from_u64(seed),
            Topology {
                nodes: vec![1, 2, 3, 4, 5],
                workers: vec![worker_host(0), worker_host(1)],
                normal_max_latency: Duration::from_millis(10),
                quiet_ms: (1_000, 5_000),
            },
            enabled,
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

    /// Whatever the schedule did, healing leaves every link released, every message fault
    /// cleared, every clock running and every node up; and without power loss never more than a
    /// minority was down at once.
    #[test]
    fn heal_undoes_every_fault() {
        let without_power_loss: Vec<Nemesis> = Nemesis::ALL
            .into_iter()
            .filter(|n| *n != Nemesis::PowerLoss)
            .collect();
        for seed in 0..60 {
            let power_loss = seed % 2 == 0;
            let enabled = if power_loss {
                Nemesis::ALL.to_vec()
            } else {
                without_power_loss.clone()
            };
            let mut n = nemeses(seed, &enabled);
            let mut held: BTreeSet<(Host, Host)> = BTreeSet::new();
            let mut down: BTreeSet<u64> = BTreeSet::new();
            let faults = MessageFaults::new(seed, false);
            let mut acked_writes = 0;
            let mut fired = BTreeSet::new();
            let mut apply = |actions: Vec<Action>| {
                for action in actions {
                    match action {
                        Action::Hold(a, b) => assert!(held.insert((a, b))),
                        Action::Release(a, b) => assert!(held.remove(&(a, b))),
                        Action::Crash(id) => assert!(down.insert(id)),
                        Action::Restart(id) => assert!(down.remove(&id)),
                        Action::Bounce(id) => assert!(!down.contains(&id)),
                        Action::SetMaxLatency(..) => {}
                        Action::LinkFaults {
                            from,
                            to,
                            owner,
                            faults: link,
                        } => faults.set_link(from, to, owner, link),
                        Action::StopClock(id, stopped) => faults.stop_clock(id, stopped),
                    }
                    if !power_loss {
                        assert!(down.len() <= 2, "seed {seed}: a majority crashed");
                    }
                }
            };
            let end_ms = 20_000 + seed * 500;
            for now_ms in (0..end_ms).step_by(10) {
                acked_writes += 1;
                let view = ClusterView {
                    leader: Some(2),
                    acked_writes,
                    acked_lossy_writes: None,
                    replicating: [2].into_iter().collect(),
                    replicated: [2].into_iter().collect(),
                };
                let actions = n.poll(now_ms, &view);
                fired.extend(n.log().iter().map(|f| f.nemesis));
                apply(actions);
            }
            apply(n.heal(end_ms));
            assert!(held.is_empty() && down.is_empty(), "seed {seed}");
            assert!(
                faults.is_clear(),
                "seed {seed}: a message fault outlived the heal"
            );
            assert!(n.log().len() > 4, "seed {seed}: too few faults");
            assert!(fired.contains(&Nemesis::Leader), "seed {seed}: {fired:?}");
        }
    }

    /// A leader-aimed fault waits for its moment: with no write acknowledged and no entries
    /// sent, nothing fires until its patience runs out.
    #[test]
    fn leader_faults_wait_for_an_acknowledged_write() {
        let mut n = nemeses(3, &[Nemesis::Leader]);
        let quiet = ClusterView {
            leader: Some(1),
            ..ClusterView::default()
        };
        let first_due = FIRST_FAULT_MS.1;
        for now_ms in 0..first_due {
            assert!(n.poll(now_ms, &quiet).is_empty(), "fired at {now_ms} ms");
        }
        let acked = ClusterView {
            leader: Some(1),
            acked_writes: 1,
            acked_lossy_writes: None,
            replicating: [1].into_iter().collect(),
            replicated: [1].into_iter().collect(),
        };
        let actions = n.poll(first_due, &acked);
        assert!(!actions.is_empty(), "the moment came and nothing fired");
        assert!(
            n.log()[0].description.contains("leader n1"),
            "{:?}",
            n.log()
        );
    }

    /// The isolate nemesis cuts one node at a time off from every other host, in turn, and
    /// heals it before the next; `all` does not include it, `isolate` names it.
    #[test]
    fn isolate_cuts_single_nodes_off_in_turn() {
        assert!(!parse_nemeses("all").unwrap().contains(&Nemesis::Isolate));
        assert_eq!(parse_nemeses("isolate").unwrap(), vec![Nemesis::Isolate]);
        let mut n = nemeses(5, &[Nemesis::Isolate]);
        let view = ClusterView::default();
        let mut held: BTreeSet<(Host, Host)> = BTreeSet::new();
        let mut cut_off = Vec::new();
        for now_ms in (0..60_000).step_by(10) {
            for action in n.poll(now_ms, &view) {
                match action {
                    Action::Hold(a, b) => assert!(held.insert((a, b))),
                    Action::Release(a, b) => assert!(held.remove(&(a, b))),
                    other => panic!("the isolate nemesis only holds links: {other:?}"),
                }
            }
            let isolations = n.isolations();
            if let Some(last) = isolations.last().filter(|i| i.to_ms.is_none()) {
                // One node, every one of its links (4 peers, 3 client hosts), nothing else.
                let me = node_host(last.node);
                assert_eq!(held.len(), 7, "at {now_ms} ms: {held:?}");
                assert!(held.iter().all(|(a, b)| *a == me || *b == me), "{held:?}");
            } else {
                assert!(held.is_empty(), "at {now_ms} ms: {held:?}");
            }
            if cut_off.len() < isolations.len() {
                cut_off.push(isolations[isolations.len() - 1].node);
            }
        }
        assert!(cut_off.len() >= 5, "{cut_off:?}");
        // In turn: each next node follows the last, wrapping around.
        for pair in cut_off.windows(2) {
            assert_eq!(pair[1], pair[0] % 5 + 1, "{cut_off:?}");
        }
        n.heal(60_000);
        assert!(n.isolations().iter().all(|i| i.to_ms.is_some()));
    }

    #[test]
    fn schedules_are_a_function_of_the_seed() {
        let run = |seed| {
            let mut n = nemeses(seed, &Nemesis::ALL);
            let view = ClusterView {
                leader: Some(1),
                ..ClusterView::default()
            };
            (0..30_000)
                .step_by(5)
                .flat_map(|t| n.poll(t, &view))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }
}
