//! `ringleader`: the one binary. `serve` runs a node, `cluster up` runs a local cluster of them,
//! `put`/`get`/`delete`/`cas`/`status` talk to a cluster from the shell, `check` judges a
//! history for linearizability and `sim` runs the deterministic simulation.
//!
//! Exit codes of the client commands: 0 success, 1 key absent or cas mismatch, 2 any error (with
//! one line on stderr).

mod bench;
mod binary;
mod cli;
mod cluster;
mod fault;
mod verify;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let report = |result: anyhow::Result<ExitCode>| match result {
        Ok(code) => code,
        // `get | head`: the reader went away; that is not an error worth a line.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::from(2)
        }
    };
    let args = cli::Cli::parse();
    // The checker and the simulation run outside tokio (turmoil builds its own runtimes).
    let args = match cli::run_sync(args) {
        Ok(result) => return report(result),
        Err(args) => *args,
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
    report(runtime.block_on(cli::run(args)))
}

/// The error and its causes on one line, each cause once. Several library errors repeat their
/// source in their own message (`storage: {0}` with `#[from]`, `{path}: {source}`), so printing
/// the whole chain (`{:#}`) would print the same text twice: a cause already contained in the
/// line so far is left out.
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Whether the error comes from writing to a closed pipe (stdout piped into `head`, say).
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of `NodeError::Storage` (`"storage: {0}"` with `#[from]`): its message already
    /// holds its source's.
    #[derive(Debug, thiserror::Error)]
    #[error("storage: {0}")]
    struct Repeats(#[from] std::io::Error);

    #[test]
    fn each_cause_is_printed_once() {
        let source = std::io::Error::other("corrupt wal-1 at byte offset 42");
        let error = anyhow::Error::new(Repeats(source)).context("starting node 2");
        assert_eq!(
            describe(&error),
            "starting node 2: storage: corrupt wal-1 at byte offset 42"
        );
        // A cause that adds something is kept.
        let error = anyhow::anyhow!("outer").context("context");
        assert_eq!(describe(&error), "context: outer");
    }
}
