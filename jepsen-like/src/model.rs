//! Sequential specifications ("models") the checker linearizes against.
//!
//! A [`Model`] says what a single, correct, sequential object would do: from a state, given an
//! operation's input and observed output, either the next state or `None` (that output was
//! impossible there). The search in [`crate::search`] is generic over it, as Porcupine's is, so
//! the same algorithm checks ringleader's register ([`RegisterModel`]) and the models of the
//! public histories `ringleader check` reads (see [`crate::formats`]): Porcupine's string
//! key-value store ([`KvModel`]), Knossos's [`MutexModel`] and [`MultiRegisterModel`]. Knossos's
//! cas-register needs no model of its own: [`crate::formats::knossos`] maps it onto
//! [`RegisterModel`].
//!
//! Invariant: `step` is a pure function of its arguments, and states compare equal exactly when
//! every future behaviour is the same; the search memoizes on `(linearized set, state)` and is
//! only sound if both hold.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;

use crate::history::Value;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;

    fn init(&self) -> Self::State;

    /// The state after an operation with `input` took effect in `state` and returned
    /// `output`, or `None` if it could not have. `output` is `None` when the outcome is unknown
    /// (a Jepsen `info` operation): return the state the operation would lead to if it happened
    /// here, or `None` if it could not happen here.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// True if two operations with these inputs whose outcomes are both unknown behave alike
    /// in every state: the search then linearizes them only in call order (the earlier one is
    /// available wherever the later one is, so swapping them never loses a linearization),
    /// which keeps a history with many unknown-outcome writes from exploring every subset of
    /// them. `false` (the default) is always safe.
    fn interchangeable(&self, a: &Self::Input, b: &Self::Input) -> bool {
        let _ = (a, b);
        false
    }

    /// True if the operation never changes the state (a read). Such operations only add
    /// constraints, so dropping one from a non-linearizable history cannot make it
    /// linearizable; the shrinker relies on this and removes only these.
    fn is_observer(&self, _input: &Self::Input, _output: Option<&Self::Output>) -> bool {
        false
    }

    /// Human description of an operation, for reports.
    fn describe(&self, input: &Self::Input, output: Option<&Self::Output>) -> String {
        format!("{input:?} -> {output:?}")
    }
}

/// A value interned to a small integer, so register states are `Copy` and cheap to hash.
pub type ValueId = u32;

/// Interns [`Value`]s of one key.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: HashMap<Value, ValueId>,
    values: Vec<Value>,
}

impl Interner {
    pub fn intern(&mut self, value: &Value) -> ValueId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = ValueId::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        self.values.push(value.clone());
        self.ids.insert(value.clone(), id);
        id
    }

    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id as usize]
    }
}

/// Input of a register operation (values interned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterInput {
    Read,
    Write(ValueId),
    Cas {
        expected: Option<ValueId>,
        new: ValueId,
    },
}

/// Observed output of a register operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOutput {
    /// A read returned this (`None`: key absent).
    Read(Option<ValueId>),
    /// A write or cas took effect.
    Done,
    /// A cas ran and found a value other than `expected`.
    CasMismatch,
}

/// One key's register: absent (`None`) or a value. Starts absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct RegisterModel;

impl Model for RegisterModel {
    type State = Option<ValueId>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Self::State {
        None
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State> {
        match (input, output) {
            (RegisterInput::Read, Some(RegisterOutput::Read(seen))) => {
                (seen == state).then_some(*state)
            }
            (RegisterInput::Read, None) => Some(*state),
            (RegisterInput::Write(v), Some(RegisterOutput::Done) | None) => Some(Some(*v)),
            (RegisterInput::Cas { expected, new }, Some(RegisterOutput::Done)) => {
                (expected == state).then_some(Some(*new))
            }
            (RegisterInput::Cas { expected, .. }, Some(RegisterOutput::CasMismatch)) => {
                (expected != state).then_some(*state)
            }
            // Unknown cas: if it happened here, the comparison decided what it did.
            (RegisterInput::Cas { expected, new }, None) => Some(if expected == state {
                Some(*new)
            } else {
                *state
            }),
            // Outputs that do not belong to the input: never possible.
            _ => None,
        }
    }

    fn interchangeable(&self, a: &Self::Input, b: &Self::Input) -> bool {
        a == b
    }

    fn is_observer(&self, input: &Self::Input, output: Option<&Self::Output>) -> bool {
        matches!(
            (input, output),
            (RegisterInput::Read, _) | (_, Some(RegisterOutput::CasMismatch))
        )
    }
}

/// An operation on Porcupine's key-value store (one key; the checker splits keys apart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvInput {
    Get,
    Put(String),
    Append(String),
}

/// Porcupine's `kvModel` for one key: a string, initially `""` (a real value, not "absent");
/// get returns it, put replaces it, append concatenates.
///
/// The output is what a get returned; `None` for put and append, and for a get whose value
/// was not recorded (which then constrains nothing).
#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    type State = String;
    type Input = KvInput;
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
            KvInput::Put(value) => Some(value.clone()),
            KvInput::Append(value) => Some(format!("{state}{value}")),
        }
    }

    fn is_observer(&self, input: &KvInput, _output: Option<&Option<String>>) -> bool {
        *input == KvInput::Get
    }

    fn describe(&self, input: &KvInput, output: Option<&Option<String>>) -> String {
        match (input, output) {
            (KvInput::Get, Some(Some(seen))) => format!("get -> {seen:?}"),
            (KvInput::Get, _) => "get -> ?".to_string(),
            (KvInput::Put(value), _) => format!("put {value:?}"),
            (KvInput::Append(value), _) => format!("append {value:?}"),
        }
    }
}

/// An operation on Knossos's mutex.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MutexInput {
    Acquire,
    Release,
}

/// Knossos's `(mutex)`: starts free; acquire needs it free, release needs it held. Like
/// Knossos, the owner is not tracked (any process may release).
#[derive(Clone, Copy, Debug, Default)]
pub struct MutexModel;

impl Model for MutexModel {
    /// Held?
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

    fn describe(&self, input: &MutexInput, _output: Option<&()>) -> String {
        match input {
            MutexInput::Acquire => "acquire".to_string(),
            MutexInput::Release => "release".to_string(),
        }
    }
}

/// One step of a multi-register transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MicroOp {
    /// Reads `register`; `None` (Knossos's `nil`) constrains nothing.
    Read {
        register: String,
        value: Option<i64>,
    },
    Write {
        register: String,
        value: i64,
    },
}

/// Knossos's `(multi-register initial)`: named integer registers, read and written by
/// transactions of [`MicroOp`]s that take effect atomically. Input is the invoked
/// transaction, output the completed one (whose reads carry the values seen); an unknown
/// outcome replays the invocation. Reading a register absent from the state fails.
#[derive(Clone, Debug, Default)]
pub struct MultiRegisterModel {
    pub initial: BTreeMap<String, i64>,
}

impl Model for MultiRegisterModel {
    type State = BTreeMap<String, i64>;
    type Input = Vec<MicroOp>;
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
        for micro_op in output.unwrap_or(input) {
            match micro_op {
                MicroOp::Read {
                    register,
                    value: Some(seen),
                } => {
                    if next.get(register) != Some(seen) {
                        return None;
                    }
                }
                MicroOp::Read { value: None, .. } => {}
                MicroOp::Write { register, value } => {
                    next.insert(register.clone(), *value);
                }
            }
        }
        Some(next)
    }

    fn is_observer(&self, input: &Vec<MicroOp>, _output: Option<&Vec<MicroOp>>) -> bool {
        input.iter().all(|m| matches!(m, MicroOp::Read { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_steps() {
        let m = RegisterModel;
        let read = |v| Some(RegisterOutput::Read(v));
        assert_eq!(
            m.step(&None, &RegisterInput::Read, read(None).as_ref()),
            Some(None)
        );
        assert_eq!(
            m.step(&None, &RegisterInput::Read, read(Some(1)).as_ref()),
            None
        );
        assert_eq!(
            m.step(&Some(1), &RegisterInput::Write(2), None),
            Some(Some(2))
        );
        let cas = RegisterInput::Cas {
            expected: Some(1),
            new: 2,
        };
        let done = Some(RegisterOutput::Done);
        let mismatch = Some(RegisterOutput::CasMismatch);
        assert_eq!(m.step(&Some(1), &cas, done.as_ref()), Some(Some(2)));
        assert_eq!(m.step(&Some(3), &cas, done.as_ref()), None);
        assert_eq!(m.step(&Some(3), &cas, mismatch.as_ref()), Some(Some(3)));
        assert_eq!(m.step(&Some(1), &cas, mismatch.as_ref()), None);
        assert_eq!(m.step(&Some(1), &cas, None), Some(Some(2)));
        assert_eq!(m.step(&None, &cas, None), Some(None));
    }

    #[test]
    fn kv_mutex_and_multi_register_steps() {
        let kv = KvModel;
        let appended = kv.step(&"x".to_string(), &KvInput::Append("y".into()), None);
        assert_eq!(appended.as_deref(), Some("xy"));
        let seen = Some(Some("x".to_string()));
        assert!(kv
            .step(&"xy".to_string(), &KvInput::Get, seen.as_ref())
            .is_none());

        assert_eq!(
            MutexModel.step(&false, &MutexInput::Acquire, None),
            Some(true)
        );
        assert_eq!(MutexModel.step(&true, &MutexInput::Acquire, None), None);
        assert_eq!(MutexModel.step(&false, &MutexInput::Release, None), None);

        let registers = MultiRegisterModel {
            initial: [("x".to_string(), 0)].into(),
        };
        let read_x = |value| MicroOp::Read {
            register: "x".into(),
            value,
        };
        let write_x = MicroOp::Write {
            register: "x".into(),
            value: 2,
        };
        let txn = vec![write_x, read_x(Some(2))];
        assert!(registers.step(&registers.init(), &txn, None).is_some());
        assert!(registers
            .step(&registers.init(), &vec![read_x(Some(1))], None)
            .is_none());
        assert!(registers
            .step(&registers.init(), &vec![read_x(None)], None)
            .is_some());
    }
}
