//! The real binary, one node: acknowledged writes survive `kill -9`, the CLI's exit codes, limits,
//! and the data-directory lock.

mod common;

use std::time::Duration;

use common::*;

/// A raw TCP connection to a node, past the client handshake.
async fn handshaken_connection(addr: &str) -> tokio::net::TcpStream {
    use ringleader_client::protocol::{Handshake, Role, HANDSHAKE_BYTES};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&Handshake::new(Role::Client).encode())
        .await
        .unwrap();
    let mut reply = [0u8; HANDSHAKE_BYTES];
    stream.read_exact(&mut reply).await.unwrap();
    stream
}

/// Starts a single node in `dir` and waits until it leads; the node dies with the guard.
async fn start_single(dir: &std::path::Path) -> (KillOnDrop, u16, Vec<String>) {
    let base = free_ports(1);
    let node = KillOnDrop(serve(dir, base, 1, 1, &[]));
    let endpoints = vec![addr(base, 1)];
    wait_for_leader(&endpoints, 0, Duration::from_secs(10)).await;
    (node, base, endpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, base, endpoints) = start_single(dir.path()).await;

    // Concurrent writers; remember what was acknowledged.
    let mut writers = Vec::new();
    for writer in 0..8 {
        let client = client(endpoints.clone(), Duration::from_secs(5));
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..150 {
                let key = format!("w{writer}-k{}", i % 40);
                let value = format!("{writer}:{i}");
                if client.put(key.clone(), value.clone()).await.is_ok() {
                    acknowledged.push((key, value));
                }
            }
            acknowledged
        }));
    }
    let mut latest = std::collections::BTreeMap::new();
    for writer in writers {
        for (key, value) in writer.await.unwrap() {
            latest.insert(key, value);
        }
    }
    assert_eq!(latest.len(), 8 * 40, "every write was acknowledged");

    kill_9(&mut node.0);
    let _restarted = KillOnDrop(serve(dir.path(), base, 1, 1, &[]));
    wait_for_leader(&endpoints, 0, Duration::from_secs(10)).await;
    let reader = client(endpoints.clone(), Duration::from_secs(5));
    for (key, value) in &latest {
        let found = reader.get(key.clone()).await.unwrap();
        assert_eq!(
            found.map(|v| v.value),
            Some(value.clone().into_bytes()),
            "key {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_stdin_values_limits_and_the_directory_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, _, endpoints) = start_single(dir.path()).await;
    let endpoints = endpoints.join(",");

    assert_eq!(cli(&["put", "k", "v1"], &endpoints).0, 0);
    let (code, stdout, _) = cli(&["get", "k"], &endpoints);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "v1"),
        "get prints the value alone"
    );
    assert_eq!(cli(&["get", "missing"], &endpoints).0, 1);
    assert_eq!(
        cli(&["cas", "k", "v2", "--expect-value", "nope"], &endpoints).0,
        1
    );
    assert_eq!(
        cli(&["cas", "k", "v2", "--expect-value", "v1"], &endpoints).0,
        0
    );
    assert_eq!(cli(&["cas", "k", "v3", "--expect-absent"], &endpoints).0, 1);
    assert_eq!(
        cli(&["cas", "new", "n", "--expect-absent"], &endpoints).0,
        0
    );
    assert_eq!(cli(&["delete", "k"], &endpoints).0, 0);
    assert_eq!(cli(&["delete", "k"], &endpoints).0, 1);
    // Wrong flags: exit 2 with a message.
    let (code, _, stderr) = cli(
        &["cas", "k", "v", "--expect-value", "a", "--expect-absent"],
        &endpoints,
    );
    assert_eq!(code, 2, "{stderr}");
    // Binary values through stdin.
    let mut put = std::process::Command::new(BINARY)
        .args(["put", "bin", "-"])
        .env("RINGLEADER_ENDPOINTS", &endpoints)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    std::io::Write::write_all(put.stdin.as_mut().unwrap(), &bytes).unwrap();
    drop(put.stdin.take());
    assert!(put.wait().unwrap().success());
    let output = std::process::Command::new(BINARY)
        .args(["get", "bin"])
        .env("RINGLEADER_ENDPOINTS", &endpoints)
        .output()
        .unwrap();
    assert_eq!(output.stdout, bytes);
    // An oversized key is refused with a clear error, and nothing is written.
    let long_key = "k".repeat(65 * 1024);
    let (code, _, stderr) = cli(&["put", &long_key, "v"], &endpoints);
    assert_eq!(code, 2);
    assert!(stderr.contains("exceeds the limit"), "{stderr}");
    // Unreachable endpoints: exit 2, one line.
    let (code, _, stderr) = cli(&["get", "k", "--timeout-ms", "300"], "127.0.0.1:1");
    assert_eq!(code, 2);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // A second node on the same directory is refused.
    let mut second = std::process::Command::new(BINARY)
        .args(["serve", "--listen", &addr(free_ports(1), 1)])
        .arg("--dir")
        .arg(data_dir(dir.path(), 1))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = second.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(second.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(
        stderr.contains("in use by another running node"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_get_an_error_and_change_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (_node, _, endpoints) = start_single(dir.path()).await;
    let good = client(endpoints.clone(), Duration::from_secs(5));
    good.put("stable", "before").await.unwrap();

    for body in [vec![0xFFu8; 37], Vec::new()] {
        let mut stream = handshaken_connection(&endpoints[0]).await;
        stream
            .write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        stream.write_all(&body).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.len() > 4,
            "an error frame came back before the close"
        );
    }
    // A length prefix far above the limit: refused before any of it is read.
    let mut stream = handshaken_connection(&endpoints[0]).await;
    stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.len() > 4);
    // Garbage instead of a handshake: closed.
    let mut stream = tokio::net::TcpStream::connect(&endpoints[0]).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    assert!(answer.is_empty());
    // A "peer" that is not a configured voter: answered the handshake, then closed unheard.
    {
        use ringleader_client::protocol::{Handshake, Role, HANDSHAKE_BYTES};
        let mut stream = tokio::net::TcpStream::connect(&endpoints[0]).await.unwrap();
        stream
            .write_all(&Handshake::new(Role::Peer { node_id: 99 }).encode())
            .await
            .unwrap();
        let mut reply = [0u8; HANDSHAKE_BYTES];
        stream.read_exact(&mut reply).await.unwrap();
        // Closed at once, not left open waiting for Raft frames.
        let mut answer = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
        assert!(
            closed.is_ok(),
            "the node kept an unknown peer's connection open"
        );
        assert!(answer.is_empty(), "an unknown peer is not served");
    }

    let value = good.get("stable").await.unwrap().unwrap();
    assert_eq!(value.value, b"before");
    assert_eq!(
        good.put("stable", "after").await.unwrap(),
        value.version + 1,
        "the node kept serving"
    );
}
