//! Issue 15's experiment on a real 3-node cluster: `ringleader fault partition` cuts node 1 off,
//! and a client pinned to it (`--pin`) sees the price of each read level there: a stale read
//! answers the old value, a linearizable one fails; after `fault heal` both see the new value.
//! Also: fault rules are refused by a node without `--allow-faults`, and from a tool that does
//! not know the cluster secret.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ringleader_client::{Client, ClientConfig, ReadLevel, ServedAt};

/// How long a condition that follows from the cluster's own progress (a follower applying a
/// committed entry, an election) may take before the test gives up: generous, as the machine
/// may be loaded; never an assertion about speed.
const PROGRESS_WITHIN: Duration = Duration::from_secs(60);

fn pinned(addr: &str) -> Client {
    let mut config = ClientConfig::new(vec![addr.to_string()]);
    config.request_timeout = Duration::from_secs(2);
    config.pinned = true;
    Client::new(config).unwrap()
}

/// Polls `addr`'s stale read of `key` until it is `value`.
async fn wait_for_stale_value(addr: &str, key: &str, value: &str) {
    let client = pinned(addr);
    let deadline = Instant::now() + PROGRESS_WITHIN;
    loop {
        let read = client
            .read(
                key,
                ReadLevel::Stale {
                    max_staleness: None,
                },
            )
            .await
            .map(|read| read.value);
        if let Ok(Some(found)) = &read {
            if found.value == value.as_bytes() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never answered {key}={value} (last: {read:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `ringleader fault ARGS --cluster-secret-file SECRET` against `endpoints`.
fn fault(args: &[&str], secret: &Path, endpoints: &str) -> (i32, String, String) {
    let secret = secret.display().to_string();
    let mut full = vec!["fault"];
    full.extend_from_slice(args);
    full.extend(["--cluster-secret-file", &secret]);
    cli(&full, endpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_answers_stale_reads_with_the_old_value_and_fails_linearizable_ones()
{
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(3);
    let _nodes: Vec<KillOnDrop> = (1..=3)
        .map(|id| KillOnDrop(serve(dir.path(), base, id, 3, &["--allow-faults"])))
        .collect();
    let all: Vec<String> = (1..=3).map(|id| addr(base, id)).collect();
    let all_arg = all.join(",");
    let majority_arg = format!("{},{}", addr(base, 2), addr(base, 3));
    let node_1 = addr(base, 1);
    let secret = secret_file(dir.path());
    wait_for_leader(&all, 0, PROGRESS_WITHIN).await;

    let (code, _, stderr) = cli(&["put", "k", "old", "--timeout", "30s"], &all_arg);
    assert_eq!(code, 0, "{stderr}");
    wait_for_stale_value(&node_1, "k", "old").await;

    // A tool with another secret is refused, and changes nothing.
    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "not this cluster's secret, but long enough\n").unwrap();
    let (code, _, stderr) = fault(&["partition", "1", "2,3"], &wrong, &all_arg);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("did not prove knowledge of the cluster secret"),
        "{stderr}"
    );
    let (code, stdout, stderr) = fault(&["show"], &secret, &all_arg);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches("no faults").count(), 3, "{stdout}");

    // Node 1 alone on one side.
    let (code, stdout, stderr) = fault(&["partition", "1", "2,3"], &secret, &all_arg);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("node 1 ({node_1}): cut from 2,3")),
        "{stdout}"
    );
    assert!(stdout.contains("): cut from 1"), "{stdout}");

    // The majority elects a leader (if node 1 led) and takes the write.
    let (code, _, stderr) = cli(&["put", "k", "new", "--timeout", "30s"], &majority_arg);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = cli(&["get", "k", "--timeout", "30s"], &majority_arg);
    assert_eq!((code, stdout.trim()), (0, "new"), "{stderr}");

    // Both majority nodes have applied it (so node 1 would have too, were it not cut off).
    wait_for_stale_value(&addr(base, 2), "k", "new").await;
    wait_for_stale_value(&addr(base, 3), "k", "new").await;

    // Pinned to the minority: a stale read answers what node 1 has, the old value, and its
    // receipt says it was served stale, by node 1, and how stale it may be...
    let (code, stdout, stderr) = cli(
        &[
            "get",
            "k",
            "--consistency",
            "stale",
            "--pin",
            "--timeout",
            "5s",
            "--json",
        ],
        &node_1,
    );
    assert_eq!(code, 0, "{stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(answer["value"], "old", "{stdout}");
    let receipt = &answer["receipt"];
    assert_eq!(
        (receipt["served"].as_str(), receipt["node"].as_u64()),
        (Some("stale"), Some(1)),
        "{stdout}"
    );
    // Cut off from every leader for a while: its bound is the time since it last heard one,
    // or none at all once it stops following (an election of its own).
    if let Some(bound_ms) = receipt["staleness_bound_ms"].as_u64() {
        assert!(bound_ms > 0, "{stdout}");
    }
    let _ = ServedAt::Stale;
    // ... and a linearizable read fails (exit 2) within its timeout: node 1 either still thinks
    // it leads and cannot confirm it (no answer), or knows it does not (not the leader).
    let (code, stdout, stderr) = cli(&["get", "k", "--pin", "--timeout", "2s"], &node_1);
    assert_eq!(code, 2, "{stdout} {stderr}");
    assert!(
        stderr.contains("no answer within 2000 ms") || stderr.contains("is not the leader"),
        "{stderr}"
    );

    let (code, stdout, stderr) = fault(&["heal"], &secret, &all_arg);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.matches("no faults").count(), 3, "{stdout}");
    // Healed: node 1 catches up, and both levels answer the new value.
    wait_for_stale_value(&node_1, "k", "new").await;
    let (code, stdout, stderr) = cli(
        &[
            "get",
            "k",
            "--consistency",
            "stale",
            "--pin",
            "--timeout",
            "5s",
        ],
        &node_1,
    );
    assert_eq!((code, stdout.trim()), (0, "new"), "{stderr}");
    let (code, stdout, stderr) = cli(&["get", "k", "--timeout", "30s"], &all_arg);
    assert_eq!((code, stdout.trim()), (0, "new"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_allow_faults_refuses_fault_rules() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(1);
    let secret = secret_file(dir.path());
    let secret_arg = secret.display().to_string();
    let _node = KillOnDrop(serve(
        dir.path(),
        base,
        1,
        1,
        &["--cluster-secret-file", &secret_arg],
    ));
    let endpoint = addr(base, 1);
    wait_for_leader(std::slice::from_ref(&endpoint), 0, PROGRESS_WITHIN).await;
    for args in [&["show"][..], &["delay", "1", "200ms"], &["heal"]] {
        let (code, stdout, stderr) = fault(args, &secret, &endpoint);
        assert_eq!(code, 2, "{args:?}: {stdout} {stderr}");
        assert!(
            stderr.contains("node 1 was not started with --allow-faults"),
            "{args:?}: {stderr}"
        );
    }
    // `--pin` with more than one endpoint is a usage error, not a silent choice.
    let (code, _, stderr) = cli(&["get", "k", "--pin"], &format!("{endpoint},{endpoint}"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--pin needs exactly one address"),
        "{stderr}"
    );
}
