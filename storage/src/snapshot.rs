//! Snapshot files: a checkpoint of the state machine at a log index, so that the log before it
//! can be deleted and a lagging replica can be sent the state instead of the whole history.
//!
//! A snapshot is written to a temporary file, fsynced, renamed over its final name
//! (`snap-<last_index>.snap`) and made durable by an fsync of the directory: a crash at any point
//! leaves either the old snapshot or the new one, never half of one. It is read back through a
//! memory map on the real disk ([`crate::fs::FileBytes`]). Only the newest snapshot is kept.
//!
//! ```text
//! magic "RLGSNAP" | version u8 | last_index u64 | last_term u64 | data_len u64 | data_crc u32 | header_crc u32 | data
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Result, StorageError};
use crate::fs::{join, FileBytes, SharedFs};

const SNAPSHOT_MAGIC: &[u8; 7] = b"RLGSNAP";
/// The snapshot format this code writes.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;
const SNAPSHOT_HEADER_BYTES: usize = 40;

/// Where in the log a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotPoint {
    /// The index of the last log entry the snapshot includes.
    pub last_index: u64,
    /// The term of that entry.
    pub last_term: u64,
}

/// A snapshot read back from disk.
pub struct LoadedSnapshot {
    pub point: SnapshotPoint,
    bytes: FileBytes,
}

impl LoadedSnapshot {
    /// The state machine's serialized state.
    pub fn data(&self) -> &[u8] {
        &self.bytes[SNAPSHOT_HEADER_BYTES..]
    }
}

/// The directory holding the newest snapshot.
pub struct SnapshotStore {
    fs: SharedFs,
    dir: PathBuf,
}

fn snapshot_name(last_index: u64) -> String {
    format!("snap-{last_index:020}.snap")
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snap-")?
        .strip_suffix(".snap")?
        .parse()
        .ok()
}

impl SnapshotStore {
    /// Opens the store in `dir`, removing temporary files left by a crash during a save.
    pub fn open(fs: SharedFs, dir: &Path) -> Result<SnapshotStore> {
        fs.create_dir_all(dir)
            .map_err(|e| StorageError::io("create directory", dir, e))?;
        let store = SnapshotStore {
            fs,
            dir: dir.to_path_buf(),
        };
        for name in store.list()? {
            if name.ends_with(".tmp") {
                let path = join(dir, &name);
                store
                    .fs
                    .remove_file(&path)
                    .map_err(|e| StorageError::io("remove", &path, e))?;
            }
        }
        Ok(store)
    }

    fn list(&self) -> Result<Vec<String>> {
        self.fs
            .list_dir(&self.dir)
            .map_err(|e| StorageError::io("list directory", &self.dir, e))
    }

    /// Durably saves a snapshot taken at `point`, then deletes older ones.
    pub fn save(&self, point: SnapshotPoint, data: &[u8]) -> Result<()> {
        let final_path = join(&self.dir, &snapshot_name(point.last_index));
        let temp_path = join(
            &self.dir,
            &format!("{}.tmp", snapshot_name(point.last_index)),
        );
        let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
        header[0..7].copy_from_slice(SNAPSHOT_MAGIC);
        header[7] = SNAPSHOT_FORMAT_VERSION;
        header[8..16].copy_from_slice(&point.last_index.to_le_bytes());
        header[16..24].copy_from_slice(&point.last_term.to_le_bytes());
        header[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
        header[32..36].copy_from_slice(&crc32fast::hash(data).to_le_bytes());
        let header_crc = crc32fast::hash(&header[0..36]);
        header[36..40].copy_from_slice(&header_crc.to_le_bytes());

        let mut file = self
            .fs
            .create(&temp_path)
            .map_err(|e| StorageError::io("create", &temp_path, e))?;
        file.append(&header)
            .and_then(|()| file.append(data))
            .and_then(|()| file.sync_data())
            .map_err(|e| StorageError::io("write snapshot", &temp_path, e))?;
        drop(file);
        self.fs
            .rename(&temp_path, &final_path)
            .map_err(|e| StorageError::io("rename", &temp_path, e))?;
        self.sync_dir()?;
        for name in self.list()? {
            if parse_snapshot_name(&name).is_some_and(|index| index < point.last_index) {
                let path = join(&self.dir, &name);
                self.fs
                    .remove_file(&path)
                    .map_err(|e| StorageError::io("remove", &path, e))?;
            }
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| StorageError::io("sync directory", &self.dir, e))
    }

    /// Reads the newest snapshot, if any. A damaged snapshot is an error, never skipped.
    pub fn load_latest(&self) -> Result<Option<LoadedSnapshot>> {
        let newest = self
            .list()?
            .into_iter()
            .filter_map(|name| parse_snapshot_name(&name).map(|index| (index, name)))
            .max_by_key(|(index, _)| *index);
        let Some((index, name)) = newest else {
            return Ok(None);
        };
        let path = join(&self.dir, &name);
        let bytes = self
            .fs
            .read_immutable(&path)
            .map_err(|e| StorageError::io("read", &path, e))?;
        let point = Self::validate(&bytes).map_err(|reason| StorageError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason,
        })?;
        if point.last_index != index {
            return Err(StorageError::Corrupt {
                path,
                offset: 8,
                reason: format!(
                    "header says index {}, file name says {index}",
                    point.last_index
                ),
            });
        }
        Ok(Some(LoadedSnapshot { point, bytes }))
    }

    fn validate(bytes: &[u8]) -> std::result::Result<SnapshotPoint, String> {
        let header = bytes
            .get(0..SNAPSHOT_HEADER_BYTES)
            .ok_or("snapshot header incomplete")?;
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let crc_at = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        if crc32fast::hash(&header[0..36]) != crc_at(36) {
            return Err("snapshot header checksum mismatch".into());
        }
        if &header[0..7] != SNAPSHOT_MAGIC || header[7] != SNAPSHOT_FORMAT_VERSION {
            return Err(format!(
                "not a snapshot of format version {SNAPSHOT_FORMAT_VERSION}"
            ));
        }
        let data = &bytes[SNAPSHOT_HEADER_BYTES..];
        if data.len() as u64 != word(24) {
            return Err(format!(
                "snapshot holds {} bytes of data, header says {}",
                data.len(),
                word(24)
            ));
        }
        if crc32fast::hash(data) != crc_at(32) {
            return Err("snapshot data checksum mismatch".into());
        }
        Ok(SnapshotPoint {
            last_index: word(8),
            last_term: word(16),
        })
    }
}
