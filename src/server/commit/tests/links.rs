//! Hard links: a node's entries travel with it (`protocol::api` module
//! docs); each one is checked, may get a conflict name, and goes with a
//! delete.

use super::*;

fn with_links(mut op: CommitOp, links: &[(NodeId, &str)]) -> CommitOp {
    if let NodeChange::Upsert { links: l, .. } = &mut op.change {
        *l = links
            .iter()
            .map(|(parent, name)| Link {
                parent: *parent,
                name: (*name).into(),
            })
            .collect();
    }
    op
}

fn link(parent: NodeId, name: &str) -> Link {
    Link {
        parent,
        name: name.into(),
    }
}

#[tokio::test]
async fn a_node_with_links_is_found_under_every_name_and_unlinks_one_by_one() {
    let fx = Fx::new().await;
    let (d, f) = (NodeId::random(), NodeId::random());
    let none = VersionVector::new();
    fx.one(&fx.laptop, upsert(d, &none, NodeId::ROOT, "d", dir_meta()))
        .await;
    let meta = fx.file("x").await;
    let op = with_links(
        upsert(f, &none, NodeId::ROOT, "f", meta.clone()),
        &[(d, "g"), (NodeId::ROOT, "h")],
    );
    let n = applied(fx.one(&fx.laptop, op).await);
    // Served in (parent, name) order.
    let mut want = vec![link(d, "g"), link(NodeId::ROOT, "h")];
    want.sort();
    assert_eq!(n.links, want);
    assert_eq!(fx.node(f).await.links, want);
    for (p, name) in [(NodeId::ROOT, "f"), (d, "g"), (NodeId::ROOT, "h")] {
        assert_eq!(fx.lookup(p, name).await.unwrap().node_id, f, "{name}");
    }
    // The folder holding only a link is not empty: its delete loses.
    let dn = fx.node(d).await;
    assert!(matches!(
        fx.one(&fx.laptop, delete(d, &dn.vv)).await,
        CommitOutcome::Superseded { .. }
    ));
    // Unlinking one name is an upsert without it.
    let op = with_links(
        upsert(f, &n.vv, NodeId::ROOT, "f", meta.clone()),
        &[(NodeId::ROOT, "h")],
    );
    let n = applied(fx.one(&fx.laptop, op).await);
    assert_eq!(n.links, [link(NodeId::ROOT, "h")]);
    assert!(fx.lookup(d, "g").await.is_none());
    // The first entry may go while a link stays: the link becomes first.
    let n = applied(
        fx.one(&fx.laptop, upsert(f, &n.vv, NodeId::ROOT, "h", meta))
            .await,
    );
    assert!(n.links.is_empty());
    assert!(fx.lookup(NodeId::ROOT, "f").await.is_none());
    assert_eq!(fx.lookup(NodeId::ROOT, "h").await.unwrap().node_id, f);
    // The last one: a delete; the tombstone keeps no link.
    let gone = applied(fx.one(&fx.laptop, delete(f, &n.vv)).await);
    assert!(gone.deleted && gone.links.is_empty());
    assert!(fx.lookup(NodeId::ROOT, "h").await.is_none());
}

#[tokio::test]
async fn a_taken_link_name_gets_a_conflict_name_and_two_clashing_links_two() {
    let fx = Fx::new().await;
    let none = VersionVector::new();
    let (other, f) = (NodeId::random(), NodeId::random());
    fx.one(
        &fx.phone,
        upsert(other, &none, NodeId::ROOT, "n.txt", fx.file("theirs").await),
    )
    .await;
    let op = with_links(
        upsert(f, &none, NodeId::ROOT, "f", fx.file("mine").await),
        &[(NodeId::ROOT, "n.txt")],
    );
    let CommitOutcome::Renamed { node } = fx.one(&fx.laptop, op).await else {
        panic!("expected renamed");
    };
    assert_eq!(node.name, "f");
    let conflict = format!("n (conflict laptop {STAMP}).txt");
    assert_eq!(node.links, [link(NodeId::ROOT, &conflict)]);
    assert_eq!(
        fx.lookup(NodeId::ROOT, "n.txt").await.unwrap().node_id,
        other
    );
    // Two entries of one node whose names are both taken.
    let g = NodeId::random();
    let op = with_links(
        upsert(g, &none, NodeId::ROOT, "n.txt", fx.file("third").await),
        &[(NodeId::ROOT, &conflict)],
    );
    let CommitOutcome::Renamed { node } = fx.one(&fx.laptop, op).await else {
        panic!("expected renamed");
    };
    let mut names = vec![node.name.clone()];
    names.extend(node.links.iter().map(|l| l.name.clone()));
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("n (conflict laptop")));
}

#[tokio::test]
async fn bad_entries_are_refused_before_anything_is_stored() {
    let fx = Fx::new().await;
    let none = VersionVector::new();
    let d = NodeId::random();
    let folder = with_links(
        upsert(d, &none, NodeId::ROOT, "d", dir_meta()),
        &[(NodeId::ROOT, "d2")],
    );
    let e = fx.run(&fx.laptop, vec![folder]).await.unwrap_err();
    assert_eq!(err_code(&e), "invalid_node");
    assert!(e.to_string().contains("exactly one entry"), "{e}");
    let twice = with_links(
        upsert(
            NodeId::random(),
            &none,
            NodeId::ROOT,
            "f",
            fx.file("x").await,
        ),
        &[(NodeId::ROOT, "f")],
    );
    let e = fx.run(&fx.laptop, vec![twice]).await.unwrap_err();
    assert_eq!(err_code(&e), "invalid_node");
    let bad_name = with_links(
        upsert(
            NodeId::random(),
            &none,
            NodeId::ROOT,
            "f",
            fx.file("x").await,
        ),
        &[(NodeId::ROOT, "a/b")],
    );
    let e = fx.run(&fx.laptop, vec![bad_name]).await.unwrap_err();
    assert_eq!(err_code(&e), "invalid_name");
    let missing = NodeId::random();
    let nowhere = with_links(
        upsert(
            NodeId::random(),
            &none,
            NodeId::ROOT,
            "f",
            fx.file("x").await,
        ),
        &[(missing, "g")],
    );
    let e = fx.run(&fx.laptop, vec![nowhere]).await.unwrap_err();
    assert_eq!(err_code(&e), "parent_not_found");
    assert_eq!(fx.log_len().await, 0, "nothing stored");
}

#[tokio::test]
async fn an_edit_beats_a_delete_and_brings_every_entry_back() {
    let fx = Fx::new().await;
    let none = VersionVector::new();
    let f = NodeId::random();
    let op = with_links(
        upsert(f, &none, NodeId::ROOT, "f", fx.file("one").await),
        &[(NodeId::ROOT, "g")],
    );
    let n = applied(fx.one(&fx.laptop, op).await);
    fx.one(&fx.phone, delete(f, &n.vv)).await;
    // The laptop edits from the old base: the edit wins, with its links.
    let op = with_links(
        upsert(f, &n.vv, NodeId::ROOT, "f", fx.file("two").await),
        &[(NodeId::ROOT, "g")],
    );
    let back = applied(fx.one(&fx.laptop, op).await);
    assert!(!back.deleted);
    assert_eq!(back.links, [link(NodeId::ROOT, "g")]);
    assert_eq!(fx.lookup(NodeId::ROOT, "g").await.unwrap().node_id, f);
}
