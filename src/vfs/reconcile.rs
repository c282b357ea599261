//! Reconciliation with the server: remote records applied to the local
//! metadata (`apply_remote`), local nodes displaced by a remote one, and the
//! server's answers to this device's commits (`commit_done`).
//!
//! Every server state the device takes is also its new **sync base** (the
//! `b` keys, see `meta::base`), written in the same transaction: what the
//! next op of the node sends as `seen`. A commit's answer is adopted field
//! by field (`vfs::answer`): the server merged the op with other devices'
//! changes, and the answer carries them.
//!
//! # Displacement
//! A pulled node that takes a name a local node holds displaces it (see
//! [`Vfs::displace`]), except when the local node was never uploaded and
//! is the same thing the remote one is — a folder (any), a file with the
//! same content, a symlink with the same target: two devices that made
//! `photos/` or copied the same file. Then the local node **merges** with
//! the remote one instead (`vfs::rekey`): it takes the remote node id and
//! base, keeps its children and its own attributes (its pending change,
//! which its journal record pushes: the later create's attributes win,
//! as in the server's merge of two creates), and from there it is that
//! node.
//!
//! A record's conflict mark (`NodeMeta::conflict`) is stored in the same
//! batch as the node (`meta::Txn::set_conflict`): a remote record always
//! brings its mark; a commit answer brings it only when the node has not
//! changed here since the commit was planned (the user may have cleared
//! it meanwhile; that change is journaled and wins at its push).

use super::*;
use crate::protocol::SeenState;

impl Vfs {
    /// Applies a node record from the server to the local cache, unless the
    /// node has local changes still to push (the uploader reconciles those)
    /// or this device already has that state. Returns false when the record
    /// must wait: for its parent to arrive, or (a folder delete) for its
    /// children to move away.
    pub fn apply_remote(&self, rec: &NodeRecord) -> VfsResult<bool> {
        let mut notify_entries: Vec<(u64, String)> = Vec::new();
        let mut notify_inodes = Vec::new();
        let applied = {
            let ns = self.meta.lock_ns();
            self.apply_remote_locked(&ns, rec, &mut notify_entries, &mut notify_inodes)?
        };
        for (p, n) in notify_entries {
            self.notify_entry(p, &n);
        }
        for i in notify_inodes {
            self.notify_inode(i);
        }
        Ok(applied)
    }

    pub(super) fn apply_remote_locked(
        &self,
        ns: &meta::NsGuard<'_>,
        rec: &NodeRecord,
        notify_entries: &mut Vec<(u64, String)>,
        notify_inodes: &mut Vec<u64>,
    ) -> VfsResult<bool> {
        let mut existing = match self.meta.ino_of(&rec.node_id)? {
            Some(ino) => self.meta.inode(ino)?,
            None => None,
        };
        if rec.node_id.is_root() {
            if let Some(mut root) = existing {
                if !root.vv.dominates(&rec.vv) {
                    root.vv = rec.vv.clone();
                    root.server_seq = rec.seq;
                    self.adopt_attributes(&mut root, &rec.meta);
                    root.ctime = Timestamp::now();
                    let mut t = self.meta.txn(ns);
                    t.put_inode(&root);
                    t.commit()?;
                }
            }
            return Ok(true);
        }
        if let Some(inode) = &existing {
            // Local changes win until the uploader has reconciled them; a
            // node unlinked here has its delete queued (local_rev moved).
            if inode.has_local_changes() {
                // A change the server refused does not freeze the node.
                if !self.rebase_refused(ns, inode, rec, notify_entries)? {
                    return Ok(true);
                }
            }
        }
        if let Some(ino) = existing.as_ref().map(|i| i.ino) {
            existing = self.meta.inode(ino)?;
        }
        if let Some(inode) = &existing {
            // Writes not yet made durable count as local changes too: their
            // close commits them against the old base, which the server
            // then sees as concurrent (a conflict copy, nothing lost).
            // While the file is open for writing without such writes, the
            // record waits: a write may be landing in the working copy right
            // now, and dropping that copy would lose it.
            if let Some(o) = self.open.get(inode.ino) {
                let st = o.state.lock();
                if st.unsaved.is_some() {
                    return Ok(true);
                }
                if st.writers > 0 {
                    return Ok(false);
                }
            }
            // Already this state — unless the node lost its names here
            // while the server kept it: deleted here and brought back by
            // another device's edit inside it (the server revives it
            // without a new version, at a later seq), or displaced by a
            // pulled node although the server's answer this device had
            // already applied named it elsewhere (`displace`; the same
            // record again, at the same seq). Without local changes
            // (returned above), an unlinked node takes any record the
            // server wrote since its own last one. An older record (a
            // stale page from before this device's delete reached the
            // server) stays ignored: the delete's seq is newer.
            let brought_back = inode.unlinked && rec.seq >= inode.server_seq;
            if inode.vv.dominates(&rec.vv) && !rec.deleted && !brought_back {
                return Ok(true);
            }
        }
        let mut t = self.meta.txn(ns);
        if rec.deleted {
            let Some(inode) = existing else {
                return Ok(true);
            };
            if inode.is_dir() && !self.meta.is_empty_dir(inode.ino)? {
                // Children still here: either they move away later in the
                // log (the caller retries this record after applying the
                // others), or they were created here and not yet pushed
                // (their upload makes the server restore the folder).
                return Ok(false);
            }
            for (p, n) in inode.entries() {
                if self.meta.dentry(p, &n)?.map(|d| d.ino) == Some(inode.ino) {
                    t.remove_dentry(p, &n);
                    notify_entries.push((p, n));
                }
            }
            let mut gone = inode.clone();
            gone.unlinked = true;
            gone.vv = rec.vv.clone();
            gone.server_seq = rec.seq;
            t.put_inode(&gone).remove_base(gone.ino);
            t.commit()?;
            // purge needs ns; we hold it, so do the same work inline.
            if !self.open.is_open(inode.ino) && !self.inodes.is_referenced(inode.ino) {
                let mut t = self.meta.txn(ns);
                t.remove_inode(&gone);
                t.commit()?;
            }
            return Ok(true);
        }
        let Some(parent_id) = rec.parent else {
            return Ok(true);
        };
        let Some(parent_ino) = self.meta.ino_of(&parent_id)? else {
            return Ok(false);
        };
        // Every entry's folder must be here (a link's folder may come
        // later in the log).
        let mut want = vec![(parent_ino, rec.name.clone())];
        for l in &rec.links {
            let Some(p) = self.meta.ino_of(&l.parent)? else {
                return Ok(false);
            };
            want.push((p, l.name.clone()));
        }
        let content = rec.meta.content.clone();
        let mut merged_here = false;
        if existing.is_none() {
            // A never-uploaded local node of the same thing merges instead
            // of moving aside (see the module docs).
            existing = self.merge_with_pulled(ns, rec, parent_ino)?;
            merged_here = existing.is_some();
        }
        let mut inode = match existing {
            Some(i) => i,
            None => Inode::new(
                self.meta.alloc_ino(ns),
                rec.node_id,
                parent_ino,
                &rec.name,
                rec.meta.kind,
                rec.meta.mode,
            ),
        };
        let is_new = inode.server_seq == 0
            && inode.vv.is_empty()
            && self.meta.ino_of(&rec.node_id)?.is_none();
        // Entries: the record's set, first entry first.
        if is_new || inode.entries() != want {
            if !is_new {
                // Its link count may have changed.
                notify_inodes.push(inode.ino);
            }
            self.set_entries(&mut t, &mut inode, want, is_new, notify_entries)?;
        }
        let new_hash = content.as_ref().map(|c| c.hash());
        // A new content generation: open handles keep reading theirs (a
        // clean working copy they read is retired, not dropped), new opens
        // read the new content, and the kernel's pages of the file are
        // dropped now and at the next open. The open state's lock is held
        // from the generation bump until the new content is committed, and
        // an open reads the content and the generation under that lock, so
        // no handle ever pairs old content with the new generation (its
        // reads would put old pages in the kernel's cache that every later
        // open would keep). A temporary reference makes the state exist
        // even when the file is not open: an open racing with this one
        // meets the same lock.
        let content_changed = new_hash != inode.content_hash;
        if content_changed {
            t.put_content(inode.ino, content.as_ref());
            inode.content_hash = new_hash;
            notify_inodes.push(inode.ino);
        }
        // A node merged here keeps its own attributes: they are its
        // pending change against the remote base, as the server's merge
        // of two creates lets the later one's win.
        if !merged_here {
            let before = self.attr_of(&inode);
            self.adopt_attributes(&mut inode, &rec.meta);
            if before != self.attr_of(&inode) {
                notify_inodes.push(inode.ino);
            }
            t.replace_xattrs(inode.ino, &rec.meta.xattrs)?;
        }
        let had_mark = match is_new {
            true => None,
            false => self.meta.conflict(inode.ino)?,
        };
        if had_mark != rec.meta.conflict {
            t.set_conflict(inode.ino, rec.meta.conflict.as_ref());
        }
        t.put_base(inode.ino, rec);
        inode.ctime = Timestamp::now();
        inode.vv = rec.vv.clone();
        inode.server_seq = rec.seq;
        if is_new {
            t.create_inode(&inode);
        } else {
            t.put_inode(&inode);
        }
        // Last: reading the attributes above looks at the open state.
        self.commit_content_switch(t, &inode, content_changed)?;
        Ok(true)
    }

    /// Commits `t`; when it switches `inode`'s content to one from the
    /// server (`switch`), that is a new content generation: open handles
    /// keep reading theirs (a clean working copy they read is retired, not
    /// dropped), new opens read the new content, and the kernel's pages of
    /// the file are dropped now and at the next open. The generation moves
    /// on under the open-state lock held across the commit, so an open
    /// never pairs one version's content with the other's generation.
    /// Must be the caller's last use of the open state before the commit.
    pub(super) fn commit_content_switch(
        &self,
        t: meta::Txn<'_>,
        inode: &Inode,
        switch: bool,
    ) -> VfsResult<()> {
        let state = switch.then(|| self.ensure_open_state(inode.ino));
        let mut retired = false;
        let guard = state.as_ref().map(|o| {
            let mut st = o.state.lock();
            retired = st.next_generation();
            self.open.mark_stale(inode.ino);
            st
        });
        let committed = t.commit();
        drop(guard);
        if let Some(o) = &state {
            if retired {
                self.remove_work_durably(&inode.node_id);
            }
            self.release_state_ref(inode.ino, o);
        }
        committed?;
        Ok(())
    }

    /// Takes the synced attributes of `meta` (a server record) into
    /// `inode`: mode, owner and group (ids set on this device are stored
    /// as set here, `ids_from = None`), device number, size, target, and
    /// mtime, atime and btime. ctime is the caller's (each device's own).
    /// Extended attributes and the conflict mark are separate keys: the
    /// caller replaces them in its transaction ([`meta::Txn::replace_xattrs`],
    /// [`meta::Txn::set_conflict`]); the root keeps its own (the server's
    /// root is immutable, like its mode there, and never a conflict copy).
    pub(super) fn adopt_attributes(&self, inode: &mut Inode, meta: &crate::protocol::NodeMeta) {
        inode.mode = meta.mode;
        inode.uid = meta.uid;
        inode.gid = meta.gid;
        inode.ids_from = meta.ids_from.filter(|d| *d != self.device_id);
        inode.rdev = meta.rdev;
        inode.mtime = meta.mtime;
        inode.atime = meta.atime;
        inode.btime = meta.btime;
        inode.size = meta.size();
        inode.symlink_target = meta.symlink_target.clone();
    }

    /// Makes `inode`'s entries exactly `want` (folder ino, name; the first
    /// entry first): drops the entries it no longer has (those still
    /// pointing at it) and writes the new ones, displacing a local node
    /// that holds a wanted name. `is_new`: the inode has no entry yet.
    pub(super) fn set_entries(
        &self,
        t: &mut meta::Txn<'_>,
        inode: &mut Inode,
        want: Vec<(u64, String)>,
        is_new: bool,
        notify_entries: &mut Vec<(u64, String)>,
    ) -> VfsResult<()> {
        let mut had = Vec::new();
        if !is_new {
            had.push((inode.parent, inode.name.clone()));
            had.extend(inode.links.iter().cloned());
        }
        for (p, n) in &had {
            if !want.contains(&(*p, n.clone()))
                && self.meta.dentry(*p, n)?.map(|d| d.ino) == Some(inode.ino)
            {
                t.remove_dentry(*p, n);
                notify_entries.push((*p, n.clone()));
            }
        }
        // Names held by other local nodes, by node: each node gives up all
        // of its names in one change.
        let mut held: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
        for (p, n) in &want {
            if let Some(d) = self.meta.dentry(*p, n)? {
                if d.ino != inode.ino {
                    held.entry(d.ino).or_default().push((*p, n.clone()));
                }
            }
        }
        for (other, names) in held {
            self.displace(t, other, &names, inode.node_id)?;
        }
        for (p, n) in &want {
            if self.meta.dentry(*p, n)?.is_some_and(|d| d.ino == inode.ino) {
                continue;
            }
            t.put_dentry(
                *p,
                n,
                Dentry {
                    ino: inode.ino,
                    kind: inode.kind,
                },
            );
            notify_entries.push((*p, n.clone()));
        }
        let mut want = want.into_iter();
        if let Some((p, n)) = want.next() {
            inode.parent = p;
            inode.name = n;
        }
        inode.links = want.collect();
        inode.unlinked = false;
        Ok(())
    }

    /// Remote node `by` takes names (`names`: folder ino, name) that local
    /// node `ino` holds. If the local node has changes to push, those
    /// entries move aside under conflict names (the first commit wins the
    /// name), and the node is marked a conflict copy of `by`, as the
    /// server marks a node it moves aside (`vfs::conflicts`); otherwise it
    /// is stale and loses them (all of its names: it is unlinked) until
    /// its own record arrives.
    pub(super) fn displace(
        &self,
        t: &mut meta::Txn<'_>,
        ino: u64,
        names: &[(u64, String)],
        by: NodeId,
    ) -> VfsResult<()> {
        let mut other = self.meta.inode_required(ino)?;
        let moves_aside = other.has_local_changes();
        // One time for the names and the mark.
        let at = now_ns();
        let mut taken: Vec<(u64, String)> = Vec::new();
        for (parent, name) in names {
            t.remove_dentry(*parent, name);
            if !moves_aside {
                if !other.drop_entry(*parent, name) {
                    other.unlinked = true;
                }
                continue;
            }
            let mut n = 1;
            let new_name = loop {
                let candidate =
                    crate::protocol::conflict_name(name, other.kind, &self.device_name, at, n);
                let free = self.meta.dentry(*parent, &candidate)?.is_none()
                    && !taken.contains(&(*parent, candidate.clone()));
                if free {
                    break candidate;
                }
                n += 1;
            };
            t.put_dentry(
                *parent,
                &new_name,
                Dentry {
                    ino,
                    kind: other.kind,
                },
            );
            other.move_entry(*parent, name, *parent, &new_name);
            taken.push((*parent, new_name));
        }
        if moves_aside {
            other.local_rev += 1;
            if self.meta.conflict(ino)?.is_none() {
                t.set_conflict(
                    ino,
                    Some(&crate::protocol::ConflictMark {
                        of: by,
                        device: self.device_name.clone(),
                        at: crate::protocol::Timestamp::from_ns(at),
                    }),
                );
            }
            t.put_inode(&other).journal_upsert(&other, true)?;
        } else {
            t.put_inode(&other);
        }
        Ok(())
    }

    /// After a commit: adopt the server's answer `rec` for `ino`, whose op
    /// sent `sent` as of local revision `sent.rev`: its vector, its
    /// content, and field by field the values of other devices' changes
    /// the server merged in, where the node still has the value sent (see
    /// `vfs::answer`). The answer becomes the node's sync base. Clears the
    /// dirty flag (and drops the working copy when no handle uses it) only
    /// if nothing changed since `sent.rev`.
    pub fn commit_done(&self, ino: u64, sent: &SentState, rec: &NodeRecord) -> VfsResult<()> {
        let rev = sent.rev;
        let content_pushed = sent.content;
        let mut notify = Vec::new();
        let mut notify_ino = false;
        {
            let ns = self.meta.lock_ns();
            let Some(mut inode) = self.meta.inode(ino)? else {
                return Ok(());
            };
            if inode.node_id != rec.node_id {
                drop(ns);
                if inode.node_id != sent.node_id {
                    // The inode merged with a pulled node while its commit
                    // was in flight (`vfs::rekey`): the answer is about a
                    // node it no longer is, which this device takes like
                    // any other.
                    self.apply_remote(rec)?;
                } else if !inode.unlinked {
                    // The server answered for the node the op's id is an
                    // alias of: its `Merged` answer was lost (a crash
                    // before it was adopted), and this op was sent again.
                    self.merged_done(ino, sent, rec)?;
                }
                return Ok(());
            }
            // Deleted here while its commit was in flight: its delete is
            // already journaled after this push; it needs the vector the
            // server now has.
            if inode.unlinked {
                if !rec.deleted {
                    inode.vv = rec.vv.clone();
                    inode.server_seq = rec.seq;
                    let mut t = self.meta.txn(&ns);
                    t.put_inode(&inode).put_base(ino, rec);
                    // What the server holds now: a later op of the node
                    // (its rename, before the delete) carries it, and must
                    // not carry an empty file instead.
                    if inode.kind == NodeKind::File {
                        t.put_content(ino, rec.meta.content.as_ref());
                    }
                    t.commit()?;
                }
                return Ok(());
            }
            let mut t = self.meta.txn(&ns);
            let unchanged = inode.local_rev == rev;
            // After a conflict, local changes made since the commit was
            // planned must not fast-forward over the winner: keep the old
            // base so their push is a conflict again.
            if !sent.conflict || unchanged {
                inode.vv = rec.vv.clone();
            }
            inode.server_seq = rec.seq;
            if unchanged {
                inode.synced_rev = rev;
            }
            // The server gave an entry another name (the one sent was
            // taken); adopt its entries unless the user changed them again
            // meanwhile, and as long as the new names are free here.
            if !rec.deleted {
                self.adopt_server_entries(&mut t, &mut inode, sent, rec, &mut notify)?;
                notify_ino |= self.adopt_answer_fields(&mut t, &mut inode, sent, rec)?;
            }
            let server_hash = rec.meta.content.as_ref().map(|c| c.hash());
            // Another device's content, adopted: a new generation.
            let mut switch = false;
            if (content_pushed || server_hash != inode.content_hash) && inode.kind == NodeKind::File
            {
                notify_ino |= sent.conflict;
                // Content this op did not send, with no local content
                // pending: another device's edit, merged by the server.
                let foreign = !content_pushed && !inode.dirty;
                t.put_content(ino, rec.meta.content.as_ref());
                inode.content_hash = server_hash;
                if unchanged && inode.dirty {
                    inode.dirty = false;
                    inode.size = rec.meta.size();
                }
                if foreign {
                    inode.size = rec.meta.size();
                    notify_ino = true;
                    switch = true;
                }
            }
            let mut base = SeenState::of(rec);
            if sent.conflict && !unchanged {
                // As for the vector: content edited here since builds on
                // this device's version, not the winner's, so its base
                // keeps the content seen before (its push meets the
                // winner as a concurrent edit: a copy, nothing lost).
                let before = self.meta.sync_base(ino)?;
                match (&mut base, before) {
                    (Some(b), Some(old)) => b.content = old.content,
                    (b, None) => *b = None,
                    (None, Some(_)) => {}
                }
            }
            t.put_seen(ino, base.as_ref());
            t.put_inode(&inode);
            self.commit_content_switch(t, &inode, switch)?;
            // The working copy of a node clean now goes in `after_round`,
            // once this commit is durable.
        }
        for (p, n) in notify {
            self.notify_entry(p, &n);
        }
        if notify_ino {
            self.notify_inode(ino);
        }
        Ok(())
    }

    /// The entries of the server's answer `rec` replace `inode`'s when they
    /// differ from what was sent (`sent`) only by names the server chose
    /// and the inode still has the sent ones (see `commit_done`).
    fn adopt_server_entries(
        &self,
        t: &mut meta::Txn<'_>,
        inode: &mut Inode,
        sent: &SentState,
        rec: &NodeRecord,
        notify: &mut Vec<(u64, String)>,
    ) -> VfsResult<()> {
        let Some(parent) = rec.parent else {
            return Ok(());
        };
        let mut server: Vec<(NodeId, String)> = vec![(parent, rec.name.clone())];
        server.extend(rec.links.iter().map(|l| (l.parent, l.name.clone())));
        let same_set = |a: &[(NodeId, String)], b: &[(NodeId, String)]| {
            a.len() == b.len() && a.iter().all(|e| b.contains(e))
        };
        if same_set(&server, &sent.entries) {
            return Ok(());
        }
        let mut mine = Vec::new();
        for (p, n) in inode.entries() {
            mine.push((self.meta.node_id_of(p)?, n));
        }
        if !same_set(&mine, &sent.entries) {
            return Ok(());
        }
        let mut want = Vec::with_capacity(server.len());
        for (p, n) in server {
            let Some(p) = self.meta.ino_of(&p)? else {
                return Ok(());
            };
            let free = match self.meta.dentry(p, &n)? {
                None => true,
                Some(d) => d.ino == inode.ino,
            };
            if !free {
                return Ok(());
            }
            want.push((p, n));
        }
        self.set_entries(t, inode, want, false, notify)
    }
}
