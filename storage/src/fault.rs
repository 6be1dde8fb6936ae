//! A file system that fails on demand, for tests of what the engine and the node do when the
//! disk does: [`FaultyFs`] wraps another [`FileSystem`] and, while its [`DiskFault`] says so,
//! refuses writes with `ENOSPC` the way a full disk does (part of the buffer may land first,
//! as with a real short write), fails `fdatasync`, or makes every `fdatasync` slow (a disk
//! under load, a cloud volume out of burst credits); it also counts the syncs that succeeded.
//!
//! Nothing in production uses it; it lives in the library (not under `tests/`) so that the node's
//! and the simulation's tests can plug it in through [`SharedFs`].

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::fs::{FileBytes, FileSystem, SharedFs, StorageFile};

/// `ENOSPC` on Linux.
const ENOSPC: i32 = 28;
/// `EIO`.
const EIO: i32 = 5;

/// The switches of a [`FaultyFs`], shared with the test that flips them.
#[derive(Debug, Default)]
pub struct DiskFault {
    full: AtomicBool,
    failing_sync: AtomicBool,
    /// Milliseconds every file `fdatasync` takes on top of the real one.
    sync_delay_ms: AtomicU64,
    /// Successful file `fdatasync`s so far (directory syncs not counted), for tests that count
    /// how many requests share one sync.
    file_syncs: AtomicU64,
}

impl DiskFault {
    /// From now on every write and file creation fails with `ENOSPC`, until cleared.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// From now on every `fdatasync` fails with `EIO`, until cleared.
    pub fn set_failing_sync(&self, failing: bool) {
        self.failing_sync.store(failing, Ordering::SeqCst);
    }

    /// From now on every file `fdatasync` blocks its caller `delay` longer, until set to zero.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.sync_delay_ms.store(millis, Ordering::SeqCst);
    }

    /// How many file `fdatasync`s succeeded through this file system so far.
    pub fn file_syncs(&self) -> u64 {
        self.file_syncs.load(Ordering::SeqCst)
    }

    fn is_full(&self) -> bool {
        self.full.load(Ordering::SeqCst)
    }

    fn sync_fails(&self) -> bool {
        self.failing_sync.load(Ordering::SeqCst)
    }
}

/// A [`FileSystem`] that injects the faults its [`DiskFault`] is set to.
pub struct FaultyFs {
    inner: SharedFs,
    fault: Arc<DiskFault>,
}

impl FaultyFs {
    /// Wraps `inner`; returns the file system and the switches that control it.
    pub fn wrap(inner: SharedFs) -> (SharedFs, Arc<DiskFault>) {
        let fault = Arc::new(DiskFault::default());
        let fs = Arc::new(FaultyFs {
            inner,
            fault: fault.clone(),
        });
        (fs, fault)
    }

    fn refuse_if_full(&self) -> io::Result<()> {
        if self.fault.is_full() {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }
}

struct FaultyFile {
    inner: Box<dyn StorageFile>,
    fault: Arc<DiskFault>,
}

impl StorageFile for FaultyFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.fault.is_full() {
            // A short write first, as a real disk filling up mid-write does.
            self.inner.append(&buf[..buf.len() / 2])?;
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        self.inner.append(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        if self.fault.sync_fails() {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        let delay_ms = self.fault.sync_delay_ms.load(Ordering::SeqCst);
        if delay_ms > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        }
        self.inner.sync_data()?;
        self.fault.file_syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl FileSystem for FaultyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(FaultyFile {
            inner: self.inner.open_append(path)?,
            fault: self.fault.clone(),
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.refuse_if_full()?;
        Ok(Box::new(FaultyFile {
            inner: self.inner.create(path)?,
            fault: self.fault.clone(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }

    fn read_immutable(&self, path: &Path) -> io::Result<FileBytes> {
        self.inner.read_immutable(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.fault.sync_fails() {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        self.inner.sync_dir(dir)
    }
}
