//! What the core's tests share: a vfs over a metadata store and a chunk
//! cache in a folder, with any remote; and [`CrashKv`], a store that loses
//! what was not flushed, as a process crash inside sled's flush interval
//! does.

use super::kv::{Kv, KvWrite};
use super::*;
use crate::remote::in_process::InProcessServer;
use crate::remote::Remote;
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;
use std::collections::BTreeMap;

/// Opens (or reopens) the core with its cache in `dir` (sled under
/// `dir/meta`), as device `device` named `name`, talking to `remote`.
pub(crate) fn open_vfs(
    dir: &std::path::Path,
    device: DeviceId,
    name: &str,
    remote: Arc<dyn Remote>,
) -> Arc<Vfs> {
    let kv = kv::SledKv::open(&dir.join("meta")).unwrap();
    open_vfs_on(Arc::new(kv), dir, device, name, remote)
}

/// [`open_vfs`] over a given metadata store.
pub(crate) fn open_vfs_on(
    kv: Arc<dyn Kv>,
    dir: &std::path::Path,
    device: DeviceId,
    name: &str,
    remote: Arc<dyn Remote>,
) -> Arc<Vfs> {
    let chunks = ChunkCache::open(dir.join("chunks"), 1 << 30, 64 << 20, remote).unwrap();
    Vfs::open(
        VfsConfig {
            cache_dir: dir.to_path_buf(),
            device_id: device,
            device_name: name.into(),
            read_only: false,
            uid: 0,
            gid: 0,
            fsync_remote: false,
            keep_ids: false,
        },
        kv,
        chunks,
    )
    .unwrap()
}

/// Two devices of one account on the real server rules
/// ([`InProcessServer`]): "laptop" (`a`, remote `ra`) and "desktop" (`b`,
/// remote `rb`; id `idb` and cache folder `db`, to reopen it). Plain
/// handles: bind what a test needs and leave the rest with `..`; the
/// server and the folders live in the [`Held`] returned beside it.
pub(crate) struct TwoDevices {
    pub idb: DeviceId,
    pub ra: Arc<dyn Remote>,
    pub rb: Arc<dyn Remote>,
    pub db: std::path::PathBuf,
    pub a: Arc<Vfs>,
    pub b: Arc<Vfs>,
}

/// What [`TwoDevices`] runs on; keep it alive as long as the devices.
pub(crate) struct Held {
    _server: InProcessServer,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Starts a server in process and opens [`TwoDevices`] on it.
pub(crate) async fn two_devices() -> (TwoDevices, Held) {
    let server = InProcessServer::new().await.unwrap();
    let (ra, rb) = (
        server.device("laptop").await.unwrap(),
        server.device("desktop").await.unwrap(),
    );
    let (ida, idb) = (ra.device_id(), rb.device_id());
    let (ra, rb): (Arc<dyn Remote>, Arc<dyn Remote>) = (Arc::new(ra), Arc::new(rb));
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (da, db) = (dirs.0.path().to_path_buf(), dirs.1.path().to_path_buf());
    let a = open_vfs(&da, ida, "laptop", ra.clone());
    let b = open_vfs(&db, idb, "desktop", rb.clone());
    let devices = TwoDevices {
        idb,
        ra,
        rb,
        db,
        a,
        b,
    };
    (
        devices,
        Held {
            _server: server,
            _dirs: dirs,
        },
    )
}

/// Replaces the content of file `ino` with `data` (open with truncate,
/// write, close).
pub(crate) fn overwrite(vfs: &Vfs, ino: u64, data: &[u8]) {
    let fh = vfs.open_file(ino, true, true).unwrap();
    assert_eq!(vfs.write(fh, 0, data).ready().unwrap(), data.len() as u32);
    vfs.release(fh).unwrap();
}

/// An in-memory [`Kv`] that keeps what was applied and, apart, what was
/// flushed: [`CrashKv::after_crash`] is the store a restart finds.
#[derive(Default)]
pub(crate) struct CrashKv {
    live: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    durable: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl CrashKv {
    /// A store holding only what this one had flushed.
    pub(crate) fn after_crash(&self) -> Arc<CrashKv> {
        let durable = self.durable.lock().clone();
        Arc::new(CrashKv {
            live: Mutex::new(durable.clone()),
            durable: Mutex::new(durable),
        })
    }
}

impl Kv for CrashKv {
    fn get(&self, key: &[u8]) -> VfsResult<Option<Vec<u8>>> {
        Ok(self.live.lock().get(key).cloned())
    }
    fn apply(&self, writes: Vec<KvWrite>) -> VfsResult<()> {
        let mut live = self.live.lock();
        for (k, v) in writes {
            match v {
                Some(v) => live.insert(k, v),
                None => live.remove(&k),
            };
        }
        Ok(())
    }
    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> VfsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .live
            .lock()
            .range(start.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn flush(&self) -> VfsResult<()> {
        *self.durable.lock() = self.live.lock().clone();
        Ok(())
    }
}

/// A disk that, on a simulated power loss, keeps only what was synced
/// through it (the technique of crash-consistency checkers such as ALICE):
/// every file synced reverts to its content at its last sync — and comes
/// back if it was removed since (its removal was never synced) — and every
/// file never synced vanishes.
#[derive(Default)]
pub(crate) struct SimDisk {
    pub(crate) synced: Mutex<BTreeMap<std::path::PathBuf, Vec<u8>>>,
}

impl super::wal::SyncIo for SimDisk {
    fn sync_files(
        &self,
        files: &[(std::path::PathBuf, Arc<std::fs::File>)],
    ) -> std::io::Result<()> {
        for (p, _) in files {
            let data = std::fs::read(p)?;
            self.synced.lock().insert(p.clone(), data);
        }
        Ok(())
    }
    fn sync_dir(&self, _dir: &std::path::Path) -> std::io::Result<()> {
        Ok(())
    }
}

impl SimDisk {
    /// The power loss, for the files under `roots`.
    pub(crate) fn power_loss(&self, roots: &[&std::path::Path]) {
        let synced = self.synced.lock();
        for root in roots {
            for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
                if e.path().is_file() && !synced.contains_key(&e.path()) {
                    std::fs::remove_file(e.path()).unwrap();
                }
            }
        }
        for (p, data) in synced.iter() {
            if roots.iter().any(|r| p.starts_with(r)) {
                std::fs::write(p, data).unwrap();
            }
        }
    }
}

/// Uploads the whole journal, then applies everything the server has.
pub(crate) async fn sync(vfs: &Arc<Vfs>, remote: &Arc<dyn Remote>) {
    let up = Uploader::new(vfs.clone(), remote.clone());
    while vfs.journal_len() > 0 {
        assert!(up.run_once().await.unwrap(), "the upload made progress");
    }
    Follower::new(vfs.clone(), remote.clone())
        .pull_all()
        .await
        .unwrap();
}

/// Applies everything the server has.
pub(crate) async fn pull(vfs: &Arc<Vfs>, remote: &Arc<dyn Remote>) {
    Follower::new(vfs.clone(), remote.clone())
        .pull_all()
        .await
        .unwrap();
}

/// Creates file `name` in `parent` holding `data`; its inode.
pub(crate) fn write_file(vfs: &Vfs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = vfs.create(parent, name.as_bytes(), 0o644, true).unwrap();
    assert_eq!(vfs.write(fh, 0, data).ready().unwrap(), data.len() as u32);
    vfs.release(fh).unwrap();
    attr.ino
}

/// The whole content of file `ino`.
pub(crate) async fn read_all(vfs: &Vfs, ino: u64) -> Vec<u8> {
    let fh = vfs.open_file(ino, false, false).unwrap();
    let size = vfs.getattr(ino).unwrap().size;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let part = vfs.read(fh, out.len() as u64, 128 * 1024).await.unwrap();
        assert!(!part.is_empty());
        out.extend_from_slice(&part);
    }
    vfs.release(fh).unwrap();
    out
}

/// The names in folder `dir` (without `.` and `..`).
pub(crate) fn names(vfs: &Vfs, dir: u64) -> Vec<String> {
    vfs.readdir(dir, None, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .filter(|n| n != "." && n != "..")
        .collect()
}
