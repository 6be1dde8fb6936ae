//! The simulation driver: builds the turmoil world from [`SimOptions`], steps it one simulated
//! millisecond at a time, applies the nemesis's actions between steps, heals when the workload
//! asks, then checks the history and assembles the [`SimReport`].
//!
//! Each node host's software opens its data directory on the host's simulated disk and starts
//! [`ringleader_node::start`]; turmoil calls it again on every restart, so a crashed node comes
//! back from whatever its disk kept, exactly like a real process after power loss.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ringleader_client::GroupId;
use ringleader_node::log_writer::WriterMode;
use ringleader_node::NodeConfig;
use ringleader_protocol::ring::Ring;
use storage::fs::SimFs;

use crate::checker::{self, KeyOutcome};
use crate::history::History;
use crate::levels::Level;
use crate::report::render_violation_html;
use crate::session::{check_sessions_per_group, Guarantee, SessionViolation};
use crate::sim::consistency::Consistency;

/// The per-node clock drift the lease tolerates: two clocks `1 ± d` apart stay within the
/// lease's 9/7 ratio for `d` up to 1/8.
const LEASE_DRIFT_BOUND_PERCENT: u32 = 12;
use crate::sim::message_faults::MessageFaults;
use crate::sim::nemesis::{
    node_host, worker_host, Action, ClusterView, Nemeses, Topology, CLIENT_HOST,
};
use crate::sim::network::TurmoilNetwork;
use crate::sim::shards::isolation_windows;
use crate::sim::swarm::SwarmPlan;
use crate::sim::workload::{self, Phase, Shared, WorkloadConfig};
use crate::sim::{write_outputs, SimError, SimOptions, SimReport, Verdict};
use crate::staleness::{check_staleness, BoundViolation};

/// The port every node listens on (each node is its own host).
const NODE_PORT: u16 = 7001;
/// Where each node keeps its data on its simulated disk.
const DATA_DIR: &str = "/data";
/// A healthy link's maximum one-way latency (a LAN with some jitter).
const NORMAL_MAX_LATENCY: Duration = Duration::from_millis(10);
/// A client call's deadline: longer than an election (0.5–1 s), so most calls survive one.
const OP_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Mean pause between one client's operations: ten clients make over 100 operations per
/// simulated second when the cluster is healthy.
const THINK_TIME_MEAN: Duration = Duration::from_millis(20);
/// The chance that a client reads a key right after it wrote it.
const READ_AFTER_WRITE_PERCENT: u32 = 30;
/// Reads each client makes at once after a new leader is seen.
const BURST_READS: usize = 3;
/// Under a consistency other than the default, the share of writes (in percent) that go to a
/// fresh key of their own, read back after the heal to count lost acknowledged writes.
const UNIQUE_WRITE_PERCENT: u32 = 15;
/// Hosts the workload's clients are spread over (round robin), so that the clients nemesis can
/// strand some of them with a minority.
const WORKER_HOSTS: usize = 2;
/// A node's nominal tick (`NodeConfig`'s default); each node's actual tick drifts from it.
const NOMINAL_TICK: Duration = Duration::from_millis(50);
/// Segments and snapshots are kept small so that a short run rotates segments, compacts the
/// log and sends snapshots to lagging followers.
const SEGMENT_MAX_BYTES: u64 = 16 * 1024;
const SNAPSHOT_EVERY_ENTRIES: u64 = 150;
/// Shorter than the gap between snapshots, so that a follower a little behind is sent entries
/// from the compaction tail and one further behind still gets a snapshot: both paths run.
const LOG_TAIL_ENTRIES: u64 = 50;
/// The simulated time a run may take at most; a run is bounded well below it (every operation
/// has a deadline, and so does recovery), so reaching it is a bug in the simulation.
const SIMULATION_LIMIT: Duration = Duration::from_secs(6 * 3600);
/// One step of the simulation: the granularity of simulated time. Two milliseconds is well below
/// every timing that matters (network latency up to 10 ms, Raft ticks of 50 ms) and halves the
/// cost of stepping every host's runtime, which dominates a run's wall time.
const SIM_STEP: Duration = Duration::from_millis(4);
/// turmoil's epoch: fixed, so that nothing depends on when the run happens.
const EPOCH_SECS: u64 = 1_700_000_000;

/// Runs one simulation to the end and checks it. Synchronous: it builds and drives its own
/// turmoil world on the calling thread. Problems the run finds are in the report's
/// [`Verdict`]; an `Err` means the run could not be made or its output not written.
pub fn run(options: &SimOptions) -> Result<SimReport, SimError> {
    options.validate()?;
    let wall_started = std::time::Instant::now();
    let mut seeds = ChaCha8Rng::seed_from_u64(options.seed);
    // Drawn first, from its own generator: the plan does not shift the other draws.
    let plan = SwarmPlan::draw(
        &mut ChaCha8Rng::seed_from_u64(seeds.next_u64()),
        &options.nemeses,
        options.swarm,
        options.nodes,
        NOMINAL_TICK,
        options.clock_drift_percent,
    );
    // Raft's safety needs no clock, so a run at the default level makes a pause a clock stall
    // (its ticks lost: the harsher fault, and the one the classic bugs show under); a run that
    // checks clock-dependent promises (leases, staleness bounds) makes it a faithful process
    // pause, whose monotonic clock runs on (a stall is beyond their stated drift bound).
    let pause_catches_up = options.consistency != Consistency::Linearizable;
    let message_faults = Arc::new(MessageFaults::new(seeds.next_u64(), pause_catches_up));
    let ids: Vec<u64> = (1..=options.nodes as u64).collect();
    let peers: BTreeMap<u64, String> = ids
        .iter()
        .map(|&id| (id, format!("{}:{NODE_PORT}", node_host(id))))
        .collect();

    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(options.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .simulation_duration(SIMULATION_LIMIT)
        .tick_duration(SIM_STEP)
        // Hosts are polled in an order drawn from the seed at every step, not always n1 first.
        .enable_random_order()
        .min_message_latency(Duration::ZERO)
        .max_message_latency(NORMAL_MAX_LATENCY)
        // Connections pile up behind held links; a bounded but generous backlog.
        .tcp_capacity(4096);
    builder.fs().block_size(512);
    let mut sim = builder.build();

    // Every node runs the same ring: with one shard (the default), one group on every node,
    // exactly `NodeConfig::new`'s.
    let replicas = options.replicas_per_shard();
    let node_config = |id: u64| {
        NodeConfig::new(id, peers.clone(), PathBuf::from(DATA_DIR), SimFs::shared())
            .with_shards(options.shards, replicas)
    };
    let ring = node_config(ids[0])
        .build_ring()
        .map_err(|error| SimError::Invalid(format!("the ring: {error}")))?;
    for &id in &ids {
        let mut config = node_config(id);
        config.seed = seeds.next_u64();
        config.tick = plan.node_ticks[(id - 1) as usize];
        config.transport_faults = Some(message_faults.clone());
        config.planted_bug = options.planted_bug;
        config.wal.segment_max_bytes = SEGMENT_MAX_BYTES;
        config.snapshot_every_entries = SNAPSHOT_EVERY_ENTRIES;
        config.net.cluster_secret = Some(simulation_secret());
        config.log_tail_entries = LOG_TAIL_ENTRIES;
        // Inline: a writer thread would run outside turmoil's control (and its clock).
        config.log_writer = WriterMode::Inline;
        // Every start of the host is a new life of the node, with its own boot id.
        let starts = Rc::new(std::cell::Cell::new(0u64));
        sim.host(node_host(id).as_str(), move || {
            let mut config = config.clone();
            starts.set(starts.get() + 1);
            config.boot_id = (id << 32) | starts.get();
            async move {
                let mut node = ringleader_node::start(TurmoilNetwork, config).await?;
                node.stopped().await;
                Err("the node task stopped on its own (storage failure or panic)".into())
            }
        });
    }

    let shared = Rc::new(RefCell::new(Shared::new(options.clients)));
    let workload_config = WorkloadConfig {
        endpoints: peers.values().cloned().collect(),
        clients: options.clients,
        keys: options.keys_in_use(),
        ops: options.ops,
        op_timeout: OP_TIMEOUT,
        think_time_mean: THINK_TIME_MEAN,
        read_after_write_percent: READ_AFTER_WRITE_PERCENT,
        burst_reads: BURST_READS,
        consistency: options.consistency,
        unique_write_percent: UNIQUE_WRITE_PERCENT,
        worker_hosts: WORKER_HOSTS.min(options.clients),
        ring: ring.clone(),
    };
    let mut workload_rng = ChaCha8Rng::seed_from_u64(seeds.next_u64());
    let worker_hosts = WORKER_HOSTS.min(options.clients);
    let mut clients_of_host: Vec<Vec<(u64, ChaCha8Rng)>> = vec![Vec::new(); worker_hosts];
    for process in 0..options.clients as u64 {
        let rng = ChaCha8Rng::seed_from_u64(workload_rng.next_u64());
        clients_of_host[process as usize % worker_hosts].push((process, rng));
    }
    sim.client(
        CLIENT_HOST,
        workload::control_host(shared.clone(), workload_config.clone()),
    );
    for (index, clients) in clients_of_host.into_iter().enumerate() {
        sim.client(
            worker_host(index).as_str(),
            workload::worker_host(shared.clone(), workload_config.clone(), clients),
        );
    }

    // With leader acknowledgements in the mix, the leader nemesis aims at them (see
    // `ClusterView::acked_lossy_writes`).
    let leader_acks = options.consistency.write_levels().contains(&Level::Leader);
    let mut nemeses = Nemeses::new(
        ChaCha8Rng::seed_from_u64(seeds.next_u64()),
        Topology {
            nodes: ids.clone(),
            workers: (0..worker_hosts).map(worker_host).collect(),
            normal_max_latency: NORMAL_MAX_LATENCY,
            quiet_ms: plan.quiet_ms,
        },
        &plan.nemeses,
    );
    // Lease runs: the leader nemesis cuts the leader from its peers but leaves it clients on
    // its side; beyond the drift bound the lease tolerates (a 9/7 ratio between two clocks:
    // 12% per node) its clock also stalls.
    if options.consistency == Consistency::Lease {
        let beyond_bound = options.clock_drift_percent > LEASE_DRIFT_BOUND_PERCENT;
        nemeses = nemeses.cut_leader_from_peers_only(beyond_bound);
    }
    // Sharded, "the leader" the nemesis aims at is one group's: the focus group, drawn again
    // (from a generator of its own, drawn last so nothing else shifts) every time a fault
    // starts. Unsharded, it is group 0's, and nothing is drawn.
    let mut focus = options
        .sharded()
        .then(|| ChaCha8Rng::seed_from_u64(seeds.next_u64()));
    let mut focus_group: GroupId = 0;
    let mut faults_seen = 0;
    let mut host_failure = None;
    loop {
        let finished = match sim.step() {
            Ok(finished) => finished,
            Err(error) => {
                host_failure = Some(error.to_string());
                break;
            }
        };
        let now_ms = sim.elapsed().as_millis() as u64;
        let phase = shared.borrow().phase;
        let actions = match phase {
            Phase::Workload => {
                let (replicating, replicated) = message_faults.take_replication();
                let view = ClusterView {
                    leader: shared.borrow().leaders.get(&focus_group).map(|&(_, id)| id),
                    acked_writes: shared.borrow().acked_writes,
                    acked_lossy_writes: leader_acks.then(|| {
                        shared
                            .borrow()
                            .lost_writes
                            .get(&Level::Leader)
                            .map_or(0, |l| l.acknowledged as u64)
                    }),
                    replicating,
                    replicated,
                };
                nemeses.poll(now_ms, &view)
            }
            Phase::HealRequested => {
                shared.borrow_mut().phase = Phase::Healed;
                nemeses.heal(now_ms)
            }
            Phase::Healed => Vec::new(),
        };
        for action in actions {
            apply(&mut sim, &nemeses, &message_faults, action);
        }
        if let Some(rng) = focus.as_mut() {
            let faults = nemeses.log().len();
            if faults != faults_seen {
                faults_seen = faults;
                // Among the groups with a known leader (all of them, usually).
                let led: Vec<GroupId> = shared.borrow().leaders.keys().copied().collect();
                if !led.is_empty() {
                    focus_group = led[rng.random_range(0..led.len())];
                }
            }
        }
        {
            let mut shared = shared.borrow_mut();
            shared.faults_active = nemeses.faults_active();
            shared.stranded = nemeses.stranded_workers();
        }
        if finished {
            break;
        }
    }
    let sim_elapsed = sim.elapsed();
    drop(sim);
    debug_assert!(
        host_failure.is_some() || message_faults.is_clear(),
        "a message fault outlived the heal"
    );

    let shared = shared.borrow();
    let history_jsonl = shared.recorder.to_jsonl();
    let full_history = shared.recorder.to_history()?;
    // Linearizability is checked over the operations whose level promises it; session and
    // stale reads have checkers of their own.
    let history = full_history.linearizability_view();
    // The checker is deterministic; its wall time is reported, never used.
    let check_started = std::time::Instant::now();
    let check = checker::check(&history, &options.check_options);
    let check_wall_time = check_started.elapsed();
    // Versions are log indexes of each key's group: session guarantees are checked per group.
    let session = check_sessions_per_group(&full_history, |key| ring.shard_for_key(key.as_bytes()));
    let staleness = check_staleness(&full_history);

    let recovery = shared.recovery.clone().unwrap_or_default();
    let nodes = &recovery.nodes;
    let converged = recovery.converged_after_ms.is_some();
    // Per group: every replica of a group reported, and they agree.
    let digests_match = converged && workload::replicas_agree_on_digest(&ring, nodes);
    let isolation_windows = isolation_windows(
        nemeses.isolations(),
        &shared.leader_log,
        &full_history,
        &ring,
        sim_elapsed.as_millis() as u64,
    );

    let violation = check.violations().next();
    let html_report = violation.map(|v| render_violation_html(&history, v));
    let verdict = if let Some(v) = violation {
        let op = &history.ops[v.failed_op];
        Verdict::Violation {
            key: v.key.clone(),
            failed_op: op.label(),
            process: op.process,
        }
    } else if let Some(v) = session.violations.first() {
        Verdict::SessionViolation {
            guarantee: v.guarantee,
            process: v.process,
            detail: describe_session_violation(&full_history, v),
        }
    } else if let Some(v) = staleness.bound_violations.first() {
        Verdict::StalenessBoundExceeded {
            detail: describe_bound_violation(&full_history, v),
        }
    } else if let Some(message) = host_failure {
        Verdict::HostFailed { message }
    } else if converged && !digests_match {
        Verdict::Diverged {
            nodes: nodes.clone(),
        }
    } else if recovery.write_after_ms.is_none() {
        Verdict::DidNotRecover {
            reason: format!(
                "no write succeeded within {:?} of the heal (last error: {:?}; nodes then: {:?})",
                workload::RECOVERY_BOUND,
                recovery.last_write_error,
                nodes
            ),
        }
    } else if !converged {
        Verdict::DidNotRecover {
            reason: format!(
                "the nodes did not reach the same applied index within {:?} of the heal \
                 (last seen: {:?})",
                workload::RECOVERY_BOUND,
                nodes
            ),
        }
    } else if check.verdict == checker::Verdict::Unknown {
        Verdict::CheckerGaveUp {
            keys: check
                .per_key
                .iter()
                .filter(|k| k.outcome == KeyOutcome::Unknown)
                .map(|k| k.key.clone())
                .collect(),
        }
    } else {
        Verdict::Linearizable
    };

    let report = SimReport {
        options: options.clone(),
        verdict,
        counts: shared.counts,
        phases: shared.phases.clone(),
        faults: nemeses.log().to_vec(),
        history_jsonl,
        html_report,
        digests_match,
        recovery,
        sim_elapsed,
        check,
        check_wall_time,
        plan,
        messages: message_faults.stats(),
        wall_time: wall_started.elapsed(),
        session,
        staleness,
        availability: shared.availability.clone(),
        stranded_availability: shared.stranded_availability.clone(),
        lost_writes: shared.lost_writes.clone(),
        isolation_windows,
        groups_with_keys: groups_with_keys(&ring, options.keys_in_use()),
    };
    if let Some(dir) = &options.out_dir {
        write_outputs(&report, dir)?;
    }
    Ok(report)
}

/// How many groups the workload's keys (`k0`…) land in.
fn groups_with_keys(ring: &Ring, keys: usize) -> usize {
    let groups: std::collections::BTreeSet<GroupId> = (0..keys)
        .map(|i| ring.shard_for_key(format!("k{i}").as_bytes()))
        .collect();
    groups.len()
}

/// One line naming a session violation's operations.
fn describe_session_violation(history: &History, v: &SessionViolation) -> String {
    let label = |id: usize| {
        let op = &history.ops[id];
        format!("`{}` on {} ({})", op.label(), op.key, op.effective_level())
    };
    format!(
        "{} got version {}, needed {} {} after the client's {}",
        label(v.op),
        v.version,
        if matches!(
            v.guarantee,
            Guarantee::MonotonicWrites | Guarantee::WritesFollowReads
        ) {
            "more than"
        } else {
            "at least"
        },
        v.at_least,
        label(v.because)
    )
}

/// One line naming a bound violation's read and the write it missed.
fn describe_bound_violation(history: &History, v: &BoundViolation) -> String {
    let read = &history.ops[v.read];
    format!(
        "process {} `{}` on {} returned version {} with a staleness bound of {} ms, missing \
         version {} acknowledged {} ms before the read was invoked",
        v.process,
        read.label(),
        v.key,
        v.version,
        v.bound_ms,
        v.missed_version,
        v.acknowledged_before_ms
    )
}

fn apply<R: rand::RngCore>(
    sim: &mut turmoil::Sim<'_>,
    nemeses: &Nemeses<R>,
    message_faults: &MessageFaults,
    action: Action,
) {
    match action {
        Action::LinkFaults {
            from,
            to,
            owner,
            faults,
        } => message_faults.set_link(from, to, owner, faults),
        Action::StopClock(id, stopped) => message_faults.stop_clock(id, stopped),
        Action::Hold(a, b) => sim.hold(a.as_str(), b.as_str()),
        Action::Release(a, b) => sim.release(a.as_str(), b.as_str()),
        Action::SetMaxLatency(a, b, latency) => {
            sim.set_link_max_message_latency(a.as_str(), b.as_str(), latency)
        }
        Action::Crash(id) => {
            stop_silently(sim, nemeses, &node_host(id), |sim, host| sim.crash(host))
        }
        Action::Bounce(id) => {
            stop_silently(sim, nemeses, &node_host(id), |sim, host| sim.bounce(host))
        }
        // The host has no software running: bouncing it starts it again, from its disk.
        Action::Restart(id) => sim.bounce(node_host(id).as_str()),
    }
}

/// Kills (and for a bounce, restarts) a host's software while every one of its links drops
/// messages, then puts the links back as the nemesis wants them.
///
/// Why: killing a host drops its tokio runtime, whose tasks are dropped in an order that
/// depends on process-global task ids (tokio shards its task list by id), and each dropped
/// socket sends a FIN or RST that draws its latency from the simulation's random generator.
/// Dropping those segments instead keeps a seed's run independent of whatever else ran in the
/// process. For a crash this is also the faithful model (power loss sends no FIN); for a
/// restart the peers learn of it by RST on their next write, as after a crash.
fn stop_silently<R: rand::RngCore>(
    sim: &mut turmoil::Sim<'_>,
    nemeses: &Nemeses<R>,
    host: &str,
    stop: impl FnOnce(&mut turmoil::Sim<'_>, &str),
) {
    let others: Vec<String> = nemeses
        .hosts()
        .into_iter()
        .filter(|other| other != host)
        .collect();
    for other in &others {
        sim.partition(host, other.as_str());
    }
    stop(sim, host);
    for other in &others {
        if nemeses.is_held(host, other) {
            sim.hold(host, other.as_str());
        } else {
            sim.repair(host, other.as_str());
        }
    }
}

/// Every simulated node shares this secret, so peers authenticate as in production.
fn simulation_secret() -> ringleader_node::auth::ClusterSecret {
    match ringleader_node::auth::ClusterSecret::from_bytes(
        b"jepsen-like simulation secret".to_vec(),
    ) {
        Ok(secret) => secret,
        Err(_) => unreachable!("the simulation secret is longer than the minimum"),
    }
}
