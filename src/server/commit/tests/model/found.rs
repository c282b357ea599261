//! What the model found in the rules, each as the smallest sequence of
//! commits that shows it.

use super::super::*;
use crate::protocol::{FileContent, Manifest, SeenState};

/// The op a device sends after changing `rec` (as it last saw it) into
/// `parent`/`name` with `meta`.
fn edit(rec: &NodeRecord, parent: NodeId, name: &str, meta: NodeMeta) -> CommitOp {
    CommitOp {
        node_id: rec.node_id,
        base: rec.vv.clone(),
        seen: SeenState::of(rec),
        change: NodeChange::Upsert {
            parent,
            name: name.into(),
            links: Vec::new(),
            meta,
        },
    }
}

fn node_of(o: CommitOutcome) -> NodeRecord {
    match o {
        CommitOutcome::Applied { node }
        | CommitOutcome::Renamed { node }
        | CommitOutcome::Merged { node } => node,
        other => panic!("expected the node, got {other:?}"),
    }
}

/// The shrunk case: the laptop has `/a` ("x") and `/d`; the phone moves
/// `/a` to `/d/a`; the laptop, before it pulls that, creates a second file
/// `/d/a` with the same bytes and then writes "y" into its `/a`. The
/// create meets the moved node under its name, "the same thing", and is
/// merged into it — into the node the laptop already holds as `/a` — so
/// the laptop's write of `/a` lands on it, and the laptop's two files
/// become one: its `/d/a` ("x") is gone from the tree (only the version
/// history keeps it). A create should merge only into a node its device
/// does not already hold (two creates, not a create and a move).
#[tokio::test]
async fn a_create_does_not_merge_into_a_node_its_device_already_has() {
    two_files_stay_two(false).await;
}

/// The same when the phone made `/a` and the laptop pulled it: the
/// holder's vector then has no counter of the laptop, so a fix cannot
/// look for one there.
#[tokio::test]
async fn a_create_does_not_merge_into_a_node_its_device_pulled() {
    two_files_stay_two(true).await;
}

/// The case above; `/a` made by the phone when `phone_made_it`.
async fn two_files_stay_two(phone_made_it: bool) {
    let fx = Fx::new().await;
    let maker = if phone_made_it { &fx.phone } else { &fx.laptop };
    let none = VersionVector::new();
    let d = node_of(
        fx.one(
            &fx.laptop,
            upsert(NodeId::random(), &none, NodeId::ROOT, "d", dir_meta()),
        )
        .await,
    );
    let x = fx.file("x").await;
    let a = node_of(
        fx.one(
            maker,
            upsert(NodeId::random(), &none, NodeId::ROOT, "a", x.clone()),
        )
        .await,
    );
    // The phone moves /a into /d.
    node_of(
        fx.one(&fx.phone, edit(&a, d.node_id, "a", a.meta.clone()))
            .await,
    );
    // The laptop, not having pulled the move, makes a new /d/a ("x")...
    let second = NodeId::random();
    let made = fx
        .one(&fx.laptop, upsert(second, &none, d.node_id, "a", x.clone()))
        .await;
    // ... and writes "y" into its /a.
    let y = fx.file("y").await;
    node_of(
        fx.one(&fx.laptop, edit(&a, NodeId::ROOT, "a", y.clone()))
            .await,
    );

    let live: Vec<NodeRecord> = fx
        .store
        .changes_since(fx.account, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|n| !n.deleted && n.meta.kind == NodeKind::File)
        .collect();
    let contents: Vec<_> = live.iter().map(|n| n.meta.content.clone()).collect();
    assert!(
        contents.contains(&y.content) && contents.contains(&x.content),
        "the laptop wrote \"y\" into /a and made /d/a with \"x\"; the create was answered \
         {made:?} and the live files are {live:#?}"
    );
}

/// The shrunk case: the laptop has `/a` ("x"); the phone writes "" into
/// it, then deletes it (having seen ""); the laptop, which never saw "",
/// renames `/a` to `/b`; the tablet, which saw "", writes "y". The
/// laptop's rename revives the node (the edit wins) but with the
/// laptop's **whole** state, its stale "x" included, although it changed
/// only the place: the content goes back to a version two devices had
/// replaced, and the tablet's later write then meets "x" where it saw ""
/// and becomes a conflict copy without any concurrent content write. A
/// revive with `seen` should merge field by field against the tombstone
/// (which keeps the node's last state), as an edit of a live node does.
#[tokio::test]
async fn a_revived_node_keeps_the_fields_its_reviver_did_not_change() {
    let fx = Fx::new().await;
    let tablet = CommitCtx {
        device: dev(3),
        device_name: "tablet".into(),
        ..fx.laptop.clone()
    };
    let x = fx.file("x").await;
    let a = node_of(
        fx.one(
            &fx.laptop,
            upsert(
                NodeId::random(),
                &VersionVector::new(),
                NodeId::ROOT,
                "a",
                x,
            ),
        )
        .await,
    );
    let empty = file_meta(FileContent {
        manifest: Manifest::default(),
    });
    let emptied = node_of(
        fx.one(&fx.phone, edit(&a, NodeId::ROOT, "a", empty.clone()))
            .await,
    );
    applied(fx.one(&fx.phone, delete(a.node_id, &emptied.vv)).await);
    // The laptop renames the /a it has ("x").
    let revived = node_of(
        fx.one(&fx.laptop, edit(&a, NodeId::ROOT, "b", a.meta.clone()))
            .await,
    );
    assert_eq!(revived.name, "b");
    assert_eq!(
        revived.meta.content, empty.content,
        "the rename brought back the laptop's stale content"
    );
    // The tablet, which saw "", writes "y".
    let y = fx.file("y").await;
    let written = fx
        .one(&tablet, edit(&emptied, NodeId::ROOT, "a", y.clone()))
        .await;
    assert!(
        matches!(written, CommitOutcome::Applied { .. }),
        "a write from the last content is no conflict: {written:?}"
    );
}
