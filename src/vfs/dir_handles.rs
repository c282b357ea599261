//! Directory handles: `opendir` takes a snapshot of the listing, `readdir`
//! pages through it by offset (`.` and `..` first, then the entries;
//! offset n+1 follows entry n, as the kernel expects), `releasedir` drops
//! it. A listing changed meanwhile does not disturb a handle's offsets,
//! but a handle never hands out a name that is gone. Each entry of a page
//! is checked against the current dentry: skipped when the name was
//! removed or renamed away since the snapshot, shown with its current
//! inode when a rename replaced it. With readdirplus the kernel would
//! otherwise cache a dentry for a name that no longer exists (`mv` then
//! says "same file", a create answers ENOENT).
//! Names added after the snapshot are not listed until the stream is
//! rewound: a read at offset 0 (`rewinddir`, a fresh `getdents` from the
//! start) takes a new snapshot, as POSIX asks of `rewinddir`.
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

    fn replace(&self, fh: u64, list: Vec<DirEntry>) -> Arc<Vec<DirEntry>> {
        let list = Arc::new(list);
        self.snapshots.lock().insert(fh, list.clone());
        list
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
    /// follows it, at most `limit`. An unknown handle lists afresh; offset
    /// 0 renews the handle's snapshot; entries whose name is gone since
    /// the snapshot are skipped (their offsets stay unused).
    pub fn readdir_page(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        limit: usize,
    ) -> VfsResult<Vec<(u64, DirEntry)>> {
        let list = match self.dirs.get(fh) {
            Some(_) if offset == 0 => self.dirs.replace(fh, self.readdir(ino, None, usize::MAX)?),
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
                    Some(e) => match self.current(ino, e)? {
                        Some(e) => e,
                        None => {
                            i += 1;
                            continue;
                        }
                    },
                    None => break,
                },
            };
            i += 1;
            out.push((i, entry));
        }
        Ok(out)
    }

    /// Entry `e` of a snapshot of folder `dir` as it is now: `None` when
    /// the name is gone, the current inode when the name was replaced (a
    /// rename over it), as ext4 rewrites the inode number of a dentry in
    /// place.
    fn current(&self, dir: u64, e: &DirEntry) -> VfsResult<Option<DirEntry>> {
        Ok(self.meta.dentry(dir, &e.name)?.map(|d| DirEntry {
            ino: d.ino,
            name: e.name.clone(),
            kind: d.kind,
        }))
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
        // Changed meanwhile: the handle keeps its offsets, skips what is
        // gone and lists what is new only after a rewind.
        vfs.rmdir(d, b"b").unwrap();
        vfs.mkdir(d, b"e", 0o755).unwrap();
        let next = vfs.readdir_page(d, fh, first[2].0, 10).unwrap();
        let names: Vec<_> = next.iter().map(|(_, e)| e.name.as_str()).collect();
        assert_eq!(names, ["c"]);
        assert_eq!(next.last().unwrap().0, 5, "c keeps its offset");
        let rewound = vfs.readdir_page(d, fh, 0, 10).unwrap();
        let names: Vec<_> = rewound.iter().map(|(_, e)| e.name.as_str()).collect();
        assert_eq!(names, [".", "..", "a", "c", "e"]);
        vfs.releasedir(fh);
        let fresh = vfs.readdir_page(d, fh, 2, 10).unwrap();
        assert_eq!(fresh.len(), 3, "{fresh:?}");
    }

    /// Break-it report: a folder open across `rename(x.tmp, x)` (an editor's
    /// save) listed `x.tmp`, and readdirplus made the kernel cache it.
    #[tokio::test]
    async fn a_renamed_or_replaced_name_is_not_listed_from_an_old_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let device = DeviceId::random();
        let vfs = super::super::test_support::open_vfs(
            dir.path(),
            device,
            "t",
            Arc::new(MemoryRemote::new(device)),
        );
        let old = vfs.create(ROOT_INO, b"x", 0o644, false).unwrap().0.ino;
        let tmp = vfs.create(ROOT_INO, b"x.tmp", 0o644, false).unwrap().0.ino;
        let fh = vfs.opendir(ROOT_INO).unwrap();
        vfs.rename(ROOT_INO, b"x.tmp", ROOT_INO, b"x", false)
            .unwrap();
        let page = vfs.readdir_page(ROOT_INO, fh, 2, 10).unwrap();
        let listed: Vec<_> = page.iter().map(|(_, e)| (e.name.as_str(), e.ino)).collect();
        assert_eq!(
            listed,
            [("x", tmp)],
            "x names the renamed file, not {old}; x.tmp is gone"
        );
    }
}
