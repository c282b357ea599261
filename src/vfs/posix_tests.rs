//! Ownership and times in the core, without a kernel: who owns what is
//! created, setgid folders, chown/chgrp stored and shown, ids set on other
//! devices (mapped to the mounting user unless `--keep-ids`), and the
//! times each operation moves.

use super::test_support::open_vfs;
use super::*;
use crate::remote::memory::MemoryRemote;

fn vfs_in(dir: &std::path::Path) -> Arc<Vfs> {
    let device = DeviceId::random();
    open_vfs(dir, device, "t", Arc::new(MemoryRemote::new(device)))
}

const ALICE: Caller = Caller {
    uid: 1000,
    gid: 100,
};

#[tokio::test]
async fn what_a_caller_creates_is_theirs_and_the_mounter_is_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let d = vfs.mkdir_as(ALICE, ROOT_INO, b"d", 0o755).unwrap();
    let (f, fh) = vfs.create_as(ALICE, d.ino, b"f", 0o600, true).unwrap();
    vfs.release(fh).unwrap();
    let l = vfs.symlink_as(ALICE, d.ino, b"l", b"f").unwrap();
    for a in [&d, &f, &l] {
        assert_eq!((a.uid, a.gid), (1000, 100));
    }
    // Stored as numbers; the mounting user's ids as the account's user.
    let stored = vfs.meta.inode(f.ino).unwrap().unwrap();
    assert_eq!(
        (stored.uid, stored.gid, stored.ids_from),
        (Some(1000), Some(100), None)
    );
    let mine = vfs.mkdir(ROOT_INO, b"mine", 0o700).unwrap();
    let stored = vfs.meta.inode(mine.ino).unwrap().unwrap();
    assert_eq!((stored.uid, stored.gid), (None, None));
    assert_eq!((mine.uid, mine.gid), (0, 0));
}

#[tokio::test]
async fn a_setgid_folder_passes_on_its_group_and_the_bit_to_folders() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let d = vfs.mkdir(ROOT_INO, b"team", 0o2775).unwrap();
    vfs.setattr(
        d.ino,
        SetAttr {
            gid: Some(4242),
            ..Default::default()
        },
    )
    .ready()
    .unwrap();
    let (f, fh) = vfs.create_as(ALICE, d.ino, b"f", 0o644, true).unwrap();
    vfs.release(fh).unwrap();
    let sub = vfs.mkdir_as(ALICE, d.ino, b"sub", 0o755).unwrap();
    assert_eq!((f.uid, f.gid, f.mode), (1000, 4242, 0o644));
    assert_eq!((sub.gid, sub.mode), (4242, 0o2755));
}

#[tokio::test]
async fn chown_is_stored_shown_and_kept_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::random();
    let remote = Arc::new(MemoryRemote::new(device));
    let vfs = open_vfs(dir.path(), device, "t", remote.clone());
    let (f, fh) = vfs.create(ROOT_INO, b"f", 0o4755, true).unwrap();
    vfs.release(fh).unwrap();
    let a = vfs
        .setattr(
            f.ino,
            SetAttr {
                uid: Some(1000),
                ..Default::default()
            },
        )
        .ready()
        .unwrap();
    assert_eq!((a.uid, a.gid), (1000, 0), "the group stays");
    assert!(a.ctime > f.ctime, "chown moves ctime");
    let a = vfs
        .setattr(
            f.ino,
            SetAttr {
                gid: Some(7),
                mode: Some(0o755),
                ..Default::default()
            },
        )
        .ready()
        .unwrap();
    assert_eq!((a.uid, a.gid, a.mode), (1000, 7, 0o755));
    drop(vfs);
    let vfs = open_vfs(dir.path(), device, "t", remote);
    let a = vfs.getattr(f.ino).unwrap();
    assert_eq!((a.uid, a.gid, a.mode), (1000, 7, 0o755));
}

#[tokio::test]
async fn ids_set_on_another_device_show_as_the_mounter_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let (f, fh) = vfs.create_as(ALICE, ROOT_INO, b"f", 0o644, true).unwrap();
    vfs.release(fh).unwrap();
    let mut inode = vfs.meta.inode(f.ino).unwrap().unwrap();
    inode.ids_from = Some(DeviceId::random());
    assert_eq!(
        vfs.shown_ids(&inode),
        (0, 0),
        "another device's 1000 is not ours"
    );
    inode.ids_from = Some(vfs.device_id);
    assert_eq!(vfs.shown_ids(&inode), (1000, 100));
    let kept = Vfs {
        keep_ids: true,
        ..clone_config(&vfs, dir.path())
    };
    inode.ids_from = Some(DeviceId::random());
    assert_eq!(kept.shown_ids(&inode), (1000, 100), "--keep-ids");
}

/// A second core over a fresh store with `vfs`'s identity (only its
/// configuration matters to `shown_ids`).
fn clone_config(vfs: &Vfs, dir: &std::path::Path) -> Vfs {
    let other = vfs_in(&dir.join("other"));
    Arc::try_unwrap(other).ok().map_or_else(
        || unreachable!("no other reference"),
        |mut v| {
            v.device_id = vfs.device_id;
            v
        },
    )
}

#[tokio::test]
async fn times_move_as_posix_says() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    let (f, fh) = vfs.create(d.ino, b"f", 0o644, true).unwrap();
    assert_eq!((f.atime, f.mtime, f.ctime), (f.btime, f.btime, f.btime));
    let d1 = vfs.getattr(d.ino).unwrap();
    assert!(
        d1.mtime >= f.btime && d1.ctime == d1.mtime,
        "the folder's entries changed"
    );
    vfs.write(fh, 0, b"hello").ready().unwrap();
    vfs.release(fh).unwrap();
    let f1 = vfs.getattr(f.ino).unwrap();
    assert!(
        f1.mtime > f.mtime && f1.ctime >= f1.mtime,
        "a write moves mtime and ctime"
    );
    assert_eq!(f1.btime, f.btime, "birth time stays");
    let far = Timestamp {
        sec: 10_413_792_000,
        nsec: 7,
    };
    let past = Timestamp {
        sec: -2_208_988_800,
        nsec: 1,
    };
    let f2 = vfs
        .setattr(
            f.ino,
            SetAttr {
                atime: Some(past),
                mtime: Some(far),
                ..Default::default()
            },
        )
        .ready()
        .unwrap();
    assert_eq!((f2.atime, f2.mtime), (past, far));
    assert!(f2.ctime > f1.ctime);
    vfs.rename(d.ino, b"f", ROOT_INO, b"g", false).unwrap();
    let f3 = vfs.getattr(f.ino).unwrap();
    assert_eq!((f3.atime, f3.mtime), (past, far), "a rename keeps them");
    assert!(f3.ctime > f2.ctime, "and moves ctime");
}
