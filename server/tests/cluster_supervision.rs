//! `cluster up` supervises its nodes: it says "up" only when every node answers and otherwise
//! exits with the node's own error; it reports a node's exit, watches a node restarted with
//! `cluster start N`, and `cluster down` stops every node, one started by hand included, leaving
//! no pid file behind. Node logs follow `--log-format` and carry no colour codes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

/// On drop, SIGKILLs every node process of the cluster in the directory (pid files and LOCK
/// files), so a failing test leaves nothing running.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for id in 1..=3 {
            for path in [
                self.0.join(format!("node-{id}.pid")),
                self.0.join(format!("node-{id}")).join("LOCK"),
            ] {
                if let Some(pid) = read_pid(&path) {
                    if lock_held(&self.0, id) || path.extension().is_some() {
                        kill_9_pid(pid);
                    }
                }
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether a process holds node `id`'s data-directory lock (is running).
fn lock_held(dir: &Path, id: u64) -> bool {
    match std::fs::File::open(dir.join(format!("node-{id}")).join("LOCK")) {
        Ok(file) => file.try_lock().is_err(),
        Err(_) => false,
    }
}

fn cluster_up(dir: &Path, base: u16, out: &Path, extra: &[&str]) -> Child {
    Command::new(BINARY)
        .args(extra)
        .args([
            "cluster",
            "up",
            "--nodes",
            "3",
            "--base-port",
            &base.to_string(),
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(std::fs::File::create(out.join("up.out")).unwrap())
        .stderr(std::fs::File::create(out.join("up.err")).unwrap())
        .spawn()
        .unwrap()
}

fn cluster(args: &[&str], dir: &Path) -> (i32, String, String) {
    let output = Command::new(BINARY)
        .arg("cluster")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits (guarding against a hang, not timing anything) until `file` contains `text`.
fn wait_for_text(file: &Path, text: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = std::fs::read_to_string(file).unwrap_or_default();
        if found.contains(text) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} never said {text:?}: {found}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (a hang guard) for the process to exit.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (a hang guard) until the node at `addr` answers a Status request.
async fn wait_answering(probe: &ringleader_client::Client, addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe.status_of(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{addr} never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn up_exits_with_the_nodes_own_error_when_a_node_cannot_start() {
    // Node 2's port is taken.
    let out = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let base = free_ports(3);
    let taken = std::net::TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let mut up = KillOnDrop(cluster_up(dir.path(), base, out.path(), &[]));
    let status = wait_exit(&mut up.0);
    let stdout = std::fs::read_to_string(out.path().join("up.out")).unwrap();
    let stderr = std::fs::read_to_string(out.path().join("up.err")).unwrap();
    assert_eq!(status.code(), Some(2), "{stdout}{stderr}");
    assert!(!stdout.contains("cluster of 3 up"), "{stdout}");
    assert!(
        stderr.contains("node 2") && stderr.contains("Address already in use"),
        "the node's own error: {stderr}"
    );
    for id in 1..=3 {
        assert!(!lock_held(dir.path(), id), "node {id} left running");
        assert!(!dir.path().join(format!("node-{id}.pid")).exists());
    }
    drop(taken);

    // Node 1's data directory is in use by a node started by hand.
    let dir = tempfile::tempdir().unwrap();
    let _reaper = Reaper(dir.path().to_path_buf());
    let other = free_ports(1);
    let mut squatter = KillOnDrop(serve(dir.path(), other, 1, 1, &[]));
    let endpoint = vec![addr(other, 1)];
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(wait_for_leader(&endpoint, 0, Duration::from_secs(10)));
    let base = free_ports(3);
    let mut up = KillOnDrop(cluster_up(dir.path(), base, out.path(), &[]));
    let status = wait_exit(&mut up.0);
    let stderr = std::fs::read_to_string(out.path().join("up.err")).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("in use by another running node"),
        "{stderr}"
    );
    assert!(
        squatter.0.try_wait().unwrap().is_none(),
        "a failed `up` stops only the nodes it started"
    );
    // And a second `up` on a directory whose cluster runs is refused before it starts anything.
    let running = tempfile::tempdir().unwrap();
    let _reaper = Reaper(running.path().to_path_buf());
    let mut first = KillOnDrop(cluster_up(running.path(), free_ports(3), out.path(), &[]));
    wait_for_text(&out.path().join("up.out"), "cluster of 3 up");
    let second_out = tempfile::tempdir().unwrap();
    let mut second = KillOnDrop(cluster_up(
        running.path(),
        free_ports(3),
        second_out.path(),
        &[],
    ));
    assert_eq!(wait_exit(&mut second.0).code(), Some(2));
    let stderr = std::fs::read_to_string(second_out.path().join("up.err")).unwrap();
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the running cluster is untouched"
    );
    for id in 1..=3 {
        assert!(running.path().join(format!("node-{id}.pid")).exists());
    }

    // Ports past 65535.
    let mut up = KillOnDrop(cluster_up(dir.path(), 65_534, out.path(), &[]));
    assert_eq!(wait_exit(&mut up.0).code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_reports_exits_watches_restarts_and_down_stops_every_node() {
    let out = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _reaper = Reaper(d.to_path_buf());
    let base = free_ports(3);
    let mut up = KillOnDrop(cluster_up(d, base, out.path(), &["--log-format", "json"]));
    let (up_out, up_err) = (out.path().join("up.out"), out.path().join("up.err"));
    wait_for_text(&up_out, "cluster of 3 up");
    let endpoints: Vec<String> = (1..=3).map(|i| addr(base, i)).collect();
    let leader = wait_for_leader(&endpoints, 0, Duration::from_secs(10)).await;

    // Crash the leader with `cluster stop N --kill`; time a client's failover (for the README).
    let writer = client(endpoints.clone(), Duration::from_secs(10));
    writer.put("before", "1").await.unwrap();
    let old_pid = read_pid(&d.join(format!("node-{}.pid", leader.id))).unwrap();
    let (code, stdout, stderr) = cluster(&["stop", &leader.id.to_string(), "--kill"], d);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let killed_at = Instant::now();
    writer.put("after", "2").await.unwrap();
    eprintln!(
        "CLIENT FAILOVER: a put issued at the kill of leader {} answered after {:?}",
        leader.id,
        killed_at.elapsed()
    );
    assert!(!d.join(format!("node-{}.pid", leader.id)).exists());
    wait_for_text(
        &up_err,
        &format!(
            "node {} (pid {old_pid}) exited: killed by signal 9",
            leader.id
        ),
    );

    // `cluster start N` brings it back with the same arguments; the supervisor watches it.
    let (code, stdout, stderr) = cluster(&["start", &leader.id.to_string()], d);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let new_pid = read_pid(&d.join(format!("node-{}.pid", leader.id))).unwrap();
    assert_ne!(new_pid, old_pid);
    wait_for_text(&up_out, &format!("now watching pid {new_pid}"));
    // A second start is refused while it runs.
    assert_eq!(cluster(&["start", &leader.id.to_string()], d).0, 2);

    // Killed from outside: reported, and its pid file no longer names a dead process.
    kill_9_pid(new_pid);
    wait_for_text(&up_err, &format!("(pid {new_pid}) exited"));
    let pid_file = d.join(format!("node-{}.pid", leader.id));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_file.exists() {
        assert!(Instant::now() < deadline, "the dead node's pid file stayed");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Restarted by hand with a raw `serve` line: Ctrl-C of the supervisor stops it too.
    let mut by_hand = KillOnDrop(serve(d, base, leader.id, 3, &[]));
    let probe = client(endpoints.clone(), Duration::from_secs(5));
    wait_answering(&probe, &addr(base, leader.id)).await;
    // SAFETY: kill(2) on the `cluster up` process this test started.
    unsafe {
        libc::kill(up.0.id() as libc::pid_t, libc::SIGINT);
    }
    assert!(wait_exit(&mut up.0).success(), "the supervisor exits 0");
    wait_exit(&mut by_hand.0);
    for id in 1..=3 {
        assert!(!lock_held(d, id), "node {id} still runs after Ctrl-C");
    }

    // Without a supervisor: `cluster down` stops a node started with `cluster start` and one
    // started by hand.
    let (code, stdout, stderr) = cluster(&["start", "1"], d);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut by_hand = KillOnDrop(serve(d, base, 2, 3, &[]));
    wait_answering(&probe, &addr(base, 2)).await;
    let (code, stdout, stderr) = cluster(&["down"], d);
    assert_eq!(code, 0, "{stdout}{stderr}");
    wait_exit(&mut by_hand.0);
    for id in 1..=3 {
        assert!(!lock_held(d, id), "node {id} runs after `cluster down`");
        assert!(
            !d.join(format!("node-{id}.pid")).exists(),
            "node-{id}.pid left"
        );
    }
    assert!(!d.join("supervisor.pid").exists());

    // --log-format json reached the nodes, and the log files carry no colour codes.
    for id in 1..=3 {
        let log = std::fs::read_to_string(d.join(format!("node-{id}.log"))).unwrap();
        assert!(!log.contains('\u{1b}'), "colour codes in node-{id}.log");
        let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
        assert!(!lines.is_empty(), "no JSON lines in node-{id}.log: {log}");
        for line in lines {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}
