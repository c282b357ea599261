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
//! to that file. `flush` (close) and `release` commit, in one atomic
//! metadata batch, the new size and mtime together with a
//! [`meta::JournalOp::Upsert`] record; namespace changes (create, mkdir,
//! rename, link, unlink, symlink, setattr) commit their metadata and
//! journal entry atomically too. The store is the write-ahead log
//! ([`wal::WalKv`]) over sled: a batch is in the log file when the call
//! returns (it survives a process crash), and `fsync`/`fsyncdir`, the
//! background writeback and every upload round make it durable with a
//! group commit that first syncs the working copies it refers to. The
//! uploader ([`crate::sync`]) drains the journal in order.

//! # Parts
//! Each part owns its state behind its own private lock(s), which none of
//! its methods holds when it returns; the operations (`impl Vfs` blocks,
//! one file per concern) combine them:
//! - [`meta::MetaCache`] (`meta`): the persistent metadata (inodes,
//!   entries, manifests, counters) and the **namespace lock**;
//!   [`journal::Journal`] inside it: records, per-node index, quarantine;
//! - `InodeTable` (`inodes`): lookup counts, forget, tombstones waiting
//!   for the cursor; with attributes, listings, paths, pending summaries
//!   and purge;
//! - `OpenFiles` (`open_files`): open inodes (handles, writers, content
//!   generations, working copy in use), file handles, stale pages, `fsync`
//!   waiters; with open and release;
//! - `DirHandles` (`dir_handles`): directory listing snapshots;
//! - [`SyncStatus`] (`status`): connection, last sync, conflicts, upload
//!   progress;
//! - `namespace`: create, mkdir, symlink, link (hard links), unlink, rmdir,
//!   rename, setattr;
//!   `special`: mknod (FIFOs, sockets, device nodes: metadata only);
//!   `working_copy`: working copies, write, flush, fsync; `space`:
//!   fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range; `read`: the read
//!   path and read-ahead; `batch_read`: cold small files of a folder in
//!   one request; `reconcile` and `rebase`: remote records and
//!   commit outcomes; `answer`: a commit's answer adopted field by field;
//!   `rekey`: a node that takes another node id (merged with an equal
//!   node); `conflicts`: conflict copies (their marks, listing and
//!   clearing); `sync_api`: what the sync workers ask (they never
//!   touch the parts themselves); `api`: the one async entry point.
//!
//! Operations that may wait on the network (`read`, `write`, `setattr`)
//! answer with an [`Answer`]: ready now, or a future to spawn. A front end
//! replies at once or spawns; it holds no filesystem state.
//!
//! # Lock order
//! 1. The namespace lock ([`meta::MetaCache::lock_ns`]). Every metadata
//!    write ([`meta::Txn`]) and inode allocation takes its guard,
//!    [`meta::NsGuard`], as a parameter, and helpers that write while it is
//!    held take the guard too: the compiler rejects a write without it.
//!    The guard is `!Send`, so no future that a runtime may move holds it
//!    across an `.await`.
//! 2. A part's own locks: `OpenFiles`' tables, `InodeTable`, `DirHandles`,
//!    `SyncStatus`. They are private to their type and released before its
//!    methods return, so they never nest with one another.
//! 3. An open inode's `state` (taken alone or under the namespace guard;
//!    `OpenFiles` alone takes it under its table).
//! 4. The journal index (innermost: `Txn::commit` and the journal's
//!    queries).
//!
//! The per-inode async `fill` lock (materialising a working copy, which
//! may wait on the network) is held with none of the above.

pub mod batch_read;
pub mod chunk_cache;
mod chunk_slice;
pub mod error;
pub mod journal;
pub mod kv;
pub mod meta;
mod pio;
mod rebase;
pub mod wal;
pub mod xattr;

mod answer;
mod api;
mod conflicts;
mod dir_handles;
pub use api::Answer;
pub use conflicts::{ConflictCopy, ConflictList};

mod status;
mod sync_api;
pub use status::{Connection, PushStatus, SyncState, SyncStatus};

mod inodes;
mod namespace;
mod notify_queue;
mod open_files;
use dir_handles::DirHandles;
use inodes::InodeTable;
pub use open_files::PageCache;
use open_files::{ContentView, Handle, OpenFiles, OpenInode};
pub mod capacity;
mod read;
mod reconcile;
mod rekey;
pub mod space;
pub mod special;
mod working_copy;

use crate::protocol::{
    validate_name_bytes, ChunkId, DeviceId, FileContent, Manifest, NodeId, NodeKind, NodeRecord,
    Timestamp,
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
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner and group as this device shows them.
    pub uid: u32,
    pub gid: u32,
    /// Device number (device nodes only).
    pub rdev: u32,
    pub size: u64,
    /// What `st_blocks` counts, in bytes: a file's whole size, cached on
    /// this device or not (fewer would read as holes to `tar --sparse`);
    /// 4096 for a folder; 0 for other kinds.
    pub allocated_bytes: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// Birth time.
    pub btime: Timestamp,
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
    /// Only the attributes of `ino` are stale (its pages are not): an
    /// access time moved. Defaults to [`KernelNotifier::inval_inode`].
    fn inval_attr(&self, ino: u64) {
        self.inval_inode(ino);
    }
}

/// What the uploader sent for a node, to reconcile the server's answer.
#[derive(Clone, Debug)]
pub struct SentState {
    /// The node id the op named (the inode's when it was planned).
    pub node_id: NodeId,
    /// `local_rev` when the op was planned.
    pub rev: u64,
    /// The entries the op carried, as (folder, name): its first entry
    /// first, then its links.
    pub entries: Vec<(NodeId, String)>,
    /// The op carried new content.
    pub content: bool,
    /// The server kept its own version (concurrent edit).
    pub conflict: bool,
    /// The state the op sent (place, attributes, content hash, extended
    /// attributes, conflict mark). The answer's value of a field is taken
    /// only where the node still has the value sent (see `vfs::answer`);
    /// content has its own rules ([`SentState::content`]).
    pub state: crate::protocol::SeenState,
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

/// Who asks for an operation: the calling process's (filesystem) user and
/// group ids, which own what it creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// The setgid bit of a mode.
const SETGID: u32 = 0o2000;

/// Setattr request, platform-neutral.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
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
    /// Show numeric owner and group ids set on other devices as they are
    /// (`--keep-ids`), instead of as the mounting user.
    pub keep_ids: bool,
}

pub struct Vfs {
    /// This core itself, for the futures of operations that wait
    /// (`Answer::Pending` must own what it uses).
    me: std::sync::Weak<Vfs>,
    /// The metadata store; it holds the namespace lock and the journal.
    meta: MetaCache,
    chunks: Arc<ChunkCache>,
    work_dir: PathBuf,
    pub device_id: DeviceId,
    pub device_name: String,
    read_only: bool,
    fsync_remote: bool,
    keep_ids: bool,
    uid: u32,
    gid: u32,
    inodes: InodeTable,
    open: OpenFiles,
    dirs: DirHandles,
    status: SyncStatus,
    /// The kernel's notifier, behind a queue of its own thread
    /// (`notify_queue`: a notification can wait on the mount's pending
    /// requests, so no thread of the core ever sends one itself).
    notifier: std::sync::OnceLock<notify_queue::NotifyQueue>,
    /// Wakes the uploader when the journal grows.
    journal_notify: tokio::sync::Notify,
    /// Wakes waiters when an upload round ends.
    drained_notify: tokio::sync::Notify,
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
            keep_ids: cfg.keep_ids,
            uid: cfg.uid,
            gid: cfg.gid,
            inodes: InodeTable::new(),
            open: OpenFiles::new(),
            dirs: DirHandles::new(),
            status: SyncStatus::default(),
            notifier: std::sync::OnceLock::new(),
            journal_notify: tokio::sync::Notify::new(),
            drained_notify: tokio::sync::Notify::new(),
        });
        vfs.recover()?;
        Ok(vfs)
    }

    /// Startup: make sure the root exists, drop inodes that were unlinked
    /// while open before a crash, and delete working copies that no journal
    /// entry refers to (writes never made durable by fsync/close).
    fn recover(&self) -> VfsResult<()> {
        let ns = self.meta.lock_ns();
        if self.meta.inode(ROOT_INO)?.is_none() {
            let root = Inode::new(ROOT_INO, NodeId::ROOT, 0, "", NodeKind::Dir, 0o755);
            let mut t = self.meta.txn(&ns);
            t.create_inode(&root);
            t.commit()?;
        }
        let mut keep = std::collections::HashSet::new();
        let mut t = self.meta.txn(&ns);
        for inode in self.meta.all_inodes()? {
            if inode.unlinked {
                if !self.keeps_tombstone(&inode)? {
                    t.remove_inode(&inode);
                } else {
                    self.inodes.wait_for_cursor(inode.server_seq, inode.ino);
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
        drop(ns);
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
                    links: Vec::new(),
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

    /// Sets who is told about stale kernel caches; once per core (later
    /// calls are ignored). `n` is called from a thread of its own, in
    /// order, never from the caller of the change it reports
    /// (`notify_queue`); fails only when that thread cannot start.
    pub fn set_notifier(&self, n: Arc<dyn KernelNotifier>) -> std::io::Result<()> {
        if self.notifier.get().is_none() {
            let _ = self.notifier.set(notify_queue::NotifyQueue::spawn(n)?);
        }
        Ok(())
    }

    /// Resolves once the kernel notifications of the changes made so far
    /// have been sent.
    pub async fn kernel_notified(&self) {
        if let Some(n) = self.notifier.get() {
            n.flush().await;
        }
    }

    fn notify_entry(&self, parent: u64, name: &str) {
        if let Some(n) = self.notifier.get() {
            n.inval_entry(parent, name);
        }
    }

    fn notify_inode(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
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
}

#[cfg(test)]
mod atomic_save_tests;
#[cfg(test)]
mod coherence_tests;
#[cfg(test)]
mod conflict_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod ext4_tests;
#[cfg(test)]
mod failure_tests;
#[cfg(test)]
mod field_merge_tests;
#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod order_tests;
#[cfg(test)]
mod parts_tests;
#[cfg(test)]
mod posix_tests;
#[cfg(test)]
mod power_loss_tests;
#[cfg(test)]
mod revive_tests;
#[cfg(test)]
mod round_tests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod xattr_tests;
