//! `ringleader cluster up`: a local cluster as child processes of this same binary.
//!
//! Node i listens on 127.0.0.1:(base_port + i - 1) with its data in DIR/node-i, its log in
//! DIR/node-i.log and its pid in DIR/node-i.pid. Ctrl-C (or SIGTERM) sends SIGTERM to every node
//! so each shuts down gracefully, then waits for them. Rerunning with the same DIR recovers the
//! cluster from disk.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

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
}

pub async fn up(args: UpArgs) -> Result<ExitCode> {
    anyhow::ensure!(
        (1..=9).contains(&args.nodes),
        "--nodes must be between 1 and 9"
    );
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let secret_file = ringleader_node::auth::ensure_secret_file(&args.dir)?;
    let addr = |i: u64| format!("127.0.0.1:{}", args.base_port as u64 + i - 1);
    let peers: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}={}", addr(i)))
        .collect();
    let mut children = Vec::new();
    for i in 1..=args.nodes {
        let log_path = args.dir.join(format!("node-{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let child = tokio::process::Command::new(&exe)
            .arg("serve")
            .args(["--id", &i.to_string()])
            .arg("--dir")
            .arg(args.dir.join(format!("node-{i}")))
            .args(["--listen", &addr(i)])
            .args(["--peers", &peers.join(",")])
            .arg("--cluster-secret-file")
            .arg(&secret_file)
            .args([
                "--snapshot-every-entries",
                &args.snapshot_every_entries.to_string(),
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting node {i}"))?;
        let pid = child.id().unwrap_or_default();
        std::fs::write(args.dir.join(format!("node-{i}.pid")), format!("{pid}\n"))?;
        println!(
            "node {i}: {} (pid {pid}) log {}",
            addr(i),
            log_path.display()
        );
        children.push((i, child));
    }
    println!(
        "cluster of {} up; try: ringleader put hello world && ringleader get hello",
        args.nodes
    );
    println!("press Ctrl-C to stop");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    println!("stopping the cluster");
    for (_, child) in &children {
        if let Some(pid) = child.id() {
            // SAFETY: plain kill(2) on a child we started; the pid is still ours (not yet reaped).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for (i, mut child) in children {
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(Ok(status)) => println!("node {i} stopped ({status})"),
            _ => {
                eprintln!("node {i} did not stop in time: killing it");
                let _ = child.kill().await;
            }
        }
        let _ = std::fs::remove_file(args.dir.join(format!("node-{i}.pid")));
    }
    Ok(ExitCode::SUCCESS)
}
