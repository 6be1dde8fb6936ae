//! Golden scenario scripts: `tests/scenarios/*.txt`, in the style of etcd-io/raft's datadriven
//! tests and toydb's goldenscripts. Each `> command` line is followed by the output it produced;
//! the test re-runs every command and fails if any output changed. After an intended change,
//! regenerate with `UPDATE_GOLDEN=1 cargo test -p consensus --test scenarios -- --nocapture` (it
//! prints each script it rewrote; any other value of `UPDATE_GOLDEN` fails the test) and review the
//! diff. The set of scripts is fixed ([`SCRIPTS`]): adding or removing one means editing it.
//!
//! Commands (node ids are numbers, `all` means every node):
//! - `cluster <n> [prevote=bool] [checkquorum=bool] [lease=bool] [election=ticks]
//!   [heartbeat=ticks] [inflight=n] [max_entries=n] [tail=n]`: a fresh cluster of nodes 1..=n
//!   (`tail` is `compaction_tail_entries`).
//! - `tick <id|all> [x<count>] [deliver]`: tick the node(s), optionally delivering all messages
//!   (silently; effects are still printed) after each round of ticks.
//! - `campaign <id>`, `propose <id> <text>`, `read <id> <request>[..<last>] [lease]` (requests
//!   `request..=last` registered together, before the node's next Ready; `lease`: in
//!   `ReadMode::Lease`, else `ReadMode::ReadIndex`),
//!   `transfer <from> <to>`, `compact <id>`, `crash <id>`, `restart <id>`.
//! - `deliver`: deliver every queued message, and those they cause, in order, printing each one
//!   and its effects; `deliver round`: only the messages queued right now; `drop`: lose them all.
//! - `partition 1 2 | 3`, `heal`: messages between groups are dropped at delivery.
//! - `status [id]`, `log [id]`: print node state or logs.
//!
//! Lines starting with `#` and blank lines are kept as they are: they explain the scenario.
//! Safety invariants are checked after every command.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::Cluster;
use consensus::ReadMode;

struct Interpreter {
    cluster: Option<Cluster>,
}

impl Interpreter {
    fn cluster(&mut self) -> &mut Cluster {
        self.cluster
            .as_mut()
            .expect("scenario must start with `cluster`")
    }

    fn node_ids(&mut self, arg: &str) -> Vec<u64> {
        if arg == "all" {
            self.cluster().ids()
        } else {
            vec![parse_id(arg)]
        }
    }

    fn run(&mut self, command: &str) -> Vec<String> {
        let words: Vec<&str> = command.split_whitespace().collect();
        let mut out = Vec::new();
        match words.as_slice() {
            ["cluster", n, options @ ..] => {
                let n: u64 = n.parse().expect("cluster size");
                let options: Vec<(String, String)> = options
                    .iter()
                    .map(|o| {
                        let (k, v) = o.split_once('=').expect("option is key=value");
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                self.cluster = Some(Cluster::new(n, |c| {
                    for (key, value) in &options {
                        let flag = || value.parse::<bool>().expect("true or false");
                        let number = || value.parse::<u32>().expect("a number");
                        match key.as_str() {
                            "prevote" => c.pre_vote = flag(),
                            "checkquorum" => c.check_quorum = flag(),
                            "lease" => c.allow_lease_reads = flag(),
                            "election" => c.election_timeout_ticks = number(),
                            "heartbeat" => c.heartbeat_interval_ticks = number(),
                            "inflight" => c.max_inflight_appends = number() as usize,
                            "max_entries" => c.max_entries_per_append = number() as usize,
                            "tail" => c.compaction_tail_entries = u64::from(number()),
                            other => panic!("unknown cluster option {other}"),
                        }
                    }
                }));
                out.extend(self.cluster().status_lines(None));
            }
            ["campaign", id] => self.cluster().campaign(parse_id(id)),
            ["tick", target, rest @ ..] => {
                let mut count = 1;
                let mut deliver = false;
                for word in rest {
                    match (word.strip_prefix('x'), *word) {
                        (Some(times), _) => count = times.parse().expect("tick count like x5"),
                        (None, "deliver") => deliver = true,
                        _ => panic!("usage: tick <id|all> [x<count>] [deliver]"),
                    }
                }
                let ids = self.node_ids(target);
                for _ in 0..count {
                    for &id in &ids {
                        self.cluster().tick(id);
                    }
                    if deliver {
                        self.cluster().settle();
                    }
                }
            }
            ["deliver"] => out.extend(self.deliver(false)),
            ["deliver", "round"] => out.extend(self.deliver(true)),
            ["drop"] => {
                let dropped = self.cluster().network.len();
                self.cluster().network.clear();
                out.push(format!("dropped {dropped} messages"));
            }
            ["propose", id, text @ ..] => {
                let result = self.cluster().propose(parse_id(id), &text.join(" "));
                out.push(match result {
                    Ok(index) => format!("proposed at index {index}"),
                    Err(e) => format!("refused: {e}"),
                });
            }
            ["read", id, requests, mode @ ..] => {
                let (first, last) = match requests.split_once("..") {
                    Some((first, last)) => (first, last),
                    None => (*requests, *requests),
                };
                let first: u64 = first.parse().expect("request id");
                let last: u64 = last.parse().expect("request id");
                let mode = match mode {
                    [] => ReadMode::ReadIndex,
                    ["lease"] => ReadMode::Lease,
                    _ => panic!("usage: read <id> <request>[..<last>] [lease]"),
                };
                let result = self.cluster().read_batch(parse_id(id), first..=last, mode);
                if let Err(e) = result {
                    out.push(format!("refused: {e}"));
                }
            }
            ["transfer", from, to] => {
                let result = self.cluster().transfer(parse_id(from), parse_id(to));
                out.push(format!("transfer: {result}"));
            }
            ["compact", id] => {
                let result = self.cluster().compact(parse_id(id));
                out.push(result);
            }
            ["crash", id] => self.cluster().crash(parse_id(id)),
            ["restart", id] => self.cluster().restart(parse_id(id)),
            ["partition", groups @ ..] => {
                let groups: Vec<BTreeSet<u64>> = groups
                    .split(|w| *w == "|")
                    .map(|g| g.iter().map(|id| parse_id(id)).collect())
                    .collect();
                self.cluster().partition(groups);
            }
            ["heal"] => self.cluster().heal(),
            ["status"] => out.extend(self.cluster().status_lines(None)),
            ["status", id] => out.extend(self.cluster().status_lines(Some(parse_id(id)))),
            ["log"] => out.extend(self.cluster().log_lines(None)),
            ["log", id] => out.extend(self.cluster().log_lines(Some(parse_id(id)))),
            _ => panic!("unknown scenario command: {command}"),
        }
        let cluster = self.cluster();
        out.extend(cluster.events.drain(..).map(|e| format!("  {e}")));
        if let Err(violation) = cluster.check() {
            panic!("safety violated after `{command}`: {violation}");
        }
        if out.is_empty() {
            out.push("ok".to_string());
        }
        out
    }

    fn deliver(&mut self, one_round: bool) -> Vec<String> {
        let cluster = self.cluster();
        let mut out = Vec::new();
        let mut batch = if one_round {
            std::mem::take(&mut cluster.network)
        } else {
            Vec::new()
        };
        loop {
            let msg = if one_round {
                if batch.is_empty() {
                    break;
                }
                batch.remove(0)
            } else {
                if cluster.network.is_empty() {
                    break;
                }
                cluster.network.remove(0)
            };
            let line = msg.to_string();
            let delivered = cluster.deliver(msg);
            out.push(if delivered {
                line
            } else {
                format!("{line} (dropped)")
            });
            out.extend(cluster.events.drain(..).map(|e| format!("  {e}")));
            assert!(out.len() < 10_000, "network did not quiesce");
        }
        out
    }
}

fn parse_id(word: &str) -> u64 {
    word.parse()
        .unwrap_or_else(|_| panic!("not a node id: {word}"))
}

/// Runs one script and returns its regenerated text.
fn run_script(text: &str) -> String {
    let mut interpreter = Interpreter { cluster: None };
    let mut output = String::new();
    let mut in_output = false;
    for line in text.lines() {
        if let Some(command) = line.strip_prefix("> ") {
            output.push_str(line);
            output.push('\n');
            for produced in interpreter.run(command.trim()) {
                output.push_str(&produced);
                output.push('\n');
            }
            in_output = true;
        } else if line.trim().is_empty() || line.starts_with('#') {
            in_output = false;
            output.push_str(line);
            output.push('\n');
        } else if !in_output {
            panic!("stray line outside any command's output: {line}");
        }
        // Otherwise: a previously recorded output line, replaced by the fresh output above.
    }
    output
}

/// Every script the suite holds, by file name: a script that disappears (or one added without
/// being listed here) fails the test instead of silently shrinking the suite.
const SCRIPTS: [&str; 6] = [
    "election.txt",
    "figure8.txt",
    "prevote.txt",
    "read_rounds.txt",
    "replication.txt",
    "snapshot_and_reads.txt",
];

/// Whether to rewrite the scripts: only `UPDATE_GOLDEN=1`. Any other value is refused, so that
/// `UPDATE_GOLDEN=0` (or a stray export) cannot turn a failing comparison into a rewrite.
fn update_requested() -> bool {
    match std::env::var_os("UPDATE_GOLDEN") {
        None => false,
        Some(value) if value == "1" => true,
        Some(value) => panic!("UPDATE_GOLDEN={value:?}: only UPDATE_GOLDEN=1 rewrites the scripts"),
    }
}

#[test]
fn golden_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".txt"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        SCRIPTS,
        "the scenario scripts in {} are not the expected set (update SCRIPTS when adding or \
         removing one)",
        dir.display()
    );
    let update = update_requested();
    let mut failures = Vec::new();
    let mut rewritten = Vec::new();
    for name in SCRIPTS {
        let path = dir.join(name);
        let expected = fs::read_to_string(&path).expect("readable scenario");
        let actual = run_script(&expected);
        if actual == expected {
            continue;
        }
        if update {
            fs::write(&path, &actual).expect("writable scenario");
            println!("UPDATE_GOLDEN=1: rewrote {}", path.display());
            rewritten.push(name);
            continue;
        }
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .find(|(_, (e, a))| e != a)
            .map(|(i, (e, a))| format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1))
            .unwrap_or_else(|| "the outputs differ in length".to_string());
        failures.push(format!("{}: {first_difference}", path.display()));
    }
    if update {
        // Shown with `--nocapture`; the list is also the test's last word on what changed.
        println!(
            "UPDATE_GOLDEN=1: {} script(s) rewritten: {rewritten:?}",
            rewritten.len()
        );
    }
    assert!(
        failures.is_empty(),
        "golden scenarios changed (rerun with UPDATE_GOLDEN=1 if intended):\n{}",
        failures.join("\n")
    );
}
