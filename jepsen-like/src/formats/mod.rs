//! Reading histories written by other tools, so the checker can be held to their verdicts.
//!
//! Three formats, one per module:
//! - JSONL, ringleader's own (see [`crate::history`]): registers per key, keys start absent;
//! - [`knossos`]: Jepsen's EDN histories (`:process`, `:type`, `:f`, `:value`), checked against
//!   Knossos's cas-register (starts at 0), multi-register or mutex;
//! - [`porcupine`]: Porcupine's key-value test files (EDN, `:key`), get/put/append on strings
//!   that start as `""`.
//!
//! Both foreign formats are EDN ([`edn`]) in the Jepsen operation model, so the pairing of
//! invocations with completions ([`pair_operations`]) lives here, shared. Parse, then act: a file
//! is converted whole before any checking, and anything refused is a
//! [`crate::history::ParseError`] naming the 1-based line.

pub mod edn;
pub mod knossos;
pub mod porcupine;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::history::{CompletionType, ParseError};
use edn::{Edn, Entry};

/// A history file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Knossos,
    Porcupine,
}

impl Format {
    /// The format a file's extension suggests: `.jsonl` ours, `.edn` Knossos, `.txt` Porcupine
    /// (its `test_data/kv/*.txt`). `None` for anything else.
    pub fn guess(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "jsonl" => Some(Format::Jsonl),
            "edn" => Some(Format::Knossos),
            "txt" => Some(Format::Porcupine),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Knossos => "knossos",
            Format::Porcupine => "porcupine",
        }
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(name: &str) -> Result<Format, String> {
        match name {
            "jsonl" => Ok(Format::Jsonl),
            "knossos" => Ok(Format::Knossos),
            "porcupine" => Ok(Format::Porcupine),
            other => Err(format!(
                "unknown format {other:?} (expected jsonl, knossos or porcupine)"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One operation of a Jepsen-style EDN history: its invocation and, if it has one, its
/// completion. Indexes count every entry of the file (0-based) and serve as real-time
/// positions; lines are 1-based, for messages.
#[derive(Clone, Debug)]
pub struct EdnOp<'a> {
    pub process: i64,
    /// `:f`, without the colon.
    pub f: &'a str,
    pub invoke: &'a Entry,
    pub invoke_index: usize,
    pub completion: Option<EdnCompletion<'a>>,
}

/// The completion entry of an [`EdnOp`].
#[derive(Clone, Debug)]
pub struct EdnCompletion<'a> {
    pub kind: CompletionType,
    pub entry: &'a Entry,
    pub index: usize,
}

impl EdnOp<'_> {
    /// The completion's kind, `None` if the operation never completed.
    pub fn completion_kind(&self) -> Option<CompletionType> {
        self.completion.as_ref().map(|c| c.kind)
    }

    /// The `:value` of the completion if there is one and it is not nil, else the invocation's
    /// (Jepsen invocations of reads carry nil; the value read arrives with the completion).
    pub fn value(&self) -> &Edn {
        let completed = self
            .completion
            .as_ref()
            .and_then(|c| c.entry.form.get("value"))
            .filter(|v| **v != Edn::Nil);
        completed
            .or_else(|| self.invoke.form.get("value"))
            .unwrap_or(&Edn::Nil)
    }
}

/// Pairs invocations with completions, per process, in invocation order.
///
/// Entries whose `:process` is not an integer (Jepsen's `:nemesis`) are not client operations
/// and are skipped. Refused, naming the line: an entry that is not a map or lacks `:type` or
/// `:f`, a completion with no pending invocation or another `:f`, and an invocation while the
/// process still has one pending. After any completion (`:info` included) the process may
/// invoke again; Jepsen gives a crashed process a new number, so this only matters for files
/// that reuse numbers, which then read as a new logical process.
pub fn pair_operations(entries: &[Entry]) -> Result<Vec<EdnOp<'_>>, ParseError> {
    let mut ops: Vec<EdnOp<'_>> = Vec::new();
    let mut pending: BTreeMap<i64, usize> = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let line = entry.line;
        let refuse = |reason: String| ParseError { line, reason };
        if !matches!(entry.form, Edn::Map(_)) {
            return Err(refuse("an operation must be a map".into()));
        }
        let Some(process) = entry.form.get("process").and_then(Edn::int) else {
            continue;
        };
        let kind = entry
            .form
            .get("type")
            .and_then(Edn::keyword)
            .ok_or_else(|| refuse("missing or non-keyword :type".into()))?;
        let f = entry
            .form
            .get("f")
            .and_then(Edn::keyword)
            .ok_or_else(|| refuse("missing or non-keyword :f".into()))?;
        let kind = match kind {
            "invoke" => None,
            "ok" => Some(CompletionType::Ok),
            "fail" => Some(CompletionType::Fail),
            "info" => Some(CompletionType::Info),
            other => return Err(refuse(format!("unknown :type :{other}"))),
        };
        let Some(kind) = kind else {
            if let Some(&open) = pending.get(&process) {
                return Err(refuse(format!(
                    "process {process} invokes while its operation from line {} is pending",
                    ops[open].invoke.line
                )));
            }
            pending.insert(process, ops.len());
            ops.push(EdnOp {
                process,
                f,
                invoke: entry,
                invoke_index: index,
                completion: None,
            });
            continue;
        };
        let open = pending.remove(&process).ok_or_else(|| {
            refuse(format!(
                "a completion from process {process} with no pending invocation"
            ))
        })?;
        let op = &mut ops[open];
        if op.f != f {
            return Err(refuse(format!(
                "completion :f :{f} differs from its invocation's :{} (line {})",
                op.f, op.invoke.line
            )));
        }
        op.completion = Some(EdnCompletion { kind, entry, index });
    }
    Ok(ops)
}

/// Position of an entry as a search clock value (entry indexes are real-time order).
fn position(index: usize) -> u64 {
    index as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_guessed_from_extensions() {
        assert_eq!(Format::guess(Path::new("h.jsonl")), Some(Format::Jsonl));
        assert_eq!(Format::guess(Path::new("a/b.edn")), Some(Format::Knossos));
        assert_eq!(
            Format::guess(Path::new("c50-ok.txt")),
            Some(Format::Porcupine)
        );
        assert_eq!(Format::guess(Path::new("history")), None);
        assert_eq!("porcupine".parse(), Ok(Format::Porcupine));
        assert!("csv".parse::<Format>().is_err());
    }

    #[test]
    fn pairing_refuses_orphans_and_overlaps_naming_the_line() {
        let cases = [
            ("{:process 0 :type :ok :f :read}", 1),
            (
                "{:process 0 :type :invoke :f :read}\n{:process 0 :type :invoke :f :read}",
                2,
            ),
            (
                "{:process 0 :type :invoke :f :read}\n{:process 0 :type :ok :f :write}",
                2,
            ),
            ("{:process 0 :type :invoke}", 1),
            ("\n[1]", 2),
        ];
        for (text, line) in cases {
            let entries = edn::parse_history(text).expect("valid EDN");
            let error = pair_operations(&entries).expect_err(text);
            assert_eq!(error.line, line, "{text:?}: {error}");
        }
        let entries = edn::parse_history(
            "{:process :nemesis :type :info :f :start}\n{:process 0 :type :invoke :f :read}",
        )
        .expect("valid EDN");
        let ops = pair_operations(&entries).expect("pairs");
        assert_eq!(ops.len(), 1);
        assert!(ops[0].completion.is_none());
    }
}
