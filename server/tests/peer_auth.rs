//! The real binary: a node with peers needs a cluster secret, and a node logs another process
//! claiming its own id.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use ringleader_protocol::{Handshake, Role, HANDSHAKE_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `command`; panics if it is still running after `limit` (a node that started serving).
fn exits_within(mut command: Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the node started instead of refusing: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn serve_with_peers_and_no_cluster_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(3);
    let mut command = Command::new(BINARY);
    command
        .arg("serve")
        .args(["--id", "1", "--listen", &addr(base, 1)])
        .arg("--dir")
        .arg(dir.path().join("node-1"))
        .args(["--peers", &peers_arg(base, 3)])
        .env_remove("RINGLEADER_CLUSTER_SECRET_FILE");
    let output = exits_within(command, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("a cluster of 3 nodes needs a cluster secret: pass --cluster-secret-file"),
        "{stderr}"
    );
    // A secret too short to be safe is refused too, naming the file.
    let short = dir.path().join("short-secret");
    std::fs::write(&short, "hunter2\n").unwrap();
    let mut command = Command::new(BINARY);
    command
        .arg("serve")
        .args(["--id", "1", "--listen", &addr(base, 1)])
        .arg("--dir")
        .arg(dir.path().join("node-1"))
        .args(["--peers", &peers_arg(base, 3)])
        .env("RINGLEADER_CLUSTER_SECRET_FILE", &short);
    let output = exits_within(command, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("short-secret is 7 bytes"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_handshake_with_the_nodes_own_id_is_logged_with_the_remote_address() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_ports(1);
    let _node = KillOnDrop(serve(dir.path(), base, 1, 1, &[]));
    let endpoints = vec![addr(base, 1)];
    wait_for_leader(&endpoints, 0, Duration::from_secs(10)).await;

    let mut stream = tokio::net::TcpStream::connect(&endpoints[0]).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream
        .write_all(&Handshake::new(Role::Peer { node_id: 1 }).encode())
        .await
        .unwrap();
    let mut reply = [0u8; HANDSHAKE_BYTES];
    stream.read_exact(&mut reply).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed at once");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs: String = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        let warnings: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains("claims this node's own id"))
            .collect();
        if !warnings.is_empty() {
            assert_eq!(warnings.len(), 1, "once per connection: {warnings:?}");
            assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
            assert!(
                warnings[0].contains(&local.to_string()),
                "names the remote address {local}: {}",
                warnings[0]
            );
            break;
        }
        assert!(Instant::now() < deadline, "no warning logged:\n{logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
