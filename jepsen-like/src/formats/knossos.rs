//! Knossos's EDN histories (`knossos/data/**.edn`) and the three models their tests use.
//!
//! Semantics, from Knossos's README, `history.clj` and `model.clj`: `:ok` happened; `:fail` did
//! not (the operation is dropped); `:info`, or no completion at all, may or may not have
//! happened, any time after the invocation. Which model a file is for is not written in it:
//! [`KnossosModel::infer`] guesses from the operations' `:f`.
//!
//! - [`KnossosModel::CasRegister`], `(cas-register 0)`: mapped onto ringleader's own register
//!   ([`register_history`]), so violations get the same report and drawing as our histories.
//!   The register starts at 0 where ours starts absent, so a write of 0 that completes before
//!   anything else is prepended; a read that completes `:ok` with `nil` matches any state in
//!   Knossos and becomes an unknown-outcome read (which constrains nothing).
//! - [`KnossosModel::MultiRegister`], `(multi-register {:x 0 ...})`: transactions of
//!   `[:read :x v]` / `[:write :x v]`; every register named in the file starts at 0.
//! - [`KnossosModel::Mutex`], `(mutex)`: `:acquire` and `:release` of one lock, initially free.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value as Json};

use super::edn::Edn;
use super::{position, EdnOp};
use crate::checker::Partition;
use crate::history::{parse_jsonl, CompletionType, History, OpId, ParseError};
use crate::model::{MicroOp, MultiRegisterModel, MutexInput};
use crate::search::ModelOp;

/// The key the single Knossos register is stored under in a [`History`].
pub const REGISTER_KEY: &str = "register";

/// The sequential model a Knossos history is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KnossosModel {
    CasRegister,
    MultiRegister,
    Mutex,
}

impl KnossosModel {
    /// The model the first client operation's `:f` belongs to: `:read`/`:write`/`:cas` a
    /// cas-register, `:txn` a multi-register, `:acquire`/`:release` a mutex. A history without
    /// operations is a cas-register's (the default).
    pub fn infer(ops: &[EdnOp<'_>]) -> Result<KnossosModel, ParseError> {
        let Some(first) = ops.first() else {
            return Ok(KnossosModel::CasRegister);
        };
        match first.f {
            "read" | "write" | "cas" => Ok(KnossosModel::CasRegister),
            "txn" => Ok(KnossosModel::MultiRegister),
            "acquire" | "release" => Ok(KnossosModel::Mutex),
            other => Err(ParseError {
                line: first.invoke.line,
                reason: format!("no Knossos model has :f :{other} (give --model?)"),
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KnossosModel::CasRegister => "cas-register",
            KnossosModel::MultiRegister => "multi-register",
            KnossosModel::Mutex => "mutex",
        }
    }
}

impl FromStr for KnossosModel {
    type Err = String;

    fn from_str(name: &str) -> Result<KnossosModel, String> {
        match name {
            "cas-register" => Ok(KnossosModel::CasRegister),
            "multi-register" => Ok(KnossosModel::MultiRegister),
            "mutex" => Ok(KnossosModel::Mutex),
            other => Err(format!(
                "unknown model {other:?} (expected cas-register, multi-register or mutex)"
            )),
        }
    }
}

impl fmt::Display for KnossosModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cas-register history in ringleader's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterHistory {
    /// One key, [`REGISTER_KEY`]; op 0 is the prepended write of the initial 0.
    pub history: History,
    /// For each completed op, the index of its completion among the file's entries (0-based,
    /// every entry counted, as Knossos's `:index`).
    pub completion_index: BTreeMap<OpId, usize>,
}

fn register_value(value: &Edn) -> Result<Json, String> {
    match value {
        Edn::Nil => Ok(Json::Null),
        Edn::Int(i) => Ok(Json::from(*i)),
        Edn::Str(s) => Ok(Json::from(s.as_str())),
        Edn::Bool(b) => Ok(Json::from(*b)),
        Edn::Vector(items) | Edn::List(items) => Ok(Json::Array(
            items.iter().map(register_value).collect::<Result<_, _>>()?,
        )),
        other => Err(format!("unsupported register value {other:?}")),
    }
}

/// Converts a cas-register history (see the module docs). Written as our JSONL and parsed back,
/// so it passes the same validation as our files; errors name the EDN line.
pub fn register_history(ops: &[EdnOp<'_>]) -> Result<RegisterHistory, ParseError> {
    // Events in file order: (entry index, op, is the invocation).
    let mut events: Vec<(usize, usize, bool)> = Vec::with_capacity(ops.len() * 2);
    for (op_index, op) in ops.iter().enumerate() {
        if !matches!(op.f, "read" | "write" | "cas") {
            return Err(ParseError {
                line: op.invoke.line,
                reason: format!("a cas-register has no :f :{}", op.f),
            });
        }
        if op.process < 0 {
            return Err(ParseError {
                line: op.invoke.line,
                reason: format!("negative process {}", op.process),
            });
        }
        events.push((op.invoke_index, op_index, true));
        if let Some(completion) = &op.completion {
            events.push((completion.index, op_index, false));
        }
    }
    events.sort_unstable();

    // Line i + 1 of the JSONL came from EDN line `edn_lines[i]` (0 for the initial write).
    let initial_process = u64::MAX;
    let mut jsonl = vec![
        json!({"process": initial_process, "type": "invoke", "f": "write", "key": REGISTER_KEY, "value": 0}),
        json!({"process": initial_process, "type": "ok", "f": "write", "key": REGISTER_KEY, "value": 0}),
    ];
    let mut edn_lines = vec![0, 0];
    let mut op_ids = vec![0; ops.len()];
    let mut completion_index = BTreeMap::new();
    let mut next_op_id: OpId = 1;
    for (index, op_index, is_invoke) in events {
        let op = &ops[op_index];
        let refuse = |line: usize| move |reason: String| ParseError { line, reason };
        let invoke_value = register_value(op.invoke.form.get("value").unwrap_or(&Edn::Nil))
            .map_err(refuse(op.invoke.line))?;
        let (kind, value, line) = if is_invoke {
            op_ids[op_index] = next_op_id;
            next_op_id += 1;
            let value = if op.f == "read" {
                Json::Null
            } else {
                invoke_value
            };
            ("invoke", value, op.invoke.line)
        } else {
            let Some(completion) = &op.completion else {
                continue;
            };
            completion_index.insert(op_ids[op_index], index);
            let value = register_value(op.value()).map_err(refuse(completion.entry.line))?;
            let kind = match completion.kind {
                CompletionType::Ok if op.f == "read" && value.is_null() => "info",
                CompletionType::Ok => "ok",
                CompletionType::Fail => "fail",
                CompletionType::Info => "info",
            };
            let value = if op.f == "read" { value } else { invoke_value };
            (kind, value, completion.entry.line)
        };
        jsonl.push(json!({
            "process": op.process, "type": kind, "f": op.f, "key": REGISTER_KEY, "value": value,
        }));
        edn_lines.push(line);
    }
    let text: String = jsonl.iter().map(|j| format!("{j}\n")).collect();
    let history = parse_jsonl(&text).map_err(|error| ParseError {
        line: edn_lines.get(error.line - 1).copied().unwrap_or(0),
        reason: error.reason,
    })?;
    debug_assert_eq!(history.ops.len(), ops.len() + 1);
    Ok(RegisterHistory {
        history,
        completion_index,
    })
}

/// The operations to search, with their invocation lines: `:ok` completed, `:fail` dropped,
/// the rest unknown. `output` converts a completed operation's output.
fn partition<I, O>(
    key: &str,
    ops: &[EdnOp<'_>],
    input: impl Fn(&EdnOp<'_>) -> Result<I, String>,
    output: impl Fn(&EdnOp<'_>) -> Result<O, String>,
) -> Result<Partition<I, O>, ParseError> {
    let mut result = Partition {
        key: key.to_string(),
        ops: Vec::with_capacity(ops.len()),
        lines: Vec::with_capacity(ops.len()),
    };
    for op in ops {
        let line = op.invoke.line;
        let refuse = |line: usize| move |reason: String| ParseError { line, reason };
        let op_input = input(op).map_err(refuse(line))?;
        let call = position(op.invoke_index);
        let model_op = match &op.completion {
            Some(c) if c.kind == CompletionType::Ok => {
                let op_output = output(op).map_err(refuse(c.entry.line))?;
                ModelOp::completed(call, position(c.index), op_input, op_output)
            }
            Some(c) if c.kind == CompletionType::Fail => continue,
            _ => ModelOp::unknown(call, op_input),
        };
        result.ops.push(model_op);
        result.lines.push(line);
    }
    Ok(result)
}

/// A mutex history, as one partition.
pub fn mutex_partition(ops: &[EdnOp<'_>]) -> Result<Partition<MutexInput, ()>, ParseError> {
    let input = |op: &EdnOp<'_>| match op.f {
        "acquire" => Ok(MutexInput::Acquire),
        "release" => Ok(MutexInput::Release),
        other => Err(format!("a mutex has no :f :{other}")),
    };
    partition("mutex", ops, input, |_| Ok(()))
}

fn micro_ops(value: Option<&Edn>) -> Result<Vec<MicroOp>, String> {
    let items = value
        .and_then(Edn::items)
        .ok_or("a :txn value must be a vector of micro-ops")?;
    items
        .iter()
        .map(|micro_op| {
            let (kind, register, value) = match micro_op.items() {
                Some([kind, register, value]) => (kind, register, value),
                _ => return Err(format!("micro-op {micro_op:?} is not [:f :register value]")),
            };
            let register = register
                .keyword()
                .ok_or_else(|| format!("register {register:?} is not a keyword"))?
                .to_string();
            match (kind.keyword(), value) {
                (Some("read"), Edn::Nil) => Ok(MicroOp::Read {
                    register,
                    value: None,
                }),
                (Some("read"), Edn::Int(v)) => Ok(MicroOp::Read {
                    register,
                    value: Some(*v),
                }),
                (Some("write"), Edn::Int(v)) => Ok(MicroOp::Write {
                    register,
                    value: *v,
                }),
                _ => Err(format!(
                    "micro-op {micro_op:?}: expected [:read :r int-or-nil] or [:write :r int]"
                )),
            }
        })
        .collect()
}

/// A history of multi-register transactions: each operation's input and output are micro-ops.
pub type MultiRegisterPartition = Partition<Vec<MicroOp>, Vec<MicroOp>>;

/// A multi-register history, as one partition, and its model: every register named anywhere
/// in the history starts at 0 (Knossos's tests start theirs at 0).
pub fn multi_register_partition(
    ops: &[EdnOp<'_>],
) -> Result<(MultiRegisterModel, MultiRegisterPartition), ParseError> {
    let input = |op: &EdnOp<'_>| {
        if op.f != "txn" {
            return Err(format!("a multi-register has no :f :{}", op.f));
        }
        micro_ops(op.invoke.form.get("value"))
    };
    let output = |op: &EdnOp<'_>| {
        micro_ops(
            op.completion
                .as_ref()
                .and_then(|c| c.entry.form.get("value")),
        )
    };
    let partition = partition("registers", ops, input, output)?;
    let mut registers = BTreeSet::new();
    for op in &partition.ops {
        for micro_op in op.output().unwrap_or(&op.input).iter().chain(&op.input) {
            let (MicroOp::Read { register, .. } | MicroOp::Write { register, .. }) = micro_op;
            registers.insert(register.clone());
        }
    }
    let model = MultiRegisterModel {
        initial: registers.into_iter().map(|r| (r, 0)).collect(),
    };
    Ok((model, partition))
}

#[cfg(test)]
mod tests {
    use super::super::{edn, pair_operations};
    use super::*;
    use crate::history::{Input, Outcome, Value};

    fn ops_of(text: &str) -> Vec<edn::Entry> {
        edn::parse_history(text).expect("valid EDN")
    }

    #[test]
    fn cas_register_starts_at_zero_and_nil_reads_constrain_nothing() {
        let entries = ops_of(
            "{:process 0 :type :invoke :f :read :value nil}\n\
             {:process 0 :type :ok :f :read :value nil}\n\
             {:process 1 :type :invoke :f :cas :value [0 1]}\n\
             {:process 1 :type :fail :f :cas :value [0 1]}\n",
        );
        let ops = pair_operations(&entries).expect("pairs");
        assert_eq!(KnossosModel::infer(&ops), Ok(KnossosModel::CasRegister));
        let converted = register_history(&ops).expect("converts");
        let history = &converted.history;
        assert_eq!(history.ops[0].input, Input::Write(Value::Int(0)));
        assert!(matches!(history.ops[1].outcome, Outcome::Unknown { .. }));
        assert!(matches!(history.ops[2].outcome, Outcome::Failed { .. }));
        assert_eq!(converted.completion_index[&2], 3);
    }

    #[test]
    fn bad_values_name_their_line() {
        let entries = ops_of(
            "{:process 0 :type :invoke :f :write :value 1}\n{:process 0 :type :ok :f :write :value 1}\n{:process 0 :type :invoke :f :write :value {:a 1}}",
        );
        let ops = pair_operations(&entries).expect("pairs");
        assert_eq!(register_history(&ops).expect_err("refused").line, 3);
        let entries = ops_of("{:process 0 :type :invoke :f :txn :value [[:read :x]]}");
        let ops = pair_operations(&entries).expect("pairs");
        assert_eq!(KnossosModel::infer(&ops), Ok(KnossosModel::MultiRegister));
        assert_eq!(multi_register_partition(&ops).expect_err("refused").line, 1);
    }
}
