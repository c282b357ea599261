//! Version vectors, conflicts, deletes and moves.

use super::*;

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
    assert_eq!(
        copy.meta,
        NodeMeta {
            conflict: Some(ConflictMark {
                of: id,
                device: "laptop".into(),
                at: crate::protocol::Timestamp::from_ns(NOW),
            }),
            ..laptop_v
        }
    );
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
    // A folder keeps its whole name as the stem (a file holds the name:
    // two folders of one name would merge).
    let holder = fx.file("a file").await;
    fx.one(
        &fx.laptop,
        upsert(NodeId::random(), &empty, NodeId::ROOT, "my.album", holder),
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
    let mut deletes = Vec::new();
    for (id, base) in [(f, &f_vv), (b, &b_vv), (a, &a_vv)] {
        let gone = applied(fx.one(&fx.laptop, delete(id, base)).await);
        assert!(gone.deleted);
        deletes.push(gone);
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
    // Each revival is a new state of its node, after its delete: the
    // laptop, which keeps the delete's state, must take the folders back
    // (a vector its delete dominates would read as old news).
    for (now, gone) in [
        (&n, &deletes[0]),
        (&b_now, &deletes[1]),
        (&a_now, &deletes[2]),
    ] {
        assert!(
            !gone.vv.dominates(&now.vv),
            "{:?} revived with a vector its delete dominates",
            now.name
        );
        assert!(now.vv.dominates(&gone.vv), "{:?}", now.name);
    }
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
