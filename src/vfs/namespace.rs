//! Namespace operations: create, mkdir, symlink, link, unlink, rmdir,
//! rename and setattr (mknod is in `special`). Each commits its metadata
//! change and journal intent in one batch under the namespace lock (`ns`).
//!
//! # Hard links
//! A node other than a folder may have several directory entries, all
//! pointing at its one inode (same `st_ino`, content and attributes through
//! every name). The inode lists them (`Inode::parent`/`name`, the first,
//! and `Inode::links`), and every operation changes the entry keys (`d`)
//! and that list in the same batch, so `st_nlink` is always the number of
//! entries. `unlink` or a rename over a name removes that one entry; only
//! the last one unlinks the node (journaled as a delete), whose inode and
//! content then stay while a handle is open (`st_nlink` 0). Any other
//! entry change (link, unlink of one of several, rename of one) journals an
//! upsert carrying the whole set of entries, which is how it travels (see
//! `protocol::api`). `link` moves ctime, as on ext4; a folder cannot be
//! linked (`EPERM`), and a node has at most `MAX_LINKS` (65,000, ext4's
//! limit) entries (`EMLINK`).
//!
//! # Conflict copies
//! Renaming or moving a conflict copy (either side of an exchange too) is
//! the user taking it as an ordinary file: its conflict mark goes in the
//! same batch, and the journaled upsert carries the cleared mark to the
//! server (see `vfs::conflicts`).

use super::*;
use crate::protocol::MAX_LINKS;

impl Vfs {
    pub(super) fn new_inode(
        &self,
        ns: &meta::NsGuard<'_>,
        parent: u64,
        name: &str,
        kind: NodeKind,
        mode: u32,
    ) -> Inode {
        let mut inode = Inode::new(
            self.meta.alloc_ino(ns),
            NodeId::random(),
            parent,
            name,
            kind,
            mode,
        );
        // Created here: a local change until committed.
        inode.local_rev = 1;
        inode
    }

    /// A folder's entries changed: its mtime and ctime are now (POSIX).
    pub(super) fn touch_dir(&self, t: &mut meta::Txn<'_>, parent: &mut Inode) {
        let now = Timestamp::now();
        parent.mtime = now;
        parent.ctime = now;
        t.put_inode(parent);
    }

    /// Creates a node owned by `by` (`rdev`: device nodes' number, else
    /// 0). Its group is `by`'s, or the folder's
    /// when the folder has the setgid bit (and a new folder inherits that
    /// bit), as on ext4 without `grpid`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create_node(
        &self,
        by: Caller,
        parent: u64,
        name: &[u8],
        kind: NodeKind,
        mode: u32,
        target: Option<String>,
        rdev: u32,
    ) -> VfsResult<Attr> {
        self.writable()?;
        let name = check_name(name)?;
        let ns = self.meta.lock_ns();
        let mut p = self.meta.inode_required(parent)?;
        if !p.is_dir() || p.unlinked {
            return Err(if p.unlinked {
                VfsError::NotFound
            } else {
                VfsError::NotDir
            });
        }
        if self.meta.dentry(parent, name)?.is_some() {
            return Err(VfsError::Exists);
        }
        let mut inode = self.new_inode(&ns, parent, name, kind, mode);
        let gid = if p.mode & SETGID != 0 {
            if kind == NodeKind::Dir {
                inode.mode |= SETGID;
            }
            self.shown_ids(&p).1
        } else {
            by.gid
        };
        self.store_ids(&mut inode, by.uid, gid);
        inode.rdev = rdev;
        if let Some(t) = target {
            inode.size = t.len() as u64;
            inode.symlink_target = Some(t);
        }
        let mut t = self.meta.txn(&ns);
        t.create_inode(&inode).put_dentry(
            parent,
            name,
            Dentry {
                ino: inode.ino,
                kind,
            },
        );
        t.journal_upsert(&inode, true)?;
        self.touch_dir(&mut t, &mut p);
        t.commit()?;
        self.journal_notify.notify_one();
        self.remember_lookup(inode.ino);
        Ok(self.attr_of(&inode))
    }

    /// `mkdir` by the mounting user.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32) -> VfsResult<Attr> {
        self.mkdir_as(self.mounter(), parent, name, mode)
    }

    /// Creates folder `name` in `parent` with permission bits `mode`
    /// (umask already applied), owned by `by`.
    pub fn mkdir_as(&self, by: Caller, parent: u64, name: &[u8], mode: u32) -> VfsResult<Attr> {
        self.create_node(by, parent, name, NodeKind::Dir, mode, None, 0)
    }

    /// `symlink` by the mounting user.
    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> VfsResult<Attr> {
        self.symlink_as(self.mounter(), parent, name, target)
    }

    /// Creates symlink `name` in `parent` pointing at `target` (1 to 4095
    /// bytes of UTF-8), owned by `by`.
    pub fn symlink_as(
        &self,
        by: Caller,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> VfsResult<Attr> {
        if target.is_empty() || target.len() > 4095 {
            return Err(VfsError::InvalidArgument("symlink target length"));
        }
        let target = std::str::from_utf8(target)
            .map_err(|_| VfsError::InvalidArgument("symlink target is not UTF-8"))?;
        self.create_node(
            by,
            parent,
            name,
            NodeKind::Symlink,
            0o777,
            Some(target.to_string()),
            0,
        )
    }

    /// `create` by the mounting user.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        write: bool,
    ) -> VfsResult<(Attr, u64)> {
        self.create_as(self.mounter(), parent, name, mode, write)
    }

    /// Creates an empty regular file owned by `by` and opens it; its
    /// attributes and the file handle.
    pub fn create_as(
        &self,
        by: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        write: bool,
    ) -> VfsResult<(Attr, u64)> {
        let attr = self.create_node(by, parent, name, NodeKind::File, mode, None, 0)?;
        let fh = self.open_file(attr.ino, write, false)?;
        Ok((attr, fh))
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> VfsResult<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> VfsResult<()> {
        self.remove(parent, name, true)
    }

    pub(super) fn remove(&self, parent: u64, name: &[u8], dir: bool) -> VfsResult<()> {
        self.writable()?;
        let name = check_name(name)?;
        let ino = {
            let ns = self.meta.lock_ns();
            let mut p = self.meta.inode_required(parent)?;
            let d = self.meta.dentry(parent, name)?.ok_or(VfsError::NotFound)?;
            let inode = self.meta.inode_required(d.ino)?;
            match (dir, inode.is_dir()) {
                (true, false) => return Err(VfsError::NotDir),
                (false, true) => return Err(VfsError::IsDir),
                (true, true) if !self.meta.is_empty_dir(inode.ino)? => {
                    return Err(VfsError::NotEmpty)
                }
                _ => {}
            }
            let mut t = self.meta.txn(&ns);
            self.unlink_inode(&mut t, inode, parent, name)?;
            self.touch_dir(&mut t, &mut p);
            t.commit()?;
            d.ino
        };
        self.journal_notify.notify_one();
        self.purge_if_unused(ino)?;
        Ok(())
    }

    /// Removes entry (`parent`, `name`) of `inode`. One of several: the
    /// node stays with the others (journaled as a move). The last one: the
    /// delete is journaled and the inode stays (marked unlinked) until no
    /// handle or kernel reference uses it.
    pub(super) fn unlink_inode(
        &self,
        t: &mut meta::Txn<'_>,
        mut inode: Inode,
        parent: u64,
        name: &str,
    ) -> VfsResult<()> {
        t.remove_dentry(parent, name);
        inode.ctime = Timestamp::now();
        inode.local_rev += 1;
        if inode.drop_entry(parent, name) {
            t.put_inode(&inode);
            t.journal_upsert(&inode, true)?;
            return Ok(());
        }
        // Always journaled: the journal drops it with the node's records
        // when the server never had the node, and otherwise keeps it in
        // order before whatever takes the name next.
        t.journal_delete(&inode, parent, name);
        inode.unlinked = true;
        t.put_inode(&inode);
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        no_replace: bool,
    ) -> VfsResult<()> {
        self.writable()?;
        let name = check_name(name)?.to_string();
        let new_name = check_name(new_name)?.to_string();
        let replaced = {
            let ns = self.meta.lock_ns();
            let d = self.meta.dentry(parent, &name)?.ok_or(VfsError::NotFound)?;
            let mut np = self.meta.inode_required(new_parent)?;
            if !np.is_dir() {
                return Err(VfsError::NotDir);
            }
            if np.unlinked {
                return Err(VfsError::NotFound);
            }
            let mut inode = self.meta.inode_required(d.ino)?;
            if parent == new_parent && name == new_name {
                return Ok(());
            }
            // Two links of the same node: POSIX says do nothing, succeed.
            if let Some(existing) = self.meta.dentry(new_parent, &new_name)? {
                if existing.ino == inode.ino {
                    if no_replace {
                        return Err(VfsError::Exists);
                    }
                    return Ok(());
                }
            }
            // A folder may not move below itself.
            if inode.is_dir() && self.is_within(new_parent, inode.ino)? {
                return Err(VfsError::InvalidArgument(
                    "cannot move a folder into itself",
                ));
            }
            let mut t = self.meta.txn(&ns);
            let mut replaced = None;
            if let Some(existing) = self.meta.dentry(new_parent, &new_name)? {
                if no_replace {
                    return Err(VfsError::Exists);
                }
                let target = self.meta.inode_required(existing.ino)?;
                match (inode.is_dir(), target.is_dir()) {
                    (true, false) => return Err(VfsError::NotDir),
                    (false, true) => return Err(VfsError::IsDir),
                    (true, true) if !self.meta.is_empty_dir(target.ino)? => {
                        return Err(VfsError::NotEmpty)
                    }
                    _ => {}
                }
                replaced = Some(target.ino);
                // The delete is journaled before the move so the server
                // frees the name first.
                self.unlink_inode(&mut t, target, new_parent, &new_name)?;
            }
            t.remove_dentry(parent, &name);
            t.put_dentry(
                new_parent,
                &new_name,
                Dentry {
                    ino: inode.ino,
                    kind: inode.kind,
                },
            );
            inode.move_entry(parent, &name, new_parent, &new_name);
            inode.ctime = Timestamp::now();
            inode.local_rev += 1;
            self.clear_conflict_in(&mut t, inode.ino)?;
            t.put_inode(&inode);
            t.journal_upsert(&inode, true)?;
            if parent != new_parent {
                let mut op = self.meta.inode_required(parent)?;
                self.touch_dir(&mut t, &mut op);
            }
            self.touch_dir(&mut t, &mut np);
            t.commit()?;
            replaced
        };
        self.journal_notify.notify_one();
        if let Some(r) = replaced {
            self.purge_if_unused(r)?;
        }
        Ok(())
    }

    /// `link(2)`: gives node `ino` one more entry, `new_name` in folder
    /// `new_parent` (see the module docs). Errors as on Linux:
    /// `ENAMETOOLONG` for a name over 255 bytes, `ENOENT` for a missing or
    /// fully unlinked node or a removed folder, `ENOTDIR` for a parent
    /// that is not a folder, `EEXIST` for a taken name, `EPERM` for a
    /// folder, `EMLINK` past `MAX_LINKS` entries.
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &[u8]) -> VfsResult<Attr> {
        self.writable()?;
        let new_name = check_name(new_name)?;
        let attr = {
            let ns = self.meta.lock_ns();
            let mut inode = self.meta.inode_required(ino)?;
            let mut p = self.meta.inode_required(new_parent)?;
            if !p.is_dir() {
                return Err(VfsError::NotDir);
            }
            if p.unlinked {
                return Err(VfsError::NotFound);
            }
            if self.meta.dentry(new_parent, new_name)?.is_some() {
                return Err(VfsError::Exists);
            }
            if inode.is_dir() {
                return Err(VfsError::NotPermitted("a folder cannot be hard-linked"));
            }
            // Linux refuses to bring back an inode whose last name is gone
            // (`linkat` of an `O_TMPFILE` aside): ENOENT.
            if inode.unlinked {
                return Err(VfsError::NotFound);
            }
            if inode.entry_count() as usize >= MAX_LINKS {
                return Err(VfsError::TooManyLinks);
            }
            inode.links.push((new_parent, new_name.to_string()));
            inode.ctime = Timestamp::now();
            inode.local_rev += 1;
            let mut t = self.meta.txn(&ns);
            t.put_dentry(
                new_parent,
                new_name,
                Dentry {
                    ino,
                    kind: inode.kind,
                },
            );
            t.put_inode(&inode);
            t.journal_upsert(&inode, true)?;
            self.touch_dir(&mut t, &mut p);
            t.commit()?;
            self.attr_of(&inode)
        };
        self.journal_notify.notify_one();
        self.remember_lookup(ino);
        Ok(attr)
    }

    /// `renameat2(RENAME_EXCHANGE)`: atomically swaps the nodes at
    /// (`parent`, `name`) and (`new_parent`, `new_name`), of any kinds.
    /// Errors (Linux `rename(2)`): `ENOENT` when either is missing,
    /// `EINVAL` when a folder would move into itself or below itself,
    /// `ENOTDIR` when a parent is not a folder.
    ///
    /// Journaled as three moves, so the server never sees one node moved
    /// onto a name the other still holds (which it would resolve as a
    /// conflict): the first node to a temporary name in the target folder,
    /// the second to the first's place, the first to its final place.
    pub fn rename_exchange(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
    ) -> VfsResult<()> {
        self.writable()?;
        let name = check_name(name)?.to_string();
        let new_name = check_name(new_name)?.to_string();
        let ns = self.meta.lock_ns();
        let da = self.meta.dentry(parent, &name)?.ok_or(VfsError::NotFound)?;
        let db = self
            .meta
            .dentry(new_parent, &new_name)?
            .ok_or(VfsError::NotFound)?;
        if da.ino == db.ino {
            return Ok(());
        }
        let mut a = self.meta.inode_required(da.ino)?;
        let mut b = self.meta.inode_required(db.ino)?;
        if (a.is_dir() && self.is_within(new_parent, a.ino)?)
            || (b.is_dir() && self.is_within(parent, b.ino)?)
        {
            return Err(VfsError::InvalidArgument(
                "cannot move a folder into itself",
            ));
        }
        let mut t = self.meta.txn(&ns);
        t.put_dentry(
            new_parent,
            &new_name,
            Dentry {
                ino: a.ino,
                kind: a.kind,
            },
        );
        t.put_dentry(
            parent,
            &name,
            Dentry {
                ino: b.ino,
                kind: b.kind,
            },
        );
        let now = Timestamp::now();
        let mut parked = a.clone();
        parked.move_entry(
            parent,
            &name,
            new_parent,
            &format!(".nimbus-exchange-{}", a.node_id),
        );
        t.journal_upsert(&parked, true)?;
        for (node, (from_p, from_n), (to_p, to_n)) in [
            (&mut b, (new_parent, &new_name), (parent, &name)),
            (&mut a, (parent, &name), (new_parent, &new_name)),
        ] {
            node.move_entry(from_p, from_n, to_p, to_n);
            node.ctime = now;
            node.local_rev += 1;
            self.clear_conflict_in(&mut t, node.ino)?;
            t.put_inode(node);
            t.journal_upsert(node, true)?;
        }
        let mut np = self.meta.inode_required(new_parent)?;
        if parent != new_parent {
            let mut op = self.meta.inode_required(parent)?;
            self.touch_dir(&mut t, &mut op);
        }
        self.touch_dir(&mut t, &mut np);
        t.commit()?;
        drop(ns);
        self.journal_notify.notify_one();
        Ok(())
    }

    /// True when folder `ino` is `dir` or below it.
    fn is_within(&self, ino: u64, dir: u64) -> VfsResult<bool> {
        let mut cur = ino;
        while cur != 0 {
            if cur == dir {
                return Ok(true);
            }
            cur = self.meta.inode_required(cur)?.parent;
        }
        Ok(false)
    }

    pub(super) fn setattr_now(&self, ino: u64, set: SetAttr) -> VfsResult<Attr> {
        self.writable()?;
        if let Some(size) = set.size {
            match self.meta.inode_required(ino)?.kind {
                NodeKind::Dir => return Err(VfsError::IsDir),
                NodeKind::File => self.truncate_sync(ino, size)?,
                // As truncate(2) on anything but a regular file: EINVAL.
                _ => {
                    return Err(VfsError::InvalidArgument(
                        "only a regular file can be truncated",
                    ))
                }
            }
        }
        let ns = self.meta.lock_ns();
        let mut inode = self.meta.inode_required(ino)?;
        let mut changed = false;
        if let Some(mode) = set.mode {
            inode.mode = mode & 0o7777;
            changed = true;
        }
        // Who may change owner and group is the kernel's check
        // (`default_permissions`). It also sends the setuid/setgid
        // clearing as a mode in the same request; a request without a
        // mode (a front end without that logic) gets ext4's rule here.
        if set.uid.is_some() || set.gid.is_some() {
            let (uid, gid) = self.shown_ids(&inode);
            self.store_ids(&mut inode, set.uid.unwrap_or(uid), set.gid.unwrap_or(gid));
            if set.mode.is_none() && !inode.is_dir() {
                inode.mode = mode_after_chown(inode.mode);
            }
            changed = true;
        }
        if let Some(a) = set.atime {
            inode.atime = a;
            changed = true;
        }
        if let Some(m) = set.mtime {
            inode.mtime = m;
            // Keep an open writer's pending mtime in step.
            if let Some(o) = self.open.get(ino) {
                if let Some((_, mt)) = o.state.lock().unsaved.as_mut() {
                    *mt = m;
                }
            }
            changed = true;
        }
        if changed {
            inode.ctime = Timestamp::now();
            inode.local_rev += 1;
            let mut t = self.meta.txn(&ns);
            t.put_inode(&inode).journal_upsert(&inode, false)?;
            t.commit()?;
            self.journal_notify.notify_one();
        }
        Ok(self.attr_of(&inode))
    }

    /// Truncate that needs no network: to zero, or on a file that already
    /// has a working copy. Otherwise the caller must first await
    /// [`Vfs::prepare_write`].
    pub(super) fn truncate_sync(&self, ino: u64, size: u64) -> VfsResult<()> {
        let o = self.ensure_open_state(ino);
        let r = self.truncate_open(ino, &o, size);
        self.release_state_ref(ino, &o);
        r
    }

    pub(super) fn truncate_open(&self, ino: u64, o: &Arc<OpenInode>, size: u64) -> VfsResult<()> {
        let Some(file) = self.work_file(ino, o, size == 0)? else {
            return Err(VfsError::Unavailable("working copy not ready".into()));
        };
        file.set_len(size)?;
        o.state.lock().unsaved = Some((size, Timestamp::now()));
        self.save_work(ino, o)
    }

    /// True when a truncate/write of `ino` can proceed without the network.
    pub(super) fn write_ready(&self, ino: u64, truncating_to_zero: bool) -> VfsResult<bool> {
        if truncating_to_zero {
            return Ok(true);
        }
        if let Some(o) = self.open.get(ino) {
            if o.state.lock().work.is_some() {
                return Ok(true);
            }
        }
        let inode = self.meta.inode_required(ino)?;
        Ok(inode.dirty || inode.content_hash.is_none())
    }
}

/// The setuid bit of a mode.
const SETUID: u32 = 0o4000;

/// A non-folder's mode after `chown` (Linux `chown(2)`, as ext4): setuid
/// is cleared, even by root, and setgid too when group-exec is set
/// (setgid without group-exec marks mandatory locking and stays).
pub(super) fn mode_after_chown(mode: u32) -> u32 {
    let mut mode = mode & !SETUID;
    if mode & 0o010 != 0 {
        mode &= !SETGID;
    }
    mode
}
