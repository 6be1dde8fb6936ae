//! `ringleader check`, the real binary, on every public history with a known linearizability
//! verdict in `jepsen-like/test-data/histories` (its README.md and verdicts.tsv): Porcupine's kv files and
//! Knossos's cas-register, multi-register and mutex histories. The format comes from the file
//! extension and the Knossos model from the operations, as a user would run it; the exit code
//! must be 0 for every linearizable file and 1 for every other. Wall time is printed (run with
//! `--nocapture`), never asserted.
//!
//! Skipped: the Elle list-append histories. They are multi-key transactions judged by Elle's
//! isolation-anomaly checker (G2-item, snapshot isolation), not by linearizability against a
//! sequential model, so they have no verdict `ringleader check` could agree with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Root of the public histories, vendored into the jepsen-like crate (sources and licences in
/// its README).
const HISTORIES_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../jepsen-like/test-data/histories"
);

/// Processes run at once: a little parallelism, within the two cores CI has.
const PARALLEL_RUNS: usize = 2;

struct Row {
    path: String,
    model: String,
    linearizable: bool,
}

fn verdicts() -> Vec<Row> {
    let tsv = Path::new(HISTORIES_DIR).join("verdicts.tsv");
    let text = std::fs::read_to_string(&tsv).unwrap_or_else(|e| panic!("{}: {e}", tsv.display()));
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let columns: Vec<&str> = line.split('\t').collect();
            assert!(columns.len() >= 3, "verdicts.tsv row {line:?}");
            Row {
                path: columns[0].to_string(),
                model: columns[1].to_string(),
                linearizable: columns[2] == "linearizable",
            }
        })
        .collect()
}

/// Runs the binary on one file; returns its exit code and wall time.
fn check(path: &Path, html: &Path) -> (Option<i32>, std::time::Duration, String) {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .arg("check")
        .arg(path)
        .arg("--html")
        .arg(html)
        .output()
        .expect("the ringleader binary runs");
    let elapsed = started.elapsed();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), elapsed, said)
}

#[test]
fn ringleader_check_agrees_with_every_linearizability_verdict() {
    let started = Instant::now();
    let rows: Vec<Row> = verdicts()
        .into_iter()
        .filter(|row| {
            let elle = row.model.starts_with("elle");
            if elle {
                println!("skipped (Elle, not linearizability): {}", row.path);
            }
            !elle
        })
        .collect();
    assert_eq!(rows.len(), 6 + 120 + 1 + 1, "linearizability rows");
    for row in &rows {
        // `NOT_linearizable(folder convention only)`: the mutex file, invalid by its folder.
        assert!(
            row.linearizable || row.path.contains("/bad/") || row.path.ends_with("-bad.txt"),
            "{}: not linearizable, yet not under bad/",
            row.path
        );
    }
    // Drawings of violations go here, not beside the (read-only) shared files.
    let drawings = tempfile::tempdir().expect("a temporary directory");

    let next = AtomicUsize::new(0);
    let wrong = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_RUNS {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(row) = rows.get(index) else { break };
                let path = PathBuf::from(HISTORIES_DIR).join(&row.path);
                let html = drawings.path().join(format!("{index}.html"));
                let (code, elapsed, said) = check(&path, &html);
                let expected = if row.linearizable { 0 } else { 1 };
                println!(
                    "{:>8.1} ms  exit {code:?}  {}",
                    elapsed.as_secs_f64() * 1e3,
                    row.path
                );
                if code != Some(expected) {
                    wrong
                        .lock()
                        .expect("no panics while holding the lock")
                        .push(format!(
                            "{}: exit {code:?}, expected {expected}\n{said}",
                            row.path
                        ));
                }
            });
        }
    });
    let wrong = wrong
        .into_inner()
        .expect("no panics while holding the lock");
    println!("{} files in {:?}", rows.len(), started.elapsed());
    assert!(wrong.is_empty(), "verdicts disagree:\n{}", wrong.join("\n"));
}

#[test]
fn malformed_files_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bad_edn = dir.path().join("bad.edn");
    std::fs::write(
        &bad_edn,
        "{:process 0 :type :invoke :f :read :value nil}\n{:process 0 :type :ok :f :frob}\n",
    )
    .expect("write");
    let (code, _, said) = check(&bad_edn, &dir.path().join("x.html"));
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("line 2"), "{said}");

    let unknown_extension = dir.path().join("history.log");
    std::fs::write(&unknown_extension, "").expect("write");
    let (code, _, said) = check(&unknown_extension, &dir.path().join("x.html"));
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("--format"), "{said}");

    // An explicit --format wins over the extension: the same empty file, read as JSONL (and
    // refused as empty, not for its extension: an empty history is an error, not a pass).
    let output = Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(["check", "--format", "jsonl"])
        .arg(&unknown_extension)
        .output()
        .expect("the ringleader binary runs");
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{said}");
    assert!(said.contains("no operations"), "{said}");
}

#[test]
fn sim_fails_a_run_that_served_nothing_even_though_it_is_linearizable() {
    let out = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args([
            "sim",
            "--seed",
            "3",
            "--ops",
            "80",
            "--plant-bug",
            "refuse-writes",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("too few successful operations"), "{stdout}");
    // The replay line replays the same run: the planted bug included.
    let replay = stdout
        .lines()
        .find(|line| line.starts_with("replay: ringleader sim --seed 3 "))
        .unwrap_or_else(|| panic!("no replay line: {stdout}"));
    assert!(replay.ends_with(" --plant-bug refuse-writes"), "{replay}");
}

#[test]
fn sim_help_lists_the_planted_bug_catalogue() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringleader"))
        .args(["sim", "--help"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    for entry in ringleader_node::planted::CATALOGUE {
        assert!(
            stdout.contains(entry.name),
            "{} missing: {stdout}",
            entry.name
        );
        assert!(stdout.contains(entry.description), "{stdout}");
    }
}

/// `check` prints the verdict first; shrinking comes after it, and `--no-shrink` skips it (the
/// whole sub-history is listed instead of a shrunk witness).
#[test]
fn check_prints_the_verdict_before_shrinking_and_no_shrink_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let history = Path::new(HISTORIES_DIR).join("knossos/data/cas-register/bad/cas-failure.edn");
    let run = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_ringleader"))
            .arg("check")
            .arg(&history)
            .arg("--html")
            .arg(dir.path().join("x.html"))
            .args(extra)
            .output()
            .expect("the ringleader binary runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let verdict = "NOT linearizable: key \"register\": process 70";

    let (code, shrinking) = run(&[]);
    assert_eq!(code, Some(1), "{shrinking}");
    let verdict_at = shrinking.find(verdict).expect(&shrinking);
    let shrink_at = shrinking.find("shrinking: ").expect(&shrinking);
    assert!(verdict_at < shrink_at, "{shrinking}");
    assert!(shrinking.contains(", shrunk ("), "{shrinking}");

    let (code, plain) = run(&["--no-shrink"]);
    assert_eq!(code, Some(1), "{plain}");
    assert!(plain.contains(verdict), "{plain}");
    assert!(!plain.contains("shrinking"), "{plain}");
    assert!(!plain.contains("shrunk"), "{plain}");
    assert!(plain.contains("sub-history (292 ops)"), "{plain}");
}

/// `sim --no-shrink` checks each run without shrinking: the violation is the same, and its
/// drawing has no shrunk witness (it has one without the flag). The planted bug is caught
/// within a few seeds (`jepsen-like/tests/sim_planted_bug.rs`); the first seed that catches it
/// is used.
#[test]
fn sim_no_shrink_reports_the_violation_without_a_shrunk_witness() {
    let sim = |seed: u64, out: &Path, extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_ringleader"))
            .args([
                "sim",
                "--seed",
                &seed.to_string(),
                "--plant-bug",
                "local-reads",
            ])
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .expect("the ringleader binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let html = std::fs::read_to_string(out.join("report.html")).unwrap_or_default();
        (output.status.code(), stdout, html)
    };
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..8 {
        let plain_dir = dir.path().join(format!("plain-{seed}"));
        let (code, stdout, html) = sim(seed, &plain_dir, &["--no-shrink"]);
        let Some(verdict) = stdout.lines().find(|l| l.starts_with("verdict: Violation")) else {
            continue;
        };
        assert_eq!(code, Some(1), "{stdout}");
        assert!(
            stdout.contains("--no-shrink"),
            "the replay line keeps the flag: {stdout}"
        );
        assert!(html.contains("Not linearizable"), "{html}");
        assert!(!html.contains("Shrunk witness"), "{html}");

        let (code, stdout, html) = sim(seed, &dir.path().join(format!("shrunk-{seed}")), &[]);
        assert_eq!(code, Some(1), "{stdout}");
        assert!(stdout.contains(verdict), "{stdout}");
        assert!(html.contains("Shrunk witness"), "{html}");
        return;
    }
    panic!("no seed in 0..8 caught reads served from local state");
}

/// A history with consistency levels: `check` checks linearizability over the levels that
/// promise it (a stale read of an old value is left out, not a violation), then the session
/// guarantees and staleness bounds, and exits 1 when one of those broke.
#[test]
fn check_judges_each_level_by_its_own_promise() {
    let dir = tempfile::tempdir().unwrap();
    let line = |process: u64, kind: &str, f: &str, value: &str, extra: &str| {
        format!(
            "{{\"process\":{process},\"type\":\"{kind}\",\"f\":\"{f}\",\"key\":\"k\",\"value\":{value}{extra}}}\n"
        )
    };
    // Process 1 writes version 10, then reads at `level` and gets the key absent.
    let history = |level: &str| {
        let mut text = line(1, "invoke", "write", "1", ",\"level\":\"majority\"");
        text += &line(1, "ok", "write", "1", ",\"version\":10");
        text += &line(
            1,
            "invoke",
            "read",
            "null",
            &format!(",\"level\":\"{level}\""),
        );
        text += &line(1, "ok", "read", "null", ",\"version\":0");
        text
    };
    let run = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_ringleader"))
            .arg("check")
            .arg(&path)
            .output()
            .expect("the ringleader binary runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, stdout) = run("stale.jsonl", history("stale"));
    assert_eq!(code, Some(0), "a stale read may miss a write: {stdout}");
    assert!(
        stdout.contains("1 session and stale reads left out"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stale 1 of 1"),
        "the stale read is counted: {stdout}"
    );
    let (code, stdout) = run("session.jsonl", history("session"));
    assert_eq!(code, Some(1), "read-your-writes broke: {stdout}");
    assert!(stdout.contains("session guarantees BROKEN"), "{stdout}");
    assert!(stdout.contains("read-your-writes"), "{stdout}");
}
