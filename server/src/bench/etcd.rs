//! `ringleader bench --target etcd`: the load of `ringleader bench`, aimed at an etcd cluster, so
//! that bench/compare-etcd.sh measures both systems with one tool, one load shape and one report.
//!
//! The shape is the same as for ringleader: `--clients` tasks, each with its own connection
//! (`etcd_client::Client::connect` per task, over every `--endpoints` address), one operation at a
//! time, the same workloads (read, write, YCSB a/b/c), key distributions, seeds and key names,
//! values of `--value-bytes`, `--duration` or `--ops`; reads are linearizable gets (etcd's
//! default), or serializable ones for `--consistency stale`; puts are acknowledged by a majority.
//! Latencies go into the same histograms and out in the same report (text or `--json`, with
//! `"target": "etcd"`). No progress bar.
//!
//! The etcd client (and the `protoc` its build needs) is behind the `etcd` cargo feature; a build
//! without it knows the flag and refuses it with a message saying how to build one that accepts it.

use clap::ValueEnum;

/// Which system `ringleader bench` drives.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum Target {
    /// A ringleader cluster (the default).
    Ringleader,
    /// An etcd v3 cluster, through the etcd-client crate (a build with `--features etcd`).
    Etcd,
}

#[cfg(not(feature = "etcd"))]
pub async fn run(_args: super::BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "this ringleader was built without the `etcd` feature: \
         cargo build --release -p ringleader --features etcd (needs protoc)"
    )
}

#[cfg(feature = "etcd")]
pub use with_client::run;

#[cfg(feature = "etcd")]
mod with_client {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{anyhow, bail, Context, Result};
    use etcd_client::{Client, ConnectOptions, GetOptions};
    use serde_json::json;

    use super::super::distribution::KeyChooser;
    use super::super::{
        key_name, new_histogram, BenchAck, BenchArgs, BenchConsistency, Distribution, Figures,
        OpLoop, Outcome, Report, Shared,
    };

    /// A request that takes this long counts as failed, as a ringleader client's own deadline
    /// would; it bounds how long one stuck operation can hold up the end of a run.
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    async fn connect(endpoints: &[String]) -> Result<Client> {
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        Client::connect(endpoints, Some(options))
            .await
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))
    }

    pub async fn run(args: BenchArgs) -> Result<()> {
        if args.clients == 0 || args.keys == 0 {
            bail!("--clients and --keys must be above zero");
        }
        if args.ops == Some(0) {
            bail!("--ops must be above zero");
        }
        // etcd's reads are linearizable (its default) or serializable (one member's copy).
        let serializable = match args.consistency {
            BenchConsistency::Linearizable => false,
            BenchConsistency::Stale => true,
            other => bail!("etcd has no {other:?} reads: use --consistency linearizable or stale"),
        };
        // An etcd put answers once a majority has the entry and the leader has applied it.
        if args.ack != BenchAck::Majority {
            bail!(
                "etcd acknowledges puts at a majority only, not {:?}",
                args.ack
            );
        }
        let chooser = match args.distribution {
            Distribution::Uniform => KeyChooser::uniform(args.keys),
            Distribution::Zipfian => KeyChooser::zipfian(args.keys, args.zipf_theta, args.seed)
                .map_err(|e| anyhow!(e))?,
        };
        // Its own connection per client, as each ringleader bench client has its own.
        let mut clients = Vec::with_capacity(args.clients);
        for _ in 0..args.clients {
            clients.push(connect(&args.endpoints).await?);
        }
        let load_elapsed = if args.load {
            let started = Instant::now();
            let value = vec![b'x'; args.value_bytes];
            for key in 0..args.keys {
                clients[0]
                    .put(key_name(key), value.clone(), None)
                    .await
                    .with_context(|| format!("loading key {key}"))?;
            }
            Some(started.elapsed())
        } else {
            None
        };

        let shared = Arc::new(Shared::default());
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(args.clients);
        for (worker, client) in clients.into_iter().enumerate() {
            let worker = Worker {
                client,
                serializable,
                value: vec![b'v'; args.value_bytes],
                ops: OpLoop::for_client(&args, &chooser, worker, &shared),
            };
            tasks.push(tokio::spawn(worker.drive()));
        }
        if args.ops.is_none() {
            tokio::time::sleep(args.duration).await;
            shared.stop.store(true, Ordering::Release);
        }
        let (mut reads, mut writes) = (new_histogram()?, new_histogram()?);
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
        let report = Report {
            args: &args,
            chooser: &chooser,
            elapsed_secs,
            load_secs: load_elapsed.map(|d| d.as_secs_f64()),
            failed: shared.failed.load(Ordering::Acquire),
            reads: Figures::of(&reads, elapsed_secs),
            writes: Figures::of(&writes, elapsed_secs),
            total: Figures::of(&total, elapsed_secs),
        };
        // The same report as `ringleader bench`, saying which system it measured.
        if args.json {
            let mut value = report.json();
            value["target"] = json!("etcd");
            println!("{value}");
        } else {
            print!("target etcd\n{}", report.text());
        }
        Ok(())
    }

    /// One client's state, as the ringleader bench's `Worker` with an etcd connection.
    struct Worker {
        client: Client,
        serializable: bool,
        value: Vec<u8>,
        ops: OpLoop,
    }

    impl Worker {
        /// Operations back to back until the time is up or no operation is left to claim; the
        /// same draws in the same order as the ringleader bench, so a seed gives the same keys.
        async fn drive(self) -> Result<Outcome> {
            let Worker {
                client,
                serializable,
                value,
                ops,
            } = self;
            ops.run(move |is_read, key| {
                // Owned copies (the client is a handle to shared channels): the operation's
                // future must be `Send`.
                let (mut client, value) = (client.clone(), value.clone());
                async move {
                    if is_read {
                        let options = serializable.then(|| GetOptions::new().with_serializable());
                        client.get(key, options).await.is_ok()
                    } else {
                        client.put(key, value, None).await.is_ok()
                    }
                }
            })
            .await
        }
    }
}
