//! A crash inside the metadata store's flush interval (kill -9 of the
//! mount) never leaves this device behind what the server already has from
//! it: a round sends only changes that are durable locally. (Found by a
//! break-it run: after such a crash, replayed older records collided with
//! the newer ones, one device made conflict copies of its own writes, and
//! a file renamed over another vanished.)

use super::test_support::{open_vfs_on, CrashKv};
use super::*;
use crate::protocol::{CommitOp, CommitOutcome, PullResponse};
use crate::remote::in_process::InProcessServer;
use crate::remote::{Remote, RemoteError};
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;

/// Once armed, "crashes" the device at its next commit: records what a
/// crash then would leave of its metadata store, lets the server apply the
/// commit, and answers nothing (the device never learns the outcome).
struct CrashPointAtCommit {
    inner: Arc<dyn Remote>,
    kv: Arc<CrashKv>,
    armed: std::sync::atomic::AtomicBool,
    after_crash: Mutex<Option<Arc<CrashKv>>>,
}

#[async_trait::async_trait]
impl Remote for CrashPointAtCommit {
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        self.inner.missing_chunks(ids).await
    }
    async fn put_chunk(&self, id: ChunkId, data: bytes::Bytes) -> Result<(), RemoteError> {
        self.inner.put_chunk(id, data).await
    }
    async fn get_chunk(&self, id: ChunkId) -> Result<bytes::Bytes, RemoteError> {
        self.inner.get_chunk(id).await
    }
    async fn get_chunks(
        &self,
        ids: &[ChunkId],
    ) -> Result<Vec<(ChunkId, bytes::Bytes)>, RemoteError> {
        self.inner.get_chunks(ids).await
    }
    async fn commit(&self, ops: Vec<CommitOp>) -> Result<Vec<CommitOutcome>, RemoteError> {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return self.inner.commit(ops).await;
        }
        *self.after_crash.lock() = Some(self.kv.after_crash());
        self.inner.commit(ops).await?;
        Err(RemoteError::Unreachable("the device crashed".into()))
    }
    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullResponse, RemoteError> {
        self.inner.pull(cursor, limit).await
    }
    async fn space(&self) -> Result<crate::protocol::SpaceReport, RemoteError> {
        self.inner.space().await
    }
}

fn write(vfs: &Vfs, parent: u64, name: &str, data: &[u8]) {
    let (_, fh) = vfs.create(parent, name.as_bytes(), 0o644, true).unwrap();
    vfs.write(fh, 0, data).ready().unwrap();
    vfs.release(fh).unwrap();
}

async fn read(vfs: &Vfs, parent: u64, name: &str) -> Option<Vec<u8>> {
    let ino = vfs.lookup(parent, name.as_bytes()).ok()?.ino;
    let fh = vfs.open_file(ino, false, false).unwrap();
    let data = vfs.read(fh, 0, 1 << 20).await.unwrap();
    vfs.release(fh).unwrap();
    Some(data)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_an_upload_round_loses_nothing_the_server_has() {
    let server = InProcessServer::new().await.unwrap();
    let remote = server.device("laptop").await.unwrap();
    let device = remote.device_id();
    let remote: Arc<dyn Remote> = Arc::new(remote);
    let cache = tempfile::tempdir().unwrap();
    let kv = Arc::new(CrashKv::default());
    let crash_point = Arc::new(CrashPointAtCommit {
        inner: remote.clone(),
        kv: kv.clone(),
        armed: false.into(),
        after_crash: Mutex::new(None),
    });
    let vfs = open_vfs_on(
        kv.clone(),
        cache.path(),
        device,
        "laptop",
        crash_point.clone(),
    );
    let up = Uploader::new(vfs.clone(), crash_point.clone());
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap().ino;
    for i in 1..=3 {
        write(&vfs, d, "f.tmp", format!("v{i}").as_bytes());
        vfs.rename(d, b"f.tmp", d, b"f", false).unwrap();
    }
    while up.run_once().await.unwrap() {}
    // Once more; the rename over the uploaded `f` is not flushed (only
    // `close` is)...
    write(&vfs, d, "f.tmp", b"v4");
    vfs.rename(d, b"f.tmp", d, b"f", false).unwrap();
    // ...when a round sends it, and the process dies as the server
    // applies it.
    crash_point.armed.store(true, Ordering::SeqCst);
    assert!(up.run_once().await.is_err());
    drop(up);
    drop(vfs);
    let survived = crash_point.after_crash.lock().take().unwrap();
    let vfs = open_vfs_on(survived, cache.path(), device, "laptop", remote.clone());
    let up = Uploader::new(vfs.clone(), remote.clone());
    while up.run_once().await.unwrap() {}
    Follower::new(vfs.clone(), remote.clone())
        .pull_all()
        .await
        .unwrap();
    let names: Vec<String> = vfs
        .readdir(d, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["f"], "the device's end state after the crash");
    assert_eq!(read(&vfs, d, "f").await.unwrap(), b"v4");
    // The server has exactly the same.
    let fresh = tempfile::tempdir().unwrap();
    let other = server.device("desktop").await.unwrap();
    let other_id = other.device_id();
    let other: Arc<dyn Remote> = Arc::new(other);
    let b = open_vfs_on(
        Arc::new(CrashKv::default()),
        fresh.path(),
        other_id,
        "desktop",
        other.clone(),
    );
    Follower::new(b.clone(), other).pull_all().await.unwrap();
    let bd = b.lookup(ROOT_INO, b"d").unwrap().ino;
    let names: Vec<String> = b
        .readdir(bd, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["f"]);
    assert_eq!(read(&b, bd, "f").await.unwrap(), b"v4");
}

/// A dirty file whose working copy is missing at start (it must not
/// happen; if it does) reads its last uploaded version, is shown as
/// failed with the reason, and holds no upload back.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_working_copy_is_shown_and_blocks_nothing() {
    let server = InProcessServer::new().await.unwrap();
    let remote = server.device("laptop").await.unwrap();
    let device = remote.device_id();
    let remote: Arc<dyn Remote> = Arc::new(remote);
    let cache = tempfile::tempdir().unwrap();
    let kv = Arc::new(CrashKv::default());
    let vfs = open_vfs_on(kv.clone(), cache.path(), device, "laptop", remote.clone());
    let up = Uploader::new(vfs.clone(), remote.clone());
    write(&vfs, ROOT_INO, "f", b"uploaded");
    while up.run_once().await.unwrap() {}
    let ino = vfs.lookup(ROOT_INO, b"f").unwrap().ino;
    let fh = vfs.open_file(ino, true, true).unwrap();
    vfs.write(fh, 0, b"never sent").ready().unwrap();
    vfs.release(fh).unwrap();
    write(&vfs, ROOT_INO, "g", b"after it");
    // Durable (a `close` alone survives a process crash through the
    // write-ahead log, which this store stands in for without one).
    vfs.fsync_all().unwrap();
    let node = vfs.meta.inode(ino).unwrap().unwrap();
    std::fs::remove_file(vfs.work_path_of(&node)).unwrap();
    drop(up);
    drop(vfs);
    let vfs = open_vfs_on(
        kv.after_crash(),
        cache.path(),
        device,
        "laptop",
        remote.clone(),
    );
    assert_eq!(read(&vfs, ROOT_INO, "f").await.unwrap(), b"uploaded");
    assert_eq!(vfs.getxattr(ino, b"user.nimbus.state").unwrap(), b"failed");
    let q = vfs
        .meta
        .journal()
        .quarantined(vfs.meta.kv().as_ref())
        .unwrap();
    assert!(q[0].1.reason.contains("lost"), "{q:?}");
    let up = Uploader::new(vfs.clone(), remote.clone());
    while up.run_once().await.unwrap() {}
    assert_eq!(vfs.meta.journal_len(), 0, "nothing stuck behind it");
    assert_eq!(
        vfs.getxattr(
            vfs.lookup(ROOT_INO, b"g").unwrap().ino,
            b"user.nimbus.state"
        )
        .unwrap(),
        b"cached"
    );
}
