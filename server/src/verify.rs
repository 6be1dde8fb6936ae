//! `ringleader check` and `ringleader sim`: the linearizability checker on a history file, and
//! the deterministic simulation of a cluster (both from the jepsen-like crate). They run outside
//! the tokio runtime: the simulation builds its own (turmoil's) runtimes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use jepsen_like::checker::{check, CheckOptions, KeyOutcome, Verdict as CheckVerdict};
use jepsen_like::history::parse_jsonl;
use jepsen_like::report::render_violation_html;
use jepsen_like::sim::{parse_nemeses, write_outputs, PlantedBug, SimOptions, Verdict};

#[derive(Args)]
pub struct CheckArgs {
    /// A history, one JSON object per line (format: docs/testing.md).
    history: PathBuf,
    /// Where to write the HTML drawing of a violation [default: HISTORY with .html].
    #[arg(long)]
    html: Option<PathBuf>,
    /// Search steps per key before giving up (exit 3, "unknown").
    #[arg(long, default_value_t = 10_000_000)]
    max_steps_per_key: u64,
}

/// Exit 0 linearizable, 1 not (naming the key), 2 malformed file (naming the line), 3 unknown.
pub fn check_command(args: CheckArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.history)
        .with_context(|| format!("reading {}", args.history.display()))?;
    let history = match parse_jsonl(&text) {
        Ok(history) => history,
        Err(error) => bail!(
            "{}: line {}: {}",
            args.history.display(),
            error.line,
            error.reason
        ),
    };
    let options = CheckOptions {
        max_steps_per_key: args.max_steps_per_key,
        ..CheckOptions::default()
    };
    let started = Instant::now();
    let report = check(&history, &options);
    let elapsed = started.elapsed();
    println!(
        "{} operations on {} keys checked in {elapsed:?}",
        report.ops_checked,
        report.per_key.len()
    );
    match report.verdict {
        CheckVerdict::Linearizable => {
            println!("linearizable");
            Ok(ExitCode::SUCCESS)
        }
        CheckVerdict::NotLinearizable => {
            let violation = report
                .violations()
                .next()
                .context("a violation without details")?;
            let failed = &history.ops[violation.failed_op];
            println!(
                "NOT linearizable: key {:?}: process {} `{}` cannot be placed",
                violation.key,
                failed.process,
                failed.label()
            );
            let shown = violation.shrunk.as_ref().map_or(&violation.ops, |s| &s.ops);
            println!(
                "the key's sub-history{} ({} ops):",
                if violation.shrunk.is_some() {
                    ", shrunk"
                } else {
                    ""
                },
                shown.len()
            );
            for id in shown.iter().take(40) {
                let op = &history.ops[*id];
                println!("  process {:>3}  {}", op.process, op.label());
            }
            let html_path = args
                .html
                .unwrap_or_else(|| args.history.with_extension("html"));
            std::fs::write(&html_path, render_violation_html(&history, violation))
                .with_context(|| format!("writing {}", html_path.display()))?;
            println!("drawn in {}", html_path.display());
            Ok(ExitCode::from(1))
        }
        CheckVerdict::Unknown => {
            let keys: Vec<&str> = report
                .per_key
                .iter()
                .filter(|k| matches!(k.outcome, KeyOutcome::Unknown))
                .map(|k| k.key.as_str())
                .collect();
            println!(
                "unknown: the search budget ran out on keys {keys:?} (raise --max-steps-per-key)"
            );
            Ok(ExitCode::from(3))
        }
    }
}

#[derive(Args)]
pub struct SimArgs {
    /// The seed of one run.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds, A..B (B excluded), run one after another; stops at the first failure.
    #[arg(long)]
    seeds: Option<String>,
    /// Nodes in the simulated cluster.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Client operations per run.
    #[arg(long, default_value_t = 500)]
    ops: usize,
    /// Faults to inject, comma-separated: partition, crash, loss, pause, bounce; or "none".
    #[arg(long, default_value = "partition,crash,loss,pause,bounce")]
    nemesis: String,
    /// Where to write history.jsonl, faults.txt and report.html [default: ./ringleader-sim/seed-S].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Plant a deliberate bug in every node to watch the checker catch it (`local-reads`:
    /// linearizable reads answered from local state). For demonstrations only.
    #[arg(long, hide = true)]
    plant_bug: Option<String>,
}

fn parse_range(text: &str) -> Result<std::ops::Range<u64>> {
    let (start, end) = text
        .split_once("..")
        .context("--seeds must look like A..B")?;
    let (start, end): (u64, u64) = (start.trim().parse()?, end.trim().parse()?);
    if start >= end {
        bail!("--seeds {text}: the range is empty");
    }
    Ok(start..end)
}

/// Exit 0 when every run passed, 1 on a violation (or a failure to recover), 2 on a usage error.
pub fn sim_command(args: SimArgs) -> Result<ExitCode> {
    let nemeses = if args.nemesis == "none" {
        Vec::new()
    } else {
        parse_nemeses(&args.nemesis).map_err(anyhow::Error::msg)?
    };
    let planted_bug = match args.plant_bug.as_deref() {
        None => PlantedBug::None,
        Some("local-reads") => PlantedBug::LocalReads,
        Some(other) => bail!("--plant-bug {other:?}: the only planted bug is local-reads"),
    };
    let options_for = |seed: u64| SimOptions {
        nodes: args.nodes,
        ops: args.ops,
        nemeses: nemeses.clone(),
        planted_bug,
        ..SimOptions::new(seed)
    };
    let out_for = |seed: u64| {
        args.out
            .clone()
            .unwrap_or_else(|| Path::new("ringleader-sim").join(format!("seed-{seed}")))
    };
    let replay = |seed: u64| {
        format!(
            "ringleader sim --seed {seed} --nodes {} --ops {} --nemesis {}",
            args.nodes, args.ops, args.nemesis
        )
    };

    if let Some(range) = &args.seeds {
        let range = parse_range(range)?;
        let progress = indicatif::ProgressBar::new(range.end - range.start);
        progress.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} seeds · {elapsed} · {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let (mut operations, mut checking) = (0usize, std::time::Duration::ZERO);
        for seed in range.clone() {
            progress.set_message(format!("seed {seed}"));
            let report = jepsen_like::sim::run(&options_for(seed))?;
            operations += report.check.ops_checked;
            checking += report.check_wall_time;
            if !report.passed() {
                progress.abandon();
                let written = write_outputs(&report, &out_for(seed))?;
                println!("{}", report.summary());
                println!(
                    "wrote {}",
                    written
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                println!("replay: {}", replay(seed));
                return Ok(ExitCode::from(1));
            }
            progress.inc(1);
        }
        progress.finish();
        println!(
            "{} seeds passed ({operations} operations checked in {checking:?} of checker time)",
            range.end - range.start
        );
        return Ok(ExitCode::SUCCESS);
    }

    let seed = args.seed.unwrap_or(1);
    let report = jepsen_like::sim::run(&options_for(seed))?;
    let written = write_outputs(&report, &out_for(seed))?;
    println!("{}", report.summary());
    println!(
        "wrote {}",
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(match report.verdict {
        Verdict::Linearizable => ExitCode::SUCCESS,
        _ => {
            println!("replay: {}", replay(seed));
            ExitCode::from(1)
        }
    })
}
