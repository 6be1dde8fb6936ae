//! The file-system boundary of the storage engine.
//!
//! Every byte the WAL and the snapshot store read or write goes through [`FileSystem`] and
//! [`StorageFile`], so that the same engine runs on the real disk ([`StdFs`]), on turmoil's
//! simulated disk under the jepsen-like simulation (`SimFs`, feature `turmoil`), and under
//! fault injection in tests ([`crate::fault::FaultyFs`]). The trait is deliberately small: the
//! handful of POSIX calls a log-structured engine needs, with directory syncs explicit, because a
//! file created or renamed is durable only once its directory is synced.

use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file, written only by appending at its end.
// `len` is an I/O call (it can fail), not a collection size: an `is_empty` would add nothing.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send {
    /// Appends `buf` at the end of the file. On error, part of `buf` may have been written: the
    /// caller restores the previous length with [`StorageFile::set_len`].
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data (and its size) durable: `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Truncates (or extends) the file to `len` bytes. Followed by `sync_data` to make it durable.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;
}

/// Bytes of a file read whole: memory-mapped on the real disk, owned in memory in simulation.
pub enum FileBytes {
    /// A read-only memory map (the real disk).
    Mapped(memmap2::Mmap),
    /// Bytes read into memory (turmoil's disk has no memory maps; also tiny or empty files).
    Owned(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

/// The file-system calls the storage engine makes. Implementations must be cheap to clone
/// behind an [`Arc`]; see [`SharedFs`].
pub trait FileSystem: Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Lists the file names (not paths) directly inside `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for appending, creating it if missing (the caller syncs the directory).
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Creates `path`, truncating it if it exists (the caller syncs the directory).
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Reads a whole file for scanning (WAL segments): always an owned copy, because segments are
    /// truncated in place during recovery and a memory map must not outlive that.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads a whole immutable file (snapshots): memory-mapped where the platform allows.
    fn read_immutable(&self, path: &Path) -> io::Result<FileBytes>;
    /// Renames `from` to `to`, replacing `to` (the caller syncs the directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (the caller syncs the directory).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file system shared by the WAL, the snapshot store and the node.
pub type SharedFs = Arc<dyn FileSystem>;

/// The real disk, through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl StdFs {
    /// The real file system as a [`SharedFs`].
    pub fn shared() -> SharedFs {
        Arc::new(StdFs)
    }
}

/// Implements [`StorageFile`] for `$file` and [`FileSystem`] for `$fs_type` from the calls that
/// are spelled the same way in `std::fs` and in turmoil's shim of it (`$fs` is the module path),
/// so that the two back ends cannot drift apart. The two calls that differ, reading a snapshot
/// and syncing a directory, are passed in as functions.
macro_rules! std_like_file_system {
    ($fs_type:ty, $file:ty, $fs:path, read_immutable: $read_immutable:path, sync_dir: $sync_dir:path) => {
        impl StorageFile for $file {
            fn append(&mut self, buf: &[u8]) -> io::Result<()> {
                use std::io::Write;
                self.write_all(buf)
            }
            fn sync_data(&mut self) -> io::Result<()> {
                <$file>::sync_data(self)
            }
            fn set_len(&mut self, len: u64) -> io::Result<()> {
                <$file>::set_len(self, len)
            }
            fn len(&self) -> io::Result<u64> {
                Ok(self.metadata()?.len())
            }
        }

        impl FileSystem for $fs_type {
            fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
                use $fs as fs;
                fs::create_dir_all(dir)
            }
            fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
                use $fs as fs;
                let mut names = Vec::new();
                for entry in fs::read_dir(dir)? {
                    let entry = entry?;
                    if let Some(name) = entry.file_name().to_str() {
                        names.push(name.to_owned());
                    }
                }
                names.sort();
                Ok(names)
            }
            fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
                use $fs as fs;
                let file = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                Ok(Box::new(file))
            }
            fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
                use $fs as fs;
                // Truncate, then reopen in append mode: every write must land at the end of the
                // file even after `set_len` shrank it (a rolled-back write on a full disk), and
                // `append` cannot be combined with `truncate` in one open.
                drop(
                    fs::OpenOptions::new()
                        .create(true)
                        .write(true)
                        .truncate(true)
                        .open(path)?,
                );
                self.open_append(path)
            }
            fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
                use $fs as fs;
                fs::read(path)
            }
            fn read_immutable(&self, path: &Path) -> io::Result<FileBytes> {
                $read_immutable(path)
            }
            fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
                use $fs as fs;
                fs::rename(from, to)
            }
            fn remove_file(&self, path: &Path) -> io::Result<()> {
                use $fs as fs;
                fs::remove_file(path)
            }
            fn sync_dir(&self, dir: &Path) -> io::Result<()> {
                $sync_dir(dir)
            }
        }
    };
}

mod std_impl {
    use super::*;
    std_like_file_system!(StdFs, std::fs::File, std::fs, read_immutable: map_file, sync_dir: sync_directory);

    fn map_file(path: &Path) -> io::Result<FileBytes> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() == 0 {
            return Ok(FileBytes::Owned(Vec::new()));
        }
        // SAFETY: snapshot files are written once to a temporary name, renamed into place and
        // never modified afterwards; the map is read-only. Deleting the file keeps the pages.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(FileBytes::Mapped(map))
    }

    fn sync_directory(dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

/// turmoil's simulated disk (per-host, crash-aware). Use only inside a turmoil host.
#[cfg(feature = "turmoil")]
#[derive(Debug, Default, Clone, Copy)]
pub struct SimFs;

#[cfg(feature = "turmoil")]
impl SimFs {
    /// The simulated file system as a [`SharedFs`].
    pub fn shared() -> SharedFs {
        Arc::new(SimFs)
    }
}

#[cfg(feature = "turmoil")]
mod sim_impl {
    use super::*;
    use turmoil::fs::shim::std::fs as sim;
    std_like_file_system!(SimFs, sim::File, turmoil::fs::shim::std::fs, read_immutable: read_owned, sync_dir: sim::sync_dir);

    /// turmoil does not simulate memory maps: read the snapshot into memory.
    fn read_owned(path: &Path) -> io::Result<FileBytes> {
        Ok(FileBytes::Owned(sim::read(path)?))
    }
}

/// `dir/name` as a path.
pub(crate) fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
