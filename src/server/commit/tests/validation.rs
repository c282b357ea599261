//! What a commit refuses, and what it keeps.

use super::*;

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
