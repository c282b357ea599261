//! Core tests without a kernel: the vfs over a real sled store and chunk
//! cache, with the in-memory remote.

use super::test_support::read_all;
use super::*;
use crate::remote::memory::{folder_meta, MemoryRemote};
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;

struct Fixture {
    dir: tempfile::TempDir,
    remote: Arc<MemoryRemote>,
    device: DeviceId,
}

impl Fixture {
    fn new() -> Self {
        let device = DeviceId::random();
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            remote: Arc::new(MemoryRemote::new(device)),
            device,
        }
    }
    fn open(&self) -> Arc<Vfs> {
        super::test_support::open_vfs(self.dir.path(), self.device, "test", self.remote.clone())
    }
}

fn write_file(vfs: &Vfs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = vfs.create(parent, name.as_bytes(), 0o644, true).unwrap();
    assert_eq!(vfs.write(fh, 0, data).ready().unwrap(), data.len() as u32);
    vfs.flush(fh).unwrap();
    vfs.release(fh).unwrap();
    attr.ino
}

#[tokio::test(flavor = "multi_thread")]
async fn journal_survives_reopen_and_drains() {
    let fx = Fixture::new();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let ino;
    {
        let vfs = fx.open();
        let d = vfs.mkdir(meta::ROOT_INO, b"docs", 0o755).unwrap();
        ino = write_file(&vfs, d.ino, "a.bin", &payload);
        assert!(vfs.meta.journal_len() >= 2);
        vfs.fsync_all().unwrap();
    } // "crash": nothing uploaded yet
    let vfs = fx.open();
    assert!(vfs.meta.journal_len() >= 2, "journal lost on reopen");
    assert_eq!(vfs.getattr(ino).unwrap().size, payload.len() as u64);
    assert_eq!(read_all(&vfs, ino).await, payload);
    let up = Uploader::new(vfs.clone(), fx.remote.clone());
    while up.run_once().await.unwrap() {}
    assert_eq!(vfs.meta.journal_len(), 0);
    let rec = fx.remote.node("a.bin").expect("file committed");
    assert_eq!(rec.meta.size(), payload.len() as u64);
    assert!(!vfs.meta.inode(ino).unwrap().unwrap().dirty);
    // The working copy is gone; reads now come from chunks.
    assert_eq!(read_all(&vfs, ino).await, payload);
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_keeps_everything_queued() {
    let fx = Fixture::new();
    let vfs = fx.open();
    write_file(&vfs, meta::ROOT_INO, "f", b"hello");
    fx.remote
        .offline
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let up = Uploader::new(vfs.clone(), fx.remote.clone());
    assert!(up.run_once().await.is_err());
    assert!(vfs.meta.journal_len() > 0);
    fx.remote
        .offline
        .store(false, std::sync::atomic::Ordering::SeqCst);
    while up.run_once().await.unwrap() {}
    assert_eq!(vfs.meta.journal_len(), 0);
    assert!(fx.remote.node("f").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn created_then_deleted_never_reaches_server() {
    let fx = Fixture::new();
    let vfs = fx.open();
    write_file(&vfs, meta::ROOT_INO, "tmp", b"x");
    vfs.unlink(meta::ROOT_INO, b"tmp").unwrap();
    let up = Uploader::new(vfs.clone(), fx.remote.clone());
    while up.run_once().await.unwrap() {}
    assert!(fx.remote.node("tmp").is_none());
    assert_eq!(vfs.meta.journal_len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn child_of_renamed_new_folder_is_pushed_after_its_parent() {
    let fx = Fixture::new();
    let vfs = fx.open();
    let a = vfs.mkdir(meta::ROOT_INO, b"a", 0o755).unwrap();
    write_file(&vfs, a.ino, "f", b"content");
    let c = vfs.mkdir(meta::ROOT_INO, b"c", 0o755).unwrap();
    vfs.rename(a.ino, b"f", c.ino, b"g", false).unwrap();
    let up = Uploader::new(vfs.clone(), fx.remote.clone());
    while up.run_once().await.unwrap() {}
    let g = fx.remote.node("g").unwrap();
    let c_rec = fx.remote.node("c").unwrap();
    assert_eq!(g.parent, Some(c_rec.node_id));
    assert!(c_rec.seq < g.seq, "parent must be committed first");
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_changes_apply_and_wait_for_parents() {
    let fx = Fixture::new();
    let vfs = fx.open();
    let dir = crate::protocol::NodeId::random();
    let child = crate::protocol::NodeId::random();
    // Child first (its folder was moved later, so the folder's record
    // comes after it in the log).
    fx.remote.inject(NodeRecord {
        node_id: child,
        parent: Some(dir),
        name: "inner".into(),
        links: Vec::new(),
        deleted: false,
        meta: folder_meta(),
        vv: Default::default(),
        seq: 0,
    });
    fx.remote.inject(NodeRecord {
        node_id: dir,
        parent: Some(crate::protocol::NodeId::ROOT),
        name: "outer".into(),
        links: Vec::new(),
        deleted: false,
        meta: folder_meta(),
        vv: Default::default(),
        seq: 0,
    });
    Follower::new(vfs.clone(), fx.remote.clone())
        .pull_all()
        .await
        .unwrap();
    let outer = vfs.lookup(meta::ROOT_INO, b"outer").unwrap();
    let inner = vfs.lookup(outer.ino, b"inner").unwrap();
    assert_eq!(inner.kind, NodeKind::Dir);
    assert_eq!(vfs.path_of(inner.ino).unwrap(), "outer/inner");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_readers_share_one_fetch() {
    let fx = Fixture::new();
    let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    {
        let vfs = fx.open();
        write_file(&vfs, meta::ROOT_INO, "shared", &payload);
        let up = Uploader::new(vfs.clone(), fx.remote.clone());
        while up.run_once().await.unwrap() {}
    }
    // Fresh cache dir, same remote: every chunk must come from the remote.
    let fx2 = Fixture {
        dir: tempfile::tempdir().unwrap(),
        remote: fx.remote.clone(),
        device: fx.device,
    };
    let vfs = fx2.open();
    Follower::new(vfs.clone(), fx2.remote.clone())
        .pull_all()
        .await
        .unwrap();
    let ino = vfs.lookup(meta::ROOT_INO, b"shared").unwrap().ino;
    let before = fx.remote.gets.load(std::sync::atomic::Ordering::SeqCst);
    let reads = (0..8).map(|_| read_all(&vfs, ino));
    for got in futures::future::join_all(reads).await {
        assert_eq!(got, payload);
    }
    let chunks = vfs
        .meta
        .content(ino)
        .unwrap()
        .unwrap()
        .manifest
        .chunks
        .len() as u64;
    let gets = fx.remote.gets.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(gets, chunks, "each chunk fetched exactly once");
}

#[tokio::test(flavor = "multi_thread")]
async fn names_and_namespace_errors() {
    let fx = Fixture::new();
    let vfs = fx.open();
    assert!(matches!(
        vfs.mkdir(1, b"a/b", 0o755),
        Err(VfsError::InvalidName(_))
    ));
    assert!(matches!(
        vfs.mkdir(1, b"..", 0o755),
        Err(VfsError::InvalidName(_))
    ));
    assert!(matches!(
        vfs.mkdir(1, &[b'x'; 256], 0o755),
        Err(VfsError::InvalidName(crate::protocol::NameError::TooLong))
    ));
    let d = vfs.mkdir(1, b"d", 0o755).unwrap();
    assert!(matches!(vfs.mkdir(1, b"d", 0o755), Err(VfsError::Exists)));
    write_file(&vfs, d.ino, "f", b"1");
    assert!(matches!(vfs.rmdir(1, b"d"), Err(VfsError::NotEmpty)));
    assert!(matches!(vfs.unlink(1, b"d"), Err(VfsError::IsDir)));
    assert!(matches!(vfs.rmdir(d.ino, b"f"), Err(VfsError::NotDir)));
    let sub = vfs.mkdir(d.ino, b"sub", 0o755).unwrap();
    assert!(matches!(
        vfs.rename(1, b"d", sub.ino, b"x", false),
        Err(VfsError::InvalidArgument(_))
    ));
    // Nothing invalid reached the journal or the namespace.
    let names: Vec<String> = vfs
        .readdir(1, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["d"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn pulled_echo_of_a_locally_deleted_file_does_not_come_back() {
    let fx = Fixture::new();
    let vfs = fx.open();
    write_file(&vfs, meta::ROOT_INO, "foo", b"v1");
    let up = Uploader::new(vfs.clone(), fx.remote.clone());
    while up.run_once().await.unwrap() {}
    // Before the follower saw the upload: delete and recreate the name,
    // and let the kernel forget the old inode.
    let old = vfs.lookup(meta::ROOT_INO, b"foo").unwrap().ino;
    vfs.unlink(meta::ROOT_INO, b"foo").unwrap();
    vfs.forget(old, u64::MAX);
    write_file(&vfs, meta::ROOT_INO, "foo", b"v2");
    let follower = Follower::new(vfs.clone(), fx.remote.clone());
    follower.pull_all().await.unwrap();
    let names = |vfs: &Vfs| -> Vec<String> {
        vfs.readdir(meta::ROOT_INO, None, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
    };
    assert_eq!(names(&vfs), vec!["foo"]);
    let ino = vfs.lookup(meta::ROOT_INO, b"foo").unwrap().ino;
    assert_eq!(read_all(&vfs, ino).await, b"v2");
    while up.run_once().await.unwrap() {}
    follower.pull_all().await.unwrap();
    assert_eq!(names(&vfs), vec!["foo"]);
    assert_eq!(read_all(&vfs, ino).await, b"v2");
    use crate::remote::Remote;
    let all = fx.remote.pull(0, 1000).await.unwrap().changes;
    let live: Vec<_> = all
        .iter()
        .filter(|n| n.name == "foo" && !n.deleted)
        .collect();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].meta.size(), 2);
    assert!(all.iter().any(|n| n.name == "foo" && n.deleted));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_the_server_refuses_for_good_does_not_block_the_rest() {
    let fx = Fixture::new();
    let vfs = fx.open();
    fx.remote.refuse_names.lock().push("refused".into());
    write_file(&vfs, meta::ROOT_INO, "before", b"1");
    write_file(&vfs, meta::ROOT_INO, "refused", b"2");
    write_file(&vfs, meta::ROOT_INO, "after", b"3");
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(Uploader::new(vfs.clone(), fx.remote.clone()).run(stop.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while vfs.meta.journal_len() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "journal did not drain"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap();
    assert!(fx.remote.node("before").is_some());
    assert!(fx.remote.node("after").is_some());
    assert!(fx.remote.node("refused").is_none());
    let failed = vfs
        .meta
        .journal()
        .quarantined(vfs.meta.kv().as_ref())
        .unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].1.path, "refused");
    // The refused file's content is still here, it reads `failed`, and it
    // still counts as not uploaded.
    let ino = vfs.lookup(meta::ROOT_INO, b"refused").unwrap().ino;
    assert_eq!(read_all(&vfs, ino).await, b"2");
    assert_eq!(vfs.getxattr(ino, b"user.nimbus.state").unwrap(), b"failed");
    let p = vfs.pending_below(meta::ROOT_INO, 10).unwrap();
    assert_eq!((p.count, p.failed), (1, 1), "{p:?}");
    // The quarantine survives a restart.
    let failed_ino = ino;
    drop(vfs);
    let vfs = fx.open();
    assert_eq!(
        vfs.getxattr(failed_ino, b"user.nimbus.state").unwrap(),
        b"failed"
    );
}

/// A pulled record whose folder arrives only in a later pull — after the
/// cursor moved past it, and across a restart — still applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_whose_folder_arrives_in_a_later_pull_is_kept_and_applied() {
    let fx = Fixture::new();
    let dir = crate::protocol::NodeId::random();
    let child = crate::protocol::NodeId::random();
    let record = |node_id, parent, name: &str| NodeRecord {
        node_id,
        parent: Some(parent),
        name: name.into(),
        links: Vec::new(),
        deleted: false,
        meta: folder_meta(),
        vv: Default::default(),
        seq: 0,
    };
    {
        let vfs = fx.open();
        fx.remote.inject(record(child, dir, "inner"));
        Follower::new(vfs.clone(), fx.remote.clone())
            .pull_all()
            .await
            .unwrap();
        assert!(vfs.lookup(meta::ROOT_INO, b"outer").is_err());
        assert!(vfs.cursor().unwrap() > 0);
        assert_eq!(vfs.status().snapshot().waiting_remote, 1);
        let status: serde_json::Value =
            serde_json::from_slice(&vfs.getxattr(meta::ROOT_INO, b"user.nimbus.status").unwrap())
                .unwrap();
        assert_eq!(status["waiting_remote"], 1, "{status}");
    } // restart before the folder arrives
    fx.remote
        .inject(record(dir, crate::protocol::NodeId::ROOT, "outer"));
    let vfs = fx.open();
    Follower::new(vfs.clone(), fx.remote.clone())
        .pull_all()
        .await
        .unwrap();
    let outer = vfs.lookup(meta::ROOT_INO, b"outer").unwrap();
    let inner = vfs.lookup(outer.ino, b"inner").unwrap();
    assert_eq!(vfs.path_of(inner.ino).unwrap(), "outer/inner");
    assert!(vfs.meta.waiting_records().unwrap().is_empty());
    assert_eq!(vfs.status().snapshot().waiting_remote, 0);
}

/// A newer record of a waiting node replaces the waiting one; applying it
/// clears the wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_newer_record_of_a_waiting_node_replaces_it() {
    let fx = Fixture::new();
    let vfs = fx.open();
    let missing = crate::protocol::NodeId::random();
    let child = crate::protocol::NodeId::random();
    let mut rec = NodeRecord {
        node_id: child,
        parent: Some(missing),
        name: "lost".into(),
        links: Vec::new(),
        deleted: false,
        meta: folder_meta(),
        vv: Default::default(),
        seq: 0,
    };
    fx.remote.inject(rec.clone());
    let follower = Follower::new(vfs.clone(), fx.remote.clone());
    follower.pull_all().await.unwrap();
    assert_eq!(vfs.meta.waiting_records().unwrap().len(), 1);
    // Moved to the root by another device: applies, nothing waits.
    rec.parent = Some(crate::protocol::NodeId::ROOT);
    rec.name = "found".into();
    fx.remote.inject(rec);
    follower.pull_all().await.unwrap();
    assert!(vfs.lookup(meta::ROOT_INO, b"found").is_ok());
    assert!(vfs.meta.waiting_records().unwrap().is_empty());
}

/// A manifest whose length for a chunk disagrees with the chunk's bytes
/// (a bad server, a corrupt record) fails reads and working-copy fills
/// with an error (EIO), never a panic or shifted bytes.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_disagrees_with_its_chunks_fails_reads_with_eio() {
    use crate::protocol::{ChunkId, ChunkRef, FileContent, Manifest, NodeMeta};
    use crate::remote::Remote;
    let fx = Fixture::new();
    let real: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let other = vec![9u8; 300];
    let (a, b) = (ChunkId::of(&real), ChunkId::of(&other));
    fx.remote.put_chunk(a, real.into()).await.unwrap();
    fx.remote.put_chunk(b, other.into()).await.unwrap();
    let file = |name: &str, chunks: Vec<ChunkRef>| NodeRecord {
        node_id: crate::protocol::NodeId::random(),
        parent: Some(crate::protocol::NodeId::ROOT),
        name: name.into(),
        links: Vec::new(),
        deleted: false,
        meta: NodeMeta {
            content: Some(FileContent {
                manifest: Manifest { chunks },
            }),
            ..NodeMeta::new(
                NodeKind::File,
                0o644,
                crate::protocol::Timestamp::from_ns(0),
            )
        },
        vv: Default::default(),
        seq: 0,
    };
    let long = |len| ChunkRef { id: a, len };
    let tail = ChunkRef { id: b, len: 300 };
    fx.remote.inject(file("longer", vec![long(1500), tail]));
    fx.remote.inject(file("shorter", vec![long(500), tail]));
    let vfs = fx.open();
    Follower::new(vfs.clone(), fx.remote.clone())
        .pull_all()
        .await
        .unwrap();
    for (name, at) in [("longer", 0u64), ("longer", 900), ("shorter", 100)] {
        let ino = vfs.lookup(meta::ROOT_INO, name.as_bytes()).unwrap().ino;
        let fh = vfs.open_file(ino, false, false).unwrap();
        let got = vfs.read(fh, 0, 4096).await;
        assert!(
            matches!(&got, Err(VfsError::CorruptManifest(m)) if m.contains(&a.to_hex())),
            "{name}: {got:?}"
        );
        // The chunk is in memory now; the fast path must not serve it.
        assert!(
            vfs.read_now(fh, at, 100).unwrap().is_none(),
            "{name} at {at}"
        );
        assert!(matches!(
            vfs.read(fh, at, 100).await,
            Err(VfsError::CorruptManifest(_))
        ));
        vfs.release(fh).unwrap();
        // Filling a working copy (a write to the middle) fails the same way.
        assert!(matches!(
            vfs.prepare_write(ino).await,
            Err(VfsError::CorruptManifest(_))
        ));
        assert!(!vfs
            .work_path_of(&vfs.meta.inode(ino).unwrap().unwrap())
            .exists());
    }
}

/// The FUSE adapter's request count reaches the status attribute (what
/// `nimbus status --json` and the bench's counting pass read).
#[tokio::test(flavor = "multi_thread")]
async fn the_status_attribute_publishes_the_fuse_request_count() {
    let fx = Fixture::new();
    let vfs = fx.open();
    vfs.status().note_fuse_request();
    vfs.status().note_fuse_request();
    let status: serde_json::Value =
        serde_json::from_slice(&vfs.getxattr(meta::ROOT_INO, b"user.nimbus.status").unwrap())
            .unwrap();
    assert_eq!(status["fuse_requests"], 2, "{status}");
}
