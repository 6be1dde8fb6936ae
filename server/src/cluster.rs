//! `ringleader cluster up|down|start|stop`: a local cluster as child processes of this same
//! binary, supervised.
//!
//! Layout of DIR: node i listens on 127.0.0.1:(base_port + i - 1) with its data in DIR/node-i,
//! its log in DIR/node-i.log and, while it runs, its pid in DIR/node-i.pid. DIR/cluster.json
//! records what `up` was given (node count, base port, the extra `serve` arguments, the log
//! format), so `cluster start N` can rebuild node N's `serve` line from the directory alone;
//! DIR/supervisor.pid names the running `up`. Each `serve` also writes its pid into the LOCK
//! file of its data directory, which it holds locked while it runs: so a node started by hand
//! with a raw `serve` line is found too (the lock, not the number, says it is alive).
//!
//! How the supervisor (`up`, in the foreground) learns of a node started from another terminal:
//! it watches the pid files. Every [`WATCH_INTERVAL_MS`] it checks its own children (reporting an
//! exit with the last error line of the node's log) and reads DIR/node-i.pid for any node it has
//! no live process for; a live `serve` process named there (written by `cluster start N`) is
//! adopted: its exit is reported like a child's, and Ctrl-C/SIGTERM stops it with the others.
//! Nodes run in their own process groups, so a Ctrl-C in a terminal reaches only the supervisor
//! (or `cluster start`), which stops the nodes in order; `cluster down` SIGTERMs the supervisor
//! and then every node process it can find through pid files and LOCK files. A supervisor killed
//! with SIGKILL leaves its nodes running: `cluster down` stops them. A pid file is removed when
//! its process is seen to exit (by the supervisor, `stop` or `down`) and only if it still names
//! that process.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use ringleader_client::{Client, ClientConfig};
use serde_json::json;

use crate::cli::LogFormat;

/// How often the supervisor looks at its nodes and the pid files.
const WATCH_INTERVAL_MS: u64 = 200;
/// How long `up` and `start` wait for a node to answer a Status request.
const START_TIMEOUT_MS: u64 = 30_000;
/// How long a node gets to shut down gracefully after SIGTERM before it is SIGKILLed.
const STOP_TIMEOUT_MS: u64 = 10_000;
/// How much of the end of a node's log is searched for its last error line.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

#[derive(Args)]
pub struct UpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Parent directory of the nodes' data directories.
    #[arg(long, default_value = "./ringleader-data")]
    dir: PathBuf,
    /// Node 1's port; node i gets base_port + i - 1.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Passed to each node: snapshot after this many applied entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every_entries: u64,
    /// Passed to each node: entries a snapshot keeps behind it for lagging followers.
    #[arg(long, default_value_t = 5_000)]
    log_tail_entries: u64,
    /// Passed to each node: accept `ringleader fault` rules (drop or delay peer traffic), for
    /// experiments. Never on by default.
    #[arg(long)]
    allow_faults: bool,
    #[command(flatten)]
    shape: crate::cli::ShapeArgs,
}

#[derive(Args)]
pub struct DirArgs {
    /// The cluster's directory (as given to `cluster up`).
    #[arg(long, default_value = "./ringleader-data")]
    dir: PathBuf,
}

#[derive(Args)]
pub struct StopArgs {
    /// The node's id.
    node: u64,
    /// SIGKILL (a crash) instead of SIGTERM (a graceful shutdown that hands leadership over).
    #[arg(long)]
    kill: bool,
    #[command(flatten)]
    dir: DirArgs,
}

#[derive(Args)]
pub struct StartArgs {
    /// The node's id.
    node: u64,
    #[command(flatten)]
    dir: DirArgs,
}

/// The addresses of the nodes of the cluster in `dir` (made by `cluster up`), node 1 first.
pub fn node_addresses(dir: &Path) -> Result<Vec<String>> {
    let layout = Layout::load(dir)?;
    Ok((1..=layout.nodes).map(|i| layout.addr(i)).collect())
}

/// What DIR/cluster.json records: enough to rebuild any node's `serve` line.
struct Layout {
    dir: PathBuf,
    nodes: u64,
    base_port: u16,
    log_format: String,
    /// Arguments every node's `serve` gets besides id, dir, listen and peers.
    extra_args: Vec<String>,
}

impl Layout {
    fn file(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    fn load(dir: &Path) -> Result<Layout> {
        let path = Self::file(dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is {} a cluster directory made by `cluster up`?)",
                path.display(),
                dir.display()
            )
        })?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let field = |name: &str| {
            doc.get(name)
                .with_context(|| format!("{}: no {name:?}", path.display()))
        };
        let nodes = field("nodes")?.as_u64().context("nodes is not a number")?;
        let base_port = field("base_port")?
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .context("base_port is not a port")?;
        let log_format = field("log_format")?
            .as_str()
            .context("log_format is not a string")?
            .to_string();
        let extra_args = field("extra_args")?
            .as_array()
            .context("extra_args is not a list")?
            .iter()
            .map(|arg| arg.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .context("extra_args holds a non-string")?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            nodes,
            base_port,
            log_format,
            extra_args,
        })
    }

    fn save(&self) -> Result<()> {
        let doc = json!({
            "nodes": self.nodes,
            "base_port": self.base_port,
            "log_format": self.log_format,
            "extra_args": self.extra_args,
        });
        let path = Self::file(&self.dir);
        std::fs::write(&path, format!("{doc:#}\n"))
            .with_context(|| format!("writing {}", path.display()))
    }

    fn addr(&self, i: u64) -> String {
        format!("127.0.0.1:{}", self.base_port as u64 + i - 1)
    }

    fn node_dir(&self, i: u64) -> PathBuf {
        self.dir.join(format!("node-{i}"))
    }

    fn log_path(&self, i: u64) -> PathBuf {
        self.dir.join(format!("node-{i}.log"))
    }

    fn pid_path(&self, i: u64) -> PathBuf {
        self.dir.join(format!("node-{i}.pid"))
    }

    fn check_node(&self, i: u64) -> Result<()> {
        if !(1..=self.nodes).contains(&i) {
            bail!(
                "the cluster in {} has nodes 1 to {}",
                self.dir.display(),
                self.nodes
            );
        }
        Ok(())
    }

    /// Node i's `serve` arguments.
    fn serve_args(&self, i: u64) -> Vec<OsString> {
        let peers: Vec<String> = (1..=self.nodes)
            .map(|n| format!("{n}={}", self.addr(n)))
            .collect();
        let mut args: Vec<OsString> = vec![
            "serve".into(),
            "--id".into(),
            i.to_string().into(),
            "--dir".into(),
            self.node_dir(i).into(),
            "--listen".into(),
            self.addr(i).into(),
            "--peers".into(),
            peers.join(",").into(),
            "--log-format".into(),
            self.log_format.clone().into(),
        ];
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }

    /// Opens node i's log for appending; returns it and its current length (where this run's
    /// lines begin).
    fn open_log(&self, i: u64) -> Result<(std::fs::File, u64)> {
        let path = self.log_path(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((log, offset))
    }
}

/// The last error line a node wrote to its log after byte `from` (this run's part): the line
/// `main` prints when `serve` fails, or a tracing ERROR event. With `or_last`, the last line
/// when no line is an error.
fn last_error_line(log: &Path, from: u64, or_last: bool) -> Option<String> {
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    let start = from.max(len.saturating_sub(LOG_TAIL_BYTES));
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.take(LOG_TAIL_BYTES).read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines
        .iter()
        .rev()
        .find(|line| {
            line.starts_with("error:")
                || line.contains(" ERROR ")
                || line.contains("\"level\":\"ERROR\"")
        })
        .or(lines.last().filter(|_| or_last))
        .map(|line| line.trim().to_string())
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a running process (a zombie, dead but not yet reaped, is not).
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses: "123 (ringleader) S ...".
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => true,
    }
}

/// Whether `pid` runs `ringleader serve` (guards against a stale pid file naming a pid the
/// system has since given to another program). Without /proc, trust the pid.
fn is_serve(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.split(|b| *b == 0).any(|arg| arg == b"serve"),
        Err(_) => alive(pid),
    }
}

/// Whether `pid` runs `ringleader cluster up` (see [`is_serve`]).
fn is_supervisor(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.split(|b| *b == 0).any(|arg| arg == b"cluster"),
        Err(_) => alive(pid),
    }
}

/// The pid written in a data directory's LOCK file, if a process holds that lock.
fn lock_holder(node_dir: &Path) -> Option<i32> {
    let path = node_dir.join("LOCK");
    let file = std::fs::OpenOptions::new().read(true).open(&path).ok()?;
    if file.try_lock().is_ok() {
        return None; // nobody holds it (dropping `file` releases ours)
    }
    read_pid(&path)
}

/// Every live process that is node i: the one its pid file names and the one holding its lock.
fn node_pids(layout: &Layout, i: u64) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Some(pid) = read_pid(&layout.pid_path(i)) {
        if alive(pid) && is_serve(pid) {
            pids.push(pid);
        }
    }
    if let Some(pid) = lock_holder(&layout.node_dir(i)) {
        if alive(pid) && !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid checked just before to be a ringleader node of this cluster.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Removes node i's pid file if it still names `pid` (a `cluster start` may have replaced it).
fn remove_pid_file(layout: &Layout, i: u64, pid: i32) {
    let path = layout.pid_path(i);
    if read_pid(&path) == Some(pid) {
        let _ = std::fs::remove_file(path);
    }
}

/// Waits until none of `pids` is alive, up to `timeout`; returns those still alive.
fn wait_gone(pids: &[i32], timeout: Duration) -> Vec<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops node i's processes (SIGTERM, then SIGKILL after [`STOP_TIMEOUT_MS`]; or SIGKILL at
/// once) and removes its pid file. Returns the pids stopped.
fn stop_node(layout: &Layout, i: u64, kill: bool) -> Vec<i32> {
    let pids = node_pids(layout, i);
    for pid in &pids {
        signal(*pid, if kill { libc::SIGKILL } else { libc::SIGTERM });
    }
    let left = wait_gone(&pids, Duration::from_millis(STOP_TIMEOUT_MS));
    for pid in &left {
        eprintln!("node {i} (pid {pid}) did not stop in time: killing it");
        signal(*pid, libc::SIGKILL);
    }
    wait_gone(&left, Duration::from_secs(5));
    for pid in &pids {
        remove_pid_file(layout, i, *pid);
    }
    pids
}

/// Why a child exited, in words.
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Waits until the node at `addr` answers a Status request as node `id`, or `exited` reports
/// that its process ended (then the error carries the process's own last error line).
async fn wait_answering(
    layout: &Layout,
    id: u64,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<()> {
    let mut config = ClientConfig::new(vec![layout.addr(id)]);
    config.request_timeout = Duration::from_millis(500);
    let probe = Client::new(config)?;
    let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
    loop {
        if let Some(why) = exited() {
            bail!("node {id} exited before it answered: {why}");
        }
        if let Ok(status) = probe.status_of(&layout.addr(id)).await {
            if status.id == id {
                // Answered; still ours? (Another process may hold the port while ours failed.)
                if let Some(why) = exited() {
                    bail!("node {id} exited before it answered: {why}");
                }
                return Ok(());
            }
            bail!(
                "{} is taken by node {} of another cluster",
                layout.addr(id),
                status.id
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "node {id} did not answer at {} within {} ms (see {})",
                layout.addr(id),
                START_TIMEOUT_MS,
                layout.log_path(id).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node the supervisor watches.
enum Watched {
    /// Started by this `up`.
    Child {
        child: tokio::process::Child,
        pid: i32,
        log_from: u64,
    },
    /// Started elsewhere (`cluster start N`), found through its pid file.
    Adopted { pid: i32, log_from: u64 },
    /// Not running (as far as the supervisor knows).
    Gone,
}

impl Watched {
    fn pid(&self) -> Option<i32> {
        match self {
            Watched::Child { pid, .. } | Watched::Adopted { pid, .. } => Some(*pid),
            Watched::Gone => None,
        }
    }
}

/// Stops every watched node gracefully; with `sweep`, also any other process found for a node
/// (one started by hand). A failed `up` does not sweep: a node it found running is not its own.
async fn stop_all(layout: &Layout, watched: &mut BTreeMap<u64, Watched>, sweep: bool) {
    for (i, node) in watched.iter() {
        if let Some(pid) = node.pid() {
            signal(pid, libc::SIGTERM);
        }
        if sweep {
            for pid in node_pids(layout, *i) {
                if Some(pid) != node.pid() {
                    signal(pid, libc::SIGTERM);
                }
            }
        }
    }
    for (i, node) in std::mem::take(watched) {
        match node {
            Watched::Child { mut child, pid, .. } => {
                match tokio::time::timeout(Duration::from_millis(STOP_TIMEOUT_MS), child.wait())
                    .await
                {
                    Ok(Ok(status)) => println!("node {i} stopped ({})", describe_exit(status)),
                    _ => {
                        eprintln!("node {i} did not stop in time: killing it");
                        let _ = child.kill().await;
                    }
                }
                remove_pid_file(layout, i, pid);
            }
            Watched::Adopted { pid, .. } => {
                let left = wait_gone(&[pid], Duration::from_millis(STOP_TIMEOUT_MS));
                if left.is_empty() {
                    println!("node {i} stopped");
                } else {
                    eprintln!("node {i} did not stop in time: killing it");
                    signal(pid, libc::SIGKILL);
                }
                remove_pid_file(layout, i, pid);
            }
            Watched::Gone => {}
        }
        if sweep {
            // Started by hand with a raw `serve` line, or not yet seen: found through its lock.
            stop_node(layout, i, false);
        }
    }
}

pub async fn up(args: UpArgs, log_format: LogFormat) -> Result<ExitCode> {
    anyhow::ensure!(
        (1..=9).contains(&args.nodes),
        "--nodes must be between 1 and 9"
    );
    anyhow::ensure!(
        args.base_port as u64 + args.nodes - 1 <= u16::MAX as u64 && args.base_port > 0,
        "--base-port {} leaves no room for {} ports",
        args.base_port,
        args.nodes
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    // Handled from here on: a Ctrl-C while the nodes start stops them too (they run in their
    // own process groups, so the terminal's signal does not reach them).
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let supervisor_pid_path = args.dir.join("supervisor.pid");
    if let Some(pid) = read_pid(&supervisor_pid_path) {
        if alive(pid) && is_supervisor(pid) {
            bail!(
                "a cluster is already running from {} (supervisor pid {pid}); stop it with \
                 `ringleader cluster down --dir {}`",
                args.dir.display(),
                args.dir.display()
            );
        }
    }
    let mut layout = Layout {
        dir: args.dir.clone(),
        nodes: args.nodes,
        base_port: args.base_port,
        log_format: log_format.as_arg().to_string(),
        extra_args: vec![
            "--snapshot-every-entries".into(),
            args.snapshot_every_entries.to_string(),
            "--log-tail-entries".into(),
            args.log_tail_entries.to_string(),
            // Peers prove they know this secret before they may speak Raft (docs/network.md).
            "--cluster-secret-file".into(),
            ringleader_node::auth::ensure_secret_file(&args.dir)?
                .display()
                .to_string(),
        ],
    };
    if args.allow_faults {
        layout.extra_args.push("--allow-faults".into());
    }
    let nodes = usize::try_from(args.nodes).unwrap_or(usize::MAX);
    let (shards, replicas) = args.shape.resolve(nodes)?;
    layout.extra_args.extend([
        "--shards".into(),
        shards.to_string(),
        "--replicas".into(),
        replicas.to_string(),
    ]);
    layout.save()?;
    std::fs::write(&supervisor_pid_path, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", supervisor_pid_path.display()))?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut watched: BTreeMap<u64, Watched> = BTreeMap::new();
    let starting = async {
        for i in 1..=layout.nodes {
            // A node of this directory already running (started by hand): ours will fail on
            // the data-directory lock and say so; its pid file is left to the running one.
            let already_running = !node_pids(&layout, i).is_empty();
            let (log, log_from) = layout.open_log(i)?;
            let child = tokio::process::Command::new(&exe)
                .args(layout.serve_args(i))
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting node {i}"))?;
            let pid = child.id().context("a child without a pid")? as i32;
            if !already_running {
                std::fs::write(layout.pid_path(i), format!("{pid}\n"))
                    .with_context(|| format!("writing {}", layout.pid_path(i).display()))?;
            }
            println!(
                "node {i}: {} (pid {pid}) log {}",
                layout.addr(i),
                layout.log_path(i).display()
            );
            watched.insert(
                i,
                Watched::Child {
                    child,
                    pid,
                    log_from,
                },
            );
        }
        for i in 1..=layout.nodes {
            let log = layout.log_path(i);
            let Some(Watched::Child {
                child, log_from, ..
            }) = watched.get_mut(&i)
            else {
                continue;
            };
            let log_from = *log_from;
            wait_answering(&layout, i, || match child.try_wait() {
                Ok(Some(status)) => Some(
                    last_error_line(&log, log_from, true).unwrap_or_else(|| describe_exit(status)),
                ),
                _ => None,
            })
            .await?;
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        result = starting => result,
        _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted while the nodes started")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated while the nodes started")),
    };
    if let Err(error) = result {
        stop_all(&layout, &mut watched, false).await;
        let _ = std::fs::remove_file(&supervisor_pid_path);
        return Err(error);
    }
    println!(
        "cluster of {} up; try: ringleader put hello world && ringleader get hello",
        layout.nodes
    );
    println!(
        "press Ctrl-C to stop (or `ringleader cluster down --dir {}`)",
        layout.dir.display()
    );
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(WATCH_INTERVAL_MS)) => {}
        }
        watch(&layout, &mut watched);
    }
    println!("stopping the cluster");
    stop_all(&layout, &mut watched, true).await;
    let _ = std::fs::remove_file(&supervisor_pid_path);
    Ok(ExitCode::SUCCESS)
}

/// One look at every node: report exits, adopt nodes started by `cluster start`.
fn watch(layout: &Layout, watched: &mut BTreeMap<u64, Watched>) {
    for i in 1..=layout.nodes {
        let node = watched.entry(i).or_insert(Watched::Gone);
        let ended = match node {
            Watched::Child {
                child,
                pid,
                log_from,
            } => match child.try_wait() {
                Ok(Some(status)) => Some((*pid, *log_from, describe_exit(status))),
                _ => None,
            },
            Watched::Adopted { pid, log_from } => {
                (!alive(*pid)).then(|| (*pid, *log_from, "exited".to_string()))
            }
            Watched::Gone => None,
        };
        if let Some((pid, log_from, how)) = ended {
            let last = last_error_line(&layout.log_path(i), log_from, false)
                .map(|line| format!("; its log's last error: {line}"))
                .unwrap_or_default();
            eprintln!("node {i} (pid {pid}) exited: {how}{last}");
            remove_pid_file(layout, i, pid);
            *node = Watched::Gone;
        }
        if matches!(node, Watched::Gone) {
            if let Some(pid) = read_pid(&layout.pid_path(i)) {
                if alive(pid) && is_serve(pid) {
                    let log_from = std::fs::metadata(layout.log_path(i)).map_or(0, |m| m.len());
                    println!("node {i}: now watching pid {pid} (started by `cluster start`)");
                    *node = Watched::Adopted { pid, log_from };
                }
            }
        }
    }
}

/// `cluster start N`: starts node N in the background with the arguments `up` gave it, and
/// returns once it answers.
pub async fn start(args: StartArgs) -> Result<ExitCode> {
    let layout = Layout::load(&args.dir.dir)?;
    let i = args.node;
    layout.check_node(i)?;
    if let Some(pid) = node_pids(&layout, i).first() {
        bail!("node {i} is already running (pid {pid})");
    }
    let exe = std::env::current_exe().context("finding this binary")?;
    let (log, log_from) = layout.open_log(i)?;
    // Its own process group: a Ctrl-C in this terminal later does not reach it.
    let mut child = std::process::Command::new(exe)
        .args(layout.serve_args(i))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting node {i}"))?;
    let pid = child.id() as i32;
    std::fs::write(layout.pid_path(i), format!("{pid}\n"))
        .with_context(|| format!("writing {}", layout.pid_path(i).display()))?;
    let log_path = layout.log_path(i);
    let answered = wait_answering(&layout, i, || match child.try_wait() {
        Ok(Some(status)) => Some(
            last_error_line(&log_path, log_from, true).unwrap_or_else(|| describe_exit(status)),
        ),
        _ => None,
    })
    .await;
    if let Err(error) = answered {
        signal(pid, libc::SIGKILL);
        let _ = child.wait();
        remove_pid_file(&layout, i, pid);
        return Err(error);
    }
    println!(
        "node {i}: {} (pid {pid}) log {}",
        layout.addr(i),
        log_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `cluster stop N`: stops one node (SIGTERM, or SIGKILL with --kill).
pub fn stop(args: StopArgs) -> Result<ExitCode> {
    let layout = Layout::load(&args.dir.dir)?;
    layout.check_node(args.node)?;
    let pids = stop_node(&layout, args.node, args.kill);
    if pids.is_empty() {
        bail!(
            "node {} of {} is not running",
            args.node,
            layout.dir.display()
        );
    }
    let pids: Vec<String> = pids.iter().map(|pid| pid.to_string()).collect();
    println!(
        "node {} (pid {}) {}",
        args.node,
        pids.join(", "),
        if args.kill { "killed" } else { "stopped" }
    );
    Ok(ExitCode::SUCCESS)
}

/// `cluster down`: stops the supervisor, then every node process of the cluster still running.
pub fn down(args: DirArgs) -> Result<ExitCode> {
    let layout = Layout::load(&args.dir)?;
    let supervisor_pid_path = layout.dir.join("supervisor.pid");
    if let Some(pid) = read_pid(&supervisor_pid_path) {
        if alive(pid) && is_supervisor(pid) {
            signal(pid, libc::SIGTERM);
            if !wait_gone(&[pid], Duration::from_millis(STOP_TIMEOUT_MS + 5_000)).is_empty() {
                eprintln!("the supervisor (pid {pid}) did not stop in time");
            } else {
                println!("supervisor (pid {pid}) stopped");
            }
        }
        let _ = std::fs::remove_file(&supervisor_pid_path);
    }
    let mut stopped = 0;
    for i in 1..=layout.nodes {
        let pids = stop_node(&layout, i, false);
        for pid in &pids {
            println!("node {i} (pid {pid}) stopped");
        }
        stopped += pids.len();
        // A pid file left by a node that died unwatched.
        if let Some(pid) = read_pid(&layout.pid_path(i)) {
            if !alive(pid) {
                remove_pid_file(&layout, i, pid);
            }
        }
    }
    println!(
        "cluster in {} is down ({stopped} node processes stopped here)",
        layout.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
