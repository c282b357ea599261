//! Devices of an in-process server (the server's real commit and conflict
//! rules), and the three views compared after every drain: the device's
//! tree, the server's live tree, and a fresh device's tree.

use super::attrs::{mask_unknown, MetaSnap, Viewer};
use super::drive::snapshot;
use super::model::{Model, Seen, Snap, Tree};
use crate::protocol::{NodeId, NodeKind, NodeRecord};
use crate::remote::in_process::InProcessServer;
use crate::remote::Remote;
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;
use crate::vfs::chunk_cache::ChunkCache;
use crate::vfs::test_support::{open_vfs_on, CrashKv};
use crate::vfs::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::HashMap;

/// Which metadata store a device keeps its state in.
#[derive(Clone, Copy, Debug)]
pub(super) enum StoreKind {
    /// sled in the cache folder, as a mount has.
    Sled,
    /// [`CrashKv`]: in memory, losing at a crash what was not flushed.
    Crashable,
}

enum Store {
    Sled,
    Crashable(Arc<CrashKv>),
}

pub(super) struct Device {
    dir: tempfile::TempDir,
    id: DeviceId,
    pub(super) name: String,
    remote: Arc<dyn Remote>,
    store: Store,
    vfs: Option<Arc<Vfs>>,
}

impl Device {
    /// A new device of the server's account, with an empty cache.
    pub(super) async fn new(
        server: &InProcessServer,
        name: &str,
        store: StoreKind,
    ) -> Result<Self, TestCaseError> {
        let remote = server
            .device(name)
            .await
            .map_err(|e| TestCaseError::fail(format!("registering {name}: {e:#}")))?;
        let mut d = Device {
            dir: tempfile::tempdir().unwrap(),
            id: remote.device_id(),
            name: name.to_string(),
            remote: Arc::new(remote),
            store: match store {
                StoreKind::Sled => Store::Sled,
                StoreKind::Crashable => Store::Crashable(Arc::new(CrashKv::default())),
            },
            vfs: None,
        };
        d.open();
        Ok(d)
    }

    fn open(&mut self) {
        let cache = self.dir.path();
        let kv: Arc<dyn kv::Kv> = match &self.store {
            Store::Crashable(kv) => kv.clone(),
            Store::Sled => {
                // sled's flusher thread lets go of the file lock a moment
                // after the previous instance is dropped.
                let mut tries = 0;
                loop {
                    match kv::SledKv::open(&cache.join("meta")) {
                        Ok(kv) => break Arc::new(kv),
                        Err(VfsError::Busy(_)) if tries < 200 => {
                            tries += 1;
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        Err(e) => panic!("opening the metadata store: {e}"),
                    }
                }
            }
        };
        self.vfs = Some(open_vfs_on(
            kv,
            cache,
            self.id,
            &self.name,
            self.remote.clone(),
        ));
    }

    pub(super) fn vfs(&self) -> Arc<Vfs> {
        self.vfs.clone().expect("open")
    }

    pub(super) fn remote(&self) -> Arc<dyn Remote> {
        self.remote.clone()
    }

    /// Closes the device and opens it again; with `crash`, without
    /// `fsync_all` first, from what the store had flushed (sled cannot
    /// lose its writes in-process: there a crash is a reopen).
    pub(super) fn reopen(&mut self, crash: bool) {
        let vfs = self.vfs.take().expect("open");
        if !crash || matches!(self.store, Store::Sled) {
            vfs.fsync_all().unwrap();
        }
        if let Store::Crashable(kv) = &self.store {
            self.store = Store::Crashable(kv.after_crash());
        }
        assert_eq!(Arc::strong_count(&vfs), 1, "someone still holds the Vfs");
        drop(vfs);
        self.open();
    }

    /// Runs the uploader until it has nothing left.
    pub(super) async fn upload(&self) -> Result<(), TestCaseError> {
        let vfs = self.vfs();
        let up = Uploader::new(vfs.clone(), self.remote.clone());
        let mut rounds = 0;
        while up
            .run_once()
            .await
            .map_err(|e| TestCaseError::fail(format!("upload: {e:#}")))?
        {
            rounds += 1;
            prop_assert!(rounds < 100, "the uploader never drains");
        }
        prop_assert_eq!(vfs.meta.journal_len(), 0, "journal left after upload");
        Ok(())
    }

    pub(super) async fn pull(&self) -> Result<(), TestCaseError> {
        Follower::new(self.vfs(), self.remote.clone())
            .pull_all()
            .await
            .map_err(|e| TestCaseError::fail(format!("pull: {e}")))
    }
}

/// The server's live tree as the change log from cursor 0 describes it,
/// with every file's content fetched and hashed.
pub(super) async fn server_tree(remote: &dyn Remote) -> Result<Tree, String> {
    let mut nodes: HashMap<NodeId, NodeRecord> = HashMap::new();
    let mut cursor = 0;
    loop {
        let page = remote
            .pull(cursor, 1000)
            .await
            .map_err(|e| format!("pull from {cursor}: {e}"))?;
        for rec in page.changes {
            if nodes.get(&rec.node_id).is_none_or(|old| old.seq < rec.seq) {
                nodes.insert(rec.node_id, rec);
            }
        }
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    let path_of = |rec: &NodeRecord| -> Result<String, String> {
        let mut parts = vec![rec.name.clone()];
        let mut parent = rec.parent.ok_or("the root has no path")?;
        while parent != NodeId::ROOT {
            let p = nodes
                .get(&parent)
                .ok_or_else(|| format!("parent {parent:?} of {} is unknown", rec.name))?;
            if p.deleted {
                return Err(format!("parent {} of {} is deleted", p.name, rec.name));
            }
            parts.push(p.name.clone());
            parent = p.parent.ok_or("a folder below the root has no parent")?;
            if parts.len() > 64 {
                return Err(format!("a parent cycle above {}", rec.name));
            }
        }
        parts.reverse();
        Ok(parts.join("/"))
    };
    let mut tree = Tree::new();
    for rec in nodes.values() {
        if rec.deleted || rec.parent.is_none() {
            continue;
        }
        // Every name of the node: its first entry, then its links.
        let mut paths = Vec::new();
        let mut entries = vec![rec.clone()];
        for l in &rec.links {
            entries.push(NodeRecord {
                parent: Some(l.parent),
                name: l.name.clone(),
                ..rec.clone()
            });
        }
        for entry in &entries {
            match path_of(entry) {
                Ok(p) => paths.push(p),
                Err(e) => {
                    tree.insert(format!("?{:?}", rec.node_id), Seen::inconsistent(e));
                }
            }
        }
        if paths.len() != entries.len() {
            continue;
        }
        let same_as = (paths.len() > 1).then(|| paths.iter().min().expect("names").clone());
        let nlink = paths.len() as u32;
        let snap = match rec.meta.kind {
            kind @ (NodeKind::Fifo
            | NodeKind::Socket
            | NodeKind::CharDevice
            | NodeKind::BlockDevice) => Snap::Special {
                kind,
                rdev: rec.meta.rdev,
                nlink,
                same_as: same_as.clone(),
            },
            NodeKind::Dir => Snap::Dir,
            NodeKind::Symlink => match &rec.meta.symlink_target {
                Some(t) => Snap::Symlink(t.clone()),
                None => Snap::Inconsistent("a symlink without a target".into()),
            },
            NodeKind::File => match &rec.meta.content {
                None => Snap::Inconsistent("a file without content".into()),
                Some(content) => {
                    let mut hasher = blake3::Hasher::new();
                    let mut size = 0u64;
                    for c in &content.manifest.chunks {
                        let data = remote
                            .get_chunk(c.id)
                            .await
                            .map_err(|e| format!("chunk of {}: {e}", paths[0]))?;
                        size += data.len() as u64;
                        hasher.update(&data);
                    }
                    if size == content.size() {
                        Snap::File {
                            size,
                            hash: Some(hasher.finalize()),
                            nlink,
                            same_as,
                        }
                    } else {
                        Snap::Inconsistent(format!("{size} bytes, manifest {}", content.size()))
                    }
                }
            },
        };
        // The server's records as stored: numeric ids, who set them.
        let meta = MetaSnap {
            mode: rec.meta.mode,
            uid: rec.meta.uid.unwrap_or(0),
            gid: rec.meta.gid.unwrap_or(0),
            ids_from: rec.meta.ids_from,
            mtime: Some(rec.meta.mtime),
            atime: Some(rec.meta.atime),
            xattrs: rec
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
        };
        let seen = Seen { snap, meta };
        for path in paths {
            if tree.insert(path.clone(), seen.clone()).is_some() {
                tree.insert(path, Seen::inconsistent("two live nodes".into()));
            }
        }
    }
    Ok(tree)
}

/// What a new device of the account shows after its first pull. It
/// mounts with `--keep-ids`, so that it shows the numeric owners and
/// groups every device set as they are stored (without it, every id set
/// elsewhere shows as its mounting user, which would check nothing).
pub(super) async fn fresh_device_tree(server: &InProcessServer) -> Result<Tree, String> {
    let remote = server
        .device("fresh")
        .await
        .map_err(|e| format!("registering: {e:#}"))?;
    let id = remote.device_id();
    let remote: Arc<dyn Remote> = Arc::new(remote);
    let dir = tempfile::tempdir().unwrap();
    let chunks = ChunkCache::open(dir.path().join("chunks"), 1 << 30, 64 << 20, remote.clone())
        .map_err(|e| format!("chunk cache: {e}"))?;
    let vfs = Vfs::open(
        VfsConfig {
            cache_dir: dir.path().to_path_buf(),
            device_id: id,
            device_name: "fresh".into(),
            read_only: false,
            uid: 0,
            gid: 0,
            fsync_remote: false,
            keep_ids: true,
        },
        Arc::new(CrashKv::default()),
        chunks,
    )
    .map_err(|e| format!("opening: {e}"))?;
    Follower::new(vfs.clone(), remote)
        .pull_all()
        .await
        .map_err(|e| format!("pull: {e}"))?;
    snapshot(&vfs, true)
        .await
        .map_err(|e| format!("snapshot: {e}"))
}

/// The device's tree (with content when `content`) against the model.
pub(super) async fn check_tree(
    vfs: &Vfs,
    model: &mut Model,
    content: bool,
    label: &str,
) -> Result<(), TestCaseError> {
    model.forget_moved_atimes();
    let mut got = snapshot(vfs, content)
        .await
        .map_err(|e| TestCaseError::fail(format!("{label}: snapshot failed: {e}")))?;
    let expected = model.snapshot(content, Viewer::Device(vfs.device_id));
    mask_unknown(&mut got, &expected);
    prop_assert_eq!(got, expected, "{}", label);
    Ok(())
}

/// After a drain: the devices' trees, the server's live tree and a fresh
/// device's tree all equal the model (names, kinds, sizes, BLAKE3 of the
/// content, symlink targets, device numbers; modes, owners as each view
/// shows them, known mtimes, extended attributes). Expected conflict copies are named from the
/// first device's tree first. With `no_conflicts`, no name may contain
/// `(conflict`.
pub(super) async fn check_everywhere(
    server: &InProcessServer,
    devices: &[&Device],
    model: &mut Model,
    no_conflicts: bool,
    label: &str,
) -> Result<(), TestCaseError> {
    let fail = |what: &str, e: String| TestCaseError::fail(format!("{label}: {what}: {e}"));
    model.forget_moved_atimes();
    let mut views = Vec::new();
    for d in devices {
        let tree = snapshot(&d.vfs(), true)
            .await
            .map_err(|e| fail(&format!("device {}", d.name), e.to_string()))?;
        views.push((format!("device {}", d.name), Viewer::Device(d.id), tree));
    }
    let remote = devices[0].remote();
    views.push((
        "server".into(),
        Viewer::Server,
        server_tree(&*remote).await.map_err(|e| fail("server", e))?,
    ));
    views.push((
        "fresh device".into(),
        Viewer::KeepIds,
        fresh_device_tree(server)
            .await
            .map_err(|e| fail("fresh device", e))?,
    ));
    model
        .adopt_conflicts(&views[0].2)
        .map_err(|e| fail(&views[0].0, e))?;
    for (who, viewer, got) in &mut views {
        let expected = model.snapshot(true, *viewer);
        mask_unknown(got, &expected);
        prop_assert_eq!(&*got, &expected, "{}: {}", label, who);
        if no_conflicts {
            let copies: Vec<&String> = got.keys().filter(|p| p.contains("(conflict")).collect();
            prop_assert!(
                copies.is_empty(),
                "{}: {}: conflict copies {:?}",
                label,
                who,
                copies
            );
        }
    }
    Ok(())
}
