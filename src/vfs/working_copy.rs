//! Working copies: a file's first change creates `work/<node id>`
//! (filled from its chunks unless truncated to zero); writes go there, and
//! `flush`/`release` journal it (surviving a process crash) and `fsync`
//! makes it durable (surviving a machine crash).

use super::*;

impl Vfs {
    /// The inode's working copy, opening an existing one (dirty inode) or
    /// creating an empty one when `create_empty`. `None` when the content
    /// must first be filled from chunks.
    pub(super) fn work_file(
        &self,
        ino: u64,
        o: &Arc<OpenInode>,
        create_empty: bool,
    ) -> VfsResult<Option<Arc<std::fs::File>>> {
        if let Some(f) = o.state.lock().work.clone() {
            return Ok(Some(f));
        }
        let inode = self.meta.inode_required(ino)?;
        let path = self.work_path(&inode.node_id);
        self.meta.kv().keep_file(&path);
        let file = if inode.dirty {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?
        } else if create_empty || inode.content_hash.is_none() {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?
        } else {
            return Ok(None);
        };
        let file = Arc::new(file);
        let mut st = o.state.lock();
        Ok(Some(st.work.get_or_insert(file).clone()))
    }

    /// Makes sure `ino` has a working copy, filling it from its chunks
    /// (which may need the server). Call before writes/truncates for which
    /// [`Vfs::write_ready`] said no.
    pub(super) async fn prepare_write(&self, ino: u64) -> VfsResult<()> {
        let o = self.ensure_open_state(ino);
        let r = self.fill_work(ino, &o).await;
        self.release_state_ref(ino, &o);
        r
    }

    /// `setattr` for a truncate that first needs the working copy filled
    /// from chunks (a path truncate with no open handle): fills and
    /// truncates under one open-state reference, so the filled copy is not
    /// dropped in between.
    pub(super) async fn setattr_filling(&self, ino: u64, set: SetAttr) -> VfsResult<Attr> {
        self.writable()?;
        if let Some(size) = set.size {
            if self.meta.inode_required(ino)?.kind == NodeKind::File {
                let o = self.ensure_open_state(ino);
                let r = match self.fill_work(ino, &o).await {
                    Ok(()) => self.truncate_open(ino, &o, size),
                    Err(e) => Err(e),
                };
                self.release_state_ref(ino, &o);
                r?;
            }
        }
        self.setattr_now(ino, SetAttr { size: None, ..set })
    }

    pub(super) async fn fill_work(&self, ino: u64, o: &Arc<OpenInode>) -> VfsResult<()> {
        let _fill = o.fill.lock().await;
        // A remote change that starts a new content generation while the
        // copy is filled makes it stale: fill again from the new content.
        for _ in 0..3 {
            if self.fill_work_once(ino, o).await? {
                return Ok(());
            }
        }
        Err(VfsError::Unavailable(
            "the file kept changing on the server while its content was loaded".into(),
        ))
    }

    /// One attempt of [`Vfs::fill_work`]; false when the content changed
    /// meanwhile.
    async fn fill_work_once(&self, ino: u64, o: &Arc<OpenInode>) -> VfsResult<bool> {
        if self.work_file(ino, o, false)?.is_some() {
            return Ok(true);
        }
        let generation = o.state.lock().generation;
        let inode = self.meta.inode_required(ino)?;
        let content = self.meta.content(ino)?.unwrap_or(FileContent {
            manifest: Manifest::default(),
        });
        let path = self.work_path(&inode.node_id);
        let tmp = path.with_extension("fill");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut pos = 0u64;
        for c in &content.manifest.chunks {
            let data = match self.chunks.get(c.id).await {
                Ok(d) => chunk_slice::check_len(c.id, c.len, &d).map(|()| d),
                Err(e) => Err(e),
            };
            let data = match data {
                Ok(d) => d,
                Err(e) => {
                    drop(file);
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            pio::write_all_at(&file, &data, pos)?;
            pos += data.len() as u64;
        }
        let mut st = o.state.lock();
        if st.generation != generation {
            drop(st);
            let _ = std::fs::remove_file(&tmp);
            return Ok(false);
        }
        self.meta.kv().keep_file(&path);
        std::fs::rename(&tmp, &path)?;
        st.work.get_or_insert(Arc::new(file));
        Ok(true)
    }

    /// Journals `ino`'s content again (the uploader could not send it and
    /// answered its records with the content the server has).
    pub fn journal_content_again(&self, ino: u64) -> VfsResult<()> {
        let ns = self.meta.lock_ns();
        let Some(inode) = self.meta.inode(ino)? else {
            return Ok(());
        };
        if inode.dirty && !inode.unlinked {
            let mut t = self.meta.txn(&ns);
            t.journal_upsert(&inode, false)?;
            t.commit()?;
        }
        Ok(())
    }

    /// Write without waiting on the network; `None` when the working copy
    /// must first be prepared with [`Vfs::prepare_write`].
    pub(super) fn write_now(&self, fh: u64, offset: u64, data: &[u8]) -> VfsResult<Option<u32>> {
        self.writable()?;
        let h = self.handle(fh)?;
        if !h.write {
            return Err(VfsError::InvalidArgument("file not open for writing"));
        }
        let o = self
            .open
            .get(h.ino)
            .ok_or(VfsError::InvalidArgument("file not open"))?;
        let Some(file) = self.work_file(h.ino, &o, false)? else {
            return Ok(None);
        };
        pio::write_all_at(&file, data, offset)?;
        let end = offset + data.len() as u64;
        let mut st = o.state.lock();
        let size = match st.unsaved {
            Some((s, _)) => s,
            None => {
                drop(st);
                let s = self.meta.inode_required(h.ino)?.size;
                st = o.state.lock();
                st.unsaved.map(|u| u.0).unwrap_or(s)
            }
        };
        st.unsaved = Some((size.max(end), Timestamp::now()));
        Ok(Some(data.len() as u32))
    }

    /// Records a handle's unsaved writes: size/mtime + a journal entry in
    /// one metadata batch, written to the write-ahead log before this
    /// returns (it survives a crash of this process). The working copy's
    /// data is registered to be synced before that batch by the next
    /// metadata flush ([`Kv::order_data`]), so a power loss never leaves a
    /// record of content that is not on disk.
    pub fn flush(&self, fh: u64) -> VfsResult<()> {
        let h = self.handle(fh)?;
        if !h.write {
            return Ok(());
        }
        let Some(o) = self.open.get(h.ino) else {
            return Ok(());
        };
        self.save_work(h.ino, &o)
    }

    pub(super) fn save_work(&self, ino: u64, o: &Arc<OpenInode>) -> VfsResult<()> {
        let (unsaved, file) = {
            let st = o.state.lock();
            (st.unsaved, st.work.clone())
        };
        let Some((size, mtime)) = unsaved else {
            return Ok(());
        };
        {
            let ns = self.meta.lock_ns();
            let mut inode = self.meta.inode_required(ino)?;
            if let Some(f) = &file {
                // The first time this working copy is recorded, its
                // folder entry must be durable before the record too.
                let new_in = (!inode.dirty).then_some(self.work_dir.as_path());
                self.meta
                    .kv()
                    .order_data(&self.work_path(&inode.node_id), f, new_in);
            }
            inode.size = size;
            inode.mtime = mtime;
            inode.ctime = Timestamp::now().max(mtime);
            inode.dirty = true;
            inode.local_rev += 1;
            let mut t = self.meta.txn(&ns);
            t.put_inode(&inode);
            if !inode.unlinked {
                t.journal_upsert(&inode, false)?;
            }
            t.commit()?;
            let mut st = o.state.lock();
            if st.unsaved == unsaved {
                st.unsaved = None;
            }
        }
        self.journal_notify.notify_one();
        Ok(())
    }

    /// Makes the handle's writes, and every metadata change before them,
    /// durable locally (a group commit of the write-ahead log); with `--fsync remote`
    /// also waits (up to a minute) until the server has them. Call from a
    /// thread that may block (not a FUSE or async worker thread).
    pub fn fsync(&self, fh: u64) -> VfsResult<()> {
        self.flush(fh)?;
        self.meta.flush()?;
        if !self.fsync_remote {
            return Ok(());
        }
        let ino = self.handle(fh)?.ino;
        self.open.begin_fsync_wait(ino);
        let r = self.wait_uploaded(ino);
        self.open.end_fsync_wait(ino);
        r
    }

    /// True while an `fsync --remote` waits for `ino`.
    pub fn fsync_waiting(&self, ino: u64) -> bool {
        self.open.fsync_waiting(ino)
    }

    pub(super) fn wait_uploaded(&self, ino: u64) -> VfsResult<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.is_journaled(ino) {
            if self.meta.journal().is_quarantined(ino) {
                return Err(VfsError::Unavailable(
                    "the server refused this file's change (see `nimbus status`)".into(),
                ));
            }
            if std::time::Instant::now() > deadline {
                return Err(VfsError::Unavailable(
                    "the server did not acknowledge the file in time".into(),
                ));
            }
            self.journal_notify.notify_one();
            let wait = self.drained_notify.notified();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let _ = rt.block_on(tokio::time::timeout(
                        std::time::Duration::from_millis(100),
                        wait,
                    ));
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        Ok(())
    }

    pub fn fsync_all(&self) -> VfsResult<()> {
        self.meta.flush()
    }
}
