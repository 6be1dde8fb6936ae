//! `ringleader`: the one binary. `serve` runs a node, `cluster up` runs a local cluster of them,
//! `put`/`get`/`delete`/`cas`/`status` talk to a cluster from the shell, `check` judges a
//! history for linearizability and `sim` runs the deterministic simulation.
//!
//! Exit codes of the client commands: 0 success, 1 key absent or cas mismatch, 2 any error (with
//! one line on stderr).

mod cli;
mod cluster;
mod verify;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let report = |result: anyhow::Result<ExitCode>| match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    };
    let args = cli::Cli::parse();
    // The checker and the simulation run outside tokio (turmoil builds its own runtimes).
    let args = match cli::run_sync(args) {
        Ok(result) => return report(result),
        Err(args) => args,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    report(runtime.block_on(cli::run(*args)))
}
