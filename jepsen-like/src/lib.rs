//! jepsen-like: testing ringleader the way Jepsen tests databases.
//!
//! Clients record what they invoked and what came back ([`history::HistoryRecorder`], or a
//! JSONL file, format in [`history`]); [`checker::check`] then decides whether the history is
//! *linearizable*: whether one total order of the operations, consistent with real time,
//! explains every result when replayed on a single correct register per key. A violation comes
//! with the deepest partial linearization found, the operation that could not be placed and a
//! shrunk witness; [`report::render_violation_html`] draws it as a self-contained HTML page.
//!
//! Design, bottom up:
//! - [`model`]: sequential specifications behind a [`model::Model`] trait (ringleader's
//!   register, and the models of the public Knossos and Porcupine histories);
//! - [`formats`]: readers for those public histories (EDN), beside our JSONL in [`history`];
//! - [`search`]: the Wing–Gong/Lowe search with memoization, generic over the model;
//! - [`shrink`]: sound shrinking of a violating history;
//! - [`checker`]: per-key partitioning of a [`history::History`] and the report types;
//! - [`report`]: the HTML visualisation;
//! - [`levels`], [`session`], [`staleness`]: the consistency levels an operation may ask for,
//!   and the checkers of the promises short of linearizability (a client's session guarantees;
//!   stale reads and the receipts' staleness bounds);
//! - [`sim`]: the deterministic turmoil simulation of a real ringleader cluster under a
//!   nemesis, whose histories this checker checks (`docs/testing.md`).
//!
//! Nothing in the checker decides by a clock or a random-number generator: verdicts and
//! witnesses are a pure function of the history and the options (the search and the shrinking
//! are bounded in search steps). The checker reads the clock only to report wall times, for
//! information ([`checker::WallTime`]). The design
//! chapter lives in docs/ (the history format section of [`history`] is meant to move there).

pub mod checker;
pub mod formats;
pub mod history;
pub mod levels;
pub mod model;
pub mod report;
pub mod search;
pub mod session;
pub mod shrink;
pub mod sim;
pub mod staleness;
