//! The [`Remote`] conformance suite: one set of checks that every
//! implementation must pass, so the core sees the same values and the same
//! errors (and failure classes) from every remote.
//!
//! `remote_conformance_suite!(module_name, fixture_future)` expands to one
//! `#[tokio::test]` per check, each with a fresh fixture. It is exported
//! (hidden from the docs) so that unit tests and integration tests can both
//! run it:
//! - HTTP: `tests/remote_conformance.rs` with [`HttpFixture`] (the real
//!   server on a loopback port);
//! - in-process: `remote::in_process` with [`InProcessFixture`];
//! - faulty without faults: `remote::faulty` with [`FaultyFixture`].
//!
//! The checks: chunk upload, missing and download (possession is per
//! account), batch download (same access rules, its bounds), hash
//! mismatch refused, commit create/rename/delete, conflict
//! copy between two devices, pull pagination and `cursor_ahead`, the class
//! of a bad name (`Refused` with the right op index, also across the
//! parts of a commit split at `MAX_COMMIT_OPS`) and of missing chunks
//! (`Transient`).

use super::faulty::FaultyRemote;
use super::http::{login, HttpRemote, Tokens};
use super::in_process::InProcessServer;
use super::{FailureClass, NeedsUser, Remote, RemoteError};
use crate::protocol::{
    ChunkId, ChunkRef, CommitOp, CommitOutcome, FileContent, Manifest, NodeChange, NodeId,
    NodeKind, NodeMeta, NodeRecord, VersionVector, MAX_BATCH_BYTES, MAX_BATCH_CHUNKS,
    MAX_COMMIT_OPS,
};
use crate::server::{self, RunningServer, ServerConfig};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

/// Runs every check of the suite as its own `#[tokio::test]` in a module
/// `$name`; `$fixture` is an expression (with absolute paths) giving a
/// future of a [`Fixture`], evaluated once per check.
#[macro_export]
#[doc(hidden)]
macro_rules! remote_conformance_suite {
    ($name:ident, $fixture:expr) => {
        mod $name {
            $crate::remote_conformance_suite!(@checks $fixture;
                chunks_put_missing_get,
                chunk_batches_follow_the_single_get_rules,
                hash_mismatch_is_refused,
                commit_create_rename_delete,
                conflict_copy_between_two_devices,
                pull_pages_and_cursor_ahead,
                bad_name_is_refused_with_its_op,
                refused_op_index_counts_across_split_commits,
                missing_chunks_are_transient,
                space_counts_live_files,
                extended_attributes_travel_and_bad_ones_are_refused
            );
        }
    };
    (@checks $fixture:expr; $($check:ident),*) => {
        $(
            #[tokio::test]
            async fn $check() {
                let fixture = $fixture.await;
                $crate::remote::suite::$check(&fixture).await;
            }
        )*
    };
}

/// Devices of one server for the checks.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// A newly registered device named `name` of the suite's account.
    async fn device(&self, name: &str) -> Arc<dyn Remote>;
    /// A device of another account on the same server.
    async fn stranger(&self) -> Arc<dyn Remote>;
}

/// The real server on a loopback port (temporary data dir), reached
/// through [`HttpRemote`]s.
pub struct HttpFixture {
    url: String,
    _server: RunningServer,
    _dir: tempfile::TempDir,
}

impl HttpFixture {
    /// Starts a server with accounts `alice` and `bob` (passwords
    /// `alice-pw`, `bob-pw`). Panics if it cannot.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cfg = ServerConfig::loopback(dir.path().join("data"));
        for user in ["alice", "bob"] {
            server::add_user(&cfg, user, &format!("{user}-pw"))
                .await
                .expect("add user");
        }
        let running = server::start(cfg).await.expect("start server");
        HttpFixture {
            url: format!("http://{}", running.local_addr()),
            _server: running,
            _dir: dir,
        }
    }

    async fn login_as(&self, user: &str, device: &str) -> Arc<dyn Remote> {
        let r = login(&self.url, user, &format!("{user}-pw"), device)
            .await
            .expect("login");
        Arc::new(HttpRemote::new(&self.url, Tokens::from(r)))
    }
}

#[async_trait]
impl Fixture for HttpFixture {
    async fn device(&self, name: &str) -> Arc<dyn Remote> {
        self.login_as("alice", name).await
    }
    async fn stranger(&self) -> Arc<dyn Remote> {
        self.login_as("bob", "stranger").await
    }
}

/// An [`InProcessServer`] in a temporary folder.
pub struct InProcessFixture(pub InProcessServer);

impl InProcessFixture {
    /// A fresh server. Panics if it cannot be created.
    pub async fn new() -> Self {
        InProcessFixture(InProcessServer::new().await.expect("in-process server"))
    }
}

#[async_trait]
impl Fixture for InProcessFixture {
    async fn device(&self, name: &str) -> Arc<dyn Remote> {
        Arc::new(self.0.device(name).await.expect("device"))
    }
    async fn stranger(&self) -> Arc<dyn Remote> {
        Arc::new(self.0.device_of("bob", "stranger").await.expect("device"))
    }
}

/// [`FaultyRemote`]s with no faults around [`InProcessServer`] devices.
pub struct FaultyFixture(pub InProcessServer);

impl FaultyFixture {
    /// A fresh server. Panics if it cannot be created.
    pub async fn new() -> Self {
        FaultyFixture(InProcessServer::new().await.expect("in-process server"))
    }
}

#[async_trait]
impl Fixture for FaultyFixture {
    async fn device(&self, name: &str) -> Arc<dyn Remote> {
        let inner = Arc::new(self.0.device(name).await.expect("device"));
        Arc::new(FaultyRemote::new(inner))
    }
    async fn stranger(&self) -> Arc<dyn Remote> {
        let inner = Arc::new(self.0.device_of("bob", "stranger").await.expect("device"));
        Arc::new(FaultyRemote::new(inner))
    }
}

// ---- helpers (also handy for other tests) ----

/// About 64 KiB of compressible bytes that differ per `tag`.
pub fn payload(tag: &str) -> Bytes {
    Bytes::from(format!("{tag}: lorem ipsum dolor sit amet\n").repeat(64 * 1024 / 32))
}

/// A file's content made of one chunk, `data`.
pub fn content(data: &Bytes) -> FileContent {
    FileContent {
        manifest: Manifest {
            chunks: vec![ChunkRef {
                id: ChunkId::of(data),
                len: data.len() as u32,
            }],
        },
    }
}

/// Folder metadata.
pub fn dir_meta() -> NodeMeta {
    NodeMeta::new(
        NodeKind::Dir,
        0o755,
        crate::protocol::Timestamp::from_ns(1_700_000_000_000_000_000),
    )
}

/// File metadata with one chunk, `data`.
pub fn file_meta(data: &Bytes) -> NodeMeta {
    NodeMeta {
        content: Some(content(data)),
        ..NodeMeta::new(
            NodeKind::File,
            0o644,
            crate::protocol::Timestamp::from_ns(1_700_000_000_000_000_000),
        )
    }
}

/// An upsert of `node` to (`parent`, `name`, `meta`) seen from `base`.
pub fn upsert(
    node: NodeId,
    base: &VersionVector,
    parent: NodeId,
    name: &str,
    meta: NodeMeta,
) -> CommitOp {
    CommitOp {
        node_id: node,
        base: base.clone(),
        seen: None,
        change: NodeChange::Upsert {
            parent,
            name: name.to_owned(),
            links: Vec::new(),
            meta,
        },
    }
}

/// Creates a new folder `name` in the root.
pub fn dir_op(name: &str) -> CommitOp {
    upsert(
        NodeId::random(),
        &VersionVector::new(),
        NodeId::ROOT,
        name,
        dir_meta(),
    )
}

/// Creates a new file `name` in the root holding `data` (one chunk).
pub fn file_op(name: &str, data: &Bytes) -> CommitOp {
    upsert(
        NodeId::random(),
        &VersionVector::new(),
        NodeId::ROOT,
        name,
        file_meta(data),
    )
}

/// The node of an `Applied` outcome; panics on any other outcome.
pub fn applied(o: &CommitOutcome) -> &NodeRecord {
    match o {
        CommitOutcome::Applied { node } => node,
        other => panic!("expected applied, got {other:?}"),
    }
}

/// Every change after `cursor` (all pages) and the final cursor.
pub async fn drain(remote: &dyn Remote, mut cursor: u64) -> (Vec<NodeRecord>, u64) {
    let mut all = Vec::new();
    loop {
        let page = remote.pull(cursor, 1000).await.expect("pull");
        all.extend(page.changes);
        cursor = page.cursor;
        if !page.has_more {
            return (all, cursor);
        }
    }
}

fn assert_rejected(e: &RemoteError, status: u16, code: &str, op: Option<usize>) {
    assert!(
        matches!(e, RemoteError::Rejected { status: s, code: c, op: o, .. }
            if *s == status && c == code && *o == op),
        "expected {status} {code} op {op:?}, got {e:?}"
    );
}

// ---- the checks ----

/// Upload, missing and download; possession is per account.
pub async fn chunks_put_missing_get(fx: &dyn Fixture) {
    let laptop = fx.device("laptop").await;
    let (a, b) = (payload("a"), payload("b"));
    let (ia, ib) = (ChunkId::of(&a), ChunkId::of(&b));
    assert_eq!(laptop.missing_chunks(&[ia, ib]).await.unwrap(), [ia, ib]);
    laptop.put_chunk(ia, a.clone()).await.unwrap();
    laptop.put_chunk(ia, a.clone()).await.unwrap();
    assert_eq!(laptop.missing_chunks(&[ia, ib, ia]).await.unwrap(), [ib]);
    assert_eq!(laptop.missing_chunks(&[]).await.unwrap(), []);
    assert_eq!(laptop.get_chunk(ia).await.unwrap(), a);
    let e = laptop.get_chunk(ib).await.unwrap_err();
    assert!(matches!(e, RemoteError::NotFound(_)), "{e:?}");
    // Another device of the account may use what this one uploaded.
    let desk = fx.device("desk").await;
    assert_eq!(desk.missing_chunks(&[ia]).await.unwrap(), []);
    assert_eq!(desk.get_chunk(ia).await.unwrap(), a);
    // Another account must upload it itself: a hash is not possession.
    let stranger = fx.stranger().await;
    assert_eq!(stranger.missing_chunks(&[ia]).await.unwrap(), [ia]);
    let e = stranger.get_chunk(ia).await.unwrap_err();
    assert!(matches!(e, RemoteError::NotFound(_)), "{e:?}");
    stranger.put_chunk(ia, a.clone()).await.unwrap();
    assert_eq!(stranger.get_chunk(ia).await.unwrap(), a);
}

/// `get_chunks`: the account's chunks in one request, each once, in
/// order; an unknown id or another account's chunk is `NotFound` for the
/// whole batch, as for `get_chunk`; over the bounds → 413
/// `batch_too_large`.
pub async fn chunk_batches_follow_the_single_get_rules(fx: &dyn Fixture) {
    let laptop = fx.device("laptop").await;
    let (a, b, c) = (payload("a"), payload("b"), Bytes::new());
    let (ia, ib, ic) = (ChunkId::of(&a), ChunkId::of(&b), ChunkId::of(&c));
    for (id, data) in [(ia, &a), (ib, &b), (ic, &c)] {
        laptop.put_chunk(id, data.clone()).await.unwrap();
    }
    let got = laptop.get_chunks(&[ib, ia, ib, ic]).await.unwrap();
    assert_eq!(got, vec![(ib, b.clone()), (ia, a.clone()), (ic, c.clone())]);
    assert_eq!(laptop.get_chunks(&[]).await.unwrap(), vec![]);
    let unknown = ChunkId::of(b"never uploaded");
    let e = laptop.get_chunks(&[ia, unknown]).await.unwrap_err();
    assert!(matches!(e, RemoteError::NotFound(_)), "{e:?}");
    // Another account: the same answer as for an unknown chunk.
    let stranger = fx.stranger().await;
    let e = stranger.get_chunks(&[ia]).await.unwrap_err();
    assert!(matches!(e, RemoteError::NotFound(_)), "{e:?}");
    stranger.put_chunk(ia, a.clone()).await.unwrap();
    let e = stranger.get_chunks(&[ia, ib]).await.unwrap_err();
    assert!(matches!(e, RemoteError::NotFound(_)), "{e:?}");
    assert_eq!(stranger.get_chunks(&[ia]).await.unwrap(), vec![(ia, a)]);
    // Bounds: ids (checked before anything is looked up) and bytes.
    let many: Vec<ChunkId> = (0..=MAX_BATCH_CHUNKS)
        .map(|i| ChunkId::of(&i.to_le_bytes()))
        .collect();
    let e = laptop.get_chunks(&many).await.unwrap_err();
    assert_rejected(&e, 413, "batch_too_large", None);
    let big_len = (MAX_BATCH_BYTES / 3 + 1) as usize;
    let mut big = Vec::new();
    for tag in ["x", "y", "z"] {
        let data = Bytes::from(format!("{tag}{}", "-".repeat(big_len - 1)));
        let id = ChunkId::of(&data);
        laptop.put_chunk(id, data).await.unwrap();
        big.push(id);
    }
    let e = laptop.get_chunks(&big).await.unwrap_err();
    assert_rejected(&e, 413, "batch_too_large", None);
    assert_eq!(laptop.get_chunks(&big[..2]).await.unwrap().len(), 2);
}

/// Bytes that do not hash to the id are refused and nothing is stored.
pub async fn hash_mismatch_is_refused(fx: &dyn Fixture) {
    let r = fx.device("laptop").await;
    let id = ChunkId::of(&payload("good"));
    let e = r.put_chunk(id, payload("evil")).await.unwrap_err();
    assert_rejected(&e, 400, "hash_mismatch", None);
    assert!(matches!(
        e.class(),
        FailureClass::NeedsUser(NeedsUser::Misconfigured(_))
    ));
    assert_eq!(r.missing_chunks(&[id]).await.unwrap(), [id]);
    assert!(matches!(
        r.get_chunk(id).await,
        Err(RemoteError::NotFound(_))
    ));
}

/// Create a folder and a file in it, rename the file, delete it.
pub async fn commit_create_rename_delete(fx: &dyn Fixture) {
    let r = fx.device("laptop").await;
    let data = payload("hello");
    r.put_chunk(ChunkId::of(&data), data.clone()).await.unwrap();
    let (dir, file) = (NodeId::random(), NodeId::random());
    let empty = VersionVector::new();
    let created = r
        .commit(vec![
            upsert(dir, &empty, NodeId::ROOT, "docs", dir_meta()),
            upsert(file, &empty, dir, "a.txt", file_meta(&data)),
        ])
        .await
        .unwrap();
    assert_eq!(created.len(), 2);
    let d = applied(&created[0]);
    assert_eq!(
        (d.node_id, d.parent, d.name.as_str()),
        (dir, Some(NodeId::ROOT), "docs")
    );
    assert_eq!(d.meta.kind, NodeKind::Dir);
    let f = applied(&created[1]).clone();
    assert_eq!(
        (f.parent, f.name.as_str(), f.deleted),
        (Some(dir), "a.txt", false)
    );
    assert_eq!(f.meta.size(), data.len() as u64);
    assert!(!f.vv.is_empty() && f.seq > d.seq);

    let renamed = r
        .commit(vec![upsert(
            file,
            &f.vv,
            NodeId::ROOT,
            "b.txt",
            file_meta(&data),
        )])
        .await
        .unwrap();
    let g = applied(&renamed[0]).clone();
    assert_eq!(
        (g.node_id, g.parent, g.name.as_str()),
        (file, Some(NodeId::ROOT), "b.txt")
    );
    assert!(g.seq > f.seq);

    let delete = |node, base: &VersionVector| CommitOp {
        node_id: node,
        base: base.clone(),
        seen: None,
        change: NodeChange::Delete,
    };
    let deleted = r.commit(vec![delete(file, &g.vv)]).await.unwrap();
    assert!(applied(&deleted[0]).deleted);
    let gone = r
        .commit(vec![delete(NodeId::random(), &empty)])
        .await
        .unwrap();
    assert!(matches!(gone[..], [CommitOutcome::AlreadyGone]));

    let (changes, _) = drain(r.as_ref(), 0).await;
    let last = changes.iter().rfind(|n| n.node_id == file).unwrap();
    assert!(last.deleted && last.name == "b.txt");
    assert!(changes.iter().any(|n| n.node_id == dir && !n.deleted));
}

/// Concurrent content edits from two devices: the first wins the name, the
/// second is kept beside it as a conflict copy named after its device.
pub async fn conflict_copy_between_two_devices(fx: &dyn Fixture) {
    let laptop = fx.device("laptop").await;
    let desk = fx.device("desk").await;
    let (v1, v2, v3) = (payload("v1"), payload("v2"), payload("v3"));
    for v in [&v1, &v2] {
        laptop.put_chunk(ChunkId::of(v), v.clone()).await.unwrap();
    }
    desk.put_chunk(ChunkId::of(&v3), v3.clone()).await.unwrap();
    let create = file_op("notes.txt", &v1);
    let id = create.node_id;
    let first = applied(&laptop.commit(vec![create]).await.unwrap()[0]).clone();
    let (seen, _) = drain(desk.as_ref(), 0).await;
    let base = seen.iter().find(|n| n.node_id == id).unwrap().vv.clone();
    assert_eq!(base, first.vv);

    let edit = |data: &Bytes| upsert(id, &base, NodeId::ROOT, "notes.txt", file_meta(data));
    let won = laptop.commit(vec![edit(&v2)]).await.unwrap();
    assert_eq!(applied(&won[0]).meta.content, Some(content(&v2)));
    let lost = desk.commit(vec![edit(&v3)]).await.unwrap();
    let CommitOutcome::ConflictCopy { node, copy } = &lost[0] else {
        panic!("expected a conflict copy, got {lost:?}");
    };
    assert_eq!((node.node_id, node.name.as_str()), (id, "notes.txt"));
    assert_eq!(node.meta.content, Some(content(&v2)));
    assert_ne!(copy.node_id, id);
    assert_eq!(copy.parent, Some(NodeId::ROOT));
    assert!(
        copy.name.starts_with("notes (conflict desk ") && copy.name.ends_with(").txt"),
        "{}",
        copy.name
    );
    assert_eq!(copy.meta.content, Some(content(&v3)));
    // Both reach the other device.
    let (changes, _) = drain(laptop.as_ref(), first.seq).await;
    assert!(changes.iter().any(|n| n.node_id == copy.node_id));
}

/// Pages of the change log in order, and a cursor past its end.
pub async fn pull_pages_and_cursor_ahead(fx: &dyn Fixture) {
    let r = fx.device("laptop").await;
    let (_, start) = drain(r.as_ref(), 0).await;
    let names: Vec<String> = (0..5).map(|i| format!("d{i}")).collect();
    r.commit(names.iter().map(|n| dir_op(n)).collect())
        .await
        .unwrap();
    let (mut cursor, mut got, mut pages) = (start, Vec::new(), Vec::new());
    loop {
        let page = r.pull(cursor, 2).await.unwrap();
        assert!(page.changes.iter().all(|n| n.seq > cursor));
        assert_eq!(page.cursor, page.changes.last().map_or(cursor, |n| n.seq));
        pages.push((page.changes.len(), page.has_more));
        got.extend(page.changes);
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(pages, [(2, true), (2, true), (1, false)]);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    let got_names: Vec<&str> = got.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(got_names, names);
    let end = r.pull(cursor, 2).await.unwrap();
    assert!(end.changes.is_empty() && !end.has_more && end.cursor == cursor);
    // Another device sees the same log.
    let (other, other_cursor) = drain(fx.device("desk").await.as_ref(), start).await;
    assert_eq!(other.len(), 5);
    assert_eq!(other_cursor, cursor);
    let e = r.pull(cursor + 1000, 10).await.unwrap_err();
    assert_rejected(&e, 409, "cursor_ahead", None);
}

/// An invalid name refuses exactly its op, and nothing of the commit is
/// applied.
pub async fn bad_name_is_refused_with_its_op(fx: &dyn Fixture) {
    let r = fx.device("laptop").await;
    let (_, start) = drain(r.as_ref(), 0).await;
    let e = r
        .commit(vec![dir_op("fine"), dir_op("a/b")])
        .await
        .unwrap_err();
    assert_rejected(&e, 400, "invalid_name", Some(1));
    assert_eq!(e.class(), FailureClass::Refused { op: 1 });
    let e = r
        .commit(vec![dir_op(".."), dir_op("ok")])
        .await
        .unwrap_err();
    assert_eq!(e.class(), FailureClass::Refused { op: 0 });
    assert!(r.pull(start, 10).await.unwrap().changes.is_empty());
}

/// Extended attributes reach another device byte for byte; a set that
/// breaks a rule is refused with 400 `invalid_node` naming its op.
pub async fn extended_attributes_travel_and_bad_ones_are_refused(fx: &dyn Fixture) {
    let laptop = fx.device("laptop").await;
    let phone = fx.device("phone").await;
    let (_, start) = drain(phone.as_ref(), 0).await;
    let mut meta = dir_meta();
    meta.xattrs = [
        ("user.bin".to_string(), vec![0, 255, 10]),
        ("user.empty".to_string(), vec![]),
        ("trusted.t".to_string(), b"1".to_vec()),
    ]
    .into_iter()
    .collect();
    let id = NodeId::random();
    let empty = VersionVector::new();
    let done = laptop
        .commit(vec![upsert(
            id,
            &empty,
            NodeId::ROOT,
            "tagged",
            meta.clone(),
        )])
        .await
        .unwrap();
    assert_eq!(applied(&done[0]).meta.xattrs, meta.xattrs);
    let (changes, _) = drain(phone.as_ref(), start).await;
    let seen = changes.iter().find(|n| n.node_id == id).unwrap();
    assert_eq!(seen.meta.xattrs, meta.xattrs);

    let mut bad = dir_meta();
    bad.xattrs = [("system.posix_acl_access".to_string(), vec![2, 0, 0, 0])]
        .into_iter()
        .collect();
    let e = laptop
        .commit(vec![
            dir_op("fine"),
            upsert(NodeId::random(), &empty, NodeId::ROOT, "bad", bad),
        ])
        .await
        .unwrap_err();
    assert_rejected(&e, 400, "invalid_node", Some(1));
}

/// A commit longer than `MAX_COMMIT_OPS` is sent in parts; the op index of
/// a refusal still counts from the first op the caller gave.
pub async fn refused_op_index_counts_across_split_commits(fx: &dyn Fixture) {
    let r = fx.device("laptop").await;
    let mut ops: Vec<CommitOp> = (0..MAX_COMMIT_OPS + 2)
        .map(|i| dir_op(&format!("d{i}")))
        .collect();
    ops[MAX_COMMIT_OPS + 1] = dir_op("bad\0name");
    let e = r.commit(ops).await.unwrap_err();
    assert_rejected(&e, 400, "invalid_name", Some(MAX_COMMIT_OPS + 1));
    assert_eq!(
        e.class(),
        FailureClass::Refused {
            op: MAX_COMMIT_OPS + 1
        }
    );
}

/// A manifest naming chunks not uploaded yet: retry after uploading.
pub async fn missing_chunks_are_transient(fx: &dyn Fixture) {
    let r = fx.device("laptop").await;
    let data = payload("never uploaded");
    let e = r
        .commit(vec![dir_op("ok"), file_op("f.bin", &data)])
        .await
        .unwrap_err();
    assert_rejected(&e, 409, "missing_chunks", Some(1));
    assert_eq!(e.class(), FailureClass::Transient);
    r.put_chunk(ChunkId::of(&data), data.clone()).await.unwrap();
    let ok = r
        .commit(vec![dir_op("ok"), file_op("f.bin", &data)])
        .await
        .unwrap();
    assert_eq!(applied(&ok[1]).meta.size(), data.len() as u64);
}

/// `space` counts the account's live files (not another account's, not
/// deleted ones); the room left is never below zero nor above a bound.
pub async fn space_counts_live_files(fx: &dyn Fixture) {
    let r = fx.device("laptop").await;
    let before = r.space().await.unwrap();
    let data = payload("space");
    r.put_chunk(ChunkId::of(&data), data.clone()).await.unwrap();
    let file = NodeId::random();
    let created = r
        .commit(vec![
            upsert(
                file,
                &VersionVector::new(),
                NodeId::ROOT,
                "f",
                file_meta(&data),
            ),
            dir_op("d"),
        ])
        .await
        .unwrap();
    let after = r.space().await.unwrap();
    assert_eq!(after.used_bytes, before.used_bytes + data.len() as u64);
    assert_eq!(after.nodes, before.nodes + 2);
    assert_eq!(after.quota_bytes, None);
    let stranger = fx.stranger().await.space().await.unwrap();
    assert_eq!(
        stranger.used_bytes, 0,
        "another account's files do not count"
    );
    let vv = applied(&created[0]).vv.clone();
    r.commit(vec![CommitOp {
        node_id: file,
        base: vv,
        seen: None,
        change: NodeChange::Delete,
    }])
    .await
    .unwrap();
    let deleted = r.space().await.unwrap();
    assert_eq!(deleted.used_bytes, before.used_bytes);
    assert_eq!(deleted.nodes, before.nodes + 1);
}
