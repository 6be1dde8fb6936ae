//! `ringleader bench`: drives a running cluster with concurrent clients for a while and reports
//! throughput and latency percentiles (HDR histograms), for one operation kind at one
//! consistency level. The figures of docs/consistency.md come from it.
//!
//! Each client is a task with its own [`Client`] (its own connections and session) issuing one
//! operation at a time on keys drawn uniformly from `--keys`; `--load` writes every key first so
//! that reads find values. Latency is measured per operation from call to answer, retries
//! included; failed operations are counted apart and left out of the percentiles.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use ringleader_client::{Client, ClientConfig, ReadLevel, TokioConnector, WriteAck};
use serde_json::json;

/// What each operation is.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Reads (`get`) at `--consistency`.
    Read,
    /// Writes (`put`) acknowledged as `--ack`.
    Write,
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

#[derive(Args)]
pub struct BenchArgs {
    /// Node addresses (HOST:PORT), comma-separated.
    #[arg(
        long,
        env = "RINGLEADER_ENDPOINTS",
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    #[arg(long, value_enum, default_value_t = Workload::Write)]
    workload: Workload,
    /// Concurrent clients, each with its own connections, one operation at a time.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long to run (after `--load`), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_timeout)]
    duration: Duration,
    /// Distinct keys, drawn uniformly.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Read level (`--workload read`).
    #[arg(long, value_enum, default_value_t = BenchConsistency::Linearizable)]
    consistency: BenchConsistency,
    /// Write acknowledgement (`--workload write`).
    #[arg(long, value_enum, default_value_t = BenchAck::Majority)]
    ack: BenchAck,
    /// Write every key once before measuring.
    #[arg(long)]
    load: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Latencies are recorded in microseconds, up to a minute, 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.clients == 0 || args.keys == 0 {
        bail!("--clients and --keys must be above zero");
    }
    let config = ClientConfig::new(args.endpoints.clone());
    if args.load {
        let client = Client::new(config.clone())?;
        let value = vec![b'x'; args.value_bytes];
        for key in 0..args.keys {
            client
                .put(key_name(key), value.clone())
                .await
                .with_context(|| format!("loading key {key}"))?;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(args.clients);
    for worker in 0..args.clients {
        let client = Client::new(config.clone())?;
        let (stop, failures) = (stop.clone(), failures.clone());
        let op = Op::from_args(&args);
        let keys = args.keys;
        tasks.push(tokio::spawn(async move {
            drive(client, op, keys, worker as u64, stop, failures).await
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    stop.store(true, Ordering::Release);
    let mut latencies = Histogram::<u64>::new_with_max(MAX_LATENCY_US, 3)?;
    for task in tasks {
        latencies.add(task.await.context("a bench client panicked")??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = latencies.len();
    let failed = failures.load(Ordering::Acquire);
    let level = match args.workload {
        Workload::Read => format!("{:?}", args.consistency).to_lowercase(),
        Workload::Write => format!("{:?}", args.ack).to_lowercase(),
    };
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            json!({
                "workload": format!("{:?}", args.workload).to_lowercase(), "level": level,
                "clients": args.clients, "ops": ops, "failed": failed,
                "ops_per_sec": ops as f64 / elapsed,
                "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99),
                "p999_ms": ms(0.999), "max_ms": latencies.max() as f64 / 1000.0,
            })
        );
    } else {
        println!(
            "{:?} {level}, {} clients: {ops} ok, {failed} failed, {:.0} ops/s; \
             p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            args.workload,
            args.clients,
            ops as f64 / elapsed,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            latencies.max() as f64 / 1000.0
        );
    }
    Ok(())
}

#[derive(Clone)]
enum Op {
    Read(ReadLevel),
    Write(WriteAck, Vec<u8>),
}

impl Op {
    fn from_args(args: &BenchArgs) -> Op {
        match args.workload {
            Workload::Read => Op::Read(match args.consistency {
                BenchConsistency::Linearizable => ReadLevel::Linearizable,
                BenchConsistency::Lease => ReadLevel::Lease,
                BenchConsistency::Session => ReadLevel::Session,
                BenchConsistency::Stale => ReadLevel::Stale {
                    max_staleness: None,
                },
            }),
            Workload::Write => Op::Write(
                match args.ack {
                    BenchAck::Majority => WriteAck::Majority,
                    BenchAck::All => WriteAck::All,
                    BenchAck::Leader => WriteAck::Leader,
                },
                vec![b'v'; args.value_bytes],
            ),
        }
    }
}

fn key_name(key: u64) -> String {
    format!("bench-{key:08}")
}

/// One client's loop: operations back to back until `stop`; returns their latencies.
async fn drive(
    client: Client<TokioConnector>,
    op: Op,
    keys: u64,
    worker: u64,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
) -> Result<Histogram<u64>> {
    let mut latencies = Histogram::<u64>::new_with_max(MAX_LATENCY_US, 3)?;
    // A per-client xorshift stream: uniform keys without a shared generator.
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (worker + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    while !stop.load(Ordering::Acquire) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let key = key_name(state % keys);
        let started = Instant::now();
        let ok = match &op {
            Op::Read(level) => client.read(key, *level).await.is_ok(),
            Op::Write(ack, value) => client.put_with(key, value.clone(), *ack).await.is_ok(),
        };
        if ok {
            let micros = started.elapsed().as_micros() as u64;
            latencies.saturating_record(micros.clamp(1, MAX_LATENCY_US));
        } else {
            failures.fetch_add(1, Ordering::AcqRel);
        }
    }
    Ok(latencies)
}
