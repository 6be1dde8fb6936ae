//! Helpers for tests that drive the real `ringleader` binary as child processes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringleader_client::{Client, ClientConfig, GroupStatus, NodeStatus, ONLY_GROUP};

pub const BINARY: &str = env!("CARGO_BIN_EXE_ringleader");

/// A base port with `count` consecutive free ports after it.
pub fn free_ports(count: u16) -> u16 {
    // Tests of one binary run in parallel: give each call its own region.
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Below Linux's ephemeral range (32768 and up): a port found free there can be taken by
    // any outgoing connection (another test's client) before the node binds it.
    let start = 20_000 + ((std::process::id() % 300) as u16 * 40 + call * 10) % 12_000;
    for base in (start..32_000)
        .chain(20_000..start)
        .step_by(count as usize + 1)
    {
        let all_free =
            (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free ports");
}

pub fn addr(base: u16, id: u64) -> String {
    format!("127.0.0.1:{}", base as u64 + id - 1)
}

pub fn peers_arg(base: u16, nodes: u64) -> String {
    (1..=nodes)
        .map(|i| format!("{i}={}", addr(base, i)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts `ringleader serve` for node `id` of a `nodes`-node cluster.
pub fn serve(dir: &Path, base: u16, id: u64, nodes: u64, extra: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!(
        "serve-{id}-{}.log",
        Instant::now().elapsed().as_nanos()
    )))
    .unwrap();
    let mut command = Command::new(BINARY);
    command
        .arg("serve")
        .args(["--id", &id.to_string()])
        .arg("--dir")
        .arg(dir.join(format!("node-{id}")))
        .args(["--listen", &addr(base, id)])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log);
    if nodes > 1 {
        command.args(["--peers", &peers_arg(base, nodes)]);
        command.arg("--cluster-secret-file").arg(secret_file(dir));
    }
    command.spawn().expect("start ringleader serve")
}

pub fn client(endpoints: Vec<String>, timeout: Duration) -> Client {
    let mut config = ClientConfig::new(endpoints);
    config.request_timeout = timeout;
    Client::new(config).unwrap()
}

/// A node's view of group 0, the only group a node hosts until sharding (a status without it
/// fails the test).
pub fn group0(status: &NodeStatus) -> &GroupStatus {
    status
        .group(ONLY_GROUP)
        .unwrap_or_else(|| panic!("node {} reports no group 0: {status:?}", status.id))
}

/// Polls the endpoints until one reports itself leader (with a term above `above_term`).
pub async fn wait_for_leader(
    endpoints: &[String],
    above_term: u64,
    within: Duration,
) -> NodeStatus {
    let probe = client(endpoints.to_vec(), Duration::from_millis(300));
    let deadline = Instant::now() + within;
    loop {
        for endpoint in endpoints {
            if let Ok(status) = probe.status_of(endpoint).await {
                let group = group0(&status);
                if group.role == "leader" && group.term > above_term {
                    return status;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `ringleader ARGS` and returns (exit code, stdout, stderr).
/// A CLI command that has not exited by then is killed and fails the test (instead of hanging it).
pub const CLI_DEADLINE: Duration = Duration::from_secs(60);

pub fn cli(args: &[&str], endpoints: &str) -> (i32, String, String) {
    let child = Command::new(BINARY)
        .args(args)
        .env("RINGLEADER_ENDPOINTS", endpoints)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let Ok(output) = finished.recv_timeout(CLI_DEADLINE) else {
        kill_9_pid(pid);
        panic!("ringleader {args:?} did not exit within {CLI_DEADLINE:?}");
    };
    let output = output.unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn kill_9(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

pub fn kill_9_pid(pid: u32) {
    // SAFETY: kill(2) on a process this test started (through `cluster up`).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

pub fn data_dir(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node-{id}"))
}

/// Kills (SIGKILL) the child when dropped, so a failing test leaves no process behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cluster secret the nodes of a test share: `dir/cluster-secret`, made on first use.
pub fn secret_file(dir: &Path) -> PathBuf {
    let path = dir.join("cluster-secret");
    if !path.exists() {
        std::fs::write(&path, "a test cluster's shared secret, 32+ bytes\n").unwrap();
    }
    path
}

/// Waits for `child` to exit, for at most `within`: past that it is killed and the test fails,
/// instead of hanging (a node that should have refused to start would otherwise serve for ever).
pub fn wait_within(
    child: &mut std::process::Child,
    within: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A field of /proc/PID/status in bytes (VmRSS, VmHWM).
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}
