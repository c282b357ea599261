//! ext4 parity in the core, without a kernel (issue 6): folder link counts
//! and sizes, name length limits, rename flags and errors, setuid/setgid
//! clearing, space operations and atime. The kernel-facing halves are in
//! `tests/posix_mount.rs`.

use super::test_support::{open_vfs, two_devices, TwoDevices};
use super::*;
use crate::remote::in_process::InProcessServer;
use crate::remote::memory::MemoryRemote;
use crate::remote::Remote;
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;

#[allow(dead_code)]
fn vfs_in(dir: &std::path::Path) -> Arc<Vfs> {
    let device = DeviceId::random();
    open_vfs(dir, device, "t", Arc::new(MemoryRemote::new(device)))
}

fn nlink(vfs: &Vfs, ino: u64) -> u32 {
    vfs.getattr(ino).unwrap().nlink
}

#[tokio::test]
async fn a_folder_links_its_subfolders_like_ext4_through_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::random();
    let remote = Arc::new(MemoryRemote::new(device));
    let vfs = open_vfs(dir.path(), device, "t", remote.clone());
    assert_eq!(nlink(&vfs, ROOT_INO), 2);
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    assert_eq!((d.nlink, d.size), (2, 4096), "a new folder");
    let a = vfs.mkdir(d.ino, b"a", 0o755).unwrap();
    vfs.mkdir(d.ino, b"b", 0o755).unwrap();
    let (_, fh) = vfs.create(d.ino, b"f", 0o644, true).unwrap();
    vfs.release(fh).unwrap();
    vfs.symlink(d.ino, b"l", b"f").unwrap();
    assert_eq!(nlink(&vfs, ROOT_INO), 3);
    assert_eq!(nlink(&vfs, d.ino), 4, "files and symlinks do not count");
    // Moving a folder out moves its link; renaming in place changes nothing.
    vfs.rename(d.ino, b"a", ROOT_INO, b"a", false).unwrap();
    assert_eq!((nlink(&vfs, d.ino), nlink(&vfs, ROOT_INO)), (3, 4));
    vfs.rename(ROOT_INO, b"a", ROOT_INO, b"a2", false).unwrap();
    assert_eq!(nlink(&vfs, ROOT_INO), 4);
    // A folder replacing an empty folder: one link less in the source.
    vfs.rename(ROOT_INO, b"a2", d.ino, b"b", false).unwrap();
    assert_eq!((nlink(&vfs, d.ino), nlink(&vfs, ROOT_INO)), (3, 3));
    assert_eq!(vfs.getattr(a.ino).unwrap().nlink, 2);
    vfs.rmdir(d.ino, b"b").unwrap();
    assert_eq!(nlink(&vfs, d.ino), 2);
    // Kept across a remount.
    vfs.mkdir(d.ino, b"c", 0o755).unwrap();
    drop(vfs);
    let vfs = open_vfs(dir.path(), device, "t", remote);
    assert_eq!((nlink(&vfs, d.ino), nlink(&vfs, ROOT_INO)), (3, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_folder_changes_move_the_link_count() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let up_b = Uploader::new(b.clone(), rb.clone());
    let d = b.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    b.mkdir(d.ino, b"x", 0o755).unwrap();
    b.mkdir(d.ino, b"y", 0o755).unwrap();
    while up_b.run_once().await.unwrap() {}
    let follow_a = Follower::new(a.clone(), ra.clone());
    follow_a.pull_all().await.unwrap();
    let on_a = a.lookup(ROOT_INO, b"d").unwrap();
    assert_eq!((on_a.nlink, nlink(&a, ROOT_INO)), (4, 3));
    b.rmdir(d.ino, b"x").unwrap();
    b.rename(d.ino, b"y", ROOT_INO, b"y", false).unwrap();
    while up_b.run_once().await.unwrap() {}
    follow_a.pull_all().await.unwrap();
    assert_eq!((nlink(&a, on_a.ino), nlink(&a, ROOT_INO)), (2, 4));
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_exchange_swaps_a_file_and_a_folder_across_folders_and_uploads_it() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let up_a = Uploader::new(a.clone(), ra.clone());
    let x = a.mkdir(ROOT_INO, b"x", 0o755).unwrap();
    let y = a.mkdir(ROOT_INO, b"y", 0o755).unwrap();
    let (f, fh) = a.create(x.ino, b"f", 0o644, true).unwrap();
    a.write(fh, 0, b"file").ready().unwrap();
    a.release(fh).unwrap();
    let d = a.mkdir(y.ino, b"d", 0o755).unwrap();
    a.mkdir(d.ino, b"inner", 0o755).unwrap();
    while up_a.run_once().await.unwrap() {}

    a.rename_exchange(x.ino, b"f", y.ino, b"d").unwrap();
    assert_eq!(a.lookup(x.ino, b"f").unwrap().ino, d.ino);
    assert_eq!(a.lookup(y.ino, b"d").unwrap().ino, f.ino);
    assert_eq!((nlink(&a, x.ino), nlink(&a, y.ino)), (3, 2));
    assert_eq!(a.path_of(d.ino).unwrap(), "x/f");
    while up_a.run_once().await.unwrap() {}
    assert_eq!(a.meta.journal_len(), 0);

    Follower::new(b.clone(), rb.clone())
        .pull_all()
        .await
        .unwrap();
    let bx = b.lookup(ROOT_INO, b"x").unwrap().ino;
    let by = b.lookup(ROOT_INO, b"y").unwrap().ino;
    let now_dir = b.lookup(bx, b"f").unwrap();
    let now_file = b.lookup(by, b"d").unwrap();
    assert_eq!(
        (now_dir.kind, now_file.kind),
        (NodeKind::Dir, NodeKind::File)
    );
    assert!(b.lookup(now_dir.ino, b"inner").is_ok());
    assert_eq!(
        b.readdir(bx, None, 10).unwrap().len(),
        1,
        "no parked name left"
    );
}

#[tokio::test]
async fn rename_answers_as_linux() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    let sub = vfs.mkdir(d.ino, b"sub", 0o755).unwrap();
    vfs.mkdir(ROOT_INO, b"full", 0o755).unwrap();
    let full = vfs.lookup(ROOT_INO, b"full").unwrap().ino;
    vfs.mkdir(full, b"child", 0o755).unwrap();
    vfs.mkdir(ROOT_INO, b"empty", 0o755).unwrap();
    let (_, fh) = vfs.create(ROOT_INO, b"f", 0o644, true).unwrap();
    vfs.release(fh).unwrap();
    let (_, fh) = vfs.create(ROOT_INO, b"g", 0o644, true).unwrap();
    vfs.release(fh).unwrap();
    let err = |r: VfsResult<()>| r.unwrap_err().to_string();
    assert!(matches!(
        vfs.rename(ROOT_INO, b"f", ROOT_INO, b"g", true),
        Err(VfsError::Exists)
    ));
    assert!(err(vfs.rename(ROOT_INO, b"d", sub.ino, b"d", false)).contains("into itself"));
    assert!(err(vfs.rename(ROOT_INO, b"d", d.ino, b"d2", false)).contains("into itself"));
    assert!(err(vfs.rename_exchange(ROOT_INO, b"d", sub.ino, b"x")).contains("no such"));
    vfs.mkdir(sub.ino, b"x", 0o755).unwrap();
    assert!(err(vfs.rename_exchange(ROOT_INO, b"d", sub.ino, b"x")).contains("into itself"));
    assert!(matches!(
        vfs.rename(ROOT_INO, b"empty", ROOT_INO, b"full", false),
        Err(VfsError::NotEmpty)
    ));
    assert!(matches!(
        vfs.rename(ROOT_INO, b"f", ROOT_INO, b"empty", false),
        Err(VfsError::IsDir)
    ));
    assert!(matches!(
        vfs.rename(ROOT_INO, b"empty", ROOT_INO, b"f", false),
        Err(VfsError::NotDir)
    ));
    // Names longer than NAME_MAX (255 bytes) from every call taking one.
    let long = vec![b'n'; 256];
    let too_long = |r: VfsResult<()>| {
        matches!(
            r,
            Err(VfsError::InvalidName(crate::protocol::NameError::TooLong))
        )
    };
    assert!(too_long(vfs.lookup(ROOT_INO, &long).map(|_| ())));
    assert!(too_long(vfs.mkdir(ROOT_INO, &long, 0o755).map(|_| ())));
    assert!(too_long(
        vfs.create(ROOT_INO, &long, 0o644, true).map(|_| ())
    ));
    assert!(too_long(vfs.symlink(ROOT_INO, &long, b"f").map(|_| ())));
    assert!(too_long(vfs.rename(ROOT_INO, b"f", ROOT_INO, &long, false)));
    assert!(too_long(
        vfs.rename_exchange(ROOT_INO, b"f", ROOT_INO, &long)
    ));
    assert!(too_long(
        vfs.link(vfs.lookup(ROOT_INO, b"f").unwrap().ino, ROOT_INO, &long)
            .map(|_| ())
    ));
    assert_eq!(
        vfs.link(vfs.lookup(ROOT_INO, b"f").unwrap().ino, ROOT_INO, b"h")
            .unwrap()
            .nlink,
        2
    );
    let max = vec![b'm'; 255];
    vfs.mkdir(ROOT_INO, &max, 0o755).unwrap();
    vfs.lookup(ROOT_INO, &max).unwrap();
}

async fn read_all(vfs: &Vfs, ino: u64) -> Vec<u8> {
    let fh = vfs.open_file(ino, false, false).unwrap();
    let data = vfs.read(fh, 0, 1 << 20).await.unwrap();
    vfs.release(fh).unwrap();
    data
}

#[tokio::test(flavor = "multi_thread")]
async fn fallocate_seek_data_and_copy_file_range_change_the_working_copy_and_upload() {
    use super::space::*;
    let server = InProcessServer::new().await.unwrap();
    let ra = server.device("laptop").await.unwrap();
    let ida = ra.device_id();
    let ra: Arc<dyn Remote> = Arc::new(ra);
    let da = tempfile::tempdir().unwrap();
    let a = open_vfs(da.path(), ida, "laptop", ra.clone());
    let up = Uploader::new(a.clone(), ra.clone());
    let (f, fh) = a.create(ROOT_INO, b"f", 0o644, true).unwrap();
    a.write(fh, 0, &[7u8; 10_000]).ready().unwrap();
    // Mode 0 grows; KEEP_SIZE does not.
    a.fallocate(fh, 8_000, 8_000, 0).await.unwrap();
    assert_eq!(a.getattr(f.ino).unwrap().size, 16_000);
    a.fallocate(fh, 0, 100_000, FALLOC_FL_KEEP_SIZE)
        .await
        .unwrap();
    assert_eq!(a.getattr(f.ino).unwrap().size, 16_000);
    // A punched hole reads as zeros and shows as a hole.
    a.fallocate(fh, 4096, 4096, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)
        .await
        .unwrap();
    assert_eq!(a.lseek(fh, 0, SEEK_DATA).unwrap(), 0);
    assert_eq!(a.lseek(fh, 0, SEEK_HOLE).unwrap(), 4096);
    assert_eq!(a.lseek(fh, 4096, SEEK_DATA).unwrap(), 8192);
    assert!(a.lseek(fh, 16_000, SEEK_DATA).is_err(), "ENXIO at the end");
    // Bad modes and lengths.
    assert!(matches!(
        a.fallocate(fh, 0, 0, 0).await,
        Err(VfsError::InvalidArgument(_))
    ));
    assert!(matches!(
        a.fallocate(fh, 0, 1, FALLOC_FL_PUNCH_HOLE).await,
        Err(VfsError::InvalidArgument(_))
    ));
    assert!(matches!(
        a.fallocate(fh, 0, 1, 0x08).await,
        Err(VfsError::NotSupported(_))
    ));
    a.release(fh).unwrap();
    let mut want = vec![7u8; 10_000];
    want.resize(16_000, 0);
    want[4096..8192].fill(0);
    assert_eq!(read_all(&a, f.ino).await, want);

    // Copy a range into another file; overlapping ranges of one file fail.
    let (g, gh) = a.create(ROOT_INO, b"g", 0o644, true).unwrap();
    let fr = a.open_file(f.ino, false, false).unwrap();
    assert_eq!(
        a.copy_file_range(fr, 0, gh, 100, 5_000).await.unwrap(),
        5_000
    );
    assert_eq!(a.copy_file_range(fr, 16_000, gh, 0, 10).await.unwrap(), 0);
    assert!(
        matches!(
            a.copy_file_range(fr, 0, fr, 0, 10).await,
            Err(VfsError::Io(_))
        ),
        "EBADF: the destination is not open for writing"
    );
    let fw = a.open_file(f.ino, true, false).unwrap();
    assert!(matches!(
        a.copy_file_range(fr, 0, fw, 100, 200).await,
        Err(VfsError::InvalidArgument(_))
    ));
    assert_eq!(a.copy_file_range(fr, 0, fw, 200, 100).await.unwrap(), 100);
    for h in [fr, fw, gh] {
        a.release(h).unwrap();
    }
    let mut want_g = vec![0u8; 100];
    want_g.extend_from_slice(&want[..5_000]);
    assert_eq!(read_all(&a, g.ino).await, want_g);
    while up.run_once().await.unwrap() {}
    assert_eq!(a.meta.journal_len(), 0, "both files uploaded");
    let db = tempfile::tempdir().unwrap();
    let rb = server.device("desktop").await.unwrap();
    let idb = rb.device_id();
    let rb: Arc<dyn Remote> = Arc::new(rb);
    let b = open_vfs(db.path(), idb, "desktop", rb.clone());
    Follower::new(b.clone(), rb).pull_all().await.unwrap();
    let on_b = b.lookup(ROOT_INO, b"g").unwrap().ino;
    assert_eq!(read_all(&b, on_b).await, want_g);
    let on_b = b.lookup(ROOT_INO, b"f").unwrap().ino;
    assert_eq!(b.getattr(on_b).unwrap().size, 16_000);
}

#[tokio::test]
async fn an_open_moves_atime_by_relatime_rules_without_a_journal_record() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let (f, fh) = vfs.create(ROOT_INO, b"f", 0o644, true).unwrap();
    vfs.write(fh, 0, b"x").ready().unwrap();
    vfs.release(fh).unwrap();
    let set_atime = |atime: Timestamp| {
        vfs.setattr(
            f.ino,
            SetAttr {
                atime: Some(atime),
                ..Default::default()
            },
        )
        .ready()
        .unwrap()
    };
    let open_close = || {
        let fh = vfs.open_file(f.ino, false, false).unwrap();
        vfs.release(fh).unwrap();
        vfs.getattr(f.ino).unwrap().atime
    };
    // A write-only open is no access (`touch -m` opens O_WRONLY and must
    // keep the atime it does not set).
    let old = set_atime(Timestamp { sec: 1, nsec: 0 }).atime;
    let fh = vfs.open_access(f.ino, false, true, false).unwrap();
    vfs.release(fh).unwrap();
    assert_eq!(vfs.getattr(f.ino).unwrap().atime, old, "write-only open");
    // Not newer than mtime/ctime: the open moves it.
    let before = set_atime(Timestamp { sec: 1, nsec: 0 });
    let journal = vfs.meta.journal_len();
    let rev = vfs.meta.inode(f.ino).unwrap().unwrap().local_rev;
    let a1 = open_close();
    assert!(a1 > before.ctime, "older than ctime: updated");
    assert_eq!(vfs.meta.journal_len(), journal, "no journal record");
    assert_eq!(vfs.meta.inode(f.ino).unwrap().unwrap().local_rev, rev);
    // Newer than both and recent: kept.
    assert_eq!(open_close(), a1);
    // A day old but newer than mtime/ctime (set in the future): moved.
    let now = Timestamp::now();
    let day_old = |t: Timestamp| Timestamp {
        sec: t.sec - 86_401,
        nsec: 0,
    };
    let mut inode = vfs.meta.inode(f.ino).unwrap().unwrap();
    inode.mtime = day_old(day_old(now));
    inode.ctime = inode.mtime;
    inode.atime = day_old(now);
    {
        let ns = vfs.meta.lock_ns();
        let mut t = vfs.meta.txn(&ns);
        t.put_inode(&inode);
        t.commit().unwrap();
    }
    assert!(open_close() >= now);
    // Listing a folder is an access too.
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap();
    vfs.setattr(
        d.ino,
        SetAttr {
            atime: Some(Timestamp { sec: 1, nsec: 0 }),
            ..Default::default()
        },
    )
    .ready()
    .unwrap();
    let dh = vfs.opendir(d.ino).unwrap();
    vfs.releasedir(dh);
    assert!(vfs.getattr(d.ino).unwrap().atime >= now);
    assert!(inodes::relatime_due(
        inode.atime,
        inode.mtime,
        inode.ctime,
        now
    ));
    assert!(!inodes::relatime_due(now, inode.mtime, inode.ctime, now));
}

#[tokio::test]
async fn chown_clears_setuid_and_setgid_of_a_file_like_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let chown = |ino: u64, mode: Option<u32>| {
        vfs.setattr(
            ino,
            SetAttr {
                uid: Some(1000),
                mode,
                ..Default::default()
            },
        )
        .ready()
        .unwrap()
        .mode
    };
    let file = |name: &[u8], mode: u32| {
        let (a, fh) = vfs.create(ROOT_INO, name, mode, true).unwrap();
        vfs.release(fh).unwrap();
        a.ino
    };
    assert_eq!(chown(file(b"both", 0o6755), None), 0o755);
    assert_eq!(chown(file(b"lock", 0o2644), None), 0o2644, "no group-exec");
    // The kernel's own decision (a mode in the request) is kept as sent.
    assert_eq!(chown(file(b"sent", 0o6755), Some(0o2755)), 0o2755);
    let d = vfs.mkdir(ROOT_INO, b"d", 0o2775).unwrap();
    assert_eq!(chown(d.ino, None), 0o2775, "a folder keeps them");
    assert_eq!(namespace::mode_after_chown(0o6710), 0o710);
}

#[tokio::test]
async fn fallocate_within_the_size_changes_nothing() {
    use super::space::*;
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let (f, fh) = vfs.create(ROOT_INO, b"f", 0o644, true).unwrap();
    vfs.write(fh, 0, &[1u8; 100]).ready().unwrap();
    vfs.release(fh).unwrap();
    let before = vfs.getattr(f.ino).unwrap();
    let journal = vfs.meta.journal_len();
    let fh = vfs.open_file(f.ino, true, false).unwrap();
    vfs.fallocate(fh, 0, 50, 0).await.unwrap();
    vfs.fallocate(fh, 0, 500, FALLOC_FL_KEEP_SIZE)
        .await
        .unwrap();
    vfs.release(fh).unwrap();
    let after = vfs.getattr(f.ino).unwrap();
    assert_eq!((after.size, after.mtime), (100, before.mtime));
    assert_eq!(vfs.meta.journal_len(), journal);
}

/// A truncate down after a growing `fallocate` on the same handle bounds
/// what the handle reads (`copy_file_range` reads through it with no
/// kernel size check in front), and a copy within one file past its end
/// grows it.
#[tokio::test(flavor = "multi_thread")]
async fn a_truncate_after_fallocate_bounds_reads_and_copies() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let (f, fh) = vfs.create(ROOT_INO, b"f", 0o644, true).unwrap();
    vfs.write(fh, 44_768, &[9u8; 28]).ready().unwrap();
    vfs.fallocate(fh, 41_172, 4_855, 0).await.unwrap();
    assert_eq!(vfs.getattr(f.ino).unwrap().size, 46_027);
    vfs.setattr(
        f.ino,
        SetAttr {
            size: Some(546),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(vfs.getattr(f.ino).unwrap().size, 546);
    assert_eq!(vfs.read(fh, 160, 2_453).await.unwrap().len(), 386);
    assert_eq!(
        vfs.copy_file_range(fh, 160, fh, 42_388, 2_453)
            .await
            .unwrap(),
        386
    );
    assert_eq!(vfs.getattr(f.ino).unwrap().size, 42_388 + 386);
    vfs.release(fh).unwrap();
}

/// `st_blocks` of a file only on the server counts its whole size: with
/// fewer blocks than bytes, `tar --sparse` archives a placeholder as one
/// hole, that is as zeros (found by a break test: 425 of 426 files of a
/// fresh device's archive were zeros).
#[tokio::test(flavor = "multi_thread")]
async fn a_file_not_cached_here_shows_blocks_for_its_whole_size() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let (f, fh) = a.create(ROOT_INO, b"report.txt", 0o644, true).unwrap();
    a.write(fh, 0, &[b'x'; 8_893]).ready().unwrap();
    a.release(fh).unwrap();
    assert_eq!(a.getattr(f.ino).unwrap().allocated_bytes, 8_893);
    let up = Uploader::new(a.clone(), ra);
    while up.run_once().await.unwrap() {}
    Follower::new(b.clone(), rb).pull_all().await.unwrap();
    let on_b = b.lookup(ROOT_INO, b"report.txt").unwrap();
    assert_eq!(b.getattr(on_b.ino).unwrap().allocated_bytes, 8_893);
}

/// An allocation past the size that the disk cannot hold is `ENOSPC`, as
/// ext4 refuses a reservation it cannot make (a break test saw 100 GiB
/// "allocated" with 50 GB free); one that fits still works.
#[tokio::test]
async fn fallocate_beyond_the_free_space_is_enospc() {
    use super::space::FALLOC_FL_KEEP_SIZE;
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let (f, fh) = vfs.create(ROOT_INO, b"f", 0o644, true).unwrap();
    let huge = 1u64 << 62;
    for mode in [0, FALLOC_FL_KEEP_SIZE] {
        assert!(
            matches!(
                vfs.fallocate(fh, 0, huge, mode).await,
                Err(VfsError::NoSpace(_))
            ),
            "mode {mode}"
        );
    }
    assert_eq!(vfs.getattr(f.ino).unwrap().size, 0);
    vfs.fallocate(fh, 0, 1 << 20, 0).await.unwrap();
    assert_eq!(vfs.getattr(f.ino).unwrap().size, 1 << 20);
    vfs.release(fh).unwrap();
}
