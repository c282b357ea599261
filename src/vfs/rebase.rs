//! Remote changes reaching a node whose own change the server refused.
//!
//! A node with local changes normally ignores remote records until the
//! uploader has reconciled them. A change in the quarantine
//! ([`super::journal`]) will not be reconciled by itself, so waiting would
//! freeze the node and let two devices diverge. Instead, when a newer
//! remote state arrives for a quarantined node that nothing else holds
//! (no journal record, no open handle), the node adopts the remote state,
//! and refused new content lives on beside it as a new file under a
//! conflict name, marked as a conflict copy of the node (as the server
//! marks its own copies), journaled like any new file. Nothing is dropped: the
//! refused attribute or name changes give way to the remote ones, the
//! refused content becomes the copy.

use super::meta::{Dentry, Inode, NsGuard};
use super::{now_ns, Vfs, VfsResult};
use crate::protocol::{conflict_name, NodeId, NodeKind, NodeRecord};

impl Vfs {
    /// Lets remote record `rec` apply to `inode`, which has local changes:
    /// returns false when those changes must still win (see the module
    /// docs).
    pub(super) fn rebase_refused(
        &self,
        ns: &NsGuard<'_>,
        inode: &Inode,
        rec: &NodeRecord,
        notify_entries: &mut Vec<(u64, String)>,
    ) -> VfsResult<bool> {
        let journal = self.meta.journal();
        if !journal.is_quarantined(inode.ino)
            || journal.has_records(inode.ino)
            || inode.unlinked
            || self.open.get(inode.ino).is_some()
            || inode.vv.dominates(&rec.vv)
        {
            return Ok(false);
        }
        let mut t = self.meta.txn(ns);
        let mut node = inode.clone();
        let mut moved_work = false;
        if inode.kind == NodeKind::File && inode.dirty {
            let at = now_ns();
            let mut n = 1;
            let name = loop {
                let c = conflict_name(&inode.name, inode.kind, &self.device_name, at, n);
                if self.meta.dentry(inode.parent, &c)?.is_none() {
                    break c;
                }
                n += 1;
            };
            let mut copy = Inode::new(
                self.meta.alloc_ino(ns),
                NodeId::random(),
                inode.parent,
                &name,
                NodeKind::File,
                inode.mode,
            );
            copy.size = inode.size;
            copy.mtime = inode.mtime;
            (copy.uid, copy.gid, copy.ids_from) = (inode.uid, inode.gid, inode.ids_from);
            copy.dirty = true;
            copy.local_rev = 1;
            // Linked first, so that a crash at any point leaves the content
            // reachable from whichever record is durable.
            let (from, to) = (self.work_path_of(inode), self.work_path_of(&copy));
            std::fs::hard_link(&from, &to)?;
            moved_work = true;
            t.create_inode(&copy).put_dentry(
                inode.parent,
                &name,
                Dentry {
                    ino: copy.ino,
                    kind: NodeKind::File,
                },
            );
            // The copy keeps the refused version's extended attributes.
            t.replace_xattrs(copy.ino, &self.meta.xattrs(inode.ino)?)?;
            // A conflict copy like the server's, marked as such.
            t.set_conflict(
                copy.ino,
                Some(&crate::protocol::ConflictMark {
                    of: inode.node_id,
                    device: self.device_name.clone(),
                    at: crate::protocol::Timestamp::from_ns(at),
                }),
            );
            t.journal_upsert(&copy, true)?;
            notify_entries.push((inode.parent, name));
            node.dirty = false;
            node.size = self.meta.content(inode.ino)?.map(|c| c.size()).unwrap_or(0);
        }
        node.synced_rev = node.local_rev;
        t.put_inode(&node).settle(&node);
        t.commit()?;
        if moved_work {
            self.remove_work_durably(&inode.node_id);
        }
        tracing::info!(
            path = %self.path_of(inode.ino).unwrap_or_default(),
            "a remote change reached a node whose own change the server refused"
        );
        Ok(true)
    }
}
