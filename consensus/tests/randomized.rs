//! Randomized simulation: 3- and 5-node clusters under message loss, duplication, reordering and
//! delay, partitions, slow disks (Ready handled late) and crash-restarts that lose everything not
//! persisted; on half the seeds leaders send their appends before persisting them, as a node with
//! an asynchronous log writer does. After every step the harness checks election safety, log
//! matching, leader completeness, state machine safety and linearizable read indexes; at the end
//! of each run the faults stop and a leader must be elected and commit a proposal within a bound
//! (liveness).
//!
//! A failure prints its seed. Replay one seed with `RAFT_SEED=<seed>`; run more seeds with
//! `RAFT_SEEDS=<count>` (default 1000) and longer runs with `RAFT_STEPS=<steps>` (default 1500).

mod common;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{Cluster, TestRng};
use consensus::{ReadMode, Role};

/// Rounds (a tick on every node, then a full delivery) allowed to elect a leader and commit once
/// the faults stop. Generous: a few election timeouts of 10-20 ticks each.
const LIVENESS_ROUNDS: usize = 300;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

struct Run {
    cluster: Cluster,
    rng: TestRng,
    lockstep_ticks: bool,
    next_request_id: u64,
}

fn new_run(seed: u64) -> Run {
    let mut rng = TestRng::new(seed);
    let n = if rng.chance(50) { 3 } else { 5 };
    let pre_vote = rng.chance(50);
    let check_quorum = rng.chance(60);
    let lease_reads = check_quorum && rng.chance(50);
    let heartbeat = 1 + rng.below(2) as u32;
    let inflight = 1 + rng.below(4);
    let max_entries = 1 + rng.below(5);
    // Compaction with no tail, a tiny one, or one longer than most runs' logs (taken from the
    // seed, not the rng, so the other choices of each seed stay what they were).
    let compaction_tail_entries = [0, 1, 3, 10][(seed % 4) as usize];
    let cluster = Cluster::new(n, |c| {
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
        c.allow_lease_reads = lease_reads;
        c.heartbeat_interval_ticks = heartbeat;
        c.max_inflight_appends = inflight;
        c.max_entries_per_append = max_entries;
        c.compaction_tail_entries = compaction_tail_entries;
        c.election_timeout_ticks = 6;
        c.lease_margin_ticks = 1;
        c.seed = seed.wrapping_mul(31).wrapping_add(c.id);
    });
    let mut cluster = cluster;
    cluster.auto_ready = false;
    // Half the seeds drive their leaders as a node with an asynchronous log writer does: appends
    // and heartbeats leave before the leader's own write (from the seed, not the rng, so the
    // other choices of each seed stay what they were).
    cluster.send_early = seed % 2 == 1;
    Run {
        cluster,
        rng,
        // Leases assume bounded clock drift, so with leases allowed every node ticks together
        // (with them refused, `Lease` reads take a round and the clocks may skew).
        lockstep_ticks: lease_reads,
        next_request_id: 0,
    }
}

fn random_node(run: &mut Run) -> u64 {
    let ids = run.cluster.ids();
    ids[run.rng.below(ids.len())]
}

fn random_step(run: &mut Run) {
    let roll = run.rng.below(100);
    match roll {
        // Deliver, duplicate or lose a random in-flight message (random choice = reordering).
        0..=49 | 94..=99 => {
            let cluster = &mut run.cluster;
            if cluster.network.is_empty() {
                return;
            }
            let index = run.rng.below(cluster.network.len());
            let msg = if run.rng.chance(5) {
                cluster.network[index].clone() // duplicated: the original stays queued
            } else {
                cluster.network.remove(index)
            };
            let to = msg.to;
            if !run.rng.chance(5) && cluster.deliver(msg) && run.rng.chance(80) {
                cluster.handle_ready(to);
            }
        }
        // The clock: every node ticks, each sometimes late unless leases need lockstep.
        50..=59 => {
            for id in run.cluster.ids() {
                if run.lockstep_ticks || run.rng.chance(85) {
                    run.cluster.tick(id);
                    if run.rng.chance(80) {
                        run.cluster.handle_ready(id);
                    }
                }
            }
        }
        // A slow disk catching up. With an asynchronous writer (send_early seeds), its write
        // is sometimes only begun, to complete at a later step: messages arrive and leave while
        // it is in flight.
        60..=69 => {
            let id = random_node(run);
            if run.cluster.send_early && run.rng.chance(50) {
                if run.rng.chance(50) {
                    run.cluster.begin_write(id);
                } else {
                    run.cluster.finish_write(id);
                }
            } else {
                run.cluster.handle_ready(id);
            }
        }
        70..=79 => {
            let id = match run.cluster.leader() {
                Some(leader) if run.rng.chance(80) => leader,
                _ => random_node(run),
            };
            let command = format!("cmd{}", run.rng.next_u64() % 1000);
            let _ = run.cluster.propose(id, &command);
            if run.rng.chance(80) {
                run.cluster.handle_ready(id);
            }
        }
        80..=82 => {
            // Any node that believes it leads, a deposed one included: that is where a stale
            // read would come from. (The rng is drawn only when there is a choice, so seeds
            // with one leader keep their other choices.)
            let leaders = run.cluster.leaders();
            let leader = match leaders.len() {
                0 => None,
                1 => Some(leaders[0]),
                n => Some(leaders[run.rng.below(n)]),
            };
            if let Some(leader) = leader {
                run.next_request_id += 1;
                // Half the reads ask for the lease (by parity: no extra draw from the rng, so
                // each seed's other choices stay what they were).
                let mode = if run.next_request_id.is_multiple_of(2) {
                    ReadMode::Lease
                } else {
                    ReadMode::ReadIndex
                };
                let _ = run.cluster.read_with(leader, run.next_request_id, mode);
            }
        }
        83..=84 => {
            let id = random_node(run);
            run.cluster.compact(id);
        }
        85 => {
            let id = random_node(run);
            run.cluster.crash(id);
        }
        86..=88 => {
            let id = random_node(run);
            run.cluster.restart(id);
        }
        89 => {
            let mut a = BTreeSet::new();
            let mut b = BTreeSet::new();
            for id in run.cluster.ids() {
                if run.rng.chance(50) {
                    a.insert(id);
                } else {
                    b.insert(id);
                }
            }
            run.cluster.partition(vec![a, b]);
        }
        90..=92 => run.cluster.heal(),
        _ => {
            if let Some(leader) = run.cluster.leader() {
                let to = random_node(run);
                run.cluster.transfer(leader, to);
            }
        }
    }
}

/// Stops all faults and requires a leader to commit a fresh proposal within a bound.
fn check_liveness(run: &mut Run) -> Result<(), String> {
    let cluster = &mut run.cluster;
    cluster.heal();
    for id in cluster.ids() {
        cluster.restart(id);
    }
    cluster.auto_ready = true;
    cluster.handle_all_ready();
    let mut proposal: Option<(u64, u64, u64)> = None; // (leader, term, index)
    for _ in 0..LIVENESS_ROUNDS {
        cluster.tick_all();
        cluster.settle();
        cluster.check()?;
        if let Some((leader, term, index)) = proposal {
            let raft = cluster.raft(leader);
            if raft.role() == Role::Leader && raft.term() == term {
                if raft.log().commit_index() >= index {
                    return Ok(());
                }
                continue;
            }
        }
        if let Some(leader) = cluster.leader() {
            let term = cluster.raft(leader).term();
            if let Ok(index) = cluster.propose(leader, "liveness") {
                proposal = Some((leader, term, index));
            }
        }
    }
    Err(format!(
        "no proposal committed within {LIVENESS_ROUNDS} fault-free rounds:\n{}",
        cluster.status_lines(None).join("\n")
    ))
}

fn run_seed(seed: u64, steps: usize) -> Result<(), String> {
    let mut run = new_run(seed);
    for step in 0..steps {
        random_step(&mut run);
        run.cluster
            .check()
            .map_err(|e| format!("step {step}: {e}"))?;
    }
    let stats = (
        run.cluster.checker.max_committed(),
        run.cluster
            .ids()
            .iter()
            .filter_map(|&id| run.cluster.nodes[&id].raft.as_ref().map(|r| r.term()))
            .max(),
    );
    check_liveness(&mut run)?;
    if std::env::var("RAFT_VERBOSE").is_ok() {
        println!(
            "seed {seed}: committed {} max term {:?} before liveness",
            stats.0, stats.1
        );
    }
    Ok(())
}

#[test]
fn randomized_clusters_keep_raft_safety_and_recover_liveness() {
    let steps = env_u64("RAFT_STEPS").unwrap_or(1500) as usize;
    let seeds: Vec<u64> = match env_u64("RAFT_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("RAFT_SEEDS").unwrap_or(1000)).collect(),
    };
    for seed in seeds {
        let outcome = catch_unwind(AssertUnwindSafe(|| run_seed(seed, steps)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(violation)) => {
                panic!("seed {seed} failed: {violation}\nreplay with RAFT_SEED={seed}")
            }
            Err(_) => panic!("seed {seed} panicked (see above); replay with RAFT_SEED={seed}"),
        }
    }
}
