//! Field-by-field conflicts on the client (issue 9): the sync base, the
//! answer of a commit adopted per field (`vfs::answer`), a node re-keyed
//! by a `Merged` answer, and a never-uploaded node merged with an equal
//! pulled one (`vfs::rekey`), the `seen` of a node's second op in one
//! round (`sync::uploader::plan`), and deletes that lose against a change
//! elsewhere (`Vfs::delete_lost`, a folder the server revived). Answers
//! the server's rules do not give yet are built by hand from the node's
//! base; the rest runs on the real rules ([`two_devices`]).

use super::test_support::{names, overwrite, pull, read_all, sync, two_devices, write_file};
use super::*;
use crate::protocol::{NodeMeta, SeenState};
use crate::sync::uploader::Uploader;
use xattr::XattrFlags;

fn set_xattr(vfs: &Vfs, ino: u64, name: &str, value: &[u8]) {
    vfs.setxattr_as(
        vfs.mounter(),
        ino,
        name.as_bytes(),
        value,
        XattrFlags::default(),
    )
    .unwrap();
}

/// What the uploader's op for `ino` sends now (its place as in the
/// inode), as the uploader records it.
fn planned(vfs: &Vfs, ino: u64, content: bool) -> SentState {
    let inode = vfs.inode(ino).unwrap().unwrap();
    let parent = vfs.meta.node_id_of(inode.parent).unwrap();
    SentState {
        node_id: inode.node_id,
        rev: inode.local_rev,
        entries: vec![(parent, inode.name.clone())],
        content,
        conflict: false,
        state: SeenState {
            parent,
            name: inode.name.clone(),
            links: Vec::new(),
            mode: inode.mode,
            uid: inode.uid,
            gid: inode.gid,
            ids_from: vfs.wire_ids_from(&inode),
            mtime: inode.mtime,
            atime: inode.atime,
            btime: inode.btime,
            content: None,
            symlink_target: inode.symlink_target.clone(),
            xattrs: vfs.xattrs_of(ino).unwrap(),
            conflict: None,
        },
    }
}

/// A server record of `ino` with the state `sent` sent, one version on.
fn answer_to(vfs: &Vfs, ino: u64, sent: &SentState, node_id: NodeId) -> NodeRecord {
    let inode = vfs.inode(ino).unwrap().unwrap();
    let s = &sent.state;
    let mut vv = inode.vv.clone();
    vv.increment(vfs.device_id);
    NodeRecord {
        node_id,
        parent: Some(s.parent),
        name: s.name.clone(),
        links: Vec::new(),
        deleted: false,
        meta: NodeMeta {
            kind: inode.kind,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            ids_from: s.ids_from,
            rdev: 0,
            mtime: s.mtime,
            atime: s.atime,
            btime: s.btime,
            content: vfs.server_content(ino).unwrap(),
            symlink_target: s.symlink_target.clone(),
            xattrs: s.xattrs.clone(),
            conflict: None,
        },
        vv,
        seq: inode.server_seq + 2,
    }
}

/// The answer a concurrent rename to `h.txt`, a new mtime and a new
/// attribute `user.b` on the other device merged into.
fn with_their_changes(mut rec: NodeRecord) -> NodeRecord {
    rec.name = "h.txt".into();
    rec.meta.mtime = Timestamp::from_ns(1_600_000_000_000_000_000);
    rec.meta.xattrs.insert("user.b".into(), b"theirs".to_vec());
    rec
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_answer_brings_the_other_devices_fields() {
    let (d, _held) = two_devices().await;
    let a = &d.a;
    let ino = write_file(a, ROOT_INO, "g.txt", b"hello");
    sync(a, &d.ra).await;
    let base = a.sync_base(ino).unwrap().expect("a synced node has a base");
    assert_eq!((base.parent, base.name.as_str()), (NodeId::ROOT, "g.txt"));
    assert_eq!(base.mode, 0o644);

    // chmod here while the other device renames and touches it.
    a.setattr(
        ino,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .ready()
    .unwrap();
    let sent = planned(a, ino, false);
    let node_id = a.inode(ino).unwrap().unwrap().node_id;
    let rec = with_their_changes(answer_to(a, ino, &sent, node_id));
    a.commit_done(ino, &sent, &rec).unwrap();

    assert_eq!(a.lookup(ROOT_INO, b"h.txt").unwrap().ino, ino, "renamed");
    assert!(a.lookup(ROOT_INO, b"g.txt").is_err());
    let attr = a.getattr(ino).unwrap();
    assert_eq!(attr.mode & 0o7777, 0o600, "its own chmod stays");
    assert_eq!(attr.mtime, rec.meta.mtime, "their mtime");
    assert_eq!(a.getxattr(ino, b"user.b").unwrap(), b"theirs");
    assert_eq!(read_all(a, ino).await, b"hello");
    assert_eq!(
        a.sync_base(ino).unwrap(),
        SeenState::of(&rec),
        "base = answer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_field_changed_again_during_the_flight_keeps_its_local_value() {
    let (d, _held) = two_devices().await;
    let a = &d.a;
    let ino = write_file(a, ROOT_INO, "g.txt", b"hello");
    set_xattr(a, ino, "user.b", b"before");
    sync(a, &d.ra).await;
    a.setattr(
        ino,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .ready()
    .unwrap();
    let sent = planned(a, ino, false);
    // In flight: chmod again, and a new value of the attribute the other
    // device changed too.
    a.setattr(
        ino,
        SetAttr {
            mode: Some(0o640),
            ..Default::default()
        },
    )
    .ready()
    .unwrap();
    set_xattr(a, ino, "user.b", b"mine");
    let node_id = a.inode(ino).unwrap().unwrap().node_id;
    let rec = with_their_changes(answer_to(a, ino, &sent, node_id));
    a.commit_done(ino, &sent, &rec).unwrap();

    assert_eq!(
        a.lookup(ROOT_INO, b"h.txt").unwrap().ino,
        ino,
        "not changed: theirs"
    );
    assert_eq!(
        a.getattr(ino).unwrap().mode & 0o7777,
        0o640,
        "changed again: mine"
    );
    assert_eq!(a.getxattr(ino, b"user.b").unwrap(), b"mine");
    let base = a.sync_base(ino).unwrap().unwrap();
    assert_eq!(base.mode, 0o600, "the base is the answer");
    assert_eq!(base.xattrs.get("user.b"), Some(&b"theirs"[..]));
    assert!(a.journal_len() > 0, "the later changes are still to push");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merged_answer_re_keys_the_node_and_its_children_follow() {
    let (d, _held) = two_devices().await;
    let a = &d.a;
    let dir = a.mkdir(ROOT_INO, b"photos", 0o755).unwrap().ino;
    let child = write_file(a, dir, "c.txt", b"child");
    let old = a.inode(dir).unwrap().unwrap().node_id;
    let sent = planned(a, dir, false);
    let theirs = NodeId::random();
    let rec = answer_to(a, dir, &sent, theirs);
    a.merged_done(dir, &sent, &rec).unwrap();

    let inode = a.inode(dir).unwrap().unwrap();
    assert_eq!(inode.node_id, theirs);
    assert_eq!(a.ino_of(&theirs).unwrap(), Some(dir));
    assert_eq!(a.ino_of(&old).unwrap(), None);
    assert_eq!(a.resolve_alias(&old).unwrap(), theirs, "records naming it");
    assert_eq!(a.sync_base(dir).unwrap(), SeenState::of(&rec));
    assert_eq!(a.lookup(dir, b"c.txt").unwrap().ino, child);

    // A file with unsent content keeps reading its working copy.
    let f = write_file(a, ROOT_INO, "same.txt", b"same bytes");
    let sent = planned(a, f, false);
    let theirs = NodeId::random();
    let rec = answer_to(a, f, &sent, theirs);
    a.merged_done(f, &sent, &rec).unwrap();
    let inode = a.inode(f).unwrap().unwrap();
    assert_eq!(inode.node_id, theirs);
    assert!(
        a.work_path_of(&inode).exists(),
        "the copy moved to the new id"
    );
    assert_eq!(read_all(a, f).await, b"same bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_merged_answer_folds_a_pulled_duplicate_into_the_node() {
    let (d, _held) = two_devices().await;
    let a = &d.a;
    let dir = a.mkdir(ROOT_INO, b"photos", 0o755).unwrap().ino;
    let sent = planned(a, dir, false);
    // Renamed while its create is in flight; then the other device's
    // `photos` arrives (no merge here: the name is free).
    a.rename(ROOT_INO, b"photos", ROOT_INO, b"pics", false)
        .unwrap();
    let theirs = NodeId::random();
    let mut rec = answer_to(a, dir, &sent, theirs);
    rec.vv = Default::default();
    rec.vv.increment(d.idb);
    assert!(a.apply_remote(&rec).unwrap());
    let pulled = a.lookup(ROOT_INO, b"photos").unwrap().ino;
    assert_ne!(pulled, dir);
    let mut kid = rec.clone();
    kid.node_id = NodeId::random();
    kid.parent = Some(theirs);
    kid.name = "a.jpg".into();
    kid.meta = NodeMeta::new(NodeKind::File, 0o644, Timestamp::now());
    assert!(a.apply_remote(&kid).unwrap());

    a.merged_done(dir, &sent, &rec).unwrap();
    assert_eq!(a.ino_of(&theirs).unwrap(), Some(dir));
    assert_eq!(
        names(a, ROOT_INO),
        vec!["pics"],
        "one folder, its new name kept"
    );
    assert_eq!(names(a, dir), vec!["a.jpg"], "the pulled child moved in");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_made_on_both_devices_merges_when_pulled_first() {
    let (d, _held) = two_devices().await;
    let (a, b) = (&d.a, &d.b);
    let pa = a.mkdir(ROOT_INO, b"photos", 0o755).unwrap().ino;
    write_file(a, pa, "a.jpg", b"from a");
    sync(a, &d.ra).await;
    let pb = b.mkdir(ROOT_INO, b"photos", 0o755).unwrap().ino;
    write_file(b, pb, "b.jpg", b"from b");
    pull(b, &d.rb).await;
    assert_eq!(names(b, ROOT_INO), vec!["photos"], "no conflict copy");
    assert_eq!(
        b.inode(pb).unwrap().unwrap().node_id,
        a.inode(pa).unwrap().unwrap().node_id,
        "the local folder took the remote id"
    );
    assert_eq!(names(b, pb), vec!["a.jpg", "b.jpg"]);
    sync(b, &d.rb).await;
    pull(a, &d.ra).await;
    assert_eq!(names(a, ROOT_INO), vec!["photos"]);
    assert_eq!(names(a, pa), vec!["a.jpg", "b.jpg"]);
    let bj = a.lookup(pa, b"b.jpg").unwrap().ino;
    assert_eq!(read_all(a, bj).await, b"from b");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_made_on_both_devices_merges_only_with_equal_content() {
    let (d, _held) = two_devices().await;
    let (a, b) = (&d.a, &d.b);
    let fa = write_file(a, ROOT_INO, "same.txt", b"same bytes");
    write_file(a, ROOT_INO, "other.txt", b"one version");
    sync(a, &d.ra).await;
    let fb = write_file(b, ROOT_INO, "same.txt", b"same bytes");
    write_file(b, ROOT_INO, "other.txt", b"another version");
    pull(b, &d.rb).await;
    let root = names(b, ROOT_INO);
    assert!(root.contains(&"same.txt".to_string()));
    assert_eq!(
        root.iter().filter(|n| n.starts_with("same")).count(),
        1,
        "{root:?}"
    );
    assert_eq!(
        root.iter().filter(|n| n.starts_with("other")).count(),
        2,
        "different content still moves aside: {root:?}"
    );
    let inode = b.inode(fb).unwrap().unwrap();
    assert_eq!(inode.node_id, a.inode(fa).unwrap().unwrap().node_id);
    assert!(!inode.dirty, "its content is the server's");
    assert_eq!(read_all(b, fb).await, b"same bytes");
    sync(b, &d.rb).await;
    pull(a, &d.ra).await;
    let root = names(a, ROOT_INO);
    assert_eq!(
        root.iter().filter(|n| n.starts_with("same")).count(),
        1,
        "{root:?}"
    );
    assert_eq!(read_all(a, fa).await, b"same bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_made_and_removed_in_one_round_is_gone_on_the_server() {
    let (d, _held) = two_devices().await;
    let (a, b) = (&d.a, &d.b);
    let f = write_file(a, ROOT_INO, "f", b"x");
    sync(a, &d.ra).await;
    // Two records of `f` in one round: the second must not be read as
    // "unchanged" against the stored base (which has no link either).
    a.link(f, ROOT_INO, b"g").unwrap();
    write_file(a, ROOT_INO, "other", b"y");
    a.unlink(ROOT_INO, b"g").unwrap();
    sync(a, &d.ra).await;
    pull(b, &d.rb).await;
    assert_eq!(names(b, ROOT_INO), vec!["f", "other"]);
    assert_eq!(names(a, ROOT_INO), vec!["f", "other"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_for_the_node_an_id_is_an_alias_of_re_keys_too() {
    let (d, _held) = two_devices().await;
    let a = &d.a;
    let dir = a.mkdir(ROOT_INO, b"photos", 0o755).unwrap().ino;
    // The server merged this create before a crash lost its answer; the
    // op went again and the server answered for the node it merged into.
    let sent = planned(a, dir, false);
    let theirs = NodeId::random();
    let rec = answer_to(a, dir, &sent, theirs);
    a.commit_done(dir, &sent, &rec).unwrap();
    assert_eq!(a.ino_of(&theirs).unwrap(), Some(dir));
    assert_eq!(a.sync_base(dir).unwrap(), SeenState::of(&rec));
    assert_eq!(names(a, ROOT_INO), vec!["photos"]);
}

/// Device b edits `d/f.txt` and pushes; device a, which has not pulled
/// that yet, removes `d` with its file (`rm -rf`): a's deletes lose
/// against the edit, and a gets the folder and the edited file back.
#[tokio::test(flavor = "multi_thread")]
async fn a_folder_removed_after_an_edit_elsewhere_comes_back_with_the_file() {
    let (d, _held) = two_devices().await;
    let (a, b) = (&d.a, &d.b);
    let da = a.mkdir(ROOT_INO, b"d", 0o755).unwrap().ino;
    write_file(a, da, "f.txt", b"original");
    sync(a, &d.ra).await;
    pull(b, &d.rb).await;
    let db = b.lookup(ROOT_INO, b"d").unwrap().ino;
    let fb = b.lookup(db, b"f.txt").unwrap().ino;
    overwrite(b, fb, b"edited on b");
    sync(b, &d.rb).await;

    a.unlink(da, b"f.txt").unwrap();
    a.rmdir(ROOT_INO, b"d").unwrap();
    pull(a, &d.ra).await;
    sync(a, &d.ra).await;
    assert_eq!(names(a, ROOT_INO), vec!["d"], "the folder came back");
    let da = a.lookup(ROOT_INO, b"d").unwrap().ino;
    assert_eq!(names(a, da), vec!["f.txt"], "with the edited file");
    let fa = a.lookup(da, b"f.txt").unwrap().ino;
    assert_eq!(read_all(a, fa).await, b"edited on b");
}

/// Device b creates `d/new.txt` and pushes; device a removes `d` with
/// its old file: the folder stays (with the new file, not the old one)
/// on both.
#[tokio::test(flavor = "multi_thread")]
async fn a_folder_removed_after_a_create_in_it_elsewhere_comes_back_with_the_new_file() {
    let (d, _held) = two_devices().await;
    let (a, b) = (&d.a, &d.b);
    let da = a.mkdir(ROOT_INO, b"d", 0o755).unwrap().ino;
    write_file(a, da, "old.txt", b"old");
    sync(a, &d.ra).await;
    pull(b, &d.rb).await;
    let db = b.lookup(ROOT_INO, b"d").unwrap().ino;
    write_file(b, db, "new.txt", b"new on b");
    sync(b, &d.rb).await;

    a.unlink(da, b"old.txt").unwrap();
    a.rmdir(ROOT_INO, b"d").unwrap();
    pull(a, &d.ra).await;
    sync(a, &d.ra).await;
    assert_eq!(names(a, ROOT_INO), vec!["d"], "the folder came back");
    let da = a.lookup(ROOT_INO, b"d").unwrap().ino;
    assert_eq!(names(a, da), vec!["new.txt"], "with the new file only");
    let na = a.lookup(da, b"new.txt").unwrap().ino;
    assert_eq!(read_all(a, na).await, b"new on b");
    pull(b, &d.rb).await;
    assert_eq!(names(b, db), vec!["new.txt"]);
}

/// Device a removes `d` with its file (`rm -rf`) and pushes; device b,
/// which has not pulled that, edits the file and pushes: the server
/// brings the file and its folder back, and a, which still keeps the
/// tombstones of its deletes, takes both back when it pulls.
#[tokio::test(flavor = "multi_thread")]
async fn an_edit_elsewhere_brings_back_a_folder_removed_here_before_it() {
    let (d, _held) = two_devices().await;
    let (a, b) = (&d.a, &d.b);
    let da = a.mkdir(ROOT_INO, b"d", 0o755).unwrap().ino;
    write_file(a, da, "f.txt", b"original");
    sync(a, &d.ra).await;
    pull(b, &d.rb).await;

    a.unlink(da, b"f.txt").unwrap();
    a.rmdir(ROOT_INO, b"d").unwrap();
    let up = Uploader::new(a.clone(), d.ra.clone());
    while a.journal_len() > 0 {
        assert!(up.run_once().await.unwrap(), "the upload made progress");
    }
    let db = b.lookup(ROOT_INO, b"d").unwrap().ino;
    let fb = b.lookup(db, b"f.txt").unwrap().ino;
    overwrite(b, fb, b"edited on b");
    sync(b, &d.rb).await;

    pull(a, &d.ra).await;
    assert_eq!(names(a, ROOT_INO), vec!["d"], "the folder came back");
    let da = a.lookup(ROOT_INO, b"d").unwrap().ino;
    assert_eq!(names(a, da), vec!["f.txt"], "with the edited file");
    let fa = a.lookup(da, b"f.txt").unwrap().ino;
    assert_eq!(read_all(a, fa).await, b"edited on b");
}
