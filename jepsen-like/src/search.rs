//! The linearizability search: Wing & Gong's algorithm with Lowe's memoization, as in
//! Porcupine's `checkSingle`, generic over a [`Model`].
//!
//! Why this algorithm: it explores linearizations depth first, always trying to linearize next
//! an operation that is *minimal* (invoked before any unlinearized operation returned), and
//! prunes a configuration it has seen before. A configuration is the set of operations
//! linearized so far plus the model state they led to (Lowe, "Testing for linearizability",
//! 2016); from equal configurations the rest of the search is identical, so the cache makes
//! typical histories near-linear in their length.
//!
//! Shape of the search (names follow Porcupine):
//! - `entries`: the call and return events of all operations in real-time order, in a doubly
//!   linked list with a sentinel. An operation whose outcome is unknown has a call entry and no
//!   return entry: it may be linearized anywhere after its call, or never.
//! - Walking the list from the head, a call entry is a candidate: if the model accepts it in the
//!   current state and the resulting configuration is new, it is *lifted* (its call and return
//!   entries unlinked) and pushed on the stack with the state before it; the walk restarts at
//!   the head. A return entry means an operation that had to be linearized by now was not: pop
//!   the last choice, *unlift* it (relink, in reverse order of unlinking, as in dancing links)
//!   and try the next entry after its call. Popping from an empty stack proves the history is
//!   not linearizable.
//! - Success is when every operation with a known outcome is linearized; operations with an
//!   unknown outcome that are left over simply never happened.
//!
//! - Symmetry: unknown-outcome operations the model calls interchangeable (equal inputs, e.g.
//!   two timed-out writes of values no one read, see `checker::register_ops`) are linearized
//!   only in call order: a later one is tried only once every earlier twin is linearized. The
//!   earlier one is available wherever the later one is, so any linearization using the later
//!   one first can swap them; without this rule the search would try every subset of them.
//!
//! Invariants: the stack holds exactly the lifted operations, in linearization order; `state`
//! is the model applied to them from `init`; the linearized-set bitset mirrors the stack.
//!
//! Bounded: the search stops after `max_steps` loop iterations and reports
//! [`SearchOutcome::Unknown`]; the cache holds at most one entry per step.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use crate::model::Model;

/// One operation as the search sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelOp<I, O> {
    /// Real-time position of the invocation (any monotone clock: line numbers, nanoseconds).
    pub call: u64,
    pub input: I,
    /// `Some` if the operation completed with a known output; `None` if its outcome is unknown.
    pub completion: Option<Completion<O>>,
}

/// A known completion: when it returned and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion<O> {
    /// Real-time position of the return; must be `>= call`. Equal positions count as
    /// concurrent (calls sort before returns), the cautious reading.
    pub ret: u64,
    pub output: O,
}

impl<I, O> ModelOp<I, O> {
    pub fn completed(call: u64, ret: u64, input: I, output: O) -> Self {
        ModelOp {
            call,
            input,
            completion: Some(Completion { ret, output }),
        }
    }

    pub fn unknown(call: u64, input: I) -> Self {
        ModelOp {
            call,
            input,
            completion: None,
        }
    }

    pub fn ret(&self) -> Option<u64> {
        self.completion.as_ref().map(|c| c.ret)
    }

    pub fn output(&self) -> Option<&O> {
        self.completion.as_ref().map(|c| &c.output)
    }
}

/// What the search concluded. Operation numbers index the slice given to [`search`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchOutcome {
    /// A witness: a linearization order of all known-outcome operations (and of the
    /// unknown-outcome operations that it takes to have happened).
    Linearizable { order: Vec<usize> },
    /// No linearization exists. `longest_prefix` is the deepest partial linearization the
    /// search reached, in order; `failed_op` is the operation that had to come next (the
    /// earliest-returning operation not in that prefix) and could not be placed.
    NotLinearizable {
        longest_prefix: Vec<usize>,
        failed_op: usize,
    },
    /// The step budget ran out before a verdict.
    Unknown { longest_prefix: Vec<usize> },
}

/// A verdict and the work it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchResult {
    pub outcome: SearchOutcome,
    /// Loop iterations used (each tries one entry or backtracks once).
    pub steps: u64,
}

/// A search that can be paused when its step budget runs out and resumed with a larger one,
/// continuing exactly where it stopped: [`search`] with budget `n` then resumed to `m` does the
/// same iterations, in the same order, as one search with budget `m`. The checker uses it to
/// give every key a slice of steps in turn, so that one easy-to-refute key is found before a
/// hard one is searched to the end, without searching anything twice. It holds the search's
/// memo (up to one entry per step) until dropped.
pub struct ResumableSearch<'a, M: Model> {
    run: Search<'a, M>,
    outcome: Option<SearchOutcome>,
}

impl<'a, M: Model> ResumableSearch<'a, M> {
    pub fn new(model: &'a M, ops: &'a [ModelOp<M::Input, M::Output>]) -> Self {
        ResumableSearch {
            run: Search::new(model, ops),
            outcome: None,
        }
    }

    /// Runs until a verdict or until `max_steps` iterations in all (counting earlier calls);
    /// [`SearchOutcome::Unknown`] if the budget ran out first. Once there is a verdict, returns
    /// it again without searching.
    pub fn resume(&mut self, max_steps: u64) -> SearchOutcome {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        let outcome = self.run.run(max_steps);
        if !matches!(outcome, SearchOutcome::Unknown { .. }) {
            self.outcome = Some(outcome.clone());
        }
        outcome
    }

    /// Iterations used so far, over all calls.
    pub fn steps(&self) -> u64 {
        self.run.steps
    }
}

/// Searches for a linearization of `ops` against `model`, within `max_steps` iterations.
pub fn search<M: Model>(
    model: &M,
    ops: &[ModelOp<M::Input, M::Output>],
    max_steps: u64,
) -> SearchResult {
    let mut run = Search::new(model, ops);
    let outcome = run.run(max_steps);
    let result = SearchResult {
        outcome,
        steps: run.steps,
    };
    debug_assert!(result.steps <= max_steps);
    result
}

const NIL: usize = 0;

/// Configurations already explored: (model state, canonical linearized-set key).
type Cache<S> = HashSet<(S, Box<[u64]>), BuildHasherDefault<FxHasher>>;

struct Search<'a, M: Model> {
    model: &'a M,
    ops: &'a [ModelOp<M::Input, M::Output>],
    /// Linked list over entries `1..`; index 0 is the sentinel (head and tail).
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each entry: its operation, and whether it is a call.
    entry_op: Vec<usize>,
    entry_is_call: Vec<bool>,
    /// For a call entry: its return entry, or NIL for an unknown-outcome op.
    entry_return: Vec<usize>,
    slots: Vec<Slot>,
    set: LinearizedSet,
    state: M::State,
    stack: Vec<(usize, M::State)>,
    cache: Cache<M::State>,
    definite_remaining: usize,
    steps: u64,
    /// Deepest stack seen (operation numbers) and how much of it the current stack shares.
    best: Vec<usize>,
    best_agrees: usize,
    /// The entry to look at next: where a search that ran out of steps resumes.
    cursor: usize,
    /// For an unknown-outcome op: the latest earlier-called unknown-outcome op interchangeable
    /// with it (see the module documentation), which must be linearized first.
    twin_before: Vec<Option<usize>>,
    /// Whether each op is on the stack.
    linearized: Vec<bool>,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, ops: &'a [ModelOp<M::Input, M::Output>]) -> Self {
        // Events sorted by position; calls before returns at equal positions.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            if let Some(ret) = op.ret() {
                debug_assert!(ret >= op.call, "op {i} returns before it is called");
                events.push((ret, true, i));
            }
        }
        events.sort_unstable();
        let entries = events.len() + 1;
        let mut entry_op = vec![usize::MAX; entries];
        let mut entry_is_call = vec![false; entries];
        let mut entry_return = vec![NIL; entries];
        let mut call_entry = vec![NIL; ops.len()];
        for (index, &(_, is_return, op)) in events.iter().enumerate() {
            let entry = index + 1;
            entry_op[entry] = op;
            entry_is_call[entry] = !is_return;
            if is_return {
                entry_return[call_entry[op]] = entry;
            } else {
                call_entry[op] = entry;
            }
        }
        let next: Vec<usize> = (0..entries).map(|e| (e + 1) % entries).collect();
        let prev: Vec<usize> = (0..entries).map(|e| (e + entries - 1) % entries).collect();

        // Slots: known-outcome ops numbered by call order (so the linearized ones form a
        // dense prefix plus a short window), unknown-outcome ops in a separate small bitset.
        let mut slots = vec![Slot::Definite(0); ops.len()];
        let (mut definite, mut unknown) = (0u32, 0u32);
        for &(_, is_return, op) in &events {
            if is_return {
                continue;
            }
            if ops[op].completion.is_some() {
                slots[op] = Slot::Definite(definite);
                definite += 1;
            } else {
                slots[op] = Slot::Unknown(unknown);
                unknown += 1;
            }
        }
        // Each unknown-outcome op's earlier twin: one representative per class of
        // interchangeable inputs, the latest called.
        let mut twin_before = vec![None; ops.len()];
        let mut latest_of_class: Vec<usize> = Vec::new();
        for &(_, is_return, op) in &events {
            if is_return || ops[op].completion.is_some() {
                continue;
            }
            match latest_of_class
                .iter_mut()
                .find(|latest| model.interchangeable(&ops[**latest].input, &ops[op].input))
            {
                Some(latest) => {
                    twin_before[op] = Some(*latest);
                    *latest = op;
                }
                None => latest_of_class.push(op),
            }
        }
        let cursor = next[NIL];
        Search {
            model,
            ops,
            next,
            prev,
            entry_op,
            entry_is_call,
            entry_return,
            slots,
            set: LinearizedSet::new(definite as usize, unknown as usize),
            state: model.init(),
            stack: Vec::new(),
            cache: HashSet::default(),
            definite_remaining: definite as usize,
            steps: 0,
            best: Vec::new(),
            best_agrees: 0,
            cursor,
            twin_before,
            linearized: vec![false; ops.len()],
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.entry_return[call];
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.entry_return[call];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }

    fn run(&mut self, max_steps: u64) -> SearchOutcome {
        let mut cur = self.cursor;
        loop {
            if self.definite_remaining == 0 {
                let order = self.stack.iter().map(|&(e, _)| self.entry_op[e]).collect();
                return SearchOutcome::Linearizable { order };
            }
            if self.steps >= max_steps {
                self.cursor = cur;
                return SearchOutcome::Unknown {
                    longest_prefix: self.best.clone(),
                };
            }
            self.steps += 1;
            if cur != NIL && self.entry_is_call[cur] {
                let op = self.entry_op[cur];
                if self.twin_before[op].is_some_and(|twin| !self.linearized[twin]) {
                    cur = self.next[cur];
                    continue;
                }
                let model_op = &self.ops[op];
                if let Some(next_state) =
                    self.model
                        .step(&self.state, &model_op.input, model_op.output())
                {
                    let slot = self.slots[op];
                    self.set.insert(slot);
                    if self.cache.insert((next_state.clone(), self.set.key())) {
                        let before = std::mem::replace(&mut self.state, next_state);
                        self.stack.push((cur, before));
                        self.linearized[op] = true;
                        self.lift(cur);
                        if let Slot::Definite(_) = slot {
                            self.definite_remaining -= 1;
                        }
                        self.note_push(op);
                        cur = self.next[NIL];
                        continue;
                    }
                    self.set.remove(slot);
                }
                cur = self.next[cur];
            } else {
                // A return entry of an unlinearized op (or the end of the list, which is only
                // reachable once no return entries are left): the last choice was wrong.
                let Some((call, before)) = self.stack.pop() else {
                    return self.not_linearizable();
                };
                let op = self.entry_op[call];
                self.linearized[op] = false;
                self.state = before;
                let slot = self.slots[op];
                self.set.remove(slot);
                if let Slot::Definite(_) = slot {
                    self.definite_remaining += 1;
                }
                self.unlift(call);
                self.best_agrees = self.best_agrees.min(self.stack.len());
                cur = self.next[call];
            }
        }
    }

    /// Keeps `best` equal to the deepest stack seen, copying it only when the current stack
    /// diverged from it (forward progress is O(1)).
    fn note_push(&mut self, op: usize) {
        let depth = self.stack.len();
        if self.best_agrees == depth - 1 {
            if self.best.len() < depth {
                self.best.push(op);
                self.best_agrees = depth;
            } else if self.best[depth - 1] == op {
                self.best_agrees = depth;
            }
        } else if depth > self.best.len() {
            self.best = self.stack.iter().map(|&(e, _)| self.entry_op[e]).collect();
            self.best_agrees = depth;
        }
        debug_assert!(self.best_agrees <= self.best.len());
    }

    fn not_linearizable(&self) -> SearchOutcome {
        let mut in_prefix = vec![false; self.ops.len()];
        for &op in &self.best {
            in_prefix[op] = true;
        }
        let failed_op = (0..self.ops.len())
            .filter(|&op| !in_prefix[op])
            .filter_map(|op| self.ops[op].ret().map(|ret| (ret, op)))
            .min()
            .map(|(_, op)| op)
            .expect("a non-linearizable history has a known-outcome op outside any prefix");
        SearchOutcome::NotLinearizable {
            longest_prefix: self.best.clone(),
            failed_op,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Slot {
    Definite(u32),
    Unknown(u32),
}

/// The set of linearized operations, with a compact canonical key for the cache.
///
/// Known-outcome ops are numbered in call order, and one can only be linearized while every
/// earlier-returning op is pending or linearized, so the set is a run of full words, then a
/// short window, then zeros: the key stores only `low` (the first non-full word) and the window
/// `low..high`. Unknown-outcome ops live in their own (usually tiny) bitset, stored whole.
struct LinearizedSet {
    definite: Vec<u64>,
    low: usize,
    high: usize,
    unknown: Vec<u64>,
}

impl LinearizedSet {
    fn new(definite: usize, unknown: usize) -> Self {
        LinearizedSet {
            definite: vec![0; definite.div_ceil(64)],
            low: 0,
            high: 0,
            unknown: vec![0; unknown.div_ceil(64)],
        }
    }

    fn insert(&mut self, slot: Slot) {
        match slot {
            Slot::Definite(i) => {
                let (w, bit) = (i as usize / 64, 1u64 << (i % 64));
                debug_assert_eq!(self.definite[w] & bit, 0);
                self.definite[w] |= bit;
                self.high = self.high.max(w + 1);
                while self.low < self.definite.len() && self.definite[self.low] == u64::MAX {
                    self.low += 1;
                }
                self.high = self.high.max(self.low);
            }
            Slot::Unknown(i) => self.unknown[i as usize / 64] |= 1u64 << (i % 64),
        }
    }

    fn remove(&mut self, slot: Slot) {
        match slot {
            Slot::Definite(i) => {
                let (w, bit) = (i as usize / 64, 1u64 << (i % 64));
                debug_assert_ne!(self.definite[w] & bit, 0);
                self.definite[w] &= !bit;
                self.low = self.low.min(w);
                while self.high > self.low && self.definite[self.high - 1] == 0 {
                    self.high -= 1;
                }
            }
            Slot::Unknown(i) => self.unknown[i as usize / 64] &= !(1u64 << (i % 64)),
        }
    }

    /// Canonical: equal sets give equal keys (`low` is the first non-full word, `high` one past
    /// the last non-zero word or `low`, and the unknown part has a fixed length).
    fn key(&self) -> Box<[u64]> {
        let mut key = Vec::with_capacity(1 + self.high - self.low + self.unknown.len());
        key.push(self.low as u64);
        key.extend_from_slice(&self.definite[self.low..self.high]);
        key.extend_from_slice(&self.unknown);
        key.into_boxed_slice()
    }
}

/// The Firefox/rustc hash: fast on short integer keys and deterministic (no random seed).
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, word: u32) {
        self.write_u64(u64::from(word));
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RegisterInput as In, RegisterModel, RegisterOutput as Out};

    fn outcome(ops: &[ModelOp<In, Out>]) -> SearchOutcome {
        search(&RegisterModel, ops, 1_000_000).outcome
    }

    #[test]
    fn sequential_and_concurrent() {
        // w1 [0,1], r1 [2,3]: fine.
        let ok = [
            ModelOp::completed(0, 1, In::Write(1), Out::Done),
            ModelOp::completed(2, 3, In::Read, Out::Read(Some(1))),
        ];
        assert_eq!(
            outcome(&ok),
            SearchOutcome::Linearizable { order: vec![0, 1] }
        );
        // A read that finished before the write started cannot see it.
        let bad = [
            ModelOp::completed(2, 3, In::Write(1), Out::Done),
            ModelOp::completed(0, 1, In::Read, Out::Read(Some(1))),
        ];
        assert_eq!(
            outcome(&bad),
            SearchOutcome::NotLinearizable {
                longest_prefix: vec![],
                failed_op: 1
            }
        );
    }

    #[test]
    fn the_failed_op_is_the_one_that_could_not_be_placed() {
        // Knossos' rethink-fail-minimal: w0; then concurrently r→3 and w4; then r→4.
        let ops = [
            ModelOp::completed(1, 2, In::Write(0), Out::Done),
            ModelOp::completed(3, 5, In::Read, Out::Read(Some(3))),
            ModelOp::completed(4, 6, In::Write(4), Out::Done),
            ModelOp::completed(7, 8, In::Read, Out::Read(Some(4))),
        ];
        match outcome(&ops) {
            SearchOutcome::NotLinearizable {
                longest_prefix,
                failed_op,
            } => {
                assert_eq!(failed_op, 1);
                assert_eq!(longest_prefix, vec![0, 2]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn budget_gives_unknown() {
        let ops: Vec<_> = (0..50)
            .map(|i| ModelOp::completed(0, 100, In::Write(i), Out::Done))
            .chain([ModelOp::completed(0, 100, In::Read, Out::Read(Some(999)))])
            .collect();
        let result = search(&RegisterModel, &ops, 1000);
        assert!(matches!(result.outcome, SearchOutcome::Unknown { .. }));
        assert_eq!(result.steps, 1000);
    }

    #[test]
    fn a_resumed_search_does_what_one_search_does() {
        // Refuting this takes thousands of steps: resume it in small slices.
        let ops: Vec<_> = (0..8)
            .map(|i| ModelOp::completed(0, 100, In::Write(i), Out::Done))
            .chain([ModelOp::completed(0, 100, In::Read, Out::Read(Some(999)))])
            .collect();
        let whole = search(&RegisterModel, &ops, 10_000_000);
        assert!(whole.steps > 1_000, "{}", whole.steps);
        let mut resumed = ResumableSearch::new(&RegisterModel, &ops);
        let mut limit = 0;
        let outcome = loop {
            limit += 37;
            match resumed.resume(limit) {
                SearchOutcome::Unknown { .. } => assert_eq!(resumed.steps(), limit),
                outcome => break outcome,
            }
        };
        assert_eq!(outcome, whole.outcome);
        assert_eq!(resumed.steps(), whole.steps);
        assert_eq!(resumed.resume(limit + 1_000), whole.outcome);
        assert_eq!(resumed.steps(), whole.steps);
    }

    #[test]
    fn linearized_set_keys_are_canonical() {
        let mut a = LinearizedSet::new(200, 3);
        let mut b = LinearizedSet::new(200, 3);
        for i in 0..130 {
            a.insert(Slot::Definite(i));
        }
        a.insert(Slot::Definite(150));
        a.insert(Slot::Unknown(2));
        for i in (0..131).rev() {
            b.insert(Slot::Definite(i));
        }
        b.insert(Slot::Unknown(2));
        b.insert(Slot::Definite(150));
        b.remove(Slot::Definite(130));
        assert_eq!(a.key(), b.key());
        b.remove(Slot::Definite(3));
        assert_ne!(a.key(), b.key());
    }
}
