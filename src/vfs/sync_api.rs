//! What the sync workers (the uploader, the change follower) and the
//! mount runtime ask of the core. They never reach the metadata store,
//! the journal or the chunk cache themselves: every question is a method
//! here, answered from a snapshot, and every change goes through the same
//! locks as a local operation.
//!
//! - Reading: [`Vfs::inode`] (a copy of the inode record),
//!   [`Vfs::ino_of`], [`Vfs::server_content`], [`Vfs::is_quarantined`],
//!   [`Vfs::journal_len`], [`Vfs::sync_base`], [`Vfs::resolve_alias`].
//! - An upload round: [`Vfs::take_round`] hands out journal records (and
//!   holds them), [`Vfs::journal_record`] reads one, [`Vfs::finish_round`]
//!   drops the answered ones and quarantines the refused ones;
//!   [`Vfs::keep_uploaded_chunk`] caches a chunk just uploaded.
//! - Waking: [`Vfs::journal_grew`] resolves when records are added,
//!   [`Vfs::journal_settled`] when a round ended (records answered,
//!   refused, or a failure to look at), which [`Vfs::notify_settled`]
//!   signals.
//! - The change follower: [`Vfs::cursor`], [`Vfs::waiting_records`],
//!   [`Vfs::save_pull`].

use super::*;
use crate::protocol::ChunkId;

impl Vfs {
    /// A copy of inode `ino`'s record; `None` once it is gone.
    pub fn inode(&self, ino: u64) -> VfsResult<Option<Inode>> {
        self.meta.inode(ino)
    }

    /// The inode that holds server node `node` here, if any.
    pub fn ino_of(&self, node: &NodeId) -> VfsResult<Option<u64>> {
        self.meta.ino_of(node)
    }

    /// For a node deleted here (`node`), the other inode that now holds
    /// its last name (a rename over it replaced it, as editors save), and
    /// that name as (folder's node id, name). `None` when the node is not
    /// deleted here or its name is free.
    pub fn replacement_of(&self, node: &NodeId) -> VfsResult<Option<(u64, (NodeId, String))>> {
        let Some(ino) = self.meta.ino_of(node)? else {
            return Ok(None);
        };
        let Some(tomb) = self.meta.inode(ino)?.filter(|i| i.unlinked) else {
            return Ok(None);
        };
        let Some(holder) = self
            .meta
            .dentry(tomb.parent, &tomb.name)?
            .map(|d| d.ino)
            .filter(|&holder| holder != ino)
        else {
            return Ok(None);
        };
        Ok(Some((
            holder,
            (self.meta.node_id_of(tomb.parent)?, tomb.name),
        )))
    }

    /// The sync base of `ino`: the server state this device last adopted
    /// (what an op sends as `seen`); `None` for a node the server has not
    /// answered for yet, or one kept by a store from before protocol 6.
    pub fn sync_base(&self, ino: u64) -> VfsResult<Option<crate::protocol::SeenState>> {
        self.meta.sync_base(ino)
    }

    /// The id node `node` has now: a node this device created and that
    /// was merged into another takes that one's id (see `vfs::rekey`);
    /// journal records written before name the old one.
    pub fn resolve_alias(&self, node: &NodeId) -> VfsResult<NodeId> {
        self.meta.resolve_alias(node)
    }

    /// The device that set `inode`'s numeric owner or group, as the wire
    /// names it: this device for ids set here (`None` locally), the
    /// recorded one for ids adopted from another; `None` without numeric
    /// ids.
    pub fn wire_ids_from(&self, inode: &Inode) -> Option<DeviceId> {
        if inode.uid.is_none() && inode.gid.is_none() {
            None
        } else {
            Some(inode.ids_from.unwrap_or(self.device_id))
        }
    }

    /// The content of file `ino` as the server last had it (the manifest
    /// uploads build on); `None` for a file the server has no content of.
    pub fn server_content(&self, ino: u64) -> VfsResult<Option<FileContent>> {
        self.meta.content(ino)
    }

    /// True when a change of `ino` waits in the quarantine (refused by the
    /// server; `nimbus status` lists it).
    pub fn is_quarantined(&self, ino: u64) -> bool {
        self.meta.journal().is_quarantined(ino)
    }

    /// Journal records not yet answered by the server.
    pub fn journal_len(&self) -> u64 {
        self.meta.journal_len()
    }

    /// Up to `limit` journal records for the next upload round, in
    /// journal order, as `(sequence, op)`; records for which `skip` is
    /// true stay for a later round. The records handed out are held
    /// (they no longer merge with new changes) until
    /// [`Vfs::finish_round`].
    pub fn take_round(
        &self,
        limit: usize,
        skip: impl FnMut(&JournalOp) -> bool,
    ) -> VfsResult<Vec<(u64, JournalOp)>> {
        self.meta
            .journal()
            .take(self.meta.kv().as_ref(), limit, skip)
    }

    /// The journal record with sequence `seq`, if it is still there.
    pub fn journal_record(&self, seq: u64) -> VfsResult<Option<JournalOp>> {
        self.meta.journal().record(self.meta.kv().as_ref(), seq)
    }

    /// Ends an upload round: records `done` leave the journal, `refused`
    /// ones move to the quarantine with the reason given, and every other
    /// record the round held is free again. (The uploader then calls
    /// [`Vfs::notify_settled`], once the round's clean-up is done.)
    pub fn finish_round(&self, done: &[u64], refused: Vec<(u64, Quarantined)>) -> VfsResult<()> {
        self.meta
            .journal()
            .finish(self.meta.kv().as_ref(), done, refused)
    }

    /// Keeps chunk `id` (just uploaded, `data` its plain bytes) in the
    /// chunk cache, so that reading the file back needs no download.
    pub async fn keep_uploaded_chunk(&self, id: ChunkId, data: &[u8]) -> VfsResult<()> {
        self.chunks.store(id, data).await
    }

    /// Resolves when records are added to the journal (or the uploader is
    /// asked to look again: a writer closed, an `fsync` waits).
    pub fn journal_grew(&self) -> tokio::sync::futures::Notified<'_> {
        self.journal_notify.notified()
    }

    /// Resolves at the end of the next upload round, whatever its outcome.
    pub fn journal_settled(&self) -> tokio::sync::futures::Notified<'_> {
        self.drained_notify.notified()
    }

    /// Wakes everything waiting on [`Vfs::journal_settled`] (the uploader
    /// calls it whenever a round ends).
    pub fn notify_settled(&self) {
        self.drained_notify.notify_waiters();
    }

    /// The change-log cursor this device has applied up to (0 at first).
    pub fn cursor(&self) -> VfsResult<u64> {
        self.meta.counter(meta::CURSOR_KEY)
    }

    /// Pulled records kept because they could not be applied yet (their
    /// folder is not here yet), in node id order.
    pub fn waiting_records(&self) -> VfsResult<Vec<NodeRecord>> {
        self.meta.waiting_records()
    }

    /// Saves, in one batch, the change-log cursor (when given) and the set
    /// of waiting records: `put` are stored (replacing older ones of the
    /// same node), `drop` are removed. Then tombstones that waited for the
    /// cursor to pass their delete go.
    pub fn save_pull(
        &self,
        cursor: Option<u64>,
        put: &[&NodeRecord],
        drop: &[NodeId],
    ) -> VfsResult<()> {
        {
            let ns = self.meta.lock_ns();
            let mut t = self.meta.txn(&ns);
            if let Some(c) = cursor {
                t.set_counter(meta::CURSOR_KEY, c);
            }
            for id in drop {
                t.remove_waiting(id);
            }
            for rec in put {
                t.put_waiting(rec);
            }
            t.commit()?;
        }
        match cursor {
            Some(c) => self.cursor_saved(c),
            None => Ok(()),
        }
    }
}
