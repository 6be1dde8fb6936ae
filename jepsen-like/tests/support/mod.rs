//! Test-only helpers: a minimal EDN reader and converters from the public Porcupine and
//! Knossos histories (in `../shared/histories`) to this crate's types, plus the extra models
//! (Porcupine's get/put/append, Knossos's mutex and multi-register) those histories need.
//! Kept out of the public API on purpose: the checker's input format is JSONL.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use jepsen_like::history::{CompletionType, Function, History, HistoryRecorder, OpId};
use jepsen_like::model::Model;
use jepsen_like::search::ModelOp;
use serde_json::Value as Json;

/// Root of the shared histories, relative to this crate (CI has `../shared` beside the checkout).
pub fn histories_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/histories"
    ))
}

// ---------------------------------------------------------------------------------------------
// EDN

/// The EDN subset the histories use.
#[derive(Clone, Debug, PartialEq)]
pub enum Edn {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Without the leading colon.
    Keyword(String),
    Symbol(String),
    Vector(Vec<Edn>),
    List(Vec<Edn>),
    Set(Vec<Edn>),
    Map(Vec<(Edn, Edn)>),
}

impl Edn {
    /// Looks up a keyword key in a map.
    pub fn get(&self, keyword: &str) -> Option<&Edn> {
        match self {
            Edn::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Edn::Keyword(name) if name == keyword))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn keyword(&self) -> Option<&str> {
        match self {
            Edn::Keyword(k) => Some(k),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Edn::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn items(&self) -> Option<&[Edn]> {
        match self {
            Edn::Vector(v) | Edn::List(v) => Some(v),
            _ => None,
        }
    }
}

/// Parses every top-level form of `text`.
pub fn parse_edn(text: &str) -> Result<Vec<Edn>, String> {
    let mut reader = EdnReader {
        chars: text.chars().collect(),
        pos: 0,
    };
    let mut forms = Vec::new();
    loop {
        reader.skip_blank();
        if reader.pos >= reader.chars.len() {
            return Ok(forms);
        }
        forms.push(reader.form()?);
    }
}

/// A history file's operations: one vector/list of maps, or one map per line.
pub fn edn_history(text: &str) -> Vec<Edn> {
    let forms = parse_edn(text).expect("valid EDN");
    match forms.as_slice() {
        [single] if single.items().is_some() => single.items().unwrap().to_vec(),
        _ => forms,
    }
}

struct EdnReader {
    chars: Vec<char>,
    pos: usize,
}

impl EdnReader {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == ',' {
                self.pos += 1;
            } else if c == ';' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn seq(&mut self, close: char) -> Result<Vec<Edn>, String> {
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => return Err(format!("unclosed {close:?}")),
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                Some(_) => items.push(self.form()?),
            }
        }
    }

    fn token(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || ",;()[]{}\"".contains(c) {
                break;
            }
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn form(&mut self) -> Result<Edn, String> {
        self.skip_blank();
        let c = self.peek().ok_or("unexpected end of input")?;
        match c {
            '[' => {
                self.pos += 1;
                Ok(Edn::Vector(self.seq(']')?))
            }
            '(' => {
                self.pos += 1;
                Ok(Edn::List(self.seq(')')?))
            }
            '{' => {
                self.pos += 1;
                let items = self.seq('}')?;
                if items.len() % 2 != 0 {
                    return Err("map with an odd number of forms".into());
                }
                let mut pairs = Vec::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Ok(Edn::Map(pairs))
            }
            '#' => {
                self.pos += 1;
                match self.peek() {
                    Some('{') => {
                        self.pos += 1;
                        Ok(Edn::Set(self.seq('}')?))
                    }
                    Some('_') => {
                        self.pos += 1;
                        self.form()?;
                        self.form()
                    }
                    _ => Err(format!("unsupported dispatch at char {}", self.pos)),
                }
            }
            '"' => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    let c = self.peek().ok_or("unclosed string")?;
                    self.pos += 1;
                    match c {
                        '"' => return Ok(Edn::Str(s)),
                        '\\' => {
                            let e = self.peek().ok_or("unclosed string")?;
                            self.pos += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                        }
                        other => s.push(other),
                    }
                }
            }
            ':' => {
                self.pos += 1;
                Ok(Edn::Keyword(self.token()))
            }
            _ => {
                let token = self.token();
                if token.is_empty() {
                    return Err(format!("unexpected {c:?} at char {}", self.pos));
                }
                Ok(match token.as_str() {
                    "nil" => Edn::Nil,
                    "true" => Edn::Bool(true),
                    "false" => Edn::Bool(false),
                    t if t.starts_with(|c: char| c.is_ascii_digit())
                        || (t.len() > 1 && t.starts_with(['-', '+'])) =>
                    {
                        let digits = t.trim_end_matches('N');
                        match digits.parse::<i64>() {
                            Ok(i) => Edn::Int(i),
                            Err(_) => Edn::Float(
                                digits
                                    .trim_end_matches('M')
                                    .parse()
                                    .map_err(|_| format!("bad number {t}"))?,
                            ),
                        }
                    }
                    t => Edn::Symbol(t.to_string()),
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Knossos cas-register -> History (through the public recorder, hence JSONL)

/// The key the single Knossos register is stored under.
pub const REGISTER_KEY: &str = "register";

fn edn_to_json(v: &Edn) -> Json {
    match v {
        Edn::Nil => Json::Null,
        Edn::Int(i) => Json::from(*i),
        Edn::Str(s) => Json::from(s.as_str()),
        Edn::Bool(b) => Json::from(*b),
        Edn::Vector(items) | Edn::List(items) => {
            Json::Array(items.iter().map(edn_to_json).collect())
        }
        other => panic!("unsupported value {other:?}"),
    }
}

/// A Knossos cas-register history as ours. Knossos' register starts at 0 and ours absent, so
/// a write of 0 completing before everything else is prepended. A read that completes `ok`
/// with `nil` is unconstrained in Knossos: recorded as `info` (an unknown read constrains
/// nothing). `fail` means "did not happen" in Knossos (no cas mismatches), and stays `fail`.
/// Non-integer processes (the nemesis) are skipped.
///
/// Returns the history and, for each op, the index (in the EDN file, all entries counted, 0
/// based) of its completion entry.
pub fn knossos_register_history(entries: &[Edn]) -> (History, BTreeMap<OpId, usize>) {
    let mut recorder = HistoryRecorder::new();
    let setup_process = 1_000_000;
    let init = recorder.invoke(setup_process, Function::Write, REGISTER_KEY, Json::from(0));
    recorder.complete(init, CompletionType::Ok, Json::Null, None);
    let mut pending: BTreeMap<i64, OpId> = BTreeMap::new();
    let mut completion_index = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let Some(process) = entry.get("process").and_then(Edn::int) else {
            continue;
        };
        let f = match entry.get("f").and_then(Edn::keyword) {
            Some("read") => Function::Read,
            Some("write") => Function::Write,
            Some("cas") => Function::Cas,
            other => panic!("unexpected f {other:?}"),
        };
        let value = entry.get("value").map(edn_to_json).unwrap_or(Json::Null);
        match entry.get("type").and_then(Edn::keyword) {
            Some("invoke") => {
                let value = if f == Function::Read {
                    Json::Null
                } else {
                    value
                };
                let id = recorder.invoke(process as u64, f, REGISTER_KEY, value);
                assert!(
                    pending.insert(process, id).is_none(),
                    "process {process} overlaps"
                );
            }
            Some(kind) => {
                let id = pending
                    .remove(&process)
                    .expect("completion has an invocation");
                completion_index.insert(id, index);
                let kind = match kind {
                    "ok" if f == Function::Read && value.is_null() => CompletionType::Info,
                    "ok" => CompletionType::Ok,
                    "fail" => CompletionType::Fail,
                    "info" => CompletionType::Info,
                    other => panic!("unexpected type {other}"),
                };
                recorder.complete(id, kind, value, None);
            }
            None => panic!("entry without type: {entry:?}"),
        }
    }
    (
        recorder.to_history().expect("recorded history parses"),
        completion_index,
    )
}

// ---------------------------------------------------------------------------------------------
// Generic Knossos/Porcupine op extraction for models outside the register

/// An operation extracted from an EDN history: the invocation, and its completion if any.
pub struct EdnOp<'a> {
    pub invoke: &'a Edn,
    pub invoke_index: usize,
    /// `(index, entry)` of the completion.
    pub completion: Option<(usize, &'a Edn)>,
}

/// Pairs invocations with completions per (integer) process, in invocation order.
pub fn edn_ops(entries: &[Edn]) -> Vec<EdnOp<'_>> {
    let mut ops: Vec<EdnOp<'_>> = Vec::new();
    let mut pending: BTreeMap<i64, usize> = BTreeMap::new();
    for (index, entry) in entries.iter().enumerate() {
        let Some(process) = entry.get("process").and_then(Edn::int) else {
            continue;
        };
        if entry.get("type").and_then(Edn::keyword) == Some("invoke") {
            assert!(pending.insert(process, ops.len()).is_none());
            ops.push(EdnOp {
                invoke: entry,
                invoke_index: index,
                completion: None,
            });
        } else {
            let op = pending
                .remove(&process)
                .expect("completion has an invocation");
            ops[op].completion = Some((index, entry));
        }
    }
    ops
}

fn completion_type<'a>(op: &EdnOp<'a>) -> Option<&'a str> {
    op.completion
        .and_then(|(_, e)| e.get("type").and_then(Edn::keyword))
}

// ---------------------------------------------------------------------------------------------
// Porcupine kv: get/put/append on strings, initially ""

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvInput {
    Get,
    Put(String),
    Append(String),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = String;
    type Input = KvInput;
    /// The value a get returned; `()`-like (empty) for put and append.
    type Output = Option<String>;

    fn init(&self) -> String {
        String::new()
    }

    fn step(
        &self,
        state: &String,
        input: &KvInput,
        output: Option<&Option<String>>,
    ) -> Option<String> {
        match input {
            KvInput::Get => match output {
                Some(Some(seen)) => (seen == state).then(|| state.clone()),
                _ => Some(state.clone()),
            },
            KvInput::Put(v) => Some(v.clone()),
            KvInput::Append(v) => Some(format!("{state}{v}")),
        }
    }

    fn is_observer(&self, input: &KvInput, _output: Option<&Option<String>>) -> bool {
        *input == KvInput::Get
    }
}

/// Porcupine's kv files, partitioned by key. Ops left open at the end have unknown outcomes
/// (Porcupine closes them at the end of the history, which for put/append is equivalent).
pub fn porcupine_kv(entries: &[Edn]) -> BTreeMap<String, Vec<ModelOp<KvInput, Option<String>>>> {
    let mut keys: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for op in edn_ops(entries) {
        let key = match op.invoke.get("key") {
            Some(Edn::Str(k)) => k.clone(),
            other => panic!("kv op without key: {other:?}"),
        };
        let value = || match op.invoke.get("value") {
            Some(Edn::Str(s)) => s.clone(),
            other => panic!("put/append without string value: {other:?}"),
        };
        let input = match op.invoke.get("f").and_then(Edn::keyword) {
            Some("get") => KvInput::Get,
            Some("put") => KvInput::Put(value()),
            Some("append") => KvInput::Append(value()),
            other => panic!("unexpected f {other:?}"),
        };
        let call = op.invoke_index as u64;
        let model_op = match (completion_type(&op), op.completion) {
            (Some("ok"), Some((index, done))) => {
                let output = match (&input, done.get("value")) {
                    (KvInput::Get, Some(Edn::Str(s))) => Some(s.clone()),
                    _ => None,
                };
                ModelOp::completed(call, index as u64, input, output)
            }
            (None, _) => ModelOp::unknown(call, input),
            (other, _) => panic!("unexpected completion {other:?} in a porcupine kv file"),
        };
        keys.entry(key).or_default().push(model_op);
    }
    keys
}

// ---------------------------------------------------------------------------------------------
// Knossos mutex

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutexInput {
    Acquire,
    Release,
}

/// Knossos' `(mutex)`: acquire needs it free, release needs it held (owner not tracked).
#[derive(Clone, Copy, Debug, Default)]
pub struct MutexModel;

impl Model for MutexModel {
    type State = bool;
    type Input = MutexInput;
    type Output = ();

    fn init(&self) -> bool {
        false
    }

    fn step(&self, held: &bool, input: &MutexInput, _output: Option<&()>) -> Option<bool> {
        match input {
            MutexInput::Acquire => (!held).then_some(true),
            MutexInput::Release => held.then_some(false),
        }
    }
}

/// A Knossos mutex history: `fail` dropped, `info` and open ops unknown.
pub fn knossos_mutex(entries: &[Edn]) -> Vec<ModelOp<MutexInput, ()>> {
    let mut ops = Vec::new();
    for op in edn_ops(entries) {
        let input = match op.invoke.get("f").and_then(Edn::keyword) {
            Some("acquire") => MutexInput::Acquire,
            Some("release") => MutexInput::Release,
            other => panic!("unexpected f {other:?}"),
        };
        let call = op.invoke_index as u64;
        match (completion_type(&op), op.completion) {
            (Some("ok"), Some((index, _))) => {
                ops.push(ModelOp::completed(call, index as u64, input, ()))
            }
            (Some("fail"), _) => {}
            _ => ops.push(ModelOp::unknown(call, input)),
        }
    }
    ops
}

// ---------------------------------------------------------------------------------------------
// Knossos multi-register: transactions of reads and writes over named registers

/// `(read? , register, value)`; a read's `None` is unconstrained.
pub type MicroOp = (bool, String, Option<i64>);

/// Knossos' `(multi-register {:x 0 :y 0})`.
#[derive(Clone, Debug)]
pub struct MultiRegisterModel {
    pub initial: BTreeMap<String, i64>,
}

impl Model for MultiRegisterModel {
    type State = BTreeMap<String, i64>;
    type Input = Vec<MicroOp>;
    /// The completed micro-ops (reads carry values); unknown: the invocation's.
    type Output = Vec<MicroOp>;

    fn init(&self) -> Self::State {
        self.initial.clone()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Vec<MicroOp>,
        output: Option<&Vec<MicroOp>>,
    ) -> Option<Self::State> {
        let mut next = state.clone();
        for (is_read, register, value) in output.unwrap_or(input) {
            if *is_read {
                if let Some(v) = value {
                    if next.get(register) != Some(v) {
                        return None;
                    }
                }
            } else {
                next.insert(register.clone(), value.expect("writes carry values"));
            }
        }
        Some(next)
    }
}

fn micro_ops(value: Option<&Edn>) -> Vec<MicroOp> {
    value
        .and_then(Edn::items)
        .expect("txn value is a vector")
        .iter()
        .map(|m| {
            let parts = m.items().expect("micro-op is a vector");
            let is_read = match parts[0].keyword() {
                Some("read") => true,
                Some("write") => false,
                other => panic!("unexpected micro-op {other:?}"),
            };
            let register = parts[1].keyword().expect("register name").to_string();
            (is_read, register, parts[2].int())
        })
        .collect()
}

pub fn knossos_multi_register(entries: &[Edn]) -> Vec<ModelOp<Vec<MicroOp>, Vec<MicroOp>>> {
    let mut ops = Vec::new();
    for op in edn_ops(entries) {
        let input = micro_ops(op.invoke.get("value"));
        let call = op.invoke_index as u64;
        match (completion_type(&op), op.completion) {
            (Some("ok"), Some((index, done))) => ops.push(ModelOp::completed(
                call,
                index as u64,
                input,
                micro_ops(done.get("value")),
            )),
            (Some("fail"), _) => {}
            _ => ops.push(ModelOp::unknown(call, input)),
        }
    }
    ops
}
