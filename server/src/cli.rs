//! The command line: argument parsing (clap) and the client commands.
//!
//! Every address is checked when the arguments are parsed (`--endpoints`, `RINGLEADER_ENDPOINTS`,
//! `serve --listen` and `--peers`): a typo is a usage error at once (exit 2), not seconds of
//! retries against an address that cannot exist, nor a node that campaigns forever alone.
//!
//! Exit codes of the client commands: 0 success, 1 key absent or cas mismatch (for `status`:
//! degraded), 2 any error, one line on stderr. Output goes through [`Out`], so a closed stdout
//! (`get | head`) ends the command quietly instead of panicking in `println!`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ringleader_client::Expect;
use ringleader_client::{
    CasOutcome, Client, ClientConfig, GroupStatus, NodeStatus, ReadLevel, Receipt, ServedAt,
    TokioConnector, WriteAck, ONLY_GROUP,
};
use ringleader_node::NodeConfig;
use ringleader_protocol::GroupId;
use serde_json::json;
use storage::{StdFs, SyncPolicy};

use crate::binary::Encoding;
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

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_arg(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
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
        write: WriteArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Print KEY's value (raw bytes on stdout). Exit 1 when absent.
    Get {
        key: String,
        /// Print the version, a tab and the value, instead of the value alone.
        #[arg(long)]
        with_version: bool,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Print the keys starting with PREFIX and their values, in key order, one `KEY<TAB>VALUE`
    /// per line (`--json`: an array). Fans out to every shard and merges; each shard is read
    /// at the consistency asked, but the shards at different moments (not a snapshot of the
    /// whole store: docs/sharding.md). Exit 0 even when nothing matches.
    Scan {
        /// The prefix; empty ("") for every key.
        prefix: String,
        /// At most this many keys (1..=10000); the rest are left out and said so on stderr.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=i64::from(ringleader_protocol::message::MAX_SCAN_LIMIT)))]
        limit: u32,
        #[command(flatten)]
        read: ReadArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Delete KEY. Exit 1 when it did not exist.
    Delete {
        key: String,
        #[command(flatten)]
        write: WriteArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Set KEY to NEW if an expectation holds (`-` reads NEW from stdin). Prints the new
    /// version. Exit 1 on mismatch.
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
        write: WriteArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Drop or delay the peer (Raft) traffic of a running cluster's nodes, for experiments:
    /// partition, isolate, delay, heal, show. The nodes must run with --allow-faults; client
    /// traffic is never touched. See docs/faults.md.
    Fault(crate::fault::FaultArgs),
    /// Check a history for linearizability (JSONL, or Knossos EDN / Porcupine kv files). Exit 0
    /// yes, 1 no, 2 malformed or empty, 3 unknown.
    Check(crate::verify::CheckArgs),
    /// Run the deterministic simulation of a cluster under faults and check its history.
    Sim(crate::verify::SimArgs),
    /// Drive a running cluster with concurrent clients (YCSB workloads A, B, C, or reads or
    /// writes only); print throughput and latency percentiles, reads and writes apart.
    Bench(crate::bench::BenchArgs),
    /// Every node's own view (role, term, leader, commit, applied and last index); a node that
    /// does not answer is shown as down, with why. Exit 0 healthy, 1 degraded (no leader, a node
    /// down, or a node lagging), 2 no node answers: usable as a health check.
    Status {
        /// A node whose applied index trails the leader's commit index by more than this many
        /// entries counts as lagging (degraded), as does one the leader reports as lagging.
        #[arg(long, default_value_t = DEFAULT_MAX_LAG_ENTRIES)]
        max_lag_entries: u64,
        #[command(flatten)]
        target: Target,
    },
}

/// `status`: a node this far behind the leader's commit index is degraded. A follower that
/// keeps up trails by a few batches at most; one that missed a snapshot's worth (the default
/// `--snapshot-every-entries` is 10,000) or more is catching up or stuck.
const DEFAULT_MAX_LAG_ENTRIES: u64 = 1_000;

/// `status`: a voter missing from `--endpoints` counts as down when the leader has not heard from
/// it for this long (heartbeats go every tick, 50 ms by default; elections start after 0.5-1 s).
const NOT_HEARD_MS: u64 = 2_000;

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start a local cluster as child processes and watch it; Ctrl-C stops it. Rerun to recover
    /// from DIR.
    Up(cluster::UpArgs),
    /// Stop every node of the cluster in DIR (the `up` supervisor, and nodes started with `start`).
    Down(cluster::DirArgs),
    /// Stop one node of the cluster in DIR (gracefully, or with --kill as a crash).
    Stop(cluster::StopArgs),
    /// Start one node of the cluster in DIR again, with the arguments `up` gave it.
    Start(cluster::StartArgs),
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
    #[arg(long, default_value = "127.0.0.1:7001", value_parser = parse_address)]
    listen: String,
    /// Every node as ID=ADDR, comma-separated, this node included. Omit for a single node.
    #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
    peers: Vec<(u64, String)>,
    #[command(flatten)]
    shape: ShapeArgs,
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
    /// Entries a snapshot keeps behind it in the log, so that a follower that fell at most this
    /// far behind catches up from the log instead of receiving the whole snapshot (0: none).
    #[arg(long, default_value_t = 5_000)]
    log_tail_entries: u64,
    /// Start even though the log is damaged (the node refused to start and said so): cut the log
    /// at the damage and re-fetch the rest from the leader. Until it has it back, the node does
    /// not vote or campaign. Needs the other nodes to form a quorum. See docs/storage.md.
    #[arg(long)]
    repair: bool,
    /// A file holding the secret every node of the cluster shares (at least 16 bytes; peers
    /// prove they know it before they may speak Raft). Required with --peers; `cluster up`
    /// generates one in its data directory.
    #[arg(long, env = "RINGLEADER_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Accept `ringleader fault` rules (drop or delay this node's peer traffic) from an operator
    /// who proves knowledge of the cluster secret. For experiments only; off by default.
    #[arg(long)]
    allow_faults: bool,
}

/// How the key space is sharded over the nodes (docs/sharding.md). Every node of a cluster
/// must be started with the same values; a data directory keeps the ring it was created with.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct ShapeArgs {
    /// Shards (Raft groups) the key space is cut into by consistent hashing. Default: 1 when
    /// every node holds a replica, else two per node (so every node leads some).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(ringleader_protocol::ring::MAX_SHARDS)))]
    pub shards: Option<u32>,
    /// Replicas of each shard, on distinct nodes. Default: every node with one shard (the
    /// single-group cluster), else 3 (or every node, if fewer).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub replicas: Option<u32>,
}

impl ShapeArgs {
    /// (shards, replicas) for a cluster of `nodes` nodes.
    pub fn resolve(self, nodes: usize) -> Result<(u32, u32)> {
        let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
        let replicas = match (self.shards, self.replicas) {
            (_, Some(replicas)) => replicas,
            (None | Some(1), None) => nodes,
            (Some(_), None) => nodes.min(ringleader_protocol::ring::DEFAULT_REPLICAS),
        };
        if replicas > nodes {
            bail!("--replicas {replicas} needs as many nodes; the cluster has {nodes}");
        }
        let shards = self
            .shards
            .unwrap_or(if replicas < nodes { 2 * nodes } else { 1 });
        Ok((shards, replicas))
    }
}

/// How fresh a read must be (docs/consistency.md: each level's guarantee, price and anomaly).
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
enum Consistency {
    /// The leader confirms it still leads (a heartbeat round), then answers: never stale.
    Linearizable,
    /// The leader answers alone while its lease holds: no round trip; assumes the nodes'
    /// clocks drift less than the lease margin (a round trip is used when the lease lapsed).
    Lease,
    /// Any replica that has applied what this client saw (read-your-writes, monotonic reads;
    /// a one-shot CLI call has seen nothing, so any replica qualifies).
    Session,
    /// Whatever the contacted replica has applied: answers while that replica is reachable,
    /// even cut off from the leader; possibly stale (see --max-staleness).
    Stale,
}

#[derive(Args)]
struct ReadArgs {
    /// Read consistency.
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    consistency: Consistency,
    /// With `--consistency stale`: fail (exit 2) rather than answer with state that may be
    /// older than this (e.g. 500ms, 2s).
    #[arg(long, value_parser = parse_timeout)]
    max_staleness: Option<Duration>,
}

impl ReadArgs {
    fn level(&self) -> Result<ReadLevel> {
        if self.max_staleness.is_some() && self.consistency != Consistency::Stale {
            bail!("--max-staleness applies to --consistency stale only");
        }
        Ok(match self.consistency {
            Consistency::Linearizable => ReadLevel::Linearizable,
            Consistency::Lease => ReadLevel::Lease,
            Consistency::Session => ReadLevel::Session,
            Consistency::Stale => ReadLevel::Stale {
                max_staleness: self.max_staleness,
            },
        })
    }
}

/// When a write is acknowledged.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
enum Ack {
    /// Once durable on a majority and applied: survives any minority of crashes.
    Majority,
    /// Once every replica has applied it; a clear error (exit 2) when one is down, though the
    /// write still commits.
    All,
    /// Once durable on the leader alone: faster, and LOST if that leader dies before
    /// replicating it. Puts only.
    Leader,
}

#[derive(Args)]
struct WriteArgs {
    /// When the write is acknowledged.
    #[arg(long, value_enum, default_value_t = Ack::Majority)]
    ack: Ack,
}

impl WriteArgs {
    fn ack(&self) -> WriteAck {
        match self.ack {
            Ack::Majority => WriteAck::Majority,
            Ack::All => WriteAck::All,
            Ack::Leader => WriteAck::Leader,
        }
    }
}

#[derive(Args)]
struct Target {
    /// Node addresses (HOST:PORT), comma-separated; any node will do.
    #[arg(long, env = "RINGLEADER_ENDPOINTS", default_value = DEFAULT_ENDPOINTS, value_delimiter = ',', value_parser = parse_address)]
    endpoints: Vec<String>,
    /// Give up after this long: milliseconds, or with a unit (500ms, 5s).
    #[arg(long = "timeout", visible_alias = "timeout-ms", env = "RINGLEADER_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    timeout: Duration,
    /// Print the result as one JSON object on stdout (with the reply's consistency receipt).
    #[arg(long)]
    json: bool,
    /// Print the reply's consistency receipt on stderr: the level served, by which node, the
    /// term and log index it reflects, and for stale reads how stale it may be.
    #[arg(short, long)]
    verbose: bool,
    /// Keys and values (arguments, stdin and `get`'s output) are hexadecimal.
    #[arg(long, conflicts_with = "base64")]
    hex: bool,
    /// Keys and values (arguments, stdin and `get`'s output) are base64.
    #[arg(long)]
    base64: bool,
    /// Talk to the one node in --endpoints and no other: no leader discovery, no redirects (a
    /// "not the leader" answer is an error, exit 2), as a client stuck on one side of a
    /// partition would.
    #[arg(long)]
    pin: bool,
}

impl Target {
    fn client(&self) -> Result<Client<TokioConnector>> {
        if self.pin && self.endpoints.len() != 1 {
            bail!(
                "--pin needs exactly one address in --endpoints (or RINGLEADER_ENDPOINTS), not {}",
                self.endpoints.len()
            );
        }
        let mut config = ClientConfig::new(self.endpoints.clone());
        config.request_timeout = self.timeout;
        config.pinned = self.pin;
        Ok(Client::new(config)?)
    }

    /// With `-v`, the receipt on stderr.
    fn show_receipt(&self, receipt: Option<&Receipt>) {
        if self.verbose {
            match receipt {
                Some(receipt) => eprintln!("{}", describe_receipt(receipt)),
                None => eprintln!("no receipt"),
            }
        }
    }

    fn encoding(&self) -> Encoding {
        match (self.hex, self.base64) {
            (true, _) => Encoding::Hex,
            (_, true) => Encoding::Base64,
            _ => Encoding::Raw,
        }
    }

    /// A key or value from the command line: `-` (where allowed) reads stdin; `--hex` or
    /// `--base64` decode it.
    fn bytes(&self, what: &str, text: &str, stdin_allowed: bool) -> Result<Vec<u8>> {
        let raw = if stdin_allowed && text == "-" {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .with_context(|| format!("reading the {what} from stdin"))?;
            bytes
        } else {
            text.as_bytes().to_vec()
        };
        self.encoding()
            .decode(&raw)
            .with_context(|| format!("the {what} {text:?}"))
    }

    /// Bytes for a JSON document: a string when they are text (or an encoding was asked for),
    /// else base64 under a `_base64` name.
    fn json_bytes(&self, name: &str, bytes: &[u8]) -> (String, serde_json::Value) {
        match (self.encoding(), std::str::from_utf8(bytes)) {
            (Encoding::Raw, Ok(text)) => (name.to_string(), json!(text)),
            (Encoding::Raw, Err(_)) => (
                format!("{name}_base64"),
                json!(crate::binary::encode_base64(bytes)),
            ),
            (encoding, _) => (
                name.to_string(),
                json!(String::from_utf8_lossy(&encoding.encode(bytes))),
            ),
        }
    }
}

/// `HOST:PORT` with a port in 1..=65535: `notanaddress`, `http://host:1`, `:99999` are refused.
pub fn parse_address(text: &str) -> std::result::Result<String, String> {
    if text.contains("://") {
        return Err("give HOST:PORT without a scheme (not a URL)".into());
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return match addr.port() {
            0 => Err("the port must be in 1-65535".into()),
            _ => Ok(text.to_string()),
        };
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected HOST:PORT".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("the port {port:?} is not a number in 1-65535"))?;
    if port == 0 {
        return Err("the port must be in 1-65535".into());
    }
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    if !valid_host {
        return Err(format!("{host:?} is not a host name or IP address"));
    }
    Ok(text.to_string())
}

/// `ID=HOST:PORT` for `serve --peers`.
fn parse_peer(text: &str) -> std::result::Result<(u64, String), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| "expected ID=HOST:PORT".to_string())?;
    let id: u64 = id
        .parse()
        .map_err(|_| format!("the node id {id:?} is not a number"))?;
    Ok((id, parse_address(addr)?))
}

/// `1500`, `1500ms`, `2s`, `1.5s`.
pub(crate) fn parse_timeout(text: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (milliseconds, or 500ms, 2s, 1.5s)");
    let duration = if let Some(ms) = text.strip_suffix("ms") {
        Duration::from_millis(ms.trim().parse().map_err(|_| bad())?)
    } else if let Some(seconds) = text.strip_suffix('s') {
        let seconds: f64 = seconds.trim().parse().map_err(|_| bad())?;
        Duration::try_from_secs_f64(seconds).map_err(|_| bad())?
    } else {
        Duration::from_millis(text.trim().parse().map_err(|_| bad())?)
    };
    if duration.is_zero() {
        return Err("the timeout must be above zero".into());
    }
    Ok(duration)
}

/// Logs go to stderr; colour codes only when stderr is a terminal, so a node's log file (under
/// `cluster up`) stays plain text.
fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A number that differs every time a node starts: the clock's nanoseconds and the process id
/// (Raft only needs this life's to differ from the last one's).
fn boot_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Builds the voter map from `--peers`; a single node when it is empty.
fn parse_peers(id: u64, listen: &str, peers: &[(u64, String)]) -> Result<BTreeMap<u64, String>> {
    let mut map = BTreeMap::new();
    for (peer_id, addr) in peers {
        if map.insert(*peer_id, addr.clone()).is_some() {
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
pub fn run_sync(cli: Cli) -> Result<Result<ExitCode>, Box<Cli>> {
    match cli.command {
        Command::Check(args) => Ok(crate::verify::check_command(args)),
        Command::Sim(args) => Ok(crate::verify::sim_command(args)),
        Command::Cluster {
            command: ClusterCommand::Stop(args),
        } => Ok(cluster::stop(args)),
        Command::Cluster {
            command: ClusterCommand::Down(args),
        } => Ok(cluster::down(args)),
        command => Err(Box::new(Cli { command, ..cli })),
    }
}

/// Stdout for results: every write reports its error (a closed pipe included) instead of
/// panicking as `println!` does. It takes the stdout lock per write only, never across an
/// `.await` (a task on another thread printing would otherwise wait forever).
struct Out;

impl Out {
    fn new() -> Self {
        Out
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(bytes)?;
        stdout.flush()?;
        Ok(())
    }

    fn line(&mut self, text: impl std::fmt::Display) -> Result<()> {
        self.bytes(format!("{text}\n").as_bytes())
    }

    fn json(&mut self, value: &serde_json::Value) -> Result<()> {
        self.line(value)
    }
}

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let mut out = Out::new();
    match cli.command {
        Command::Serve(args) => {
            init_tracing(cli.log_format);
            serve(args).await
        }
        Command::Cluster {
            command: ClusterCommand::Up(args),
        } => cluster::up(args, cli.log_format).await,
        Command::Cluster {
            command: ClusterCommand::Start(args),
        } => cluster::start(args).await,
        Command::Put {
            key,
            value,
            write,
            target,
        } => {
            let key_bytes = target.bytes("key", &key, false)?;
            let value = target.bytes("value", &value, true)?;
            let written = target
                .client()?
                .put_with(key_bytes.clone(), value, write.ack())
                .await?;
            target.show_receipt(written.receipt.as_ref());
            if target.json {
                let (name, key) = target.json_bytes("key", &key_bytes);
                out.json(&json!({
                    name: key, "version": written.version,
                    "receipt": receipt_json(written.receipt.as_ref()),
                }))?;
            } else {
                out.line(written.version)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Get {
            key,
            with_version,
            read,
            target,
        } => {
            let key_bytes = target.bytes("key", &key, true)?;
            let answer = target
                .client()?
                .read(key_bytes.clone(), read.level()?)
                .await?;
            target.show_receipt(answer.receipt.as_ref());
            let found = answer.value;
            if target.json {
                let (key_name, key_json) = target.json_bytes("key", &key_bytes);
                let mut doc = json!({
                    key_name: key_json, "found": found.is_some(),
                    "receipt": receipt_json(answer.receipt.as_ref()),
                });
                if let Some(found) = &found {
                    let (name, value) = target.json_bytes("value", &found.value);
                    doc["version"] = json!(found.version);
                    doc[name] = value;
                }
                out.json(&doc)?;
            } else if let Some(found) = &found {
                let mut bytes = Vec::new();
                if with_version {
                    bytes.extend_from_slice(format!("{}\t", found.version).as_bytes());
                }
                let encoding = target.encoding();
                bytes.extend_from_slice(&encoding.encode(&found.value));
                if std::io::stdout().is_terminal() || with_version || encoding != Encoding::Raw {
                    bytes.push(b'\n');
                }
                out.bytes(&bytes)?;
            }
            Ok(if found.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Scan {
            prefix,
            limit,
            read,
            target,
        } => {
            let prefix_bytes = target.bytes("prefix", &prefix, false)?;
            let scanned = target
                .client()?
                .scan(prefix_bytes, limit as usize, read.level()?)
                .await?;
            let encoding = target.encoding();
            if target.json {
                let entries: Vec<serde_json::Value> = scanned
                    .entries
                    .iter()
                    .map(|(key, found)| {
                        let (key_name, key_json) = target.json_bytes("key", key);
                        let (value_name, value_json) = target.json_bytes("value", &found.value);
                        json!({key_name: key_json, value_name: value_json, "version": found.version})
                    })
                    .collect();
                out.json(&json!({"entries": entries, "truncated": scanned.truncated}))?;
            } else {
                for (key, found) in &scanned.entries {
                    let mut line = encoding.encode(key);
                    line.push(b'\t');
                    line.extend_from_slice(&encoding.encode(&found.value));
                    line.push(b'\n');
                    out.bytes(&line)?;
                }
            }
            if scanned.truncated {
                eprintln!("(more keys after the first {limit}: raise --limit)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { key, write, target } => {
            let key_bytes = target.bytes("key", &key, true)?;
            let (existed, receipt) = target
                .client()?
                .delete_with(key_bytes.clone(), write.ack())
                .await?;
            target.show_receipt(receipt.as_ref());
            if target.json {
                let (name, key) = target.json_bytes("key", &key_bytes);
                out.json(&json!({
                    name: key, "existed": existed, "receipt": receipt_json(receipt.as_ref()),
                }))?;
            }
            Ok(if existed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Cas {
            key,
            new,
            expect_value,
            expect_version,
            expect_absent,
            write,
            target,
        } => {
            let expect = match (expect_value, expect_version, expect_absent) {
                (Some(value), None, false) => {
                    Expect::Value(target.bytes("expected value", &value, false)?)
                }
                (None, Some(version), false) => Expect::Version(version),
                (None, None, true) => Expect::Absent,
                _ => bail!(
                    "cas needs exactly one of --expect-value, --expect-version, --expect-absent"
                ),
            };
            let key_bytes = target.bytes("key", &key, false)?;
            let new = target.bytes("new value", &new, true)?;
            let (outcome, receipt) = target
                .client()?
                .cas_with(key_bytes.clone(), expect, new, write.ack())
                .await?;
            target.show_receipt(receipt.as_ref());
            let (key_name, key_json) = target.json_bytes("key", &key_bytes);
            match outcome {
                CasOutcome::Swapped { version } => {
                    if target.json {
                        out.json(&json!({
                            key_name: key_json, "swapped": true, "version": version,
                            "receipt": receipt_json(receipt.as_ref()),
                        }))?;
                    } else {
                        out.line(version)?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                CasOutcome::Mismatch { current } => {
                    if target.json {
                        out.json(&json!({
                            key_name: key_json,
                            "swapped": false,
                            "current_version": current.as_ref().map(|c| c.version),
                            "receipt": receipt_json(receipt.as_ref()),
                        }))?;
                    } else {
                        match current {
                            Some(current) => {
                                eprintln!("mismatch: current version {}", current.version)
                            }
                            None => eprintln!("mismatch: the key is absent"),
                        }
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Status {
            max_lag_entries,
            target,
        } => status(&target, max_lag_entries, &mut out).await,
        Command::Bench(args) => {
            crate::bench::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fault(args) => crate::fault::run(args).await,
        Command::Check(_) | Command::Sim(_) => bail!("check and sim run outside the async runtime"),
        Command::Cluster { .. } => bail!("cluster stop and down run outside the async runtime"),
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let peers = parse_peers(args.id, &args.listen, &args.peers)?;
    if let Some(listed) = peers.get(&args.id).filter(|listed| **listed != args.listen) {
        bail!(
            "--listen {} differs from this node's address in --peers ({listed})",
            args.listen
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    // One node per data directory: the lock is released when the process exits, however it exits.
    let lock_path = args.dir.join("LOCK");
    let mut lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!("{} is in use by another running node", args.dir.display());
    }
    // The holder's pid, for `cluster down`/`stop` to find a node started by hand (the lock, not
    // this number, says whether it is still running).
    lock.set_len(0)
        .and_then(|()| writeln!(lock, "{}", std::process::id()))
        .with_context(|| format!("writing {}", lock_path.display()))?;
    if args.repair && peers.len() < 3 {
        bail!(
            "--repair re-fetches what a damaged log lost from the other replicas, and needs at \
             least two others to form a quorum without this node; with {} node(s) there is \
             nothing to fetch it from: restore the data directory from a backup",
            peers.len()
        );
    }
    let (shards, replicas) = args.shape.resolve(peers.len())?;
    let mut config = NodeConfig::new(args.id, peers, args.dir.clone(), StdFs::shared())
        .with_shards(shards, replicas);
    config.boot_id = boot_id();
    config.wal.sync = parse_sync(&args.wal_sync)?;
    config.wal.repair = args.repair;
    config.tick = Duration::from_millis(args.tick_ms.max(1));
    config.snapshot_every_entries = args.snapshot_every_entries.max(1);
    config.net.cluster_secret =
        ringleader_node::auth::load_secret(args.cluster_secret_file.as_deref())?;
    config.log_tail_entries = args.log_tail_entries;
    config.net.allow_faults = args.allow_faults;
    if args.allow_faults {
        tracing::warn!("--allow-faults: an operator with the cluster secret may drop or delay this node's peer traffic (`ringleader fault`)");
    }
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

/// Why a node did not answer `status`, in a few words.
fn why_down(error: &ringleader_client::Error) -> String {
    match error {
        ringleader_client::Error::Unreachable { last_problem } => {
            // "connect to ADDR: Connection refused (os error 111)" -> "connection refused"
            let reason = last_problem
                .rsplit_once(": ")
                .map_or(last_problem.as_str(), |(_, reason)| reason);
            let reason = reason.split(" (os error").next().unwrap_or(reason);
            reason.to_lowercase()
        }
        ringleader_client::Error::Timeout { timeout, .. } => {
            format!("no answer within {} ms", timeout.as_millis())
        }
        other => other.to_string(),
    }
}

/// A receipt in words: `served stale by node 3 (term 4, index 118), at most 350 ms stale`.
fn describe_receipt(receipt: &Receipt) -> String {
    let mut text = format!(
        "served {} by node {} (term {}, index {})",
        served_name(receipt.served_at),
        receipt.node,
        receipt.term,
        receipt.index
    );
    match (receipt.served_at, receipt.staleness_bound_ms) {
        (ServedAt::Stale | ServedAt::Session, Some(ms)) => {
            text.push_str(&format!(", at most {ms} ms stale"))
        }
        (ServedAt::Stale | ServedAt::Session, None) => {
            text.push_str(", staleness unbounded (the replica has not heard a leader)")
        }
        _ => {}
    }
    text
}

fn served_name(served_at: ServedAt) -> &'static str {
    match served_at {
        ServedAt::Linearizable => "linearizable",
        ServedAt::Lease => "lease",
        ServedAt::Session => "session",
        ServedAt::Stale => "stale",
        ServedAt::Majority => "majority",
        ServedAt::All => "all",
        ServedAt::Leader => "leader",
    }
}

/// A receipt as JSON (`null` when the reply had none).
fn receipt_json(receipt: Option<&Receipt>) -> serde_json::Value {
    match receipt {
        None => serde_json::Value::Null,
        Some(receipt) => json!({
            "served": served_name(receipt.served_at),
            "node": receipt.node,
            "term": receipt.term,
            "index": receipt.index,
            "staleness_bound_ms": receipt.staleness_bound_ms,
            "forwarded_by": receipt.forwarded_by,
        }),
    }
}

/// One group as the nodes that answered `status` see it: each hosting node's view, and the
/// leader among them (that of the highest term: a deposed leader that has not heard yet is
/// stale).
struct GroupView<'a> {
    group: GroupId,
    views: Vec<(&'a NodeStatus, &'a GroupStatus)>,
    leader: Option<(&'a NodeStatus, &'a GroupStatus)>,
}

/// `status`: asks every endpoint for its own view, then judges the whole: every group must
/// have a leader, and no replica may lag or be unheard.
async fn status(target: &Target, max_lag_entries: u64, out: &mut Out) -> Result<ExitCode> {
    let client = target.client()?;
    let mut answers: Vec<(String, std::result::Result<NodeStatus, String>)> = Vec::new();
    let queries = target.endpoints.iter().map(|addr| {
        let client = client.clone();
        async move { (addr.clone(), client.status_of(addr).await) }
    });
    // Concurrently: a node that does not answer costs one timeout, not one per node.
    for (addr, answer) in futures::future::join_all(queries).await {
        answers.push((addr, answer.map_err(|e| why_down(&e))));
    }
    let up: Vec<&NodeStatus> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .collect();
    // The ring of the newest epoch any node reports (they agree unless one is misconfigured).
    let ring = up
        .iter()
        .map(|node| &node.ring)
        .max_by_key(|ring| ring.epoch);
    let sharded = ring.is_some_and(|ring| ring.shards > 1);
    let group_ids: Vec<GroupId> = match ring {
        Some(ring) => (0..u64::from(ring.shards)).collect(),
        None => vec![ONLY_GROUP],
    };
    let groups: Vec<GroupView<'_>> = group_ids
        .iter()
        .map(|&group| {
            let views: Vec<_> = up
                .iter()
                .filter_map(|node| Some((*node, node.group(group)?)))
                .collect();
            let leader = views
                .iter()
                .filter(|(_, g)| g.role == "leader")
                .max_by_key(|(_, g)| g.term)
                .copied();
            GroupView {
                group,
                views,
                leader,
            }
        })
        .collect();
    // Problems of a group are named with it when there are several.
    let prefix = |group: GroupId| {
        if sharded {
            format!("group {group}: ")
        } else {
            String::new()
        }
    };
    let mut problems: Vec<String> = Vec::new();
    if up.is_empty() {
        problems.push("no node answers".to_string());
    }
    for (addr, answer) in &answers {
        if let Err(why) = answer {
            problems.push(format!("the node at {addr} is down: {why}"));
        }
    }
    // node id -> group -> (lag in entries, lagging) as its group's leader sees it.
    let mut lags: BTreeMap<(u64, GroupId), (Option<u64>, bool)> = BTreeMap::new();
    for view in groups.iter().filter(|_| !up.is_empty()) {
        let Some((leader_node, leader)) = view.leader else {
            problems.push(format!("{}no leader", prefix(view.group)));
            continue;
        };
        for (node, group) in &view.views {
            let seen = leader.replicas.iter().find(|r| r.node == node.id);
            let lag_entries = leader.commit_index.saturating_sub(group.applied_index);
            let lagging = seen.is_some_and(|r| r.lagging) || lag_entries > max_lag_entries;
            if lagging {
                problems.push(format!(
                    "{}node {} is lagging: applied {} of the leader's commit {}",
                    prefix(view.group),
                    node.id,
                    group.applied_index,
                    leader.commit_index
                ));
            }
            lags.insert((node.id, view.group), (Some(lag_entries), lagging));
        }
        // Replicas the leader knows of that no endpoint reached (not in --endpoints): judged by
        // what the leader reports of them.
        let unreached = leader.replicas.iter().filter(|r| {
            r.node != leader_node.id && !view.views.iter().any(|(n, _)| n.id == r.node)
        });
        for replica in unreached {
            match replica.last_heard_ms {
                Some(ms) if ms <= NOT_HEARD_MS => {}
                Some(ms) => problems.push(format!(
                    "{}node {} is not heard by the leader for {ms} ms",
                    prefix(view.group),
                    replica.node
                )),
                None => problems.push(format!(
                    "{}node {} has not been heard by the leader",
                    prefix(view.group),
                    replica.node
                )),
            }
            if replica.lagging {
                problems.push(format!(
                    "{}node {} is lagging (the leader says)",
                    prefix(view.group),
                    replica.node
                ));
            }
        }
    }
    let group0 = &groups[0];
    let mut nodes = Vec::new();
    for (addr, answer) in &answers {
        let node = match answer {
            Err(why) => {
                nodes.push(json!({"addr": addr, "up": false, "error": why}));
                continue;
            }
            Ok(node) => node,
        };
        let groups_json: Vec<serde_json::Value> = node
            .groups
            .iter()
            .map(|g| {
                json!({
                    "group": g.group, "range": g.range.to_string(), "epoch": g.epoch,
                    "role": g.role, "term": g.term, "leader": g.leader,
                    "commit_index": g.commit_index, "applied_index": g.applied_index,
                    "last_index": g.last_index, "snapshot_index": g.snapshot_index,
                    "keys": g.keys,
                })
            })
            .collect();
        // The top-level figures of a node are its group 0's (null if it hosts no replica of
        // it): with one shard, they are the whole story.
        let s = node.group(ONLY_GROUP);
        let seen_by_leader = group0
            .leader
            .and_then(|(_, l)| l.replicas.iter().find(|r| r.node == node.id));
        let (lag_entries, lagging) = lags
            .get(&(node.id, ONLY_GROUP))
            .copied()
            .unwrap_or((None, false));
        let led: Vec<GroupId> = node
            .groups
            .iter()
            .filter(|g| g.role == "leader")
            .map(|g| g.group)
            .collect();
        nodes.push(json!({
            "addr": addr, "up": true, "id": node.id, "role": s.map(|s| &s.role),
            "term": s.map(|s| s.term), "leader": s.and_then(|s| s.leader),
            "commit_index": s.map(|s| s.commit_index),
            "applied_index": s.map(|s| s.applied_index), "last_index": s.map(|s| s.last_index),
            "snapshot_index": s.map(|s| s.snapshot_index), "log_bytes": node.log_bytes,
            "log_batches": node.log_batches, "log_group_writes": node.log_group_writes,
            "keys": s.map(|s| s.keys),
            "match_index": seen_by_leader.map(|r| r.match_index),
            "last_heard_ms": seen_by_leader.and_then(|r| r.last_heard_ms),
            "lag_entries": lag_entries, "lagging": lagging,
            "leads": led,
            "groups": groups_json,
        }));
    }
    // Built once: a ring is thousands of hashed tokens.
    let placement = ring.and_then(|ring| ringleader_protocol::ring::Ring::new(ring.clone()).ok());
    let shards: Vec<serde_json::Value> = groups
        .iter()
        .map(|view| {
            let placed = placement
                .as_ref()
                .and_then(|ring| ring.shard(view.group).cloned());
            let newest = view.leader.or_else(|| view.views.first().copied());
            json!({
                "group": view.group,
                "range": placed.as_ref().map(|p| p.range.to_string()),
                "replicas": placed.as_ref().map(|p| p.replicas.clone()),
                "preferred_leader": placed.as_ref().map(|p| p.preferred_leader),
                "leader": view.leader.map(|(node, _)| node.id),
                "term": newest.map(|(_, g)| g.term),
                "applied_index": newest.map(|(_, g)| g.applied_index),
                "keys": newest.map(|(_, g)| g.keys),
            })
        })
        .collect();
    let leader = group0.leader;
    let up_terms = group0.views.iter().map(|(_, g)| g.term).max();
    let (health, code) = if up.is_empty() {
        ("error", 2)
    } else if problems.is_empty() {
        ("healthy", 0)
    } else {
        ("degraded", 1)
    };
    if target.json {
        out.json(&json!({
            "health": health,
            "problems": problems,
            "leader": leader.map(|(node, _)| node.id),
            "term": leader.map(|(_, g)| g.term).or(up_terms),
            "commit_index": leader.map(|(_, g)| g.commit_index),
            "epoch": ring.map(|ring| ring.epoch),
            "shards": shards,
            "nodes": nodes,
        }))?;
    } else if sharded {
        print_shards(&nodes, &shards, ring, out)?;
        match problems.is_empty() {
            true => out.line(health)?,
            false => out.line(format!("{health}: {}", problems.join("; ")))?,
        }
    } else {
        out.line(format!(
            "{:<4} {:<22} {:<9} {:>6} {:>6} {:>10} {:>10} {:>10}  {}",
            "NODE", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "HEARD"
        ))?;
        for node in &nodes {
            let addr = node["addr"].as_str().unwrap_or_default();
            if node["up"] == false {
                out.line(down_line(node))?;
                continue;
            }
            let number = |name: &str| {
                node[name]
                    .as_u64()
                    .map_or("-".to_string(), |n| n.to_string())
            };
            let heard = match (node["role"].as_str(), node["last_heard_ms"].as_u64()) {
                (Some("leader"), _) => "-".to_string(),
                (_, Some(ms)) => format!("{ms} ms ago"),
                (_, None) => "-".to_string(),
            };
            out.line(format!(
                "{:<4} {:<22} {:<9} {:>6} {:>6} {:>10} {:>10} {:>10}  {}{}",
                number("id"),
                addr,
                node["role"].as_str().unwrap_or_default(),
                number("term"),
                number("leader"),
                number("commit_index"),
                number("applied_index"),
                number("last_index"),
                heard,
                if node["lagging"] == true {
                    "  LAGGING"
                } else {
                    ""
                },
            ))?;
        }
        match problems.is_empty() {
            true => out.line(health)?,
            false => out.line(format!("{health}: {}", problems.join("; ")))?,
        }
    }
    Ok(ExitCode::from(code))
}

/// A node that did not answer `status`, as a line of its table.
fn down_line(node: &serde_json::Value) -> String {
    format!(
        "{:<4} {:<22} DOWN: {}",
        "-",
        node["addr"].as_str().unwrap_or_default(),
        node["error"].as_str().unwrap_or_default()
    )
}

/// The human `status` of a sharded cluster: the nodes and what they lead, then the shards.
fn print_shards(
    nodes: &[serde_json::Value],
    shards: &[serde_json::Value],
    ring: Option<&ringleader_protocol::ring::RingSpec>,
    out: &mut Out,
) -> Result<()> {
    if let Some(ring) = ring {
        out.line(format!(
            "ring epoch {}: {} shards of {} replicas on {} nodes",
            ring.epoch,
            ring.shards,
            ring.replicas,
            ring.nodes.len()
        ))?;
    }
    out.line(format!(
        "{:<4} {:<22} {:>6} {:>6} {:>12}",
        "NODE", "ADDRESS", "GROUPS", "LEADS", "LOG BYTES"
    ))?;
    for node in nodes {
        let addr = node["addr"].as_str().unwrap_or_default();
        if node["up"] == false {
            out.line(down_line(node))?;
            continue;
        }
        let count = |name: &str| node[name].as_array().map_or(0, Vec::len);
        out.line(format!(
            "{:<4} {:<22} {:>6} {:>6} {:>12}",
            node["id"].as_u64().unwrap_or_default(),
            addr,
            count("groups"),
            count("leads"),
            node["log_bytes"].as_u64().unwrap_or_default(),
        ))?;
    }
    out.line(format!(
        "{:<5} {:<37} {:<12} {:>6} {:>6} {:>10} {:>8}",
        "SHARD", "HASH RANGE", "REPLICAS", "LEADER", "TERM", "APPLIED", "KEYS"
    ))?;
    let text = |value: &serde_json::Value| match value.as_u64() {
        Some(n) => n.to_string(),
        None => "-".to_string(),
    };
    for shard in shards {
        let replicas: Vec<String> = shard["replicas"]
            .as_array()
            .map(|r| r.iter().map(text).collect())
            .unwrap_or_default();
        out.line(format!(
            "{:<5} {:<37} {:<12} {:>6} {:>6} {:>10} {:>8}",
            text(&shard["group"]),
            shard["range"].as_str().unwrap_or("-"),
            replicas.join(","),
            text(&shard["leader"]),
            text(&shard["term"]),
            text(&shard["applied_index"]),
            text(&shard["keys"]),
        ))?;
    }
    Ok(())
}
