//! Open files: the per-inode open state (handles, writers, working copy,
//! unsaved size/mtime, content generations), file handles, open and
//! release.
//!
//! [`OpenFiles`] owns the table of open inodes and of file handles. Its
//! locks are private: none is held when one of its methods returns, so
//! they never nest with another part's locks. An [`OpenInode`]'s `state`
//! lock is the innermost of the core (taken alone, or under the namespace
//! guard); its async `fill` lock serialises materialising a working copy
//! and is held with no other lock.

use super::*;

/// An open inode's state. Its content has **generations**: a remote
/// change of the content starts a new one; local writes stay in the
/// current one. A handle reads the generation it was opened in until it is
/// closed (close-to-open consistency, as NFS: no torn reads, and a reader
/// never goes back to an older version), while new opens read the newest.
pub(super) struct OpenState {
    /// References: file handles and internal users (truncate, fill).
    pub(super) handles: u32,
    pub(super) writers: u32,
    /// The working copy of the current generation, open read-write, once
    /// the inode has one.
    pub(super) work: Option<Arc<std::fs::File>>,
    /// Size and mtime not yet recorded in the metadata cache.
    pub(super) unsaved: Option<(u64, Timestamp)>,
    /// The current content generation.
    pub(super) generation: u64,
    /// Working copies of earlier generations still read by their handles
    /// (unlinked from `work/`, kept open).
    pub(super) retired: HashMap<u64, Arc<std::fs::File>>,
    /// Open file handles per generation.
    pub(super) open_by_generation: BTreeMap<u64, u32>,
}

impl OpenState {
    /// Starts a new content generation: the working copy goes (kept for
    /// the handles of the current generation that still read it); true
    /// when there was one (the caller removes its file).
    pub(super) fn next_generation(&mut self) -> bool {
        let work = self.work.take();
        let g = self.generation;
        if let Some(w) = &work {
            if self.open_by_generation.contains_key(&g) {
                self.retired.insert(g, w.clone());
            }
        }
        self.generation += 1;
        work.is_some()
    }

    /// True while a handle of an earlier generation is open.
    pub(super) fn older_handles_open(&self) -> bool {
        self.open_by_generation
            .keys()
            .next()
            .is_some_and(|g| *g < self.generation)
    }
}

/// How the kernel's page cache may serve a new open of a file
/// ([`Vfs::page_cache`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCache {
    /// Pages cached for the file are current: keep them.
    Keep,
    /// Pages may be of an older version: drop them at open.
    Drop,
    /// A reader of an older version is still open and shares the inode's
    /// pages: this handle bypasses the page cache (direct I/O).
    Bypass,
}

pub(super) struct OpenInode {
    pub(super) state: Mutex<OpenState>,
    /// Serialises creating the working copy (may wait on the network).
    pub(super) fill: tokio::sync::Mutex<()>,
}

pub(super) struct Handle {
    pub(super) ino: u64,
    pub(super) write: bool,
    /// The content generation it was opened in (see [`OpenState`]).
    pub(super) generation: u64,
    /// The manifest the handle reads when its generation has no working
    /// copy.
    pub(super) content: Option<Arc<ContentView>>,
    /// End of the previous read, to detect sequential access.
    pub(super) last_end: AtomicU64,
}

pub(super) struct ContentView {
    pub(super) manifest: Manifest,
    pub(super) offsets: Vec<u64>,
}

/// The open inodes and file handles (see the module docs).
pub(super) struct OpenFiles {
    inodes: Mutex<HashMap<u64, Arc<OpenInode>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Inodes whose cached pages may be of an older version (a remote
    /// change arrived while a handle was open): the next open drops them.
    stale_pages: Mutex<HashSet<u64>>,
    /// Inodes an `fsync` (with `--fsync remote`) is waiting on: the
    /// uploader pushes them even while open for writing.
    fsync_waiters: Mutex<HashMap<u64, u32>>,
}

impl OpenFiles {
    pub(super) fn new() -> Self {
        OpenFiles {
            inodes: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            stale_pages: Mutex::new(HashSet::new()),
            fsync_waiters: Mutex::new(HashMap::new()),
        }
    }

    /// The open state of `ino`, if it is open.
    pub(super) fn get(&self, ino: u64) -> Option<Arc<OpenInode>> {
        self.inodes.lock().get(&ino).cloned()
    }

    pub(super) fn is_open(&self, ino: u64) -> bool {
        self.inodes.lock().contains_key(&ino)
    }

    /// Takes a reference to `ino`'s open state, creating it.
    pub(super) fn acquire(&self, ino: u64) -> Arc<OpenInode> {
        let mut inodes = self.inodes.lock();
        let o = inodes.entry(ino).or_insert_with(|| {
            Arc::new(OpenInode {
                state: Mutex::new(OpenState {
                    handles: 0,
                    writers: 0,
                    work: None,
                    unsaved: None,
                    generation: 0,
                    retired: HashMap::new(),
                    open_by_generation: BTreeMap::new(),
                }),
                fill: tokio::sync::Mutex::new(()),
            })
        });
        o.state.lock().handles += 1;
        o.clone()
    }

    /// Drops a reference taken by [`OpenFiles::acquire`]; true when it was
    /// the last one and the inode had a working copy open.
    pub(super) fn release(&self, ino: u64, o: &Arc<OpenInode>) -> bool {
        let mut inodes = self.inodes.lock();
        let mut st = o.state.lock();
        st.handles = st.handles.saturating_sub(1);
        if st.handles > 0 {
            return false;
        }
        let had_work = st.work.take().is_some();
        drop(st);
        inodes.remove(&ino);
        had_work
    }

    /// Registers a file handle; its number.
    pub(super) fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.handles.lock().insert(fh, Arc::new(h));
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles.lock().get(&fh).cloned()
    }

    pub(super) fn remove_handle(&self, fh: u64) -> Option<Arc<Handle>> {
        self.handles.lock().remove(&fh)
    }

    /// The kernel may hold pages of an older version of `ino`.
    pub(super) fn mark_stale(&self, ino: u64) {
        self.stale_pages.lock().insert(ino);
    }

    /// True (once) when `ino`'s pages were marked stale.
    pub(super) fn take_stale(&self, ino: u64) -> bool {
        self.stale_pages.lock().remove(&ino)
    }

    /// An `fsync --fsync remote` starts waiting for `ino`.
    pub(super) fn begin_fsync_wait(&self, ino: u64) {
        *self.fsync_waiters.lock().entry(ino).or_insert(0) += 1;
    }

    /// One `fsync` waiting for `ino` is done.
    pub(super) fn end_fsync_wait(&self, ino: u64) {
        let mut w = self.fsync_waiters.lock();
        if let Some(n) = w.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                w.remove(&ino);
            }
        }
    }

    pub(super) fn fsync_waiting(&self, ino: u64) -> bool {
        self.fsync_waiters.lock().contains_key(&ino)
    }

    /// True while some handle has `ino` open for writing.
    pub(super) fn has_writers(&self, ino: u64) -> bool {
        self.get(ino).is_some_and(|o| o.state.lock().writers > 0)
    }
}

impl Vfs {
    pub(super) fn ensure_open_state(&self, ino: u64) -> Arc<OpenInode> {
        self.open.acquire(ino)
    }

    /// Drops one reference taken by `ensure_open_state`. A working copy
    /// filled for reading/truncating but never made durable (the inode is
    /// not dirty) is just a stale copy once the last reference goes.
    pub(super) fn release_state_ref(&self, ino: u64, o: &Arc<OpenInode>) {
        if self.open.release(ino, o) {
            if let Ok(Some(inode)) = self.meta.inode(ino) {
                if !inode.dirty {
                    self.remove_work_durably(&inode.node_id);
                }
            }
        }
    }

    /// Opens file `ino` for reading and, if `write`, writing (`O_RDWR`);
    /// `truncate` is `O_TRUNC`. Returns the handle number. See
    /// [`Vfs::open_access`] for a write-only open.
    pub fn open_file(&self, ino: u64, write: bool, truncate: bool) -> VfsResult<u64> {
        self.open_access(ino, true, write, truncate)
    }

    /// Opens file `ino` with the access an `open(2)` asked: `read` and
    /// `write` from `O_ACCMODE`, `truncate` from `O_TRUNC`. Returns the
    /// handle number. Errors: `IsDir`, `InvalidArgument` for a symlink,
    /// `NotSupported` for special nodes (the kernel opens those), `ReadOnly`
    /// for a write on a read-only mount, `NotFound`.
    ///
    /// An open with read access that does not truncate is an access for
    /// `relatime` (`note_access`); a write-only open is not, as on ext4,
    /// where only reads move atime (so `touch -m`, which opens
    /// write-only, keeps the access time it does not set).
    pub fn open_access(&self, ino: u64, read: bool, write: bool, truncate: bool) -> VfsResult<u64> {
        if write {
            self.writable()?;
        }
        let inode = self.meta.inode_required(ino)?;
        match inode.kind {
            NodeKind::Dir => return Err(VfsError::IsDir),
            NodeKind::Symlink => return Err(VfsError::InvalidArgument("cannot open a symlink")),
            // The kernel opens these itself (pipe buffers, device drivers)
            // and never asks a FUSE filesystem; another front end must too.
            NodeKind::Fifo | NodeKind::Socket | NodeKind::CharDevice | NodeKind::BlockDevice => {
                return Err(VfsError::NotSupported(
                    "a FIFO, socket or device node is opened by the kernel, not read as a file",
                ))
            }
            NodeKind::File => {}
        }
        let o = self.ensure_open_state(ino);
        if write {
            o.state.lock().writers += 1;
        }
        if inode.dirty {
            if let Err(e) = self.work_file(ino, &o, false) {
                self.release_handle_state(ino, &o, write);
                return Err(e);
            }
        }
        // The content and its generation are read together, under the
        // lock a remote content change holds until it is committed (see
        // `apply_remote_locked`).
        let opened = {
            let mut st = o.state.lock();
            self.meta.content(ino).map(|c| {
                let g = st.generation;
                *st.open_by_generation.entry(g).or_insert(0) += 1;
                (c, g)
            })
        };
        let (content, generation) = match opened {
            Ok((c, g)) => (
                c.map(|c| {
                    Arc::new(ContentView {
                        offsets: c.manifest.offsets(),
                        manifest: c.manifest,
                    })
                }),
                g,
            ),
            Err(e) => {
                self.release_handle_state(ino, &o, write);
                return Err(e);
            }
        };
        let fh = self.open.add_handle(Handle {
            ino,
            write,
            generation,
            content,
            last_end: AtomicU64::new(u64::MAX),
        });
        if truncate && write {
            if let Err(e) = self.truncate_sync(ino, 0) {
                let _ = self.release(fh);
                return Err(e);
            }
        } else if !read {
        } else if let Err(e) = self.note_access(ino) {
            // Only the access time is lost; the open itself stands.
            tracing::debug!(ino, "atime not updated: {e}");
        }
        Ok(fh)
    }

    pub(super) fn release_handle_state(&self, ino: u64, o: &Arc<OpenInode>, write: bool) {
        if write {
            let mut st = o.state.lock();
            st.writers = st.writers.saturating_sub(1);
        }
        self.release_state_ref(ino, o);
    }

    pub(super) fn handle(&self, fh: u64) -> VfsResult<Arc<Handle>> {
        self.open
            .handle(fh)
            .ok_or(VfsError::InvalidArgument("unknown file handle"))
    }

    pub fn release(&self, fh: u64) -> VfsResult<()> {
        let h = self.open.remove_handle(fh);
        let Some(h) = h else { return Ok(()) };
        let Some(o) = self.open.get(h.ino) else {
            return Ok(());
        };
        let r = if h.write {
            self.save_work(h.ino, &o)
        } else {
            Ok(())
        };
        {
            let mut st = o.state.lock();
            if let Some(n) = st.open_by_generation.get_mut(&h.generation) {
                *n -= 1;
                if *n == 0 {
                    st.open_by_generation.remove(&h.generation);
                    st.retired.remove(&h.generation);
                }
            }
        }
        self.release_handle_state(h.ino, &o, h.write);
        if h.write {
            // The uploader defers files open for writing.
            self.journal_notify.notify_one();
            // So does the follower with pulled changes of them (a delete
            // waits for the writer's close): retry those now, not at the
            // next safety pull.
            if !self.has_writers(h.ino) && self.status().snapshot().waiting_remote > 0 {
                self.status().request_pull();
            }
        }
        self.purge_if_unused(h.ino)?;
        r
    }

    /// How the kernel's page cache may serve handle `fh`, just opened:
    /// bypassed while a reader of an older version of the file is still
    /// open, dropped once when a remote change may have left older pages,
    /// else kept.
    pub fn page_cache(&self, fh: u64) -> VfsResult<PageCache> {
        let h = self.handle(fh)?;
        if let Some(o) = self.open.get(h.ino) {
            if o.state.lock().older_handles_open() {
                return Ok(PageCache::Bypass);
            }
        }
        Ok(if self.open.take_stale(h.ino) {
            PageCache::Drop
        } else {
            PageCache::Keep
        })
    }

    /// True while some handle has the file open for writing.
    pub fn has_writers(&self, ino: u64) -> bool {
        self.open.has_writers(ino)
    }
}
