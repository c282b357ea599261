//! Field-by-field merges (DESIGN §4): each op carries the state its device
//! last saw (`seen`), and only fields changed on both sides concurrently
//! can conflict.

use super::*;
use crate::protocol::{ConflictMark, SeenState, Timestamp};

/// The op a device sends after changing `rec` (as it last saw it) with
/// `change`: its base vector and seen state are `rec`'s.
fn edit(rec: &NodeRecord, change: impl FnOnce(&mut NodeRecord)) -> CommitOp {
    let mut new = rec.clone();
    change(&mut new);
    CommitOp {
        node_id: rec.node_id,
        base: rec.vv.clone(),
        seen: SeenState::of(rec),
        change: NodeChange::Upsert {
            parent: new.parent.unwrap(),
            name: new.name,
            links: new.links,
            meta: new.meta,
        },
    }
}

/// The node record of an answer that kept or merged the op's node.
fn node_of(o: CommitOutcome) -> NodeRecord {
    match o {
        CommitOutcome::Applied { node }
        | CommitOutcome::Renamed { node }
        | CommitOutcome::Merged { node } => node,
        other => panic!("expected the node, got {other:?}"),
    }
}

impl Fx {
    /// Creates `name` in `parent` from the laptop.
    async fn create(&self, parent: NodeId, name: &str, meta: NodeMeta) -> NodeRecord {
        applied(
            self.one(
                &self.laptop,
                upsert(NodeId::random(), &VersionVector::new(), parent, name, meta),
            )
            .await,
        )
    }

    /// Live names in `dir`, sorted.
    async fn names_in(&self, dir: NodeId) -> Vec<String> {
        let mut names: Vec<String> = self
            .store
            .changes_since(self.account, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|n| !n.deleted && n.parent == Some(dir))
            .map(|n| n.name)
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[tokio::test]
async fn rename_on_one_device_and_edit_on_the_other_both_apply() {
    let fx = Fx::new().await;
    let g = fx.create(NodeId::ROOT, "g.txt", fx.file("v1").await).await;
    // The laptop renames g.txt to h.txt.
    node_of(
        fx.one(&fx.laptop, edit(&g, |n| n.name = "h.txt".into()))
            .await,
    );
    // The phone, which saw g.txt, edits its content.
    let v2 = fx.file("phone's edit").await;
    let o = fx
        .one(&fx.phone, edit(&g, |n| n.meta.content = v2.content.clone()))
        .await;
    let node = applied(o);
    assert_eq!(
        (node.name.as_str(), &node.meta.content),
        ("h.txt", &v2.content)
    );
    assert_eq!(fx.names_in(NodeId::ROOT).await, ["h.txt"], "no copy");
    // The vector covers both devices' changes.
    assert!(node.vv.dominates(&g.vv));
    assert_eq!(node.vv.get(&dev(1)), 2);
    assert_eq!(node.vv.get(&dev(2)), 1);
}

#[tokio::test]
async fn chmod_and_rename_and_different_xattrs_all_apply() {
    let fx = Fx::new().await;
    let f = fx
        .create(NodeId::ROOT, "a.txt", fx.file("same").await)
        .await;
    node_of(
        fx.one(
            &fx.laptop,
            edit(&f, |n| {
                n.name = "b.txt".into();
                n.meta.xattrs.insert("user.from".into(), b"laptop".to_vec());
            }),
        )
        .await,
    );
    let node = node_of(
        fx.one(
            &fx.phone,
            edit(&f, |n| {
                n.meta.mode = 0o600;
                n.meta.xattrs.insert("user.tag".into(), b"phone".to_vec());
            }),
        )
        .await,
    );
    assert_eq!(node.name, "b.txt", "the chmod did not undo the rename");
    assert_eq!(node.meta.mode, 0o600);
    assert_eq!(node.meta.xattrs.get("user.from"), Some(&b"laptop"[..]));
    assert_eq!(node.meta.xattrs.get("user.tag"), Some(&b"phone"[..]));
    assert_eq!(fx.node(f.node_id).await, node);
}

#[tokio::test]
async fn the_same_field_changed_on_both_sides_goes_to_the_later_commit() {
    let fx = Fx::new().await;
    let mut meta = fx.file("x").await;
    meta.xattrs.insert("user.k".into(), b"0".to_vec());
    let f = fx.create(NodeId::ROOT, "f.txt", meta).await;
    let t1 = Timestamp::from_ns(NOW + 1_000_000_000);
    let t2 = Timestamp::from_ns(NOW - 5_000_000_000);
    node_of(
        fx.one(
            &fx.laptop,
            edit(&f, |n| {
                n.meta.mode = 0o700;
                n.meta.atime = t1;
                n.meta.xattrs.insert("user.k".into(), b"laptop".to_vec());
                n.name = "by-laptop.txt".into();
            }),
        )
        .await,
    );
    // The phone's changes come later: they win, even with an older clock.
    let node = node_of(
        fx.one(
            &fx.phone,
            edit(&f, |n| {
                n.meta.mode = 0o640;
                n.meta.atime = t2;
                n.meta.xattrs.remove("user.k");
                n.name = "by-phone.txt".into();
            }),
        )
        .await,
    );
    assert_eq!(node.meta.mode, 0o640);
    assert_eq!(node.meta.atime, t2);
    assert_eq!(node.meta.xattrs.get("user.k"), None);
    assert_eq!(node.name, "by-phone.txt");
    assert_eq!(fx.names_in(NodeId::ROOT).await, ["by-phone.txt"]);
}

#[tokio::test]
async fn concurrent_content_edits_copy_and_merge_the_other_fields() {
    let fx = Fx::new().await;
    let f = fx.create(NodeId::ROOT, "r.txt", fx.file("v1").await).await;
    let (a, b) = (fx.file("laptop's").await, fx.file("phone's").await);
    let first = node_of(
        fx.one(&fx.laptop, edit(&f, |n| n.meta.content = a.content.clone()))
            .await,
    );
    let o = fx
        .one(
            &fx.phone,
            edit(&f, |n| {
                n.meta.content = b.content.clone();
                n.meta.mode = 0o600;
            }),
        )
        .await;
    let CommitOutcome::ConflictCopy { node, copy } = o else {
        panic!("expected a conflict copy, got {o:?}");
    };
    assert_eq!(
        node.meta.content, a.content,
        "the first commit keeps the name"
    );
    assert_eq!(node.meta.mtime, first.meta.mtime);
    assert_eq!(node.meta.mode, 0o600, "the other fields still merge");
    assert_eq!(copy.meta.content, b.content);
    assert_eq!(copy.name, format!("r (conflict phone {STAMP}).txt"));
    assert_eq!(
        copy.meta.conflict,
        Some(ConflictMark {
            of: f.node_id,
            device: "phone".into(),
            at: Timestamp::from_ns(NOW),
        })
    );
    // The same bytes on both sides are no conflict.
    let c = fx.file("both typed this").await;
    let node = fx.node(f.node_id).await;
    node_of(
        fx.one(
            &fx.laptop,
            edit(&node, |n| n.meta.content = c.content.clone()),
        )
        .await,
    );
    let o = fx
        .one(
            &fx.phone,
            edit(&node, |n| n.meta.content = c.content.clone()),
        )
        .await;
    assert_eq!(applied(o).meta.content, c.content);
    assert_eq!(fx.names_in(NodeId::ROOT).await.len(), 2);
}

#[tokio::test]
async fn a_device_clears_the_conflict_mark_and_only_the_mark() {
    let fx = Fx::new().await;
    let f = fx.create(NodeId::ROOT, "m.txt", fx.file("v1").await).await;
    let (a, b) = (fx.file("a").await, fx.file("b").await);
    fx.one(&fx.laptop, edit(&f, |n| n.meta.content = a.content.clone()))
        .await;
    let CommitOutcome::ConflictCopy { copy, .. } = fx
        .one(&fx.phone, edit(&f, |n| n.meta.content = b.content.clone()))
        .await
    else {
        panic!("expected a conflict copy");
    };
    // An op that does not touch the mark keeps it; one that clears it
    // clears it.
    let renamed = node_of(
        fx.one(&fx.phone, edit(&copy, |n| n.meta.mode = 0o600))
            .await,
    );
    assert!(renamed.meta.conflict.is_some());
    let cleared = node_of(
        fx.one(&fx.phone, edit(&renamed, |n| n.meta.conflict = None))
            .await,
    );
    assert_eq!(cleared.meta.conflict, None);
}

#[tokio::test]
async fn two_creates_of_the_same_thing_merge_into_one_node() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let same = fx.file("identical bytes").await;
    let a = fx.create(NodeId::ROOT, "same.txt", same.clone()).await;
    let alias = NodeId::random();
    let o = fx
        .one(
            &fx.phone,
            upsert(alias, &empty, NodeId::ROOT, "same.txt", same.clone()),
        )
        .await;
    let CommitOutcome::Merged { node } = o else {
        panic!("expected merged, got {o:?}");
    };
    assert_eq!(node.node_id, a.node_id);
    assert!(node.vv.get(&dev(2)) >= 1, "the vectors merge");
    assert_eq!(fx.names_in(NodeId::ROOT).await, ["same.txt"]);
    // The alias keeps working: the phone's next edit, by its own id,
    // reaches the node.
    let v2 = fx.file("edited").await;
    let edited = node_of(
        fx.one(
            &fx.phone,
            CommitOp {
                node_id: alias,
                ..edit(&node, |n| n.meta.content = v2.content.clone())
            },
        )
        .await,
    );
    assert_eq!(edited.node_id, a.node_id);
    assert_eq!(edited.meta.content, v2.content);

    // Two `mkdir photos`, each with a file inside (named by the phone's own
    // folder id): one folder with both files.
    let photos = fx.create(NodeId::ROOT, "photos", dir_meta()).await;
    fx.create(photos.node_id, "a.jpg", fx.file("A").await).await;
    let phone_photos = NodeId::random();
    let r = fx
        .run(
            &fx.phone,
            vec![
                upsert(phone_photos, &empty, NodeId::ROOT, "photos", dir_meta()),
                upsert(
                    NodeId::random(),
                    &empty,
                    phone_photos,
                    "b.jpg",
                    fx.file("B").await,
                ),
            ],
        )
        .await
        .unwrap();
    assert!(matches!(&r[0], CommitOutcome::Merged { node } if node.node_id == photos.node_id));
    assert_eq!(node_of(r[1].clone()).parent, Some(photos.node_id));
    assert_eq!(fx.names_in(photos.node_id).await, ["a.jpg", "b.jpg"]);

    // Different bytes under one name stay two files.
    let o = fx
        .one(
            &fx.phone,
            upsert(
                NodeId::random(),
                &empty,
                NodeId::ROOT,
                "same.txt",
                fx.file("other bytes").await,
            ),
        )
        .await;
    assert!(matches!(o, CommitOutcome::Renamed { .. }), "{o:?}");
}

#[tokio::test]
async fn crossed_folder_moves_keep_both_folders() {
    let fx = Fx::new().await;
    let x = fx.create(NodeId::ROOT, "x", dir_meta()).await;
    let y = fx.create(NodeId::ROOT, "y", dir_meta()).await;
    // The laptop moves x into y; the phone, concurrently, y into x.
    node_of(
        fx.one(&fx.laptop, edit(&x, |n| n.parent = Some(y.node_id)))
            .await,
    );
    let o = fx
        .one(
            &fx.phone,
            edit(&y, |n| {
                n.parent = Some(x.node_id);
                n.meta.mode = 0o700;
            }),
        )
        .await;
    let y_now = applied(o);
    // The move committed first stands; the later one would make a cycle
    // and is not applied, but its other changes are.
    assert_eq!(y_now.parent, Some(NodeId::ROOT));
    assert_eq!(y_now.meta.mode, 0o700);
    assert_eq!(fx.node(x.node_id).await.parent, Some(y.node_id));
    assert_eq!(fx.names_in(NodeId::ROOT).await, ["y"]);
    assert_eq!(fx.names_in(y.node_id).await, ["x"]);
}

#[tokio::test]
async fn two_nodes_renamed_to_one_name_give_the_later_a_conflict_name() {
    let fx = Fx::new().await;
    let a = fx.create(NodeId::ROOT, "a.txt", fx.file("a").await).await;
    let b = fx.create(NodeId::ROOT, "b.txt", fx.file("b").await).await;
    node_of(
        fx.one(&fx.laptop, edit(&a, |n| n.name = "c.txt".into()))
            .await,
    );
    let o = fx
        .one(&fx.phone, edit(&b, |n| n.name = "c.txt".into()))
        .await;
    let CommitOutcome::Renamed { node } = o else {
        panic!("expected renamed, got {o:?}");
    };
    assert_eq!(node.name, format!("c (conflict phone {STAMP}).txt"));
    // Marked like a content conflict's copy: listed, and resolvable.
    let mark = node.meta.conflict.expect("a conflict mark");
    assert_eq!((mark.of, mark.device.as_str()), (a.node_id, "phone"));
    // The node that kept the name carries no mark.
    assert_eq!(fx.node(a.node_id).await.meta.conflict, None);
}

#[tokio::test]
async fn an_edit_into_a_deleted_folder_brings_the_folder_back() {
    let fx = Fx::new().await;
    let d = fx.create(NodeId::ROOT, "d", dir_meta()).await;
    let f = fx.create(d.node_id, "f.txt", fx.file("v1").await).await;
    // The laptop deletes f then d; the phone edits f meanwhile.
    let f_gone = applied(fx.one(&fx.laptop, delete(f.node_id, &f.vv)).await);
    assert!(f_gone.deleted);
    assert!(applied(fx.one(&fx.laptop, delete(d.node_id, &d.vv)).await).deleted);
    let v2 = fx.file("v2").await;
    let node = applied(
        fx.one(&fx.phone, edit(&f, |n| n.meta.content = v2.content.clone()))
            .await,
    );
    assert_eq!(node.meta.content, v2.content);
    assert_eq!(node.parent, Some(d.node_id));
    assert!(!fx.node(d.node_id).await.deleted, "the folder came back");
}

#[tokio::test]
async fn a_folder_brought_back_under_a_taken_name_is_a_marked_copy() {
    let fx = Fx::new().await;
    let d = fx.create(NodeId::ROOT, "d", dir_meta()).await;
    let f = fx.create(d.node_id, "f.txt", fx.file("v1").await).await;
    // The laptop deletes f and d and makes a new folder d; the phone
    // edits f meanwhile.
    applied(fx.one(&fx.laptop, delete(f.node_id, &f.vv)).await);
    applied(fx.one(&fx.laptop, delete(d.node_id, &d.vv)).await);
    let new_d = fx.create(NodeId::ROOT, "d", dir_meta()).await;
    let v2 = fx.file("v2").await;
    applied(
        fx.one(&fx.phone, edit(&f, |n| n.meta.content = v2.content.clone()))
            .await,
    );
    let back = fx.node(d.node_id).await;
    assert!(!back.deleted);
    assert_eq!(back.name, format!("d (conflict phone {STAMP})"));
    let mark = back.meta.conflict.expect("marked as a conflict copy");
    assert_eq!(mark.of, new_d.node_id);
    assert_eq!(fx.node(new_d.node_id).await.meta.conflict, None);
}
