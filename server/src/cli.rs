//! The command line: argument parsing (clap) and the client commands.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ringleader_client::protocol::Expect;
use ringleader_client::{CasOutcome, Client, ClientConfig, TokioConnector};
use ringleader_node::node::NodeConfig;
use storage::{StdFs, SyncPolicy};

use crate::cluster;

const DEFAULT_ENDPOINTS: &str = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

#[derive(Parser)]
#[command(
    name = "ringleader",
    version,
    about = "A replicated key-value store: Raft over a crash-safe WAL"
)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node. Clients and peers share the one listening port (a handshake tells them apart).
    Serve(ServeArgs),
    /// Start and stop local clusters.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Set KEY to VALUE (`-` reads the value from stdin). Prints the new version.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        target: Target,
    },
    /// Print KEY's value (raw bytes on stdout). Exit 1 when absent.
    Get {
        key: String,
        /// Print "version<TAB>value" instead of the value alone.
        #[arg(long)]
        with_version: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete KEY. Exit 1 when it did not exist.
    Delete {
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set KEY to NEW if an expectation holds. Exit 1 on mismatch.
    Cas {
        key: String,
        new: String,
        /// Expect the current value to be this.
        #[arg(long, group = "expect")]
        expect_value: Option<String>,
        /// Expect the current version to be this.
        #[arg(long, group = "expect")]
        expect_version: Option<u64>,
        /// Expect the key to be absent.
        #[arg(long, group = "expect")]
        expect_absent: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Check a history for linearizability (JSONL, or Knossos EDN / Porcupine kv files). Exit 0
    /// yes, 1 no, 2 malformed, 3 unknown.
    Check(crate::verify::CheckArgs),
    /// Run the deterministic simulation of a cluster under faults and check its history.
    Sim(crate::verify::SimArgs),
    /// Show every node: role, term, leader, commit and applied index, follower lag.
    Status {
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start a local cluster as child processes; Ctrl-C stops it. Rerun to recover from DIR.
    Up(cluster::UpArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// This node's id (1, 2, 3...).
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Data directory (WAL and snapshots).
    #[arg(long, default_value = "./ringleader-data")]
    dir: PathBuf,
    /// Address to listen on for clients and peers.
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: String,
    /// Every voter as ID=ADDR, comma-separated, this node included. Omit for a single node.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// When the WAL is fsynced: `always` (before acknowledging, the default), `never`, or a
    /// number of milliseconds between syncs.
    #[arg(long, default_value = "always")]
    wal_sync: String,
    /// Length of one Raft tick in milliseconds (elections after 10-20 ticks of silence).
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// Snapshot the state machine and compact the log after this many applied entries.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every_entries: u64,
    /// A file holding the secret every node of the cluster shares (at least 16 bytes; peers
    /// prove they know it before they may speak Raft). Required with --peers; `cluster up`
    /// generates one in its data directory.
    #[arg(long, env = "RINGLEADER_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
}

#[derive(Args)]
struct Target {
    /// Node addresses, comma-separated; any node will do.
    #[arg(long, env = "RINGLEADER_ENDPOINTS", default_value = DEFAULT_ENDPOINTS, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

impl Target {
    fn client(&self) -> Result<Client<TokioConnector>> {
        let mut config = ClientConfig::new(self.endpoints.clone());
        config.request_timeout = Duration::from_millis(self.timeout_ms);
        Ok(Client::new(config)?)
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Parses `--peers 1=ADDR,2=ADDR`.
fn parse_peers(id: u64, listen: &str, peers: &[String]) -> Result<BTreeMap<u64, String>> {
    let mut map = BTreeMap::new();
    for peer in peers {
        let (peer_id, addr) = peer
            .split_once('=')
            .ok_or_else(|| anyhow!("--peers entry {peer:?} is not ID=ADDR"))?;
        let peer_id: u64 = peer_id
            .parse()
            .with_context(|| format!("--peers entry {peer:?}: bad id"))?;
        if map.insert(peer_id, addr.to_string()).is_some() {
            bail!("--peers names node {peer_id} twice");
        }
    }
    match map.get(&id) {
        None if map.is_empty() => {
            map.insert(id, listen.to_string());
        }
        None => bail!("--peers does not include this node's id {id}"),
        Some(_) => {}
    }
    Ok(map)
}

fn parse_sync(value: &str) -> Result<SyncPolicy> {
    Ok(match value {
        "always" => SyncPolicy::Always,
        "never" => SyncPolicy::Never,
        millis => SyncPolicy::Interval(Duration::from_millis(millis.parse().map_err(|_| {
            anyhow!("--wal-sync must be always, never or milliseconds, not {millis:?}")
        })?)),
    })
}

/// Runs the commands that must not run inside tokio; gives the others back.
pub fn run_sync(cli: Cli) -> Result<Result<ExitCode>, Cli> {
    match cli.command {
        Command::Check(args) => Ok(crate::verify::check_command(args)),
        Command::Sim(args) => Ok(crate::verify::sim_command(args)),
        command => Err(Cli { command, ..cli }),
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            init_tracing(cli.log_format);
            serve(args).await
        }
        Command::Cluster {
            command: ClusterCommand::Up(args),
        } => cluster::up(args).await,
        Command::Put { key, value, target } => {
            let value = if value == "-" {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .context("reading the value from stdin")?;
                bytes
            } else {
                value.into_bytes()
            };
            let version = target.client()?.put(key, value).await?;
            println!("{version}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            key,
            with_version,
            target,
        } => match target.client()?.get(key).await? {
            Some(found) => {
                let mut out = std::io::stdout().lock();
                if with_version {
                    write!(out, "{}\t", found.version)?;
                }
                out.write_all(&found.value)?;
                if std::io::IsTerminal::is_terminal(&out) || with_version {
                    writeln!(out)?;
                }
                Ok(ExitCode::SUCCESS)
            }
            None => Ok(ExitCode::from(1)),
        },
        Command::Delete { key, target } => Ok(if target.client()?.delete(key).await? {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Command::Cas {
            key,
            new,
            expect_value,
            expect_version,
            expect_absent,
            target,
        } => {
            let expect = match (expect_value, expect_version, expect_absent) {
                (Some(value), None, false) => Expect::Value(value.into_bytes()),
                (None, Some(version), false) => Expect::Version(version),
                (None, None, true) => Expect::Absent,
                _ => bail!(
                    "cas needs exactly one of --expect-value, --expect-version, --expect-absent"
                ),
            };
            match target.client()?.cas(key, expect, new).await? {
                CasOutcome::Swapped { version } => {
                    println!("{version}");
                    Ok(ExitCode::SUCCESS)
                }
                CasOutcome::Mismatch { current } => {
                    match current {
                        Some(current) => eprintln!("mismatch: current version {}", current.version),
                        None => eprintln!("mismatch: the key is absent"),
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Status { json, target } => status(json, target).await,
        Command::Check(_) | Command::Sim(_) => bail!("check and sim run outside the async runtime"),
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let peers = parse_peers(args.id, &args.listen, &args.peers)?;
    if peers.get(&args.id) != Some(&args.listen) {
        bail!(
            "--listen {} differs from this node's address in --peers ({:?})",
            args.listen,
            peers.get(&args.id)
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    // One node per data directory: the lock is released when the process exits, however it exits.
    let lock_path = args.dir.join("LOCK");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!("{} is in use by another running node", args.dir.display());
    }
    let mut config = NodeConfig::new(args.id, peers, args.dir.clone(), StdFs::shared());
    config.wal.sync = parse_sync(&args.wal_sync)?;
    config.tick = Duration::from_millis(args.tick_ms.max(1));
    config.snapshot_every_entries = args.snapshot_every_entries.max(1);
    config.net.cluster_secret =
        ringleader_node::auth::load_secret(args.cluster_secret_file.as_deref())?;
    let sync_interval = match config.wal.sync {
        SyncPolicy::Interval(interval) => Some(interval),
        _ => None,
    };
    if sync_interval.is_some() {
        tracing::warn!("--wal-sync interval: acknowledged writes may be lost by a power failure");
    }
    let mut node = ringleader_node::start(TokioConnector, config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        _ = node.stopped() => bail!("the node stopped after a storage failure (see the log)"),
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    drop(lock);
    Ok(ExitCode::SUCCESS)
}

async fn status(json: bool, target: Target) -> Result<ExitCode> {
    let client = target.client()?;
    let mut nodes = Vec::new();
    let mut statuses = Vec::new();
    for addr in &target.endpoints {
        match client.status_of(addr).await {
            Ok(status) => {
                nodes.push(serde_json::json!({"id": status.id, "addr": addr, "reachable": true, "data_dir": status.data_dir, "log_bytes": status.log_bytes}));
                statuses.push(status);
            }
            Err(error) => nodes.push(
                serde_json::json!({"addr": addr, "reachable": false, "error": error.to_string()}),
            ),
        }
    }
    let leader = statuses
        .iter()
        .filter(|s| s.role == "leader")
        .max_by_key(|s| s.term);
    let replicas: Vec<serde_json::Value> = statuses
        .iter()
        .map(|s| {
            let seen_by_leader = leader.and_then(|l| l.replicas.iter().find(|r| r.node == s.id));
            let is_leader = leader.is_some_and(|l| l.id == s.id);
            let match_index = if is_leader { Some(s.last_index) } else { seen_by_leader.map(|r| r.match_index) };
            serde_json::json!({
                "node": s.id, "role": s.role, "term": s.term,
                "match_index": match_index, "last_index": s.last_index, "snapshot_index": s.snapshot_index,
                "applied_index": s.applied_index, "commit_index": s.commit_index,
                "lag": leader.map(|l| l.commit_index.saturating_sub(s.applied_index)),
                "last_heard_ms": seen_by_leader.and_then(|r| r.last_heard_ms),
            })
        })
        .collect();
    let group = serde_json::json!({
        "id": 0,
        "leader": leader.map(|l| l.id),
        "term": leader.map(|l| l.term).or_else(|| statuses.iter().map(|s| s.term).max()),
        "commit_index": leader.map(|l| l.commit_index),
        "replicas": replicas,
    });
    let report = serde_json::json!({"nodes": nodes, "groups": [group]});
    if json {
        println!("{report}");
    } else {
        for node in &nodes {
            println!(
                "node {} at {}: {}",
                node["id"],
                node["addr"].as_str().unwrap_or("?"),
                if node["reachable"] == true {
                    "reachable"
                } else {
                    "UNREACHABLE"
                }
            );
        }
        println!(
            "group 0: leader {} term {} commit {}",
            group["leader"], group["term"], group["commit_index"]
        );
        for replica in &replicas {
            println!(
                "  node {} {:9} applied {} lag {} last heard {} ms",
                replica["node"],
                replica["role"].as_str().unwrap_or("?"),
                replica["applied_index"],
                replica["lag"],
                replica["last_heard_ms"]
            );
        }
    }
    Ok(if statuses.is_empty() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
