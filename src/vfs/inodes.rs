//! Inodes as the kernel sees them: attributes, lookups and their counts
//! (`forget`), listings, paths, what is pending below a node, and the end
//! of an inode's life (tombstones kept while the journal refers to them,
//! purge once nothing does, working copies removed only once that is
//! durable).
//!
//! [`InodeTable`] owns what lives only in memory: the kernel's lookup
//! count per inode and the tombstones waiting for the change-log cursor.
//! Its locks are private and never held when its methods return.

use super::*;

/// Lookup counts and tombstones waiting for the cursor (see the module
/// docs).
pub(super) struct InodeTable {
    /// References the kernel holds per inode (lookups minus forgets).
    lookups: Mutex<HashMap<u64, u64>>,
    /// Tombstones that wait only for the change-log cursor to pass their
    /// last server state, by that sequence number.
    tombstones_waiting: Mutex<BTreeMap<u64, Vec<u64>>>,
}

impl InodeTable {
    pub(super) fn new() -> Self {
        InodeTable {
            lookups: Mutex::new(HashMap::new()),
            tombstones_waiting: Mutex::new(BTreeMap::new()),
        }
    }

    /// The kernel took one more reference to `ino`.
    pub(super) fn remember(&self, ino: u64) {
        *self.lookups.lock().entry(ino).or_insert(0) += 1;
    }

    /// The kernel dropped `n` references to `ino`; true when none is left.
    pub(super) fn forget(&self, ino: u64, n: u64) -> bool {
        let mut l = self.lookups.lock();
        match l.get_mut(&ino) {
            Some(c) => {
                *c = c.saturating_sub(n);
                if *c == 0 {
                    l.remove(&ino);
                    true
                } else {
                    false
                }
            }
            None => true,
        }
    }

    /// True while the kernel holds a reference to `ino`.
    pub(super) fn is_referenced(&self, ino: u64) -> bool {
        self.lookups.lock().contains_key(&ino)
    }

    /// Tombstone `ino` waits for the cursor to reach `server_seq`.
    pub(super) fn wait_for_cursor(&self, server_seq: u64, ino: u64) {
        self.tombstones_waiting
            .lock()
            .entry(server_seq)
            .or_default()
            .push(ino);
    }

    /// The tombstones whose wait is over now that the cursor is `cursor`.
    pub(super) fn cursor_reached(&self, cursor: u64) -> Vec<u64> {
        let mut waiting = self.tombstones_waiting.lock();
        let later = waiting.split_off(&(cursor + 1));
        let due = std::mem::replace(&mut *waiting, later);
        due.into_values().flatten().collect()
    }
}

/// A folder's `st_size`: one 4 KiB block, as ext4 shows a small folder.
pub(super) const DIR_SIZE: u64 = 4096;

/// `relatime` (Linux `fs/inode.c`, `relatime_need_update`): an access
/// moves `atime` when it is not after `mtime` or `ctime`, or more than a
/// day before `now`.
pub(super) fn relatime_due(
    atime: Timestamp,
    mtime: Timestamp,
    ctime: Timestamp,
    now: Timestamp,
) -> bool {
    const DAY_SECS: i64 = 24 * 60 * 60;
    atime <= mtime || atime <= ctime || now.sec - atime.sec >= DAY_SECS
}

impl Vfs {
    /// What stat shows for `inode`: an open writer's unsaved size and
    /// mtime; for a folder, size [`DIR_SIZE`] and link count 2 + its
    /// subfolders (ext4); anything else one link per directory entry; 0
    /// links once unlinked.
    pub(super) fn attr_of(&self, inode: &Inode) -> Attr {
        let mut size = inode.size;
        let mut mtime = inode.mtime;
        let mut ctime = inode.ctime;
        if let Some(o) = self.open.get(inode.ino) {
            if let Some((s, m)) = o.state.lock().unsaved {
                size = s;
                mtime = m;
                ctime = ctime.max(m);
            }
        }
        let (uid, gid) = self.shown_ids(inode);
        // A file counts its whole size wherever its bytes are: a count
        // below the size tells `tar --sparse`, `cp --sparse` and `du`
        // that the rest is holes, and a placeholder would be archived as
        // zeros.
        let allocated_bytes = match inode.kind {
            NodeKind::File => size,
            NodeKind::Dir => DIR_SIZE,
            _ => 0,
        };
        if inode.is_dir() {
            // What ext4 shows for a folder that fits in one block.
            size = DIR_SIZE;
        }
        Attr {
            ino: inode.ino,
            kind: inode.kind,
            mode: inode.mode,
            uid,
            gid,
            rdev: inode.rdev,
            size,
            allocated_bytes,
            atime: inode.atime,
            mtime,
            ctime,
            btime: inode.btime,
            nlink: if inode.unlinked {
                0
            } else if inode.is_dir() {
                // ext4: `.`, the entry in its parent, and each child's `..`.
                let subdirs = self.meta.subdir_count(inode.ino).unwrap_or(0);
                u32::try_from(2 + subdirs).unwrap_or(u32::MAX)
            } else {
                inode.entry_count()
            },
        }
    }

    /// An open of file `ino` with read access (not truncating) or of
    /// folder `ino` (a listing):
    /// its access time becomes now under the `relatime` rules (Linux
    /// `mount(8)`, the default on ext4): when atime is not newer than
    /// mtime or ctime, or is 24 hours old. Updated at open, since reads
    /// may be served by the kernel's page cache. Stored locally only: no journal record and
    /// no local revision of its own (the next real change carries it).
    pub(super) fn note_access(&self, ino: u64) -> VfsResult<()> {
        if self.read_only {
            return Ok(());
        }
        let ns = self.meta.lock_ns();
        let mut inode = self.meta.inode_required(ino)?;
        let now = Timestamp::now();
        if !relatime_due(inode.atime, inode.mtime, inode.ctime, now) {
            return Ok(());
        }
        inode.atime = now;
        let mut t = self.meta.txn(&ns);
        t.put_inode(&inode);
        t.commit()?;
        drop(ns);
        // The kernel keeps attributes for its TTL, and reads from its page
        // cache do not refresh them: tell it atime moved.
        if let Some(n) = self.notifier.get() {
            n.inval_attr(ino);
        }
        Ok(())
    }

    /// The mounting user, as a caller.
    pub fn mounter(&self) -> Caller {
        Caller {
            uid: self.uid,
            gid: self.gid,
        }
    }

    /// The mounting user's uid (what `None` owners are shown as).
    pub fn uid(&self) -> u32 {
        self.uid
    }
    /// The mounting user's gid.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// The owner and group this device shows for `inode`: stored numeric
    /// ids as they are when this device set them or the mount keeps ids
    /// (`--keep-ids`); otherwise (ids set on another device, where the same
    /// number may be another user) and for the account's own user, the
    /// mounting user.
    pub(super) fn shown_ids(&self, inode: &Inode) -> (u32, u32) {
        let foreign = inode.ids_from.is_some_and(|d| d != self.device_id) && !self.keep_ids;
        match (inode.uid, inode.gid, foreign) {
            (_, _, true) => (self.uid, self.gid),
            (u, g, false) => (u.unwrap_or(self.uid), g.unwrap_or(self.gid)),
        }
    }

    /// Stores owner `uid` and group `gid` (as this device shows them) in
    /// `inode`: the mounting user's ids become the account's user
    /// (`None`), and this device becomes the one that set them.
    pub(super) fn store_ids(&self, inode: &mut Inode, uid: u32, gid: u32) {
        inode.uid = (uid != self.uid).then_some(uid);
        inode.gid = (gid != self.gid).then_some(gid);
        inode.ids_from = None;
    }

    pub(super) fn remember_lookup(&self, ino: u64) {
        self.inodes.remember(ino);
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if self.inodes.forget(ino, n) {
            let _ = self.purge_if_unused(ino);
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        let name = check_name(name)?;
        // Entries exist only in folders: the parent is read only on a miss,
        // to tell ENOTDIR from ENOENT (a cold `stat` costs two reads).
        let Some(d) = self.meta.dentry(parent, name)? else {
            let p = self.meta.inode_required(parent)?;
            return Err(if p.is_dir() {
                VfsError::NotFound
            } else {
                VfsError::NotDir
            });
        };
        let inode = self.meta.inode_required(d.ino)?;
        self.remember_lookup(inode.ino);
        Ok(self.attr_of(&inode))
    }

    pub fn getattr(&self, ino: u64) -> VfsResult<Attr> {
        Ok(self.attr_of(&self.meta.inode_required(ino)?))
    }

    pub fn readlink(&self, ino: u64) -> VfsResult<String> {
        let inode = self.meta.inode_required(ino)?;
        inode
            .symlink_target
            .ok_or(VfsError::InvalidArgument("not a symlink"))
    }

    /// Entries of a folder after `after`, up to `limit`, with `.`/`..` left
    /// to the front end.
    pub fn readdir(&self, ino: u64, after: Option<&str>, limit: usize) -> VfsResult<Vec<DirEntry>> {
        let inode = self.meta.inode_required(ino)?;
        if !inode.is_dir() {
            return Err(VfsError::NotDir);
        }
        Ok(self
            .meta
            .list(ino, after, limit)?
            .into_iter()
            .map(|(name, d)| DirEntry {
                ino: d.ino,
                name,
                kind: d.kind,
            })
            .collect())
    }

    /// Attributes for readdirplus; counts as a lookup.
    pub fn entry_attr(&self, ino: u64) -> VfsResult<Attr> {
        let a = self.getattr(ino)?;
        self.remember_lookup(ino);
        Ok(a)
    }

    pub fn parent_of(&self, ino: u64) -> VfsResult<u64> {
        let inode = self.meta.inode_required(ino)?;
        Ok(if inode.parent == 0 {
            ROOT_INO
        } else {
            inode.parent
        })
    }

    /// Drops an unlinked inode once nothing uses it.
    pub(super) fn purge_if_unused(&self, ino: u64) -> VfsResult<()> {
        let ns = self.meta.lock_ns();
        let Some(inode) = self.meta.inode(ino)? else {
            return Ok(());
        };
        if !inode.unlinked || self.open.is_open(ino) || self.inodes.is_referenced(ino) {
            return Ok(());
        }
        if inode.dirty {
            self.remove_work_durably(&inode.node_id);
        } else {
            let _ = std::fs::remove_file(self.work_path(&inode.node_id));
        }
        // A node with records still queued (its delete, or earlier pushes
        // that must reach the server first) stays as an invisible
        // tombstone, and so does one whose delete is past the change log
        // this device has applied: the server's older records of it (a
        // page pulled before the delete was pushed) must not bring it back.
        if self.keeps_tombstone(&inode)? {
            if !self.meta.journal().has_records(ino) && !self.meta.journal().is_quarantined(ino) {
                self.inodes.wait_for_cursor(inode.server_seq, ino);
            }
            return Ok(());
        }
        let mut t = self.meta.txn(&ns);
        t.remove_inode(&inode);
        t.commit()?;
        Ok(())
    }

    /// An unlinked inode stays (invisible) while the journal or the
    /// quarantine still refers to it, or while its last server state (its
    /// delete, once processed) is past the change-log cursor this device
    /// has applied.
    pub(super) fn keeps_tombstone(&self, inode: &Inode) -> VfsResult<bool> {
        let j = self.meta.journal();
        Ok(j.has_records(inode.ino)
            || j.is_quarantined(inode.ino)
            || inode.server_seq > self.meta.counter(meta::CURSOR_KEY)?)
    }

    /// The change follower has applied the log up to `cursor`: tombstones
    /// that waited for it go.
    pub fn cursor_saved(&self, cursor: u64) -> VfsResult<()> {
        for ino in self.inodes.cursor_reached(cursor) {
            self.purge_if_unused(ino)?;
        }
        Ok(())
    }

    /// Removes a working copy once the metadata that makes it unneeded (a
    /// clean or unlinked inode) is durable: after a crash that rolled that
    /// change back, a dirty inode without its working copy could never be
    /// uploaded. The removal waits for the next metadata flush
    /// ([`Kv::remove_when_durable`]), so an `rm -rf` costs no sync per file.
    pub(super) fn remove_work_durably(&self, node: &NodeId) {
        self.meta.kv().remove_when_durable(self.work_path(node));
    }

    /// After an upload round answered for `inos`: drops the working copies
    /// of those now clean and not open once that is durable (at the next
    /// flush of the metadata store, [`Kv::remove_when_durable`]: the round
    /// pays no flush of its own), and the tombstones nothing refers to any
    /// more.
    pub fn after_round(&self, inos: &[u64]) -> VfsResult<()> {
        for &ino in inos {
            if let Some(inode) = self.meta.inode(ino)? {
                if !inode.dirty && !inode.unlinked && !self.open.is_open(ino) {
                    self.remove_work_durably(&inode.node_id);
                }
            }
            self.purge_if_unused(ino)?;
        }
        Ok(())
    }

    /// The server has processed this device's delete of `node`: its
    /// tombstone is no longer needed (and a record of the node, e.g. an
    /// edit that won over the delete, may apply again).
    pub fn delete_done(&self, node: &NodeId, rec: Option<&NodeRecord>) -> VfsResult<()> {
        let ino = {
            let ns = self.meta.lock_ns();
            let Some(ino) = self.meta.ino_of(node)? else {
                return Ok(());
            };
            let Some(mut inode) = self.meta.inode(ino)? else {
                return Ok(());
            };
            if !inode.unlinked {
                return Ok(());
            }
            inode.synced_rev = inode.local_rev;
            // The delete's own state: it dominates every older record of
            // the node, and the tombstone waits for the cursor to pass it.
            if let Some(rec) = rec {
                inode.vv = rec.vv.clone();
                inode.server_seq = rec.seq;
            }
            let mut t = self.meta.txn(&ns);
            t.put_inode(&inode);
            t.commit()?;
            ino
        };
        self.purge_if_unused(ino)
    }

    /// The server kept node `rec` against this device's delete of it (an
    /// edit elsewhere won, or the folder got a new child elsewhere): the
    /// node comes back here as the server has it, under its server entries.
    ///
    /// The tombstone still holds the state this device deleted, which may
    /// be exactly the server's (a folder nobody changed since): that state
    /// is forgotten first, or [`Vfs::apply_remote`] would take the record
    /// for one it already has and leave the node deleted here (and its
    /// children, which the server kept too, in an invisible folder).
    pub fn delete_lost(&self, node: &NodeId, rec: &NodeRecord) -> VfsResult<()> {
        let ino = {
            let ns = self.meta.lock_ns();
            let Some(ino) = self.meta.ino_of(node)? else {
                drop(ns);
                self.apply_remote(rec)?;
                return Ok(());
            };
            let Some(mut inode) = self.meta.inode(ino)? else {
                drop(ns);
                self.apply_remote(rec)?;
                return Ok(());
            };
            if inode.unlinked {
                inode.synced_rev = inode.local_rev;
                inode.vv = crate::protocol::VersionVector::default();
                let mut t = self.meta.txn(&ns);
                t.put_inode(&inode);
                t.commit()?;
            }
            ino
        };
        if !self.apply_remote(rec)? {
            tracing::warn!(node = %node, "a node whose delete lost waits for its folder");
        }
        self.purge_if_unused(ino)
    }

    /// Path of an inode relative to the root ("" for the root).
    pub fn path_of(&self, ino: u64) -> VfsResult<String> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO && cur != 0 {
            let inode = self.meta.inode_required(cur)?;
            parts.push(inode.name);
            cur = inode.parent;
        }
        parts.reverse();
        Ok(parts.join("/"))
    }

    pub(super) fn is_below(&self, mut ino: u64, ancestor: u64) -> bool {
        if ancestor == ROOT_INO {
            return true;
        }
        let mut guard = 0;
        while ino != 0 && guard < 4096 {
            if ino == ancestor {
                return true;
            }
            ino = match self.meta.inode(ino) {
                Ok(Some(i)) => i.parent,
                _ => return false,
            };
            guard += 1;
        }
        false
    }

    /// Nodes at or below `ino` with changes the server does not have
    /// (journaled or quarantined). Reads the journal's index, not the
    /// journal: O(pending nodes).
    pub fn pending_below(&self, ino: u64, max_paths: usize) -> VfsResult<PendingSummary> {
        let mut count = 0;
        let mut bytes = 0;
        let mut failed = 0;
        let mut paths = Vec::new();
        for i in self.meta.journal().pending_inos() {
            let Some(inode) = self.meta.inode(i)? else {
                continue;
            };
            if !self.is_below(i, ino) {
                continue;
            }
            count += 1;
            if self.meta.journal().is_quarantined(i) && !self.meta.journal().has_records(i) {
                failed += 1;
            }
            if inode.kind == NodeKind::File && inode.dirty && !inode.unlinked {
                bytes += inode.size.saturating_sub(self.status.uploaded_so_far(i));
            }
            if paths.len() < max_paths {
                let parent = self.path_of(inode.parent).unwrap_or_default();
                paths.push(if parent.is_empty() {
                    inode.name.clone()
                } else {
                    format!("{parent}/{}", inode.name)
                });
            }
        }
        Ok(PendingSummary {
            count,
            bytes,
            failed,
            paths,
        })
    }
}
