//! Hand-made histories with known verdicts, one named case each, and the HTML report.
//!
//! Histories are written in a compact notation, one event per line, turned into the JSONL
//! format and parsed (so every case also exercises the parser):
//! `<process> <type> <f> [<value JSON> [<error>]]`, all on key "k" unless `@key` ends the line.

use jepsen_like::checker::{
    check, judge, CheckOptions, KeyOutcome, Verdict, Violation, FIRST_SLICE_STEPS,
};
use jepsen_like::history::{parse_jsonl, History, Outcome};
use jepsen_like::report::{render_history_html, render_violation_html};
use serde_json::{json, Value as Json};

fn history(script: &str) -> History {
    let mut jsonl = String::new();
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (line, key) = match line.rsplit_once(" @") {
            Some((rest, key)) => (rest, key),
            None => (line, "k"),
        };
        let mut parts = line.splitn(4, ' ');
        let process: u64 = parts.next().unwrap().parse().unwrap();
        let kind = parts.next().unwrap();
        let f = parts.next().unwrap();
        let rest = parts.next().unwrap_or("null");
        let (value, error) = match rest.rsplit_once(' ') {
            Some((v, e)) if e.chars().all(|c| c.is_ascii_alphabetic()) && e != "null" => {
                (v, Some(e))
            }
            _ => (rest, None),
        };
        let mut event = json!({"process": process, "type": kind, "f": f, "key": key,
                               "value": serde_json::from_str::<Json>(value).unwrap()});
        if let Some(e) = error {
            event["error"] = json!(e);
        }
        jsonl.push_str(&event.to_string());
        jsonl.push('\n');
    }
    parse_jsonl(&jsonl).unwrap_or_else(|e| panic!("{e}\n{jsonl}"))
}

fn verdict(script: &str) -> Verdict {
    check(&history(script), &CheckOptions::default()).verdict
}

fn violation(script: &str) -> (History, Violation) {
    let h = history(script);
    let report = check(&h, &CheckOptions::default());
    let v = report.violations().next().expect("a violation").clone();
    (h, v)
}

const OK: Verdict = Verdict::Linearizable;
const BAD: Verdict = Verdict::NotLinearizable;

#[test]
fn sequential_write_then_read() {
    assert_eq!(
        verdict("1 invoke write 1\n1 ok write 1\n2 invoke read\n2 ok read 1"),
        OK
    );
}

#[test]
fn empty_history_and_read_of_absent_key() {
    assert_eq!(verdict(""), OK);
    assert_eq!(verdict("1 invoke read\n1 ok read null"), OK);
}

#[test]
fn stale_read_is_a_violation() {
    let (h, v) = violation(
        "1 invoke write 1\n1 ok write 1\n1 invoke write 2\n1 ok write 2\n2 invoke read\n2 ok read 1",
    );
    assert_eq!(
        h.ops[v.failed_op].outcome,
        Outcome::Ok {
            read: Some(jepsen_like::history::Value::Int(1))
        }
    );
    assert_eq!(v.longest_prefix, vec![0, 1]);
}

#[test]
fn lost_write_is_a_violation() {
    assert_eq!(
        verdict("1 invoke write 1\n1 ok write 1\n2 invoke read\n2 ok read null"),
        BAD
    );
}

#[test]
fn read_of_a_value_never_written() {
    assert_eq!(
        verdict("1 invoke write 1\n2 invoke read\n1 ok write 1\n2 ok read 7"),
        BAD
    );
}

#[test]
fn concurrent_writes_may_take_effect_in_either_order() {
    let concurrent = "1 invoke write 1\n2 invoke write 2\n1 ok write 1\n2 ok write 2\n";
    assert_eq!(
        verdict(&format!("{concurrent}3 invoke read\n3 ok read 1")),
        OK
    );
    assert_eq!(
        verdict(&format!("{concurrent}3 invoke read\n3 ok read 2")),
        OK
    );
    // But once both are done, the value cannot flip between them.
    assert_eq!(
        verdict(&format!(
            "{concurrent}3 invoke read\n3 ok read 2\n3 invoke read\n3 ok read 1"
        )),
        BAD
    );
}

#[test]
fn concurrent_read_sees_old_or_new_value() {
    let base = "1 invoke write 1\n1 ok write 1\n1 invoke write 2\n2 invoke read\n";
    assert_eq!(verdict(&format!("{base}2 ok read 1\n1 ok write 2")), OK);
    assert_eq!(verdict(&format!("{base}2 ok read 2\n1 ok write 2")), OK);
    assert_eq!(verdict(&format!("{base}2 ok read 3\n1 ok write 2")), BAD);
}

#[test]
fn cas_success_changes_the_value() {
    let base = "1 invoke write 1\n1 ok write 1\n1 invoke cas [1,2]\n1 ok cas [1,2]\n";
    assert_eq!(verdict(&format!("{base}2 invoke read\n2 ok read 2")), OK);
    assert_eq!(verdict(&format!("{base}2 invoke read\n2 ok read 1")), BAD);
    // A successful cas needs the expected value.
    assert_eq!(
        verdict("1 invoke write 1\n1 ok write 1\n1 invoke cas [5,2]\n1 ok cas [5,2]"),
        BAD
    );
}

#[test]
fn cas_on_absent_key() {
    assert_eq!(
        verdict("1 invoke cas [null,1]\n1 ok cas [null,1]\n2 invoke read\n2 ok read 1"),
        OK
    );
    assert_eq!(
        verdict("1 invoke write 0\n1 ok write 0\n1 invoke cas [null,1]\n1 ok cas [null,1]"),
        BAD
    );
}

#[test]
fn cas_mismatch_is_an_observation_that_happened() {
    // The value was 1, so a cas expecting 2 may mismatch...
    assert_eq!(verdict("1 invoke write 1\n1 ok write 1\n2 invoke cas [2,3]\n2 fail cas [2,3] mismatch\n2 invoke read\n2 ok read 1"), OK);
    // ...but a cas expecting 1 cannot, with nothing concurrent.
    let (h, v) =
        violation("1 invoke write 1\n1 ok write 1\n2 invoke cas [1,3]\n2 fail cas [1,3] mismatch");
    assert_eq!(h.ops[v.failed_op].outcome, Outcome::CasMismatch);
    // Unless a concurrent write changed it first.
    assert_eq!(verdict("1 invoke write 1\n1 ok write 1\n2 invoke cas [1,3]\n1 invoke write 2\n1 ok write 2\n2 fail cas [1,3] mismatch\n2 invoke read\n2 ok read 2"), OK);
}

#[test]
fn fail_without_mismatch_did_not_happen() {
    let base = "1 invoke write 1\n1 ok write 1\n1 invoke write 2\n1 fail write 2 timeout\n";
    assert_eq!(verdict(&format!("{base}2 invoke read\n2 ok read 1")), OK);
    assert_eq!(verdict(&format!("{base}2 invoke read\n2 ok read 2")), BAD);
    // A cas failing for another reason did not happen either.
    assert_eq!(verdict("1 invoke write 1\n1 ok write 1\n2 invoke cas [1,3]\n2 fail cas [1,3] unavailable\n2 invoke read\n2 ok read 1"), OK);
}

#[test]
fn info_write_that_later_appears() {
    assert_eq!(verdict("1 invoke write 1\n1 ok write 1\n1 invoke write 2\n1 info write 2\n2 invoke read\n2 ok read 1\n2 invoke read\n2 ok read 2"), OK);
}

#[test]
fn info_write_that_never_appears() {
    assert_eq!(verdict("1 invoke write 1\n1 ok write 1\n1 invoke write 2\n1 info write 2\n2 invoke read\n2 ok read 1\n2 invoke read\n2 ok read 1"), OK);
}

#[test]
fn info_write_cannot_take_effect_before_its_invocation() {
    assert_eq!(
        verdict("2 invoke read\n2 ok read 2\n1 invoke write 2\n1 info write 2"),
        BAD
    );
}

#[test]
fn info_write_takes_effect_once() {
    // Seen, then overwritten, then seen again: it cannot happen twice.
    assert_eq!(verdict("1 invoke write 2\n1 info write 2\n2 invoke read\n2 ok read 2\n2 invoke write 3\n2 ok write 3\n2 invoke read\n2 ok read 2"), BAD);
}

#[test]
fn pending_at_end_of_file_is_unknown() {
    assert_eq!(verdict("1 invoke write 5\n2 invoke read\n2 ok read 5"), OK);
    assert_eq!(verdict("1 invoke write 5\n2 invoke read\n2 ok read 6"), BAD);
}

#[test]
fn info_cas_may_or_may_not_apply() {
    let base = "1 invoke write 1\n1 ok write 1\n1 invoke cas [1,2]\n1 info cas [1,2]\n";
    assert_eq!(verdict(&format!("{base}2 invoke read\n2 ok read 2")), OK);
    assert_eq!(verdict(&format!("{base}2 invoke read\n2 ok read 1")), OK);
    assert_eq!(verdict(&format!("{base}2 invoke read\n2 ok read 3")), BAD);
}

#[test]
fn process_reused_after_info_is_a_new_logical_process() {
    let h = history("1 invoke write 1\n1 info write 1\n1 invoke read\n1 ok read 1");
    assert_eq!(h.ops[1].generation, 1);
    assert_eq!(check(&h, &CheckOptions::default()).verdict, OK);
}

#[test]
fn values_compare_as_json() {
    assert_eq!(
        verdict("1 invoke write \"1\"\n1 ok write \"1\"\n2 invoke read\n2 ok read 1"),
        BAD
    );
    assert_eq!(
        verdict("1 invoke write \"x\"\n1 ok write \"x\"\n2 invoke read\n2 ok read \"x\""),
        OK
    );
}

#[test]
fn keys_are_checked_independently() {
    let h = history(
        "1 invoke write 1 @a\n1 ok write 1 @a\n2 invoke read @b\n2 ok read 1 @b\n3 invoke read @a\n3 ok read 1 @a",
    );
    let report = check(&h, &CheckOptions::default());
    assert_eq!(report.verdict, BAD);
    assert_eq!(report.per_key.len(), 2);
    assert_eq!(report.per_key[0].outcome, KeyOutcome::Linearizable);
    assert!(matches!(&report.per_key[1].outcome, KeyOutcome::Violation(v) if v.key == "b"));
    assert_eq!(report.ops_checked, 3);
}

#[test]
fn exhausted_budget_is_unknown_not_a_violation() {
    // Many concurrent writes and a read of a value nobody wrote: refuting it takes a search
    // over all orders, far beyond 100 steps.
    let mut script = String::new();
    for p in 0..12 {
        script.push_str(&format!("{p} invoke write {p}\n"));
    }
    script.push_str("99 invoke read\n99 ok read 77\n");
    for p in 0..12 {
        script.push_str(&format!("{p} ok write {p}\n"));
    }
    let h = history(&script);
    let tight = CheckOptions {
        max_steps_per_key: 100,
        ..CheckOptions::default()
    };
    let report = check(&h, &tight);
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(report.per_key[0].outcome, KeyOutcome::Unknown);
    assert_eq!(report.per_key[0].steps, 100);
    assert_eq!(check(&h, &CheckOptions::default()).verdict, BAD);
}

#[test]
fn shrinking_keeps_a_sound_witness() {
    // Lots of harmless reads around a stale read.
    let mut script = String::from("1 invoke write 1\n1 ok write 1\n");
    for i in 0..30 {
        script.push_str(&format!("{} invoke read\n{} ok read 1\n", 10 + i, 10 + i));
    }
    script.push_str(
        "1 invoke write 2\n1 ok write 2\n2 invoke read\n2 ok read 1\n3 invoke read\n3 ok read 2\n",
    );
    let (h, v) = violation(&script);
    let shrunk = v.shrunk.expect("shrunk");
    assert_eq!(shrunk.ops.len(), 3, "{:?}", shrunk.ops);
    assert_eq!(shrunk.failed_op, v.failed_op);
    assert_eq!(h.ops[shrunk.failed_op].process, 2);
    // Without shrinking, nothing is reported.
    let no_shrink = CheckOptions {
        shrink: false,
        ..CheckOptions::default()
    };
    let report = check(&h, &no_shrink);
    assert!(report.violations().next().unwrap().shrunk.is_none());
}

#[test]
fn html_report_draws_the_violation() {
    let (h, v) = violation(
        "1 invoke write 1\n1 ok write 1\n2 invoke write 2\n3 invoke read\n3 ok read 7\n2 ok write 2\n4 invoke write 9\n4 info write 9\n5 invoke write 3\n5 fail write 3",
    );
    let html = render_violation_html(&h, &v);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert!(html.contains("<svg"));
    // The only URL is the SVG namespace: no external resources.
    assert_eq!(
        html.matches("http").count(),
        html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    assert!(
        !html.contains("<script") && !html.contains("src="),
        "self-contained"
    );
    // The failed op is labelled and marked.
    assert!(html.contains("r → 7"), "{html}");
    assert!(html.contains(&format!("class=\"op failed\" data-op=\"{}\"", v.failed_op)));
    // One row per process in each drawing (shrunk witness + full history).
    let full_rows = 5;
    let rows = html.matches("<g class=\"row\"").count();
    let shrunk_rows = v.shrunk.as_ref().map_or(0, |s| {
        s.ops
            .iter()
            .map(|&id| h.ops[id].process)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    });
    assert_eq!(rows, full_rows + shrunk_rows);
    // Unknown and dropped ops are styled as such; the prefix is numbered.
    assert!(html.contains("class=\"op unknown\""));
    assert!(html.contains("class=\"op dropped\""));
    assert!(html.contains("class=\"op linearized\""));
    assert!(html.contains("#1 w 1"));
    // Well-formed enough: tags balance.
    for tag in ["svg", "g", "text", "title", "html", "body", "ol", "p", "h2"] {
        let opens =
            html.matches(&format!("<{tag}>")).count() + html.matches(&format!("<{tag} ")).count();
        let closes = html.matches(&format!("</{tag}>")).count();
        assert_eq!(opens, closes, "<{tag}>");
    }
    let plain = render_history_html(&h, "k");
    assert!(plain.contains("<svg") && plain.contains("r → 7"));
}

/// A stale read among `reads` harmless reads of 1: the minimal witness is w1, w2 and the stale
/// read (3 ops); getting there takes the shrinker several searches.
fn stale_read_among(reads: usize) -> History {
    let mut script = String::from("1 invoke write 1\n1 ok write 1\n");
    for i in 0..reads {
        script.push_str(&format!("{} invoke read\n{} ok read 1\n", 10 + i, 10 + i));
    }
    script.push_str(
        "1 invoke write 2\n1 ok write 2\n2 invoke read\n2 ok read 1\n3 invoke read\n3 ok read 2\n",
    );
    history(&script)
}

#[test]
fn no_shrink_gives_the_same_verdict_and_does_no_shrinking() {
    let h = stale_read_among(30);
    let off = CheckOptions {
        shrink: false,
        ..CheckOptions::default()
    };
    let unshrunk = check(&h, &off);
    let shrunk = check(&h, &CheckOptions::default());
    assert_eq!(unshrunk.verdict, BAD);
    let v = unshrunk.violations().next().expect("a violation");
    assert!(v.shrunk.is_none(), "{:?}", v.shrunk);
    assert_eq!(unshrunk.work.shrink_checks, 0);
    assert_eq!(unshrunk.work.shrink_steps, 0);
    // The verdict and the search's findings do not depend on shrinking.
    let w = shrunk.violations().next().expect("a violation");
    assert_eq!(
        (&v.key, v.failed_op, &v.longest_prefix),
        (&w.key, w.failed_op, &w.longest_prefix)
    );
    assert_eq!(unshrunk.work.search_steps, shrunk.work.search_steps);
    assert!(shrunk.work.shrink_checks > 0);
    // judge is the verdict step alone, whatever `shrink` says.
    assert_eq!(judge(&h, &CheckOptions::default()), unshrunk);
}

#[test]
fn shrinking_finds_a_witness_within_the_violating_key() {
    // The violation is on key "b"; key "a" is linearizable and much busier.
    let mut script = String::new();
    for i in 0..20 {
        script.push_str(&format!("1 invoke write {i} @a\n1 ok write {i} @a\n"));
    }
    script.push_str("1 invoke write 1 @b\n1 ok write 1 @b\n");
    for i in 0..10 {
        script.push_str(&format!(
            "{} invoke read @b\n{} ok read 1 @b\n",
            10 + i,
            10 + i
        ));
    }
    script.push_str("1 invoke write 2 @b\n1 ok write 2 @b\n2 invoke read @b\n2 ok read 1 @b\n");
    let h = history(&script);
    let report = check(&h, &CheckOptions::default());
    let v = report.violations().next().expect("a violation");
    assert_eq!(v.key, "b");
    let shrunk = v.shrunk.as_ref().expect("shrunk");
    assert!(shrunk.ops.len() <= v.ops.len());
    assert!(shrunk.ops.iter().all(|id| v.ops.contains(id)), "{shrunk:?}");
    assert!(shrunk.ops.contains(&shrunk.failed_op));
    assert_eq!(shrunk.ops.len(), 3, "{shrunk:?}");
    assert!(report.work.shrink_steps > 0);
}

#[test]
fn shrinking_stops_at_its_bounds_and_the_violation_stands() {
    let h = stale_read_among(40);
    let full = check(&h, &CheckOptions::default());
    assert_eq!(
        full.violations()
            .next()
            .unwrap()
            .shrunk
            .as_ref()
            .unwrap()
            .ops
            .len(),
        3
    );
    let needed_checks = full.work.shrink_checks;
    let needed_steps = full.work.shrink_steps;
    assert!(needed_checks > 2 && needed_steps > 20, "{:?}", full.work);

    // Bounded by searches.
    let by_checks = CheckOptions {
        max_shrink_checks: 2,
        ..CheckOptions::default()
    };
    // Bounded by search iterations summed over the searches.
    let by_steps = CheckOptions {
        max_shrink_steps: needed_steps / 2,
        ..CheckOptions::default()
    };
    for options in [by_checks, by_steps] {
        let report = check(&h, &options);
        assert_eq!(report.verdict, BAD);
        assert!(
            report.work.shrink_checks <= options.max_shrink_checks,
            "{:?}",
            report.work
        );
        assert!(
            report.work.shrink_steps <= options.max_shrink_steps,
            "{:?}",
            report.work
        );
        let v = report.violations().next().expect("a violation");
        assert_eq!(v.failed_op, full.violations().next().unwrap().failed_op);
        let shrunk = v
            .shrunk
            .as_ref()
            .expect("a witness, even if not the smallest");
        assert!(
            shrunk.ops.len() > 3,
            "stopped early, yet minimal: {shrunk:?}"
        );
        assert!(shrunk.ops.len() <= v.ops.len());
    }
    // A zero bound: no shrink search at all, the witness is the key's history.
    let none = CheckOptions {
        max_shrink_checks: 0,
        ..CheckOptions::default()
    };
    let report = check(&h, &none);
    assert_eq!(report.work.shrink_checks, 0);
    let v = report.violations().next().unwrap();
    assert_eq!(v.shrunk.as_ref().unwrap().failed_op, v.failed_op);
}

#[test]
fn the_cheapest_violation_decides_and_the_other_keys_are_skipped() {
    // Key "a": 12 concurrent writes and a read of a value nobody wrote; refuting it means
    // trying every order (284,334 search iterations). Key "b": a stale read, refuted at once.
    let mut script = String::new();
    for p in 0..12 {
        script.push_str(&format!("{p} invoke write {p} @a\n"));
    }
    script.push_str("99 invoke read @a\n99 ok read 77 @a\n");
    for p in 0..12 {
        script.push_str(&format!("{p} ok write {p} @a\n"));
    }
    let a_alone = judge(&history(&script), &CheckOptions::default());
    script.push_str(
        "1 invoke write 1 @b\n1 ok write 1 @b\n1 invoke write 2 @b\n1 ok write 2 @b\n\
         2 invoke read @b\n2 ok read 1 @b\n",
    );
    let h = history(&script);
    let report = judge(&h, &CheckOptions::default());
    assert_eq!(report.verdict, BAD);
    let v = report.violations().next().expect("a violation");
    assert_eq!(v.key, "b");
    assert_eq!(report.per_key[0].key, "a");
    assert_eq!(report.per_key[0].outcome, KeyOutcome::Skipped);
    assert_eq!(report.per_key[0].steps, FIRST_SLICE_STEPS);
    // Not searched to the end: less than refuting "a" alone costs.
    assert!(
        a_alone.work.search_steps > 2 * FIRST_SLICE_STEPS,
        "{:?}",
        a_alone.work
    );
    assert!(
        report.work.search_steps < a_alone.work.search_steps / 2,
        "{:?}",
        report.work
    );
}
