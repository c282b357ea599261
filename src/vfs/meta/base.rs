//! The sync base of each node and the local aliases of node ids: the `b`
//! and `a` keyspaces.
//!
//! - `b` ino → the node as this device last adopted it from the server
//!   ([`SeenState`], JSON as on the wire: its optional fields are skipped
//!   when empty, which postcard cannot read back). Written in the same
//!   [`Txn`] as every server state the device takes (a pulled record, the
//!   answer to a commit) and removed with the inode; the uploader sends it
//!   as [`crate::protocol::CommitOp::seen`]. A node without one (created
//!   here and not answered yet, or kept by a store from before protocol
//!   6) sends `seen: None`, the whole-state commit. No format bump: a
//!   missing base only means the old behaviour.
//! - `a` old node id → new node id: a node this device created that now
//!   has another id (the server merged it into an existing node, or a
//!   pulled node took its place here, see `vfs::rekey`). Journal records
//!   name folders by node id as of the change, so a record written before
//!   the change may still name the old id: the uploader sends the new one
//!   ([`MetaCache::resolve_alias`]). Aliases are a few bytes each and are
//!   kept.

use super::{ino_key, key, MetaCache, Txn};
use crate::protocol::{NodeId, NodeRecord, SeenState};
use crate::vfs::error::{Cause, VfsError, VfsResult};

fn base_key(ino: u64) -> Vec<u8> {
    ino_key(b'b', ino)
}

fn alias_key(node: &NodeId) -> Vec<u8> {
    key(b'a', node.as_bytes())
}

fn corrupt(e: serde_json::Error) -> VfsError {
    VfsError::Store(Cause::from_error("corrupt sync base", e))
}

impl MetaCache {
    /// The sync base of `ino` (see the module docs); `None` when the
    /// device has no server state of it.
    pub fn sync_base(&self, ino: u64) -> VfsResult<Option<SeenState>> {
        self.kv
            .get(&base_key(ino))?
            .map(|b| serde_json::from_slice(&b).map_err(corrupt))
            .transpose()
    }

    /// The id node `node` has now, following local aliases (itself when it
    /// has none).
    pub fn resolve_alias(&self, node: &NodeId) -> VfsResult<NodeId> {
        let mut cur = *node;
        // Aliases never form a cycle (each points at a node the server
        // had first); the bound only guards a corrupt store.
        for _ in 0..16 {
            match self.kv.get(&alias_key(&cur))? {
                Some(b) => cur = super::dec(&b)?,
                None => return Ok(cur),
            }
        }
        Ok(cur)
    }
}

impl Txn<'_> {
    /// Records `rec` as the sync base of `ino` (removes it for a deleted
    /// record or the root, which have none).
    pub fn put_base(&mut self, ino: u64, rec: &NodeRecord) -> &mut Self {
        self.put_seen(ino, SeenState::of(rec).as_ref())
    }

    /// Records `state` as the sync base of `ino` (`None` removes it).
    pub fn put_seen(&mut self, ino: u64, state: Option<&SeenState>) -> &mut Self {
        let value =
            state.map(|s| serde_json::to_vec(s).expect("JSON encoding of a state cannot fail"));
        self.writes.push((base_key(ino), value));
        self
    }

    /// Forgets the sync base of `ino`.
    pub fn remove_base(&mut self, ino: u64) -> &mut Self {
        self.writes.push((base_key(ino), None));
        self
    }

    /// Gives inode `ino` the node id `new` instead of `old`: the id index
    /// follows, and `old` becomes a local alias of `new` (see the module
    /// docs). The caller writes the inode record itself.
    pub fn rekey(&mut self, ino: u64, old: &NodeId, new: &NodeId) -> &mut Self {
        self.writes.push((key(b'n', old.as_bytes()), None));
        self.writes
            .push((key(b'n', new.as_bytes()), Some(super::enc(&ino))));
        self.writes.push((alias_key(old), Some(super::enc(new))));
        self
    }

    /// Drops the local alias `old` (its node became a new node again).
    pub fn unalias(&mut self, old: &NodeId) -> &mut Self {
        self.writes.push((alias_key(old), None));
        self
    }
}
