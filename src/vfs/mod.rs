//! The platform-neutral filesystem core.
//!
//! Every front end (the fuse adapter, the WinFsp shim, tests) calls these
//! methods with inode numbers and names; nothing here knows about the
//! kernel. Metadata questions (lookup, getattr, readdir) are answered from
//! the local metadata cache ([`meta::MetaCache`], sled behind [`kv::Kv`])
//! and never touch the network. Content comes from the working copy of a
//! file with local changes, else from the chunk cache, which fetches what
//! is missing from the server.
//!
//! # Writes and the journal
//! A file's first modification creates its working copy `work/<node id>`
//! (empty on truncate-to-zero, otherwise filled from its chunks). Writes go
//! to that file. `fsync`, `flush` (close) and `release` make the working
//! copy durable (fdatasync) and then commit, in one atomic metadata batch,
//! the new size and mtime together with a [`meta::JournalOp::Upsert`] record;
//! the batch is flushed before the call returns. Namespace changes (create,
//! mkdir, rename, unlink, symlink, setattr) commit their metadata and
//! journal entry atomically too; sled writes them out within 200 ms, and
//! `fsync`/`fsyncdir` force it. The uploader ([`crate::sync`]) drains the
//! journal in order.
//!
//! # Parts
//! Operations that may wait on the network (`read`, `write`, `setattr`)
//! answer with an [`Answer`]: ready now, or a future to spawn (`api`). A
//! front end replies at once or spawns; it holds no filesystem state
//! (directory handles live here too, `dir_handles`). One `impl Vfs` per
//! concern, each in its own file:
//! - `inodes`: attributes, lookups and lookup counts,
//!   listings, paths, pending summaries, tombstones and purge;
//! - `namespace`: create, mkdir, symlink, unlink, rmdir,
//!   rename, setattr;
//! - `open_files`: open state, handles, open, release;
//! - `working_copy`: working copies, write, flush,
//!   fsync;
//! - `read`: the read path and read-ahead;
//! - `reconcile` and `rebase`: remote
//!   records and commit outcomes;
//! - [`journal`]: the journal's records, index and quarantine; [`meta`]:
//!   the metadata store's typed access and transactions.
//!
//! # Lock order
//! `ns` (namespace mutations) → `open` (map of open inodes) →
//! `OpenInode::state` or `lookups`; the journal index's lock is innermost
//! (taken by `Txn::commit` and the journal's queries). `handles`,
//! `fsync_waiters`, `notifier` and `sync_state` are never held together
//! with another lock. No lock is held across an `.await`; materialising a
//! working copy takes the per-inode async `fill` lock alone.

pub mod chunk_cache;
mod chunk_slice;
pub mod error;
pub mod journal;
pub mod kv;
pub mod meta;
mod pio;
mod rebase;
pub mod xattr;

mod api;
mod dir_handles;
pub use api::Answer;

mod status;
pub use status::{Connection, SyncState};

mod inodes;
mod namespace;
mod open_files;
mod read;
mod reconcile;
mod working_copy;

use crate::protocol::{
    validate_name_bytes, ChunkId, DeviceId, FileContent, Manifest, NodeId, NodeKind, NodeRecord,
};
use chunk_cache::ChunkCache;
pub use error::{Cause, VfsError, VfsResult};
use meta::{Dentry, Inode, JournalOp, MetaCache, Quarantined, ROOT_INO};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a front end needs to answer stat-like calls.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub ino: u64,
    pub kind: NodeKind,
    pub mode: u32,
    pub size: u64,
    /// Bytes stored locally (for `st_blocks`).
    pub local_bytes: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub nlink: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: NodeKind,
}

/// Lets the core tell the kernel that cached names or attributes/pages are
/// stale after a remote change. The fuse adapter implements it.
pub trait KernelNotifier: Send + Sync {
    fn inval_entry(&self, parent: u64, name: &str);
    fn inval_inode(&self, ino: u64);
}

/// What the uploader sent for a node, to reconcile the server's answer.
#[derive(Clone, Debug)]
pub struct SentState {
    /// `local_rev` when the op was planned.
    pub rev: u64,
    /// The name the op carried.
    pub name: String,
    /// The op carried new content.
    pub content: bool,
    /// The server kept its own version (concurrent edit).
    pub conflict: bool,
}

/// What is not on the server yet at or below a node
/// (`user.nimbus.pending`, what `nimbus sync --wait` polls).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingSummary {
    /// Nodes with changes to upload or refused by the server.
    pub count: u64,
    /// Bytes of new content among them.
    pub bytes: u64,
    /// Of `count`, nodes whose only changes the server refused (they need
    /// the user: `nimbus status` says why).
    pub failed: u64,
    /// Paths relative to the mount root, at most the number asked for.
    pub paths: Vec<String>,
}

/// Setattr request, platform-neutral.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

pub struct VfsConfig {
    pub cache_dir: PathBuf,
    pub device_id: DeviceId,
    pub device_name: String,
    pub read_only: bool,
    pub uid: u32,
    pub gid: u32,
    /// `fsync` waits until the server has the file (`--fsync remote`).
    pub fsync_remote: bool,
}

/// An open inode's state. Its content has **generations**: a remote
/// change of the content starts a new one; local writes stay in the
/// current one. A handle reads the generation it was opened in until it is
/// closed (close-to-open consistency, as NFS: no torn reads, and a reader
/// never goes back to an older version), while new opens read the newest.
struct OpenState {
    /// References: file handles and internal users (truncate, fill).
    handles: u32,
    writers: u32,
    /// The working copy of the current generation, open read-write, once
    /// the inode has one.
    work: Option<Arc<std::fs::File>>,
    /// Size and mtime not yet recorded in the metadata cache.
    unsaved: Option<(u64, i64)>,
    /// The current content generation.
    generation: u64,
    /// Working copies of earlier generations still read by their handles
    /// (unlinked from `work/`, kept open).
    retired: HashMap<u64, Arc<std::fs::File>>,
    /// Open file handles per generation.
    open_by_generation: BTreeMap<u64, u32>,
}

impl OpenState {
    /// True while a handle of an earlier generation is open.
    fn older_handles_open(&self) -> bool {
        self.open_by_generation
            .keys()
            .next()
            .is_some_and(|g| *g < self.generation)
    }
}

/// How the kernel's page cache may serve a new open of a file
/// ([`Vfs::page_cache`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageCache {
    /// Pages cached for the file are current: keep them.
    Keep,
    /// Pages may be of an older version: drop them at open.
    Drop,
    /// A reader of an older version is still open and shares the inode's
    /// pages: this handle bypasses the page cache (direct I/O).
    Bypass,
}

struct OpenInode {
    state: Mutex<OpenState>,
    /// Serialises creating the working copy (may wait on the network).
    fill: tokio::sync::Mutex<()>,
}

struct Handle {
    ino: u64,
    write: bool,
    /// The content generation it was opened in (see [`OpenState`]).
    generation: u64,
    /// The manifest the handle reads when its generation has no working
    /// copy.
    content: Option<Arc<ContentView>>,
    /// End of the previous read, to detect sequential access.
    last_end: AtomicU64,
}

struct ContentView {
    manifest: Manifest,
    offsets: Vec<u64>,
}

pub struct Vfs {
    /// This core itself, for the futures of operations that wait
    /// (`Answer::Pending` must own what it uses).
    me: std::sync::Weak<Vfs>,
    pub meta: MetaCache,
    pub chunks: Arc<ChunkCache>,
    work_dir: PathBuf,
    pub device_id: DeviceId,
    pub device_name: String,
    read_only: bool,
    fsync_remote: bool,
    uid: u32,
    gid: u32,
    ns: Mutex<()>,
    open: Mutex<HashMap<u64, Arc<OpenInode>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    lookups: Mutex<HashMap<u64, u64>>,
    /// Bytes of new content uploaded per file in the round in flight.
    upload_progress: Mutex<HashMap<u64, u64>>,
    /// Tombstones that wait only for the change-log cursor to pass their
    /// last server state, by that sequence number.
    tombstones_waiting: Mutex<BTreeMap<u64, Vec<u64>>>,
    /// Inodes whose cached pages may be of an older version (a remote
    /// change arrived while a handle was open): the next open drops them.
    stale_pages: Mutex<HashSet<u64>>,
    /// Inodes an `fsync` (with `--fsync remote`) is waiting on: the
    /// uploader pushes them even while open for writing.
    fsync_waiters: Mutex<HashMap<u64, u32>>,
    notifier: Mutex<Option<Arc<dyn KernelNotifier>>>,
    /// Wakes the uploader when the journal grows.
    pub journal_notify: tokio::sync::Notify,
    /// Wakes waiters when the journal shrinks.
    pub drained_notify: tokio::sync::Notify,
    sync_state: Mutex<SyncState>,
    /// Open directory handles: the listing snapshot each reads.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
}

/// How many chunks (about 1 MiB each) sequential reads load ahead.
const READ_AHEAD_CHUNKS: usize = 4;

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn check_name(name: &[u8]) -> VfsResult<&str> {
    Ok(validate_name_bytes(name)?)
}

impl Vfs {
    pub fn open(
        cfg: VfsConfig,
        kv: Arc<dyn kv::Kv>,
        chunks: Arc<ChunkCache>,
    ) -> VfsResult<Arc<Self>> {
        let work_dir = cfg.cache_dir.join("work");
        std::fs::create_dir_all(&work_dir)?;
        let meta = MetaCache::open(kv)?;
        let vfs = Arc::new_cyclic(|me| Vfs {
            me: me.clone(),
            meta,
            chunks,
            work_dir,
            device_id: cfg.device_id,
            device_name: cfg.device_name,
            read_only: cfg.read_only,
            fsync_remote: cfg.fsync_remote,
            uid: cfg.uid,
            gid: cfg.gid,
            ns: Mutex::new(()),
            open: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            lookups: Mutex::new(HashMap::new()),
            stale_pages: Mutex::new(HashSet::new()),
            tombstones_waiting: Mutex::new(BTreeMap::new()),
            upload_progress: Mutex::new(HashMap::new()),
            fsync_waiters: Mutex::new(HashMap::new()),
            notifier: Mutex::new(None),
            journal_notify: tokio::sync::Notify::new(),
            drained_notify: tokio::sync::Notify::new(),
            sync_state: Mutex::new(SyncState::default()),
            dirs: Mutex::new(HashMap::new()),
        });
        vfs.recover()?;
        Ok(vfs)
    }

    /// Startup: make sure the root exists, drop inodes that were unlinked
    /// while open before a crash, and delete working copies that no journal
    /// entry refers to (writes never made durable by fsync/close).
    fn recover(&self) -> VfsResult<()> {
        if self.meta.inode(ROOT_INO)?.is_none() {
            let root = Inode::new(ROOT_INO, NodeId::ROOT, 0, "", NodeKind::Dir, 0o755);
            let mut t = self.meta.txn();
            t.create_inode(&root);
            t.commit()?;
        }
        let mut keep = std::collections::HashSet::new();
        let mut t = self.meta.txn();
        for inode in self.meta.all_inodes()? {
            if inode.unlinked {
                if !self.keeps_tombstone(&inode)? {
                    t.remove_inode(&inode);
                } else {
                    self.tombstones_waiting
                        .lock()
                        .entry(inode.server_seq)
                        .or_default()
                        .push(inode.ino);
                }
                continue;
            }
            if inode.dirty {
                if self.work_path(&inode.node_id).exists() {
                    keep.insert(inode.node_id.to_string());
                } else {
                    self.recover_lost_work(&mut t, inode)?;
                }
            }
        }
        t.commit()?;
        for f in std::fs::read_dir(&self.work_dir)? {
            let f = f?;
            if !keep.contains(f.file_name().to_string_lossy().as_ref()) {
                let _ = std::fs::remove_file(f.path());
            }
        }
        self.meta.flush()
    }

    /// A dirty inode whose working copy is gone (it should never happen:
    /// copies are removed only once the inode's clean or unlinked state is
    /// durable) falls back to the last content the server has, and says so
    /// in the quarantine (`nimbus status`), instead of failing every open
    /// and holding every upload behind it.
    fn recover_lost_work(&self, t: &mut meta::Txn<'_>, mut inode: Inode) -> VfsResult<()> {
        let path = self.path_of(inode.ino).unwrap_or_default();
        tracing::error!(path = %path, "the working copy of unsent changes is missing; keeping the last uploaded version");
        inode.dirty = false;
        inode.size = self.meta.content(inode.ino)?.map_or(0, |c| c.size());
        t.put_inode(&inode);
        self.meta.journal().report(
            self.meta.kv().as_ref(),
            Quarantined {
                op: JournalOp::Upsert {
                    ino: inode.ino,
                    parent: self.meta.node_id_of(inode.parent)?,
                    name: inode.name.clone(),
                    moved: false,
                },
                path,
                reason: "the local copy of its unsent changes was lost (a crash?); \
                         the last uploaded version is kept"
                    .into(),
                at_unix: now_ns() / 1_000_000_000,
                blocked_by: None,
            },
        )
    }

    pub fn set_notifier(&self, n: Arc<dyn KernelNotifier>) {
        *self.notifier.lock() = Some(n);
    }

    fn notify_entry(&self, parent: u64, name: &str) {
        let n = self.notifier.lock().clone();
        if let Some(n) = n {
            n.inval_entry(parent, name);
        }
    }

    fn notify_inode(&self, ino: u64) {
        let n = self.notifier.lock().clone();
        if let Some(n) = n {
            n.inval_inode(ino);
        }
    }

    fn work_path(&self, node: &NodeId) -> PathBuf {
        self.work_dir.join(node.to_string())
    }

    pub fn work_path_of(&self, inode: &Inode) -> PathBuf {
        self.work_path(&inode.node_id)
    }

    fn writable(&self) -> VfsResult<()> {
        if self.read_only {
            Err(VfsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn open_inode(&self, ino: u64) -> Option<Arc<OpenInode>> {
        self.open.lock().get(&ino).cloned()
    }
}

#[cfg(test)]
mod coherence_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod failure_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod order_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
