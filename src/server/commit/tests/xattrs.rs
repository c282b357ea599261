//! Extended attributes in a commit: kept exactly, replaced as a set, and
//! every rule of `protocol::Xattrs` refused with 400 `invalid_node`.

use super::*;
use crate::protocol::{XATTR_SIZE_MAX, XATTR_TOTAL_MAX};

fn with(mut meta: NodeMeta, attrs: &[(&str, &[u8])]) -> NodeMeta {
    meta.xattrs = attrs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect();
    meta
}

#[tokio::test]
async fn attributes_are_kept_exactly_and_replaced_as_a_set() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let file = with(
        fx.file("x").await,
        &[
            ("user.bin", &[0, 255, 10]),
            ("user.empty", b""),
            ("trusted.t", b"1"),
            ("security.capability", b"\x01\x00\x00\x02"),
        ],
    );
    let id = NodeId::random();
    let applied = fx
        .one(
            &fx.laptop,
            upsert(id, &empty, NodeId::ROOT, "f", file.clone()),
        )
        .await;
    let CommitOutcome::Applied { node } = applied else {
        panic!("{applied:?}")
    };
    assert_eq!(node.meta.xattrs, file.xattrs);
    assert_eq!(fx.node(id).await.meta, file);
    // Symlinks and special nodes hold trusted.* and security.*.
    let link = NodeMeta {
        symlink_target: Some("f".into()),
        ..with(
            NodeMeta::new(NodeKind::Symlink, 0o777, dir_meta().mtime),
            &[("security.selinux", b"ctx")],
        )
    };
    let lid = NodeId::random();
    fx.one(
        &fx.laptop,
        upsert(lid, &empty, NodeId::ROOT, "l", link.clone()),
    )
    .await;
    assert_eq!(fx.node(lid).await.meta.xattrs, link.xattrs);
    // The next commit's set replaces the stored one; none clears it.
    let vv = fx.node(id).await.vv;
    let fewer = with(file.clone(), &[("user.empty", b"")]);
    fx.one(
        &fx.laptop,
        upsert(id, &vv, NodeId::ROOT, "f", fewer.clone()),
    )
    .await;
    assert_eq!(fx.node(id).await.meta.xattrs, fewer.xattrs);
    let vv = fx.node(id).await.vv;
    fx.one(
        &fx.laptop,
        upsert(id, &vv, NodeId::ROOT, "f", with(file, &[])),
    )
    .await;
    assert!(fx.node(id).await.meta.xattrs.is_empty());
}

#[tokio::test]
async fn bad_attributes_are_refused_and_nothing_is_stored() {
    let fx = Fx::new().await;
    let empty = VersionVector::new();
    let long = format!("user.{}", "n".repeat(251));
    let big = vec![0u8; XATTR_SIZE_MAX + 1];
    let over_total = vec![0u8; XATTR_TOTAL_MAX];
    let fifo = NodeMeta::new(NodeKind::Fifo, 0o644, dir_meta().mtime);
    for (meta, says) in [
        (
            with(dir_meta(), &[("system.posix_acl_access", b"")]),
            "not supported",
        ),
        (with(dir_meta(), &[("noprefix", b"")]), "not supported"),
        (with(dir_meta(), &[("user.nimbus.state", b"x")]), "reserved"),
        (with(dir_meta(), &[("user.", b"")]), "not valid"),
        (with(dir_meta(), &[(long.as_str(), b"")]), "1 to 255 bytes"),
        (with(dir_meta(), &[("", b"")]), "1 to 255 bytes"),
        (with(dir_meta(), &[("user.big", &big)]), "at most 65536"),
        (with(dir_meta(), &[("user.a", &over_total)]), "at most 4096"),
        (with(fifo, &[("user.a", b"")]), "a fifo cannot hold"),
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
    assert_eq!(fx.log_len().await, 0);
    // Exactly at the limits is fine.
    let at_total = vec![1u8; XATTR_TOTAL_MAX - 6];
    let meta = with(dir_meta(), &[("user.a", &at_total)]);
    assert_eq!(meta.xattrs.total_bytes(), XATTR_TOTAL_MAX);
    let id = NodeId::random();
    fx.one(
        &fx.laptop,
        upsert(id, &empty, NodeId::ROOT, "ok", meta.clone()),
    )
    .await;
    assert_eq!(fx.node(id).await.meta.xattrs, meta.xattrs);
}
