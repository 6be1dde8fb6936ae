//! The real binary, three nodes: a state well over 16 MiB (the old decode limit of a peer frame)
//! reaches a follower that was down while it was written, as a snapshot sent in chunks.
//!
//! Before chunking, the follower refused every snapshot over 16 MiB
//! (`undecodable peer frame ... LimitExceeded`) and stayed behind for good.
//!
//! The follower's data directory is wiped while it is down. A leader used to ignore such a
//! follower's rejections as stale (its match index was already past them), so it never caught
//! up; the leader now re-probes a follower that lost entries it had acknowledged
//! (`Progress::maybe_decrease`, the same path `serve --repair` relies on). Wiping a node is not
//! safe in general (it forgets its vote); here the leader is stable throughout.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Bytes of state written: well over 16 MiB.
const STATE_BYTES: usize = 22 * 1024 * 1024;
const VALUE_BYTES: usize = 4 * 1024;
/// More entries than any log tail kept behind a snapshot (etcd keeps 5,000), so the wiped
/// follower cannot catch up from the log alone.
const WRITES: usize = STATE_BYTES / VALUE_BYTES;
const WRITERS: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_follower_catches_up_from_a_snapshot_over_16_mib() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(3);
    let extra = ["--snapshot-every-entries", "500"];
    let mut nodes: Vec<KillOnDrop> = (1..=3)
        .map(|id| KillOnDrop(serve(dir.path(), base, id, 3, &extra)))
        .collect();
    let endpoints: Vec<String> = (1..=3).map(|id| addr(base, id)).collect();
    let leader = wait_for_leader(&endpoints, 0, Duration::from_secs(20)).await;
    // Stop a follower: everything below is written while it is down, and compacted away.
    let follower = if leader.id == 3 { 2 } else { 3 };
    let index = (follower - 1) as usize;
    kill_9(&mut nodes[index].0);

    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let client = client(endpoints.clone(), Duration::from_secs(20));
        tasks.push(tokio::spawn(async move {
            for i in (writer..WRITES).step_by(WRITERS) {
                // Incompressible-looking values, different per key.
                let value: Vec<u8> = (0..VALUE_BYTES)
                    .map(|b| ((b * 31 + i * 7) % 251) as u8)
                    .collect();
                client.put(format!("key-{i:06}"), value).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!(
        "wrote {WRITES} values of {VALUE_BYTES} B ({} MiB) in {:?}",
        STATE_BYTES >> 20,
        started.elapsed()
    );

    // Wipe the follower and bring it back empty: the leader's log starts long after its end.
    std::fs::remove_dir_all(data_dir(dir.path(), follower)).unwrap();
    nodes[index] = KillOnDrop(serve(dir.path(), base, follower, 3, &extra));

    let probe = client(endpoints.clone(), Duration::from_secs(2));
    let leader_addr = addr(base, leader.id);
    let follower_addr = addr(base, follower);
    let restarted = Instant::now();
    // A liveness bound, not a speed assertion: without chunking the follower never catches up.
    let deadline = restarted + Duration::from_secs(90);
    loop {
        let leader_status = probe.status_of(&leader_addr).await.unwrap();
        if let Ok(status) = probe.status_of(&follower_addr).await {
            if group0(&status).snapshots_installed >= 1
                && group0(&status).applied_index >= group0(&leader_status).commit_index
            {
                eprintln!(
                    "node {follower} caught up to index {} (snapshot at {}) in {:?}; {} keys",
                    group0(&status).applied_index,
                    group0(&status).snapshot_index,
                    restarted.elapsed(),
                    group0(&status).keys
                );
                assert!(group0(&status).keys as usize >= WRITES);
                break;
            }
        }
        if Instant::now() > deadline {
            dump_logs(dir.path());
            panic!("the wiped follower never caught up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the tail of every node log (for a failing run).
fn dump_logs(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {name}");
            if let Ok(keep) = std::env::var("KEEP_LOGS") {
                let _ = std::fs::create_dir_all(&keep);
                let _ = std::fs::copy(entry.path(), std::path::Path::new(&keep).join(&name));
            }
            for line in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("{line}");
            }
        }
    }
}
