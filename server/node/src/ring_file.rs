//! The ring a data directory was created with, kept in the directory (`ring`), so that a node
//! restarted with a ring that places data differently (another shard count, so keys map to
//! other groups; or other groups on this node) refuses to start instead of serving its groups'
//! data under a placement that no longer holds it.
//!
//! Moving shards between nodes is a later issue's (membership changes); until then a node
//! checks the ring it is given against the stored one. A ring that keeps the key-to-group
//! mapping and this node's groups (say, a node's address changed) is accepted and recorded. A data
//! directory of the single-group releases has no ring file: it is one shard, group 0, kept in
//! the directory itself, and such a node takes the ring it is started with (one shard on every
//! node, as before) and records it.
//!
//! The file is one checksummed record (the WAL's record format), written to a temporary file,
//! synced and renamed into place.

use std::path::{Path, PathBuf};

use ringleader_protocol::ring::{Ring, RingSpec};
use storage::record::{decode_record, encode_record, Decoded, RecordFormat};
use storage::{FileSystem, StorageError};

const RING_FILE: &str = "ring";
/// Larger than any ring a node accepts (its token limit bounds the node count).
const MAX_RING_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Why the stored ring and the given one cannot both hold.
#[derive(Debug, thiserror::Error)]
pub enum RingFileError {
    #[error(
        "{path} was created with ring epoch {} ({} shards of {} replicas on nodes {:?}), but \
         this node was started with epoch {} ({} shards of {} replicas on nodes {:?}): changing \
         the ring of existing data is not supported yet; start with the original --shards, \
         --replicas and --peers, or with an empty data directory",
        stored.epoch, stored.shards, stored.replicas, stored.nodes.keys().collect::<Vec<_>>(),
        given.epoch, given.shards, given.replicas, given.nodes.keys().collect::<Vec<_>>()
    )]
    Mismatch {
        path: PathBuf,
        stored: Box<RingSpec>,
        given: Box<RingSpec>,
    },
    #[error("{path}: the ring file is damaged ({reason}); restore it, or start from an empty data directory")]
    Damaged { path: PathBuf, reason: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RingFileError + 'a {
    move |source| RingFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks `given` (node `id`'s ring) against the ring stored in `dir`, or stores it there if
/// there is none.
pub fn check_or_store(
    fs: &dyn FileSystem,
    dir: &Path,
    given: &RingSpec,
    id: u64,
) -> Result<(), RingFileError> {
    let path = dir.join(RING_FILE);
    match fs.read(&path) {
        Ok(bytes) => {
            let stored = decode(&bytes).map_err(|reason| RingFileError::Damaged {
                path: path.clone(),
                reason,
            })?;
            if stored == *given {
                return Ok(());
            }
            let same_groups_here = match (Ring::new(stored.clone()), Ring::new(given.clone())) {
                (Ok(before), Ok(after)) => before.groups_on(id) == after.groups_on(id),
                _ => false,
            };
            if stored.shards != given.shards || !same_groups_here {
                return Err(RingFileError::Mismatch {
                    path,
                    stored: Box::new(stored),
                    given: Box::new(given.clone()),
                });
            }
            tracing::warn!(path = %path.display(), "the ring changed without moving this node's data: recorded");
            store(fs, dir, given)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => store(fs, dir, given),
        Err(error) => Err(io("read", &path)(error)),
    }
}

fn decode(bytes: &[u8]) -> Result<RingSpec, String> {
    match decode_record(bytes, 0, MAX_RING_FILE_BYTES, RecordFormat::V3) {
        Decoded::Record { payload, next, .. } if next == bytes.len() => {
            storage::codec::decode::<RingSpec>(payload, "ring").map_err(|e| e.to_string())
        }
        Decoded::Record { .. } => Err("bytes after the ring record".into()),
        _ => Err("not a whole, checksummed record".into()),
    }
}

fn store(fs: &dyn FileSystem, dir: &Path, ring: &RingSpec) -> Result<(), RingFileError> {
    fs.create_dir_all(dir)
        .map_err(io("create directory", dir))?;
    let mut bytes = Vec::new();
    encode_record(0, &storage::codec::encode(ring, "ring")?, 0, &mut bytes);
    let temp = dir.join(format!("{RING_FILE}.tmp"));
    let path = dir.join(RING_FILE);
    let mut file = fs.create(&temp).map_err(io("create", &temp))?;
    file.append(&bytes)
        .and_then(|()| file.sync_data())
        .map_err(io("write", &temp))?;
    fs.rename(&temp, &path).map_err(io("rename", &temp))?;
    fs.sync_dir(dir).map_err(io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use storage::StdFs;

    use super::*;

    fn spec(nodes: u64, shards: u32) -> RingSpec {
        RingSpec::new(
            (1..=nodes)
                .map(|id| (id, format!("n{id}:1")))
                .collect::<BTreeMap<_, _>>(),
            shards,
        )
    }

    #[test]
    fn the_first_ring_is_kept_and_another_one_is_refused_with_both_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = StdFs::shared();
        check_or_store(&*fs, dir.path(), &spec(5, 8), 1).expect("stored");
        check_or_store(&*fs, dir.path(), &spec(5, 8), 1).expect("the same ring again");
        let refusal = check_or_store(&*fs, dir.path(), &spec(5, 16), 1).unwrap_err();
        let message = refusal.to_string();
        assert!(
            message.contains("8 shards") && message.contains("16 shards"),
            "{message}"
        );
    }

    #[test]
    fn a_ring_that_keeps_this_nodes_groups_is_accepted_and_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = StdFs::shared();
        // One shard on every node: node 1 hosts group 0 whatever the other nodes are.
        check_or_store(&*fs, dir.path(), &spec(3, 1), 1).expect("stored");
        let alone = RingSpec {
            replicas: 1,
            ..spec(1, 1)
        };
        check_or_store(&*fs, dir.path(), &alone, 1).expect("still group 0 here");
        let bytes = std::fs::read(dir.path().join(RING_FILE)).expect("read");
        assert_eq!(decode(&bytes), Ok(alone), "the new ring is recorded");
    }

    #[test]
    fn a_damaged_ring_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = StdFs::shared();
        check_or_store(&*fs, dir.path(), &spec(3, 1), 1).expect("stored");
        let path = dir.path().join(RING_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let refusal = check_or_store(&*fs, dir.path(), &spec(3, 1), 1).unwrap_err();
        assert!(
            matches!(refusal, RingFileError::Damaged { .. }),
            "{refusal}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "left as found");
    }
}
