//! A deterministic simulation of a ringleader cluster: the real node code ([`ringleader_node`])
//! and the real client, on turmoil's simulated network and disk, under a nemesis, with every
//! client operation recorded and checked for linearizability.
//!
//! One run, [`run()`]:
//! 1. draw the run's plan from the seed ([`swarm`]: which nemeses, how often, each node's clock
//!    rate), then start `nodes` nodes (hosts `n1`…, each with its own simulated disk, its peer
//!    messages routed through the [`message_faults`] seam) and the client hosts;
//! 2. run the [`workload`]: `clients` concurrent clients, spread over two hosts, invoke `ops`
//!    reads, writes and compare-and-sets on a few keys, while the [`nemesis`] partitions,
//!    crashes, slows, pauses, restarts and cuts power to nodes, faults single Raft messages and
//!    aims at the leader, on a schedule drawn from the seed;
//! 3. heal: release every link, clear every message fault, restart every clock and every crashed
//!    node; within [`workload::RECOVERY_BOUND`] a write must succeed in every group and every
//!    replica of a group must reach the same applied index, and then the state-machine digests
//!    of each group's replicas must be equal;
//! 4. every client, with its session as the workload left it, does a few more operations
//!    (the after-heal phase, recorded and checked like the rest);
//! 5. check the history: the operations whose level promises linearizability with
//!    [`crate::checker::check`], every client's session guarantees with
//!    [`crate::session::check_sessions`], stale reads and the receipts' staleness bounds with
//!    [`crate::staleness::check_staleness`]; and count, per level, what was answered during
//!    faults and which acknowledged writes were lost (levels: [`Consistency`]).
//!
//! A linearizable history proves little when nothing succeeded (a history of failures and
//! timeouts is trivially linearizable): [`SimReport::floor_shortfalls`] checks a run against
//! [`Floors`], minimum successes per run, per phase of the workload and per client after the heal.
//!
//! Determinism: everything random comes from [`SimOptions::seed`] (turmoil's own generator,
//! which also seeds each host's tokio runtime and the order hosts are polled in, and ChaCha
//! generators for the plan, the message faults, the workload, the node seeds and the nemesis),
//! the epoch is fixed, time is simulated and nothing here iterates a `HashMap`, so a seed replays
//! the same run, byte for byte of history.
//!
//! Sharded runs ([`SimOptions::shards`]): every node runs the same ring of S groups of R
//! replicas; keys are linearizable per key whichever group holds them, so the checker is the
//! same; what changes is that "the leader" is a group's (the nemesis aims at the leader of a
//! group drawn from the seed), that convergence and digests are compared per group, and that
//! single nodes can be cut off in turn ([`Nemesis::Isolate`]) to show availability per shard
//! ([`shards`]).
//!
//! Files: [`network`] (turmoil's TCP behind the node's `Network` trait), [`message_faults`] (the
//! per-message fault plan behind the node's fault seam), [`nemesis`] (faults and their schedule),
//! [`swarm`] (what each seed draws), [`workload`] (clients, history recording, the recovery
//! check), [`mod@run`] (the driver that builds the simulation, applies faults and assembles the
//! report).

pub mod consistency;
pub mod message_faults;
pub mod nemesis;
pub mod network;
pub mod run;
pub mod shards;
pub mod swarm;
pub mod workload;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use consistency::Consistency;
pub use message_faults::{LinkFaults, MessageStats};
pub use nemesis::{parse_nemeses, FaultEvent, Isolation, Nemesis};
pub use network::TurmoilNetwork;
pub use ringleader_node::PlantedBug;
pub use run::run;
pub use shards::IsolationWindow;
pub use swarm::SwarmPlan;
pub use workload::{
    Availability, LostWrites, NodeState, OpCounts, PhaseCounts, Recovery,
    AFTER_HEAL_OPS_PER_CLIENT, WORKLOAD_PHASES,
};

use std::collections::BTreeMap;

use crate::checker::{CheckOptions, CheckReport};
use crate::levels::Level;
use crate::session::{Guarantee, SessionReport};
use crate::staleness::StalenessReport;

/// The clock drift the simulation stays within by default, in percent of a node's tick rate.
pub const DEFAULT_CLOCK_DRIFT_PERCENT: u32 = 10;

/// Replicas per shard in a sharded run unless [`SimOptions::replicas`] says otherwise (the
/// ring's default).
pub const DEFAULT_SHARD_REPLICAS: u32 = 3;

/// The most shards a simulated run may have: keys are at most 64, two per shard.
pub const MAX_SIM_SHARDS: u32 = 32;

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOptions {
    /// Every random choice of the run derives from it.
    pub seed: u64,
    /// Nodes in the cluster (3 or 5 are the usual sizes).
    pub nodes: usize,
    /// Client operations invoked in total.
    pub ops: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients contend on.
    pub keys: usize,
    /// Faults to inject, alone or together; empty for a fault-free run.
    pub nemeses: Vec<Nemesis>,
    /// If set, [`run()`] writes `history.jsonl` (and `report.html` on a violation) there.
    pub out_dir: Option<PathBuf>,
    /// A deliberate bug in every node, for testing the checker; [`PlantedBug::None`] normally.
    pub planted_bug: PlantedBug,
    /// Swarm testing: the seed draws which of `nemeses` run and how often (see [`swarm`]).
    /// Off, every nemesis of `nemeses` runs.
    pub swarm: bool,
    /// The stated bound on clock drift: each node's clock runs up to this many percent fast or
    /// slow (drawn per node from the seed).
    pub clock_drift_percent: u32,
    /// How the history is checked (`shrink: false` skips shrinking a violation).
    pub check_options: CheckOptions,
    /// The read levels and write acknowledgements the workload uses.
    pub consistency: Consistency,
    /// Shards (Raft groups) the keys are spread over by the ring; 1 (the default) is the
    /// unsharded cluster: one group on every node, as before sharding, so every seed replays as
    /// it did. With more, the workload uses at least [`SimOptions::keys_in_use`] keys.
    pub shards: u32,
    /// Replicas per shard; `None` is the default: every node with one shard, else
    /// [`DEFAULT_SHARD_REPLICAS`] (or every node, with fewer nodes).
    pub replicas: Option<u32>,
}

impl SimOptions {
    /// Five nodes, 2000 operations by 10 clients on 3 keys (about 20 simulated seconds), every
    /// nemesis with swarm testing, clocks drifting up to 10%, linearizable reads and majority
    /// writes.
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            nodes: 5,
            ops: 2000,
            clients: 10,
            keys: 3,
            nemeses: Nemesis::ALL.to_vec(),
            out_dir: None,
            planted_bug: PlantedBug::None,
            swarm: true,
            clock_drift_percent: DEFAULT_CLOCK_DRIFT_PERCENT,
            check_options: CheckOptions::default(),
            consistency: Consistency::default(),
            shards: 1,
            replicas: None,
        }
    }

    /// Replicas per shard: [`SimOptions::replicas`], or its default (every node with one shard,
    /// else [`DEFAULT_SHARD_REPLICAS`] or every node if there are fewer).
    pub fn replicas_per_shard(&self) -> u32 {
        let nodes = u32::try_from(self.nodes).unwrap_or(u32::MAX);
        match self.replicas {
            Some(replicas) => replicas,
            None if self.shards <= 1 => nodes,
            None => nodes.min(DEFAULT_SHARD_REPLICAS),
        }
    }

    /// The keys the workload operates on: [`SimOptions::keys`], raised to two per shard in a
    /// sharded run, so that most shards see contended keys (keys are spread by their hash, so
    /// a shard may still get none; the report counts the shards the keys cover).
    pub fn keys_in_use(&self) -> usize {
        if self.shards <= 1 {
            self.keys
        } else {
            self.keys.max(2 * self.shards as usize)
        }
    }

    /// Whether the run spreads its keys over more than one group.
    pub fn sharded(&self) -> bool {
        self.shards > 1
    }

    /// Refuses options no run can satisfy.
    pub fn validate(&self) -> Result<(), SimError> {
        let problem = if self.nodes == 0 || self.nodes > 9 {
            "nodes must be between 1 and 9"
        } else if self.clients == 0 || self.clients > 64 {
            "clients must be between 1 and 64"
        } else if self.keys == 0 || self.keys > 64 {
            "keys must be between 1 and 64"
        } else if self.ops > 100_000 {
            "ops must be at most 100000"
        } else if self.clock_drift_percent > 90 {
            "clock drift must be at most 90%"
        } else if self.shards == 0 || self.shards > MAX_SIM_SHARDS {
            "shards must be between 1 and 32"
        } else if self.replicas_per_shard() == 0 || self.replicas_per_shard() as usize > self.nodes
        {
            "replicas must be between 1 and the number of nodes"
        } else if self.keys_in_use() > 64 {
            "keys must be at most 64 (a sharded run uses at least two per shard)"
        } else {
            return Ok(());
        };
        Err(SimError::Invalid(problem.to_string()))
    }
}

/// How a run ended, most serious first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The history is linearizable, the cluster recovered and the replicas agree.
    Linearizable,
    /// The history is not linearizable: on `key`, operation `failed_op` (its label, e.g.
    /// `r → 3`, and history process) could not be placed. See the HTML report.
    Violation {
        key: String,
        failed_op: String,
        process: u64,
    },
    /// A client's session guarantee broke (the first one found; see [`crate::session`]).
    SessionViolation {
        guarantee: Guarantee,
        process: u64,
        detail: String,
    },
    /// A read returned state older than its receipt's staleness bound allowed (the first one
    /// found; see [`crate::staleness`]).
    StalenessBoundExceeded { detail: String },
    /// A host's software stopped with an error or a panic (e.g. a node that could not recover
    /// its disk).
    HostFailed { message: String },
    /// Every node reached the same applied index but their state machines differ.
    Diverged { nodes: Vec<NodeState> },
    /// After the heal, writes did not succeed or the nodes did not converge within
    /// [`workload::RECOVERY_BOUND`]. Not a linearizability violation: a liveness failure.
    DidNotRecover { reason: String },
    /// No violation found, but the checker ran out of budget on these keys.
    CheckerGaveUp { keys: Vec<String> },
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct SimReport {
    pub options: SimOptions,
    pub verdict: Verdict,
    pub counts: OpCounts,
    /// The same counts per phase: the workload in [`WORKLOAD_PHASES`] slices, then after the heal.
    pub phases: Vec<PhaseCounts>,
    /// Faults injected, in order (starts and ends).
    pub faults: Vec<FaultEvent>,
    /// The history in the JSONL format of [`crate::history`].
    pub history_jsonl: String,
    /// A self-contained HTML page drawing the violation, if there is one.
    pub html_report: Option<String>,
    /// Every node answered after the heal with the same applied index and the same digest.
    pub digests_match: bool,
    pub recovery: Recovery,
    /// Simulated time the run took.
    pub sim_elapsed: Duration,
    /// The checker's full report.
    pub check: CheckReport,
    /// Wall-clock time the checker took (informational; not part of the deterministic output).
    pub check_wall_time: Duration,
    /// What the seed drew: nemeses, rhythm, clock rates.
    pub plan: SwarmPlan,
    /// What the message seam did.
    pub messages: MessageStats,
    /// Wall-clock time of the whole run, checker included (informational).
    pub wall_time: Duration,
    /// The session-guarantee checker's report.
    pub session: SessionReport,
    /// Stale reads found per level, and the staleness bounds checked.
    pub staleness: StalenessReport,
    /// Per level, operations invoked while a fault was active, and how many were answered.
    pub availability: BTreeMap<Level, Availability>,
    /// The same for the clients cut off with a minority of the nodes (the clients nemesis).
    pub stranded_availability: BTreeMap<Level, Availability>,
    /// Per write acknowledgement, writes to keys of their own and how many were lost.
    pub lost_writes: BTreeMap<Level, LostWrites>,
    /// Each single-node isolation of the isolate nemesis, and what each shard did meanwhile.
    pub isolation_windows: Vec<IsolationWindow>,
    /// How many groups the workload's keys land in (1 unsharded).
    pub groups_with_keys: usize,
}

impl SimReport {
    /// Whether the run found nothing wrong.
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }

    /// Where the run falls short of `floors`, one line per shortfall; empty when it meets them.
    pub fn floor_shortfalls(&self, floors: &Floors) -> Vec<String> {
        let mut shortfalls = Vec::new();
        let percent = |part: usize, whole: usize| part * 100 / whole.max(1);
        let total = self.counts.ok + self.counts.fail + self.counts.info;
        if total < self.options.ops {
            shortfalls.push(format!(
                "only {total} of {} operations completed",
                self.options.ops
            ));
        }
        if percent(self.counts.ok, total) < floors.run_ok_percent {
            shortfalls.push(format!(
                "run: {} of {total} operations ok, below the floor of {}%",
                self.counts.ok, floors.run_ok_percent
            ));
        }
        let workload: Vec<&PhaseCounts> = self.phases.iter().filter(|p| p.under_faults).collect();
        if workload.len() != WORKLOAD_PHASES {
            shortfalls.push(format!(
                "{} workload phases counted, expected {WORKLOAD_PHASES}",
                workload.len()
            ));
        }
        for phase in workload {
            let c = &phase.counts;
            let done = c.ok + c.fail + c.info;
            if percent(c.ok, done) < floors.phase_ok_percent {
                shortfalls.push(format!(
                    "{}: {} of {done} operations ok, below the floor of {}%",
                    phase.name, c.ok, floors.phase_ok_percent
                ));
            }
            if percent(c.ok_writes, done) < floors.phase_ok_writes_percent {
                shortfalls.push(format!(
                    "{}: {} of {done} operations were successful writes, below the floor of {}%",
                    phase.name, c.ok_writes, floors.phase_ok_writes_percent
                ));
            }
        }
        match self.phases.iter().find(|p| !p.under_faults) {
            None => shortfalls.push("no after-heal phase was counted".into()),
            Some(after) => {
                for (process, &writes) in &after.ok_writes_by_process {
                    if writes < floors.after_heal_ok_writes_per_client {
                        shortfalls.push(format!(
                            "after heal: client {process} had {writes} successful writes, below \
                             the floor of {}",
                            floors.after_heal_ok_writes_per_client
                        ));
                    }
                }
                if after.ok_writes_by_process.len() != self.options.clients {
                    shortfalls.push(format!(
                        "after heal: {} clients counted, expected {}",
                        after.ok_writes_by_process.len(),
                        self.options.clients
                    ));
                }
            }
        }
        shortfalls
    }

    /// Simulated seconds per wall-clock second for the whole run, checker included.
    pub fn speedup(&self) -> f64 {
        self.sim_elapsed.as_secs_f64() / self.wall_time.as_secs_f64().max(1e-9)
    }

    /// Operations completed per simulated second of the workload and after-heal phases.
    pub fn ops_per_sim_second(&self) -> f64 {
        let done = self.counts.ok + self.counts.fail + self.counts.info;
        done as f64 / self.sim_elapsed.as_secs_f64().max(1e-9)
    }

    /// A few lines for a terminal or a test failure message.
    pub fn summary(&self) -> String {
        let o = &self.options;
        let nemeses: Vec<&str> = o.nemeses.iter().map(|n| n.name()).collect();
        let faults = self.faults.iter().filter(|f| f.starts).count();
        let m = &self.messages;
        let mut text = format!(
            "seed {} · {} nodes · {} ops by {} clients on {} keys · nemeses [{}]{}\n\
             drew: {}\n\
             verdict: {:?}\n\
             ops: {} ok, {} fail, {} info, {} sessions renewed · {} faults injected · {:.1} s simulated · checked {} ops in {:?} ({} search and {} shrink iterations)\n\
             recovery: write after {:?} ms, converged after {:?} ms, digests match: {}",
            o.seed,
            o.nodes,
            o.ops,
            o.clients,
            o.keys_in_use(),
            nemeses.join(","),
            if o.swarm { " (swarm)" } else { "" },
            self.plan,
            self.verdict,
            self.counts.ok,
            self.counts.fail,
            self.counts.info,
            self.counts.sessions_renewed,
            faults,
            self.sim_elapsed.as_secs_f64(),
            self.check.ops_checked,
            self.check_wall_time,
            self.check.work.search_steps,
            self.check.work.shrink_steps,
            self.recovery.write_after_ms,
            self.recovery.converged_after_ms,
            self.digests_match,
        );
        text.push_str(&format!(
            "\nmessages: {} sent, {} dropped, {} duplicated, {} reordered, {} stale · \
             {:.0} ops per simulated s · {:.0}x real time",
            m.sent,
            m.dropped,
            m.duplicated,
            m.reordered,
            m.stale,
            self.ops_per_sim_second(),
            self.speedup()
        ));
        for phase in &self.phases {
            let c = &phase.counts;
            text.push_str(&format!(
                "\n  {}: {} ok ({} writes), {} fail, {} info",
                phase.name, c.ok, c.ok_writes, c.fail, c.info
            ));
        }
        text.push_str(&self.levels_summary());
        if o.sharded() {
            text.push_str(&format!(
                "\nshards: {} groups of {} replicas; the {} keys land in {} groups",
                o.shards,
                o.replicas_per_shard(),
                o.keys_in_use(),
                self.groups_with_keys
            ));
        }
        for window in &self.isolation_windows {
            text.push_str(&format!("\n  {}", window.summary()));
        }
        if o.planted_bug != PlantedBug::None {
            text.push_str(&format!("\nplanted bug: {}", o.planted_bug));
        }
        text
    }

    /// The levels part of [`SimReport::summary`]: availability per level during faults (and on
    /// the minority side), which guarantees held, stale reads found, acknowledged writes lost.
    pub fn levels_summary(&self) -> String {
        let ratios = |map: &BTreeMap<Level, Availability>| {
            let parts: Vec<String> = map
                .iter()
                .map(|(level, a)| format!("{level} {}", a.ratio()))
                .collect();
            if parts.is_empty() {
                "none".to_string()
            } else {
                parts.join(" · ")
            }
        };
        let mut text = format!(
            "\nconsistency {}: answered during faults: {}",
            self.options.consistency,
            ratios(&self.availability)
        );
        if !self.stranded_availability.is_empty() {
            text.push_str(&format!(
                "\n  clients cut off with a minority: {}",
                ratios(&self.stranded_availability)
            ));
        }
        let lin = match self.check.verdict {
            crate::checker::Verdict::Linearizable => "held".to_string(),
            crate::checker::Verdict::NotLinearizable => "VIOLATED".to_string(),
            crate::checker::Verdict::Unknown => "unknown (checker gave up)".to_string(),
        };
        text.push_str(&format!(
            "\n  linearizability (linearizable and lease reads, majority and all writes; leader \
             acks as maybe-lost): {lin}, {} ops",
            self.check.ops_checked
        ));
        let s = &self.session;
        text.push_str(&format!(
            "\n  session guarantees (every level but stale reads and leader acks): {}, {} reads \
             and {} writes checked",
            if s.held() {
                "held".to_string()
            } else {
                format!("{} VIOLATIONS", s.violations_found)
            },
            s.reads_checked,
            s.writes_checked
        ));
        let st = &self.staleness;
        let stale: Vec<String> = st
            .per_level
            .iter()
            .map(|(level, c)| format!("{level} {} of {}", c.stale, c.reads))
            .collect();
        text.push_str(&format!(
            "\n  stale reads found: {} · staleness bounds: {} ({} receipts checked)",
            if stale.is_empty() {
                "none checked".to_string()
            } else {
                stale.join(", ")
            },
            if st.bounds_held() {
                "held".to_string()
            } else {
                format!("{} VIOLATED", st.bound_violations_found)
            },
            st.bounded_reads
        ));
        if !self.lost_writes.is_empty() {
            let lost: Vec<String> = self
                .lost_writes
                .iter()
                .map(|(level, l)| {
                    format!(
                        "{level} {} of {} acknowledged ({} read back)",
                        l.lost, l.acknowledged, l.read_back
                    )
                })
                .collect();
            text.push_str(&format!(
                "\n  acknowledged writes lost: {}",
                lost.join(" · ")
            ));
        }
        text
    }

    /// The fault log, one line per event.
    pub fn fault_log(&self) -> String {
        let mut text = String::new();
        for f in &self.faults {
            let edge = if f.starts { "+" } else { "-" };
            text.push_str(&format!(
                "{:>8} ms {edge}{:<9} {}\n",
                f.at_ms, f.nemesis, f.description
            ));
        }
        text
    }
}

/// The least a run must have done to count as a pass, beyond a linearizable history: a cluster
/// that serves nothing (or stops serving part-way, or leaves a client unable to write) fails.
///
/// Percentages are of the operations completed in the run or phase (integer division, so a
/// floor of 20% needs at least a fifth). The defaults sit well below what the CI seeds reach
/// under every nemesis at once (figures in `jepsen-like/tests/sim_nemeses.rs`), so a run near
/// them is a run that served much less than usual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floors {
    /// Successful operations in the whole run, in percent.
    pub run_ok_percent: usize,
    /// Successful operations in each workload phase, in percent.
    pub phase_ok_percent: usize,
    /// Successful writes and compare-and-sets in each workload phase, in percent of the phase.
    pub phase_ok_writes_percent: usize,
    /// Successful writes each client must make after the heal (it makes
    /// [`AFTER_HEAL_OPS_PER_CLIENT`] operations, of which two writes).
    pub after_heal_ok_writes_per_client: usize,
}

impl Default for Floors {
    fn default() -> Floors {
        Floors {
            run_ok_percent: 40,
            phase_ok_percent: 25,
            phase_ok_writes_percent: 5,
            after_heal_ok_writes_per_client: 2,
        }
    }
}

/// Why a run could not be made (as opposed to a run that found a problem).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation options: {0}")]
    Invalid(String),
    #[error("cannot write the simulation's output to {path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("the recorded history does not parse (a bug in the simulation): {0}")]
    History(#[from] crate::history::ParseError),
}

/// Writes `history.jsonl`, `faults.txt` and, on a violation, `report.html` into `dir`
/// (created if missing). Returns the paths written.
pub fn write_outputs(report: &SimReport, dir: &Path) -> Result<Vec<PathBuf>, SimError> {
    let output = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SimError::Output { path, source }
    };
    std::fs::create_dir_all(dir).map_err(output(dir))?;
    let mut files = vec![
        (dir.join("history.jsonl"), report.history_jsonl.as_str()),
        (dir.join("faults.txt"), ""),
    ];
    let fault_log = report.fault_log();
    files[1].1 = fault_log.as_str();
    if let Some(html) = &report.html_report {
        files.push((dir.join("report.html"), html.as_str()));
    }
    let mut written = Vec::new();
    for (path, text) in files {
        std::fs::write(&path, text).map_err(output(&path))?;
        written.push(path);
    }
    Ok(written)
}
