//! Hard links in the core, without a kernel (issue 6): `link(2)` and
//! what `unlink`, `rename` and the open-file lifecycle do with several
//! names of one inode, and links travelling between two devices through
//! the server's real commit rules. The kernel-facing half is
//! `tests/hardlinks_mount.rs`.

use super::test_support::{open_vfs, overwrite, read_all, two_devices, TwoDevices};
use super::*;
use crate::remote::memory::MemoryRemote;
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;

fn one_device(dir: &std::path::Path) -> Arc<Vfs> {
    let device = DeviceId::random();
    open_vfs(dir, device, "t", Arc::new(MemoryRemote::new(device)))
}

fn file(vfs: &Vfs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = vfs.create(parent, name.as_bytes(), 0o644, true).unwrap();
    assert_eq!(vfs.write(fh, 0, data).ready().unwrap(), data.len() as u32);
    vfs.release(fh).unwrap();
    attr.ino
}

fn nlink(vfs: &Vfs, ino: u64) -> u32 {
    vfs.getattr(ino).unwrap().nlink
}

#[tokio::test]
async fn a_link_is_a_second_name_of_the_same_inode() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = one_device(dir.path());
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    let f = file(&vfs, ROOT_INO, "f", b"hello");
    let before = vfs.getattr(f).unwrap().ctime;
    std::thread::sleep(std::time::Duration::from_millis(5));
    let attr = vfs.link(f, d.ino, b"g").unwrap();
    assert_eq!((attr.ino, attr.nlink), (f, 2));
    assert!(attr.ctime > before, "link moves ctime");
    let g = vfs.lookup(d.ino, b"g").unwrap();
    assert_eq!((g.ino, g.nlink, g.size), (f, 2, 5));
    assert_eq!(vfs.lookup(ROOT_INO, b"f").unwrap().nlink, 2);
    // A write through one name is seen through the other.
    overwrite(&vfs, g.ino, b"through g");
    assert_eq!(read_all(&vfs, f).await, b"through g");
    // A third name in the same folder; the folder's own count is unmoved
    // (files do not count in a folder's link count).
    vfs.link(f, ROOT_INO, b"h").unwrap();
    assert_eq!(nlink(&vfs, f), 3);
    assert_eq!(nlink(&vfs, d.ino), 2);
    let names: Vec<String> = vfs
        .readdir(ROOT_INO, None, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.ino == f)
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["f", "h"]);
}

#[tokio::test]
async fn link_answers_as_linux() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = one_device(dir.path());
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    let f = file(&vfs, ROOT_INO, "f", b"x");
    assert!(matches!(
        vfs.link(d.ino, ROOT_INO, b"d2"),
        Err(VfsError::NotPermitted(_))
    ));
    assert!(matches!(vfs.link(f, ROOT_INO, b"d"), Err(VfsError::Exists)));
    assert!(matches!(vfs.link(f, f, b"x"), Err(VfsError::NotDir)));
    assert!(matches!(
        vfs.link(9999, ROOT_INO, b"x"),
        Err(VfsError::NotFound)
    ));
    // Symlinks and special nodes link like files.
    let s = vfs.symlink(ROOT_INO, b"s", b"f").unwrap();
    assert_eq!(vfs.link(s.ino, d.ino, b"s2").unwrap().nlink, 2);
    assert_eq!(vfs.readlink(s.ino).unwrap(), "f");
    // A removed folder takes no new entry.
    vfs.rmdir(ROOT_INO, b"d").unwrap_err();
    let e = vfs.mkdir(ROOT_INO, b"e", 0o755).unwrap();
    vfs.rmdir(ROOT_INO, b"e").unwrap();
    assert!(matches!(vfs.link(f, e.ino, b"x"), Err(VfsError::NotFound)));
}

#[tokio::test]
async fn unlink_removes_one_name_and_the_last_one_waits_for_the_open_handle() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = one_device(dir.path());
    let f = file(&vfs, ROOT_INO, "f", b"data");
    vfs.link(f, ROOT_INO, b"g").unwrap();
    let ctime = vfs.getattr(f).unwrap().ctime;
    std::thread::sleep(std::time::Duration::from_millis(5));
    // Unlinking the first name promotes the other.
    vfs.unlink(ROOT_INO, b"f").unwrap();
    assert!(matches!(
        vfs.lookup(ROOT_INO, b"f"),
        Err(VfsError::NotFound)
    ));
    let g = vfs.lookup(ROOT_INO, b"g").unwrap();
    assert_eq!((g.ino, g.nlink), (f, 1));
    assert!(g.ctime > ctime, "unlink moves ctime");
    assert_eq!(vfs.path_of(f).unwrap(), "g");
    // The last name goes while a handle is open: nlink 0, still usable.
    let fh = vfs.open_file(f, true, false).unwrap();
    vfs.unlink(ROOT_INO, b"g").unwrap();
    assert_eq!(nlink(&vfs, f), 0);
    assert_eq!(vfs.write(fh, 4, b"+more").await.unwrap(), 5);
    assert_eq!(vfs.read(fh, 0, 100).await.unwrap(), b"data+more");
    assert!(matches!(
        vfs.link(f, ROOT_INO, b"back"),
        Err(VfsError::NotFound)
    ));
    vfs.release(fh).unwrap();
    vfs.forget(f, u64::MAX);
    assert!(vfs.meta.inode(f).unwrap().is_none(), "purged once unused");
}

#[tokio::test]
async fn rename_moves_one_entry_and_a_link_over_its_sibling_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = one_device(dir.path());
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    let f = file(&vfs, ROOT_INO, "f", b"one");
    vfs.link(f, ROOT_INO, b"g").unwrap();
    // POSIX: both names stay, success.
    vfs.rename(ROOT_INO, b"f", ROOT_INO, b"g", false).unwrap();
    assert_eq!(vfs.lookup(ROOT_INO, b"f").unwrap().ino, f);
    assert_eq!(vfs.lookup(ROOT_INO, b"g").unwrap().ino, f);
    assert_eq!(nlink(&vfs, f), 2);
    assert!(matches!(
        vfs.rename(ROOT_INO, b"f", ROOT_INO, b"g", true),
        Err(VfsError::Exists)
    ));
    // Renaming the link moves that entry only.
    vfs.rename(ROOT_INO, b"g", d.ino, b"g2", false).unwrap();
    assert_eq!(vfs.lookup(d.ino, b"g2").unwrap().ino, f);
    assert_eq!(vfs.lookup(ROOT_INO, b"f").unwrap().ino, f);
    assert_eq!(nlink(&vfs, f), 2);
    // Another file renamed over one link of `f` takes only that name.
    let other = file(&vfs, ROOT_INO, "other", b"two");
    vfs.rename(ROOT_INO, b"other", ROOT_INO, b"f", false)
        .unwrap();
    assert_eq!(vfs.lookup(ROOT_INO, b"f").unwrap().ino, other);
    assert_eq!(vfs.lookup(d.ino, b"g2").unwrap().ino, f);
    assert_eq!(nlink(&vfs, f), 1);
    assert_eq!(read_all(&vfs, f).await, b"one");
}

/// Two devices on the real server rules: a link made on A shows on B as a
/// second name of one inode; an unlink on B reaches A and keeps the other
/// name; B's cache keeps it all across a reopen.
#[tokio::test(flavor = "multi_thread")]
async fn links_travel_between_devices() {
    let (
        TwoDevices {
            idb,
            ra,
            rb,
            db,
            a,
            b,
            ..
        },
        _held,
    ) = two_devices().await;
    let (up_a, up_b) = (
        Uploader::new(a.clone(), ra.clone()),
        Uploader::new(b.clone(), rb.clone()),
    );
    let (follow_a, follow_b) = (
        Follower::new(a.clone(), ra.clone()),
        Follower::new(b.clone(), rb.clone()),
    );
    let d = a.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    let f = file(&a, ROOT_INO, "f", b"shared bytes");
    a.link(f, d.ino, b"g").unwrap();
    while up_a.run_once().await.unwrap() {}
    assert_eq!(a.meta.journal_len(), 0);

    follow_b.pull_all().await.unwrap();
    let bd = b.lookup(ROOT_INO, b"d").unwrap();
    let (bf, bg) = (
        b.lookup(ROOT_INO, b"f").unwrap(),
        b.lookup(bd.ino, b"g").unwrap(),
    );
    assert_eq!(bf.ino, bg.ino, "one inode on B too");
    assert_eq!((bf.nlink, bf.size), (2, 12));
    assert_eq!(read_all(&b, bg.ino).await, b"shared bytes");

    // B unlinks the first name; A keeps the other one.
    b.unlink(ROOT_INO, b"f").unwrap();
    while up_b.run_once().await.unwrap() {}
    follow_a.pull_all().await.unwrap();
    assert!(matches!(a.lookup(ROOT_INO, b"f"), Err(VfsError::NotFound)));
    let ag = a.lookup(d.ino, b"g").unwrap();
    assert_eq!((ag.ino, ag.nlink), (f, 1));

    // A links it again under a new name; B follows; B reopened keeps it.
    a.link(f, ROOT_INO, b"again").unwrap();
    while up_a.run_once().await.unwrap() {}
    follow_b.pull_all().await.unwrap();
    assert_eq!(b.lookup(ROOT_INO, b"again").unwrap().ino, bg.ino);
    assert_eq!(nlink(&b, bg.ino), 2);
    drop((follow_b, up_b, b));
    let b = open_vfs(&db, idb, "desktop", rb.clone());
    let again = b.lookup(ROOT_INO, b"again").unwrap();
    assert_eq!((again.ino, again.nlink), (bg.ino, 2));
    assert_eq!(b.lookup(bd.ino, b"g").unwrap().ino, bg.ino);

    // The last names go on A: B loses the node.
    a.unlink(d.ino, b"g").unwrap();
    a.unlink(ROOT_INO, b"again").unwrap();
    while up_a.run_once().await.unwrap() {}
    let follow_b = Follower::new(b.clone(), rb.clone());
    follow_b.pull_all().await.unwrap();
    assert!(matches!(
        b.lookup(ROOT_INO, b"again"),
        Err(VfsError::NotFound)
    ));
    assert!(matches!(b.lookup(bd.ino, b"g"), Err(VfsError::NotFound)));
}

/// A link whose name another device took meanwhile gets a conflict name
/// from the server, and the linking device adopts it.
#[tokio::test(flavor = "multi_thread")]
async fn a_taken_link_name_becomes_a_conflict_name_everywhere() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let (up_a, up_b) = (
        Uploader::new(a.clone(), ra.clone()),
        Uploader::new(b.clone(), rb.clone()),
    );
    let f = file(&a, ROOT_INO, "f", b"mine");
    while up_a.run_once().await.unwrap() {}
    file(&b, ROOT_INO, "n.txt", b"theirs");
    while up_b.run_once().await.unwrap() {}
    a.link(f, ROOT_INO, b"n.txt").unwrap();
    while up_a.run_once().await.unwrap() {}
    let names: Vec<String> = a
        .readdir(ROOT_INO, None, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.ino == f)
        .map(|e| e.name)
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("n (conflict laptop")),
        "{names:?}"
    );
    assert_eq!(nlink(&a, f), 2);
}

#[tokio::test]
async fn a_node_has_at_most_ext4s_number_of_names() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = one_device(dir.path());
    let f = file(&vfs, ROOT_INO, "f", b"x");
    {
        // 64,999 more names recorded on the inode (their entries are not
        // needed for the count).
        let ns = vfs.meta.lock_ns();
        let mut inode = vfs.meta.inode_required(f).unwrap();
        inode.links = (1..crate::protocol::MAX_LINKS)
            .map(|i| (ROOT_INO, format!("n{i}")))
            .collect();
        let mut t = vfs.meta.txn(&ns);
        t.put_inode(&inode);
        t.commit().unwrap();
    }
    assert_eq!(nlink(&vfs, f), 65_000);
    assert!(matches!(
        vfs.link(f, ROOT_INO, b"one-more"),
        Err(VfsError::TooManyLinks)
    ));
    assert!(vfs.lookup(ROOT_INO, b"one-more").is_err());
}

/// A remote node taking two names that one pending local node holds moves
/// both of that node's names aside, each under its own conflict name, in
/// one change; both nodes then reach the server with two names each.
#[tokio::test(flavor = "multi_thread")]
async fn a_remote_node_displaces_both_names_of_a_pending_local_node() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let y = file(&a, ROOT_INO, "p.txt", b"from a");
    a.link(y, ROOT_INO, b"q.txt").unwrap();
    let up_a = Uploader::new(a.clone(), ra.clone());
    while up_a.run_once().await.unwrap() {}
    let z = file(&b, ROOT_INO, "p.txt", b"from b");
    b.link(z, ROOT_INO, b"q.txt").unwrap();
    Follower::new(b.clone(), rb.clone())
        .pull_all()
        .await
        .unwrap();
    let by = b.lookup(ROOT_INO, b"p.txt").unwrap();
    assert_ne!(by.ino, z);
    assert_eq!(b.lookup(ROOT_INO, b"q.txt").unwrap().ino, by.ino);
    let mut z_names: Vec<String> = b
        .readdir(ROOT_INO, None, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.ino == z)
        .map(|e| e.name)
        .collect();
    z_names.sort();
    assert_eq!(z_names.len(), 2, "{z_names:?}");
    assert!(z_names[0].starts_with("p (conflict desktop"), "{z_names:?}");
    assert!(z_names[1].starts_with("q (conflict desktop"), "{z_names:?}");
    assert_eq!(nlink(&b, z), 2);
    // Marked as a conflict copy of the node that took the names, here
    // and, once uploaded, on the other device too.
    let y_id = a.meta.inode_required(y).unwrap().node_id;
    let mark = b.conflict_of(z).unwrap().expect("a conflict mark");
    assert_eq!((mark.of, mark.device.as_str()), (y_id, "desktop"));
    let up_b = Uploader::new(b.clone(), rb.clone());
    while up_b.run_once().await.unwrap() {}
    assert_eq!(b.meta.journal_len(), 0);
    Follower::new(a.clone(), ra.clone())
        .pull_all()
        .await
        .unwrap();
    let az = a.lookup(ROOT_INO, z_names[0].as_bytes()).unwrap();
    assert_eq!(a.conflict_of(az.ino).unwrap().map(|m| m.of), Some(y_id));
    assert_eq!(
        a.lookup(ROOT_INO, z_names[1].as_bytes()).unwrap().ino,
        az.ino
    );
    assert_eq!(az.nlink, 2);
    assert_eq!(read_all(&a, az.ino).await, b"from b");
}
