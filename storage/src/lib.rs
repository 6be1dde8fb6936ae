//! ringleader's storage engine.
//!
//! Three layers, bottom up:
//! - [`wal`]: a segmented write-ahead log of CRC-checked records ([`record`]), each tagged with
//!   the Raft group it belongs to ([`GroupId`]), appended in batches made
//!   durable by one `fdatasync` (group commit), recovered after a crash with a torn tail told
//!   apart from corruption.
//! - [`snapshot`]: checkpoints of the state machine written atomically (temp file, fsync, rename,
//!   directory fsync) and read back through a memory map; [`log_store`] keeps Raft's entries and
//!   hard state in the WAL and deletes the segments a snapshot covers; [`shared_log`] does the
//!   same for every Raft group a node hosts in one shared WAL (one fsync per batch across
//!   groups), deleting a segment only once no group needs it.
//! - [`kv`]: the key-value state machine, a pure function of the committed log.
//!
//! [`planted`] holds deliberate bugs for the simulation's catalogue (feature `planted-bugs`).
//!
//! All file I/O goes through the small [`fs::FileSystem`] trait, implemented for the real disk
//! and for turmoil's simulated disk (feature `turmoil`), so crash tests and the jepsen-like
//! simulation drive the same code as production. The design is explained in
//! `docs/storage.md`.

pub mod codec;
pub mod error;
pub mod fault;
pub mod fs;
pub mod kv;
pub mod log_store;
pub mod planted;
pub mod record;
pub mod shared_log;
pub mod snapshot;
pub mod wal;

pub use error::{Result, StorageError};
pub use fs::{FileSystem, SharedFs, StdFs};
pub use log_store::{HardState, LogStore, RecoveredLog, StoredEntry, StoredEntryRef};
pub use record::{GroupId, GROUP_ZERO};
pub use shared_log::{GroupWrite, SharedLog, StoredGroupWrite};
pub use snapshot::SnapshotPoint;
pub use wal::{SyncPolicy, Wal, WalOptions, WalRecord};
