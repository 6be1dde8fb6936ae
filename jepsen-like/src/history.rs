//! Histories of client operations, in the Jepsen model, and their JSONL file format.
//!
//! A *history* is what clients saw: for each operation, when it was invoked, when (and how) it
//! completed, what it asked for and what it got back. The checker (`crate::checker`) decides
//! whether some total order of the operations explains every observed result; this module only
//! parses, validates and records histories, so a bad file is refused whole before any checking
//! starts ("parse, then act").
//!
//! Invariant kept by [`History`]: every [`Operation`] has a valid invocation; its completion, if
//! any, comes strictly later in real-time order, from the same process, for the same function and
//! key; a process never has two operations pending at once.
//!
//! # History file format (JSONL)
//!
//! This is the format `ringleader check HISTORY.jsonl` reads and [`HistoryRecorder::to_jsonl`]
//! writes. One JSON object per line; blank lines are ignored. **Line order is real-time order**:
//! an event on a later line happened later (or concurrently, for events recorded by different
//! clients at the same instant). Fields:
//!
//! | field     | type                      | meaning |
//! |-----------|---------------------------|---------|
//! | `process` | unsigned integer          | the client that issued the operation; one operation at a time per process |
//! | `type`    | `"invoke"` `"ok"` `"fail"` `"info"` | event kind (see below) |
//! | `f`       | `"read"` `"write"` `"cas"` | the operation |
//! | `key`     | string                    | the key operated on (required on invocations; if present on a completion it must match) |
//! | `value`   | JSON value                | see below |
//! | `error`   | string (optional)         | on `fail`/`info`: why; `"mismatch"` on a `fail` of `cas` is special |
//! | `time`    | unsigned integer (optional) | nanoseconds, informational only (the order of lines is what counts) |
//! | `level`   | string (optional, invocations) | the consistency level asked for: `linearizable`, `lease`, `session`, `stale` (reads), `majority`, `all`, `leader` (writes and cas) |
//! | `version` | unsigned integer (optional, completions) | a write's or cas's new version; a read's (or cas mismatch's) value's version, 0 when absent |
//! | `index`   | unsigned integer (optional, completions) | the receipt's log index: the state the answer reflects |
//! | `bound_ms` | unsigned integer (optional, completions) | the receipt's staleness bound, in milliseconds (stale and session reads) |
//! | `served`  | string (optional, completions) | the level the receipt says served the operation |
//!
//! Unknown fields are ignored. The last five are written by the simulation (see
//! `crate::levels`); a file without them is read as linearizable reads and majority writes, as
//! ringleader served before the levels existed. A version is the log index of the write that
//! set the value, so versions order the writes of the whole store.
//!
//! Each operation is an `invoke` line followed later by exactly one completion line from the
//! same process with the same `f`:
//! - `ok`: the operation took effect, at some instant between its invocation and its completion.
//! - `fail` with `"error": "mismatch"` on a `cas`: the cas ran and found a value other than
//!   `expected`. It *did* happen: at its linearization point the value was not `expected`.
//! - `fail` otherwise: the operation certainly did not take effect; the checker drops it.
//! - `info`: unknown. The operation may have taken effect at any instant after its invocation,
//!   or never. An invocation with no completion by the end of the file means the same.
//!
//! Values: a write's `value` is the value written; a cas's `value` is `[expected, new]` on both
//! its invocation and completion lines (`expected` may be `null`, meaning "the key is absent");
//! a read's invocation has `"value": null` and its `ok` carries the value read, `null` when the
//! key is absent. Every key starts absent. Values are JSON strings, integers (signed 64-bit) or
//! booleans, compared as JSON values (`1` and `"1"` differ); floats, arrays and objects are
//! refused, and a write or a cas's `new` may not be `null`.
//!
//! After an `info` completion the process is considered crashed. If the same `process` number
//! invokes again, it is treated as a new logical process (as Knossos does); see
//! [`Operation::generation`].
//!
//! Errors: any malformed line (bad JSON, missing or mistyped field, completion without a pending
//! invocation, second invocation while one is pending, completion whose `f` or `key` differs
//! from its invocation) is a [`ParseError`] naming the 1-based line number; the CLI exits with
//! status 2 on it.
//!
//! Example (process 1's write is concurrent with process 2's read, which sees it):
//!
//! ```text
//! {"process": 1, "type": "invoke", "f": "write", "key": "k1", "value": 3, "time": 100}
//! {"process": 2, "type": "invoke", "f": "read", "key": "k1", "value": null, "time": 120}
//! {"process": 2, "type": "ok", "f": "read", "key": "k1", "value": 3, "time": 180}
//! {"process": 1, "type": "ok", "f": "write", "key": "k1", "value": 3, "time": 200}
//! {"process": 2, "type": "invoke", "f": "cas", "key": "k1", "value": [4, 5], "time": 210}
//! {"process": 2, "type": "fail", "f": "cas", "key": "k1", "value": [4, 5], "error": "mismatch", "time": 260}
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value as Json};

use crate::levels::Level;

/// Index of an operation in [`History::ops`].
pub type OpId = usize;

/// A value stored under a key. JSON scalars only, compared exactly as JSON values.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Int(i64),
    Str(String),
    Bool(bool),
}

impl Value {
    /// Converts a JSON value; `Ok(None)` for `null`, `Err` for anything not a supported scalar.
    pub fn from_json(json: &Json) -> Result<Option<Value>, String> {
        match json {
            Json::Null => Ok(None),
            Json::Bool(b) => Ok(Some(Value::Bool(*b))),
            Json::String(s) => Ok(Some(Value::Str(s.clone()))),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Ok(Some(Value::Int(i))),
                None => Err(format!("number {n} is not a signed 64-bit integer")),
            },
            Json::Array(_) | Json::Object(_) => Err(format!(
                "value {json} is not a scalar (string, integer or boolean)"
            )),
        }
    }

    pub fn to_json(&self) -> Json {
        match self {
            Value::Int(i) => Json::from(*i),
            Value::Str(s) => Json::from(s.as_str()),
            Value::Bool(b) => Json::from(*b),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Formats an optional value, `None` being the absent key.
pub fn display_optional(value: &Option<Value>) -> String {
    match value {
        Some(v) => v.to_string(),
        None => "absent".to_string(),
    }
}

/// The function an operation calls (`f` in the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    Read,
    Write,
    Cas,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
        }
    }

    fn parse(s: &str) -> Option<Function> {
        match s {
            "read" => Some(Function::Read),
            "write" => Some(Function::Write),
            "cas" => Some(Function::Cas),
            _ => None,
        }
    }
}

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Read,
    Write(Value),
    /// Compare-and-set: `expected == None` means "only if the key is absent".
    Cas {
        expected: Option<Value>,
        new: Value,
    },
}

impl Input {
    pub fn function(&self) -> Function {
        match self {
            Input::Read => Function::Read,
            Input::Write(_) => Function::Write,
            Input::Cas { .. } => Function::Cas,
        }
    }
}

/// How an operation ended, as far as the client knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It took effect. For a read, `read` is the value seen (`None`: key absent); `None` for
    /// writes and cas.
    Ok { read: Option<Value> },
    /// A cas that ran and found a value other than `expected` (`fail` with `error: mismatch`).
    CasMismatch,
    /// Certainly did not take effect (`fail` without `mismatch`); the checker ignores it.
    Failed { error: Option<String> },
    /// May have taken effect at any point after the invocation, or never (`info`, or no
    /// completion in the file).
    Unknown { error: Option<String> },
}

/// The completion types of the file, as passed to [`HistoryRecorder::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionType {
    Ok,
    Fail,
    Info,
}

impl CompletionType {
    pub fn as_str(self) -> &'static str {
        match self {
            CompletionType::Ok => "ok",
            CompletionType::Fail => "fail",
            CompletionType::Info => "info",
        }
    }
}

/// One operation: an invocation and its completion, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub id: OpId,
    /// The `process` number from the file.
    pub process: u64,
    /// How many `info` operations this `process` number completed before invoking this one.
    /// `(process, generation)` names a logical process: one that never has an open operation
    /// after a crash.
    pub generation: u32,
    pub key: String,
    pub input: Input,
    pub outcome: Outcome,
    /// Real-time position of the invocation: the 1-based line number in the file. Strictly
    /// increasing along the file, so it orders events like the wall clock did.
    pub invoke_seq: u64,
    /// Real-time position of the completion; `None` if the file ends with the operation pending.
    pub complete_seq: Option<u64>,
    pub invoke_time_ns: Option<u64>,
    pub complete_time_ns: Option<u64>,
    /// The level asked for (`level`); `None` in a history without levels.
    pub level: Option<Level>,
    /// What the completion line said about versions and the receipt.
    pub receipt: ReceiptInfo,
}

/// The optional fields of a completion line: what a reply proved about its own consistency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiptInfo {
    /// A write's or cas's new version; a read's or cas mismatch's value's version (0: absent).
    pub version: Option<u64>,
    /// The receipt's log index: the replica's applied index for a read, the entry's for a write.
    pub index: Option<u64>,
    /// The receipt's staleness bound, in milliseconds.
    pub staleness_bound_ms: Option<u64>,
    /// The level the receipt says served it.
    pub served: Option<Level>,
}

impl ReceiptInfo {
    fn is_empty(&self) -> bool {
        *self == ReceiptInfo::default()
    }

    fn insert_into(&self, m: &mut Map<String, Json>) {
        if let Some(v) = self.version {
            m.insert("version".into(), Json::from(v));
        }
        if let Some(i) = self.index {
            m.insert("index".into(), Json::from(i));
        }
        if let Some(b) = self.staleness_bound_ms {
            m.insert("bound_ms".into(), Json::from(b));
        }
        if let Some(s) = self.served {
            m.insert("served".into(), Json::from(s.name()));
        }
    }
}

impl Operation {
    /// The level asked for, or in a history without levels what ringleader served then:
    /// linearizable reads, majority writes.
    pub fn effective_level(&self) -> Level {
        self.level.unwrap_or(match self.input {
            Input::Read => Level::Linearizable,
            Input::Write(_) | Input::Cas { .. } => Level::Majority,
        })
    }

    /// A short human label such as `w 3`, `r → 3`, `cas 1→2`.
    pub fn label(&self) -> String {
        let base = match &self.input {
            Input::Read => "r".to_string(),
            Input::Write(v) => format!("w {v}"),
            Input::Cas { expected, new } => {
                format!("cas {}→{new}", display_optional(expected))
            }
        };
        match &self.outcome {
            Outcome::Ok { read } if self.input == Input::Read => {
                format!("{base} → {}", display_optional(read))
            }
            Outcome::Ok { .. } => base,
            Outcome::CasMismatch => format!("{base} ✗ mismatch"),
            Outcome::Failed { .. } => format!("{base} (fail)"),
            Outcome::Unknown { .. } => format!("{base} ?"),
        }
    }
}

/// A whole parsed history: operations sorted by invocation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Operation>,
}

impl History {
    /// Operation ids grouped by key, keys in lexicographic order (deterministic), ids in
    /// invocation order.
    pub fn by_key(&self) -> BTreeMap<&str, Vec<OpId>> {
        let mut keys: BTreeMap<&str, Vec<OpId>> = BTreeMap::new();
        for op in &self.ops {
            keys.entry(op.key.as_str()).or_default().push(op.id);
        }
        keys
    }

    /// The operations whose level promises linearizability, for the linearizability checker:
    /// session and stale reads are left out (they have checkers of their own), and
    /// leader-acknowledged writes and cas count as `info` (they may be lost, so they may or may
    /// not have happened). Operations are renumbered; a history without levels is unchanged.
    pub fn linearizability_view(&self) -> History {
        let mut ops = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            let level = op.effective_level();
            if level.is_read() && !level.promises_linearizability() {
                continue;
            }
            let mut kept = op.clone();
            kept.id = ops.len();
            if level == Level::Leader {
                if let Outcome::Ok { .. } | Outcome::CasMismatch = kept.outcome {
                    kept.outcome = Outcome::Unknown {
                        error: Some("acknowledged by the leader alone: may be lost".into()),
                    };
                }
            }
            ops.push(kept);
        }
        History { ops }
    }

    /// Writes the history back in the JSONL format (events in real-time order).
    pub fn to_jsonl(&self) -> String {
        let mut events: Vec<(u64, bool, OpId)> = Vec::with_capacity(self.ops.len() * 2);
        for op in &self.ops {
            events.push((op.invoke_seq, false, op.id));
            if let Some(seq) = op.complete_seq {
                events.push((seq, true, op.id));
            }
        }
        events.sort_unstable();
        let mut out = String::new();
        for (_, is_completion, id) in events {
            let op = &self.ops[id];
            let line = if is_completion {
                completion_json(op)
            } else {
                invoke_json(op)
            };
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }
}

/// A malformed history file: the 1-based line and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

fn input_value_json(input: &Input) -> Json {
    match input {
        Input::Read => Json::Null,
        Input::Write(v) => v.to_json(),
        Input::Cas { expected, new } => Json::Array(vec![
            expected.as_ref().map_or(Json::Null, Value::to_json),
            new.to_json(),
        ]),
    }
}

fn base_json(op: &Operation, kind: &str, time: Option<u64>) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("process".into(), Json::from(op.process));
    m.insert("type".into(), Json::from(kind));
    m.insert("f".into(), Json::from(op.input.function().as_str()));
    m.insert("key".into(), Json::from(op.key.as_str()));
    if let Some(t) = time {
        m.insert("time".into(), Json::from(t));
    }
    m
}

fn invoke_json(op: &Operation) -> Json {
    let mut m = base_json(op, "invoke", op.invoke_time_ns);
    m.insert("value".into(), input_value_json(&op.input));
    if let Some(level) = op.level {
        m.insert("level".into(), Json::from(level.name()));
    }
    Json::Object(m)
}

fn completion_json(op: &Operation) -> Json {
    let (kind, error) = match &op.outcome {
        Outcome::Ok { .. } => ("ok", None),
        Outcome::CasMismatch => ("fail", Some("mismatch".to_string())),
        Outcome::Failed { error } => ("fail", error.clone()),
        Outcome::Unknown { error } => ("info", error.clone()),
    };
    let mut m = base_json(op, kind, op.complete_time_ns);
    let value = match (&op.input, &op.outcome) {
        (Input::Read, Outcome::Ok { read }) => read.as_ref().map_or(Json::Null, Value::to_json),
        (input, _) => input_value_json(input),
    };
    m.insert("value".into(), value);
    if let Some(e) = error {
        m.insert("error".into(), Json::from(e));
    }
    op.receipt.insert_into(&mut m);
    Json::Object(m)
}

/// Parses a JSONL history (see the module docs for the format).
pub fn parse_jsonl(text: &str) -> Result<History, ParseError> {
    let mut builder = Builder::default();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let json: Json = serde_json::from_str(raw).map_err(|e| ParseError {
            line,
            reason: format!("invalid JSON: {e}"),
        })?;
        let event = Event::from_json(&json).map_err(|reason| ParseError { line, reason })?;
        builder
            .apply(line as u64, event)
            .map_err(|reason| ParseError { line, reason })?;
    }
    Ok(builder.finish())
}

/// One line of the file, decoded but not yet matched with its invocation.
struct Event {
    process: u64,
    kind: EventKind,
    function: Function,
    key: Option<String>,
    value: Json,
    error: Option<String>,
    time_ns: Option<u64>,
    level: Option<Level>,
    receipt: ReceiptInfo,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Invoke,
    Completion(CompletionType),
}

impl Event {
    fn from_json(json: &Json) -> Result<Event, String> {
        let object = json.as_object().ok_or("line is not a JSON object")?;
        let process = object
            .get("process")
            .ok_or("missing \"process\"")?
            .as_u64()
            .ok_or("\"process\" is not an unsigned integer")?;
        let kind = match object.get("type").and_then(Json::as_str) {
            Some("invoke") => EventKind::Invoke,
            Some("ok") => EventKind::Completion(CompletionType::Ok),
            Some("fail") => EventKind::Completion(CompletionType::Fail),
            Some("info") => EventKind::Completion(CompletionType::Info),
            Some(other) => return Err(format!("unknown \"type\" {other:?}")),
            None => return Err("missing or non-string \"type\"".into()),
        };
        let function = match object.get("f").and_then(Json::as_str) {
            Some(f) => Function::parse(f).ok_or_else(|| format!("unknown \"f\" {f:?}"))?,
            None => return Err("missing or non-string \"f\"".into()),
        };
        let key = match object.get("key") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(_) => return Err("\"key\" is not a string".into()),
        };
        let error = match object.get("error") {
            None | Some(Json::Null) => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let unsigned = |field: &str| -> Result<Option<u64>, String> {
            match object.get(field) {
                None | Some(Json::Null) => Ok(None),
                Some(t) => t
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| format!("\"{field}\" is not an unsigned integer")),
            }
        };
        let level_of = |field: &str| -> Result<Option<Level>, String> {
            match object.get(field) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::String(s)) => s.parse().map(Some),
                Some(_) => Err(format!("\"{field}\" is not a string")),
            }
        };
        let time_ns = unsigned("time")?;
        let receipt = ReceiptInfo {
            version: unsigned("version")?,
            index: unsigned("index")?,
            staleness_bound_ms: unsigned("bound_ms")?,
            served: level_of("served")?,
        };
        Ok(Event {
            process,
            kind,
            function,
            key,
            value: object.get("value").cloned().unwrap_or(Json::Null),
            error,
            time_ns,
            level: level_of("level")?,
            receipt,
        })
    }
}

fn parse_input(function: Function, value: &Json) -> Result<Input, String> {
    match function {
        Function::Read => Ok(Input::Read),
        Function::Write => match Value::from_json(value)? {
            Some(v) => Ok(Input::Write(v)),
            None => Err("a write's value may not be null".into()),
        },
        Function::Cas => {
            let pair = value
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or("a cas's value must be [expected, new]")?;
            let expected = Value::from_json(&pair[0])?;
            let new = Value::from_json(&pair[1])?.ok_or("a cas's new value may not be null")?;
            Ok(Input::Cas { expected, new })
        }
    }
}

/// Matches completions with invocations, one event at a time.
#[derive(Default)]
struct Builder {
    ops: Vec<Operation>,
    /// Open operation of each process, by process number.
    pending: BTreeMap<u64, OpId>,
    /// Number of `info` completions seen per process number.
    generations: BTreeMap<u64, u32>,
}

impl Builder {
    fn apply(&mut self, seq: u64, event: Event) -> Result<(), String> {
        match event.kind {
            EventKind::Invoke => self.invoke(seq, event),
            EventKind::Completion(kind) => self.complete(seq, kind, event),
        }
    }

    fn invoke(&mut self, seq: u64, event: Event) -> Result<(), String> {
        if let Some(&open) = self.pending.get(&event.process) {
            return Err(format!(
                "process {} invokes while its operation from line {} is still pending",
                event.process, self.ops[open].invoke_seq
            ));
        }
        let key = event.key.ok_or("an invocation needs a \"key\"")?;
        let input = parse_input(event.function, &event.value)?;
        let id = self.ops.len();
        self.ops.push(Operation {
            id,
            process: event.process,
            generation: self.generations.get(&event.process).copied().unwrap_or(0),
            key,
            input,
            outcome: Outcome::Unknown { error: None },
            invoke_seq: seq,
            complete_seq: None,
            invoke_time_ns: event.time_ns,
            complete_time_ns: None,
            level: event.level,
            receipt: ReceiptInfo::default(),
        });
        self.pending.insert(event.process, id);
        Ok(())
    }

    fn complete(&mut self, seq: u64, kind: CompletionType, event: Event) -> Result<(), String> {
        let id = self.pending.remove(&event.process).ok_or_else(|| {
            format!(
                "{} completion from process {} with no pending invocation",
                kind.as_str(),
                event.process
            )
        })?;
        let op = &mut self.ops[id];
        if op.input.function() != event.function {
            return Err(format!(
                "completion f {:?} differs from its invocation's {:?} (line {})",
                event.function.as_str(),
                op.input.function().as_str(),
                op.invoke_seq
            ));
        }
        if let Some(key) = &event.key {
            if *key != op.key {
                return Err(format!(
                    "completion key {key:?} differs from its invocation's {:?} (line {})",
                    op.key, op.invoke_seq
                ));
            }
        }
        op.outcome = match kind {
            CompletionType::Ok => {
                let read = match op.input {
                    Input::Read => Value::from_json(&event.value)?,
                    _ => None,
                };
                Outcome::Ok { read }
            }
            CompletionType::Fail
                if op.input.function() == Function::Cas
                    && event.error.as_deref() == Some("mismatch") =>
            {
                Outcome::CasMismatch
            }
            CompletionType::Fail => Outcome::Failed { error: event.error },
            CompletionType::Info => {
                *self.generations.entry(event.process).or_insert(0) += 1;
                Outcome::Unknown { error: event.error }
            }
        };
        op.complete_seq = Some(seq);
        op.complete_time_ns = event.time_ns;
        op.receipt = event.receipt;
        Ok(())
    }

    fn finish(self) -> History {
        // Operations still pending keep `Outcome::Unknown` and `complete_seq: None`.
        debug_assert!(self
            .ops
            .windows(2)
            .all(|w| w[0].invoke_seq < w[1].invoke_seq));
        History { ops: self.ops }
    }
}

/// Records a history as it happens, e.g. from a simulation's clients, and writes it as JSONL.
///
/// Events are numbered in the order the recorder sees them, which must be real-time order
/// (true in a single-threaded simulation). Misuse (completing an unknown or already completed
/// operation) is a bug in the caller and panics.
#[derive(Debug, Default, Clone)]
pub struct HistoryRecorder {
    lines: Vec<Json>,
    /// Every recorded operation, indexed by its [`OpId`].
    ops: Vec<RecordedOp>,
    /// Open operation of each process.
    pending: BTreeMap<u64, OpId>,
}

#[derive(Debug, Clone)]
struct RecordedOp {
    process: u64,
    function: Function,
    key: String,
    value: Json,
    completed: bool,
}

impl HistoryRecorder {
    pub fn new() -> HistoryRecorder {
        HistoryRecorder::default()
    }

    /// Records an invocation. `value`: the value written, `[expected, new]` for a cas, `Null`
    /// for a read.
    pub fn invoke(&mut self, process: u64, f: Function, key: &str, value: Json) -> OpId {
        self.invoke_inner(process, f, key, value, None, None)
    }

    /// [`HistoryRecorder::invoke`] with a timestamp (e.g. simulated nanoseconds).
    pub fn invoke_at(
        &mut self,
        process: u64,
        f: Function,
        key: &str,
        value: Json,
        time_ns: u64,
    ) -> OpId {
        self.invoke_inner(process, f, key, value, Some(time_ns), None)
    }

    /// [`HistoryRecorder::invoke_at`] with the consistency level asked for.
    pub fn invoke_at_level(
        &mut self,
        process: u64,
        f: Function,
        key: &str,
        value: Json,
        time_ns: u64,
        level: Level,
    ) -> OpId {
        self.invoke_inner(process, f, key, value, Some(time_ns), Some(level))
    }

    /// Records a completion. `value`: for an `ok` read the value read (`Null`: absent); ignored
    /// otherwise (the invocation's value is repeated). `error`: e.g. `Some("mismatch")` on a
    /// `Fail` of a cas that found another value.
    pub fn complete(&mut self, op: OpId, kind: CompletionType, value: Json, error: Option<&str>) {
        self.complete_inner(op, kind, value, error, None, &ReceiptInfo::default())
    }

    /// [`HistoryRecorder::complete`] with a timestamp.
    pub fn complete_at(
        &mut self,
        op: OpId,
        kind: CompletionType,
        value: Json,
        error: Option<&str>,
        time_ns: u64,
    ) {
        self.complete_inner(
            op,
            kind,
            value,
            error,
            Some(time_ns),
            &ReceiptInfo::default(),
        )
    }

    /// [`HistoryRecorder::complete_at`] with what the reply said (versions, receipt).
    pub fn complete_with_receipt(
        &mut self,
        op: OpId,
        kind: CompletionType,
        value: Json,
        error: Option<&str>,
        time_ns: u64,
        receipt: &ReceiptInfo,
    ) {
        self.complete_inner(op, kind, value, error, Some(time_ns), receipt)
    }

    fn invoke_inner(
        &mut self,
        process: u64,
        f: Function,
        key: &str,
        value: Json,
        time_ns: Option<u64>,
        level: Option<Level>,
    ) -> OpId {
        assert!(
            !self.pending.contains_key(&process),
            "process {process} invoked while it has an operation pending"
        );
        let mut m = Map::new();
        m.insert("process".into(), Json::from(process));
        m.insert("type".into(), Json::from("invoke"));
        m.insert("f".into(), Json::from(f.as_str()));
        m.insert("key".into(), Json::from(key));
        m.insert("value".into(), value.clone());
        if let Some(t) = time_ns {
            m.insert("time".into(), Json::from(t));
        }
        if let Some(level) = level {
            m.insert("level".into(), Json::from(level.name()));
        }
        self.lines.push(Json::Object(m));
        self.ops.push(RecordedOp {
            process,
            function: f,
            key: key.to_string(),
            value,
            completed: false,
        });
        let id = self.ops.len() - 1;
        self.pending.insert(process, id);
        id
    }

    fn complete_inner(
        &mut self,
        op: OpId,
        kind: CompletionType,
        value: Json,
        error: Option<&str>,
        time_ns: Option<u64>,
        receipt: &ReceiptInfo,
    ) {
        let recorded = &mut self.ops[op];
        assert!(!recorded.completed, "operation {op} completed twice");
        recorded.completed = true;
        self.pending.remove(&recorded.process);
        let value = match (recorded.function, kind) {
            (Function::Read, CompletionType::Ok) => value,
            _ => recorded.value.clone(),
        };
        let mut m = Map::new();
        m.insert("process".into(), Json::from(recorded.process));
        m.insert("type".into(), Json::from(kind.as_str()));
        m.insert("f".into(), Json::from(recorded.function.as_str()));
        m.insert("key".into(), Json::from(recorded.key.as_str()));
        m.insert("value".into(), value);
        if let Some(e) = error {
            m.insert("error".into(), Json::from(e));
        }
        if let Some(t) = time_ns {
            m.insert("time".into(), Json::from(t));
        }
        if !receipt.is_empty() {
            receipt.insert_into(&mut m);
        }
        self.lines.push(Json::Object(m));
    }

    /// The history so far, one JSON object per line.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }

    /// The history so far, parsed (operations still pending are `Unknown`). Fails only if a
    /// recorded value is not a supported scalar.
    pub fn to_history(&self) -> Result<History, ParseError> {
        parse_jsonl(&self.to_jsonl())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_name_their_line_number() {
        let cases = [
            ("not json", 1),
            ("{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\"}\n{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\"}", 2),
            ("\n{\"process\":1,\"type\":\"ok\",\"f\":\"read\",\"key\":\"a\"}", 2),
            ("{\"process\":1,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"a\",\"value\":1.5}", 1),
            ("{\"process\":1,\"type\":\"invoke\",\"f\":\"frob\",\"key\":\"a\"}", 1),
            ("{\"process\":1,\"type\":\"invoke\",\"f\":\"cas\",\"key\":\"a\",\"value\":[1]}", 1),
            ("{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\"}\n{\"process\":1,\"type\":\"ok\",\"f\":\"write\",\"key\":\"a\"}", 2),
        ];
        for (text, line) in cases {
            let err = parse_jsonl(text).expect_err(text);
            assert_eq!(err.line, line, "{text}: {err}");
        }
    }

    #[test]
    fn recorder_round_trips_through_jsonl() {
        let mut r = HistoryRecorder::new();
        let w = r.invoke_at(1, Function::Write, "k", Json::from(3), 10);
        let rd = r.invoke(2, Function::Read, "k", Json::Null);
        r.complete(rd, CompletionType::Ok, Json::from(3), None);
        r.complete_at(w, CompletionType::Ok, Json::Null, None, 20);
        let c = r.invoke(2, Function::Cas, "k", serde_json::json!([4, 5]));
        r.complete(c, CompletionType::Fail, Json::Null, Some("mismatch"));
        let i = r.invoke(1, Function::Write, "k", Json::from("x"));
        r.complete(i, CompletionType::Info, Json::Null, Some("timeout"));
        let again = r.invoke(1, Function::Read, "k", Json::Null);
        let history = r.to_history().unwrap();
        assert_eq!(history.ops.len(), 5);
        assert_eq!(history.ops[w].outcome, Outcome::Ok { read: None });
        assert_eq!(history.ops[w].invoke_time_ns, Some(10));
        assert_eq!(
            history.ops[rd].outcome,
            Outcome::Ok {
                read: Some(Value::Int(3))
            }
        );
        assert_eq!(history.ops[c].outcome, Outcome::CasMismatch);
        assert_eq!(history.ops[again].generation, 1);
        assert_eq!(history.ops[again].complete_seq, None);
        assert_eq!(parse_jsonl(&history.to_jsonl()).unwrap(), history);
    }

    #[test]
    fn levels_and_receipts_round_trip_and_shape_the_linearizability_view() {
        let mut r = HistoryRecorder::new();
        let receipt = |version, bound| ReceiptInfo {
            version: Some(version),
            index: Some(9),
            staleness_bound_ms: bound,
            served: None,
        };
        let w = r.invoke_at_level(1, Function::Write, "k", Json::from(1), 1, Level::Leader);
        r.complete_with_receipt(
            w,
            CompletionType::Ok,
            Json::Null,
            None,
            2,
            &receipt(7, None),
        );
        let s = r.invoke_at_level(2, Function::Read, "k", Json::Null, 3, Level::Stale);
        r.complete_with_receipt(
            s,
            CompletionType::Ok,
            Json::Null,
            None,
            4,
            &receipt(0, Some(50)),
        );
        let l = r.invoke_at_level(2, Function::Read, "k", Json::Null, 5, Level::Linearizable);
        r.complete_with_receipt(
            l,
            CompletionType::Ok,
            Json::from(1),
            None,
            6,
            &receipt(7, None),
        );
        let history = r.to_history().unwrap();
        assert_eq!(history.ops[s].level, Some(Level::Stale));
        assert_eq!(history.ops[s].receipt, receipt(0, Some(50)));
        assert_eq!(parse_jsonl(&history.to_jsonl()).unwrap(), history);

        let view = history.linearizability_view();
        assert_eq!(view.ops.len(), 2, "the stale read is left out");
        assert!(matches!(view.ops[0].outcome, Outcome::Unknown { .. }));
        assert_eq!((view.ops[1].id, view.ops[1].invoke_seq), (1, 5));
        // Without levels nothing changes.
        let plain = parse_jsonl("{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\"}")
            .unwrap();
        assert_eq!(plain.linearizability_view(), plain);
        let bad = "{\"process\":1,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\",\"level\":\"eventual\"}";
        assert_eq!(parse_jsonl(bad).unwrap_err().line, 1);
    }
}
