//! The local metadata cache: inodes, directory entries, content manifests,
//! the journal and a few counters, all in one [`Kv`] so that a metadata
//! change and its journal entry commit in one atomic batch.
//!
//! Key layout (big-endian numbers keep scans ordered):
//! - `i` ino → [`Inode`]
//! - `c` ino → [`FileContent`] (the last manifest the server has)
//! - `n` node id → ino (stable inode numbers across remounts)
//! - `d` parent ino, name → [`Dentry`] (entries are separate from inodes)
//! - `j` seq → [`JournalOp`]
//! - `m` name → counters (next ino, next journal seq, change-log cursor)

use super::error::{VfsError, VfsResult};
use super::kv::{Kv, KvWrite};
use crate::protocol::{ContentHash, FileContent, NodeId, NodeKind, VersionVector};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub const ROOT_INO: u64 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Inode {
    pub ino: u64,
    pub node_id: NodeId,
    /// Parent folder's ino (0 for the root) and this node's name in it.
    pub parent: u64,
    pub name: String,
    pub kind: NodeKind,
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    /// Hash of the content in `c/ino` (files the server has content for).
    pub content_hash: Option<ContentHash>,
    pub symlink_target: Option<String>,
    /// The version vector of the last server state this device adopted.
    pub vv: VersionVector,
    /// Change-log position of that state; 0 = never committed.
    pub server_seq: u64,
    /// A working copy (`work/<node id>`) holds content newer than `c/ino`.
    pub dirty: bool,
    /// Bumped by every local change; `synced_rev` is the last one committed.
    pub local_rev: u64,
    pub synced_rev: u64,
    /// The entry is gone but open handles may still use the inode.
    pub unlinked: bool,
}

impl Inode {
    /// A node nothing has been recorded for yet: empty, clean, never
    /// committed, times set to now.
    pub fn new(
        ino: u64,
        node_id: NodeId,
        parent: u64,
        name: &str,
        kind: NodeKind,
        mode: u32,
    ) -> Self {
        let now = super::now_ns();
        Inode {
            ino,
            node_id,
            parent,
            name: name.to_string(),
            kind,
            mode: mode & 0o7777,
            size: 0,
            mtime_ns: now,
            ctime_ns: now,
            content_hash: None,
            symlink_target: None,
            vv: VersionVector::default(),
            server_seq: 0,
            dirty: false,
            local_rev: 0,
            synced_rev: 0,
            unlinked: false,
        }
    }
    pub fn has_local_changes(&self) -> bool {
        self.local_rev != self.synced_rev || self.dirty
    }
    /// Unlinked here with its delete not yet processed by the server
    /// (the server had the node, so a delete was journaled).
    pub fn awaits_delete(&self) -> bool {
        self.unlinked
            && self.local_rev != self.synced_rev
            && (self.server_seq > 0 || !self.vv.is_empty())
    }
    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dentry {
    pub ino: u64,
    pub kind: NodeKind,
}

/// One durable, ordered record of local work still to push.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum JournalOp {
    /// Push the node's current local state (create, rename, attributes,
    /// content).
    Sync { ino: u64 },
    /// The node was removed locally.
    Delete {
        node_id: NodeId,
        base: VersionVector,
        /// Parent ino and name it had, for status displays.
        parent: u64,
        name: String,
    },
}

fn key(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + rest.len());
    k.push(tag);
    k.extend_from_slice(rest);
    k
}
fn ino_key(tag: u8, ino: u64) -> Vec<u8> {
    key(tag, &ino.to_be_bytes())
}
fn dentry_key(parent: u64, name: &str) -> Vec<u8> {
    let mut k = ino_key(b'd', parent);
    k.extend_from_slice(name.as_bytes());
    k
}
fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("postcard encoding of an in-memory value cannot fail")
}
fn dec<T: DeserializeOwned>(b: &[u8]) -> VfsResult<T> {
    Ok(postcard::from_bytes(b)?)
}

/// Typed access to the metadata store. Reads go straight to the store;
/// writes are collected in a [`Txn`] and applied atomically.
pub struct MetaCache {
    kv: Arc<dyn Kv>,
    next_ino: AtomicU64,
    next_jseq: AtomicU64,
    journal_len: AtomicU64,
}

impl MetaCache {
    pub fn open(kv: Arc<dyn Kv>) -> VfsResult<Self> {
        let get_counter = |name: &str| -> VfsResult<u64> {
            Ok(match kv.get(&key(b'm', name.as_bytes()))? {
                Some(b) => dec(&b)?,
                None => 0,
            })
        };
        let next_ino = get_counter("next_ino")?.max(ROOT_INO + 1);
        let mut next_jseq = get_counter("next_jseq")?.max(1);
        // Count journal entries; the last key also bounds next_jseq.
        let mut journal_len = 0u64;
        let mut start = vec![b'j'];
        loop {
            let page = kv.scan(b"j", &start, 4096)?;
            if page.is_empty() {
                break;
            }
            journal_len += page.len() as u64;
            let last = &page.last().unwrap().0;
            let seq = u64::from_be_bytes(last[1..9].try_into().unwrap());
            next_jseq = next_jseq.max(seq + 1);
            start = ino_key(b'j', seq + 1);
        }
        Ok(MetaCache {
            kv,
            next_ino: AtomicU64::new(next_ino),
            next_jseq: AtomicU64::new(next_jseq),
            journal_len: AtomicU64::new(journal_len),
        })
    }

    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.kv
    }

    pub fn inode(&self, ino: u64) -> VfsResult<Option<Inode>> {
        self.kv
            .get(&ino_key(b'i', ino))?
            .map(|b| dec(&b))
            .transpose()
    }
    pub fn inode_required(&self, ino: u64) -> VfsResult<Inode> {
        self.inode(ino)?.ok_or(VfsError::NotFound)
    }
    pub fn content(&self, ino: u64) -> VfsResult<Option<FileContent>> {
        self.kv
            .get(&ino_key(b'c', ino))?
            .map(|b| dec(&b))
            .transpose()
    }
    pub fn ino_of(&self, node: &NodeId) -> VfsResult<Option<u64>> {
        self.kv
            .get(&key(b'n', node.as_bytes()))?
            .map(|b| dec(&b))
            .transpose()
    }
    pub fn dentry(&self, parent: u64, name: &str) -> VfsResult<Option<Dentry>> {
        self.kv
            .get(&dentry_key(parent, name))?
            .map(|b| dec(&b))
            .transpose()
    }
    /// Entries of a folder after `after` (exclusive), in name order.
    pub fn list(
        &self,
        parent: u64,
        after: Option<&str>,
        limit: usize,
    ) -> VfsResult<Vec<(String, Dentry)>> {
        let prefix = ino_key(b'd', parent);
        let start = match after {
            Some(name) => {
                let mut k = dentry_key(parent, name);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        self.kv
            .scan(&prefix, &start, limit)?
            .into_iter()
            .map(|(k, v)| {
                let name = String::from_utf8(k[9..].to_vec())
                    .map_err(|_| VfsError::Store("non-UTF-8 entry name".into()))?;
                Ok((name, dec(&v)?))
            })
            .collect()
    }
    pub fn is_empty_dir(&self, ino: u64) -> VfsResult<bool> {
        Ok(self.list(ino, None, 1)?.is_empty())
    }
    pub fn counter(&self, name: &str) -> VfsResult<u64> {
        Ok(match self.kv.get(&key(b'm', name.as_bytes()))? {
            Some(b) => dec(&b)?,
            None => 0,
        })
    }
    pub fn alloc_ino(&self) -> u64 {
        self.next_ino.fetch_add(1, Ordering::SeqCst)
    }
    /// Journal entries in order, starting at `from`, at most `limit`.
    pub fn journal(&self, from: u64, limit: usize) -> VfsResult<Vec<(u64, JournalOp)>> {
        self.kv
            .scan(b"j", &ino_key(b'j', from), limit)?
            .into_iter()
            .map(|(k, v)| Ok((u64::from_be_bytes(k[1..9].try_into().unwrap()), dec(&v)?)))
            .collect()
    }
    pub fn journal_len(&self) -> u64 {
        self.journal_len.load(Ordering::SeqCst)
    }
    /// Every inode record (for startup recovery).
    pub fn all_inodes(&self) -> VfsResult<Vec<Inode>> {
        let mut out = Vec::new();
        let mut start = vec![b'i'];
        loop {
            let page = self.kv.scan(b"i", &start, 4096)?;
            let Some((last, _)) = page.last() else { break };
            let next = u64::from_be_bytes(last[1..9].try_into().unwrap()) + 1;
            for (_, v) in &page {
                out.push(dec(v)?);
            }
            start = ino_key(b'i', next);
        }
        Ok(out)
    }

    pub fn txn(&self) -> Txn<'_> {
        Txn {
            meta: self,
            writes: Vec::new(),
            journal_added: 0,
            journal_removed: 0,
        }
    }
    pub fn flush(&self) -> VfsResult<()> {
        self.kv.flush()
    }
}

/// Writes collected for one atomic batch.
pub struct Txn<'a> {
    meta: &'a MetaCache,
    writes: Vec<KvWrite>,
    journal_added: u64,
    journal_removed: u64,
}

impl Txn<'_> {
    pub fn put_inode(&mut self, inode: &Inode) -> &mut Self {
        self.writes
            .push((ino_key(b'i', inode.ino), Some(enc(inode))));
        self
    }
    /// Records a newly allocated inode: its record and node id mapping.
    pub fn create_inode(&mut self, inode: &Inode) -> &mut Self {
        self.put_inode(inode);
        self.writes
            .push((key(b'n', inode.node_id.as_bytes()), Some(enc(&inode.ino))));
        let next = self.meta.next_ino.load(Ordering::SeqCst);
        self.writes.push((key(b'm', b"next_ino"), Some(enc(&next))));
        self
    }
    pub fn remove_inode(&mut self, inode: &Inode) -> &mut Self {
        self.writes.push((ino_key(b'i', inode.ino), None));
        self.writes.push((ino_key(b'c', inode.ino), None));
        self.writes
            .push((key(b'n', inode.node_id.as_bytes()), None));
        self
    }
    pub fn put_content(&mut self, ino: u64, content: Option<&FileContent>) -> &mut Self {
        self.writes.push((ino_key(b'c', ino), content.map(enc)));
        self
    }
    pub fn put_dentry(&mut self, parent: u64, name: &str, d: Dentry) -> &mut Self {
        self.writes.push((dentry_key(parent, name), Some(enc(&d))));
        self
    }
    pub fn remove_dentry(&mut self, parent: u64, name: &str) -> &mut Self {
        self.writes.push((dentry_key(parent, name), None));
        self
    }
    pub fn journal(&mut self, op: &JournalOp) -> &mut Self {
        let seq = self.meta.next_jseq.fetch_add(1, Ordering::SeqCst);
        self.writes.push((ino_key(b'j', seq), Some(enc(op))));
        self.writes
            .push((key(b'm', b"next_jseq"), Some(enc(&(seq + 1)))));
        self.journal_added += 1;
        self
    }
    pub fn journal_done(&mut self, seq: u64) -> &mut Self {
        self.writes.push((ino_key(b'j', seq), None));
        self.journal_removed += 1;
        self
    }
    pub fn set_counter(&mut self, name: &str, value: u64) -> &mut Self {
        self.writes
            .push((key(b'm', name.as_bytes()), Some(enc(&value))));
        self
    }
    pub fn commit(self) -> VfsResult<()> {
        if self.writes.is_empty() {
            return Ok(());
        }
        self.meta.kv.apply(self.writes)?;
        self.meta
            .journal_len
            .fetch_add(self.journal_added, Ordering::SeqCst);
        self.meta
            .journal_len
            .fetch_sub(self.journal_removed, Ordering::SeqCst);
        Ok(())
    }
}
