//! The workload: concurrent clients doing reads, writes and compare-and-sets on a few keys, each
//! operation recorded in the history as invoked and then `ok`, `fail` or `info`; then, once the
//! nemesis has healed the cluster, the recovery check, and then a few more operations by every
//! client (the after-heal phase). Completions are counted per phase ([`PhaseCounts`]) so that a
//! run whose history is linearizable only because nothing succeeded can be told apart
//! ([`crate::sim::Floors`]).
//!
//! Keys are few so that operations contend; every write writes a value never written before
//! (a counter, stored as its decimal text and recorded as a JSON integer), so the checker can
//! tell writes apart. How client results map to the history (see `crate::history`):
//! - a read that errs had no effect: `fail`;
//! - a write or cas that errs is `info` when the client says its outcome is unknown
//!   ([`ringleader_client::Error::outcome_unknown`]), `fail` otherwise;
//! - a cas that finds another value is `fail` with `"error": "mismatch"`.
//!
//! The clients run on several hosts ([`worker_host`]s `c1`, `c2`, …) so that the nemesis can cut
//! some clients off together with a minority of the nodes; the leader monitor and the recovery
//! check run on the control host ([`control_host`]). The workload is dense (by default 10
//! clients and over 100 operations per simulated second on a few keys) and has two habits that
//! find read-path bugs: a client often reads a key right after writing it, and every client
//! bursts reads right after the monitor sees a new leader.
//!
//! Levels ([`crate::sim::Consistency`]): every operation is invoked at a read level or write
//! acknowledgement, recorded in the history with what its reply's receipt said (see
//! `crate::history`). Under any choice but the default the workload also writes fresh keys
//! (`u1`, `u2`, …) that nothing overwrites, and after the heal the control host reads each
//! acknowledged one back linearizably: one found missing is an acknowledged write lost
//! ([`LostWrites`]). How many operations each level answered while faults were active is
//! counted too ([`Availability`]), and apart for the clients stranded with a minority.
//!
//! Everything here runs inside turmoil's hosts, on one thread; the state they share with each
//! other and with the simulation driver lives in [`Shared`] behind an `Rc<RefCell<_>>`, never
//! borrowed across an `.await`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ringleader_client::{
    CasOutcome, Client, ClientConfig, Error, Expect, GroupId, NodeStatus, Receipt, ServedAt,
};
use ringleader_protocol::ring::Ring;
use serde_json::Value as Json;

use crate::history::{CompletionType, Function, HistoryRecorder, ReceiptInfo};
use crate::levels::Level;
use crate::sim::consistency::{read_level, write_ack, Consistency};
use crate::sim::nemesis::{worker_host as worker_host_name, CLIENT_HOST as CONTROL_HOST};
use crate::sim::network::TurmoilNetwork;

/// How long after the heal writes must succeed again and every node must agree.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(10);
/// How often the leader monitor asks every node for its status.
const MONITOR_INTERVAL: Duration = Duration::from_millis(200);
/// The key the recovery check writes (not part of the checked history); in a sharded run, one
/// key per shard named after it ([`probe_keys`]).
const PROBE_KEY: &str = "recovery-probe";
/// The workload is cut into this many phases of equal numbers of invoked operations, each
/// counted apart ([`PhaseCounts`]), so that a cluster that stops serving part-way through shows
/// up as a phase with no successes even when the run as a whole had some.
pub const WORKLOAD_PHASES: usize = 4;
/// After the heal and the recovery check, every client (the same client, with the session it
/// had) does this many more operations, recorded and checked like the others: a write, a read,
/// a write. A client left unable to write (seed 197's lost first write → `SessionExpired`
/// forever) fails here.
pub const AFTER_HEAL_OPS_PER_CLIENT: usize = 3;

/// What the workload does.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Every node's client address.
    pub endpoints: Vec<String>,
    /// Concurrent clients (history processes).
    pub clients: usize,
    /// Keys operated on.
    pub keys: usize,
    /// Operations invoked in total.
    pub ops: usize,
    /// A client call gives up after this long (retries included): then its outcome is unknown.
    pub op_timeout: Duration,
    /// Mean pause between one client's operations.
    pub think_time_mean: Duration,
    /// After a successful write, the chance (in percent) that the client's next operation is a
    /// read of the same key, at once.
    pub read_after_write_percent: u32,
    /// After the monitor sees a new leader, every client makes this many reads without pausing.
    pub burst_reads: usize,
    /// The levels operations are invoked at.
    pub consistency: Consistency,
    /// Under a consistency other than the default: the chance (in percent) that a write goes
    /// to a fresh key of its own, read back after the heal ([`LostWrites`]).
    pub unique_write_percent: u32,
    /// How many hosts the clients are spread over (client `p` runs on host `p % worker_hosts`).
    pub worker_hosts: usize,
    /// The ring every node runs: which group holds each key, which nodes replicate it.
    pub ring: Ring,
}

/// The keys the recovery check writes: one per group, so that every group must take a write
/// after the heal. With one group, just `recovery-probe` (as before sharding); with more,
/// `recovery-probe-N` for the first `N` (from 0) that lands in each group.
pub fn probe_keys(ring: &Ring) -> Vec<String> {
    let shards = ring.shards().len();
    if shards <= 1 {
        return vec![PROBE_KEY.to_string()];
    }
    let mut keys: Vec<Option<String>> = vec![None; shards];
    let mut missing = shards;
    let mut n = 0u64;
    // Each name lands in a given group with probability 1/S, so this ends after about
    // S·ln(S) names; the bound only guards against a ring that maps nothing to some group.
    while missing > 0 && n < 1_000_000 {
        let key = format!("{PROBE_KEY}-{n}");
        let group = ring.shard_for_key(key.as_bytes()) as usize;
        if let Some(slot) = keys.get_mut(group).filter(|slot| slot.is_none()) {
            *slot = Some(key);
            missing -= 1;
        }
        n += 1;
    }
    debug_assert_eq!(missing, 0, "every group of the ring holds some key");
    keys.into_iter().flatten().collect()
}

/// Operations at one level that completed, and how many of them the cluster answered (`ok`,
/// or a compare-and-set that found another value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Availability {
    pub answered: usize,
    pub total: usize,
}

impl Availability {
    /// `answered/total`, or `-` when nothing was tried.
    pub fn ratio(&self) -> String {
        if self.total == 0 {
            "-".into()
        } else {
            format!("{}/{}", self.answered, self.total)
        }
    }

    /// The share answered, in percent (0 when nothing was tried).
    pub fn percent(&self) -> usize {
        self.answered * 100 / self.total.max(1)
    }
}

/// Writes to keys of their own at one acknowledgement level, and what the after-heal read-back
/// found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LostWrites {
    /// Writes invoked.
    pub written: usize,
    /// Writes acknowledged (`ok`).
    pub acknowledged: usize,
    /// Acknowledged writes read back after the heal (a read that failed is not counted).
    pub read_back: usize,
    /// Acknowledged writes read back and found missing.
    pub lost: usize,
}

/// A write to a key of its own.
#[derive(Debug, Clone, Copy)]
struct UniqueWrite {
    level: Level,
    value: i64,
    acknowledged: bool,
}

/// Where the run is: the driver heals the cluster when the workload asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Clients run; the nemesis injects faults.
    Workload,
    /// The workload is done: the driver must heal everything and flip to `Healed`.
    HealRequested,
    /// Faults are over; the recovery check runs.
    Healed,
}

/// Operation outcomes, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    /// Writes answered `SessionExpired` (the client then continues under a new session).
    pub sessions_renewed: usize,
    /// Writes and compare-and-sets that completed `ok` (a subset of `ok`).
    pub ok_writes: usize,
}

/// One phase of the run, counted: the `WORKLOAD_PHASES` slices of the workload (by order of
/// invocation), then the operations after the heal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseCounts {
    /// `workload 1/4`, …, `after heal`.
    pub name: String,
    /// Whether the nemesis may be injecting faults during this phase.
    pub under_faults: bool,
    pub counts: OpCounts,
    /// Successful writes (and compare-and-sets) per client (history process), every client
    /// listed, zeros included.
    pub ok_writes_by_process: BTreeMap<u64, usize>,
}

impl PhaseCounts {
    fn new(name: String, under_faults: bool, clients: usize) -> PhaseCounts {
        PhaseCounts {
            name,
            under_faults,
            counts: OpCounts::default(),
            ok_writes_by_process: (0..clients as u64).map(|p| (p, 0)).collect(),
        }
    }

    fn count(&mut self, process: u64, kind: CompletionType, is_write: bool) {
        self.counts.count(kind, is_write);
        if kind == CompletionType::Ok && is_write {
            *self.ok_writes_by_process.entry(process).or_default() += 1;
        }
    }
}

impl OpCounts {
    fn count(&mut self, kind: CompletionType, is_write: bool) {
        match kind {
            CompletionType::Ok => {
                self.ok += 1;
                if is_write {
                    self.ok_writes += 1;
                }
            }
            CompletionType::Fail => self.fail += 1,
            CompletionType::Info => self.info += 1,
        }
    }
}

/// One replica (a node's view of one group) as the recovery check last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub id: u64,
    /// The group (shard); 0 in an unsharded run.
    pub group: GroupId,
    pub role: String,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub digest: u64,
}

impl NodeState {
    /// The node's view of each group it hosts, in group order.
    fn from_status(status: &NodeStatus) -> Vec<NodeState> {
        status
            .groups
            .iter()
            .map(|group| NodeState {
                id: status.id,
                group: group.group,
                role: group.role.clone(),
                term: group.term,
                commit_index: group.commit_index,
                applied_index: group.applied_index,
                digest: group.digest,
            })
            .collect()
    }
}

/// Whether `nodes` holds exactly the replicas `ring` places (each group on its replicas, each
/// once) and, within each group, every replica reports the same applied index.
pub fn replicas_agree_on_applied(ring: &Ring, nodes: &[NodeState]) -> bool {
    replicas_agree(ring, nodes, |n| n.applied_index)
}

/// Whether `nodes` holds exactly the replicas `ring` places and, within each group, every
/// replica reports the same digest: the replicas of one group applied the same state.
pub fn replicas_agree_on_digest(ring: &Ring, nodes: &[NodeState]) -> bool {
    replicas_agree(ring, nodes, |n| n.digest)
}

fn replicas_agree(ring: &Ring, nodes: &[NodeState], field: impl Fn(&NodeState) -> u64) -> bool {
    let mut by_group: BTreeMap<GroupId, Vec<&NodeState>> = BTreeMap::new();
    for node in nodes {
        by_group.entry(node.group).or_default().push(node);
    }
    let expected: usize = ring.shards().iter().map(|s| s.replicas.len()).sum();
    nodes.len() == expected
        && ring.shards().iter().all(|shard| {
            by_group.get(&shard.group).is_some_and(|replicas| {
                replicas.len() == shard.replicas.len()
                    && replicas.iter().all(|r| shard.replicas.contains(&r.id))
                    && replicas.windows(2).all(|w| field(w[0]) == field(w[1]))
            })
        })
}

/// A change of a group's leader as the monitor saw it (the first poll at which a node reported
/// leading the group at a term higher than the last leader seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSeen {
    /// Simulated milliseconds since the start of the run.
    pub at_ms: u64,
    pub group: GroupId,
    pub term: u64,
    pub node: u64,
}

/// What the recovery check found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Simulated milliseconds from the heal until a write succeeded in every group, if it did.
    pub write_after_ms: Option<u64>,
    /// Simulated milliseconds from the heal until, in every group, every replica reported the
    /// same applied index.
    pub converged_after_ms: Option<u64>,
    /// Every replica's last answer, node by node and each node's groups in order (a node that
    /// never answered is missing).
    pub nodes: Vec<NodeState>,
    /// Why the last failed recovery write failed, if one did.
    pub last_write_error: Option<String>,
}

/// State shared by the client host and the simulation driver.
#[derive(Debug)]
pub struct Shared {
    pub recorder: HistoryRecorder,
    /// The whole run's counts (every phase).
    pub counts: OpCounts,
    /// The workload's phases, then the after-heal phase (see [`PhaseCounts`]); empty until the
    /// client host starts.
    pub phases: Vec<PhaseCounts>,
    pub phase: Phase,
    /// Per group, the highest-term leader any node reported: `(term, id)`.
    pub leaders: BTreeMap<GroupId, (u64, u64)>,
    /// Every change of a group's leader the monitor saw, in order. At most one entry per
    /// group, node and monitor poll (every 200 ms while the workload runs): bounded by the
    /// run's length, which is bounded (every operation has a deadline).
    pub leader_log: Vec<LeaderSeen>,
    /// Set when the recovery check is over; then the clients start their after-heal operations.
    pub recovery: Option<Recovery>,
    /// Writes and compare-and-sets acknowledged so far (the leader nemesis waits for one).
    pub acked_writes: u64,
    /// Set by the driver: whether some fault is active now.
    pub faults_active: bool,
    /// Set by the driver: the client hosts now cut off with a minority of the nodes.
    pub stranded: Vec<String>,
    /// Per level, operations invoked while a fault was active.
    pub availability: BTreeMap<Level, Availability>,
    /// Per level, operations invoked by clients cut off with a minority of the nodes.
    pub stranded_availability: BTreeMap<Level, Availability>,
    /// Per write acknowledgement, the writes to keys of their own and what became of them.
    pub lost_writes: BTreeMap<Level, LostWrites>,
    /// The writes to keys of their own, by key.
    unique_writes: BTreeMap<String, UniqueWrite>,
    /// Clients done with the workload.
    workers_done: usize,
    /// How many times the monitor saw a new leader: each time every client bursts reads.
    /// Sharded, once per monitor poll that saw some group's leader change (not once per group,
    /// which would make bursts eight times as frequent with eight groups and crowd out writes).
    leader_changes: u64,
    /// Sharded: the groups whose leader changed in the monitor's last poll that saw a change;
    /// burst reads go to their keys.
    burst_groups: BTreeSet<GroupId>,
    /// Operations invoked so far.
    issued: usize,
    /// The next value to write; every write writes a fresh one.
    next_value: i64,
    /// The last value each key was seen to hold, for cas expectations.
    last_seen: BTreeMap<String, Option<i64>>,
}

impl Shared {
    /// The state of a run with `clients` clients, before anything happened.
    pub fn new(clients: usize) -> Shared {
        let mut phases: Vec<PhaseCounts> = (1..=WORKLOAD_PHASES)
            .map(|i| PhaseCounts::new(format!("workload {i}/{WORKLOAD_PHASES}"), true, clients))
            .collect();
        phases.push(PhaseCounts::new("after heal".into(), false, clients));
        Shared {
            recorder: HistoryRecorder::new(),
            counts: OpCounts::default(),
            phases,
            phase: Phase::Workload,
            leaders: BTreeMap::new(),
            leader_log: Vec::new(),
            recovery: None,
            acked_writes: 0,
            faults_active: false,
            stranded: Vec::new(),
            availability: BTreeMap::new(),
            stranded_availability: BTreeMap::new(),
            lost_writes: BTreeMap::new(),
            unique_writes: BTreeMap::new(),
            workers_done: 0,
            leader_changes: 0,
            burst_groups: BTreeSet::new(),
            issued: 0,
            next_value: 1,
            last_seen: BTreeMap::new(),
        }
    }
}

/// Simulated time since the start, in nanoseconds.
fn now_ns() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_nanos() as u64)
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// The control host's whole life: the leader monitor while the workload runs, then (once every
/// client is done) the heal and the recovery check, after which the clients go on.
pub async fn control_host(shared: Rc<RefCell<Shared>>, config: WorkloadConfig) -> turmoil::Result {
    let sharded = config.ring.shards().len() > 1;
    let monitor = tokio::task::spawn_local(monitor_leader(
        shared.clone(),
        config.endpoints.clone(),
        sharded,
    ));
    while shared.borrow().workers_done < config.clients {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    monitor.abort();
    shared.borrow_mut().phase = Phase::HealRequested;
    while shared.borrow().phase != Phase::Healed {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let recovery = check_recovery(&config.endpoints, &config.ring).await?;
    shared.borrow_mut().recovery = Some(recovery);
    read_back_unique_writes(&shared, &config).await?;
    Ok(())
}

/// After the heal: reads back, linearizably, every acknowledged write to a key of its own
/// (recorded in the history as process `clients`) and counts those found missing per level.
async fn read_back_unique_writes(
    shared: &Rc<RefCell<Shared>>,
    config: &WorkloadConfig,
) -> Result<(), Error> {
    let writes: Vec<(String, UniqueWrite)> = shared
        .borrow()
        .unique_writes
        .iter()
        .map(|(key, write)| (key.clone(), *write))
        .collect();
    if writes.is_empty() {
        return Ok(());
    }
    let process = config.clients as u64;
    let client = new_client(&config.endpoints, config.op_timeout, process)?;
    for (key, write) in writes {
        if !write.acknowledged {
            continue;
        }
        let op = Op::Read(Level::Linearizable);
        let found = perform(shared, &client, process, key, op, None, CONTROL_HOST).await;
        if let Some(found) = found.read {
            let mut shared = shared.borrow_mut();
            let count = shared.lost_writes.entry(write.level).or_default();
            count.read_back += 1;
            if found != Some(write.value) {
                count.lost += 1;
            }
        }
    }
    Ok(())
}

/// A host of workload clients: one client per `(process, rng)`, each doing its share of the
/// workload, then waiting for the recovery check, then its after-heal operations.
pub async fn worker_host(
    shared: Rc<RefCell<Shared>>,
    config: WorkloadConfig,
    clients: Vec<(u64, ChaCha8Rng)>,
) -> turmoil::Result {
    let mut tasks = Vec::with_capacity(clients.len());
    for (process, rng) in clients {
        let (shared, config) = (shared.clone(), config.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let client = worker(shared.clone(), config.clone(), process, rng).await;
            shared.borrow_mut().workers_done += 1;
            let (client, rng) = client?;
            while shared.borrow().recovery.is_none() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            after_heal(shared, config, process, client, rng).await;
            Ok::<(), Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Keeps `Shared::leader` up to date for the nemesis, from every node's status.
async fn monitor_leader(shared: Rc<RefCell<Shared>>, endpoints: Vec<String>, sharded: bool) {
    let config = ClientConfig {
        request_timeout: MONITOR_INTERVAL,
        connect_timeout: MONITOR_INTERVAL,
        ..ClientConfig::new(endpoints.clone())
    };
    let Ok(client) = Client::with_connector(config, TurmoilNetwork) else {
        return;
    };
    loop {
        let mut polls = Vec::with_capacity(endpoints.len());
        for addr in &endpoints {
            let (client, addr) = (client.clone(), addr.clone());
            polls.push(tokio::task::spawn_local(async move {
                client.status_of(&addr).await
            }));
        }
        let mut changed = BTreeSet::new();
        for poll in polls {
            let Ok(Ok(status)) = poll.await else {
                continue;
            };
            for group in status.groups.iter().filter(|g| g.role == "leader") {
                let mut shared = shared.borrow_mut();
                let last = shared.leaders.get(&group.group).copied();
                if last.is_none_or(|(term, _)| term <= group.term) {
                    if last.is_some_and(|(term, _)| term < group.term) {
                        // A new leader: every client bursts reads (sharded: once per poll).
                        if sharded {
                            changed.insert(group.group);
                        } else {
                            shared.leader_changes += 1;
                        }
                    }
                    if last != Some((group.term, status.id)) {
                        shared.leader_log.push(LeaderSeen {
                            at_ms: now_ms(),
                            group: group.group,
                            term: group.term,
                            node: status.id,
                        });
                    }
                    shared.leaders.insert(group.group, (group.term, status.id));
                }
            }
        }
        if !changed.is_empty() {
            let mut shared = shared.borrow_mut();
            shared.leader_changes += 1;
            shared.burst_groups = changed;
        }
        tokio::time::sleep(MONITOR_INTERVAL).await;
    }
}

/// An operation about to be invoked, with its level.
enum Op {
    Read(Level),
    Write(i64, Level),
    Cas {
        expected: Option<i64>,
        new: i64,
        level: Level,
    },
}

impl Op {
    fn level(&self) -> Level {
        match self {
            Op::Read(level) | Op::Write(_, level) | Op::Cas { level, .. } => *level,
        }
    }
}

/// What a client does next, besides a random operation after a pause.
enum Habit {
    /// Read back the key it just wrote, at once.
    ReadBack(String),
    /// Read a random key at once (a burst after a new leader).
    Burst,
    Random,
}

/// Picks the next operation of a client, or `None` when all operations have been issued.
fn next_op(
    shared: &mut Shared,
    config: &WorkloadConfig,
    rng: &mut ChaCha8Rng,
    habit: Habit,
) -> Option<(String, Op)> {
    if shared.issued >= config.ops {
        return None;
    }
    shared.issued += 1;
    let consistency = config.consistency;
    let key = match habit {
        Habit::ReadBack(key) => return Some((key, Op::Read(consistency.read_level(rng)))),
        // Sharded, a burst reads the keys of the groups that just changed leader.
        Habit::Burst if config.ring.shards().len() > 1 => {
            let candidates: Vec<usize> = (0..config.keys)
                .filter(|i| {
                    let group = config.ring.shard_for_key(format!("k{i}").as_bytes());
                    shared.burst_groups.contains(&group)
                })
                .collect();
            match candidates.len() {
                0 => format!("k{}", rng.random_range(0..config.keys.max(1))),
                n => format!("k{}", candidates[rng.random_range(0..n)]),
            }
        }
        Habit::Burst | Habit::Random => format!("k{}", rng.random_range(0..config.keys.max(1))),
    };
    if matches!(habit, Habit::Burst) {
        return Some((key, Op::Read(consistency.read_level(rng))));
    }
    let op = pick_op(shared, &key, rng, consistency);
    // Drawn only off the default, so that the default's draws are what they always were.
    if let Op::Write(value, level) = op {
        if !consistency.is_default() && rng.random_range(0..100) < config.unique_write_percent {
            let key = format!("u{}", shared.unique_writes.len() + 1);
            shared.unique_writes.insert(
                key.clone(),
                UniqueWrite {
                    level,
                    value,
                    acknowledged: false,
                },
            );
            shared.lost_writes.entry(level).or_default().written += 1;
            return Some((key, op));
        }
    }
    Some((key, op))
}

/// A read, a write of a fresh value or a cas on `key`, at levels drawn from `consistency`.
fn pick_op(shared: &mut Shared, key: &str, rng: &mut ChaCha8Rng, consistency: Consistency) -> Op {
    match rng.random_range(0..10u32) {
        0..=3 => Op::Read(consistency.read_level(rng)),
        4..=6 => {
            let value = shared.next_value;
            shared.next_value += 1;
            Op::Write(value, consistency.write_level(rng, false))
        }
        _ => {
            let new = shared.next_value;
            shared.next_value += 1;
            // Mostly the value last seen (a cas that may succeed), sometimes an older one.
            let expected = match shared.last_seen.get(key) {
                Some(&seen) if rng.random_bool(0.8) => seen,
                _ if rng.random_bool(0.5) => None,
                _ => Some(rng.random_range(1..new.max(2))),
            };
            Op::Cas {
                expected,
                new,
                level: consistency.write_level(rng, true),
            }
        }
    }
}

fn json_of(value: Option<i64>) -> Json {
    value.map_or(Json::Null, Json::from)
}

/// A stored value as recorded: the integer it spells, or the raw text if it is not one.
fn decode_value(bytes: &[u8]) -> (Json, Option<i64>) {
    let text = String::from_utf8_lossy(bytes);
    match text.parse::<i64>() {
        Ok(i) => (Json::from(i), Some(i)),
        Err(_) => (Json::from(text.into_owned()), None),
    }
}

const SESSION_EXPIRED: &str = "session expired";
/// An `all` write that committed but was not seen applied on every replica in time: recorded
/// `info` (its version is unknown), yet it took effect, so the floors count it as a success.
const COMMITTED_NOT_ON_ALL: &str = "committed, not yet on every replica";

/// A short reason for the history's `error` field.
fn error_label(error: &Error) -> String {
    match error {
        Error::Timeout {
            maybe_applied: true,
            ..
        } => "timeout, maybe applied".into(),
        Error::Timeout { .. } => "timeout, not sent".into(),
        Error::Unreachable { .. } => "unreachable, not sent".into(),
        Error::SessionExpired => SESSION_EXPIRED.into(),
        Error::Invalid(message) => format!("invalid: {message}"),
        Error::Server(message) => format!("server: {message}"),
        Error::DiskFull { node, .. } => format!("disk full on {node}"),
        Error::NotOnAllReplicas(_) => COMMITTED_NOT_ON_ALL.into(),
        Error::NoEndpoints => "no endpoints".into(),
        Error::NotLeader { .. } => "not the leader (pinned client)".into(),
    }
}

/// The completion of a write or cas that returned an error.
fn write_error(error: &Error) -> (CompletionType, Json, Option<String>) {
    // A write that committed but was not seen on every replica in time did happen; `info`
    // (it may have) is the honest record of an outcome without its version.
    let kind = if error.outcome_unknown() || matches!(error, Error::NotOnAllReplicas(_)) {
        CompletionType::Info
    } else {
        CompletionType::Fail
    };
    (kind, Json::Null, Some(error_label(error)))
}

/// A client; its first write to a group opens its session there. Its session ids are seeded
/// by its process number: distinct per client, the same in every run of a seed.
fn new_client(
    endpoints: &[String],
    request_timeout: Duration,
    process: u64,
) -> Result<Client<TurmoilNetwork>, Error> {
    let config = ClientConfig {
        request_timeout,
        connect_timeout: Duration::from_millis(500),
        session_id_seed: Some(process),
        ..ClientConfig::new(endpoints.to_vec())
    };
    Client::with_connector(config, TurmoilNetwork)
}

/// One client's share of the workload; returns the client, its session as the workload left it,
/// and its generator, for the after-heal operations.
async fn worker(
    shared: Rc<RefCell<Shared>>,
    config: WorkloadConfig,
    process: u64,
    mut rng: ChaCha8Rng,
) -> Result<(Client<TurmoilNetwork>, ChaCha8Rng), Error> {
    let client = new_client(&config.endpoints, config.op_timeout, process)?;
    let think_ms_max = 2 * config.think_time_mean.as_millis() as u64;
    // Set after a successful write that the next operation reads back at once.
    let mut read_back: Option<String> = None;
    let mut leader_changes_seen = shared.borrow().leader_changes;
    let mut burst_left = 0;
    loop {
        let leader_changes = shared.borrow().leader_changes;
        if leader_changes != leader_changes_seen {
            leader_changes_seen = leader_changes;
            burst_left = config.burst_reads;
        }
        let habit = if let Some(key) = read_back.take() {
            Habit::ReadBack(key)
        } else if burst_left > 0 {
            burst_left -= 1;
            Habit::Burst
        } else {
            Habit::Random
        };
        let pause_ms = match habit {
            Habit::Random => rng.random_range(0..=think_ms_max),
            // Still a small pause, so a burst is reads from every client at about the same time.
            Habit::ReadBack(_) | Habit::Burst => rng.random_range(0..=5),
        };
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        let (key, op, phase) = {
            let mut shared = shared.borrow_mut();
            let Some((key, op)) = next_op(&mut shared, &config, &mut rng, habit) else {
                return Ok((client, rng));
            };
            // `issued` counts this operation already: 1..=ops.
            let phase = (shared.issued - 1) * WORKLOAD_PHASES / config.ops.max(1);
            (key, op, phase)
        };
        let written_key = (!matches!(op, Op::Read(_))).then(|| key.clone());
        let host = worker_host_name(process as usize % config.worker_hosts.max(1));
        let kind = perform(&shared, &client, process, key, op, Some(phase), &host)
            .await
            .kind;
        if kind == CompletionType::Ok && rng.random_range(0..100) < config.read_after_write_percent
        {
            read_back = written_key;
        }
    }
}

/// After the heal: the client does a write, a read and a write (fresh values, on its own key
/// `k<process mod keys>`, at levels drawn as in the workload), recorded in the history and
/// counted in the last phase.
async fn after_heal(
    shared: Rc<RefCell<Shared>>,
    config: WorkloadConfig,
    process: u64,
    client: Client<TurmoilNetwork>,
    mut rng: ChaCha8Rng,
) {
    let key = format!("k{}", process as usize % config.keys.max(1));
    let phase = WORKLOAD_PHASES;
    for i in 0..AFTER_HEAL_OPS_PER_CLIENT {
        let op = if i % 2 == 1 {
            Op::Read(config.consistency.read_level(&mut rng))
        } else {
            let mut shared = shared.borrow_mut();
            let value = shared.next_value;
            shared.next_value += 1;
            Op::Write(value, config.consistency.write_level(&mut rng, false))
        };
        let host = worker_host_name(process as usize % config.worker_hosts.max(1));
        perform(
            &shared,
            &client,
            process,
            key.clone(),
            op,
            Some(phase),
            &host,
        )
        .await;
    }
}

/// How an operation completed, as [`perform`] recorded it.
struct Performed {
    kind: CompletionType,
    /// For an `ok` read, the value read: `Some(None)` when absent (or not an integer, which
    /// the workload never writes).
    read: Option<Option<i64>>,
}

/// What a receipt said, for the history.
fn receipt_info(version: Option<u64>, receipt: Option<&Receipt>) -> ReceiptInfo {
    ReceiptInfo {
        version,
        index: receipt.map(|r| r.index),
        staleness_bound_ms: receipt.and_then(|r| r.staleness_bound_ms),
        served: receipt.map(|r| match r.served_at {
            ServedAt::Linearizable => Level::Linearizable,
            ServedAt::Lease => Level::Lease,
            ServedAt::Session => Level::Session,
            ServedAt::Stale => Level::Stale,
            ServedAt::Majority => Level::Majority,
            ServedAt::All => Level::All,
            ServedAt::Leader => Level::Leader,
        }),
    }
}

/// Invokes `op` on `key` through `client`, and records its completion, with its receipt, and
/// counts it (in `phase`, if any, and per level); returns how it completed.
async fn perform(
    shared: &Rc<RefCell<Shared>>,
    client: &Client<TurmoilNetwork>,
    process: u64,
    key: String,
    op: Op,
    phase: Option<usize>,
    host: &str,
) -> Performed {
    let level = op.level();
    let (id, under_faults, stranded) = {
        let mut shared = shared.borrow_mut();
        let (f, value) = match &op {
            Op::Read(_) => (Function::Read, Json::Null),
            Op::Write(v, _) => (Function::Write, Json::from(*v)),
            Op::Cas { expected, new, .. } => (
                Function::Cas,
                Json::Array(vec![json_of(*expected), Json::from(*new)]),
            ),
        };
        let id = shared
            .recorder
            .invoke_at_level(process, f, &key, value, now_ns(), level);
        let stranded = shared.stranded.iter().any(|h| h == host);
        (id, shared.faults_active, stranded)
    };
    let is_write = !matches!(op, Op::Read(_));
    let mut seen: Option<Option<i64>> = None;
    let mut receipt = ReceiptInfo::default();
    let (kind, value, error) = match op {
        Op::Read(level) => match client.read(key.as_str(), read_level(level)).await {
            Ok(found) => {
                let (json, parsed) = match &found.value {
                    Some(v) => decode_value(&v.value),
                    None => (Json::Null, None),
                };
                let version = found.value.as_ref().map_or(0, |v| v.version);
                receipt = receipt_info(Some(version), found.receipt.as_ref());
                seen = Some(parsed);
                (CompletionType::Ok, json, None)
            }
            Err(error) => (CompletionType::Fail, Json::Null, Some(error_label(&error))),
        },
        Op::Write(v, level) => match client
            .put_with(key.as_str(), v.to_string(), write_ack(level))
            .await
        {
            Ok(written) => {
                receipt = receipt_info(Some(written.version), written.receipt.as_ref());
                seen = Some(Some(v));
                (CompletionType::Ok, Json::Null, None)
            }
            Err(error) => write_error(&error),
        },
        Op::Cas {
            expected,
            new,
            level,
        } => {
            let expect = match expected {
                Some(e) => Expect::Value(e.to_string().into_bytes()),
                None => Expect::Absent,
            };
            match client
                .cas_with(key.as_str(), expect, new.to_string(), write_ack(level))
                .await
            {
                Ok((CasOutcome::Swapped { version }, answered)) => {
                    receipt = receipt_info(Some(version), answered.as_ref());
                    seen = Some(Some(new));
                    (CompletionType::Ok, Json::Null, None)
                }
                Ok((CasOutcome::Mismatch { current }, answered)) => {
                    let version = current.as_ref().map_or(0, |c| c.version);
                    receipt = receipt_info(Some(version), answered.as_ref());
                    seen = Some(current.and_then(|c| decode_value(&c.value).1));
                    (CompletionType::Fail, Json::Null, Some("mismatch".into()))
                }
                Err(error) => write_error(&error),
            }
        }
    };
    // The client starts a new session by itself after `SessionExpired`; count them.
    let session_expired = error.as_deref() == Some(SESSION_EXPIRED);
    let mut shared = shared.borrow_mut();
    shared
        .recorder
        .complete_with_receipt(id, kind, value, error.as_deref(), now_ns(), &receipt);
    let read = (!is_write && kind == CompletionType::Ok).then(|| seen.flatten());
    let Some(phase) = phase else {
        // The after-heal read-back: recorded in the history, counted nowhere else.
        return Performed { kind, read };
    };
    if session_expired {
        shared.counts.sessions_renewed += 1;
        if let Some(counts) = shared.phases.get_mut(phase) {
            counts.counts.sessions_renewed += 1;
        }
    }
    if let Some(write) = shared.unique_writes.get_mut(&key).filter(|_| is_write) {
        if kind == CompletionType::Ok {
            write.acknowledged = true;
            let level = write.level;
            shared.lost_writes.entry(level).or_default().acknowledged += 1;
        }
    } else if let Some(seen) = seen {
        shared.last_seen.insert(key, seen);
    }
    shared.counts.count(kind, is_write);
    if kind == CompletionType::Ok && is_write {
        shared.acked_writes += 1;
    }
    let took_effect = is_write && error.as_deref() == Some(COMMITTED_NOT_ON_ALL);
    if let Some(counts) = shared.phases.get_mut(phase) {
        let counted = if took_effect {
            CompletionType::Ok
        } else {
            kind
        };
        counts.count(process, counted, is_write);
    }
    let answered = kind == CompletionType::Ok || error.as_deref() == Some("mismatch");
    let tally = |map: &mut BTreeMap<Level, Availability>| {
        let a = map.entry(level).or_default();
        a.total += 1;
        a.answered += usize::from(answered);
    };
    if under_faults {
        tally(&mut shared.availability);
    }
    if stranded {
        tally(&mut shared.stranded_availability);
    }
    Performed { kind, read }
}

/// After the heal: a write to every group must succeed (in group order; one group in an
/// unsharded run), then within each group every replica must report the same applied index,
/// all within [`RECOVERY_BOUND`].
async fn check_recovery(endpoints: &[String], ring: &Ring) -> turmoil::Result<Recovery> {
    let healed_ms = now_ms();
    let deadline = tokio::time::Instant::now() + RECOVERY_BOUND;
    // Seeded apart from every worker's process number.
    let client = new_client(endpoints, Duration::from_secs(1), u64::MAX)?;
    let mut recovery = Recovery::default();
    let mut probe = 0u64;
    let probes = probe_keys(ring);
    let mut written = 0;
    while tokio::time::Instant::now() < deadline {
        let Some(key) = probes.get(written) else {
            break;
        };
        probe += 1;
        match client.put(key.as_str(), probe.to_string()).await {
            Ok(_) => {
                written += 1;
                if written == probes.len() {
                    recovery.write_after_ms = Some(now_ms() - healed_ms);
                }
            }
            Err(error) if probes.len() > 1 => {
                recovery.last_write_error = Some(format!("{key}: {error}"))
            }
            Err(error) => recovery.last_write_error = Some(error.to_string()),
        }
    }
    // Then every replica must reach its group's applied index. Polled even when no write
    // succeeded, so that the report shows where each node was stuck.
    loop {
        let mut nodes = Vec::with_capacity(endpoints.len());
        for addr in endpoints {
            if let Ok(status) = client.status_of(addr).await {
                nodes.extend(NodeState::from_status(&status));
            }
        }
        let agreed = replicas_agree_on_applied(ring, &nodes);
        recovery.nodes = nodes;
        if agreed && recovery.write_after_ms.is_some() {
            recovery.converged_after_ms = Some(now_ms() - healed_ms);
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(recovery)
}
