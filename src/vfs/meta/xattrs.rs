//! The stored extended attributes of inodes: the `x` keyspace.
//!
//! Key `x` ino (big-endian) name → the value's raw bytes, one key per
//! attribute, so an [`Inode`] record stays small and a `getxattr` reads
//! one key. They are written by a [`Txn`] like every other change, in the
//! same batch as the inode's new ctime and its journal record, and
//! removed with the inode. A node holds at most
//! [`XATTR_TOTAL_MAX`](crate::protocol::XATTR_TOTAL_MAX) bytes of them,
//! so reading them all is one short scan.

use super::{ino_key, MetaCache, Txn};
use crate::protocol::Xattrs;
use crate::vfs::error::{VfsError, VfsResult};
use crate::vfs::kv::KvWrite;

/// More keys than one node can hold (each costs at least a 6-byte name
/// out of a 4 KiB budget): one scan reads them all.
const SCAN_LIMIT: usize = 4_096;

fn xattr_key(ino: u64, name: &str) -> Vec<u8> {
    let mut k = ino_key(b'x', ino);
    k.extend_from_slice(name.as_bytes());
    k
}

impl MetaCache {
    /// The value of attribute `name` of `ino`, if set.
    pub fn xattr(&self, ino: u64, name: &str) -> VfsResult<Option<Vec<u8>>> {
        self.kv.get(&xattr_key(ino, name))
    }

    /// Every stored attribute of `ino`.
    pub fn xattrs(&self, ino: u64) -> VfsResult<Xattrs> {
        let prefix = ino_key(b'x', ino);
        self.kv
            .scan(&prefix, &prefix, SCAN_LIMIT)?
            .into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8(k[prefix.len()..].to_vec())
                    .map_err(|_| VfsError::Store("non-UTF-8 attribute name".into()))?;
                Ok((name, v))
            })
            .collect()
    }
}

impl Txn<'_> {
    /// Sets attribute `name` of `ino` (rules are the caller's).
    pub fn put_xattr(&mut self, ino: u64, name: &str, value: &[u8]) -> &mut Self {
        self.writes
            .push((xattr_key(ino, name), Some(value.to_vec())));
        self
    }

    /// Removes attribute `name` of `ino`.
    pub fn remove_xattr(&mut self, ino: u64, name: &str) -> &mut Self {
        self.writes.push((xattr_key(ino, name), None));
        self
    }

    /// Makes `ino`'s attributes exactly `to` (a remote record's): removes
    /// the ones it lacks, writes the ones that differ.
    pub fn replace_xattrs(&mut self, ino: u64, to: &Xattrs) -> VfsResult<&mut Self> {
        let now = self.meta.xattrs(ino)?;
        for (name, _) in now.iter() {
            if to.get(name).is_none() {
                self.remove_xattr(ino, name);
            }
        }
        for (name, value) in to.iter() {
            if now.get(name) != Some(value) {
                self.put_xattr(ino, name, value);
            }
        }
        Ok(self)
    }
}

/// The writes that remove every attribute of the inodes in `removed`
/// (added by [`Txn::commit`] for the inodes the batch removes).
pub(super) fn removals(meta: &MetaCache, removed: &[u64]) -> VfsResult<Vec<KvWrite>> {
    let mut out = Vec::new();
    for ino in removed {
        for (name, _) in meta.xattrs(*ino)?.iter() {
            out.push((xattr_key(*ino, name), None));
        }
    }
    Ok(out)
}
