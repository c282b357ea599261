//! The conflict marks of inodes: the `k` keyspace.
//!
//! Key `k` ino (big-endian) → the node's [`ConflictMark`] as JSON (as on
//! the wire, so a mark that gains fields needs no store format change),
//! present only on a conflict copy. The keyspace is its own index: listing
//! every conflict copy of a mount scans `k` keys only, never the inodes.
//! A mark is written by the [`Txn`] that adopts a server record (or the
//! user's clearing of it), in the same batch as the inode, and removed
//! with the inode ([`Txn::remove_inode`]).
//!
//! Stores written before marks existed simply have no `k` keys (no format
//! change: a client that does not know marks speaks an older protocol,
//! which a server with marks refuses, so it never uploads a node without
//! its mark). A key whose inode is gone is skipped by readers.

use super::{ino_key, MetaCache, Txn};
use crate::protocol::ConflictMark;
use crate::vfs::error::{Cause, VfsError, VfsResult};

/// Marks read per scan page.
const PAGE: usize = 1_024;

fn decode(bytes: &[u8]) -> VfsResult<ConflictMark> {
    serde_json::from_slice(bytes)
        .map_err(|e| VfsError::Store(Cause::from_error("corrupt conflict mark", e)))
}

impl MetaCache {
    /// The conflict mark of `ino`, if it is a conflict copy.
    pub fn conflict(&self, ino: u64) -> VfsResult<Option<ConflictMark>> {
        self.kv
            .get(&ino_key(b'k', ino))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// Every stored mark, in ino order (`k` keys only: O(marks)).
    pub fn conflicts(&self) -> VfsResult<Vec<(u64, ConflictMark)>> {
        let mut out = Vec::new();
        let mut start = vec![b'k'];
        loop {
            let page = self.kv.scan(b"k", &start, PAGE)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (k, v) in &page {
                let ino = k
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| VfsError::Store("malformed conflict mark key".into()))?;
                out.push((ino, decode(v)?));
            }
        }
        Ok(out)
    }
}

impl Txn<'_> {
    /// Makes `ino`'s mark `mark` (`None` removes it).
    pub fn set_conflict(&mut self, ino: u64, mark: Option<&ConflictMark>) -> &mut Self {
        let value = mark
            .map(|m| serde_json::to_vec(m).expect("JSON encoding of a conflict mark cannot fail"));
        self.writes.push((ino_key(b'k', ino), value));
        self
    }
}
