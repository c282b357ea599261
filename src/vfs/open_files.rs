//! Open files: the per-inode open state (handles, writers, working copy,
//! unsaved size/mtime), file handles, open and release.

use super::*;

impl Vfs {
    pub(super) fn ensure_open_state(&self, ino: u64) -> Arc<OpenInode> {
        let mut open = self.open.lock();
        let o = open.entry(ino).or_insert_with(|| {
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

    /// Drops one reference taken by `ensure_open_state`.
    pub(super) fn release_state_ref(&self, ino: u64, o: &Arc<OpenInode>) {
        let mut open = self.open.lock();
        let mut st = o.state.lock();
        st.handles = st.handles.saturating_sub(1);
        if st.handles == 0 {
            let had_work = st.work.take().is_some();
            drop(st);
            open.remove(&ino);
            // A working copy filled for reading/truncating but never made
            // durable (the inode is not dirty) is just a stale copy now.
            if had_work {
                if let Ok(Some(inode)) = self.meta.inode(ino) {
                    if !inode.dirty {
                        self.remove_work_durably(&inode.node_id);
                    }
                }
            }
        }
    }

    pub fn open_file(&self, ino: u64, write: bool, truncate: bool) -> VfsResult<u64> {
        if write {
            self.writable()?;
        }
        let inode = self.meta.inode_required(ino)?;
        match inode.kind {
            NodeKind::Dir => return Err(VfsError::IsDir),
            NodeKind::Symlink => return Err(VfsError::InvalidArgument("cannot open a symlink")),
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
        let content = match self.meta.content(ino) {
            Ok(c) => c.map(|c| {
                Arc::new(ContentView {
                    offsets: c.manifest.offsets(),
                    manifest: c.manifest,
                })
            }),
            Err(e) => {
                self.release_handle_state(ino, &o, write);
                return Err(e);
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        let generation = {
            let mut st = o.state.lock();
            let g = st.generation;
            *st.open_by_generation.entry(g).or_insert(0) += 1;
            g
        };
        self.handles.lock().insert(
            fh,
            Arc::new(Handle {
                ino,
                write,
                generation,
                content,
                last_end: AtomicU64::new(u64::MAX),
            }),
        );
        if truncate && write {
            if let Err(e) = self.truncate_sync(ino, 0) {
                let _ = self.release(fh);
                return Err(e);
            }
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
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(VfsError::InvalidArgument("unknown file handle"))
    }

    pub fn release(&self, fh: u64) -> VfsResult<()> {
        let h = self.handles.lock().remove(&fh);
        let Some(h) = h else { return Ok(()) };
        let Some(o) = self.open_inode(h.ino) else {
            return Ok(());
        };
        let r = if h.write {
            self.save_work(h.ino, &o, true)
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
        if let Some(o) = self.open_inode(h.ino) {
            if o.state.lock().older_handles_open() {
                return Ok(PageCache::Bypass);
            }
        }
        Ok(if self.stale_pages.lock().remove(&h.ino) {
            PageCache::Drop
        } else {
            PageCache::Keep
        })
    }

    /// True while some handle has the file open for writing.
    pub fn has_writers(&self, ino: u64) -> bool {
        self.open_inode(ino)
            .map(|o| o.state.lock().writers > 0)
            .unwrap_or(false)
    }
}
