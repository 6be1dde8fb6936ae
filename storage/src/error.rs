//! Typed errors of the storage engine, each carrying the file (and offset) it concerns, so that
//! an operator reading "corrupt record" knows exactly where to look.

use std::io;
use std::path::PathBuf;

use crate::wal::Damage;

/// What can go wrong in the WAL or the snapshot store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed; `action` says which one ("append to", "fdatasync", ...).
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Damaged data before the log's tail: a checksum mismatch or an impossible length. The log
    /// refuses to open rather than drop records that may have been acknowledged.
    #[error("corrupt {path} at byte offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A WAL record that fails its checksum with valid records after it: damage, not a torn
    /// write. The log refuses to open (unless repairing) and says what to do next.
    #[error("{0}")]
    Damaged(Box<DamageReport>),
    /// A record larger than the configured limit was offered for appending.
    #[error("record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    /// An earlier write or fsync failed, so the log's on-disk state is unknown; it refuses further
    /// appends until it is reopened (and recovered). Retrying fsync after a failure can report
    /// success for data that never reached the disk, so the log does not try.
    #[error("the log at {dir} stopped accepting writes after an earlier I/O failure; reopen it to recover")]
    Poisoned { dir: PathBuf },
    /// Records of a Raft group the shared log does not host were found on open (the groups this
    /// node hosts changed under its data directory), or a caller named such a group.
    #[error("Raft group {group} is not hosted by the log at {dir}: {reason}")]
    UnknownGroup {
        group: crate::record::GroupId,
        dir: PathBuf,
        reason: String,
    },
    /// A record or snapshot decoded from disk was not valid for its type.
    #[error("cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
}

/// Where a log is damaged, and enough context for an operator to act on it.
#[derive(Debug)]
pub struct DamageReport {
    pub damage: Damage,
    /// The raw record just before the damage, for a caller that can decode it.
    pub previous_record: Option<Vec<u8>>,
    /// The Raft index of the last entry before the damage, once a caller decoded it.
    pub after_entry: Option<u64>,
}

impl std::fmt::Display for DamageReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Damage {
            path,
            offset,
            lsn,
            reason,
        } = &self.damage;
        write!(
            f,
            "damaged log record #{lsn} in {} at byte offset {offset}: {reason}",
            path.display()
        )?;
        if let Some(index) = self.after_entry {
            write!(
                f,
                "; it follows log entry {index}, so it is entry {} or a hard-state record",
                index + 1
            )?;
        }
        write!(
            f,
            ". Refusing to start rather than silently drop writes that may have been \
             acknowledged. To recover: restart this node with `ringleader serve --repair` (it cuts \
             its log at the damage and re-fetches the rest from the leader before it votes again; \
             the other nodes must form a quorum), or restore its data directory from a backup"
        )
    }
}

impl StorageError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// True when the error is a full disk (ENOSPC).
    pub fn is_disk_full(&self) -> bool {
        const ENOSPC: i32 = 28;
        let StorageError::Io { source, .. } = self else {
            return false;
        };
        // turmoil's simulated disk reports ENOSPC as an `Other` error carrying the C library's text.
        source.kind() == io::ErrorKind::StorageFull
            || source.raw_os_error() == Some(ENOSPC)
            || source.to_string().contains("No space left on device")
    }
}

/// The storage engine's result type.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
