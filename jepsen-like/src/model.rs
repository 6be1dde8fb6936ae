//! Sequential specifications ("models") the checker linearizes against.
//!
//! A [`Model`] says what a single, correct, sequential object would do: from a state, given an
//! operation's input and observed output, either the next state or `None` (that output was
//! impossible there). The search in [`crate::search`] is generic over it, as Porcupine's is, so
//! the same algorithm checks ringleader's register ([`RegisterModel`]) and, in the tests, the
//! public Porcupine (get/put/append) and Knossos (mutex) histories.
//!
//! Invariant: `step` is a pure function of its arguments, and states compare equal exactly when
//! every future behaviour is the same; the search memoizes on `(linearized set, state)` and is
//! only sound if both hold.

use std::collections::HashMap;
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

    fn is_observer(&self, input: &Self::Input, output: Option<&Self::Output>) -> bool {
        matches!(
            (input, output),
            (RegisterInput::Read, _) | (_, Some(RegisterOutput::CasMismatch))
        )
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
}
