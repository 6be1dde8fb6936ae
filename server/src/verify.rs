//! `ringleader check` and `ringleader sim`: the linearizability checker on a history file, and
//! the deterministic simulation of a cluster (both from the jepsen-like crate). They run outside
//! the tokio runtime: the simulation builds its own (turmoil's) runtimes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use jepsen_like::checker::{
    check_partitions, judge, shrink_first_violation, shrink_partition_violation, CheckOptions,
    KeyOutcome, Partition, PartitionOutcome, Verdict as CheckVerdict,
};
use jepsen_like::formats::knossos::{
    multi_register_partition, mutex_partition, register_history, KnossosModel,
};
use jepsen_like::formats::porcupine::kv_partitions;
use jepsen_like::formats::{edn, pair_operations, Format};
use jepsen_like::history::{parse_jsonl, History, ParseError};
use jepsen_like::model::{KvModel, Model, MutexModel};
use jepsen_like::report::render_violation_html;
use jepsen_like::session::check_sessions;
use jepsen_like::sim::{
    parse_nemeses, write_outputs, Consistency, Floors, PlantedBug, SimOptions, Verdict,
};
use jepsen_like::staleness::check_staleness;

#[derive(Args)]
pub struct CheckArgs {
    /// A history: ringleader's JSONL, a Knossos EDN history or a Porcupine kv file (formats:
    /// docs/testing.md).
    history: PathBuf,
    /// The file's format: jsonl, knossos or porcupine [default: from the extension: .jsonl,
    /// .edn, .txt].
    #[arg(long)]
    format: Option<Format>,
    /// For knossos histories, the model: cas-register (starting at 0), multi-register or mutex
    /// [default: from the operations' :f].
    #[arg(long)]
    model: Option<KnossosModel>,
    /// Where to write the HTML drawing of a violation [default: HISTORY with .html]. Register
    /// histories (jsonl, knossos cas-register) only.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Search steps per key before giving up (exit 3, "unknown").
    #[arg(long, default_value_t = 10_000_000)]
    max_steps_per_key: u64,
    /// Report the violation as the search found it, without shrinking it to a smaller witness
    /// (the verdict is printed before shrinking starts either way).
    #[arg(long)]
    no_shrink: bool,
    /// Search iterations the shrinking may use in all (it stops there and keeps the smallest
    /// witness found so far; the verdict does not depend on it).
    #[arg(long, default_value_t = CheckOptions::default().max_shrink_steps)]
    max_shrink_steps: u64,
}

impl CheckArgs {
    fn options(&self) -> CheckOptions {
        CheckOptions {
            max_steps_per_key: self.max_steps_per_key,
            shrink: !self.no_shrink,
            max_shrink_steps: self.max_shrink_steps,
            ..CheckOptions::default()
        }
    }
}

/// Prints the work a shrink did: searches and search iterations (deterministic), wall time.
fn print_shrink_work(checks: usize, steps: u64, wall: std::time::Duration) {
    println!("shrinking: {checks} searches, {steps} search iterations, {wall:?}");
}

/// Exit 0 linearizable, 1 not (naming the key) or, in a history with levels, a broken session
/// guarantee or staleness bound, 2 malformed file (naming the line) or usage
/// error, 3 unknown.
pub fn check_command(args: CheckArgs) -> Result<ExitCode> {
    let Some(format) = args.format.or_else(|| Format::guess(&args.history)) else {
        bail!(
            "{}: cannot tell the format from the extension; give --format jsonl|knossos|porcupine",
            args.history.display()
        );
    };
    if args.model.is_some() && format != Format::Knossos {
        bail!("--model applies to knossos histories only (this one is {format})");
    }
    let text = std::fs::read_to_string(&args.history)
        .with_context(|| format!("reading {}", args.history.display()))?;
    let malformed = |error: ParseError| {
        anyhow!(
            "{}: line {}: {}",
            args.history.display(),
            error.line,
            error.reason
        )
    };
    match format {
        Format::Jsonl => {
            let history = parse_jsonl(&text).map_err(malformed)?;
            // Only the levels that promise linearizability are checked for it.
            let view = history.linearizability_view();
            if view.ops.len() < history.ops.len() {
                println!(
                    "{} session and stale reads left out (they do not promise linearizability)",
                    history.ops.len() - view.ops.len()
                );
            }
            let code = check_registers(&args, &view)?;
            if history.ops.iter().all(|op| op.level.is_none()) {
                return Ok(code);
            }
            // A history with levels: the session guarantees and the staleness bounds too.
            let broken = check_level_promises(&history);
            Ok(if broken && code == ExitCode::SUCCESS {
                ExitCode::from(1)
            } else {
                code
            })
        }
        Format::Knossos => {
            let entries = edn::parse_history(&text).map_err(malformed)?;
            let ops = pair_operations(&entries).map_err(malformed)?;
            let model = match args.model {
                Some(model) => model,
                None => KnossosModel::infer(&ops).map_err(malformed)?,
            };
            println!("knossos history, {model} model");
            match model {
                KnossosModel::CasRegister => {
                    let converted = register_history(&ops).map_err(malformed)?;
                    check_registers(&args, &converted.history)
                }
                KnossosModel::MultiRegister => {
                    let (model, partition) = multi_register_partition(&ops).map_err(malformed)?;
                    check_partitioned(&args, &model, &[partition])
                }
                KnossosModel::Mutex => {
                    let partition = mutex_partition(&ops).map_err(malformed)?;
                    check_partitioned(&args, &MutexModel, &[partition])
                }
            }
        }
        Format::Porcupine => {
            let entries = edn::parse_history(&text).map_err(malformed)?;
            let ops = pair_operations(&entries).map_err(malformed)?;
            let partitions = kv_partitions(&ops).map_err(malformed)?;
            println!("porcupine key-value history (get/put/append, keys start as \"\")");
            check_partitioned(&args, &KvModel, &partitions)
        }
    }
}

/// Prints what the session checker and the staleness check found in a history with levels;
/// returns whether a promise broke.
fn check_level_promises(history: &History) -> bool {
    let session = check_sessions(history);
    if session.held() {
        println!(
            "session guarantees held ({} reads and {} writes checked)",
            session.reads_checked, session.writes_checked
        );
    } else {
        println!(
            "session guarantees BROKEN: {} violations",
            session.violations_found
        );
        for violation in &session.violations {
            println!("  {violation}");
        }
    }
    let staleness = check_staleness(history);
    let found: Vec<String> = staleness
        .per_level
        .iter()
        .map(|(level, c)| format!("{level} {} of {}", c.stale, c.reads))
        .collect();
    println!("stale reads found: {}", found.join(", "));
    if staleness.bounds_held() {
        println!(
            "staleness bounds held ({} receipts checked)",
            staleness.bounded_reads
        );
    } else {
        println!(
            "staleness bounds BROKEN: {} reads older than their bound",
            staleness.bound_violations_found
        );
        for v in &staleness.bound_violations {
            println!(
                "  op {} (process {}) on {:?}: version {} with a bound of {} ms, missing version \
                 {} acknowledged {} ms before it was invoked",
                v.read,
                v.process,
                v.key,
                v.version,
                v.bound_ms,
                v.missed_version,
                v.acknowledged_before_ms
            );
        }
    }
    !session.held() || !staleness.bounds_held()
}

/// An empty history is "linearizable" only vacuously: far more often it is the wrong file, or a
/// test that recorded nothing, so it is an error (exit 2) rather than a pass.
fn empty_history(args: &CheckArgs) -> String {
    format!(
        "{}: the history has no operations: nothing to check",
        args.history.display()
    )
}

/// A history of registers (ours, or Knossos's cas-register converted): checked per key, and
/// a violation drawn as HTML.
fn check_registers(args: &CheckArgs, history: &History) -> Result<ExitCode> {
    if history.ops.is_empty() {
        bail!(empty_history(args));
    }
    let options = args.options();
    let started = Instant::now();
    // The verdict first, from the search alone; shrinking (if asked) comes after it is printed.
    let mut report = judge(history, &options);
    let elapsed = started.elapsed();
    println!(
        "{} operations on {} keys checked in {elapsed:?} ({} search iterations)",
        report.ops_checked,
        report.per_key.len(),
        report.work.search_steps
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
            if options.shrink {
                // The verdict is out before the (bounded) shrinking starts.
                std::io::Write::flush(&mut std::io::stdout())?;
                shrink_first_violation(history, &mut report, &options);
                let work = &report.work;
                print_shrink_work(
                    work.shrink_checks,
                    work.shrink_steps,
                    work.shrink_wall_time.0,
                );
            }
            let violation = report
                .violations()
                .next()
                .context("a violation without details")?;
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
                .clone()
                .unwrap_or_else(|| args.history.with_extension("html"));
            // The verdict stands even if the drawing cannot be written (a read-only folder).
            match std::fs::write(&html_path, render_violation_html(history, violation)) {
                Ok(()) => println!("drawn in {}", html_path.display()),
                Err(error) => eprintln!(
                    "warning: cannot write the drawing to {}: {error}",
                    html_path.display()
                ),
            }
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

/// A history for another model, in partitions (keys): checked until the first violation,
/// which is reported with file lines (no drawing: that is for register histories).
fn check_partitioned<M>(
    args: &CheckArgs,
    model: &M,
    partitions: &[Partition<M::Input, M::Output>],
) -> Result<ExitCode>
where
    M: Model,
    M::Input: Clone,
    M::Output: Clone,
{
    if partitions.iter().all(|partition| partition.ops.is_empty()) {
        bail!(empty_history(args));
    }
    let options = args.options();
    let started = Instant::now();
    let report = check_partitions(model, partitions, options.max_steps_per_key);
    let elapsed = started.elapsed();
    println!(
        "{} operations on {} of {} keys checked in {elapsed:?} ({} search iterations)",
        report.ops_checked,
        report.per_partition.len(),
        partitions.len(),
        report.per_partition.iter().map(|r| r.steps).sum::<u64>()
    );
    match report.verdict {
        CheckVerdict::Linearizable => {
            println!("linearizable");
            Ok(ExitCode::SUCCESS)
        }
        CheckVerdict::NotLinearizable => {
            let (result, longest_prefix, failed_op) = report
                .per_partition
                .iter()
                .find_map(|r| match &r.outcome {
                    PartitionOutcome::Violation {
                        longest_prefix,
                        failed_op,
                    } => Some((r, longest_prefix, *failed_op)),
                    _ => None,
                })
                .context("a violation without details")?;
            let partition = &partitions[result.partition];
            let describe = |i: usize| {
                let op = &partition.ops[i];
                model.describe(&op.input, op.output())
            };
            println!(
                "NOT linearizable: key {:?}: `{}` (invoked on line {}) cannot be placed",
                result.key,
                describe(failed_op),
                partition.lines[failed_op]
            );
            println!(
                "after {} of the key's {} operations, linearized in this order:",
                longest_prefix.len(),
                partition.ops.len()
            );
            for &i in longest_prefix.iter().take(40) {
                println!("  line {:>6}  {}", partition.lines[i], describe(i));
            }
            if options.shrink {
                std::io::Write::flush(&mut std::io::stdout())?;
                let shrink_started = Instant::now();
                if let Some((_, shrunk)) =
                    shrink_partition_violation(model, partitions, &report, &options)
                {
                    print_shrink_work(shrunk.checks, shrunk.steps, shrink_started.elapsed());
                    println!(
                        "shrunk witness ({} of the key's {} operations{}):",
                        shrunk.kept.len(),
                        partition.ops.len(),
                        match shrunk.cut {
                            Some(_) =>
                                "; those running when the failing one returned count as unknown",
                            None => "",
                        }
                    );
                    for &i in shrunk.kept.iter().take(40) {
                        println!("  line {:>6}  {}", partition.lines[i], describe(i));
                    }
                }
            }
            if args.html.is_some() {
                println!("(no drawing: --html draws register histories only)");
            }
            Ok(ExitCode::from(1))
        }
        CheckVerdict::Unknown => {
            let keys: Vec<&str> = report
                .per_partition
                .iter()
                .filter(|r| r.outcome == PartitionOutcome::Unknown)
                .map(|r| r.key.as_str())
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
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Keys the clients contend on (with --shards S > 1, at least 2·S are used).
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Shards: the keys are spread over S Raft groups by the ring (1: one group on every node,
    /// as before sharding). The nodes' digests and applied indexes are compared per group,
    /// a write must succeed in every group after the heal, and the nemeses aimed at "the
    /// leader" aim at the leader of a group drawn from the seed.
    #[arg(long, default_value_t = 1)]
    shards: u32,
    /// Replicas per shard [default: every node with one shard, else 3].
    #[arg(long)]
    replicas: Option<u32>,
    /// Faults to inject, comma-separated: partition, crash, loss, pause, bounce, power-loss,
    /// messages, one-way, leader, clients, isolate (single nodes cut off in turn, for sharded
    /// runs); "all" (every one but isolate) or "none".
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Run every nemesis of --nemesis in every seed, instead of the mix each seed draws
    /// (swarm testing).
    #[arg(long)]
    no_swarm: bool,
    /// The bound on clock drift: each node's clock runs up to this many percent fast or slow.
    #[arg(long, default_value_t = jepsen_like::sim::DEFAULT_CLOCK_DRIFT_PERCENT)]
    clock_drift: u32,
    /// Where to write history.jsonl, faults.txt and report.html [default: ./ringleader-sim/seed-S].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Plant a bug from the catalogue in every node, to watch the simulation catch it (the
    /// catalogue, with the rule each breaks and its seed budget: docs/testing.md). Needs a
    /// build with the planted bugs: `cargo build --release -p ringleader --features
    /// planted-bugs`. Each is caught within its seed budget (seeds from 0) with the nemeses
    /// listed below and the other options at their defaults.
    #[arg(long, value_name = "NAME", value_parser = planted_bug_names())]
    plant_bug: Option<String>,
    /// Check each run's history without shrinking a violation (the verdict is the same).
    #[arg(long)]
    no_shrink: bool,
    /// The consistency levels the workload uses: linearizable (reads; writes at majority, the
    /// default), lease, session or stale (reads at that level, majority writes), all or leader
    /// (linearizable reads, writes acknowledged by every replica or by the leader alone; a
    /// leader-acknowledged write is lost if the leader dies before replicating it), or mix
    /// (each operation draws its level from the seed). Linearizability is checked over the
    /// levels that promise it, every client's session guarantees over the levels that keep
    /// them; the report prints each level's availability during faults, the stale reads found,
    /// whether the receipts' staleness bounds held, and the acknowledged writes lost per level.
    #[arg(long, default_value = "linearizable", value_parser = consistency_names())]
    consistency: String,
}

/// `--consistency`'s values.
fn consistency_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Consistency::ALL.iter().map(|c| c.name()))
}

/// The catalogue's names, each with its one-line description, for `--plant-bug`'s help.
fn planted_bug_names() -> clap::builder::PossibleValuesParser {
    use ringleader_node::planted::Kind;
    let catalogue = ringleader_node::planted::CATALOGUE;
    clap::builder::PossibleValuesParser::new(catalogue.iter().map(|entry| {
        let caught_with = match entry.kind {
            Kind::Bug | Kind::FloorFault => format!(
                "caught within {} seeds with --nemesis {}{}{}",
                entry.seed_budget,
                entry.nemeses,
                if entry.swarm { "" } else { " --no-swarm" },
                if entry.consistency == "linearizable" {
                    String::new()
                } else {
                    format!(" --consistency {}", entry.consistency)
                }
            ),
            Kind::NotCaught => "not caught within 200 seeds yet".to_string(),
            Kind::Regression => "a fault the cluster must survive".to_string(),
        };
        clap::builder::PossibleValue::new(entry.name).help(format!(
            "[{}; {caught_with}] {}",
            entry.layer, entry.description
        ))
    }))
}

/// The bug `--plant-bug` names, if this build can plant it.
fn planted_bug(name: Option<&str>) -> Result<PlantedBug> {
    let Some(name) = name else {
        return Ok(PlantedBug::None);
    };
    let bug: PlantedBug = name.parse().map_err(anyhow::Error::msg)?;
    if !ringleader_node::planted::ENABLED {
        bail!(
            "--plant-bug {name}: this ringleader was built without the planted bugs (they are \
             kept out of production builds); build one with them: `cargo build --release -p \
             ringleader --features planted-bugs`, then run target/release/ringleader sim \
             --plant-bug {name}"
        );
    }
    Ok(bug)
}

/// Writes a run's files into `dir` and prints its summary and where the files went.
fn print_run(report: &jepsen_like::sim::SimReport, dir: &Path) -> Result<()> {
    let written = write_outputs(report, dir)?;
    println!("{}", report.summary());
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    Ok(())
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
    let planted_bug = planted_bug(args.plant_bug.as_deref())?;
    let consistency: Consistency = args.consistency.parse().map_err(anyhow::Error::msg)?;
    let options_for = |seed: u64| SimOptions {
        consistency,
        nodes: args.nodes,
        ops: args.ops,
        clients: args.clients,
        keys: args.keys,
        nemeses: nemeses.clone(),
        planted_bug,
        swarm: !args.no_swarm,
        clock_drift_percent: args.clock_drift,
        shards: args.shards,
        replicas: args.replicas,
        check_options: CheckOptions {
            shrink: !args.no_shrink,
            ..CheckOptions::default()
        },
        ..SimOptions::new(seed)
    };
    let out_for = |seed: u64| {
        args.out
            .clone()
            .unwrap_or_else(|| Path::new("ringleader-sim").join(format!("seed-{seed}")))
    };
    let replay = |seed: u64| {
        let mut line = format!(
            "ringleader sim --seed {seed} --nodes {} --ops {} --clients {} --keys {} --nemesis {} \
             --clock-drift {}{}{}",
            args.nodes,
            args.ops,
            args.clients,
            args.keys,
            args.nemesis,
            args.clock_drift,
            if args.no_swarm { " --no-swarm" } else { "" },
            if args.no_shrink { " --no-shrink" } else { "" }
        );
        if !consistency.is_default() {
            line.push_str(&format!(" --consistency {consistency}"));
        }
        if planted_bug != PlantedBug::None {
            line.push_str(&format!(" --plant-bug {planted_bug}"));
        }
        if args.shards != 1 {
            line.push_str(&format!(" --shards {}", args.shards));
        }
        if let Some(replicas) = args.replicas {
            line.push_str(&format!(" --replicas {replicas}"));
        }
        line
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
        let mut simulated = std::time::Duration::ZERO;
        let started = std::time::Instant::now();
        let cpu_at_start = process_cpu_time();
        for seed in range.clone() {
            progress.set_message(format!("seed {seed}"));
            let report = jepsen_like::sim::run(&options_for(seed))?;
            operations += report.check.ops_checked;
            checking += report.check_wall_time;
            simulated += report.sim_elapsed;
            let shortfalls = report.floor_shortfalls(&Floors::default());
            if !report.passed() || !shortfalls.is_empty() {
                progress.abandon();
                print_run(&report, &out_for(seed))?;
                print_shortfalls(&shortfalls);
                println!("replay: {}", replay(seed));
                return Ok(ExitCode::from(1));
            }
            progress.inc(1);
        }
        progress.finish();
        let wall = started.elapsed();
        let cpu = process_cpu_time().saturating_sub(cpu_at_start);
        println!(
            "{} seeds passed: {operations} operations checked ({checking:.1?} of checker time); \
             {:.0} s simulated in {:.1} s of wall time and {:.1} s of CPU time: {:.0} simulated \
             seconds per wall second, {:.0} per CPU second",
            range.end - range.start,
            simulated.as_secs_f64(),
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
            simulated.as_secs_f64() / cpu.as_secs_f64().max(1e-9)
        );
        return Ok(ExitCode::SUCCESS);
    }

    let seed = args.seed.unwrap_or(1);
    let report = jepsen_like::sim::run(&options_for(seed))?;
    print_run(&report, &out_for(seed))?;
    // A history of only failures is trivially linearizable: a run must also have served.
    let shortfalls = report.floor_shortfalls(&Floors::default());
    print_shortfalls(&shortfalls);
    Ok(match report.verdict {
        Verdict::Linearizable if shortfalls.is_empty() => ExitCode::SUCCESS,
        _ => {
            println!("replay: {}", replay(seed));
            ExitCode::from(1)
        }
    })
}

/// CPU time this process has used (user and system): the simulation runs on one thread, so on
/// a shared machine this, not the wall clock, says how fast it is on one core.
fn process_cpu_time() -> std::time::Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return std::time::Duration::ZERO;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    std::time::Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Says which floors of successful operations a run fell short of.
fn print_shortfalls(shortfalls: &[String]) {
    for shortfall in shortfalls {
        println!("too few successful operations: {shortfall}");
    }
}
