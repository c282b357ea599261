//! A narrow key-value interface over the local metadata store, so the core
//! does not depend on sled directly (sled 1.0 is alpha and garage moved off
//! it; swapping engines should touch only this file).

use super::error::{VfsError, VfsResult};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One write of an atomic batch: `None` deletes the key.
pub type KvWrite = (Vec<u8>, Option<Vec<u8>>);

pub trait Kv: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> VfsResult<Option<Vec<u8>>>;
    /// Applies all writes atomically (all or none after a crash).
    fn apply(&self, writes: Vec<KvWrite>) -> VfsResult<()>;
    /// Keys and values starting with `prefix`, in key order, starting at
    /// `start` (inclusive; must itself start with `prefix`), at most `limit`.
    fn scan(&self, prefix: &[u8], start: &[u8], limit: usize)
        -> VfsResult<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Makes every applied write durable, and before that every file
    /// registered with [`Kv::order_data`].
    fn flush(&self) -> VfsResult<()>;
    /// Registers content that batches applied after this call refer to: the
    /// next [`Kv::flush`] makes `file`'s data durable before those batches
    /// (and the entries of folder `new_in` — the file was just created
    /// there). Stores that make each batch durable on their own
    /// ([`SledKv`]'s timer aside) have nothing to order: the default does
    /// nothing.
    fn order_data(&self, _path: &Path, _file: &Arc<File>, _new_in: Option<&Path>) {}
    /// Removes file `path` once the batches applied before this call are
    /// durable (a working copy made unneeded by them). The default flushes
    /// now and removes it; a failed flush keeps the file.
    fn remove_when_durable(&self, path: PathBuf) {
        match self.flush() {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                "file kept: metadata flush failed: {}",
                e.chain()
            ),
        }
    }
    /// Cancels a pending [`Kv::remove_when_durable`] of `path`: call before
    /// creating a file there again.
    fn keep_file(&self, _path: &Path) {}
}

/// sled's errors become the core's; no sled type leaves this file.
fn store_err(e: sled::Error) -> VfsError {
    VfsError::Store(super::error::Cause::from_error(e.to_string(), e))
}

pub struct SledKv {
    tree: sled::Db,
}

impl SledKv {
    /// Opens (or creates) the store at `path`.
    ///
    /// sled holds an exclusive file lock while any of its threads keeps the
    /// database alive; after a `Db` is dropped its background flusher and
    /// I/O pool let go of the lock a moment later, so a reopen in the same
    /// process (remount, tests) polls for up to [`LOCK_WAIT`] before
    /// answering [`VfsError::Busy`].
    pub fn open(path: &Path) -> VfsResult<Self> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match Self::open_once(path) {
                Err(VfsError::Busy(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> VfsResult<Self> {
        let tree = sled::Config::new()
            .path(path)
            .cache_capacity(64 << 20)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|e| match e {
                // sled reports its file lock as an I/O error of its own
                // wording (the OS error only inside the message).
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    VfsError::Busy("the metadata store is locked by another process")
                }
                e => store_err(e),
            })?;
        Ok(SledKv { tree })
    }
}

/// How long [`SledKv::open`] waits for a lock that a just-dropped handle of
/// this process still holds.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> VfsResult<Option<Vec<u8>>> {
        Ok(self.tree.get(key).map_err(store_err)?.map(|v| v.to_vec()))
    }

    fn apply(&self, writes: Vec<KvWrite>) -> VfsResult<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree.apply_batch(batch).map_err(store_err)?;
        Ok(())
    }

    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> VfsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.tree.range(start.to_vec()..) {
            let (k, v) = item.map_err(store_err)?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn flush(&self) -> VfsResult<()> {
        self.tree.flush().map_err(store_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_scan_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(&dir.path().join("db")).unwrap();
            kv.apply(vec![
                (b"a/1".to_vec(), Some(b"x".to_vec())),
                (b"a/2".to_vec(), Some(b"y".to_vec())),
                (b"b/1".to_vec(), Some(b"z".to_vec())),
            ])
            .unwrap();
            kv.apply(vec![(b"a/1".to_vec(), None)]).unwrap();
            kv.flush().unwrap();
        }
        let kv = SledKv::open(&dir.path().join("db")).unwrap();
        assert_eq!(kv.get(b"a/1").unwrap(), None);
        let all = kv.scan(b"a/", b"a/", 10).unwrap();
        assert_eq!(all, vec![(b"a/2".to_vec(), b"y".to_vec())]);
        assert_eq!(kv.scan(b"b/", b"b/", 10).unwrap().len(), 1);
        assert!(kv.scan(b"a/", b"a/3", 10).unwrap().is_empty());
    }
}
