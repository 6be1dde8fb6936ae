//! Raft consensus as a deterministic, sans-IO state machine.
//!
//! This crate decides *what* a replica must persist, send and apply; it never does any of it.
//! There are no sockets, clocks, threads or unseeded randomness inside: the driver (the tokio
//! server, the turmoil simulation, or a test) feeds in messages, ticks and proposals, and takes
//! out a [`Ready`]. Given the same `Config` (including `seed`) and the same inputs in the same
//! order, a [`Raft`] produces the same outputs, so every test failure replays.
//!
//! It follows the Raft paper (Ongaro & Ousterhout 2014) and Ongaro's thesis (2014), with the
//! interface of etcd-io/raft's `RawNode`: leader election with randomized timeouts, PreVote
//! (§9.6) and CheckQuorum with leader stickiness (§6.2, §4.2.3); log replication with fast
//! backtracking, pipelining and batching; commitment by quorum restricted to the leader's term
//! (§5.4.2, Figure 8); snapshots and `InstallSnapshot` (§7); ReadIndex and leader leases, chosen per
//! read (thesis §6.4); and leadership transfer (thesis §3.10). Membership changes are not implemented.
//!
//! # Modules
//! - `message`: entries, hard state, snapshots and the wire messages.
//! - `log`: the in-memory log with its durable / committed / applied cursors.
//! - `progress`: the leader's per-follower replication state (probe, replicate, snapshot).
//! - `prng`: the seeded random numbers behind election timeouts.
//! - `quorum`: majorities, and the tally of an election.
//! - `read`: ReadIndex bookkeeping and the lease check.
//! - `config`: every timing and size limit.
//! - `planted`: deliberate bugs for the simulation's catalogue (feature `planted-bugs` only).
//! - `raft`: the core, tying them together.
//!
//! # Driving a node
//!
//! ```text
//! loop {
//!     feed inputs: raft.tick() every tick interval, raft.step(msg) per received message,
//!                  raft.propose(cmd), raft.read_index(id, mode), ...
//!     if raft.has_ready() {
//!         let ready = raft.ready();
//!         1. persist durably: ready.hard_state (if Some), ready.snapshot (if Some: replaces the
//!            whole on-disk log), then ready.entries (an entry whose index is already on disk
//!            replaces it and every later entry). fsync.
//!         2. send ready.messages (best effort; Raft tolerates loss, duplication and reordering).
//!         3. install ready.snapshot into the state machine, then apply ready.committed_entries
//!            in order. Each entry is handed out exactly once per process lifetime.
//!         4. answer each of ready.read_states once the state machine has applied its `index`.
//!         5. raft.advance();
//!     }
//! }
//! ```
//!
//! **Sending before persisting.** A leader need not wait for its own disk before sending its
//! appends and heartbeats: `raft.take_messages_to_send_now()` hands out those messages at any
//! time, even while a `Ready` is being persisted, so the followers write in parallel with the
//! leader and a slow fsync holds back no heartbeat (Raft thesis §10.2.1). A driver that never
//! calls it gets them in the next `Ready`'s `messages`, as before.
//!
//! **The advance contract.** `advance()` (no arguments) tells the core that *everything* in the
//! last `Ready` was done: state persisted, messages sent, entries applied. Until then `has_ready`
//! returns false and `ready` must not be called again; `step`, `tick`, `propose` and the other
//! inputs remain allowed in between (so persistence can run asynchronously). The order matters:
//! messages promise durability (a vote, an acknowledged entry), so they go out only after the
//! fsync; and a leader counts its own log toward a quorum only for entries acknowledged by
//! `advance`. After a crash, restart with [`Restored`] built from what was persisted; anything not
//! persisted never had an effect outside the process.
//!
//! **Reads.** Each read names its [`ReadMode`]: `ReadIndex` (a heartbeat quorum confirms the
//! leader, no clock assumption) or `Lease` (answered at once while the leader's lease holds,
//! assuming bounded clock drift; otherwise a ReadIndex round). Reads registered before the next
//! `Ready` share one heartbeat round, and every periodic heartbeat repeats the newest pending
//! read's context, so a lost round is recovered without asking again. Each [`ReadState`] says
//! which [`ReadPath`] served it. Followers report their applied index with every answer to the
//! leader ([`PeerStatus::applied_index`]). Followers refuse `read_index` with
//! `ReadError::NotLeader { leader_hint }` instead of forwarding; the server retries at the leader. Pending reads are dropped when leadership
//! changes: the core forgets them, and the application answers their clients (the node answers
//! each with `NotLeader` as soon as it sees the step-down, and the client retries at the new
//! leader).
//!
//! **Snapshots.** The application decides when to checkpoint and calls [`Raft::compact`] with the
//! snapshot of its applied state; the core keeps it to send to followers that fell behind the log.
//! Compaction keeps the last `Config::compaction_tail_entries` entries the snapshot covers, so a
//! follower only a little behind is sent entries, not the snapshot. Memory use is the retained
//! log (tail included) plus that snapshot, so compact regularly.

mod config;
mod log;
mod message;
pub mod planted;
mod prng;
mod progress;
mod quorum;
mod raft;
mod read;

pub use config::{Config, ConfigError, DEFAULT_COMPACTION_TAIL_ENTRIES};
pub use log::RaftLog;
pub use message::{
    AppendResult, Entry, EntryPayload, Freshness, HardState, Index, Message, MessageBody, NodeId,
    Snapshot, SnapshotMeta, Term,
};
pub use planted::RaftBug;
pub use progress::ReplicationState;
pub use raft::{
    Abandoned, CompactError, PeerStatus, ProposeError, Raft, ReadError, Ready, Restored, Role,
    Status, TransferError,
};
pub use read::{ReadMode, ReadPath, ReadState};
