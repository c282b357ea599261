//! Journal order against the server's real rules: a sequence of operations
//! on one device reaches the server as exactly its end state, with the
//! uploader running concurrently (commits slowed down so that changes land
//! while a round is in flight). Regression tests of client-core issue
//! scenarios 12 (deletes of a folder chain created a moment before) and 13
//! (a name reused while its previous holder is still uploading).
//!
//! The server is the real one (SQLite, chunk directory) on a loopback port,
//! reached through `HttpRemote`.

use super::test_support::{open_vfs, overwrite};
use super::*;
use crate::protocol::{ChunkId, CommitOp, CommitOutcome, PullResponse};
use crate::remote::http::{login, HttpRemote, Tokens};
use crate::remote::{Remote, RemoteError};
use crate::server::{self, RunningServer, ServerConfig};
use crate::sync::uploader::Uploader;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Delays every commit, widening the window in which local changes race
/// a round in flight.
struct SlowCommits {
    inner: HttpRemote,
    delay: Duration,
}

#[async_trait::async_trait]
impl Remote for SlowCommits {
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        self.inner.missing_chunks(ids).await
    }
    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<(), RemoteError> {
        self.inner.put_chunk(id, data).await
    }
    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, RemoteError> {
        self.inner.get_chunk(id).await
    }
    async fn get_chunks(&self, ids: &[ChunkId]) -> Result<Vec<(ChunkId, Bytes)>, RemoteError> {
        self.inner.get_chunks(ids).await
    }
    async fn commit(&self, ops: Vec<CommitOp>) -> Result<Vec<CommitOutcome>, RemoteError> {
        tokio::time::sleep(self.delay).await;
        self.inner.commit(ops).await
    }
    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullResponse, RemoteError> {
        self.inner.pull(cursor, limit).await
    }
    async fn space(&self) -> Result<crate::protocol::SpaceReport, RemoteError> {
        self.inner.space().await
    }
}

struct Device {
    vfs: Arc<Vfs>,
    remote: Arc<SlowCommits>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _cache: tempfile::TempDir,
}

struct ServerFx {
    url: String,
    _server: RunningServer,
    _dir: tempfile::TempDir,
}

impl ServerFx {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServerConfig::loopback(dir.path().join("data"));
        server::add_user(&cfg, "ana", "ana-pw").await.unwrap();
        let running = server::start(cfg).await.unwrap();
        ServerFx {
            url: format!("http://{}", running.local_addr()),
            _server: running,
            _dir: dir,
        }
    }

    /// A device with its own cache and a running uploader.
    async fn device(&self, name: &str) -> Device {
        let r = login(&self.url, "ana", "ana-pw", name).await.unwrap();
        let device_id = r.device_id;
        let remote = Arc::new(SlowCommits {
            inner: HttpRemote::new(&self.url, Tokens::from(r)),
            delay: Duration::from_millis(15),
        });
        let cache = tempfile::tempdir().unwrap();
        let vfs = open_vfs(cache.path(), device_id, name, remote.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(Uploader::new(vfs.clone(), remote.clone()).run(stop.clone()));
        Device {
            vfs,
            remote,
            stop,
            task,
            _cache: cache,
        }
    }
}

impl Device {
    /// Waits (with a deadline) until the journal is empty.
    async fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.vfs.meta.journal_len() > 0 {
            assert!(Instant::now() < deadline, "journal did not drain");
            let waiting = self.vfs.drained_notify.notified();
            let _ = tokio::time::timeout(Duration::from_millis(50), waiting).await;
        }
    }
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    /// The server's live tree: path → content (None for folders).
    async fn server_tree(&self) -> BTreeMap<String, Option<Vec<u8>>> {
        let mut nodes = Vec::new();
        let mut cursor = 0;
        loop {
            let page = self.remote.pull(cursor, 1000).await.unwrap();
            nodes.extend(page.changes);
            cursor = page.cursor;
            if !page.has_more {
                break;
            }
        }
        let by_id: std::collections::HashMap<_, _> =
            nodes.iter().map(|n| (n.node_id, n.clone())).collect();
        let mut out = BTreeMap::new();
        'nodes: for n in nodes.iter().filter(|n| !n.deleted && !n.node_id.is_root()) {
            let mut parts = vec![n.name.clone()];
            let mut cur = n.parent;
            while let Some(p) = cur {
                if p.is_root() {
                    break;
                }
                let Some(pn) = by_id.get(&p) else {
                    continue 'nodes;
                };
                if pn.deleted {
                    continue 'nodes;
                }
                parts.push(pn.name.clone());
                cur = pn.parent;
            }
            parts.reverse();
            let content = match &n.meta.content {
                Some(c) => {
                    let mut data = Vec::new();
                    for ch in &c.manifest.chunks {
                        data.extend_from_slice(&self.remote.get_chunk(ch.id).await.unwrap());
                    }
                    Some(data)
                }
                None => None,
            };
            out.insert(parts.join("/"), content);
        }
        out
    }
}

fn write(vfs: &Vfs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = vfs.create(parent, name.as_bytes(), 0o644, true).unwrap();
    assert_eq!(vfs.write(fh, 0, data).ready().unwrap(), data.len() as u32);
    vfs.release(fh).unwrap();
    attr.ino
}

fn rm_rf(vfs: &Vfs, parent: u64, name: &str) {
    let Ok(a) = vfs.lookup(parent, name.as_bytes()) else {
        return;
    };
    if a.kind == NodeKind::Dir {
        for e in vfs.readdir(a.ino, None, 10_000).unwrap() {
            rm_rf(vfs, a.ino, &e.name);
        }
        vfs.rmdir(parent, name.as_bytes()).unwrap();
    } else {
        vfs.unlink(parent, name.as_bytes()).unwrap();
    }
}

fn no_conflict_names(tree: &BTreeMap<String, Option<Vec<u8>>>) {
    for path in tree.keys() {
        assert!(
            !path.contains("(conflict"),
            "a conflict copy appeared: {tree:?}"
        );
    }
}

/// Scenario 13, files: `echo v$i > d/f.lock; mv d/f.lock d/f` ten times in
/// each of several folders ends as `d/f` = `v10`, with no conflict copy.
#[tokio::test(flavor = "multi_thread")]
async fn temp_file_renamed_over_a_name_still_uploading() {
    let fx = ServerFx::new().await;
    let dev = fx.device("laptop").await;
    let vfs = &dev.vfs;
    for d in 0..6 {
        let dir = vfs
            .mkdir(ROOT_INO, format!("d{d}").as_bytes(), 0o755)
            .unwrap();
        for i in 1..=10 {
            write(vfs, dir.ino, "f.lock", format!("v{i}\n").as_bytes());
            vfs.rename(dir.ino, b"f.lock", dir.ino, b"f", false)
                .unwrap();
            if i % 3 == 0 {
                tokio::time::sleep(Duration::from_millis(7)).await;
            }
        }
    }
    dev.drain().await;
    let tree = dev.server_tree().await;
    no_conflict_names(&tree);
    for d in 0..6 {
        assert_eq!(
            tree.get(&format!("d{d}/f")),
            Some(&Some(b"v10\n".to_vec())),
            "{tree:?}"
        );
        assert!(!tree.contains_key(&format!("d{d}/f.lock")), "{tree:?}");
    }
    assert_eq!(tree.len(), 12, "{tree:?}");
    dev.stop().await;
}

/// Scenario 13, folders: the deploy pattern `mkdir new; ...; rm -rf
/// live.old; mv -T live live.old; mv -T new live`.
#[tokio::test(flavor = "multi_thread")]
async fn folder_swapped_in_while_the_old_one_is_uploading() {
    let fx = ServerFx::new().await;
    let dev = fx.device("laptop").await;
    let vfs = &dev.vfs;
    let mut expected: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
    for k in 0..5u64 {
        let top = format!("d{k}");
        let d = vfs.mkdir(ROOT_INO, top.as_bytes(), 0o755).unwrap();
        vfs.mkdir(d.ino, b"live", 0o755).unwrap();
        for i in 1..=4u64 {
            let new = vfs.mkdir(d.ino, b"new", 0o755).unwrap();
            write(vfs, new.ino, "version", format!("{i}").as_bytes());
            rm_rf(vfs, d.ino, "live.old");
            vfs.rename(d.ino, b"live", d.ino, b"live.old", false)
                .unwrap();
            vfs.rename(d.ino, b"new", d.ino, b"live", false).unwrap();
            tokio::time::sleep(Duration::from_millis((k * 3 + i * 5) % 17)).await;
        }
        for (path, content) in [
            ("", None),
            ("/live", None),
            ("/live/version", Some(b"4".to_vec())),
            ("/live.old", None),
            ("/live.old/version", Some(b"3".to_vec())),
        ] {
            expected.insert(format!("{top}{path}"), content);
        }
    }
    dev.drain().await;
    let tree = dev.server_tree().await;
    no_conflict_names(&tree);
    assert_eq!(tree, expected);
    assert_eq!(dev.vfs.status().snapshot().conflicts, 0);
    dev.stop().await;
}

/// Scenario 12: `mkdir -p` of a folder chain and an immediate `rm -rf`
/// leaves nothing on the server, whatever part of the chain was in flight.
#[tokio::test(flavor = "multi_thread")]
async fn folder_chain_created_and_removed_at_once() {
    let fx = ServerFx::new().await;
    let dev = fx.device("laptop").await;
    let vfs = &dev.vfs;
    let long = "n".repeat(200);
    for (round, depth) in [3usize, 10, 30, 3, 10, 30].into_iter().enumerate() {
        let mut parent = ROOT_INO;
        for level in 0..depth {
            let name = if depth == 30 {
                format!("{long}{level}")
            } else {
                format!("c{round}-{level}")
            };
            parent = vfs.mkdir(parent, name.as_bytes(), 0o755).unwrap().ino;
        }
        write(vfs, parent, "leaf", b"x");
        // Let a round pick up part of the chain, sometimes.
        tokio::time::sleep(Duration::from_millis(10 * (round as u64 % 3))).await;
        let top = if depth == 30 {
            format!("{long}0")
        } else {
            format!("c{round}-0")
        };
        rm_rf(vfs, ROOT_INO, &top);
    }
    dev.drain().await;
    let tree = dev.server_tree().await;
    assert!(tree.is_empty(), "left on the server: {tree:?}");
    assert_eq!(vfs.pending_below(ROOT_INO, 10).unwrap().count, 0);
    dev.stop().await;
}

/// Scenario 5: a written file is one pending operation, and a folder's
/// pending bytes are only those of files below it.
#[tokio::test(flavor = "multi_thread")]
async fn pending_counts_nodes_once_and_only_below() {
    let fx = ServerFx::new().await;
    let dev = fx.device("laptop").await;
    // Nothing uploads: everything stays pending. The uploader runs one
    // round before it looks at `stop`; waiting for it to end keeps that
    // round from taking a record mid-test (it made 4 records of 3, once).
    dev.stop.cancel();
    dev.task.await.unwrap();
    let vfs = dev.vfs.clone();
    write(&vfs, ROOT_INO, "a.txt", b"hello\n");
    let all = vfs.pending_below(ROOT_INO, 10).unwrap();
    assert_eq!((all.count, all.bytes), (1, 6), "{all:?}");
    assert_eq!(all.paths, vec!["a.txt".to_string()]);
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    let below = vfs.pending_below(d.ino, 10).unwrap();
    assert_eq!((below.count, below.bytes), (1, 0), "{below:?}");
    // Create, write, chmod, utimes, rename of a new file: one record.
    let f = write(&vfs, d.ino, "x", b"1234");
    vfs.setattr(
        f,
        SetAttr {
            mode: Some(0o600),
            mtime: Some(Timestamp::from_ns(1)),
            ..Default::default()
        },
    )
    .ready()
    .unwrap();
    vfs.rename(d.ino, b"x", d.ino, b"y", false).unwrap();
    let below = vfs.pending_below(d.ino, 10).unwrap();
    assert_eq!((below.count, below.bytes), (2, 4), "{below:?}");
    assert_eq!(vfs.meta.journal_len(), 3, "one record per new node");
}

/// A page the follower pulled before this device's own delete reached the
/// server must not bring the deleted node back: its tombstone stays until
/// the applied change log passes the delete (found by a break-it run:
/// the stale node took the name back and the new file moved aside under
/// a conflict name).
#[tokio::test(flavor = "multi_thread")]
async fn a_stale_page_does_not_bring_back_a_deleted_node() {
    let fx = ServerFx::new().await;
    let mut dev = fx.device("laptop").await;
    dev.stop.cancel();
    (&mut dev.task).await.unwrap();
    let vfs = dev.vfs.clone();
    let up = Uploader::new(vfs.clone(), dev.remote.clone());
    let old = write(&vfs, ROOT_INO, "cur", b"old");
    while up.run_once().await.unwrap() {}
    // The follower fetches a page now...
    let stale = dev.remote.pull(0, 1000).await.unwrap().changes;
    // ...the user replaces `cur`, and the uploader pushes it...
    write(&vfs, ROOT_INO, "cur.tmp", b"new");
    vfs.rename(ROOT_INO, b"cur.tmp", ROOT_INO, b"cur", false)
        .unwrap();
    while up.run_once().await.unwrap() {}
    vfs.forget(old, u64::MAX); // the kernel lets go of the replaced file
    let ino = vfs.lookup(ROOT_INO, b"cur").unwrap().ino;
    overwrite(&vfs, ino, b"newer");
    // ...then the follower applies its page.
    for rec in &stale {
        vfs.apply_remote(rec).unwrap();
    }
    let names: Vec<String> = vfs
        .readdir(ROOT_INO, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["cur"]);
    assert_eq!(vfs.lookup(ROOT_INO, b"cur").unwrap().ino, ino);
    while up.run_once().await.unwrap() {}
    crate::sync::follower::Follower::new(vfs.clone(), dev.remote.clone())
        .pull_all()
        .await
        .unwrap();
    let tree = dev.server_tree().await;
    no_conflict_names(&tree);
    assert_eq!(tree.get("cur"), Some(&Some(b"newer".to_vec())));
}
