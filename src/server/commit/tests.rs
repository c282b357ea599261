//! The commit rules, through the engine-neutral layer (on SQLite, the
//! engine at hand; they only use the `MetaStore` trait).

use super::*;
use crate::protocol::{ChunkRef, FileContent, Manifest, NameError};
use crate::server::meta_store::SqliteMetaStore;
use std::sync::Arc;

/// 2026-11-22 10:00:00 UTC.
const NOW: i64 = 1_795_341_600 * 1_000_000_000;
const STAMP: &str = "2026-11-22 10.00.00";

fn dev(n: u8) -> DeviceId {
    DeviceId(uuid::Uuid::from_bytes([n; 16]))
}

struct Fx {
    store: Arc<dyn MetaStore>,
    account: AccountId,
    other: AccountId,
    laptop: CommitCtx,
    phone: CommitCtx,
    _dir: tempfile::TempDir,
}

impl Fx {
    async fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> = Arc::new(
            SqliteMetaStore::open(&dir.path().join("meta.sqlite"))
                .await
                .unwrap(),
        );
        let account = store.create_account("alice", "h", NOW).await.unwrap();
        let other = store.create_account("bob", "h", NOW).await.unwrap();
        let ctx = |device, name: &str| CommitCtx {
            account,
            device,
            device_name: name.into(),
            now_ns: NOW,
        };
        Fx {
            laptop: ctx(dev(1), "laptop"),
            phone: ctx(dev(2), "phone"),
            store,
            account,
            other,
            _dir: dir,
        }
    }

    /// Content made of `parts`, uploaded (owned) by `account`.
    async fn owned(&self, account: AccountId, parts: &[&[u8]]) -> FileContent {
        let mut chunks = Vec::new();
        for p in parts {
            let id = ChunkId::of(p);
            self.store
                .add_account_chunk(account, id, p.len() as u32, NOW)
                .await
                .unwrap();
            chunks.push(ChunkRef {
                id,
                len: p.len() as u32,
            });
        }
        FileContent {
            manifest: Manifest { chunks },
        }
    }

    async fn file(&self, text: &str) -> NodeMeta {
        file_meta(self.owned(self.account, &[text.as_bytes()]).await)
    }

    async fn run(
        &self,
        ctx: &CommitCtx,
        ops: Vec<CommitOp>,
    ) -> Result<Vec<CommitOutcome>, ServerError> {
        commit(self.store.as_ref(), ctx, &ops).await
    }

    async fn one(&self, ctx: &CommitCtx, op: CommitOp) -> CommitOutcome {
        let mut r = self.run(ctx, vec![op]).await.unwrap();
        assert_eq!(r.len(), 1);
        r.pop().unwrap()
    }

    async fn node(&self, id: NodeId) -> NodeRecord {
        self.store.node(self.account, id).await.unwrap().unwrap()
    }

    async fn lookup(&self, parent: NodeId, name: &str) -> Option<NodeRecord> {
        self.store.lookup(self.account, parent, name).await.unwrap()
    }

    async fn log_len(&self) -> usize {
        self.store
            .changes_since(self.account, 0, 1000)
            .await
            .unwrap()
            .len()
    }
}

fn file_meta(content: FileContent) -> NodeMeta {
    NodeMeta {
        kind: NodeKind::File,
        mode: 0o644,
        mtime_ns: NOW,
        content: Some(content),
        symlink_target: None,
    }
}

fn dir_meta() -> NodeMeta {
    NodeMeta {
        kind: NodeKind::Dir,
        mode: 0o755,
        mtime_ns: NOW,
        content: None,
        symlink_target: None,
    }
}

fn upsert(
    node: NodeId,
    base: &VersionVector,
    parent: NodeId,
    name: &str,
    meta: NodeMeta,
) -> CommitOp {
    CommitOp {
        node_id: node,
        base: base.clone(),
        change: NodeChange::Upsert {
            parent,
            name: name.into(),
            meta,
        },
    }
}

fn delete(node: NodeId, base: &VersionVector) -> CommitOp {
    CommitOp {
        node_id: node,
        base: base.clone(),
        change: NodeChange::Delete,
    }
}

fn applied(o: CommitOutcome) -> NodeRecord {
    match o {
        CommitOutcome::Applied { node } => node,
        other => panic!("expected applied, got {other:?}"),
    }
}

fn vv(pairs: &[(DeviceId, u64)]) -> VersionVector {
    let mut v = VersionVector::new();
    for (d, n) in pairs {
        for _ in 0..*n {
            v.increment(*d);
        }
    }
    v
}

fn err_code(e: &ServerError) -> &'static str {
    e.status_and_code().1
}

#[tokio::test]
async fn create_then_fast_forward() {
    let fx = Fx::new().await;
    let id = NodeId::random();
    let v1 = fx.file("one").await;
    let n = applied(
        fx.one(
            &fx.laptop,
            upsert(id, &VersionVector::new(), NodeId::ROOT, "a.txt", v1),
        )
        .await,
    );
    assert_eq!(n.vv, vv(&[(dev(1), 1)]));
    assert_eq!(
        (n.seq, n.parent, n.name.as_str()),
        (1, Some(NodeId::ROOT), "a.txt")
    );
    // The phone saw it and edits: fast-forward.
    let v2 = fx.file("two").await;
    let n = applied(
        fx.one(
            &fx.phone,
            upsert(id, &n.vv, NodeId::ROOT, "a.txt", v2.clone()),
        )
        .await,
    );
    assert_eq!(n.vv, vv(&[(dev(1), 1), (dev(2), 1)]));
    assert_eq!(n.seq, 2);
    assert_eq!(fx.node(id).await.meta, v2);
    let versions = fx.store.versions(fx.account, id).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].device, dev(2));
}

#[tokio::test]
async fn own_counter_replay_is_not_a_conflict() {
    let fx = Fx::new().await;
    let id = NodeId::random();
    let base = VersionVector::new();
    fx.one(
        &fx.laptop,
        upsert(id, &base, NodeId::ROOT, "a.txt", fx.file("one").await),
    )
    .await;
    // The laptop commits again from the same base (a replay after a lost
    // answer, or its next edit before it pulled): still its own line.
    let v2 = fx.file("two").await;
    let n = applied(
        fx.one(
            &fx.laptop,
            upsert(id, &base, NodeId::ROOT, "a.txt", v2.clone()),
        )
        .await,
    );
    assert_eq!(n.vv, vv(&[(dev(1), 2)]));
    assert_eq!(n.meta, v2);
    assert!(fx
        .lookup(NodeId::ROOT, &format!("a (conflict laptop {STAMP}).txt"))
        .await
        .is_none());
}

#[tokio::test]
async fn concurrent_content_edit_makes_a_conflict_copy() {
    let fx = Fx::new().await;
    let id = NodeId::random();
    let created = applied(
        fx.one(
            &fx.laptop,
            upsert(
                id,
                &VersionVector::new(),
                NodeId::ROOT,
                "report.txt",
                fx.file("v1").await,
            ),
        )
        .await,
    );
    let base = created.vv.clone();
    let phone_v = fx.file("phone edit").await;
    let after_phone = applied(
        fx.one(
            &fx.phone,
            upsert(id, &base, NodeId::ROOT, "report.txt", phone_v.clone()),
        )
        .await,
    );
    let seq_before = after_phone.seq;
    // The laptop edited the same version concurrently.
    let laptop_v = fx.file("laptop edit").await;
    let o = fx
        .one(
            &fx.laptop,
            upsert(id, &base, NodeId::ROOT, "report.txt", laptop_v.clone()),
        )
        .await;
    let CommitOutcome::ConflictCopy { node, copy } = o else {
        panic!("expected a conflict copy, got {o:?}");
    };
    // The server's version keeps the node, untouched.
    assert_eq!(node, after_phone);
    assert_eq!(fx.node(id).await, after_phone);
    // The laptop's version sits beside it under the conflict name.
    assert_eq!(copy.name, format!("report (conflict laptop {STAMP}).txt"));
    assert_ne!(copy.node_id, id);
    assert_eq!(copy.parent, Some(NodeId::ROOT));
    assert_eq!(copy.meta, laptop_v);
    assert_eq!(copy.vv, vv(&[(dev(1), 1)]));
    assert!(copy.seq > seq_before);
    assert_eq!(fx.lookup(NodeId::ROOT, &copy.name).await.unwrap(), copy);
    assert_eq!(
        fx.store
            .versions(fx.account, copy.node_id)
            .await
            .unwrap()
            .len(),
        1
    );

    // Another clash in the same second: ` 2`.
    let o = fx
        .one(
            &fx.laptop,
            upsert(
                id,
                &base,
                NodeId::ROOT,
                "report.txt",
                fx.file("again").await,
            ),
        )
        .await;
    let CommitOutcome::ConflictCopy { copy, .. } = o else {
        panic!("expected a conflict copy, got {o:?}");
    };
    assert_eq!(copy.name, format!("report (conflict laptop {STAMP} 2).txt"));
}

#[tokio::test]
async fn concurrent_edit_with_same_content_merges() {
    let fx = Fx::new().await;
    let id = NodeId::random();
    let created = applied(
        fx.one(
            &fx.laptop,
            upsert(
                id,
                &VersionVector::new(),
                NodeId::ROOT,
                "a.txt",
                fx.file("v1").await,
            ),
        )
        .await,
    );
    let same = fx.file("same").await;
    fx.one(
        &fx.phone,
        upsert(id, &created.vv, NodeId::ROOT, "a.txt", same.clone()),
    )
    .await;
    let mut laptop = same.clone();
    laptop.mode = 0o600;
    let n = applied(
        fx.one(
            &fx.laptop,
            upsert(id, &created.vv, NodeId::ROOT, "b.txt", laptop.clone()),
        )
        .await,
    );
    assert_eq!(n.vv, vv(&[(dev(1), 2), (dev(2), 1)]));
    assert_eq!((n.name.as_str(), n.meta.mode), ("b.txt", 0o600));
    assert_eq!(fx.log_len().await, 1, "no conflict copy");
    // Same manifest: no new version either.
    assert_eq!(fx.store.versions(fx.account, id).await.unwrap().len(), 2);
}

#[tokio::test]
async fn concurrent_folder_rename_last_writer_wins() {
    let fx = Fx::new().await;
    let id = NodeId::random();
    let created = applied(
        fx.one(
            &fx.laptop,
            upsert(id, &VersionVector::new(), NodeId::ROOT, "d", dir_meta()),
        )
        .await,
    );
    fx.one(
        &fx.phone,
        upsert(id, &created.vv, NodeId::ROOT, "phone-name", dir_meta()),
    )
    .await;
    let n = applied(
        fx.one(
            &fx.laptop,
            upsert(id, &created.vv, NodeId::ROOT, "laptop-name", dir_meta()),
        )
        .await,
    );
    assert_eq!(n.name, "laptop-name");
    assert_eq!(n.vv, vv(&[(dev(1), 2), (dev(2), 1)]));
}

#[tokio::test]
async fn name_taken_by_another_node_is_renamed() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    fx.one(
        &fx.laptop,
        upsert(
            NodeId::random(),
            &empty,
            NodeId::ROOT,
            "notes.md",
            fx.file("a").await,
        ),
    )
    .await;
    let o = fx
        .one(
            &fx.phone,
            upsert(
                NodeId::random(),
                &empty,
                NodeId::ROOT,
                "notes.md",
                fx.file("b").await,
            ),
        )
        .await;
    let CommitOutcome::Renamed { node } = o else {
        panic!("expected renamed, got {o:?}");
    };
    assert_eq!(node.name, format!("notes (conflict phone {STAMP}).md"));
    assert_eq!(
        fx.lookup(NodeId::ROOT, &node.name).await.unwrap().node_id,
        node.node_id
    );
    // A folder keeps its whole name as the stem.
    fx.one(
        &fx.laptop,
        upsert(
            NodeId::random(),
            &empty,
            NodeId::ROOT,
            "my.album",
            dir_meta(),
        ),
    )
    .await;
    let o = fx
        .one(
            &fx.phone,
            upsert(
                NodeId::random(),
                &empty,
                NodeId::ROOT,
                "my.album",
                dir_meta(),
            ),
        )
        .await;
    let CommitOutcome::Renamed { node } = o else {
        panic!("expected renamed, got {o:?}");
    };
    assert_eq!(node.name, format!("my.album (conflict phone {STAMP})"));
    // Renaming a node onto its own name is not a clash.
    let n = applied(
        fx.one(
            &fx.phone,
            upsert(node.node_id, &node.vv, NodeId::ROOT, &node.name, dir_meta()),
        )
        .await,
    );
    assert_eq!(n.name, node.name);
}

#[tokio::test]
async fn delete_against_concurrent_edit_is_superseded() {
    let fx = Fx::new().await;
    let id = NodeId::random();
    let created = applied(
        fx.one(
            &fx.laptop,
            upsert(
                id,
                &VersionVector::new(),
                NodeId::ROOT,
                "a.txt",
                fx.file("v1").await,
            ),
        )
        .await,
    );
    let edit = fx.file("phone edit").await;
    let edited = applied(
        fx.one(
            &fx.phone,
            upsert(id, &created.vv, NodeId::ROOT, "a.txt", edit.clone()),
        )
        .await,
    );
    let o = fx.one(&fx.laptop, delete(id, &created.vv)).await;
    let CommitOutcome::Superseded { node } = o else {
        panic!("expected superseded, got {o:?}");
    };
    assert_eq!(node, edited);
    let now = fx.node(id).await;
    assert!(!now.deleted);
    assert_eq!(now.meta, edit);
    // Having seen the edit, the delete goes through.
    let gone = applied(fx.one(&fx.laptop, delete(id, &edited.vv)).await);
    assert!(gone.deleted);
    assert_eq!(
        (gone.parent, gone.name.as_str()),
        (Some(NodeId::ROOT), "a.txt")
    );
    assert!(gone.seq > edited.seq);
    assert!(fx.lookup(NodeId::ROOT, "a.txt").await.is_none());
    // Replayed delete: nothing changes.
    let again = applied(fx.one(&fx.laptop, delete(id, &edited.vv)).await);
    assert_eq!(again, gone);
}

#[tokio::test]
async fn edit_after_delete_wins_and_restores_parents() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let (a, b, f) = (NodeId::random(), NodeId::random(), NodeId::random());
    let res = fx
        .run(
            &fx.laptop,
            vec![
                upsert(a, &empty, NodeId::ROOT, "a", dir_meta()),
                upsert(b, &empty, a, "b", dir_meta()),
                upsert(f, &empty, b, "f.txt", fx.file("v1").await),
            ],
        )
        .await
        .unwrap();
    let f_vv = applied(res[2].clone()).vv;
    let (a_vv, b_vv) = (applied(res[0].clone()).vv, applied(res[1].clone()).vv);
    // The laptop deletes the whole tree.
    for (id, base) in [(f, &f_vv), (b, &b_vv), (a, &a_vv)] {
        assert!(applied(fx.one(&fx.laptop, delete(id, base)).await).deleted);
    }
    // Meanwhile a new "a" appeared at the root.
    fx.one(
        &fx.laptop,
        upsert(NodeId::random(), &empty, NodeId::ROOT, "a", dir_meta()),
    )
    .await;
    // The phone had edited f.txt before seeing the deletes: the edit wins.
    let edit = fx.file("phone edit").await;
    let n = applied(
        fx.one(&fx.phone, upsert(f, &f_vv, b, "f.txt", edit.clone()))
            .await,
    );
    assert!(!n.deleted);
    assert_eq!(n.meta, edit);
    let b_now = fx.node(b).await;
    let a_now = fx.node(a).await;
    assert!(!b_now.deleted && !a_now.deleted);
    assert_eq!(
        a_now.name,
        format!("a (conflict phone {STAMP})"),
        "old name was taken"
    );
    assert_eq!(b_now.name, "b");
    assert!(
        a_now.seq < b_now.seq && b_now.seq < n.seq,
        "restored top-down, each logged"
    );
}

#[tokio::test]
async fn delete_unknown_node_is_already_gone() {
    let fx = Fx::new().await;
    let o = fx
        .one(&fx.laptop, delete(NodeId::random(), &VersionVector::new()))
        .await;
    assert!(matches!(o, CommitOutcome::AlreadyGone));
    // Another account's node is unknown too.
    let theirs = NodeId::random();
    let bob = CommitCtx {
        account: fx.other,
        ..fx.laptop.clone()
    };
    fx.one(
        &bob,
        upsert(theirs, &VersionVector::new(), NodeId::ROOT, "x", dir_meta()),
    )
    .await;
    let o = fx
        .one(&fx.laptop, delete(theirs, &VersionVector::new()))
        .await;
    assert!(matches!(o, CommitOutcome::AlreadyGone));
    assert!(
        !fx.store
            .node(fx.other, theirs)
            .await
            .unwrap()
            .unwrap()
            .deleted
    );
}

#[tokio::test]
async fn delete_of_folder_with_entries_is_superseded() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let d = NodeId::random();
    let dn = applied(
        fx.one(&fx.laptop, upsert(d, &empty, NodeId::ROOT, "d", dir_meta()))
            .await,
    );
    fx.one(
        &fx.laptop,
        upsert(NodeId::random(), &empty, d, "x", dir_meta()),
    )
    .await;
    let o = fx.one(&fx.laptop, delete(d, &dn.vv)).await;
    assert!(matches!(o, CommitOutcome::Superseded { node } if !node.deleted));
}

#[tokio::test]
async fn folder_into_its_own_subtree_is_refused() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let (a, b, c) = (NodeId::random(), NodeId::random(), NodeId::random());
    let r = fx
        .run(
            &fx.laptop,
            vec![
                upsert(a, &empty, NodeId::ROOT, "a", dir_meta()),
                upsert(b, &empty, a, "b", dir_meta()),
                upsert(c, &empty, b, "c", dir_meta()),
            ],
        )
        .await
        .unwrap();
    let a_vv = applied(r[0].clone()).vv;
    for target in [c, b, a] {
        let e = fx
            .run(&fx.laptop, vec![upsert(a, &a_vv, target, "a", dir_meta())])
            .await
            .unwrap_err();
        assert_eq!(err_code(&e), "invalid_move", "into {target}: {e}");
        assert_eq!(e.status_and_code().0, 400);
    }
    assert_eq!(fx.node(a).await.parent, Some(NodeId::ROOT));
    // Moving the other way is fine.
    let n = applied(
        fx.one(&fx.laptop, upsert(c, &empty, NodeId::ROOT, "c", dir_meta()))
            .await,
    );
    assert_eq!(n.parent, Some(NodeId::ROOT));
}

#[tokio::test]
async fn bad_names_are_refused_and_nothing_is_stored() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    for (bad, reason) in [
        ("", NameError::Empty),
        (".", NameError::Reserved),
        ("..", NameError::Reserved),
        ("a/b", NameError::Slash),
        ("a\0b", NameError::Nul),
    ] {
        let e = fx
            .run(
                &fx.laptop,
                vec![
                    upsert(NodeId::random(), &empty, NodeId::ROOT, "fine", dir_meta()),
                    upsert(NodeId::random(), &empty, NodeId::ROOT, bad, dir_meta()),
                ],
            )
            .await
            .unwrap_err();
        assert_eq!(err_code(&e), "invalid_name");
        assert!(matches!(&e, ServerError::InOp { index: 1, inner }
            if matches!(**inner, ServerError::InvalidName { reason: r, .. } if r == reason)));
        assert!(e.to_string().starts_with("op 1: "), "{e}");
    }
    let e = fx
        .run(
            &fx.laptop,
            vec![upsert(
                NodeId::random(),
                &empty,
                NodeId::ROOT,
                &"x".repeat(256),
                dir_meta(),
            )],
        )
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), "invalid_name");
    assert_eq!(
        fx.log_len().await,
        0,
        "a request with a bad op stores nothing"
    );
}

#[tokio::test]
async fn malformed_nodes_are_refused() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let content = fx.owned(fx.account, &[b"x"]).await;
    let mut bad_mode = dir_meta();
    bad_mode.mode = 0o10000;
    let mut dir_with_content = dir_meta();
    dir_with_content.content = Some(content.clone());
    let mut file_without = file_meta(content.clone());
    file_without.content = None;
    let link_without = NodeMeta {
        kind: NodeKind::Symlink,
        ..dir_meta()
    };
    let mut zero_chunk = content.clone();
    zero_chunk.manifest.chunks[0].len = 0;
    let mut huge_chunk = content.clone();
    huge_chunk.manifest.chunks[0].len = MAX_CHUNK_LEN + 1;
    for meta in [
        bad_mode,
        dir_with_content,
        file_without,
        link_without,
        file_meta(zero_chunk),
        file_meta(huge_chunk),
    ] {
        let e = fx
            .run(
                &fx.laptop,
                vec![upsert(
                    NodeId::random(),
                    &empty,
                    NodeId::ROOT,
                    "n",
                    meta.clone(),
                )],
            )
            .await
            .unwrap_err();
        assert_eq!(err_code(&e), "invalid_node", "{meta:?}");
    }
    // A manifest length that differs from the uploaded chunk's.
    let mut wrong_len = content;
    wrong_len.manifest.chunks[0].len = 2;
    let e = fx
        .run(
            &fx.laptop,
            vec![upsert(
                NodeId::random(),
                &empty,
                NodeId::ROOT,
                "n",
                file_meta(wrong_len),
            )],
        )
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), "invalid_node");
    // The root cannot be touched.
    for op in [
        upsert(NodeId::ROOT, &empty, NodeId::ROOT, "r", dir_meta()),
        delete(NodeId::ROOT, &empty),
    ] {
        let e = fx.run(&fx.laptop, vec![op]).await.unwrap_err();
        assert_eq!(err_code(&e), "root_immutable");
    }
    // A node keeps its kind.
    let id = NodeId::random();
    fx.one(
        &fx.laptop,
        upsert(id, &empty, NodeId::ROOT, "k", dir_meta()),
    )
    .await;
    let e = fx
        .run(
            &fx.laptop,
            vec![upsert(id, &empty, NodeId::ROOT, "k", fx.file("x").await)],
        )
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), "kind_mismatch");
    assert_eq!(fx.log_len().await, 1);
}

#[tokio::test]
async fn chunks_not_owned_by_the_account_are_refused() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    // Bob uploaded these; Alice only knows the hashes.
    let bobs = fx.owned(fx.other, &[b"secret-1", b"secret-2"]).await;
    let mine = fx.owned(fx.account, &[b"mine"]).await;
    let mut mixed = bobs.clone();
    mixed.manifest.chunks.insert(0, mine.manifest.chunks[0]);
    let e = fx
        .run(
            &fx.laptop,
            vec![upsert(
                NodeId::random(),
                &empty,
                NodeId::ROOT,
                "steal",
                file_meta(mixed),
            )],
        )
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), "missing_chunks");
    assert_eq!(e.status_and_code().0, 409);
    let ServerError::InOp { inner, .. } = &e else {
        panic!("{e:?}")
    };
    let ServerError::MissingChunks(ids) = inner.as_ref() else {
        panic!("{e:?}")
    };
    let want: Vec<ChunkId> = bobs.manifest.chunks.iter().map(|c| c.id).collect();
    assert_eq!(ids, &want);
    assert!(e.to_string().contains(&want[0].to_hex()));
    assert_eq!(fx.log_len().await, 0);
}

#[tokio::test]
async fn parent_must_exist_in_this_account_and_be_a_folder() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let bob = CommitCtx {
        account: fx.other,
        ..fx.laptop.clone()
    };
    let bobs_dir = NodeId::random();
    fx.one(
        &bob,
        upsert(bobs_dir, &empty, NodeId::ROOT, "shared?", dir_meta()),
    )
    .await;
    let e = fx
        .run(
            &fx.laptop,
            vec![upsert(NodeId::random(), &empty, bobs_dir, "x", dir_meta())],
        )
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), "parent_not_found");
    let file = NodeId::random();
    fx.one(
        &fx.laptop,
        upsert(file, &empty, NodeId::ROOT, "f", fx.file("x").await),
    )
    .await;
    let e = fx
        .run(
            &fx.laptop,
            vec![upsert(NodeId::random(), &empty, file, "x", dir_meta())],
        )
        .await
        .unwrap_err();
    assert_eq!(err_code(&e), "parent_not_dir");
}

#[tokio::test]
async fn a_failing_op_applies_nothing_of_its_request() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let ok = NodeId::random();
    let e = fx
        .run(
            &fx.laptop,
            vec![
                upsert(ok, &empty, NodeId::ROOT, "first", dir_meta()),
                upsert(
                    NodeId::random(),
                    &empty,
                    NodeId::random(),
                    "orphan",
                    dir_meta(),
                ),
                upsert(NodeId::random(), &empty, NodeId::ROOT, "never", dir_meta()),
            ],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::InOp { index: 1, .. }), "{e:?}");
    assert!(fx.lookup(NodeId::ROOT, "first").await.is_none());
    assert!(fx.lookup(NodeId::ROOT, "never").await.is_none());
    assert_eq!(fx.log_len().await, 0);
    // The client then sends the ops one at a time: the good one applies.
    let n = applied(
        fx.one(
            &fx.laptop,
            upsert(ok, &empty, NodeId::ROOT, "first", dir_meta()),
        )
        .await,
    );
    assert_eq!(n.vv, vv(&[(dev(1), 1)]));
    assert_eq!(fx.log_len().await, 1);
}

#[tokio::test]
async fn seq_is_monotonic_and_versions_only_on_new_content() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let id = NodeId::random();
    let v1 = fx.file("one").await;
    let mut last = applied(
        fx.one(
            &fx.laptop,
            upsert(id, &empty, NodeId::ROOT, "a", v1.clone()),
        )
        .await,
    );
    let mut seqs = vec![last.seq];
    // Rename and chmod: no new version.
    let mut m = v1.clone();
    m.mode = 0o600;
    last = applied(
        fx.one(&fx.laptop, upsert(id, &last.vv, NodeId::ROOT, "b", m))
            .await,
    );
    seqs.push(last.seq);
    last = applied(
        fx.one(
            &fx.laptop,
            upsert(id, &last.vv, NodeId::ROOT, "b", fx.file("two").await),
        )
        .await,
    );
    seqs.push(last.seq);
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(fx.store.versions(fx.account, id).await.unwrap().len(), 2);
    let log = fx.store.changes_since(fx.account, 0, 10).await.unwrap();
    assert_eq!(
        log.len(),
        1,
        "one node, reported once with its latest state"
    );
    assert_eq!(log[0], last);
}

#[tokio::test]
async fn too_many_ops_are_refused() {
    let fx = Fx::new().await;
    let ops: Vec<CommitOp> = (0..=MAX_COMMIT_OPS)
        .map(|i| {
            upsert(
                NodeId::random(),
                &VersionVector::new(),
                NodeId::ROOT,
                &format!("n{i}"),
                dir_meta(),
            )
        })
        .collect();
    let e = fx.run(&fx.laptop, ops).await.unwrap_err();
    assert_eq!(err_code(&e), "payload_too_large");
    assert_eq!(fx.log_len().await, 0);
}

#[test]
fn conflict_names() {
    let f = NodeKind::File;
    assert_eq!(
        conflict_name("report.txt", f, "laptop", NOW, 1),
        format!("report (conflict laptop {STAMP}).txt")
    );
    assert_eq!(
        conflict_name("report.txt", f, "laptop", NOW, 3),
        format!("report (conflict laptop {STAMP} 3).txt")
    );
    assert_eq!(
        conflict_name("archive.tar.gz", f, "pc", NOW, 1),
        format!("archive.tar (conflict pc {STAMP}).gz")
    );
    assert_eq!(
        conflict_name(".bashrc", f, "pc", NOW, 1),
        format!(".bashrc (conflict pc {STAMP})")
    );
    assert_eq!(
        conflict_name("Makefile", f, "pc", NOW, 1),
        format!("Makefile (conflict pc {STAMP})")
    );
    assert_eq!(
        conflict_name("v1.2", NodeKind::Dir, "pc", NOW, 1),
        format!("v1.2 (conflict pc {STAMP})")
    );
    assert_eq!(
        conflict_name("a.txt", f, "bad/name\n", NOW, 1),
        format!("a (conflict bad_name_ {STAMP}).txt")
    );
    assert_eq!(utc_stamp(0), "1970-01-01 00.00.00");
    // Long names are shortened to stay valid, keeping the extension.
    let long = format!("{}.jpeg", "é".repeat(125));
    let c = conflict_name(&long, f, "laptop", NOW, 12);
    assert!(c.len() <= crate::protocol::MAX_NAME_BYTES, "{}", c.len());
    assert!(c.ends_with(&format!("(conflict laptop {STAMP} 12).jpeg")));
    assert!(validate_name(&c).is_ok());
}
