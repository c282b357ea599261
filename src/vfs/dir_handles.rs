//! Directory handles: `opendir` takes a snapshot of the listing, `readdir`
//! pages through it by offset (`.` and `..` first, then the entries;
//! offset n+1 follows entry n, as the kernel expects), `releasedir` drops
//! it. A listing changed meanwhile does not disturb a handle's paging.
//! [`DirHandles`] owns the snapshots behind its own lock (never held when
//! a method returns). Directory handle numbers are their own sequence:
//! the kernel never passes one where a file handle is expected.

use super::*;

/// Open directory handles: the listing snapshot each reads.
pub(super) struct DirHandles {
    snapshots: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next: AtomicU64,
}

impl DirHandles {
    pub(super) fn new() -> Self {
        DirHandles {
            snapshots: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    fn insert(&self, list: Vec<DirEntry>) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::SeqCst);
        self.snapshots.lock().insert(fh, Arc::new(list));
        fh
    }

    fn get(&self, fh: u64) -> Option<Arc<Vec<DirEntry>>> {
        self.snapshots.lock().get(&fh).cloned()
    }

    fn remove(&self, fh: u64) {
        self.snapshots.lock().remove(&fh);
    }
}

impl Vfs {
    /// Opens folder `ino` for listing; the handle.
    pub fn opendir(&self, ino: u64) -> VfsResult<u64> {
        let list = self.readdir(ino, None, usize::MAX)?;
        // Listing a folder is an access (ext4, relatime rules).
        if let Err(e) = self.note_access(ino) {
            tracing::debug!(ino, "atime not updated: {e}");
        }
        Ok(self.dirs.insert(list))
    }

    /// Entries of folder `ino` from `offset` on, each with the offset that
    /// follows it, at most `limit`. An unknown handle lists afresh.
    pub fn readdir_page(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        limit: usize,
    ) -> VfsResult<Vec<(u64, DirEntry)>> {
        let snapshot = self.dirs.get(fh);
        let list = match snapshot {
            Some(l) => l,
            None => Arc::new(self.readdir(ino, None, usize::MAX)?),
        };
        let dot = |name: &str, ino| DirEntry {
            ino,
            name: name.into(),
            kind: NodeKind::Dir,
        };
        let mut out = Vec::new();
        let mut i = offset;
        while out.len() < limit {
            let entry = match i {
                0 => dot(".", ino),
                1 => dot("..", self.parent_of(ino).unwrap_or(ino)),
                n => match list.get((n - 2) as usize) {
                    Some(e) => e.clone(),
                    None => break,
                },
            };
            i += 1;
            out.push((i, entry));
        }
        Ok(out)
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.remove(fh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::MemoryRemote;

    #[tokio::test]
    async fn a_handle_pages_through_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let device = DeviceId::random();
        let vfs = super::super::test_support::open_vfs(
            dir.path(),
            device,
            "t",
            Arc::new(MemoryRemote::new(device)),
        );
        let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap().ino;
        for n in ["a", "b", "c"] {
            vfs.mkdir(d, n.as_bytes(), 0o755).unwrap();
        }
        let fh = vfs.opendir(d).unwrap();
        let first = vfs.readdir_page(d, fh, 0, 3).unwrap();
        let names: Vec<_> = first.iter().map(|(_, e)| e.name.as_str()).collect();
        assert_eq!(names, [".", "..", "a"]);
        assert_eq!(first[1].1.ino, ROOT_INO);
        // Changed meanwhile: the handle keeps its snapshot.
        vfs.rmdir(d, b"b").unwrap();
        let next = vfs.readdir_page(d, fh, first[2].0, 10).unwrap();
        let names: Vec<_> = next.iter().map(|(_, e)| e.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
        assert_eq!(next.last().unwrap().0, 5);
        vfs.releasedir(fh);
        let fresh = vfs.readdir_page(d, fh, 2, 10).unwrap();
        assert_eq!(fresh.len(), 2, "{fresh:?}");
    }
}
