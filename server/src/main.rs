//! `ringleader`: the one binary. `serve` runs a node, `cluster up` runs a local cluster of them,
//! and `put`/`get`/`delete`/`cas`/`status` talk to a cluster from the shell.
//!
//! Exit codes of the client commands: 0 success, 1 key absent or cas mismatch, 2 any error (with
//! one line on stderr).

mod cli;
mod cluster;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
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
    match runtime.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
