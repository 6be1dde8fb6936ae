//! The CLI without a real cluster: usage errors caught before anything is sent, what an error
//! says about a request's outcome (refused everywhere, no answer, disk full), errors printed
//! once, `check` on an empty history, and `status` judging health from nodes' answers (played by
//! fake nodes that speak the wire protocol and answer what each test needs).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ringleader_client::{GroupStatus, NodeStatus, ONLY_GROUP};
use ringleader_protocol::ring::{HashRange, RingSpec};
use ringleader_protocol::{
    decode_frame, encode_frame, ErrorKind, Handshake, ReplicaStatus, Request, RequestFrame,
    Response, ResponseFrame, Role, HANDSHAKE_BYTES,
};
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A fake node on a fresh port: completes the client handshake, then answers each request with
/// `answer(request)`, or never when it returns `None`. Returns its address.
async fn fake_node(
    answer: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static,
) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut handshake = [0u8; HANDSHAKE_BYTES];
                stream.read_exact(&mut handshake).await?;
                stream
                    .write_all(&Handshake::new(Role::Client).encode())
                    .await?;
                loop {
                    let len = stream.read_u32().await? as usize;
                    let mut body = vec![0u8; len];
                    stream.read_exact(&mut body).await?;
                    let frame: RequestFrame = decode_frame(&body).unwrap();
                    if let Some(response) = answer(&frame.request) {
                        let out = encode_frame(&ResponseFrame::new(frame.id, response)).unwrap();
                        stream.write_u32(out.len() as u32).await?;
                        stream.write_all(&out).await?;
                    }
                }
                #[allow(unreachable_code)]
                std::io::Result::Ok(())
            });
        }
    });
    addr
}

/// Runs `ringleader ARGS` with extra environment variables, in a blocking thread (the fake
/// nodes run on this test's runtime).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let (args, env): (Vec<String>, Vec<(String, String)>) = (
        args.iter().map(|a| a.to_string()).collect(),
        env.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    tokio::task::spawn_blocking(move || {
        let output = Command::new(BINARY)
            .args(&args)
            .env_remove("RINGLEADER_ENDPOINTS")
            .env_remove("RINGLEADER_TIMEOUT")
            .envs(env)
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// An address where nothing listens.
fn refused_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

fn status_of(id: u64, role: &str, term: u64, commit: u64, applied: u64) -> NodeStatus {
    NodeStatus {
        id,
        addr: String::new(),
        log_bytes: 0,
        log_batches: 0,
        log_group_writes: 0,
        ring: RingSpec::new(BTreeMap::from([(id, String::new())]), 1),
        groups: vec![GroupStatus {
            group: ONLY_GROUP,
            range: HashRange {
                start: 0,
                end_inclusive: u64::MAX,
            },
            epoch: 1,
            role: role.into(),
            term,
            leader: (role == "leader").then_some(id),
            commit_index: commit,
            applied_index: applied,
            last_index: commit,
            snapshot_index: 0,
            snapshots_installed: 0,
            keys: 0,
            digest: 0,
            replicas: Vec::new(),
        }],
    }
}

async fn fake_status(status: NodeStatus) -> String {
    fake_node(move |request| match request {
        Request::Status => Some(Response::Status(Box::new(status.clone()))),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_endpoints_and_peers_are_usage_errors_before_anything_is_sent() {
    for bad in [
        "notanaddress",
        "http://127.0.0.1:7001",
        ":99999",
        "127.0.0.1:0",
    ] {
        let (code, _, stderr) = run(&["get", "k", "--endpoints", bad], &[]).await;
        assert_eq!(code, 2, "--endpoints {bad}: {stderr}");
        assert!(
            stderr.contains("invalid value"),
            "--endpoints {bad}: {stderr}"
        );
        // The same through the environment.
        let (code, _, stderr) = run(&["put", "k", "v"], &[("RINGLEADER_ENDPOINTS", bad)]).await;
        assert_eq!(code, 2, "RINGLEADER_ENDPOINTS={bad}: {stderr}");
        assert!(stderr.contains("invalid value"), "{stderr}");
    }
    // A node given a malformed peer refuses to start (it would otherwise campaign forever).
    let dir = tempfile::tempdir().unwrap();
    let listen = refused_addr();
    let mut serve = KillOnDrop(
        Command::new(BINARY)
            .args(["serve", "--id", "1", "--listen", &listen])
            .args(["--peers", &format!("1={listen},2=nonsense")])
            .arg("--dir")
            .arg(dir.path().join("node-1"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // A guard against a hang, not a speed requirement.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serve.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve --peers 2=nonsense kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(serve.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid value '2=nonsense'"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_everywhere_says_the_write_was_certainly_not_applied() {
    let endpoints = format!("{},{}", refused_addr(), refused_addr());
    // A long timeout: the client gives up once a short window of refusals has passed, and says
    // the write was never sent (the old client waited it out and left the outcome open).
    let (code, _, stderr) = run(
        &["put", "k", "v", "--timeout-ms", "20000"],
        &[("RINGLEADER_ENDPOINTS", &endpoints)],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("certainly not applied"), "{stderr}");
    assert!(!stderr.contains("may have been applied"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_takes_a_write_and_never_answers_leaves_the_outcome_unknown() {
    let silent = fake_node(|request| match request {
        Request::RegisterSession => Some(Response::SessionRegistered { client_id: 7 }),
        _ => None, // takes the write, never answers
    })
    .await;
    // RINGLEADER_TIMEOUT sets the deadline (the default is 5 s).
    let (code, _, stderr) = run(
        &["put", "k", "v"],
        &[
            ("RINGLEADER_ENDPOINTS", &silent),
            ("RINGLEADER_TIMEOUT", "700ms"),
        ],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no answer within 700 ms"), "{stderr}");
    assert!(stderr.contains("may have been applied"), "{stderr}");
    assert!(!stderr.contains("certainly not applied"), "{stderr}");
    let (code, _, stderr) = run(
        &["get", "k"],
        &[
            ("RINGLEADER_ENDPOINTS", &silent),
            ("RINGLEADER_TIMEOUT", "nonsense"),
        ],
    )
    .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid value 'nonsense'"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_once_naming_the_node() {
    let full = fake_node(|request| match request {
        Request::RegisterSession => Some(Response::SessionRegistered { client_id: 7 }),
        _ => Some(Response::Error {
            kind: ErrorKind::DiskFull,
            message: "no space left on device".into(),
        }),
    })
    .await;
    let (code, stdout, stderr) = run(&["put", "k", "v"], &[("RINGLEADER_ENDPOINTS", &full)]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(&format!("disk full on node {full}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("disk full").count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_printed_once_and_without_rust_debug_text() {
    // The port is taken: the node's error names the address and the OS error once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let node_dir = dir.path().join("node-1");
    let node_dir = node_dir.to_str().unwrap();
    let (code, _, stderr) = run(&["serve", "--listen", &taken_addr, "--dir", node_dir], &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&taken_addr), "{stderr}");
    assert_eq!(
        stderr.matches("in use").count(),
        1,
        "printed once: {stderr}"
    );
    // --listen that disagrees with --peers: the addresses as text, no `Some("...")`.
    let other = refused_addr();
    let (code, _, stderr) = run(
        &[
            "serve",
            "--listen",
            &refused_addr(),
            "--peers",
            &format!("1={other}"),
            "--dir",
            node_dir,
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&other), "{stderr}");
    assert!(!stderr.contains("Some("), "{stderr}");
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_an_empty_history() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("empty.jsonl");
    std::fs::write(&history, "").unwrap();
    let (code, stdout, stderr) = run(&["check", history.to_str().unwrap()], &[]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(!stdout.contains("linearizable"), "{stdout}");
    assert!(stderr.contains("no operations"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_exit_codes_follow_health() {
    // Healthy: a leader and a follower that keeps up.
    let mut leader = status_of(1, "leader", 4, 5_000, 5_000);
    leader.groups[0].replicas = vec![ReplicaStatus {
        node: 2,
        match_index: 5_000,
        last_heard_ms: Some(40),
        lagging: false,
    }];
    let healthy = [
        fake_status(leader.clone()).await,
        fake_status(status_of(2, "follower", 4, 5_000, 4_990)).await,
    ];
    let (code, stdout, stderr) = run(&["status", "--endpoints", &healthy.join(",")], &[]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("healthy"), "{stdout}");
    assert!(
        !stdout.contains("null") && !stdout.contains("Some("),
        "{stdout}"
    );

    // A node down: degraded (1), shown as down with why.
    let down = refused_addr();
    let endpoints = format!("{},{down}", healthy.join(","));
    let (code, stdout, _) = run(&["status", "--endpoints", &endpoints], &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains(&down) && stdout.contains("DOWN: connection refused"),
        "{stdout}"
    );
    assert!(!stdout.contains("null"), "{stdout}");
    let (code, stdout, _) = run(&["status", "--json", "--endpoints", &endpoints], &[]).await;
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["health"], "degraded");
    assert_eq!(report["leader"], 1);
    assert_eq!(report["nodes"][2]["up"], false);
    assert_eq!(report["nodes"][2]["error"], "connection refused");
    assert_eq!(report["nodes"][1]["applied_index"], 4_990);

    // The leader reports its follower as lagging: degraded.
    let mut reports_lagging = leader.clone();
    reports_lagging.groups[0].replicas[0].lagging = true;
    let endpoints = format!("{},{}", fake_status(reports_lagging).await, healthy[1]);
    let (code, stdout, _) = run(&["status", "--endpoints", &endpoints], &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("node 2 is lagging"), "{stdout}");

    // A follower whose applied index trails the leader's commit by more than --max-lag-entries.
    let behind = fake_status(status_of(2, "follower", 4, 5_000, 2_000)).await;
    let endpoints = format!("{},{behind}", healthy[0]);
    let (code, stdout, _) = run(&["status", "--endpoints", &endpoints], &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("node 2 is lagging"), "{stdout}");
    let (code, _, _) = run(
        &[
            "status",
            "--max-lag-entries",
            "5000",
            "--endpoints",
            &endpoints,
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0);

    // No leader: degraded.
    let candidates = [
        fake_status(status_of(1, "candidate", 9, 10, 10)).await,
        fake_status(status_of(2, "follower", 9, 10, 10)).await,
    ];
    let (code, stdout, _) = run(&["status", "--endpoints", &candidates.join(",")], &[]).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("no leader"), "{stdout}");

    // Nobody answers: error (2).
    let (code, stdout, _) = run(
        &[
            "status",
            "--endpoints",
            &format!("{down},{}", refused_addr()),
        ],
        &[],
    )
    .await;
    assert_eq!(code, 2, "{stdout}");
}
