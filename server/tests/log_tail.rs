//! The compaction tail on real nodes: a follower killed while the leader snapshots past its log
//! restarts and catches up from the entries the leader kept behind its snapshot
//! (`serve --log-tail-entries`, default 5,000), not by receiving the snapshot; with no tail it
//! needs the snapshot.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

async fn write_keys(
    endpoints: &[String],
    prefix: &str,
    writers: usize,
    per_writer: usize,
) -> usize {
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let client = client(endpoints.to_vec(), Duration::from_secs(10));
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                client
                    .put(format!("{prefix}-{writer}-{i}"), format!("v{i}"))
                    .await
                    .expect("a healthy quorum acknowledges every write");
            }
            per_writer
        }));
    }
    let mut written = 0;
    for task in tasks {
        written += task.await.unwrap();
    }
    written
}

/// Runs the scenario with `extra` serve arguments; returns the restarted follower's
/// `snapshots_installed` once it caught up.
async fn restarted_follower_catches_up(extra: &[&str]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(3);
    let mut args = vec!["--snapshot-every-entries", "200"];
    args.extend_from_slice(extra);
    let mut nodes: BTreeMap<u64, KillOnDrop> = (1..=3)
        .map(|i| (i, KillOnDrop(serve(dir.path(), base, i, 3, &args))))
        .collect();
    let endpoints: Vec<String> = (1..=3).map(|i| addr(base, i)).collect();
    let leader = wait_for_leader(&endpoints, 0, Duration::from_secs(20)).await;
    // Enough for every node to take a snapshot of its own (and keep a tail on disk).
    let mut keys = write_keys(&endpoints, "a", 10, 30).await;
    let follower = (1..=3).find(|&i| i != leader.id).unwrap();
    let probe = client(endpoints.clone(), Duration::from_millis(500));
    let before = probe.status_of(&addr(base, follower)).await.unwrap();
    kill_9(&mut nodes.get_mut(&follower).unwrap().0);

    // A few hundred entries while it is down: the leader snapshots past the follower's log.
    keys += write_keys(&endpoints, "b", 10, 40).await;
    let leader_status = wait_for_leader(&endpoints, 0, Duration::from_secs(5)).await;
    assert!(
        group0(&leader_status).snapshot_index > group0(&before).last_index,
        "the leader's snapshot ({}) covers entries the follower lacks (it ends at {})",
        group0(&leader_status).snapshot_index,
        group0(&before).last_index
    );
    let target = group0(&leader_status).commit_index;

    nodes.insert(
        follower,
        KillOnDrop(serve(dir.path(), base, follower, 3, &args)),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = probe.status_of(&addr(base, follower)).await {
            if group0(&status).applied_index >= target {
                assert_eq!(
                    group0(&status).keys,
                    keys as u64,
                    "the restarted node holds every key"
                );
                return group0(&status).snapshots_installed;
            }
        }
        assert!(
            Instant::now() < deadline,
            "node {follower} did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_a_few_hundred_entries_behind_catches_up_from_the_log_tail() {
    // Default tail (5,000 entries).
    let installed = restarted_follower_catches_up(&[]).await;
    assert_eq!(installed, 0, "caught up by AppendEntries, no snapshot sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_log_tail_the_same_follower_needs_the_snapshot() {
    let installed = restarted_follower_catches_up(&["--log-tail-entries", "0"]).await;
    assert!(installed >= 1, "caught up by InstallSnapshot");
}
