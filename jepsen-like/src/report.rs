//! Self-contained HTML reports of histories and violations, in the spirit of Porcupine's
//! visualizer.
//!
//! Each drawing is an inline SVG: one row per logical process, one bar per operation spanning
//! its invocation to its completion on a time axis, labelled with the function, its value and
//! its result. In a violation, the longest linearizable prefix is green with its linearization
//! order number, the operation that could not be placed is red, unknown-outcome operations are
//! grey and hatched, and operations that certainly failed (ignored by the checker) are dashed.
//!
//! The time axis is *ordinal*: every distinct event position gets the same width, so bursts
//! of activity stay readable (real nanoseconds, when present, are in each bar's tooltip).
//! Bounded: at most [`MAX_OPS_DRAWN`] operations per drawing, the ones invoked nearest the
//! failing operation; the page says when it left some out. No external resources, no script.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::checker::Violation;
use crate::history::{display_optional, History, Input, OpId, Operation, Outcome, Value};

/// Operations drawn per SVG at most.
pub const MAX_OPS_DRAWN: usize = 300;

const ROW_HEIGHT_PX: usize = 34;
const BAR_HEIGHT_PX: usize = 24;
const EVENT_WIDTH_PX: usize = 26;
const LABEL_WIDTH_PX: usize = 90;
const MARGIN_PX: usize = 10;
const AXIS_HEIGHT_PX: usize = 22;

/// What to highlight in a drawing.
#[derive(Default)]
struct Marks {
    /// Linearization order (1-based) of the ops in the longest prefix.
    order: BTreeMap<OpId, usize>,
    failed: Option<OpId>,
    /// Ops completing after this position are drawn as unknown-outcome (shrunk witnesses).
    cut_seq: Option<u64>,
}

/// A page for a violation: the shrunk witness (if any) and the key's history around the
/// failure.
pub fn render_violation_html(history: &History, violation: &Violation) -> String {
    let failed = &history.ops[violation.failed_op];
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Not linearizable: key {}</h1>\n<p class=\"summary\">",
        escape(&violation.key)
    );
    let _ = writeln!(
        body,
        "After a longest linearizable prefix of {} operation(s), leaving the value {}, \
         operation <b class=\"failed-text\">{}</b> (process {}, invoked at line {}) could not be \
         linearized.</p>",
        violation.longest_prefix.len(),
        escape(&display_optional(&replay(
            history,
            &violation.longest_prefix
        ))),
        escape(&failed.label()),
        failed.process,
        failed.invoke_seq,
    );
    body.push_str(LEGEND);
    if let Some(shrunk) = &violation.shrunk {
        let marks = Marks {
            order: numbered(&shrunk.longest_prefix),
            failed: Some(shrunk.failed_op),
            cut_seq: shrunk.cut_seq,
        };
        let _ = write!(
            body,
            "<h2>Shrunk witness: {} of {} operations</h2>\n<p>A smaller history that is still \
             not linearizable: reads were dropped while the violation remained{}.</p>\n",
            shrunk.ops.len(),
            violation.ops.len(),
            match shrunk.cut_seq {
                Some(cut) => format!(
                    ", and the history was cut after line {cut} (operations still running \
                     there count as unknown)"
                ),
                None => String::new(),
            }
        );
        body.push_str(&draw(history, &shrunk.ops, &marks));
    }
    let marks = Marks {
        order: numbered(&violation.longest_prefix),
        failed: Some(violation.failed_op),
        cut_seq: None,
    };
    let _ = writeln!(
        body,
        "<h2>History of key {} ({} operations)</h2>",
        escape(&violation.key),
        violation.ops.len()
    );
    body.push_str(&draw(history, &violation.ops, &marks));
    body.push_str("<h2>Longest linearizable prefix</h2>\n<ol class=\"prefix\">\n");
    for &id in &violation.longest_prefix {
        let op = &history.ops[id];
        let _ = writeln!(
            body,
            "<li>p{} {} <small>(line {})</small></li>",
            op.process,
            escape(&op.label()),
            op.invoke_seq
        );
    }
    let _ = writeln!(
        body,
        "<li class=\"failed-text\">✗ p{} {} <small>(line {})</small></li>\n</ol>",
        failed.process,
        escape(&failed.label()),
        failed.invoke_seq
    );
    page(&format!("Violation on key {}", violation.key), &body)
}

/// A page drawing the history of one key, without verdict marks.
pub fn render_history_html(history: &History, key: &str) -> String {
    let ops: Vec<OpId> = history
        .ops
        .iter()
        .filter(|op| op.key == key)
        .map(|op| op.id)
        .collect();
    let mut body = format!(
        "<h1>History of key {} ({} operations)</h1>\n",
        escape(key),
        ops.len()
    );
    body.push_str(LEGEND);
    body.push_str(&draw(history, &ops, &Marks::default()));
    page(&format!("History of key {key}"), &body)
}

fn numbered(prefix: &[OpId]) -> BTreeMap<OpId, usize> {
    prefix
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i + 1))
        .collect()
}

/// The register's value after applying `prefix` in order (reads change nothing).
fn replay(history: &History, prefix: &[OpId]) -> Option<Value> {
    let mut value = None;
    for &id in prefix {
        let op = &history.ops[id];
        match (&op.input, &op.outcome) {
            (Input::Write(v), _) => value = Some(v.clone()),
            (Input::Cas { expected, new }, Outcome::Ok { .. } | Outcome::Unknown { .. })
                if *expected == value =>
            {
                value = Some(new.clone())
            }
            _ => {}
        }
    }
    value
}

/// Picks at most [`MAX_OPS_DRAWN`] ops, those invoked nearest the failed op.
fn window(history: &History, ops: &[OpId], failed: Option<OpId>) -> Vec<OpId> {
    let mut sorted = ops.to_vec();
    sorted.sort_by_key(|&id| history.ops[id].invoke_seq);
    if sorted.len() <= MAX_OPS_DRAWN {
        return sorted;
    }
    let center = failed
        .and_then(|f| sorted.iter().position(|&id| id == f))
        .unwrap_or(0);
    let start = center
        .saturating_sub(MAX_OPS_DRAWN / 2)
        .min(sorted.len() - MAX_OPS_DRAWN);
    sorted[start..start + MAX_OPS_DRAWN].to_vec()
}

fn draw(history: &History, ops: &[OpId], marks: &Marks) -> String {
    let drawn = window(history, ops, marks.failed);
    let completion = |op: &Operation| match (op.complete_seq, marks.cut_seq) {
        (Some(done), Some(cut)) if done > cut => None,
        (done, _) => done,
    };
    // Ordinal time axis over every event drawn; unknown ops run to one past the last event.
    let mut positions = BTreeSet::new();
    for &id in &drawn {
        let op = &history.ops[id];
        positions.insert(op.invoke_seq);
        if let Some(done) = completion(op) {
            positions.insert(done);
        }
    }
    let rank: BTreeMap<u64, usize> = positions.iter().enumerate().map(|(i, &p)| (p, i)).collect();
    let end_rank = positions.len();
    let rows: BTreeSet<(u64, u32)> = drawn
        .iter()
        .map(|&id| (history.ops[id].process, history.ops[id].generation))
        .collect();
    let row_of: BTreeMap<(u64, u32), usize> =
        rows.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    let x = |rank: usize| LABEL_WIDTH_PX + MARGIN_PX + rank * EVENT_WIDTH_PX;
    let width = x(end_rank + 1) + 160;
    let height = AXIS_HEIGHT_PX + rows.len() * ROW_HEIGHT_PX + MARGIN_PX;

    let mut svg = String::new();
    if drawn.len() < ops.len() {
        let _ = writeln!(
            svg,
            "<p class=\"note\">Showing {} of {} operations, those invoked nearest the failure.</p>",
            drawn.len(),
            ops.len()
        );
    }
    let _ = writeln!(
        svg,
        "<div class=\"scroll\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" \
         height=\"{height}\" font-family=\"monospace\" font-size=\"11\">"
    );
    svg.push_str(
        "<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#e4e4e4\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#9a9a9a\" stroke-width=\"2\"/>\
         </pattern></defs>\n",
    );
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"14\" class=\"axis\">time → (ordinal: one step per event)</text>",
        x(0)
    );
    for (&(process, generation), &row) in &row_of {
        let y = AXIS_HEIGHT_PX + row * ROW_HEIGHT_PX;
        let name = if generation == 0 {
            format!("p{process}")
        } else {
            format!("p{process}′{generation}")
        };
        let _ = writeln!(
            svg,
            "<g class=\"row\" data-process=\"{process}\"><line x1=\"{}\" y1=\"{}\" x2=\"{}\" \
             y2=\"{}\" stroke=\"#eee\"/><text x=\"{MARGIN_PX}\" y=\"{}\">{}</text></g>",
            LABEL_WIDTH_PX,
            y + ROW_HEIGHT_PX / 2,
            width,
            y + ROW_HEIGHT_PX / 2,
            y + ROW_HEIGHT_PX / 2 + 4,
            escape(&name)
        );
    }
    for &id in &drawn {
        let op = &history.ops[id];
        let row = row_of[&(op.process, op.generation)];
        let y = AXIS_HEIGHT_PX + row * ROW_HEIGHT_PX + (ROW_HEIGHT_PX - BAR_HEIGHT_PX) / 2;
        let start = x(rank[&op.invoke_seq]);
        let done = completion(op);
        let end = match done {
            Some(d) => x(rank[&d]),
            None => x(end_rank),
        }
        .max(start + 6);
        let unknown = done.is_none() || matches!(op.outcome, Outcome::Unknown { .. });
        let class = if marks.failed == Some(id) {
            "failed"
        } else if marks.order.contains_key(&id) {
            "linearized"
        } else if matches!(op.outcome, Outcome::Failed { .. }) {
            "dropped"
        } else if unknown {
            "unknown"
        } else {
            "other"
        };
        let mut label = match marks.order.get(&id) {
            Some(n) => format!("#{n} {}", op.label()),
            None => op.label(),
        };
        if marks.failed == Some(id) {
            label = format!("✗ {label}");
        }
        let tooltip = format!(
            "op {id}, process {}: {} (invoked line {}{}{}{})",
            op.process,
            op.label(),
            op.invoke_seq,
            match op.complete_seq {
                Some(c) => format!(", completed line {c}"),
                None => ", never completed".to_string(),
            },
            op.invoke_time_ns
                .map(|t| format!(", invoked at {t} ns"))
                .unwrap_or_default(),
            op.complete_time_ns
                .map(|t| format!(", completed at {t} ns"))
                .unwrap_or_default(),
        );
        let _ = writeln!(
            svg,
            "<g class=\"op {class}\" data-op=\"{id}\"><title>{}</title><rect x=\"{start}\" \
             y=\"{y}\" width=\"{}\" height=\"{BAR_HEIGHT_PX}\" rx=\"3\"/><text x=\"{}\" \
             y=\"{}\">{}</text></g>",
            escape(&tooltip),
            end - start,
            start + 3,
            y + BAR_HEIGHT_PX / 2 + 4,
            escape(&label)
        );
    }
    svg.push_str("</svg></div>\n");
    svg
}

const LEGEND: &str = "<p class=\"legend\"><span class=\"swatch linearized\"></span> in the \
    longest linearizable prefix (#order) <span class=\"swatch failed\"></span> could not be \
    linearized <span class=\"swatch unknown\"></span> outcome unknown (info) \
    <span class=\"swatch dropped\"></span> failed, did not happen \
    <span class=\"swatch other\"></span> other</p>\n";

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
    .scroll{overflow-x:auto;border:1px solid #ddd;margin-bottom:1em}\
    .op rect{stroke:#555;stroke-width:1}\
    .op text{fill:#111;pointer-events:none;white-space:pre}\
    .linearized rect{fill:#9be59b}.failed rect{fill:#f26d6d;stroke:#900;stroke-width:2}\
    .unknown rect{fill:url(#hatch)}.dropped rect{fill:#fafafa;stroke-dasharray:4 3}\
    .other rect{fill:#cfe0f5}.failed-text{color:#b00}\
    .swatch{display:inline-block;width:1.2em;height:.8em;border:1px solid #555;margin-left:.8em}\
    .swatch.linearized{background:#9be59b}.swatch.failed{background:#f26d6d}\
    .swatch.unknown{background:repeating-linear-gradient(45deg,#e4e4e4 0 3px,#9a9a9a 3px 5px)}\
    .swatch.dropped{background:#fafafa;border-style:dashed}.swatch.other{background:#cfe0f5}\
    .axis{fill:#777}.note{color:#777}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
