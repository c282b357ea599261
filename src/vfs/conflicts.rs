//! Conflict copies as the user sees them (DESIGN §4): the server marks the
//! copy it keeps of a losing concurrent edit ([`ConflictMark`]); this
//! device stores the mark with the node (`k` keys, see `meta`), shows it
//! as the state `conflict`, lists the marked nodes, and drops the mark
//! when the user takes the copy as an ordinary file.
//!
//! # Published (DESIGN §5, README "Conflicts")
//! - `user.nimbus.conflicts` on the root (read-only): JSON
//!   `{"count", "copies": [{"path", "of", "of_path", "device", "at"}]}`,
//!   every live conflict copy of the mount in inode order (`count` of
//!   them; `copies` stops short of the 64 KiB an attribute value may hold
//!   and then lists fewer than `count`). Built from the `k` keys: it never
//!   scans the inodes.
//! - `user.nimbus.conflict` on any node: the same object for that node
//!   (without `path`), `ENODATA` when it is not a conflict copy. Removing
//!   it (`removexattr`, what `nimbus conflicts resolve --keep both` does)
//!   clears the mark; only a caller that may write the node can (the
//!   kernel checks, as for every `user.*` attribute).
//!
//! `of_path` is the original's path relative to the mount root, `null`
//! when the original is gone (deleted) on this device; `at` is RFC 3339
//! UTC (the time in the copy's name).
//!
//! # Clearing
//! A rename or move of the copy (`namespace`) and [`Vfs::clear_conflict`]
//! remove the mark in the batch that journals the node's upsert; the
//! upload carries the node's current mark (`None` now) in
//! `NodeMeta::conflict`, so every device sees it cleared. Deleting the
//! copy removes the mark with the inode.

use super::*;
use crate::protocol::ConflictMark;
use serde::Serialize;

/// Budget for the `copies` of `user.nimbus.conflicts`, below the 64 KiB
/// the kernel lets an attribute value have.
const LIST_BYTES_MAX: usize = 60 * 1024;

/// A conflict copy as the conflict attributes publish it (see the module
/// docs for the fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConflictCopy {
    /// The copy's path relative to the mount root (only in the list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The node that kept the name.
    pub of: NodeId,
    /// Its path relative to the mount root; `None` when it is gone here.
    pub of_path: Option<String>,
    /// The device whose edit the copy keeps.
    pub device: String,
    /// When the server received that edit (RFC 3339, UTC).
    pub at: String,
}

/// The `user.nimbus.conflicts` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConflictList {
    /// Live conflict copies of the mount.
    pub count: u64,
    /// Them, or the first of them that fit in an attribute value.
    pub copies: Vec<ConflictCopy>,
}

fn json<T: Serialize>(v: &T) -> VfsResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| VfsError::Store(Cause::from_error("conflicts JSON", e)))
}

impl Vfs {
    /// The conflict mark of `ino` (what its next upload carries).
    pub fn conflict_of(&self, ino: u64) -> VfsResult<Option<ConflictMark>> {
        self.meta.conflict(ino)
    }

    /// The marked nodes that still have an entry here, in inode order.
    pub fn conflict_copies(&self) -> VfsResult<Vec<(u64, ConflictMark)>> {
        let mut out = Vec::new();
        for (ino, mark) in self.meta.conflicts()? {
            if self.meta.inode(ino)?.is_some_and(|i| !i.unlinked) {
                out.push((ino, mark));
            }
        }
        Ok(out)
    }

    /// `mark` of node `ino` as published (`with_path`: the copy's own
    /// path too).
    fn describe(&self, ino: u64, mark: ConflictMark, with_path: bool) -> VfsResult<ConflictCopy> {
        let original = match self.meta.ino_of(&mark.of)? {
            Some(i) => self.meta.inode(i)?.filter(|o| !o.unlinked),
            None => None,
        };
        let of_path = match original {
            Some(o) => Some(self.path_of(o.ino)?),
            None => None,
        };
        Ok(ConflictCopy {
            path: if with_path {
                Some(self.path_of(ino)?)
            } else {
                None
            },
            of: mark.of,
            of_path,
            device: mark.device,
            at: humantime::format_rfc3339_seconds(mark.at.to_system_time()).to_string(),
        })
    }

    /// The `user.nimbus.conflicts` object (see the module docs).
    pub fn conflict_list(&self) -> VfsResult<ConflictList> {
        let marks = self.conflict_copies()?;
        let mut list = ConflictList {
            count: marks.len() as u64,
            copies: Vec::new(),
        };
        let mut bytes = 0;
        for (ino, mark) in marks {
            let copy = self.describe(ino, mark, true)?;
            bytes += json(&copy)?.len() + 1;
            if bytes > LIST_BYTES_MAX {
                break;
            }
            list.copies.push(copy);
        }
        Ok(list)
    }

    /// `user.nimbus.conflicts` (root) as JSON.
    pub(super) fn conflicts_json(&self) -> VfsResult<Vec<u8>> {
        json(&self.conflict_list()?)
    }

    /// `user.nimbus.conflict` of `ino` as JSON; `NoAttribute` (ENODATA)
    /// when it is not a conflict copy.
    pub(super) fn conflict_json(&self, ino: u64) -> VfsResult<Vec<u8>> {
        let mark = self.meta.conflict(ino)?.ok_or(VfsError::NoAttribute)?;
        json(&self.describe(ino, mark, false)?)
    }

    /// Removes `ino`'s mark in `t`, if it has one (a rename or move of a
    /// conflict copy; the caller journals the node's upsert).
    pub(super) fn clear_conflict_in(&self, t: &mut meta::Txn<'_>, ino: u64) -> VfsResult<()> {
        if self.meta.conflict(ino)?.is_some() {
            t.set_conflict(ino, None);
        }
        Ok(())
    }

    /// The user keeps conflict copy `ino` as an ordinary file: its mark
    /// goes, with a journaled upsert that clears it on the server (like a
    /// chmod: ctime moves). `NoAttribute` when `ino` is not a conflict
    /// copy.
    pub fn clear_conflict(&self, ino: u64) -> VfsResult<()> {
        self.writable()?;
        {
            let ns = self.meta.lock_ns();
            let mut inode = self.meta.inode_required(ino)?;
            if inode.unlinked || self.meta.conflict(ino)?.is_none() {
                return Err(VfsError::NoAttribute);
            }
            inode.ctime = Timestamp::now();
            inode.local_rev += 1;
            let mut t = self.meta.txn(&ns);
            t.set_conflict(ino, None);
            t.put_inode(&inode).journal_upsert(&inode, false)?;
            t.commit()?;
        }
        self.journal_notify.notify_one();
        Ok(())
    }
}
