//! The pure merge, for what the commit tests cannot easily reach.

use super::*;
use crate::protocol::{Link, Timestamp, VersionVector, XATTR_TOTAL_MAX};

fn rec(meta: NodeMeta) -> NodeRecord {
    NodeRecord {
        node_id: NodeId::random(),
        parent: Some(NodeId::ROOT),
        name: "n".into(),
        links: Vec::new(),
        deleted: false,
        meta,
        vv: VersionVector::new(),
        seq: 1,
    }
}

fn dir() -> NodeMeta {
    NodeMeta::new(NodeKind::Dir, 0o755, Timestamp::from_ns(0))
}

#[test]
fn an_xattr_union_over_the_limit_takes_the_ops_set_whole() {
    let half = vec![b'x'; XATTR_TOTAL_MAX / 2 + 16];
    let base = rec(dir());
    let seen = SeenState::of(&base).unwrap();
    let mut server = base.clone();
    server.meta.xattrs.insert("user.a".into(), half.clone());
    let mut op = dir();
    op.xattrs.insert("user.b".into(), half.clone());
    let m = merge(&seen, &server, &record_entries(&base), &op);
    assert_eq!(m.meta.xattrs, op.xattrs);
    assert!(!m.moved && !m.content_conflict);
}

#[test]
fn links_compare_as_a_set_and_the_first_entry_counts() {
    let mut base = rec(NodeMeta::new(NodeKind::File, 0o644, Timestamp::from_ns(0)));
    let (d1, d2) = (NodeId::random(), NodeId::random());
    base.links = vec![
        Link {
            parent: d1,
            name: "l1".into(),
        },
        Link {
            parent: d2,
            name: "l2".into(),
        },
    ];
    let seen = SeenState::of(&base).unwrap();
    let reordered = vec![
        (NodeId::ROOT, "n".to_string()),
        (d2, "l2".to_string()),
        (d1, "l1".to_string()),
    ];
    assert!(!merge(&seen, &base, &reordered, &base.meta).moved);
    let swapped = vec![
        (d1, "l1".to_string()),
        (NodeId::ROOT, "n".to_string()),
        (d2, "l2".to_string()),
    ];
    assert!(merge(&seen, &base, &swapped, &base.meta).moved);
}

#[test]
fn the_same_thing_is_kind_and_content() {
    let t = Timestamp::from_ns(0);
    let link = |target: &str| NodeMeta {
        symlink_target: Some(target.into()),
        ..NodeMeta::new(NodeKind::Symlink, 0o777, t)
    };
    assert!(same_thing(&dir(), &dir()));
    assert!(same_thing(&link("a"), &link("a")));
    assert!(!same_thing(&link("a"), &link("b")));
    assert!(!same_thing(&dir(), &link("a")));
    let dev = |rdev| NodeMeta {
        rdev,
        ..NodeMeta::new(NodeKind::CharDevice, 0o600, t)
    };
    assert!(same_thing(&dev(1), &dev(1)));
    assert!(!same_thing(&dev(1), &dev(2)));
}
