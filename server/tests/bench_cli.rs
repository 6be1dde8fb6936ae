//! `ringleader bench` against one real node: the YCSB workloads split reads from writes, `--ops`
//! runs exactly that many operations, the percentiles are ordered, and the invocation of
//! bench/shards.sh and bench/versions.sh still yields the fields they read. No figure is
//! asserted: speed is measured, never tested.

mod common;

use std::time::Duration;

use common::*;

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}"))
}

/// One node in `dir`, leading; it dies with the guard. Returns the endpoints argument.
async fn single_node(dir: &std::path::Path) -> (KillOnDrop, String) {
    let base = free_ports(1);
    let node = KillOnDrop(serve(dir, base, 1, 1, &[]));
    let endpoints = vec![addr(base, 1)];
    wait_for_leader(&endpoints, 0, Duration::from_secs(10)).await;
    (node, endpoints.join(","))
}

fn number(figures: &serde_json::Value, field: &str) -> f64 {
    figures[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {field} in {figures}"))
}

/// p50 <= p90 <= p99 <= p99.9 <= max, in one figures object.
fn assert_ordered(figures: &serde_json::Value) {
    let values: Vec<f64> = ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"]
        .iter()
        .map(|field| number(figures, field))
        .collect();
    assert!(
        values.windows(2).all(|pair| pair[0] <= pair[1]),
        "percentiles out of order: {figures}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ycsb_workloads_count_reads_and_writes_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, e) = single_node(dir.path()).await;

    let (code, stdout, stderr) = cli(
        &[
            "bench",
            "--workload",
            "a",
            "--ops",
            "300",
            "--clients",
            "4",
            "--json",
        ],
        &e,
    );
    assert_eq!(code, 0, "{stderr}");
    let report = json(&stdout);
    let (reads, writes) = (&report["reads"], &report["writes"]);
    let (read_ops, write_ops) = (number(reads, "ops"), number(writes, "ops"));
    assert_eq!(number(&report, "failed"), 0.0, "{report}");
    assert_eq!(read_ops + write_ops, 300.0, "{report}");
    assert_eq!(number(&report, "ops"), 300.0, "{report}");
    assert!(
        read_ops > 0.0 && write_ops > 0.0,
        "workload a mixes both: {report}"
    );
    for figures in [&report, reads, writes] {
        assert_ordered(figures);
    }
    assert_eq!(report["workload"], "a");
    assert_eq!(report["level"], "linearizable/majority");
    // No progress bar when the output is JSON (nor when stderr is not a terminal).
    assert!(!stderr.contains("ops/s"), "{stderr}");

    // The same seed draws the same operations. Several clients claim `--ops` from one counter,
    // so each one's share (and the split) can vary between runs; with one client the sequence
    // is the seed's alone.
    let one_client = |seed: &str| {
        let (code, stdout, stderr) = cli(
            &[
                "bench",
                "--workload",
                "b",
                "--ops",
                "200",
                "--clients",
                "1",
                "--json",
                "--distribution",
                "zipfian",
                "--seed",
                seed,
            ],
            &e,
        );
        assert_eq!(code, 0, "{stderr}");
        json(&stdout)
    };
    let (first, second) = (one_client("5"), one_client("5"));
    assert_eq!(first["writes"]["ops"], second["writes"]["ops"]);
    assert_eq!(first["distribution"], "zipfian");

    // Workload c with --load: reads only, and the load is timed.
    let (code, stdout, stderr) = cli(
        &[
            "bench",
            "--workload",
            "c",
            "--ops",
            "100",
            "--clients",
            "2",
            "--keys",
            "50",
            "--load",
            "--consistency",
            "lease",
            "--json",
        ],
        &e,
    );
    assert_eq!(code, 0, "{stderr}");
    let report = json(&stdout);
    assert_eq!(number(&report["reads"], "ops"), 100.0, "{report}");
    assert_eq!(number(&report["writes"], "ops"), 0.0, "{report}");
    assert!(number(&report, "load_secs") > 0.0, "{report}");
    assert_eq!(report["level"], "lease");

    // Eight clients sharing two connections: requests pipelined on each.
    let (code, stdout, stderr) = cli(
        &[
            "bench",
            "--workload",
            "a",
            "--ops",
            "200",
            "--clients",
            "8",
            "--connections",
            "2",
            "--keys",
            "50",
            "--json",
        ],
        &e,
    );
    assert_eq!(code, 0, "{stderr}");
    let report = json(&stdout);
    assert_eq!(number(&report, "ops"), 200.0, "{report}");
    assert_eq!(number(&report, "connections"), 2.0, "{report}");
    assert_eq!(number(&report, "failed"), 0.0, "{report}");
    let (code, _, stderr) = cli(&["bench", "--clients", "2", "--connections", "3"], &e);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--connections must be between 1 and --clients"),
        "{stderr}"
    );
}

/// The exact invocation of bench/shards.sh and bench/versions.sh, and the fields they read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_invocation_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, e) = single_node(dir.path()).await;
    let (code, stdout, stderr) = cli(
        &[
            "bench",
            "--workload",
            "write",
            "--clients",
            "2",
            "--duration",
            "1s",
            "--keys",
            "100",
            "--value-bytes",
            "64",
            "--json",
            "--endpoints",
            &e,
        ],
        "",
    );
    assert_eq!(code, 0, "{stderr}");
    let report = json(&stdout);
    for field in ["ops_per_sec", "p50_ms", "p99_ms"] {
        number(&report, field);
    }
    assert_eq!(number(&report["reads"], "ops"), 0.0, "{report}");
    assert_eq!(report["level"], "majority");
    assert_ordered(&report);

    // The human table, and --ops refusing --duration.
    let (code, stdout, stderr) = cli(&["bench", "--workload", "b", "--ops", "40"], &e);
    assert_eq!(code, 0, "{stderr}");
    for line in ["reads", "writes", "total", "p99.9 ms"] {
        assert!(stdout.contains(line), "no {line:?} in {stdout}");
    }
    let (code, _, stderr) = cli(&["bench", "--ops", "10", "--duration", "1s"], &e);
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}
