//! The local metadata cache: inodes, directory entries, content manifests,
//! the journal and a few counters, all in one [`Kv`] so that a metadata
//! change and its journal entry commit in one atomic batch.
//!
//! Key layout (big-endian numbers keep scans ordered):
//! - `i` ino → [`Inode`]
//! - `c` ino → [`FileContent`] (the last manifest the server has)
//! - `n` node id → ino (stable inode numbers across remounts)
//! - `d` parent ino, name → [`Dentry`] (entries are separate from inodes;
//!   an inode lists its own — [`Inode::parent`]/[`Inode::name`] and
//!   [`Inode::links`], hard links — and every [`Txn`] that changes one
//!   writes both, so its link count is always its number of entries)
//! - `s` folder ino → number of its entries that are folders (absent when
//!   0), kept by [`Txn`] with every entry change, for a folder's link
//!   count (ext4: 2 + subfolders) without scanning it
//! - `J` seq → [`JournalOp`], `Q` seq → quarantined record (see
//!   [`super::journal`], which owns them and their index)
//! - `x` ino, attribute name → value: the node's stored extended
//!   attributes (see `xattrs`; removed with the inode)
//! - `k` ino → the node's conflict mark (JSON; only on conflict copies, so
//!   the keyspace lists them without scanning inodes; see `conflicts`;
//!   removed with the inode)
//! - `m` name → counters (next ino, next journal seq, change-log cursor)
//! - `W` node id → a pulled [`NodeRecord`] waiting for its folder (or, a
//!   folder delete, for its children to move away); JSON, as on the wire.
//!   The change follower ([`crate::sync::follower`]) owns them.
//! - `R` `space` → the last [`SpaceReport`] from the server (JSON), what
//!   `statfs` shows, also while offline (see `vfs::capacity`).
//! - `b` ino → the node's sync base, the server state this device last
//!   adopted (JSON [`crate::protocol::SeenState`]; removed with the
//!   inode), and `a` node id → node id, local aliases of re-keyed nodes
//!   (see `base`)
//!
//! Counters and journal records are written in [`Txn::commit`] under the
//! journal index's lock, so two transactions committing at once can never
//! persist a smaller counter after a larger one.
//!
//! Every write goes through a [`Txn`], and a `Txn` (like an inode number
//! from [`MetaCache::alloc_ino`]) can only be had with the namespace lock's
//! guard, [`NsGuard`], in hand ([`MetaCache::lock_ns`]): a change is decided
//! from reads made under the same lock that commits it, so two namespace
//! operations never interleave. The compiler checks it: a function that
//! writes either takes the lock or takes the guard as a parameter.

use super::error::{VfsError, VfsResult};
use super::journal::{Intent, Journal};
pub use super::journal::{JournalOp, Quarantined};
use super::kv::{Kv, KvWrite};
use crate::protocol::{
    ContentHash, DeviceId, FileContent, Link, NodeId, NodeKind, NodeRecord, SpaceReport, Timestamp,
    VersionVector,
};
use parking_lot::{Mutex, MutexGuard};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod base;
mod conflicts;
pub mod format;
mod xattrs;

pub const ROOT_INO: u64 = 1;
/// The counter holding the change-log cursor this device has applied up to
/// (the change follower saves it; tombstones wait for it).
pub const CURSOR_KEY: &str = "cursor";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Inode {
    pub ino: u64,
    pub node_id: NodeId,
    /// Parent folder's ino (0 for the root) and this node's name in it.
    pub parent: u64,
    pub name: String,
    pub kind: NodeKind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner; `None` is the account's own user, shown as the mounting
    /// user on every device (see [`Inode::ids_from`]).
    pub uid: Option<u32>,
    /// Group; `None` is the mounting user's group.
    pub gid: Option<u32>,
    /// The device that set `uid`/`gid` to numeric ids (`None`: this
    /// device). Numeric ids are shown as they are only on that device or
    /// with `--keep-ids`; elsewhere they map to the mounting user.
    pub ids_from: Option<DeviceId>,
    /// Device number of a character or block device node.
    pub rdev: u32,
    pub size: u64,
    /// Last access (relatime rules, `Vfs::note_access`).
    pub atime: Timestamp,
    /// Last content change (or as set by `utimensat`).
    pub mtime: Timestamp,
    /// Last change of the inode itself (metadata or content).
    pub ctime: Timestamp,
    /// Creation (birth) time.
    pub btime: Timestamp,
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
    /// Every entry is gone but open handles may still use the inode.
    pub unlinked: bool,
    /// The node's other entries (hard links), as (folder ino, name), in the
    /// order they were made; never for a folder. `parent`/`name` is the
    /// first entry (paths and the server's trash use it); unlinking it
    /// promotes the next one.
    pub links: Vec<(u64, String)>,
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
        let now = Timestamp::now();
        Inode {
            ino,
            node_id,
            parent,
            name: name.to_string(),
            kind,
            mode: mode & 0o7777,
            uid: None,
            gid: None,
            ids_from: None,
            rdev: 0,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            btime: now,
            content_hash: None,
            symlink_target: None,
            vv: VersionVector::default(),
            server_seq: 0,
            dirty: false,
            local_rev: 0,
            synced_rev: 0,
            unlinked: false,
            links: Vec::new(),
        }
    }
    /// Every live entry, the first one first (none once unlinked).
    pub fn entries(&self) -> Vec<(u64, String)> {
        if self.unlinked {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(1 + self.links.len());
        out.push((self.parent, self.name.clone()));
        out.extend(self.links.iter().cloned());
        out
    }
    /// How many directory entries a non-folder has (0 once unlinked).
    pub fn entry_count(&self) -> u32 {
        if self.unlinked {
            0
        } else {
            1 + self.links.len() as u32
        }
    }
    /// Drops entry (`parent`, `name`): a link, or the first entry, whose
    /// place the oldest link then takes. False when it was the last entry
    /// (the caller unlinks the node) or not an entry of this node.
    pub fn drop_entry(&mut self, parent: u64, name: &str) -> bool {
        if let Some(i) = self
            .links
            .iter()
            .position(|(p, n)| *p == parent && n == name)
        {
            self.links.remove(i);
            return true;
        }
        if self.parent == parent && self.name == name && !self.links.is_empty() {
            let (p, n) = self.links.remove(0);
            self.parent = p;
            self.name = n;
            return true;
        }
        false
    }
    /// Moves entry (`parent`, `name`) to (`new_parent`, `new_name`),
    /// keeping its rank (first entry or link).
    pub fn move_entry(&mut self, parent: u64, name: &str, new_parent: u64, new_name: &str) {
        if self.parent == parent && self.name == name {
            self.parent = new_parent;
            self.name = new_name.to_string();
        } else if let Some(l) = self
            .links
            .iter_mut()
            .find(|(p, n)| *p == parent && n == name)
        {
            *l = (new_parent, new_name.to_string());
        }
    }
    pub fn has_local_changes(&self) -> bool {
        self.local_rev != self.synced_rev || self.dirty
    }
    pub fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }
    /// The server has (or had) this node: a commit of it was answered.
    pub fn on_server(&self) -> bool {
        self.server_seq > 0 || !self.vv.is_empty()
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dentry {
    pub ino: u64,
    pub kind: NodeKind,
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
    journal: Journal,
    /// The namespace lock (see the module docs).
    ns: Mutex<()>,
}

/// Proof that the namespace lock of a [`MetaCache`] is held (from
/// [`MetaCache::lock_ns`]); unlocks when dropped. Writes and inode
/// allocation take it as a parameter.
pub struct NsGuard<'a> {
    owner: *const MetaCache,
    _guard: MutexGuard<'a, ()>,
}

impl MetaCache {
    /// Opens the store in `kv`, upgrading an older format first
    /// ([`format`]); refuses a newer one.
    pub fn open(kv: Arc<dyn Kv>) -> VfsResult<Self> {
        format::upgrade(kv.as_ref())?;
        let get_counter = |name: &str| -> VfsResult<u64> {
            Ok(match kv.get(&key(b'm', name.as_bytes()))? {
                Some(b) => dec(&b)?,
                None => 0,
            })
        };
        let next_ino = get_counter("next_ino")?.max(ROOT_INO + 1);
        let place_of = |ino: u64| -> Option<(NodeId, String)> {
            let get = |i: u64| -> Option<Inode> {
                kv.get(&ino_key(b'i', i))
                    .ok()
                    .flatten()
                    .and_then(|b| dec(&b).ok())
            };
            let inode = get(ino)?;
            let parent = match inode.parent {
                0 | ROOT_INO => NodeId::ROOT,
                p => get(p)?.node_id,
            };
            Some((parent, inode.name))
        };
        let journal = Journal::open(kv.as_ref(), place_of)?;
        Ok(MetaCache {
            kv,
            next_ino: AtomicU64::new(next_ino),
            journal,
            ns: Mutex::new(()),
        })
    }

    /// The journal's index (records, holds, quarantine).
    pub fn journal(&self) -> &Journal {
        &self.journal
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
    /// How many entries of folder `ino` are folders (maintained by every
    /// [`Txn`] that writes entries; see the `s` keys in the module docs).
    pub fn subdir_count(&self, ino: u64) -> VfsResult<u64> {
        Ok(match self.kv.get(&ino_key(b's', ino))? {
            Some(b) => dec(&b)?,
            None => 0,
        })
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
    /// Takes the namespace lock (first in the core's lock order; see
    /// `vfs` module docs).
    pub fn lock_ns(&self) -> NsGuard<'_> {
        NsGuard {
            owner: self,
            _guard: self.ns.lock(),
        }
    }
    /// A new inode number (persisted by the `Txn` that creates the inode).
    pub fn alloc_ino(&self, ns: &NsGuard<'_>) -> u64 {
        self.check_guard(ns);
        self.next_ino.fetch_add(1, Ordering::SeqCst)
    }
    fn check_guard(&self, ns: &NsGuard<'_>) {
        debug_assert!(
            std::ptr::eq(ns.owner, self),
            "namespace guard of another metadata store"
        );
    }
    /// Number of journal records not yet acknowledged by the server.
    pub fn journal_len(&self) -> u64 {
        self.journal.len()
    }
    /// The node id of folder `ino` as the server knows it (the root's is
    /// [`NodeId::ROOT`]).
    pub fn node_id_of(&self, ino: u64) -> VfsResult<NodeId> {
        Ok(match ino {
            0 | ROOT_INO => NodeId::ROOT,
            i => self.inode_required(i)?.node_id,
        })
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

    /// The last space report saved by [`Txn::put_space_report`]; `None`
    /// before the first.
    pub fn space_report(&self) -> VfsResult<Option<SpaceReport>> {
        match self.kv.get(&key(b'R', b"space"))? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                VfsError::Store(crate::vfs::Cause::from_error("corrupt space report", e))
            }),
        }
    }
    /// Pulled records waiting to be applied (the `W` keyspace), in node id
    /// order.
    pub fn waiting_records(&self) -> VfsResult<Vec<NodeRecord>> {
        let mut out = Vec::new();
        let mut start = vec![b'W'];
        loop {
            let page = self.kv.scan(b"W", &start, 4096)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (_, v) in &page {
                out.push(format::waiting_record(v)?);
            }
        }
        Ok(out)
    }

    /// A transaction; `ns` must stay held until it is committed.
    pub fn txn<'a>(&'a self, ns: &'a NsGuard<'_>) -> Txn<'a> {
        self.check_guard(ns);
        Txn {
            meta: self,
            writes: Vec::new(),
            intents: Vec::new(),
            created_inode: false,
            entries: Vec::new(),
            removed: Vec::new(),
        }
    }
    pub fn flush(&self) -> VfsResult<()> {
        self.kv.flush()
    }
}

/// The subfolder counts (`s` keys) after a batch's entry changes
/// `entries` (in order: folder, name, now a folder or `None` for removed),
/// each compared with what the entry was before it (earlier in the batch,
/// else in the store); folders in `removed` are left out. Read under the
/// namespace lock the batch holds, so counts never race.
fn subdir_writes(
    meta: &MetaCache,
    entries: &[(u64, String, Option<bool>)],
    removed: &[u64],
) -> VfsResult<Vec<KvWrite>> {
    let mut seen: HashMap<(u64, &str), Option<bool>> = HashMap::new();
    let mut delta: HashMap<u64, i64> = HashMap::new();
    for (parent, name, now) in entries {
        let before = match seen.get(&(*parent, name.as_str())) {
            Some(was) => *was,
            None => meta.dentry(*parent, name)?.map(|d| d.kind == NodeKind::Dir),
        };
        *delta.entry(*parent).or_insert(0) +=
            i64::from(*now == Some(true)) - i64::from(before == Some(true));
        seen.insert((*parent, name.as_str()), *now);
    }
    let mut writes = Vec::new();
    for (folder, d) in delta {
        if d == 0 || removed.contains(&folder) {
            continue;
        }
        let count = (meta.subdir_count(folder)? as i64 + d).max(0) as u64;
        writes.push((ino_key(b's', folder), (count > 0).then(|| enc(&count))));
    }
    Ok(writes)
}

/// Writes collected for one atomic batch.
pub struct Txn<'a> {
    meta: &'a MetaCache,
    writes: Vec<KvWrite>,
    intents: Vec<Intent>,
    created_inode: bool,
    /// Entries this batch writes, in order: folder, name, and whether it
    /// is now a folder (`None`: removed); see [`Txn::subdir_writes`].
    entries: Vec<(u64, String, Option<bool>)>,
    /// Folders this batch removes (their counts go with them).
    removed: Vec<u64>,
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
        self.created_inode = true;
        self
    }
    pub fn remove_inode(&mut self, inode: &Inode) -> &mut Self {
        self.writes.push((ino_key(b'i', inode.ino), None));
        self.writes.push((ino_key(b's', inode.ino), None));
        self.removed.push(inode.ino);
        self.writes.push((ino_key(b'c', inode.ino), None));
        self.writes.push((ino_key(b'b', inode.ino), None));
        self.writes.push((ino_key(b'k', inode.ino), None));
        self.writes
            .push((key(b'n', inode.node_id.as_bytes()), None));
        self
    }
    pub fn put_content(&mut self, ino: u64, content: Option<&FileContent>) -> &mut Self {
        self.writes.push((ino_key(b'c', ino), content.map(enc)));
        self
    }
    /// Writes entry `name` of folder `parent` (replacing any); the
    /// folder's subfolder count follows at commit.
    pub fn put_dentry(&mut self, parent: u64, name: &str, d: Dentry) -> &mut Self {
        self.entries
            .push((parent, name.to_string(), Some(d.kind == NodeKind::Dir)));
        self.writes.push((dentry_key(parent, name), Some(enc(&d))));
        self
    }
    /// Removes entry `name` of folder `parent`; the folder's subfolder
    /// count follows at commit.
    pub fn remove_dentry(&mut self, parent: u64, name: &str) -> &mut Self {
        self.entries.push((parent, name.to_string(), None));
        self.writes.push((dentry_key(parent, name), None));
        self
    }
    /// Journals a push of `inode` at its current place. `moved`: the
    /// change gives it that place (create, rename); `false` for attribute
    /// and content changes; a link or unlink of one of several entries
    /// is a move too (the record carries every entry). See
    /// [`super::journal`] for how records merge.
    pub fn journal_upsert(&mut self, inode: &Inode, moved: bool) -> VfsResult<&mut Self> {
        let parent = self.meta.node_id_of(inode.parent)?;
        let mut links = Vec::with_capacity(inode.links.len());
        for (p, name) in &inode.links {
            links.push(Link {
                parent: self.meta.node_id_of(*p)?,
                name: name.clone(),
            });
        }
        self.intents.push(Intent::Record {
            op: JournalOp::Upsert {
                ino: inode.ino,
                parent,
                name: inode.name.clone(),
                links,
                moved,
            },
            on_server: inode.on_server(),
            is_dir: inode.is_dir(),
        });
        Ok(self)
    }
    /// Drops `inode`'s quarantined records without journaling anything
    /// (its refused change was superseded by a remote one).
    pub fn settle(&mut self, inode: &Inode) -> &mut Self {
        self.intents.push(Intent::Settle { ino: inode.ino });
        self
    }
    /// Journals the removal of `inode` from folder `parent` (an ino).
    pub fn journal_delete(&mut self, inode: &Inode, parent: u64, name: &str) -> &mut Self {
        self.intents.push(Intent::Record {
            op: JournalOp::Delete {
                ino: inode.ino,
                node_id: inode.node_id,
                base: inode.vv.clone(),
                parent,
                name: name.to_string(),
            },
            on_server: inode.on_server(),
            is_dir: inode.is_dir(),
        });
        self
    }
    /// Keeps a pulled record until it can be applied (replaces an older
    /// waiting record of the same node).
    pub fn put_waiting(&mut self, rec: &NodeRecord) -> &mut Self {
        let value = serde_json::to_vec(rec).expect("JSON encoding of a record cannot fail");
        self.writes
            .push((key(b'W', rec.node_id.as_bytes()), Some(value)));
        self
    }
    pub fn put_space_report(&mut self, report: &SpaceReport) -> &mut Self {
        let value = serde_json::to_vec(report).expect("JSON encoding of a report cannot fail");
        self.writes.push((key(b'R', b"space"), Some(value)));
        self
    }
    pub fn remove_waiting(&mut self, node: &NodeId) -> &mut Self {
        self.writes.push((key(b'W', node.as_bytes()), None));
        self
    }
    pub fn set_counter(&mut self, name: &str, value: u64) -> &mut Self {
        self.writes
            .push((key(b'm', name.as_bytes()), Some(enc(&value))));
        self
    }
    /// Applies every write and journal change atomically. Journal intents
    /// are resolved against the index under its lock, with the counters
    /// written as of that moment (so they never go backwards).
    pub fn commit(self) -> VfsResult<()> {
        if self.writes.is_empty() && self.intents.is_empty() {
            return Ok(());
        }
        let kv = self.meta.kv.as_ref();
        let mut writes = self.writes;
        writes.extend(subdir_writes(self.meta, &self.entries, &self.removed)?);
        writes.extend(xattrs::removals(self.meta, &self.removed)?);
        let mut idx = self.meta.journal.lock();
        let mut undo = Vec::new();
        for intent in self.intents {
            if let Err(e) = idx.resolve(kv, intent, &mut writes, &mut undo) {
                idx.undo(undo);
                return Err(e);
            }
        }
        if self.created_inode {
            let next = self.meta.next_ino.load(Ordering::SeqCst);
            writes.push((key(b'm', b"next_ino"), Some(enc(&next))));
        }
        if let Err(e) = kv.apply(writes) {
            idx.undo(undo);
            return Err(e);
        }
        Ok(())
    }
}
