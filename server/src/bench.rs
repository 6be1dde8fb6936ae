//! `ringleader bench`: a YCSB-style load driver. It drives a running cluster with concurrent
//! clients, for a while (`--duration`) or for a number of operations (`--ops`), and reports
//! throughput and latency percentiles (HDR histograms) for reads and writes apart and together.
//! The figures of docs/consistency.md come from it.
//!
//! Workloads are YCSB's core ones — A (50% reads, 50% updates), B (95/5), C (reads only) — plus
//! `read` and `write` (one kind only). Reads go at `--consistency`, writes are acknowledged as
//! `--ack`. Keys are drawn `--distribution uniform|zipfian` from one seeded generator per client
//! (see [`distribution`]), so two runs with the same `--seed` and `--clients` draw the same keys.
//!
//! Each client is a task with its own [`Client`] (its own connections and session) issuing one
//! operation at a time; `--load` first writes every key once, with the same clients, so that
//! reads find values. Latency is measured per operation from call to answer, retries included;
//! failed operations are counted apart and left out of the percentiles. With `--ops N` exactly
//! N operations are attempted in total (ok + failed = N): clients claim them from one counter.

pub mod distribution;
mod etcd;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use ringleader_client::{Client, ClientConfig, ReadLevel, TokioConnector, WriteAck};
use serde_json::{json, Value};

use distribution::{KeyChooser, SplitMix64, YCSB_ZIPF_THETA};

/// What the operations are.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum Workload {
    /// YCSB A, update heavy: 50% reads, 50% updates.
    A,
    /// YCSB B, read mostly: 95% reads, 5% updates.
    B,
    /// YCSB C, read only: 100% reads.
    C,
    /// Reads (`get`) only, at `--consistency`.
    Read,
    /// Writes (`put`) only, acknowledged as `--ack`.
    Write,
}

impl Workload {
    /// The share of operations that are reads; the rest are writes.
    fn read_fraction(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C | Workload::Read => 1.0,
            Workload::Write => 0.0,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::Read => "read",
            Workload::Write => "write",
        }
    }
}

/// How keys are drawn.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// YCSB's scrambled zipfian: a few hot keys, spread over the key space.
    Zipfian,
}

/// Read levels, as on `get`.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum BenchConsistency {
    Linearizable,
    Lease,
    Session,
    Stale,
}

/// Write acknowledgements, as on `put`.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum BenchAck {
    Majority,
    All,
    Leader,
}

/// The seed when none is given: a fixed one, so that runs are comparable by default.
const DEFAULT_SEED: u64 = 1;

#[derive(Args)]
pub struct BenchArgs {
    /// The system to drive: ringleader, or etcd (bench/etcd.rs; a build with `--features etcd`).
    #[arg(long, value_enum, default_value_t = etcd::Target::Ringleader)]
    target: etcd::Target,
    /// Node addresses (HOST:PORT), comma-separated.
    #[arg(
        long,
        env = "RINGLEADER_ENDPOINTS",
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// a: 50% reads / 50% updates, b: 95/5, c: reads only (YCSB A, B, C); read or write: one
    /// kind only.
    #[arg(long, value_enum, default_value_t = Workload::Write)]
    workload: Workload,
    /// Concurrent clients, one operation at a time each.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Client libraries (each with its own connections) the clients share, round robin: with
    /// fewer connections than clients, several requests are in flight on one connection (as
    /// in an application with one `Client` and many tasks). Default: one per client.
    #[arg(long)]
    connections: Option<usize>,
    /// How long to run (after `--load`), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_timeout)]
    duration: Duration,
    /// Stop after this many operations in total (all clients together) instead of after
    /// `--duration`.
    #[arg(long, conflicts_with = "duration")]
    ops: Option<u64>,
    /// Distinct keys (`bench-00000000` and up).
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// How keys are drawn.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    /// The zipfian exponent θ, in (0, 1); larger is more skewed (`--distribution zipfian`).
    #[arg(long, default_value_t = YCSB_ZIPF_THETA)]
    zipf_theta: f64,
    /// Seed of the key and operation draws: the same seed and `--clients` draw the same keys.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Read level of the reads (workloads a, b, c, read).
    #[arg(long, value_enum, default_value_t = BenchConsistency::Linearizable)]
    consistency: BenchConsistency,
    /// Write acknowledgement of the writes (workloads a, b, write).
    #[arg(long, value_enum, default_value_t = BenchAck::Majority)]
    ack: BenchAck,
    /// Write every key once before measuring (with all the clients; the time it took is
    /// reported).
    #[arg(long)]
    load: bool,
    /// Print the result as one JSON object (and no progress bar).
    #[arg(long)]
    json: bool,
}

/// Latencies are recorded in microseconds, up to a minute, 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

/// How often the progress bar is redrawn (and its ops/s measured over).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// When the measured phase ends.
#[derive(Clone, Copy)]
enum Stop {
    After(Duration),
    AfterOps(u64),
}

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.target == etcd::Target::Etcd {
        return etcd::run(args).await;
    }
    if args.clients == 0 || args.keys == 0 {
        bail!("--clients and --keys must be above zero");
    }
    if args.ops == Some(0) {
        bail!("--ops must be above zero");
    }
    let connections = args.connections.unwrap_or(args.clients);
    if connections == 0 || connections > args.clients {
        bail!(
            "--connections must be between 1 and --clients ({})",
            args.clients
        );
    }
    let chooser = match args.distribution {
        Distribution::Uniform => KeyChooser::uniform(args.keys),
        Distribution::Zipfian => {
            KeyChooser::zipfian(args.keys, args.zipf_theta, args.seed).map_err(|e| anyhow!(e))?
        }
    };
    let stop = match args.ops {
        Some(ops) => Stop::AfterOps(ops),
        None => Stop::After(args.duration),
    };
    let show_progress = !args.json && std::io::stderr().is_terminal();
    let config = ClientConfig::new(args.endpoints.clone());
    let libraries = (0..connections)
        .map(|_| Client::new(config.clone()).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let clients: Vec<_> = (0..args.clients)
        .map(|worker| libraries[worker % connections].clone())
        .collect();

    let load_elapsed = if args.load {
        Some(load(&clients, args.keys, args.value_bytes, show_progress).await?)
    } else {
        None
    };

    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for (worker, client) in clients.iter().enumerate() {
        let worker = Worker {
            client: client.clone(),
            read_level: read_level(args.consistency),
            ack: write_ack(args.ack),
            value: vec![b'v'; args.value_bytes],
            ops: OpLoop::for_client(&args, &chooser, worker, &shared),
        };
        tasks.push(tokio::spawn(worker.drive()));
    }
    let progress = progress_bar(show_progress, stop);
    let deadline = match stop {
        Stop::After(duration) => Some(tokio::time::Instant::from_std(started + duration)),
        Stop::AfterOps(_) => None,
    };
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    ticker.tick().await; // The first tick is immediate.
    let mut last = (Instant::now(), 0u64);
    // Redraw until the run is over: the time is up, or every client has run out of operations
    // (`--ops`; or a client failed, which is reported below).
    loop {
        let time_up = match deadline {
            Some(deadline) => tokio::select! {
                biased;
                _ = tokio::time::sleep_until(deadline) => true,
                _ = ticker.tick() => false,
            },
            None => {
                ticker.tick().await;
                false
            }
        };
        let done = shared.completed.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
        last = (now, done);
        let elapsed = started.elapsed();
        match stop {
            Stop::After(duration) => {
                let shown = elapsed.min(duration);
                progress.set_position(shown.as_millis() as u64);
                progress.set_message(format!(
                    "{:.1}/{:.1} s · {done} ops · {rate:.0} ops/s",
                    shown.as_secs_f64(),
                    duration.as_secs_f64()
                ));
            }
            Stop::AfterOps(ops) => {
                progress.set_position(done);
                progress.set_message(format!(
                    "{done}/{ops} ops · {:.1} s · {rate:.0} ops/s",
                    elapsed.as_secs_f64()
                ));
            }
        }
        if time_up {
            shared.stop.store(true, Ordering::Release);
            break;
        }
        if tasks.iter().all(|task| task.is_finished()) {
            break;
        }
    }
    progress.finish_and_clear();
    let mut reads = new_histogram()?;
    let mut writes = new_histogram()?;
    // Measured to the last answer, not to the next progress tick.
    let mut finished = started;
    for task in tasks {
        let outcome = task.await.context("a bench client panicked")??;
        reads.add(outcome.reads)?;
        writes.add(outcome.writes)?;
        finished = finished.max(outcome.finished);
    }
    let elapsed_secs = finished.duration_since(started).as_secs_f64();
    let mut total = reads.clone();
    total.add(&writes)?;
    let failed = shared.failed.load(Ordering::Acquire);

    let report = Report {
        args: &args,
        chooser: &chooser,
        elapsed_secs,
        load_secs: load_elapsed.map(|d| d.as_secs_f64()),
        failed,
        reads: Figures::of(&reads, elapsed_secs),
        writes: Figures::of(&writes, elapsed_secs),
        total: Figures::of(&total, elapsed_secs),
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// Writes every key once, the clients taking keys from one counter; returns how long it took.
async fn load(
    clients: &[Arc<Client<TokioConnector>>],
    keys: u64,
    value_bytes: usize,
    show_progress: bool,
) -> Result<Duration> {
    let progress = if show_progress {
        ProgressBar::new(keys).with_style(style("loading {bar:40} {pos}/{len} keys · {elapsed}"))
    } else {
        ProgressBar::hidden()
    };
    let next_key = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients.len());
    for client in clients {
        let (client, next_key, progress) = (client.clone(), next_key.clone(), progress.clone());
        let value = vec![b'x'; value_bytes];
        tasks.push(tokio::spawn(async move {
            loop {
                let key = next_key.fetch_add(1, Ordering::Relaxed);
                if key >= keys {
                    return Ok::<(), anyhow::Error>(());
                }
                client
                    .put(key_name(key), value.clone())
                    .await
                    .with_context(|| format!("loading key {key}"))?;
                progress.inc(1);
            }
        }));
    }
    let mut outcome = Ok(());
    for task in &mut tasks {
        outcome = task
            .await
            .context("a loading client panicked")
            .and_then(|loaded| loaded);
        if outcome.is_err() {
            break;
        }
    }
    // One failed put ends the load: the other clients stop instead of loading on unseen.
    for task in &tasks {
        task.abort();
    }
    progress.finish_and_clear();
    outcome?;
    Ok(started.elapsed())
}

fn progress_bar(show: bool, stop: Stop) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let length = match stop {
        Stop::After(duration) => duration.as_millis() as u64,
        Stop::AfterOps(ops) => ops,
    };
    ProgressBar::new(length).with_style(style("{bar:40} {msg}"))
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn read_level(consistency: BenchConsistency) -> ReadLevel {
    match consistency {
        BenchConsistency::Linearizable => ReadLevel::Linearizable,
        BenchConsistency::Lease => ReadLevel::Lease,
        BenchConsistency::Session => ReadLevel::Session,
        BenchConsistency::Stale => ReadLevel::Stale {
            max_staleness: None,
        },
    }
}

fn write_ack(ack: BenchAck) -> WriteAck {
    match ack {
        BenchAck::Majority => WriteAck::Majority,
        BenchAck::All => WriteAck::All,
        BenchAck::Leader => WriteAck::Leader,
    }
}

fn key_name(key: u64) -> String {
    format!("bench-{key:08}")
}

fn new_histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_max(MAX_LATENCY_US, 3)?)
}

/// What the clients share while measuring.
#[derive(Default)]
struct Shared {
    /// Set when `--duration` is up.
    stop: AtomicBool,
    /// Operations claimed so far (`--ops`): a client claims one before issuing it.
    claimed: AtomicU64,
    /// Operations answered (ok or failed), for the progress bar and the end of an `--ops` run.
    completed: AtomicU64,
    failed: AtomicU64,
}

/// One client's state: its own connections, and the loop that draws its operations.
struct Worker {
    client: Arc<Client<TokioConnector>>,
    read_level: ReadLevel,
    ack: WriteAck,
    value: Vec<u8>,
    ops: OpLoop,
}

impl Worker {
    /// Operations back to back until the time is up or no operation is left to claim.
    async fn drive(self) -> Result<Outcome> {
        let Worker {
            client,
            read_level,
            ack,
            value,
            ops,
        } = self;
        ops.run(move |is_read, key| {
            // Owned copies (an `Arc` and the value): the operation's future must be `Send`.
            let (client, value) = (client.clone(), value.clone());
            async move {
                if is_read {
                    client.read(key, read_level).await.is_ok()
                } else {
                    client.put_with(key, value, ack).await.is_ok()
                }
            }
        })
        .await
    }
}

/// The part of every client's loop that does not depend on the store it drives: when to stop,
/// which kind of operation and which key come next, and what is recorded. Every target runs
/// the same draws in the same order, so a seed gives the same keys against ringleader and etcd.
struct OpLoop {
    chooser: KeyChooser,
    rng: SplitMix64,
    read_fraction: f64,
    ops_limit: Option<u64>,
    shared: Arc<Shared>,
}

impl OpLoop {
    /// The loop of client number `client` of the run `args` describes.
    fn for_client(
        args: &BenchArgs,
        chooser: &KeyChooser,
        client: usize,
        shared: &Arc<Shared>,
    ) -> Self {
        OpLoop {
            chooser: chooser.clone(),
            rng: SplitMix64::new(args.seed, client as u64),
            read_fraction: args.workload.read_fraction(),
            ops_limit: args.ops,
            shared: shared.clone(),
        }
    }

    /// Runs `operation(is_read, key)`, which says whether it succeeded, back to back until the
    /// time is up or no operation is left to claim; records the latency of each success.
    async fn run(
        mut self,
        mut operation: impl AsyncFnMut(bool, String) -> bool,
    ) -> Result<Outcome> {
        let (mut reads, mut writes) = (new_histogram()?, new_histogram()?);
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            if let Some(limit) = self.ops_limit {
                if self.shared.claimed.fetch_add(1, Ordering::AcqRel) >= limit {
                    break;
                }
            }
            // The kind first, then the key: one fixed order of draws keeps a seed's sequence
            // the same whatever the workload's read share.
            let is_read = self.rng.next_f64() < self.read_fraction;
            let key = key_name(self.chooser.next(&mut self.rng));
            let started = Instant::now();
            if operation(is_read, key).await {
                let micros = started.elapsed().as_micros() as u64;
                let histogram = if is_read { &mut reads } else { &mut writes };
                histogram.saturating_record(micros.clamp(1, MAX_LATENCY_US));
            } else {
                self.shared.failed.fetch_add(1, Ordering::AcqRel);
            }
            self.shared.completed.fetch_add(1, Ordering::AcqRel);
        }
        Ok(Outcome {
            reads,
            writes,
            finished: Instant::now(),
        })
    }
}

/// What one client measured: the latencies of the reads and of the writes that succeeded, and
/// when its last operation was answered.
struct Outcome {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    finished: Instant,
}

/// One row of the report: the successful operations of one kind (or all).
struct Figures {
    ops: u64,
    ops_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Figures {
    fn of(latencies: &Histogram<u64>, elapsed_secs: f64) -> Figures {
        let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
        let figures = Figures {
            ops: latencies.len(),
            ops_per_sec: if elapsed_secs > 0.0 {
                latencies.len() as f64 / elapsed_secs
            } else {
                0.0
            },
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: latencies.max() as f64 / 1000.0,
        };
        debug_assert!(
            figures.p50_ms <= figures.p90_ms
                && figures.p90_ms <= figures.p99_ms
                && figures.p99_ms <= figures.p999_ms
                && figures.p999_ms <= figures.max_ms
        );
        figures
    }

    fn json(&self) -> Value {
        json!({
            "ops": self.ops, "ops_per_sec": self.ops_per_sec,
            "p50_ms": self.p50_ms, "p90_ms": self.p90_ms, "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms, "max_ms": self.max_ms,
        })
    }

    /// A table row; percentiles of a kind with no operation are shown as `-`.
    fn row(&self, label: &str) -> String {
        if self.ops == 0 {
            return format!(
                "{label:<7} {:>9} {:>10}{}\n",
                0,
                0,
                format!(" {:>8}", "-").repeat(5)
            );
        }
        format!(
            "{label:<7} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
            self.ops,
            self.ops_per_sec,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        )
    }
}

struct Report<'a> {
    args: &'a BenchArgs,
    chooser: &'a KeyChooser,
    elapsed_secs: f64,
    load_secs: Option<f64>,
    failed: u64,
    reads: Figures,
    writes: Figures,
    total: Figures,
}

impl Report<'_> {
    fn consistency(&self) -> String {
        format!("{:?}", self.args.consistency).to_lowercase()
    }

    fn ack(&self) -> String {
        format!("{:?}", self.args.ack).to_lowercase()
    }

    /// The level the workload runs at: the read level, the write ack, or both (`read/ack`).
    fn level(&self) -> String {
        match self.args.workload {
            Workload::Read | Workload::C => self.consistency(),
            Workload::Write => self.ack(),
            Workload::A | Workload::B => format!("{}/{}", self.consistency(), self.ack()),
        }
    }

    fn json(&self) -> Value {
        let args = self.args;
        json!({
            "workload": args.workload.name(), "level": self.level(),
            "consistency": self.consistency(), "ack": self.ack(),
            "distribution": format!("{:?}", args.distribution).to_lowercase(),
            "zipf_theta": (args.distribution == Distribution::Zipfian).then_some(args.zipf_theta),
            "seed": args.seed, "keys": args.keys, "value_bytes": args.value_bytes,
            "clients": args.clients,
            "connections": args.connections.unwrap_or(args.clients),
            "load_secs": self.load_secs,
            "elapsed_secs": self.elapsed_secs,
            // The totals, at the top level as before reads and writes were told apart.
            "ops": self.total.ops, "failed": self.failed,
            "ops_per_sec": self.total.ops_per_sec,
            "p50_ms": self.total.p50_ms, "p90_ms": self.total.p90_ms,
            "p99_ms": self.total.p99_ms, "p999_ms": self.total.p999_ms,
            "max_ms": self.total.max_ms,
            "reads": self.reads.json(), "writes": self.writes.json(),
        })
    }

    fn text(&self) -> String {
        let args = self.args;
        let read_percent = args.workload.read_fraction() * 100.0;
        let mix = match args.workload {
            Workload::Read | Workload::C => format!("reads at {}", self.consistency()),
            Workload::Write => format!("writes acked {}", self.ack()),
            Workload::A | Workload::B => format!(
                "{read_percent:.0}% reads at {}, {:.0}% writes acked {}",
                self.consistency(),
                100.0 - read_percent,
                self.ack()
            ),
        };
        let keys = match args.distribution {
            Distribution::Uniform => format!("{} keys, uniform", args.keys),
            Distribution::Zipfian => format!(
                "{} keys, zipfian θ={} (the hottest 1% draw {:.0}% of operations)",
                args.keys,
                args.zipf_theta,
                self.chooser.share_of_hottest(args.keys.div_ceil(100)) * 100.0
            ),
        };
        let mut text = format!(
            "workload {} ({mix}), {keys}, seed {}, {} clients\n",
            args.workload.name(),
            args.seed,
            args.clients,
        );
        if let Some(load_secs) = self.load_secs {
            text.push_str(&format!(
                "loaded {} keys in {load_secs:.2} s ({:.0} keys/s)\n",
                args.keys,
                args.keys as f64 / load_secs.max(f64::MIN_POSITIVE)
            ));
        }
        text.push_str(&format!(
            "{:.2} s: {} ok, {} failed (not in the figures)\n\n",
            self.elapsed_secs, self.total.ops, self.failed
        ));
        text.push_str(&format!(
            "{:<7} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            "", "ops", "ops/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        ));
        text.push_str(&self.reads.row("reads"));
        text.push_str(&self.writes.row("writes"));
        text.push_str(&self.total.row("total"));
        text
    }
}
