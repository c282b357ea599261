//! A local node that takes another node id: two devices made the same
//! thing under the same name, and the two nodes become one.
//!
//! Two ways lead here:
//! - **The server merged it** (`CommitOutcome::Merged`, [`Vfs::merged_done`]):
//!   the create this device sent met an equal node; the server keeps its
//!   node, and the sent id becomes a server-side alias of it. (An answer
//!   about another node than the op named, when the inode still has the
//!   id it had when the op was planned, is the same thing: the `Merged`
//!   answer was lost in a crash and the op went again; `commit_done`
//!   hands it here.)
//! - **A pulled node merged with it here** ([`Vfs::merge_with_pulled`]): the
//!   follower brought a node whose name a never-uploaded local node holds,
//!   and both are the same thing — two folders, two files of equal
//!   content (the working copy is chunked as the uploader would, only in
//!   this case), two symlinks to one target. The local node takes the
//!   pulled one's id, base and content instead of moving aside under a
//!   conflict name, and keeps its children and attributes (a change still
//!   to push). The server never heard of the old id.
//!
//! Either way the inode keeps its number (the kernel sees nothing but new
//! attributes), the id index follows, a working copy moves to the new id's
//! path, and the old id becomes a **local alias** (`meta::base`): journal
//! records written earlier name folders by id (a child created in the new
//! folder names its parent by the old id), and the uploader sends the new
//! id for them. That one rule covers both ways, so records are never
//! rewritten.
//!
//! # Two inodes of one node
//! When the server's `Merged` answer arrives, the follower may already
//! have pulled the node it names into an inode of its own (the local node
//! had been renamed, or its content had changed, while the create was in
//! flight, so the pull did not merge it). The two become one:
//! - the pulled inode holds nothing of its own (no local change, no
//!   journal record, not open): it **folds** into the local one — its
//!   entries go, its children move into the local folder (a name both
//!   hold is displaced by the usual rules) — and the local inode takes the
//!   id;
//! - otherwise both have work of their own. The pulled inode keeps the id
//!   (its changes are against that node), and the local one becomes a new
//!   node again: a fresh id, no base, journaled as a create, its children
//!   journaled again so that they follow it rather than the alias. The
//!   server then has both, as two devices that edited concurrently would.
//!
//! The re-key is its own batch, committed before the answer is adopted
//! (`commit_done`'s batch): a crash between the two leaves the node
//! re-keyed with its journal record still queued, which then sends it
//! again as the node it now is (the server takes it as an update). A node
//! deleted here while its create was in flight is not re-keyed: its
//! queued delete names the old id, which the server resolves to the node.

use super::meta::{Inode, NsGuard, Txn};
use super::*;
use crate::protocol::SeenState;

impl Vfs {
    /// The server merged the node `ino` created into `rec` (its answer
    /// `Merged`): the inode takes `rec`'s id, then adopts the answer as
    /// [`Vfs::commit_done`] does (see the module docs).
    pub fn merged_done(&self, ino: u64, sent: &SentState, rec: &NodeRecord) -> VfsResult<()> {
        let mut notify = Vec::new();
        {
            let ns = self.meta.lock_ns();
            let Some(mut inode) = self.meta.inode(ino)? else {
                return Ok(());
            };
            if inode.node_id != rec.node_id && !inode.unlinked {
                let mut t = self.meta.txn(&ns);
                let moved_work = match self.meta.ino_of(&rec.node_id)? {
                    Some(other) if other != ino => {
                        if self.fold(&mut t, other, ino, &mut notify)? {
                            self.rekey(&mut t, &mut inode, rec.node_id)?
                        } else {
                            self.renew(&mut t, &mut inode)?
                        }
                    }
                    _ => self.rekey(&mut t, &mut inode, rec.node_id)?,
                };
                t.put_inode(&inode);
                t.commit()?;
                if let Some(old) = moved_work {
                    self.remove_work_durably(&old);
                }
            }
        }
        for (p, n) in notify {
            self.notify_entry(p, &n);
        }
        // A renewed inode no longer is `rec`'s node: `commit_done` takes
        // the answer as a remote record then.
        self.commit_done(ino, sent, rec)
    }

    /// Gives `inode` id `new` (index, alias, working copy; the caller
    /// writes the inode). Returns the old id when a working copy was
    /// linked to the new path: the caller removes the old one once the
    /// batch is committed.
    fn rekey(&self, t: &mut Txn<'_>, inode: &mut Inode, new: NodeId) -> VfsResult<Option<NodeId>> {
        let old = inode.node_id;
        t.rekey(inode.ino, &old, &new);
        inode.node_id = new;
        let (from, to) = (self.work_path(&old), self.work_path(&new));
        if !from.exists() {
            return Ok(None);
        }
        // Linked first, so that whichever batch is durable after a crash
        // finds its copy (startup drops the copy nothing refers to).
        self.meta.kv().keep_file(&to);
        match std::fs::remove_file(&to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        std::fs::hard_link(&from, &to)?;
        Ok(Some(old))
    }

    /// Folds inode `other` (a pulled copy of the node `ino` becomes) into
    /// `ino`, if it holds nothing of its own: its entries go, its children
    /// move to `ino`. False (nothing written) when it does hold something.
    fn fold(
        &self,
        t: &mut Txn<'_>,
        other: u64,
        ino: u64,
        notify: &mut Vec<(u64, String)>,
    ) -> VfsResult<bool> {
        let Some(mut dup) = self.meta.inode(other)? else {
            return Ok(true);
        };
        if dup.has_local_changes()
            || self.meta.journal().has_records(other)
            || self.meta.journal().is_quarantined(other)
            || self.open.is_open(other)
        {
            return Ok(false);
        }
        for (p, n) in dup.entries() {
            if self.meta.dentry(p, &n)?.map(|d| d.ino) == Some(other) {
                t.remove_dentry(p, &n);
                notify.push((p, n));
            }
        }
        if dup.is_dir() {
            for (name, d) in self.meta.list(other, None, usize::MAX)? {
                let mut child = self.meta.inode_required(d.ino)?;
                let want = child
                    .entries()
                    .into_iter()
                    .map(|(p, n)| {
                        if (p, n.as_str()) == (other, name.as_str()) {
                            (ino, n)
                        } else {
                            (p, n)
                        }
                    })
                    .collect();
                self.set_entries(t, &mut child, want, false, notify)?;
                t.put_inode(&child);
            }
        }
        // The id goes to `ino` in this batch; the stale inode must not take
        // the index entry with it when it goes.
        dup.node_id = NodeId::random();
        dup.unlinked = true;
        if self.inodes.is_referenced(other) {
            t.put_inode(&dup).remove_base(other);
        } else {
            t.remove_inode(&dup);
        }
        Ok(true)
    }

    /// Makes `inode` a new node again (see the module docs): a fresh id,
    /// no server state, journaled as a create; a folder's children are
    /// journaled again so that their records name the new id. Returns
    /// what [`Vfs::rekey`] does.
    fn renew(&self, t: &mut Txn<'_>, inode: &mut Inode) -> VfsResult<Option<NodeId>> {
        let old = inode.node_id;
        let new = NodeId::random();
        let moved_work = self.rekey(t, inode, new)?;
        // The alias would send the children to the node kept by the other
        // inode; this one is new.
        t.unalias(&old);
        inode.vv = Default::default();
        inode.server_seq = 0;
        if inode.kind == NodeKind::File && !inode.dirty {
            inode.content_hash = None;
        }
        inode.local_rev += 1;
        t.remove_base(inode.ino);
        t.put_inode(inode).journal_upsert(inode, true)?;
        if inode.is_dir() {
            for (_, d) in self.meta.list(inode.ino, None, usize::MAX)? {
                let mut child = self.meta.inode_required(d.ino)?;
                child.local_rev += 1;
                t.put_inode(&child).journal_upsert(&child, true)?;
            }
        }
        tracing::info!(
            path = %self.path_of(inode.ino).unwrap_or_default(),
            "a node merged by the server was also changed here as pulled: kept as a new node"
        );
        Ok(moved_work)
    }

    /// The local node holding the name of pulled record `rec` (in folder
    /// `parent`), re-keyed to `rec`'s id, when it was never uploaded and
    /// is the same thing (see the module docs); `None` otherwise, and the
    /// name's holder is displaced as usual.
    pub(super) fn merge_with_pulled(
        &self,
        ns: &NsGuard<'_>,
        rec: &NodeRecord,
        parent: u64,
    ) -> VfsResult<Option<Inode>> {
        if !rec.links.is_empty() {
            return Ok(None);
        }
        let Some(d) = self.meta.dentry(parent, &rec.name)? else {
            return Ok(None);
        };
        let Some(mut local) = self.meta.inode(d.ino)? else {
            return Ok(None);
        };
        if local.kind != rec.meta.kind
            || local.on_server()
            || local.unlinked
            || !local.links.is_empty()
            || self.meta.journal().is_quarantined(local.ino)
            || self.meta.ino_of(&rec.node_id)?.is_some()
        {
            return Ok(None);
        }
        let same = match local.kind {
            NodeKind::Dir => true,
            NodeKind::Symlink => local.symlink_target == rec.meta.symlink_target,
            NodeKind::File => !self.open.has_writers(local.ino) && self.same_content(&local, rec),
            _ => false,
        };
        if !same {
            return Ok(None);
        }
        let old = local.node_id;
        let mut t = self.meta.txn(ns);
        t.rekey(local.ino, &old, &rec.node_id);
        local.node_id = rec.node_id;
        // Its content is the pulled node's; its attributes stay a pending
        // change (its journal record sends them as that node's).
        let had_work = local.dirty;
        local.dirty = false;
        t.put_inode(&local);
        if !self.meta.journal().has_records(local.ino) {
            local.local_rev += 1;
            t.put_inode(&local).journal_upsert(&local, false)?;
        }
        t.commit()?;
        if had_work {
            self.remove_work_durably(&old);
        }
        tracing::info!(
            path = %self.path_of(local.ino).unwrap_or_default(),
            "a node made here merged with the same node from another device"
        );
        Ok(Some(local))
    }

    /// True when never-uploaded file `local` has the content of `rec`:
    /// its working copy chunked as the uploader chunks it (or its stored
    /// content) has the same content hash. A copy that cannot be read
    /// counts as different.
    fn same_content(&self, local: &Inode, rec: &NodeRecord) -> bool {
        let Some(remote) = SeenState::of(rec).and_then(|s| s.content) else {
            return false;
        };
        if local.size != rec.meta.size() {
            return false;
        }
        let manifest = if local.dirty {
            let file = match std::fs::File::open(self.work_path_of(local)) {
                Ok(f) => f,
                Err(_) => return false,
            };
            match crate::chunking::chunk_stream(file, |_, _| Ok::<(), std::io::Error>(())) {
                Ok(m) => m,
                Err(_) => return false,
            }
        } else {
            match self.meta.content(local.ino) {
                Ok(c) => c.map(|c| c.manifest).unwrap_or_default(),
                Err(_) => return false,
            }
        };
        FileContent { manifest }.hash() == remote
    }
}
