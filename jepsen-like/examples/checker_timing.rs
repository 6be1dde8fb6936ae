//! Times the linearizability checker over the public histories with known verdicts, with
//! shrinking off (the verdict alone) and on (verdict, then the bounded shrink), split by known
//! verdict, and prints one table: does a non-linearizable history take longer to judge than a
//! linearizable one?
//!
//! ```text
//! cargo run --release -p jepsen-like --example checker_timing [-- HISTORIES_DIR [REPEATS [SIM_SEEDS]]]
//! ```
//! HISTORIES_DIR defaults to the vendored `jepsen-like/test-data/histories` (the same files as
//! the workplace's `shared/histories`, less the transactional Elle ones); each file is timed
//! REPEATS times (default 9) in each mode and its median kept. Parsing is not timed.
//!
//! Beside them, ringleader's own histories: the simulation (`crate::sim`, default options) is
//! run on seeds 0..SIM_SEEDS (default 8) twice, on the real code (linearizable) and with reads
//! served from local state planted (`PlantedBug::LocalReads`, not linearizable on most
//! seeds), and each history is timed the same way ("sim" rows; runs that end otherwise, e.g.
//! a planted run the checker passes, are left out). Wall times vary from machine to machine;
//! the search iterations and shrink searches printed beside them do not.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jepsen_like::checker::{
    check, check_partitions, judge, shrink_partition_violation, CheckOptions, Partition,
    PartitionsReport, Verdict,
};
use jepsen_like::formats::knossos::{multi_register_partition, mutex_partition, register_history};
use jepsen_like::formats::porcupine::kv_partitions;
use jepsen_like::formats::{edn, pair_operations};
use jepsen_like::history::{parse_jsonl, History};
use jepsen_like::model::{KvModel, Model, MutexModel};
use jepsen_like::sim::{PlantedBug, SimOptions, Verdict as SimVerdict};

/// A history ready to check, parsed once.
enum Loaded {
    Register(History),
    Kv(Vec<Partition<<KvModel as Model>::Input, <KvModel as Model>::Output>>),
    Mutex(Partition<<MutexModel as Model>::Input, <MutexModel as Model>::Output>),
    MultiRegister(
        jepsen_like::model::MultiRegisterModel,
        Partition<
            <jepsen_like::model::MultiRegisterModel as Model>::Input,
            <jepsen_like::model::MultiRegisterModel as Model>::Output,
        >,
    ),
}

/// What one check did: its verdict and its work (deterministic) and wall time.
#[derive(Clone, Copy)]
struct Run {
    verdict: Verdict,
    search_steps: u64,
    shrink_checks: usize,
    shrink_steps: u64,
    /// Operations of the violating key, and of its witness (shrunk when shrinking is on).
    key_ops: usize,
    witness_ops: usize,
    wall: Duration,
}

struct File {
    path: String,
    family: &'static str,
    expected_linearizable: bool,
    ops: usize,
    /// Median over the repeats, shrinking off and on.
    off: Run,
    on: Run,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/test-data/histories"))
    });
    let repeats: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(9);
    let repeats = repeats.max(1);
    let sim_seeds: u64 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(8);
    let options_on = CheckOptions::default();
    let options_off = CheckOptions {
        shrink: false,
        ..CheckOptions::default()
    };

    let verdicts = fs::read_to_string(dir.join("verdicts.tsv"))?;
    let mut files = Vec::new();
    for line in verdicts.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (path, model, expected) = (cols[0], cols[1], cols[2]);
        let Some((family, loaded, ops)) = load(&dir, path, model)? else {
            continue;
        };
        let expected_linearizable = expected == "linearizable";
        let off = median(repeats, || time(&loaded, &options_off));
        let on = median(repeats, || time(&loaded, &options_on));
        for (mode, run) in [("off", off), ("on", on)] {
            if (run.verdict == Verdict::Linearizable) != expected_linearizable {
                return Err(
                    format!("{path}: verdict {:?} with shrinking {mode}", run.verdict).into(),
                );
            }
        }
        files.push(File {
            path: path.to_string(),
            family,
            expected_linearizable,
            ops,
            off,
            on,
        });
    }

    for seed in 0..sim_seeds {
        for planted_bug in [PlantedBug::None, PlantedBug::LocalReads] {
            let report = jepsen_like::sim::run(&SimOptions {
                planted_bug,
                ..SimOptions::new(seed)
            })?;
            let expected_linearizable = match report.verdict {
                SimVerdict::Linearizable => true,
                SimVerdict::Violation { .. } => false,
                _ => continue,
            };
            let history = parse_jsonl(&report.history_jsonl).map_err(|e| format!("sim: {e}"))?;
            let ops = history.ops.len();
            let loaded = Loaded::Register(history);
            let off = median(repeats, || time(&loaded, &options_off));
            let on = median(repeats, || time(&loaded, &options_on));
            files.push(File {
                path: format!("sim seed {seed} planted {planted_bug:?}"),
                family: "sim",
                expected_linearizable,
                ops,
                off,
                on,
            });
        }
    }

    println!(
        "{} histories from {} and the simulation, median of {repeats} runs per file and mode (release build: {})\n",
        files.len(),
        dir.display(),
        !cfg!(debug_assertions)
    );
    println!(
        "{:<16} {:<9} {:>5} {:>7} | {:>10} {:>10} {:>9} {:>11} | {:>10} {:>10} {:>9} {:>9} {:>11} {:>13}",
        "histories",
        "verdict",
        "files",
        "ops",
        "off: total",
        "median",
        "µs/op",
        "steps",
        "on: total",
        "median",
        "µs/op",
        "shrinks",
        "shrink steps",
        "witness/key"
    );
    // (row label, family). No row mixes families: their files differ too much in size for a
    // median over all of them to compare like with like.
    let families = [
        ("cas-register", "cas-register"),
        ("kv (porcupine)", "kv"),
        ("sim (ringleader)", "sim"),
    ];
    for (name, family) in families {
        let in_family = |f: &File| f.family == family;
        let (mut per_op, mut per_file) = ([[0.0; 2]; 2], [[0.0; 2]; 2]);
        for (v, linearizable) in [(0, true), (1, false)] {
            let group: Vec<&File> = files
                .iter()
                .filter(|f| in_family(f) && f.expected_linearizable == linearizable)
                .collect();
            if group.is_empty() {
                continue;
            }
            let ops: usize = group.iter().map(|f| f.ops).sum();
            let stats = |pick: fn(&File) -> Run| {
                let total: Duration = group.iter().map(|f| pick(f).wall).sum();
                let median_wall = median_of(group.iter().map(|f| pick(f).wall.as_secs_f64()));
                let median_per_op = median_of(
                    group
                        .iter()
                        .map(|f| pick(f).wall.as_secs_f64() * 1e6 / f.ops.max(1) as f64),
                );
                (total, median_wall, median_per_op)
            };
            let (off_total, off_median, off_per_op) = stats(|f| f.off);
            let (on_total, on_median, on_per_op) = stats(|f| f.on);
            per_op[v] = [off_per_op, on_per_op];
            per_file[v] = [off_median, on_median];
            println!(
                "{:<16} {:<9} {:>5} {:>7} | {:>8.2}ms {:>8.3}ms {:>9.3} {:>11} | {:>8.2}ms {:>8.3}ms {:>9.3} {:>9} {:>11} {:>13}",
                name,
                if linearizable { "ok" } else { "NOT" },
                group.len(),
                ops,
                off_total.as_secs_f64() * 1e3,
                off_median * 1e3,
                off_per_op,
                group.iter().map(|f| f.off.search_steps).sum::<u64>(),
                on_total.as_secs_f64() * 1e3,
                on_median * 1e3,
                on_per_op,
                group.iter().map(|f| f.on.shrink_checks).sum::<usize>(),
                group.iter().map(|f| f.on.shrink_steps).sum::<u64>(),
                format!(
                    "{}/{}",
                    group.iter().map(|f| f.on.witness_ops).sum::<usize>(),
                    group.iter().map(|f| f.on.key_ops).sum::<usize>()
                ),
            );
        }
        if per_op[0][0] > 0.0 && per_op[1][0] > 0.0 {
            println!(
                "{:<16} NOT/ok: median per file: off {:.2}×, on {:.2}× · median µs/op: off {:.2}×, on {:.2}×",
                name,
                per_file[1][0] / per_file[0][0],
                per_file[1][1] / per_file[0][0],
                per_op[1][0] / per_op[0][0],
                per_op[1][1] / per_op[0][0],
            );
        }
    }
    if std::env::var_os("CHECKER_TIMING_ALL").is_some() {
        println!("\nevery file (CHECKER_TIMING_ALL set):");
        for f in &files {
            println!(
                "  {:>8.3} ms off ({:>8} steps), {:>8.3} ms on  {:>6} ops  {:<3} {}",
                f.off.wall.as_secs_f64() * 1e3,
                f.off.search_steps,
                f.on.wall.as_secs_f64() * 1e3,
                f.ops,
                if f.expected_linearizable { "ok" } else { "NOT" },
                f.path
            );
        }
    }
    println!("\nslowest five with shrinking off:");
    let mut slowest: Vec<&File> = files.iter().collect();
    slowest.sort_by_key(|f| std::cmp::Reverse(f.off.wall));
    for f in slowest.iter().take(5) {
        println!(
            "  {:>8.3} ms off, {:>8.3} ms on  {:>6} ops  {:<3} {}",
            f.off.wall.as_secs_f64() * 1e3,
            f.on.wall.as_secs_f64() * 1e3,
            f.ops,
            if f.expected_linearizable { "ok" } else { "NOT" },
            f.path
        );
    }
    Ok(())
}

type Loading = Option<(&'static str, Loaded, usize)>;

/// Parses one verdicts.tsv row; `None` for models that are not linearizability models (Elle).
fn load(dir: &Path, path: &str, model: &str) -> Result<Loading, Box<dyn std::error::Error>> {
    if model.starts_with("elle") {
        return Ok(None);
    }
    let text = fs::read_to_string(dir.join(path))?;
    let entries = edn::parse_history(&text).map_err(|e| format!("{path}: {e}"))?;
    let ops = pair_operations(&entries).map_err(|e| format!("{path}: {e}"))?;
    let count = ops.len();
    let loaded = if model.starts_with("kv get/put/append") {
        (
            "kv",
            Loaded::Kv(kv_partitions(&ops).map_err(|e| format!("{path}: {e}"))?),
        )
    } else if model.starts_with("knossos cas-register") {
        let history = register_history(&ops).map_err(|e| format!("{path}: {e}"))?;
        ("cas-register", Loaded::Register(history.history))
    } else if model.starts_with("knossos multi-register") {
        let (model, partition) =
            multi_register_partition(&ops).map_err(|e| format!("{path}: {e}"))?;
        ("multi-register", Loaded::MultiRegister(model, partition))
    } else if model.starts_with("knossos mutex") {
        let partition = mutex_partition(&ops).map_err(|e| format!("{path}: {e}"))?;
        ("mutex", Loaded::Mutex(partition))
    } else {
        return Ok(None);
    };
    Ok(Some((loaded.0, loaded.1, count)))
}

/// One check of `loaded` under `options`, the way `ringleader check` does it.
fn time(loaded: &Loaded, options: &CheckOptions) -> Run {
    let started = Instant::now();
    let mut run = match loaded {
        Loaded::Register(history) => {
            let report = if options.shrink {
                check(history, options)
            } else {
                judge(history, options)
            };
            let violation = report.violations().next();
            let key_ops = violation.map_or(0, |v| v.ops.len());
            Run {
                verdict: report.verdict,
                search_steps: report.work.search_steps,
                shrink_checks: report.work.shrink_checks,
                shrink_steps: report.work.shrink_steps,
                key_ops,
                witness_ops: violation
                    .and_then(|v| v.shrunk.as_ref())
                    .map_or(key_ops, |s| s.ops.len()),
                wall: Duration::ZERO,
            }
        }
        Loaded::Kv(partitions) => partitioned(&KvModel, partitions, options),
        Loaded::Mutex(partition) => {
            partitioned(&MutexModel, std::slice::from_ref(partition), options)
        }
        Loaded::MultiRegister(model, partition) => {
            partitioned(model, std::slice::from_ref(partition), options)
        }
    };
    run.wall = started.elapsed();
    run
}

fn partitioned<M>(
    model: &M,
    partitions: &[Partition<M::Input, M::Output>],
    options: &CheckOptions,
) -> Run
where
    M: Model,
    M::Input: Clone,
    M::Output: Clone,
{
    let report: PartitionsReport = check_partitions(model, partitions, options.max_steps_per_key);
    let shrunk = if options.shrink {
        shrink_partition_violation(model, partitions, &report, options)
    } else {
        None
    };
    let key_ops = match report.per_partition.last() {
        Some(r) if report.verdict == Verdict::NotLinearizable => partitions[r.partition].ops.len(),
        _ => 0,
    };
    Run {
        verdict: report.verdict,
        search_steps: report.per_partition.iter().map(|r| r.steps).sum(),
        shrink_checks: shrunk.as_ref().map_or(0, |(_, s)| s.checks),
        shrink_steps: shrunk.as_ref().map_or(0, |(_, s)| s.steps),
        key_ops,
        witness_ops: shrunk.as_ref().map_or(key_ops, |(_, s)| s.kept.len()),
        wall: Duration::ZERO,
    }
}

/// The run with the median wall time of `repeats` (work and verdict are the same every time).
fn median(repeats: usize, mut run: impl FnMut() -> Run) -> Run {
    let mut runs: Vec<Run> = (0..repeats).map(|_| run()).collect();
    runs.sort_by_key(|r| r.wall);
    runs[runs.len() / 2]
}

fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
