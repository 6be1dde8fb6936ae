//! Sharded clusters in the simulation (issue 16): `ringleader sim --shards S [--replicas R]`
//! runs 5 nodes with the keys spread over S Raft groups of R replicas by the ring, and checks
//! every key's history for linearizability whichever group holds it, under every nemesis
//! (message faults and power loss included) and single nodes cut off in turn (`isolate`).
//!
//! - every nemesis, 8 shards: a few seeds pass every checker, the per-group recovery and the
//!   floors;
//! - availability per shard: while one node is cut off, the groups it led elect another
//!   leader and the groups it did not lead keep answering (CAP per shard);
//! - the checks stay sharp with shards: a replica that silently diverges in one group is
//!   caught by the per-group digests, a write acknowledged before its fsync by power loss, and
//!   reads served from a replica's local state by the linearizability checker.
//!
//! Sized for CI (test profile): `CI_SEEDS` seeds of `CI_OPS` operations. The soak over 100
//! seeds is `sharded_soak` (ignored; its command is in its comment), and the release figures
//! are `ringleader sim --seeds 1..51 --shards 8` (docs/testing.md).

mod common;

use jepsen_like::sim::{run, Nemesis, PlantedBug, SimOptions, SimReport, Verdict};

/// Operations per CI run, and seeds per test.
const CI_OPS: usize = 2_000;
const CI_SEEDS: u64 = 10;
/// The shape the issue names: 5 nodes, 8 shards of 3 replicas.
const SHARDS: u32 = 8;

fn assert_passes(options: &SimOptions) -> SimReport {
    common::assert_passes(options, &format!("shards-{}", options.shards))
}

fn sharded(seed: u64, nemeses: &[Nemesis]) -> SimOptions {
    SimOptions {
        ops: CI_OPS,
        shards: SHARDS,
        nemeses: nemeses.to_vec(),
        ..SimOptions::new(seed)
    }
}

#[test]
fn eight_shards_on_five_nodes_pass_under_every_nemesis() {
    for seed in 0..CI_SEEDS {
        let report = assert_passes(&sharded(seed, &Nemesis::ALL_SHARDED));
        assert_eq!(report.options.replicas_per_shard(), 3);
        // 16 keys over 8 groups: most groups see contended keys.
        assert!(report.groups_with_keys >= 6, "{}", report.groups_with_keys);
        // Every replica of every group answered the recovery check: 8 groups x 3 replicas.
        assert_eq!(
            report.recovery.nodes.len(),
            24,
            "{:?}",
            report.recovery.nodes
        );
        assert!(report.digests_match);
    }
}

/// CAP per shard: with single nodes cut off in turn (and no other fault), each time the groups
/// the node led elect another leader, and the other groups' keys keep being answered.
#[test]
fn isolating_one_node_takes_down_only_the_groups_it_led() {
    let options = SimOptions {
        swarm: false,
        // About 20 simulated seconds: several cut-offs.
        ops: 3_000,
        ..sharded(1, &[Nemesis::Isolate])
    };
    let report = assert_passes(&options);
    let windows = &report.isolation_windows;
    assert!(windows.len() >= 2, "{windows:?}");
    // Cut-offs of a node that led some group (every node leads its share of the 8).
    let leading: Vec<_> = windows
        .iter()
        .filter(|w| !w.led_groups.is_empty())
        .collect();
    assert!(leading.len() >= 2, "{windows:?}");
    for window in &leading {
        assert_eq!(
            window.reelected,
            window.led_groups,
            "every group {} led elects another leader while it is cut off: {}",
            window.node,
            window.summary()
        );
        assert!(
            window.other_groups.answered > 0,
            "the groups n{} did not lead keep serving: {}",
            window.node,
            window.summary()
        );
    }
}

/// The per-group digests are not vacuous: the highest-id node applying each no-op as a write
/// of a hidden key diverges only in the groups it replicates, and that is reported.
#[test]
fn a_replica_diverging_in_its_groups_is_caught_per_group() {
    let report = run(&SimOptions {
        planted_bug: PlantedBug::DivergentApply,
        ops: 100,
        ..sharded(1, &[])
    })
    .expect("the simulation could not run");
    println!("{}", report.summary());
    let Verdict::Diverged { nodes } = &report.verdict else {
        panic!("expected Diverged, got {:?}", report.verdict);
    };
    assert!(nodes.iter().any(|n| n.group != 0), "{nodes:?}");
}

/// A per-group bug from the catalogue is still caught with shards: writes acknowledged before
/// their fsync, by power loss of a majority. The real code passes the seed that caught it.
#[test]
fn acknowledging_before_fsync_is_caught_with_shards() {
    let options = |seed: u64, planted_bug: PlantedBug| SimOptions {
        planted_bug,
        ops: 300,
        ..sharded(seed, &[Nemesis::PowerLoss])
    };
    let mut caught = None;
    for seed in 0..10 {
        let report = run(&options(seed, PlantedBug::AckBeforeFsync)).expect("simulation runs");
        println!("seed {seed}: {}", report.summary());
        if !matches!(report.verdict, Verdict::Linearizable) {
            caught = Some(seed);
            break;
        }
    }
    let seed = caught.expect("no seed in 0..10 caught writes acknowledged before their fsync");
    println!("caught at seed {seed}");
    assert_passes(&options(seed, PlantedBug::None));
}

/// A read-path bug from the catalogue, caught with shards too: every replica serving reads
/// from its local state without ReadIndex (`local-reads`), under every nemesis. The real code
/// passes the seed that caught it.
#[test]
fn local_reads_are_caught_with_shards() {
    let options = |seed: u64, planted_bug: PlantedBug| SimOptions {
        planted_bug,
        ..sharded(seed, &Nemesis::ALL_SHARDED)
    };
    let caught = (0..10).find(|&seed| {
        let report = run(&options(seed, PlantedBug::LocalReads)).expect("simulation runs");
        println!("seed {seed}: {}", report.summary());
        matches!(report.verdict, Verdict::Violation { .. })
    });
    let seed = caught.expect("no seed in 0..10 caught reads served from local state");
    println!("caught at seed {seed}");
    assert_passes(&options(seed, PlantedBug::None));
}

/// 100 seeds of 5 nodes and 8 shards under every nemesis, default sizes (2000 operations).
/// Ignored (a minute or two; the test profile is optimized): `cargo test -j 1 -p jepsen-like
/// --test sim_shards -- --ignored --nocapture sharded_soak`.
#[test]
#[ignore]
fn sharded_soak() {
    let started = std::time::Instant::now();
    let (mut ops, mut sim_secs, mut windows) = (0, 0.0, 0);
    for seed in 0..100 {
        let report = assert_passes(&SimOptions {
            shards: SHARDS,
            nemeses: Nemesis::ALL_SHARDED.to_vec(),
            ..SimOptions::new(seed)
        });
        ops += report.check.ops_checked;
        sim_secs += report.sim_elapsed.as_secs_f64();
        windows += report.isolation_windows.len();
    }
    println!(
        "SOAK 100 seeds passed: {ops} operations checked, {sim_secs:.0} s simulated, {windows} \
         single-node isolations, {:.0} s of wall time",
        started.elapsed().as_secs_f64()
    );
}
