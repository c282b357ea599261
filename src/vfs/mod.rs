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
//! # Lock order
//! `ns` (namespace mutations) → `open` (map of open inodes) →
//! `OpenInode::state`. `handles` is never held together with another lock.
//! No lock is held across an `.await`; materialising a working copy takes
//! the per-inode async `fill` lock alone.

pub mod chunk_cache;
mod chunk_slice;
pub mod error;
pub mod journal;
pub mod kv;
pub mod meta;
mod rebase;
pub mod xattr;

use crate::protocol::{
    validate_name_bytes, ChunkId, DeviceId, FileContent, Manifest, NodeId, NodeKind, NodeRecord,
};
use chunk_cache::ChunkCache;
pub use error::{VfsError, VfsResult};
use meta::{Dentry, Inode, MetaCache, ROOT_INO};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
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

struct OpenState {
    handles: u32,
    writers: u32,
    /// The working copy, open read-write, once the inode has one.
    work: Option<Arc<std::fs::File>>,
    /// Size and mtime not yet recorded in the metadata cache.
    unsaved: Option<(u64, i64)>,
}

struct OpenInode {
    state: Mutex<OpenState>,
    /// Serialises creating the working copy (may wait on the network).
    fill: tokio::sync::Mutex<()>,
}

struct Handle {
    ino: u64,
    write: bool,
    /// The manifest the handle reads when the inode has no working copy.
    content: Option<Arc<ContentView>>,
    /// End of the previous read, to detect sequential access.
    last_end: AtomicU64,
}

struct ContentView {
    manifest: Manifest,
    offsets: Vec<u64>,
}

/// The device's connection to the server, as `nimbus status` and
/// `user.nimbus.status` show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Connection {
    /// Not reached yet, or unreachable: uploads retry with backoff.
    #[default]
    Offline,
    Online,
    /// Credentials refused: uploads pause until `nimbus login`.
    Unauthorized(String),
    /// The server or a proxy refuses requests of this shape (413, unknown
    /// route, ...): uploads pause until it accepts them.
    Misconfigured(String),
}

impl Connection {
    /// The state's name in the status JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Connection::Offline => "offline",
            Connection::Online => "online",
            Connection::Unauthorized(_) => "unauthorized",
            Connection::Misconfigured(_) => "misconfigured",
        }
    }
    /// Why uploads pause, for the states that pause them.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Connection::Unauthorized(r) | Connection::Misconfigured(r) => Some(r),
            Connection::Offline | Connection::Online => None,
        }
    }
}

/// Sync state shown to the user (status xattr, `nimbus status`). Failed
/// (refused) changes live in the journal's quarantine, not here.
#[derive(Clone, Debug, Default)]
pub struct SyncState {
    pub connection: Connection,
    pub last_sync_unix: Option<i64>,
    pub conflicts: u64,
    pub server: String,
    /// Pulled changes waiting for a folder this device does not have yet
    /// (kept by the change follower, retried on every pull).
    pub waiting_remote: u64,
}

pub struct Vfs {
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
    /// Inodes an `fsync` (with `--fsync remote`) is waiting on: the
    /// uploader pushes them even while open for writing.
    fsync_waiters: Mutex<HashMap<u64, u32>>,
    notifier: Mutex<Option<Arc<dyn KernelNotifier>>>,
    /// Wakes the uploader when the journal grows.
    pub journal_notify: tokio::sync::Notify,
    /// Wakes waiters when the journal shrinks.
    pub drained_notify: tokio::sync::Notify,
    pub sync_state: Mutex<SyncState>,
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
        let vfs = Vfs {
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
            fsync_waiters: Mutex::new(HashMap::new()),
            notifier: Mutex::new(None),
            journal_notify: tokio::sync::Notify::new(),
            drained_notify: tokio::sync::Notify::new(),
            sync_state: Mutex::new(SyncState::default()),
        };
        vfs.recover()?;
        Ok(Arc::new(vfs))
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
                if !self.keeps_tombstone(inode.ino) {
                    t.remove_inode(&inode);
                }
                continue;
            }
            if inode.dirty {
                keep.insert(inode.node_id.to_string());
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

    // ------------------------------------------------------------ attributes

    fn attr_of(&self, inode: &Inode) -> Attr {
        let mut size = inode.size;
        let mut mtime = inode.mtime_ns;
        if let Some(o) = self.open_inode(inode.ino) {
            if let Some((s, m)) = o.state.lock().unsaved {
                size = s;
                mtime = m;
            }
        }
        let local_bytes = match inode.kind {
            NodeKind::File if inode.dirty => size,
            NodeKind::File => self.local_content_bytes(inode.ino),
            _ => 0,
        };
        Attr {
            ino: inode.ino,
            kind: inode.kind,
            mode: inode.mode,
            size,
            local_bytes,
            mtime_ns: mtime,
            ctime_ns: inode.ctime_ns.max(mtime),
            nlink: if inode.unlinked {
                0
            } else if inode.is_dir() {
                2
            } else {
                1
            },
        }
    }

    fn local_content_bytes(&self, ino: u64) -> u64 {
        match self.meta.content(ino) {
            Ok(Some(c)) => c
                .manifest
                .chunks
                .iter()
                .filter(|c| self.chunks.is_local(&c.id))
                .map(|c| c.len as u64)
                .sum(),
            _ => 0,
        }
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }
    pub fn gid(&self) -> u32 {
        self.gid
    }

    fn remember_lookup(&self, ino: u64) {
        *self.lookups.lock().entry(ino).or_insert(0) += 1;
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let gone = {
            let mut l = self.lookups.lock();
            match l.get_mut(&ino) {
                Some(c) => {
                    *c = c.saturating_sub(n);
                    if *c == 0 {
                        l.remove(&ino);
                        true
                    } else {
                        false
                    }
                }
                None => true,
            }
        };
        if gone {
            let _ = self.purge_if_unused(ino);
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        let name = check_name(name)?;
        let p = self.meta.inode_required(parent)?;
        if !p.is_dir() {
            return Err(VfsError::NotDir);
        }
        let d = self.meta.dentry(parent, name)?.ok_or(VfsError::NotFound)?;
        let inode = self.meta.inode_required(d.ino)?;
        self.remember_lookup(inode.ino);
        Ok(self.attr_of(&inode))
    }

    pub fn getattr(&self, ino: u64) -> VfsResult<Attr> {
        Ok(self.attr_of(&self.meta.inode_required(ino)?))
    }

    pub fn readlink(&self, ino: u64) -> VfsResult<String> {
        let inode = self.meta.inode_required(ino)?;
        inode
            .symlink_target
            .ok_or(VfsError::InvalidArgument("not a symlink"))
    }

    /// Entries of a folder after `after`, up to `limit`, with `.`/`..` left
    /// to the front end.
    pub fn readdir(&self, ino: u64, after: Option<&str>, limit: usize) -> VfsResult<Vec<DirEntry>> {
        let inode = self.meta.inode_required(ino)?;
        if !inode.is_dir() {
            return Err(VfsError::NotDir);
        }
        Ok(self
            .meta
            .list(ino, after, limit)?
            .into_iter()
            .map(|(name, d)| DirEntry {
                ino: d.ino,
                name,
                kind: d.kind,
            })
            .collect())
    }

    /// Attributes for readdirplus; counts as a lookup.
    pub fn entry_attr(&self, ino: u64) -> VfsResult<Attr> {
        let a = self.getattr(ino)?;
        self.remember_lookup(ino);
        Ok(a)
    }

    pub fn parent_of(&self, ino: u64) -> VfsResult<u64> {
        let inode = self.meta.inode_required(ino)?;
        Ok(if inode.parent == 0 {
            ROOT_INO
        } else {
            inode.parent
        })
    }

    // ------------------------------------------------------------ namespace

    fn new_inode(&self, parent: u64, name: &str, kind: NodeKind, mode: u32) -> Inode {
        let mut inode = Inode::new(
            self.meta.alloc_ino(),
            NodeId::random(),
            parent,
            name,
            kind,
            mode,
        );
        // Created here: a local change until committed.
        inode.local_rev = 1;
        inode
    }

    fn touch_dir(&self, t: &mut meta::Txn<'_>, parent: &mut Inode) {
        let now = now_ns();
        parent.mtime_ns = now;
        parent.ctime_ns = now;
        t.put_inode(parent);
    }

    fn create_node(
        &self,
        parent: u64,
        name: &[u8],
        kind: NodeKind,
        mode: u32,
        target: Option<String>,
    ) -> VfsResult<Attr> {
        self.writable()?;
        let name = check_name(name)?;
        let _ns = self.ns.lock();
        let mut p = self.meta.inode_required(parent)?;
        if !p.is_dir() || p.unlinked {
            return Err(if p.unlinked {
                VfsError::NotFound
            } else {
                VfsError::NotDir
            });
        }
        if self.meta.dentry(parent, name)?.is_some() {
            return Err(VfsError::Exists);
        }
        let mut inode = self.new_inode(parent, name, kind, mode);
        if let Some(t) = target {
            inode.size = t.len() as u64;
            inode.symlink_target = Some(t);
        }
        let mut t = self.meta.txn();
        t.create_inode(&inode).put_dentry(
            parent,
            name,
            Dentry {
                ino: inode.ino,
                kind,
            },
        );
        t.journal_upsert(&inode, true)?;
        self.touch_dir(&mut t, &mut p);
        t.commit()?;
        self.journal_notify.notify_one();
        self.remember_lookup(inode.ino);
        Ok(self.attr_of(&inode))
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32) -> VfsResult<Attr> {
        self.create_node(parent, name, NodeKind::Dir, mode, None)
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> VfsResult<Attr> {
        if target.is_empty() || target.len() > 4095 {
            return Err(VfsError::InvalidArgument("symlink target length"));
        }
        let target = std::str::from_utf8(target)
            .map_err(|_| VfsError::InvalidArgument("symlink target is not UTF-8"))?;
        self.create_node(
            parent,
            name,
            NodeKind::Symlink,
            0o777,
            Some(target.to_string()),
        )
    }

    /// Creates an empty regular file and opens it.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        write: bool,
    ) -> VfsResult<(Attr, u64)> {
        let attr = self.create_node(parent, name, NodeKind::File, mode, None)?;
        let fh = self.open_file(attr.ino, write, false)?;
        Ok((attr, fh))
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> VfsResult<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> VfsResult<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], dir: bool) -> VfsResult<()> {
        self.writable()?;
        let name = check_name(name)?;
        let ino = {
            let _ns = self.ns.lock();
            let mut p = self.meta.inode_required(parent)?;
            let d = self.meta.dentry(parent, name)?.ok_or(VfsError::NotFound)?;
            let inode = self.meta.inode_required(d.ino)?;
            match (dir, inode.is_dir()) {
                (true, false) => return Err(VfsError::NotDir),
                (false, true) => return Err(VfsError::IsDir),
                (true, true) if !self.meta.is_empty_dir(inode.ino)? => {
                    return Err(VfsError::NotEmpty)
                }
                _ => {}
            }
            let mut t = self.meta.txn();
            self.unlink_inode(&mut t, inode, parent, name);
            self.touch_dir(&mut t, &mut p);
            t.commit()?;
            d.ino
        };
        self.journal_notify.notify_one();
        self.purge_if_unused(ino)?;
        Ok(())
    }

    /// Removes the entry and journals the delete; the inode stays (marked
    /// unlinked) until no handle or kernel reference uses it.
    fn unlink_inode(&self, t: &mut meta::Txn<'_>, mut inode: Inode, parent: u64, name: &str) {
        t.remove_dentry(parent, name);
        // Always journaled: the journal drops it with the node's records
        // when the server never had the node, and otherwise keeps it in
        // order before whatever takes the name next.
        t.journal_delete(&inode, parent, name);
        inode.unlinked = true;
        inode.ctime_ns = now_ns();
        inode.local_rev += 1;
        t.put_inode(&inode);
    }

    /// Drops an unlinked inode once nothing uses it.
    fn purge_if_unused(&self, ino: u64) -> VfsResult<()> {
        let _ns = self.ns.lock();
        let Some(inode) = self.meta.inode(ino)? else {
            return Ok(());
        };
        if !inode.unlinked
            || self.open.lock().contains_key(&ino)
            || self.lookups.lock().contains_key(&ino)
        {
            return Ok(());
        }
        if inode.dirty {
            self.remove_work_durably(&inode.node_id);
        } else {
            let _ = std::fs::remove_file(self.work_path(&inode.node_id));
        }
        // A node with records still queued (its delete, or earlier pushes
        // that must reach the server first) stays as an invisible
        // tombstone, so that the server's older records of it (pulled
        // before the delete is pushed) do not bring it back.
        if self.keeps_tombstone(ino) {
            return Ok(());
        }
        let mut t = self.meta.txn();
        t.remove_inode(&inode);
        t.commit()?;
        Ok(())
    }

    /// An unlinked inode stays (invisible) while the journal or the
    /// quarantine still refers to it.
    fn keeps_tombstone(&self, ino: u64) -> bool {
        let j = self.meta.journal();
        j.has_records(ino) || j.is_quarantined(ino)
    }

    /// Removes a working copy once the metadata that makes it unneeded (a
    /// clean or unlinked inode) is durable: after a crash that rolled that
    /// change back, a dirty inode without its working copy could never be
    /// uploaded. Kept if the store cannot be flushed.
    fn remove_work_durably(&self, node: &NodeId) {
        match self.meta.flush() {
            Ok(()) => {
                let _ = std::fs::remove_file(self.work_path(node));
            }
            Err(e) => tracing::warn!(%node, "working copy kept: metadata flush failed: {e}"),
        }
    }

    /// After an upload round answered for `inos`: with one flush of the
    /// metadata store, drops the working copies of those now clean and not
    /// open, and the tombstones nothing refers to any more.
    pub fn after_round(&self, inos: &[u64]) -> VfsResult<()> {
        self.meta.flush()?;
        for &ino in inos {
            if let Some(inode) = self.meta.inode(ino)? {
                if !inode.dirty && !inode.unlinked && self.open_inode(ino).is_none() {
                    let _ = std::fs::remove_file(self.work_path(&inode.node_id));
                }
            }
            self.purge_if_unused(ino)?;
        }
        Ok(())
    }

    /// Sets the connection state shown to the user.
    pub fn set_connection(&self, c: Connection) {
        self.sync_state.lock().connection = c;
    }

    /// Sets how many pulled changes wait (see [`SyncState::waiting_remote`]);
    /// true when the number changed.
    pub fn set_waiting_remote(&self, count: u64) -> bool {
        let mut st = self.sync_state.lock();
        std::mem::replace(&mut st.waiting_remote, count) != count
    }

    /// The server has processed this device's delete of `node`: its
    /// tombstone is no longer needed (and a record of the node, e.g. an
    /// edit that won over the delete, may apply again).
    pub fn delete_done(&self, node: &NodeId) -> VfsResult<()> {
        let ino = {
            let _ns = self.ns.lock();
            let Some(ino) = self.meta.ino_of(node)? else {
                return Ok(());
            };
            let Some(mut inode) = self.meta.inode(ino)? else {
                return Ok(());
            };
            if !inode.unlinked {
                return Ok(());
            }
            inode.synced_rev = inode.local_rev;
            let mut t = self.meta.txn();
            t.put_inode(&inode);
            t.commit()?;
            ino
        };
        self.purge_if_unused(ino)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        no_replace: bool,
    ) -> VfsResult<()> {
        self.writable()?;
        let name = check_name(name)?.to_string();
        let new_name = check_name(new_name)?.to_string();
        let replaced = {
            let _ns = self.ns.lock();
            let d = self.meta.dentry(parent, &name)?.ok_or(VfsError::NotFound)?;
            let mut np = self.meta.inode_required(new_parent)?;
            if !np.is_dir() {
                return Err(VfsError::NotDir);
            }
            if np.unlinked {
                return Err(VfsError::NotFound);
            }
            let mut inode = self.meta.inode_required(d.ino)?;
            if parent == new_parent && name == new_name {
                return Ok(());
            }
            // A folder may not move below itself.
            if inode.is_dir() {
                let mut cur = new_parent;
                while cur != 0 {
                    if cur == inode.ino {
                        return Err(VfsError::InvalidArgument(
                            "cannot move a folder into itself",
                        ));
                    }
                    cur = self.meta.inode_required(cur)?.parent;
                }
            }
            let mut t = self.meta.txn();
            let mut replaced = None;
            if let Some(existing) = self.meta.dentry(new_parent, &new_name)? {
                if no_replace {
                    return Err(VfsError::Exists);
                }
                let target = self.meta.inode_required(existing.ino)?;
                match (inode.is_dir(), target.is_dir()) {
                    (true, false) => return Err(VfsError::NotDir),
                    (false, true) => return Err(VfsError::IsDir),
                    (true, true) if !self.meta.is_empty_dir(target.ino)? => {
                        return Err(VfsError::NotEmpty)
                    }
                    _ => {}
                }
                replaced = Some(target.ino);
                // The delete is journaled before the move so the server
                // frees the name first.
                self.unlink_inode(&mut t, target, new_parent, &new_name);
            }
            t.remove_dentry(parent, &name);
            t.put_dentry(
                new_parent,
                &new_name,
                Dentry {
                    ino: inode.ino,
                    kind: inode.kind,
                },
            );
            inode.parent = new_parent;
            inode.name = new_name.clone();
            inode.ctime_ns = now_ns();
            inode.local_rev += 1;
            t.put_inode(&inode);
            t.journal_upsert(&inode, true)?;
            if parent != new_parent {
                let mut op = self.meta.inode_required(parent)?;
                self.touch_dir(&mut t, &mut op);
            }
            self.touch_dir(&mut t, &mut np);
            t.commit()?;
            replaced
        };
        self.journal_notify.notify_one();
        if let Some(r) = replaced {
            self.purge_if_unused(r)?;
        }
        Ok(())
    }

    pub fn setattr(&self, ino: u64, set: SetAttr) -> VfsResult<Attr> {
        self.writable()?;
        if set.uid.is_some_and(|u| u != self.uid) || set.gid.is_some_and(|g| g != self.gid) {
            return Err(VfsError::NotPermitted("files belong to the mounting user"));
        }
        if let Some(size) = set.size {
            match self.meta.inode_required(ino)?.kind {
                NodeKind::Dir => return Err(VfsError::IsDir),
                NodeKind::Symlink => {
                    return Err(VfsError::InvalidArgument("cannot truncate a symlink"))
                }
                NodeKind::File => self.truncate_sync(ino, size)?,
            }
        }
        let _ns = self.ns.lock();
        let mut inode = self.meta.inode_required(ino)?;
        let mut changed = false;
        if let Some(mode) = set.mode {
            inode.mode = mode & 0o7777;
            changed = true;
        }
        if let Some(m) = set.mtime_ns {
            inode.mtime_ns = m;
            // Keep an open writer's pending mtime in step.
            if let Some(o) = self.open_inode(ino) {
                if let Some((_, mt)) = o.state.lock().unsaved.as_mut() {
                    *mt = m;
                }
            }
            changed = true;
        }
        if changed {
            inode.ctime_ns = now_ns();
            inode.local_rev += 1;
            let mut t = self.meta.txn();
            t.put_inode(&inode).journal_upsert(&inode, false)?;
            t.commit()?;
            self.journal_notify.notify_one();
        }
        Ok(self.attr_of(&inode))
    }

    /// Truncate that needs no network: to zero, or on a file that already
    /// has a working copy. Otherwise the caller must first await
    /// [`Vfs::prepare_write`].
    fn truncate_sync(&self, ino: u64, size: u64) -> VfsResult<()> {
        let o = self.ensure_open_state(ino);
        let r = self.truncate_open(ino, &o, size);
        self.release_state_ref(ino, &o);
        r
    }

    fn truncate_open(&self, ino: u64, o: &Arc<OpenInode>, size: u64) -> VfsResult<()> {
        let Some(file) = self.work_file(ino, o, size == 0)? else {
            return Err(VfsError::Unavailable("working copy not ready".into()));
        };
        file.set_len(size)?;
        o.state.lock().unsaved = Some((size, now_ns()));
        self.save_work(ino, o, true)
    }

    /// True when a truncate/write of `ino` can proceed without the network.
    pub fn write_ready(&self, ino: u64, truncating_to_zero: bool) -> VfsResult<bool> {
        if truncating_to_zero {
            return Ok(true);
        }
        if let Some(o) = self.open_inode(ino) {
            if o.state.lock().work.is_some() {
                return Ok(true);
            }
        }
        let inode = self.meta.inode_required(ino)?;
        Ok(inode.dirty || inode.content_hash.is_none())
    }

    // ------------------------------------------------------------ open files

    fn ensure_open_state(&self, ino: u64) -> Arc<OpenInode> {
        let mut open = self.open.lock();
        let o = open.entry(ino).or_insert_with(|| {
            Arc::new(OpenInode {
                state: Mutex::new(OpenState {
                    handles: 0,
                    writers: 0,
                    work: None,
                    unsaved: None,
                }),
                fill: tokio::sync::Mutex::new(()),
            })
        });
        o.state.lock().handles += 1;
        o.clone()
    }

    /// Drops one reference taken by `ensure_open_state`.
    fn release_state_ref(&self, ino: u64, o: &Arc<OpenInode>) {
        let mut open = self.open.lock();
        let mut st = o.state.lock();
        st.handles = st.handles.saturating_sub(1);
        if st.handles == 0 {
            let had_work = st.work.take().is_some();
            drop(st);
            open.remove(&ino);
            // A working copy filled for reading/truncating but never made
            // durable (the inode is not dirty) is just a stale copy now.
            if had_work {
                if let Ok(Some(inode)) = self.meta.inode(ino) {
                    if !inode.dirty {
                        self.remove_work_durably(&inode.node_id);
                    }
                }
            }
        }
    }

    pub fn open_file(&self, ino: u64, write: bool, truncate: bool) -> VfsResult<u64> {
        if write {
            self.writable()?;
        }
        let inode = self.meta.inode_required(ino)?;
        match inode.kind {
            NodeKind::Dir => return Err(VfsError::IsDir),
            NodeKind::Symlink => return Err(VfsError::InvalidArgument("cannot open a symlink")),
            NodeKind::File => {}
        }
        let o = self.ensure_open_state(ino);
        if write {
            o.state.lock().writers += 1;
        }
        if inode.dirty {
            if let Err(e) = self.work_file(ino, &o, false) {
                self.release_handle_state(ino, &o, write);
                return Err(e);
            }
        }
        let content = match self.meta.content(ino) {
            Ok(c) => c.map(|c| {
                Arc::new(ContentView {
                    offsets: c.manifest.offsets(),
                    manifest: c.manifest,
                })
            }),
            Err(e) => {
                self.release_handle_state(ino, &o, write);
                return Err(e);
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::SeqCst);
        self.handles.lock().insert(
            fh,
            Arc::new(Handle {
                ino,
                write,
                content,
                last_end: AtomicU64::new(u64::MAX),
            }),
        );
        if truncate && write {
            if let Err(e) = self.truncate_sync(ino, 0) {
                let _ = self.release(fh);
                return Err(e);
            }
        }
        Ok(fh)
    }

    fn release_handle_state(&self, ino: u64, o: &Arc<OpenInode>, write: bool) {
        if write {
            let mut st = o.state.lock();
            st.writers = st.writers.saturating_sub(1);
        }
        self.release_state_ref(ino, o);
    }

    fn handle(&self, fh: u64) -> VfsResult<Arc<Handle>> {
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(VfsError::InvalidArgument("unknown file handle"))
    }

    /// The inode's working copy, opening an existing one (dirty inode) or
    /// creating an empty one when `create_empty`. `None` when the content
    /// must first be filled from chunks.
    fn work_file(
        &self,
        ino: u64,
        o: &Arc<OpenInode>,
        create_empty: bool,
    ) -> VfsResult<Option<Arc<std::fs::File>>> {
        if let Some(f) = o.state.lock().work.clone() {
            return Ok(Some(f));
        }
        let inode = self.meta.inode_required(ino)?;
        let path = self.work_path(&inode.node_id);
        let file = if inode.dirty {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)?
        } else if create_empty || inode.content_hash.is_none() {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?
        } else {
            return Ok(None);
        };
        let file = Arc::new(file);
        let mut st = o.state.lock();
        Ok(Some(st.work.get_or_insert(file).clone()))
    }

    /// Makes sure `ino` has a working copy, filling it from its chunks
    /// (which may need the server). Call before writes/truncates for which
    /// [`Vfs::write_ready`] said no.
    pub async fn prepare_write(&self, ino: u64) -> VfsResult<()> {
        let o = self.ensure_open_state(ino);
        let r = self.fill_work(ino, &o).await;
        self.release_state_ref(ino, &o);
        r
    }

    /// `setattr` for a truncate that first needs the working copy filled
    /// from chunks (a path truncate with no open handle): fills and
    /// truncates under one open-state reference, so the filled copy is not
    /// dropped in between.
    pub async fn setattr_filling(&self, ino: u64, set: SetAttr) -> VfsResult<Attr> {
        self.writable()?;
        if let Some(size) = set.size {
            if self.meta.inode_required(ino)?.kind == NodeKind::File {
                let o = self.ensure_open_state(ino);
                let r = match self.fill_work(ino, &o).await {
                    Ok(()) => self.truncate_open(ino, &o, size),
                    Err(e) => Err(e),
                };
                self.release_state_ref(ino, &o);
                r?;
            }
        }
        self.setattr(ino, SetAttr { size: None, ..set })
    }

    async fn fill_work(&self, ino: u64, o: &Arc<OpenInode>) -> VfsResult<()> {
        let _fill = o.fill.lock().await;
        if self.work_file(ino, o, false)?.is_some() {
            return Ok(());
        }
        let inode = self.meta.inode_required(ino)?;
        let content = self.meta.content(ino)?.unwrap_or(FileContent {
            manifest: Manifest::default(),
        });
        let path = self.work_path(&inode.node_id);
        let tmp = path.with_extension("fill");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut pos = 0u64;
        for c in &content.manifest.chunks {
            let data = match self.chunks.get(c.id).await {
                Ok(d) => chunk_slice::check_len(c.id, c.len, &d).map(|()| d),
                Err(e) => Err(e),
            };
            let data = match data {
                Ok(d) => d,
                Err(e) => {
                    drop(file);
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            file.write_all_at(&data, pos)?;
            pos += data.len() as u64;
        }
        std::fs::rename(&tmp, &path)?;
        let mut st = o.state.lock();
        st.work.get_or_insert(Arc::new(file));
        Ok(())
    }

    /// Write without waiting on the network; `None` when the working copy
    /// must first be prepared with [`Vfs::prepare_write`].
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> VfsResult<Option<u32>> {
        self.writable()?;
        let h = self.handle(fh)?;
        if !h.write {
            return Err(VfsError::InvalidArgument("file not open for writing"));
        }
        let o = self
            .open_inode(h.ino)
            .ok_or(VfsError::InvalidArgument("file not open"))?;
        let Some(file) = self.work_file(h.ino, &o, false)? else {
            return Ok(None);
        };
        file.write_all_at(data, offset)?;
        let end = offset + data.len() as u64;
        let mut st = o.state.lock();
        let size = match st.unsaved {
            Some((s, _)) => s,
            None => {
                drop(st);
                let s = self.meta.inode_required(h.ino)?.size;
                st = o.state.lock();
                st.unsaved.map(|u| u.0).unwrap_or(s)
            }
        };
        st.unsaved = Some((size.max(end), now_ns()));
        Ok(Some(data.len() as u32))
    }

    /// Records a handle's unsaved writes durably: fdatasync the working
    /// copy, then size/mtime + a journal entry in one flushed batch.
    pub fn flush(&self, fh: u64) -> VfsResult<()> {
        let h = self.handle(fh)?;
        if !h.write {
            return Ok(());
        }
        let Some(o) = self.open_inode(h.ino) else {
            return Ok(());
        };
        self.save_work(h.ino, &o, true)
    }

    fn save_work(&self, ino: u64, o: &Arc<OpenInode>, durable: bool) -> VfsResult<()> {
        let (unsaved, file) = {
            let st = o.state.lock();
            (st.unsaved, st.work.clone())
        };
        let Some((size, mtime)) = unsaved else {
            return Ok(());
        };
        if let Some(f) = &file {
            if durable {
                f.sync_data()?;
                // The first time this working copy is recorded, its
                // directory entry must be durable too, or a crash could
                // leave a dirty inode without its content.
                if !self.meta.inode_required(ino)?.dirty {
                    std::fs::File::open(&self.work_dir)?.sync_all()?;
                }
            }
        }
        {
            let _ns = self.ns.lock();
            let mut inode = self.meta.inode_required(ino)?;
            inode.size = size;
            inode.mtime_ns = mtime;
            inode.ctime_ns = now_ns();
            inode.dirty = true;
            inode.local_rev += 1;
            let mut t = self.meta.txn();
            t.put_inode(&inode);
            if !inode.unlinked {
                t.journal_upsert(&inode, false)?;
            }
            t.commit()?;
            let mut st = o.state.lock();
            if st.unsaved == unsaved {
                st.unsaved = None;
            }
        }
        if durable {
            self.meta.flush()?;
        }
        self.journal_notify.notify_one();
        Ok(())
    }

    /// Makes the handle's writes durable locally; with `--fsync remote`
    /// also waits (up to a minute) until the server has them. Call from a
    /// thread that may block (not a FUSE or async worker thread).
    pub fn fsync(&self, fh: u64) -> VfsResult<()> {
        self.flush(fh)?;
        self.meta.flush()?;
        if !self.fsync_remote {
            return Ok(());
        }
        let ino = self.handle(fh)?.ino;
        *self.fsync_waiters.lock().entry(ino).or_insert(0) += 1;
        let r = self.wait_uploaded(ino);
        let mut w = self.fsync_waiters.lock();
        if let Some(n) = w.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                w.remove(&ino);
            }
        }
        r
    }

    /// True while an `fsync --remote` waits for `ino`.
    pub fn fsync_waiting(&self, ino: u64) -> bool {
        self.fsync_waiters.lock().contains_key(&ino)
    }

    fn wait_uploaded(&self, ino: u64) -> VfsResult<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.is_journaled(ino) {
            if self.meta.journal().is_quarantined(ino) {
                return Err(VfsError::Unavailable(
                    "the server refused this file's change (see `nimbus status`)".into(),
                ));
            }
            if std::time::Instant::now() > deadline {
                return Err(VfsError::Unavailable(
                    "the server did not acknowledge the file in time".into(),
                ));
            }
            self.journal_notify.notify_one();
            let wait = self.drained_notify.notified();
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let _ = rt.block_on(tokio::time::timeout(
                        std::time::Duration::from_millis(100),
                        wait,
                    ));
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        Ok(())
    }

    pub fn fsync_all(&self) -> VfsResult<()> {
        self.meta.flush()
    }

    pub fn release(&self, fh: u64) -> VfsResult<()> {
        let h = self.handles.lock().remove(&fh);
        let Some(h) = h else { return Ok(()) };
        let Some(o) = self.open_inode(h.ino) else {
            return Ok(());
        };
        let r = if h.write {
            self.save_work(h.ino, &o, true)
        } else {
            Ok(())
        };
        self.release_handle_state(h.ino, &o, h.write);
        if h.write {
            // The uploader defers files open for writing.
            self.journal_notify.notify_one();
        }
        self.purge_if_unused(h.ino)?;
        r
    }

    /// True while some handle has the file open for writing.
    pub fn has_writers(&self, ino: u64) -> bool {
        self.open_inode(ino)
            .map(|o| o.state.lock().writers > 0)
            .unwrap_or(false)
    }

    /// Read without waiting: `None` when some chunk must be loaded first
    /// (then call [`Vfs::read`]).
    pub fn read_now(&self, fh: u64, offset: u64, size: u32) -> VfsResult<Option<Vec<u8>>> {
        let h = self.handle(fh)?;
        if let Some(r) = self.read_work(&h, offset, size)? {
            return Ok(Some(r));
        }
        let Some(c) = &h.content else {
            return Ok(Some(Vec::new()));
        };
        let slices = c.manifest.slices(&c.offsets, offset, size as u64);
        let mut out = Vec::with_capacity(slices.iter().map(|s| s.len as usize).sum());
        for s in &slices {
            let chunk_len = c.manifest.chunks[s.index].len;
            match self
                .chunks
                .read_local(&s.id, s.offset_in_chunk, s.len, chunk_len)
            {
                Some(data) => out.extend_from_slice(&data),
                None => return Ok(None),
            }
        }
        self.read_ahead(&h, c, offset, out.len() as u64);
        Ok(Some(out))
    }

    fn read_work(&self, h: &Handle, offset: u64, size: u32) -> VfsResult<Option<Vec<u8>>> {
        let Some(o) = self.open_inode(h.ino) else {
            return Ok(None);
        };
        let (file, unsaved) = {
            let st = o.state.lock();
            (st.work.clone(), st.unsaved)
        };
        let Some(file) = file else { return Ok(None) };
        let len = match unsaved {
            Some((s, _)) => s,
            None => self.meta.inode_required(h.ino)?.size,
        };
        if offset >= len {
            return Ok(Some(Vec::new()));
        }
        let n = (size as u64).min(len - offset) as usize;
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            let r = file.read_at(&mut buf[done..], offset + done as u64)?;
            if r == 0 {
                break; // sparse tail past the working copy's end reads as zeros
            }
            done += r;
        }
        Ok(Some(buf))
    }

    /// Read that may wait on the chunk cache and the server.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> VfsResult<Vec<u8>> {
        let h = self.handle(fh)?;
        if let Some(r) = self.read_work(&h, offset, size)? {
            return Ok(r);
        }
        let Some(c) = h.content.clone() else {
            return Ok(Vec::new());
        };
        let slices = c.manifest.slices(&c.offsets, offset, size as u64);
        let mut out = Vec::with_capacity(slices.iter().map(|s| s.len as usize).sum());
        // Fetch all needed chunks concurrently (one request each, shared
        // with any other reader of the same chunk).
        let datas =
            futures::future::try_join_all(slices.iter().map(|s| self.chunks.get(s.id))).await?;
        for (s, data) in slices.iter().zip(datas) {
            let chunk_len = c.manifest.chunks[s.index].len;
            out.extend_from_slice(chunk_slice::slice(s, chunk_len, &data)?);
        }
        self.read_ahead(&h, &c, offset, out.len() as u64);
        Ok(out)
    }

    /// Sequential reads prefetch the next [`READ_AHEAD_CHUNKS`] chunks.
    fn read_ahead(&self, h: &Handle, c: &ContentView, offset: u64, len: u64) {
        let prev = h.last_end.swap(offset + len, Ordering::Relaxed);
        if prev != offset && offset != 0 {
            return;
        }
        let end = offset + len;
        let next = c.offsets[..c.manifest.chunks.len()].partition_point(|&s| s < end);
        let ids: Vec<ChunkId> = c
            .manifest
            .chunks
            .iter()
            .skip(next)
            .take(READ_AHEAD_CHUNKS)
            .map(|c| c.id)
            .filter(|id| !self.chunks.is_local(id) || self.chunks.get_in_memory(id).is_none())
            .collect();
        if !ids.is_empty() {
            self.chunks.prefetch(ids);
        }
    }

    // ------------------------------------------------------------ paths & status

    /// Path of an inode relative to the root ("" for the root).
    pub fn path_of(&self, ino: u64) -> VfsResult<String> {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO && cur != 0 {
            let inode = self.meta.inode_required(cur)?;
            parts.push(inode.name);
            cur = inode.parent;
        }
        parts.reverse();
        Ok(parts.join("/"))
    }

    fn is_below(&self, mut ino: u64, ancestor: u64) -> bool {
        if ancestor == ROOT_INO {
            return true;
        }
        let mut guard = 0;
        while ino != 0 && guard < 4096 {
            if ino == ancestor {
                return true;
            }
            ino = match self.meta.inode(ino) {
                Ok(Some(i)) => i.parent,
                _ => return false,
            };
            guard += 1;
        }
        false
    }

    /// Nodes at or below `ino` with changes the server does not have
    /// (journaled or quarantined). Reads the journal's index, not the
    /// journal: O(pending nodes).
    pub fn pending_below(&self, ino: u64, max_paths: usize) -> VfsResult<PendingSummary> {
        let mut count = 0;
        let mut bytes = 0;
        let mut failed = 0;
        let mut paths = Vec::new();
        for i in self.meta.journal().pending_inos() {
            let Some(inode) = self.meta.inode(i)? else {
                continue;
            };
            if !self.is_below(i, ino) {
                continue;
            }
            count += 1;
            if self.meta.journal().is_quarantined(i) && !self.meta.journal().has_records(i) {
                failed += 1;
            }
            if inode.kind == NodeKind::File && inode.dirty && !inode.unlinked {
                bytes += inode.size;
            }
            if paths.len() < max_paths {
                let parent = self.path_of(inode.parent).unwrap_or_default();
                paths.push(if parent.is_empty() {
                    inode.name.clone()
                } else {
                    format!("{parent}/{}", inode.name)
                });
            }
        }
        Ok(PendingSummary {
            count,
            bytes,
            failed,
            paths,
        })
    }

    // ------------------------------------------------------------ remote changes

    /// Applies a node record from the server to the local cache, unless the
    /// node has local changes still to push (the uploader reconciles those)
    /// or this device already has that state. Returns false when the record
    /// must wait: for its parent to arrive, or (a folder delete) for its
    /// children to move away.
    pub fn apply_remote(&self, rec: &NodeRecord) -> VfsResult<bool> {
        let mut notify_entries: Vec<(u64, String)> = Vec::new();
        let mut notify_inodes = Vec::new();
        let applied = {
            let _ns = self.ns.lock();
            self.apply_remote_locked(rec, &mut notify_entries, &mut notify_inodes)?
        };
        for (p, n) in notify_entries {
            self.notify_entry(p, &n);
        }
        for i in notify_inodes {
            self.notify_inode(i);
        }
        Ok(applied)
    }

    fn apply_remote_locked(
        &self,
        rec: &NodeRecord,
        notify_entries: &mut Vec<(u64, String)>,
        notify_inodes: &mut Vec<u64>,
    ) -> VfsResult<bool> {
        let mut existing = match self.meta.ino_of(&rec.node_id)? {
            Some(ino) => self.meta.inode(ino)?,
            None => None,
        };
        if rec.node_id.is_root() {
            if let Some(mut root) = existing {
                if !root.vv.dominates(&rec.vv) {
                    root.vv = rec.vv.clone();
                    root.server_seq = rec.seq;
                    root.mode = rec.meta.mode;
                    let mut t = self.meta.txn();
                    t.put_inode(&root);
                    t.commit()?;
                }
            }
            return Ok(true);
        }
        if let Some(inode) = &existing {
            // Local changes win until the uploader has reconciled them; a
            // node unlinked here has its delete queued (local_rev moved).
            if inode.has_local_changes() {
                // A change the server refused does not freeze the node.
                if !self.rebase_refused(inode, rec, notify_entries)? {
                    return Ok(true);
                }
            }
        }
        if let Some(ino) = existing.as_ref().map(|i| i.ino) {
            existing = self.meta.inode(ino)?;
        }
        if let Some(inode) = &existing {
            // Writes not yet made durable count as local changes too: their
            // close commits them against the old base, which the server
            // then sees as concurrent (a conflict copy, nothing lost).
            // While the file is open for writing without such writes, the
            // record waits: a write may be landing in the working copy right
            // now, and dropping that copy would lose it.
            if let Some(o) = self.open_inode(inode.ino) {
                let st = o.state.lock();
                if st.unsaved.is_some() {
                    return Ok(true);
                }
                if st.writers > 0 {
                    return Ok(false);
                }
            }
            if inode.vv.dominates(&rec.vv) && !rec.deleted {
                return Ok(true);
            }
        }
        let mut t = self.meta.txn();
        if rec.deleted {
            let Some(inode) = existing else {
                return Ok(true);
            };
            if inode.is_dir() && !self.meta.is_empty_dir(inode.ino)? {
                // Children still here: either they move away later in the
                // log (the caller retries this record after applying the
                // others), or they were created here and not yet pushed
                // (their upload makes the server restore the folder).
                return Ok(false);
            }
            if self.meta.dentry(inode.parent, &inode.name)?.map(|d| d.ino) == Some(inode.ino) {
                t.remove_dentry(inode.parent, &inode.name);
                notify_entries.push((inode.parent, inode.name.clone()));
            }
            let mut gone = inode.clone();
            gone.unlinked = true;
            gone.vv = rec.vv.clone();
            gone.server_seq = rec.seq;
            t.put_inode(&gone);
            t.commit()?;
            // purge needs ns; we hold it, so do the same work inline.
            if !self.open.lock().contains_key(&inode.ino)
                && !self.lookups.lock().contains_key(&inode.ino)
            {
                let mut t = self.meta.txn();
                t.remove_inode(&gone);
                t.commit()?;
            }
            return Ok(true);
        }
        let Some(parent_id) = rec.parent else {
            return Ok(true);
        };
        let Some(parent_ino) = self.meta.ino_of(&parent_id)? else {
            return Ok(false);
        };
        let content = rec.meta.content.clone();
        let mut inode = match existing {
            Some(i) => i,
            None => Inode::new(
                self.meta.alloc_ino(),
                rec.node_id,
                parent_ino,
                &rec.name,
                rec.meta.kind,
                rec.meta.mode,
            ),
        };
        let is_new = inode.server_seq == 0
            && inode.vv.is_empty()
            && self.meta.ino_of(&rec.node_id)?.is_none();
        // Entry: move if parent or name changed.
        if is_new || inode.parent != parent_ino || inode.name != rec.name {
            // The old entry goes only if it still points here (a displaced
            // node already lost it, maybe to another node).
            if !is_new
                && self.meta.dentry(inode.parent, &inode.name)?.map(|d| d.ino) == Some(inode.ino)
            {
                t.remove_dentry(inode.parent, &inode.name);
                notify_entries.push((inode.parent, inode.name.clone()));
            }
            inode.unlinked = false;
            if let Some(other) = self.meta.dentry(parent_ino, &rec.name)? {
                if other.ino != inode.ino {
                    self.displace(&mut t, parent_ino, &rec.name, other.ino)?;
                }
            }
            t.put_dentry(
                parent_ino,
                &rec.name,
                Dentry {
                    ino: inode.ino,
                    kind: inode.kind,
                },
            );
            notify_entries.push((parent_ino, rec.name.clone()));
            inode.parent = parent_ino;
            inode.name = rec.name.clone();
        }
        let new_hash = content.as_ref().map(|c| c.hash());
        if new_hash != inode.content_hash {
            t.put_content(inode.ino, content.as_ref());
            inode.content_hash = new_hash;
            notify_inodes.push(inode.ino);
            // A clean working copy kept for open handles is stale now;
            // the next write refills it from the new content.
            if let Some(o) = self.open_inode(inode.ino) {
                if o.state.lock().work.take().is_some() {
                    self.remove_work_durably(&inode.node_id);
                }
            }
        }
        if inode.mode != rec.meta.mode
            || inode.mtime_ns != rec.meta.mtime_ns
            || inode.size != rec.meta.size()
        {
            notify_inodes.push(inode.ino);
        }
        inode.mode = rec.meta.mode;
        inode.mtime_ns = rec.meta.mtime_ns;
        inode.size = rec.meta.size();
        inode.symlink_target = rec.meta.symlink_target.clone();
        inode.vv = rec.vv.clone();
        inode.server_seq = rec.seq;
        if is_new {
            t.create_inode(&inode);
        } else {
            t.put_inode(&inode);
        }
        t.commit()?;
        Ok(true)
    }

    /// A remote node takes a name a local node holds. If the local node has
    /// changes to push, it moves aside under a conflict name (the first
    /// commit wins the name); otherwise it is stale and loses its entry
    /// until its own record arrives.
    fn displace(&self, t: &mut meta::Txn<'_>, parent: u64, name: &str, ino: u64) -> VfsResult<()> {
        let mut other = self.meta.inode_required(ino)?;
        t.remove_dentry(parent, name);
        if other.has_local_changes() {
            let mut n = 1;
            let new_name = loop {
                let candidate = crate::protocol::conflict_name(
                    name,
                    other.kind,
                    &self.device_name,
                    now_ns(),
                    n,
                );
                if self.meta.dentry(parent, &candidate)?.is_none() {
                    break candidate;
                }
                n += 1;
            };
            t.put_dentry(
                parent,
                &new_name,
                Dentry {
                    ino,
                    kind: other.kind,
                },
            );
            other.name = new_name;
            other.local_rev += 1;
            t.put_inode(&other).journal_upsert(&other, true)?;
        } else {
            other.unlinked = true;
            t.put_inode(&other);
        }
        Ok(())
    }

    /// After a commit: adopt the server's state for `ino` as of local
    /// revision `rev`. Clears the dirty flag (and drops the working copy
    /// when no handle uses it) only if nothing changed since `rev`.
    pub fn commit_done(&self, ino: u64, sent: &SentState, rec: &NodeRecord) -> VfsResult<()> {
        let rev = sent.rev;
        let content_pushed = sent.content;
        let mut notify = Vec::new();
        let mut notify_ino = false;
        {
            let _ns = self.ns.lock();
            let Some(mut inode) = self.meta.inode(ino)? else {
                return Ok(());
            };
            // Deleted here while its commit was in flight: its delete is
            // already journaled after this push; it needs the vector the
            // server now has.
            if inode.unlinked {
                if !rec.deleted {
                    inode.vv = rec.vv.clone();
                    inode.server_seq = rec.seq;
                    let mut t = self.meta.txn();
                    t.put_inode(&inode);
                    t.commit()?;
                }
                return Ok(());
            }
            let mut t = self.meta.txn();
            let unchanged = inode.local_rev == rev;
            // After a conflict, local changes made since the commit was
            // planned must not fast-forward over the winner: keep the old
            // base so their push is a conflict again.
            if !sent.conflict || unchanged {
                inode.vv = rec.vv.clone();
            }
            inode.server_seq = rec.seq;
            if unchanged {
                inode.synced_rev = rev;
            }
            // The server gave it another name (the one sent was taken);
            // adopt it unless the user renamed it again meanwhile.
            if !rec.deleted && rec.name != sent.name && inode.name == sent.name {
                if let Some(parent_ino) =
                    rec.parent.and_then(|p| self.meta.ino_of(&p).ok().flatten())
                {
                    if self.meta.dentry(parent_ino, &rec.name)?.is_none() {
                        t.remove_dentry(inode.parent, &inode.name);
                        notify.push((inode.parent, inode.name.clone()));
                        t.put_dentry(
                            parent_ino,
                            &rec.name,
                            Dentry {
                                ino,
                                kind: inode.kind,
                            },
                        );
                        inode.parent = parent_ino;
                        inode.name = rec.name.clone();
                    }
                }
            }
            let server_hash = rec.meta.content.as_ref().map(|c| c.hash());
            if (content_pushed || server_hash != inode.content_hash) && inode.kind == NodeKind::File
            {
                notify_ino |= sent.conflict;
                t.put_content(ino, rec.meta.content.as_ref());
                inode.content_hash = server_hash;
                if unchanged && inode.dirty {
                    inode.dirty = false;
                    inode.size = rec.meta.size();
                }
            }
            t.put_inode(&inode);
            t.commit()?;
            // The working copy of a node clean now goes in `after_round`,
            // once this commit is durable.
        }
        for (p, n) in notify {
            self.notify_entry(p, &n);
        }
        if notify_ino {
            self.notify_inode(ino);
        }
        Ok(())
    }
}

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
