//! Protocol-aware repair on the real binary: one follower of three has a committed entry damaged
//! on disk. It refuses to start and says why; `serve --repair` cuts its log at the damage and
//! re-fetches the rest from the leader while the cluster keeps taking writes; afterwards every
//! acknowledged write is there, even once the node that was never damaged is gone.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// Segment header and record header sizes of the WAL format (storage/src/wal.rs, record.rs).
use storage::record::RECORD_HEADER_BYTES;
use storage::wal::SEGMENT_HEADER_BYTES;

fn newest_segment(data_dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(data_dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop().expect("a WAL segment")
}

/// Flips one payload byte of the record at position `record` (counted from the segment start).
fn damage_record(segment: &Path, record: usize) -> usize {
    let mut bytes = std::fs::read(segment).unwrap();
    let mut offset = SEGMENT_HEADER_BYTES;
    for _ in 0..record {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        offset += RECORD_HEADER_BYTES + len;
        assert!(
            offset < bytes.len(),
            "the segment has more than {record} records"
        );
    }
    bytes[offset + RECORD_HEADER_BYTES] ^= 0x40;
    std::fs::write(segment, &bytes).unwrap();
    offset
}

async fn put_all(endpoints: &[String], prefix: &str, count: usize) -> BTreeMap<String, String> {
    let writer = client(endpoints.to_vec(), Duration::from_secs(10));
    let mut acknowledged = BTreeMap::new();
    for i in 0..count {
        let (key, value) = (format!("{prefix}-{i}"), format!("value-{i}"));
        writer
            .put(key.clone(), value.clone())
            .await
            .unwrap_or_else(|e| panic!("write {key} failed while the cluster had a quorum: {e}"));
        acknowledged.insert(key, value);
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_damaged_committed_entry_is_repaired_from_its_peers() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(3);
    let endpoints: Vec<String> = (1..=3).map(|id| addr(base, id)).collect();
    let mut nodes: BTreeMap<u64, KillOnDrop> = (1..=3)
        .map(|id| (id, KillOnDrop(serve(dir.path(), base, id, 3, &[]))))
        .collect();
    let leader = wait_for_leader(&endpoints, 0, Duration::from_secs(10))
        .await
        .id;
    let mut acknowledged = put_all(&endpoints, "before", 300).await;
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let witness = (1..=3).find(|&id| id != leader && id != follower).unwrap();

    // Stop the follower and damage an entry in the middle of its log: it had acknowledged it.
    nodes.remove(&follower);
    let follower_dir = data_dir(dir.path(), follower);
    let offset = damage_record(&newest_segment(&follower_dir), 150);

    // It refuses to start, saying where the damage is and what to do.
    let log_path = dir.path().join("refused.log");
    let mut refused = std::process::Command::new(BINARY)
        .args([
            "serve",
            "--id",
            &follower.to_string(),
            "--listen",
            &addr(base, follower),
        ])
        .arg("--dir")
        .arg(&follower_dir)
        .args(["--peers", &peers_arg(base, 3)])
        .arg("--cluster-secret-file")
        .arg(secret_file(dir.path()))
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let code = wait_within(&mut refused, Duration::from_secs(10), "the refusing node").code();
    let said = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(code, Some(2), "a damaged log must stop the node: {said}");
    assert!(
        said.contains(&format!("byte offset {offset}")) && said.contains("--repair"),
        "the refusal names the offset and the way out: {said}"
    );

    // Repair: the node cuts its log and catches up while clients keep writing.
    nodes.insert(
        follower,
        KillOnDrop(serve(dir.path(), base, follower, 3, &["--repair"])),
    );
    acknowledged.extend(put_all(&endpoints, "during", 200).await);
    let probe = client(endpoints.clone(), Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leader_status = probe.status_of(&addr(base, leader)).await.unwrap();
        let repaired = probe.status_of(&addr(base, follower)).await;
        if let Ok(repaired) = repaired {
            if group0(&repaired).applied_index >= group0(&leader_status).commit_index
                && !follower_dir.join("repair.marker").exists()
            {
                assert_eq!(
                    group0(&repaired).digest,
                    group0(&leader_status).digest,
                    "same state as the leader"
                );
                break;
            }
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().contains(&format!("serve-{follower}-")))
                .map(|p| std::fs::read_to_string(p).unwrap_or_default())
                .collect();
            panic!(
                "the repaired node never caught up: {:?}\nits logs:\n{}",
                probe.status_of(&addr(base, follower)).await,
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The one node that was never damaged goes away: the repaired node and the leader must
    // still hold every acknowledged write, and the repaired node must be able to vote again.
    nodes.remove(&witness);
    nodes.remove(&leader);
    nodes.insert(leader, KillOnDrop(serve(dir.path(), base, leader, 3, &[])));
    let survivors: Vec<String> = [leader, follower]
        .iter()
        .map(|&id| addr(base, id))
        .collect();
    wait_for_leader(&survivors, 0, Duration::from_secs(10)).await;
    let reader = client(survivors, Duration::from_secs(10));
    for (key, value) in &acknowledged {
        let got = reader.get(key.clone()).await.unwrap();
        assert_eq!(
            got.map(|v| v.value),
            Some(value.as_bytes().to_vec()),
            "acknowledged write {key} lost"
        );
    }
}

#[test]
fn repair_is_refused_without_replicas_to_fetch_from() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = cli(
        &[
            "serve",
            "--repair",
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:1",
        ],
        "127.0.0.1:1",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("backup"),
        "says what to do instead: {stderr}"
    );
}
