//! Conflict copies on two devices of the real server rules: the server's
//! mark is stored with the node on both, reads as the state `conflict`,
//! is listed without scanning inodes, survives other changes of the copy,
//! and a rename, a delete or `clear_conflict` ends it everywhere.

use super::test_support::{overwrite, two_devices, TwoDevices};
use super::xattr::{CONFLICT, CONFLICTS, STATE, STATUS};
use super::*;
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;

async fn upload(up: &Uploader) {
    while up.run_once().await.unwrap() {}
}

async fn pull(vfs: &Arc<Vfs>, remote: &Arc<dyn crate::remote::Remote>) {
    Follower::new(vfs.clone(), remote.clone())
        .pull_all()
        .await
        .unwrap();
}

fn state(vfs: &Vfs, ino: u64) -> String {
    String::from_utf8(vfs.getxattr(ino, STATE.as_bytes()).unwrap()).unwrap()
}

fn json(vfs: &Vfs, ino: u64, name: &str) -> serde_json::Value {
    serde_json::from_slice(&vfs.getxattr(ino, name.as_bytes()).unwrap()).unwrap()
}

/// The only entry of the root whose name contains "(conflict ".
fn copy_ino(vfs: &Vfs) -> u64 {
    let all = vfs.meta.list(ROOT_INO, None, 100).unwrap();
    let copies: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.contains("(conflict "))
        .collect();
    assert_eq!(copies.len(), 1, "{all:?}");
    copies[0].1.ino
}

/// Both devices hold "f.txt" and a conflict copy of it made by desktop's
/// losing edit; returns (devices, uploaders, original ino on a, copy ino
/// on a, copy ino on b).
async fn conflicted() -> (
    TwoDevices,
    super::test_support::Held,
    (Uploader, Uploader),
    u64,
    u64,
    u64,
) {
    let (dev, held) = two_devices().await;
    let (a, b) = (dev.a.clone(), dev.b.clone());
    let ups = (
        Uploader::new(a.clone(), dev.ra.clone()),
        Uploader::new(b.clone(), dev.rb.clone()),
    );
    let (attr, fh) = a.create(ROOT_INO, b"f.txt", 0o644, true).unwrap();
    a.write(fh, 0, b"base").ready().unwrap();
    a.release(fh).unwrap();
    upload(&ups.0).await;
    pull(&b, &dev.rb).await;
    let on_b = b.lookup(ROOT_INO, b"f.txt").unwrap().ino;
    overwrite(&a, attr.ino, b"laptop's");
    overwrite(&b, on_b, b"desktop's");
    upload(&ups.0).await;
    upload(&ups.1).await;
    pull(&a, &dev.ra).await;
    pull(&b, &dev.rb).await;
    let (copy_a, copy_b) = (copy_ino(&a), copy_ino(&b));
    (dev, held, ups, attr.ino, copy_a, copy_b)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_copy_is_marked_listed_and_shown_on_both_devices() {
    let (dev, _held, _ups, orig, copy_a, copy_b) = conflicted().await;
    let (a, b) = (&dev.a, &dev.b);
    for (vfs, copy) in [(a, copy_a), (b, copy_b)] {
        let mark = vfs.conflict_of(copy).unwrap().expect("the copy is marked");
        assert_eq!(mark.device, "desktop");
        assert_eq!(mark.of, a.meta.inode(orig).unwrap().unwrap().node_id);
        assert_eq!(state(vfs, copy), "conflict");
        let original = vfs.lookup(ROOT_INO, b"f.txt").unwrap().ino;
        assert_eq!(vfs.conflict_of(original).unwrap(), None);
        assert_ne!(state(vfs, original), "conflict");
        assert!(matches!(
            vfs.getxattr(original, CONFLICT.as_bytes()),
            Err(VfsError::NoAttribute)
        ));

        let list = json(vfs, ROOT_INO, CONFLICTS);
        assert_eq!(list["count"], 1);
        let c = &list["copies"][0];
        assert_eq!(c["path"], vfs.path_of(copy).unwrap());
        assert!(c["path"]
            .as_str()
            .unwrap()
            .starts_with("f (conflict desktop "));
        assert_eq!(c["of_path"], "f.txt");
        assert_eq!(c["device"], "desktop");
        assert!(c["at"].as_str().unwrap().ends_with('Z'));
        let one = json(vfs, copy, CONFLICT);
        assert_eq!(one["of_path"], "f.txt");
        assert!(one.get("path").is_none());
        assert_eq!(json(vfs, ROOT_INO, STATUS)["conflicts"], 1);
    }
    // The losing device's version is the copy's content.
    let fh = b.open_file(copy_b, false, false).unwrap();
    assert_eq!(b.read(fh, 0, 100).await.unwrap(), b"desktop's");
    b.release(fh).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn other_changes_keep_the_mark_and_pending_reads_first() {
    let (dev, _held, ups, _orig, copy_a, copy_b) = conflicted().await;
    let (a, b) = (&dev.a, &dev.b);
    // A chmod and a content edit of the copy on b: pending first, then
    // conflict again; the mark travels with the upload.
    b.setattr_now(
        copy_b,
        SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        },
    )
    .unwrap();
    overwrite(b, copy_b, b"desktop's, edited");
    assert_eq!(state(b, copy_b), "pending");
    upload(&ups.1).await;
    assert_eq!(state(b, copy_b), "conflict");
    pull(a, &dev.ra).await;
    assert_eq!(a.getattr(copy_a).unwrap().mode & 0o777, 0o600);
    assert_eq!(state(a, copy_a), "conflict");
    assert!(a.conflict_of(copy_a).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rename_clears_the_mark_everywhere() {
    let (dev, _held, ups, _orig, copy_a, copy_b) = conflicted().await;
    let (a, b) = (&dev.a, &dev.b);
    let name = a.meta.inode(copy_a).unwrap().unwrap().name;
    a.rename(ROOT_INO, name.as_bytes(), ROOT_INO, b"kept.txt", false)
        .unwrap();
    assert_eq!(a.conflict_of(copy_a).unwrap(), None);
    assert_eq!(json(a, ROOT_INO, CONFLICTS)["count"], 0);
    upload(&ups.0).await;
    // Never read on a: its content is still only on the server.
    assert_eq!(state(a, copy_a), "placeholder");
    pull(b, &dev.rb).await;
    assert_eq!(b.conflict_of(copy_b).unwrap(), None);
    assert_eq!(b.path_of(copy_b).unwrap(), "kept.txt");
    assert_ne!(state(b, copy_b), "conflict");
    assert_eq!(json(b, ROOT_INO, STATUS)["conflicts"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn clearing_keeps_both_and_a_delete_drops_the_mark() {
    let (dev, _held, ups, _orig, copy_a, copy_b) = conflicted().await;
    let (a, b) = (&dev.a, &dev.b);
    // "Keep both": removing the attribute clears the mark, once.
    a.removexattr_as(Caller { uid: 0, gid: 0 }, copy_a, CONFLICT.as_bytes())
        .unwrap();
    assert!(matches!(
        a.clear_conflict(copy_a),
        Err(VfsError::NoAttribute)
    ));
    assert_eq!(state(a, copy_a), "pending");
    upload(&ups.0).await;
    pull(b, &dev.rb).await;
    assert_eq!(b.conflict_of(copy_b).unwrap(), None);
    assert_eq!(state(b, copy_b), "cached");

    // A second conflict, whose copy b deletes: the key goes with the node.
    let on_b = b.lookup(ROOT_INO, b"f.txt").unwrap().ino;
    overwrite(
        a,
        a.lookup(ROOT_INO, b"f.txt").unwrap().ino,
        b"again, laptop",
    );
    overwrite(b, on_b, b"again, desktop");
    upload(&ups.0).await;
    upload(&ups.1).await;
    pull(b, &dev.rb).await;
    let (second, _) = b
        .conflict_copies()
        .unwrap()
        .into_iter()
        .next()
        .expect("a second copy");
    let name = b.meta.inode(second).unwrap().unwrap().name;
    b.unlink(ROOT_INO, name.as_bytes()).unwrap();
    assert!(b.conflict_copies().unwrap().is_empty());
    upload(&ups.1).await;
    pull(a, &dev.ra).await;
    // The key goes with the inode, once the tombstone is passed.
    pull(b, &dev.rb).await;
    assert!(b.meta.conflicts().unwrap().is_empty());
    assert!(a.meta.conflicts().unwrap().is_empty());
    assert_eq!(json(a, ROOT_INO, CONFLICTS)["count"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_list_fits_one_attribute_value_and_counts_them_all() {
    let (dev, _held) = two_devices().await;
    let a = &dev.a;
    let of = crate::protocol::NodeId::random();
    let total = 400;
    for i in 0..total {
        let mut vv = crate::protocol::VersionVector::new();
        vv.increment(dev.idb);
        let mut meta = crate::protocol::NodeMeta::new(NodeKind::File, 0o644, Timestamp::now());
        meta.conflict = Some(crate::protocol::ConflictMark {
            of,
            device: "desktop".into(),
            at: Timestamp::now(),
        });
        let rec = NodeRecord {
            node_id: NodeId::random(),
            parent: Some(NodeId::ROOT),
            name: format!("{i:03} {}", "x".repeat(200)),
            links: Vec::new(),
            deleted: false,
            meta,
            vv,
            seq: i + 1,
        };
        assert!(a.apply_remote(&rec).unwrap());
    }
    let raw = a.getxattr(ROOT_INO, CONFLICTS.as_bytes()).unwrap();
    assert!(raw.len() <= 64 * 1024, "{} bytes", raw.len());
    let list: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(list["count"], total);
    let shown = list["copies"].as_array().unwrap();
    assert!(
        shown.len() > 100 && shown.len() < total as usize,
        "{}",
        shown.len()
    );
    // The original is not on this device: shown as gone.
    assert!(shown[0]["of_path"].is_null());
    assert_eq!(json(a, ROOT_INO, STATUS)["conflicts"], total);
}
