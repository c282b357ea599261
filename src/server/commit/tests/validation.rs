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

#[tokio::test]
async fn special_nodes_and_posix_attributes_are_kept_and_checked() {
    use crate::protocol::Timestamp;
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let t = |sec, nsec| Timestamp { sec, nsec };
    let desk = fx
        .store
        .create_device(fx.account, "desk", NOW)
        .await
        .unwrap();
    let special = |kind, rdev| NodeMeta {
        rdev,
        mode: 0o4755,
        atime: t(-2_208_988_800, 1),
        btime: t(10_413_792_000, 999_999_999),
        uid: Some(41_234),
        gid: Some(0),
        ids_from: Some(desk),
        ..NodeMeta::new(kind, 0o644, t(-1, 250_000_000))
    };
    // Kept exactly, special kinds included.
    for (name, meta) in [
        ("fifo", special(NodeKind::Fifo, 0)),
        ("sock", special(NodeKind::Socket, 0)),
        ("tty", special(NodeKind::CharDevice, 0x0403)),
        ("sda", special(NodeKind::BlockDevice, 0x0800)),
        (
            "setuid",
            NodeMeta {
                content: Some(fx.owned(fx.account, &[b"s"]).await),
                ..special(NodeKind::File, 0)
            },
        ),
    ] {
        let id = NodeId::random();
        fx.one(
            &fx.laptop,
            upsert(id, &empty, NodeId::ROOT, name, meta.clone()),
        )
        .await;
        assert_eq!(fx.node(id).await.meta, meta, "{name}");
    }
    // Numeric ids name the device that set them: the committing one if
    // the op does not say; no ids, no device.
    let id = NodeId::random();
    let mut mine = dir_meta();
    mine.uid = Some(7);
    fx.one(&fx.laptop, upsert(id, &empty, NodeId::ROOT, "mine", mine))
        .await;
    assert_eq!(fx.node(id).await.meta.ids_from, Some(fx.laptop.device));
    let id = NodeId::random();
    let mut stray = dir_meta();
    stray.ids_from = Some(fx.phone.device);
    fx.one(&fx.laptop, upsert(id, &empty, NodeId::ROOT, "stray", stray))
        .await;
    assert_eq!(fx.node(id).await.meta.ids_from, None);

    // Refused, each with a sentence naming what is wrong.
    let content = fx.owned(fx.account, &[b"x"]).await;
    let mut fifo_with_content = special(NodeKind::Fifo, 0);
    fifo_with_content.content = Some(content);
    let mut socket_with_target = special(NodeKind::Socket, 0);
    socket_with_target.symlink_target = Some("x".into());
    let mut bad_mtime = dir_meta();
    bad_mtime.mtime.nsec = 1_000_000_000;
    let mut bad_atime = dir_meta();
    bad_atime.atime.nsec = u32::MAX;
    let mut bad_btime = dir_meta();
    bad_btime.btime.nsec = 1_000_000_000;
    let mut dir_with_rdev = dir_meta();
    dir_with_rdev.rdev = 1;
    for (meta, says) in [
        (
            fifo_with_content,
            "a FIFO carries neither content nor a symlink target",
        ),
        (socket_with_target, "a socket carries neither"),
        (
            special(NodeKind::Fifo, 5),
            "a FIFO has no device number (rdev 5)",
        ),
        (dir_with_rdev, "a folder has no device number"),
        (bad_mtime, "mtime has nsec 1000000000"),
        (bad_atime, "atime has nsec"),
        (bad_btime, "btime has nsec"),
    ] {
        let e = fx
            .run(
                &fx.laptop,
                vec![upsert(NodeId::random(), &empty, NodeId::ROOT, "bad", meta)],
            )
            .await
            .unwrap_err();
        assert_eq!(err_code(&e), "invalid_node", "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[tokio::test]
async fn ids_from_must_name_a_device_of_the_account() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let ours = fx
        .store
        .create_device(fx.account, "desk", NOW)
        .await
        .unwrap();
    let theirs = fx.store.create_device(fx.other, "bobs", NOW).await.unwrap();
    let with_ids = |from| NodeMeta {
        uid: Some(4242),
        ids_from: Some(from),
        ..dir_meta()
    };
    for bad in [theirs, DeviceId::random()] {
        let e = fx
            .run(
                &fx.laptop,
                vec![upsert(
                    NodeId::random(),
                    &empty,
                    NodeId::ROOT,
                    "d",
                    with_ids(bad),
                )],
            )
            .await
            .unwrap_err();
        assert_eq!(err_code(&e), "invalid_node", "{e}");
    }
    assert_eq!(fx.log_len().await, 0);
    let n = NodeId::random();
    fx.one(
        &fx.laptop,
        upsert(n, &empty, NodeId::ROOT, "d", with_ids(ours)),
    )
    .await;
    assert_eq!(fx.node(n).await.meta.ids_from, Some(ours));
    // The committing device itself needs no record (it is authenticated).
    let m = NodeId::random();
    fx.one(
        &fx.laptop,
        upsert(m, &empty, NodeId::ROOT, "e", with_ids(fx.laptop.device)),
    )
    .await;
    assert_eq!(fx.node(m).await.meta.ids_from, Some(fx.laptop.device));
}
