//! Stored extended attributes in the core, without a kernel: the errno of
//! every ext4 rule, the journal record and ctime of a change, persistence
//! across a reopen, and two devices against the server's real rules.

use super::test_support::open_vfs;
use super::xattr::XattrFlags;
use super::*;
use crate::remote::in_process::{InProcessRemote, InProcessServer};
use crate::remote::memory::MemoryRemote;
use crate::remote::Remote;
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;

const ROOT: Caller = Caller { uid: 0, gid: 0 };
const ALICE: Caller = Caller {
    uid: 1000,
    gid: 100,
};
const ANY: XattrFlags = XattrFlags {
    create: false,
    replace: false,
};

fn vfs_in(dir: &std::path::Path) -> Arc<Vfs> {
    let device = DeviceId::random();
    open_vfs(dir, device, "t", Arc::new(MemoryRemote::new(device)))
}

fn file(vfs: &Vfs, name: &str) -> u64 {
    let (attr, fh) = vfs.create(ROOT_INO, name.as_bytes(), 0o644, true).unwrap();
    vfs.release(fh).unwrap();
    attr.ino
}

fn set(vfs: &Vfs, who: Caller, ino: u64, name: &str, value: &[u8]) -> VfsResult<()> {
    vfs.setxattr_as(who, ino, name.as_bytes(), value, ANY)
}

/// The errno a front end answers for `r`.
fn errno<T: std::fmt::Debug>(r: VfsResult<T>) -> i32 {
    crate::fuse::errno(&r.expect_err("an error")).code()
}

#[tokio::test]
async fn every_ext4_rule_answers_its_errno() {
    let dir = tempfile::tempdir().unwrap();
    let vfs = vfs_in(dir.path());
    let f = file(&vfs, "f");
    let d = vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap().ino;
    let l = vfs.symlink(ROOT_INO, b"l", b"f").unwrap().ino;
    let p = vfs
        .mknod(ROOT_INO, b"p", libc::S_IFIFO | 0o644, 0)
        .unwrap()
        .ino;

    // Files and folders hold user attributes; empty values are kept.
    for ino in [f, d] {
        set(&vfs, ROOT, ino, "user.colour", b"blue").unwrap();
        set(&vfs, ROOT, ino, "user.empty", b"").unwrap();
        assert_eq!(
            vfs.getxattr_as(ALICE, ino, b"user.colour").unwrap(),
            b"blue"
        );
        assert_eq!(vfs.getxattr_as(ALICE, ino, b"user.empty").unwrap(), b"");
        assert_eq!(
            vfs.listxattr_as(ALICE, ino).unwrap(),
            vec!["user.colour", "user.empty"]
        );
    }
    // Symlinks and special nodes: user.* is EPERM to set, ENODATA to read;
    // trusted.* and security.* are stored.
    for ino in [l, p] {
        assert_eq!(errno(set(&vfs, ROOT, ino, "user.a", b"1")), libc::EPERM);
        assert_eq!(errno(vfs.removexattr_as(ROOT, ino, b"user.a")), libc::EPERM);
        assert_eq!(errno(vfs.getxattr_as(ROOT, ino, b"user.a")), libc::ENODATA);
        set(&vfs, ROOT, ino, "trusted.t", b"x").unwrap();
        set(&vfs, ROOT, ino, "security.selinux", b"ctx").unwrap();
        assert_eq!(vfs.getxattr(ino, b"security.selinux").unwrap(), b"ctx");
    }
    // Names: length (ERANGE), namespace (EOPNOTSUPP: no ACL support),
    // form (EINVAL), the reserved ones (EPERM).
    let long = format!("user.{}", "n".repeat(251));
    assert_eq!(errno(set(&vfs, ROOT, f, &long, b"")), libc::ERANGE);
    set(&vfs, ROOT, f, &long[..255], b"").unwrap();
    assert_eq!(errno(set(&vfs, ROOT, f, "", b"")), libc::ERANGE);
    for acl in ["system.posix_acl_access", "system.posix_acl_default"] {
        assert_eq!(
            errno(set(&vfs, ROOT, d, acl, b"\x02\0\0\0")),
            libc::EOPNOTSUPP
        );
        assert_eq!(errno(vfs.getxattr(d, acl.as_bytes())), libc::EOPNOTSUPP);
    }
    assert_eq!(errno(set(&vfs, ROOT, f, "other.x", b"")), libc::EOPNOTSUPP);
    assert_eq!(errno(set(&vfs, ROOT, f, "user.", b"")), libc::EINVAL);
    assert_eq!(
        errno(set(&vfs, ROOT, f, "user.nimbus.state", b"x")),
        libc::EPERM
    );
    assert_eq!(
        errno(vfs.removexattr_as(ROOT, f, b"user.nimbus.state")),
        libc::EPERM
    );
    assert_eq!(
        errno(vfs.getxattr(f, b"user.nimbus.nothing")),
        libc::ENODATA
    );
    assert_eq!(vfs.getxattr(f, b"user.nimbus.state").unwrap(), b"pending");
    // Values: over 64 KiB is E2BIG; over the node's 4 KiB total, ENOSPC.
    let g = file(&vfs, "g");
    assert_eq!(
        errno(set(&vfs, ROOT, g, "user.big", &vec![0; 65_537])),
        libc::E2BIG
    );
    assert_eq!(
        errno(set(&vfs, ROOT, g, "user.big", &vec![0; 4_096])),
        libc::ENOSPC
    );
    set(&vfs, ROOT, g, "user.big", &vec![0; 4_096 - 8]).unwrap();
    assert_eq!(errno(set(&vfs, ROOT, g, "user.b", b"")), libc::ENOSPC);
    // Shrinking the one that is there fits.
    set(&vfs, ROOT, g, "user.big", b"small").unwrap();
    // XATTR_CREATE / XATTR_REPLACE, and removal of a missing one.
    let create = XattrFlags {
        create: true,
        replace: false,
    };
    let replace = XattrFlags {
        create: false,
        replace: true,
    };
    assert_eq!(
        errno(vfs.setxattr_as(ROOT, f, b"user.colour", b"red", create)),
        libc::EEXIST
    );
    assert_eq!(
        errno(vfs.setxattr_as(ROOT, f, b"user.new", b"red", replace)),
        libc::ENODATA
    );
    vfs.setxattr_as(ROOT, f, b"user.colour", b"red", replace)
        .unwrap();
    vfs.setxattr_as(ROOT, f, b"user.new", b"1", create).unwrap();
    assert_eq!(vfs.getxattr(f, b"user.colour").unwrap(), b"red");
    vfs.removexattr_as(ALICE, f, b"user.new").unwrap();
    assert_eq!(
        errno(vfs.removexattr_as(ALICE, f, b"user.new")),
        libc::ENODATA
    );
    assert_eq!(errno(vfs.getxattr(f, b"user.new")), libc::ENODATA);
    assert_eq!(
        errno(XattrFlags::from_bits(4)),
        libc::EINVAL,
        "unknown flag bits"
    );
    // trusted.*: only a privileged caller sets, reads or lists them.
    set(&vfs, ROOT, f, "trusted.k", b"v").unwrap();
    assert_eq!(errno(set(&vfs, ALICE, f, "trusted.k", b"w")), libc::EPERM);
    assert_eq!(
        errno(vfs.removexattr_as(ALICE, f, b"trusted.k")),
        libc::EPERM
    );
    assert_eq!(
        errno(vfs.getxattr_as(ALICE, f, b"trusted.k")),
        libc::ENODATA
    );
    assert!(vfs
        .listxattr_as(ROOT, f)
        .unwrap()
        .contains(&"trusted.k".into()));
    assert!(!vfs
        .listxattr_as(ALICE, f)
        .unwrap()
        .contains(&"trusted.k".into()));
    assert_eq!(vfs.getxattr_as(ROOT, f, b"trusted.k").unwrap(), b"v");
}

struct Dev {
    vfs: Arc<Vfs>,
    remote: Arc<dyn Remote>,
    device: DeviceId,
    cache: tempfile::TempDir,
}

async fn device(server: &InProcessServer, name: &str) -> Dev {
    let remote: InProcessRemote = server.device(name).await.unwrap();
    let device = remote.device_id();
    let cache = tempfile::tempdir().unwrap();
    let remote: Arc<dyn Remote> = Arc::new(remote);
    let vfs = open_vfs(cache.path(), device, name, remote.clone());
    Dev {
        vfs,
        remote,
        device,
        cache,
    }
}

impl Dev {
    /// Uploads the whole journal, then applies everything the server has.
    async fn sync(&self) {
        let up = Uploader::new(self.vfs.clone(), self.remote.clone());
        while self.vfs.meta.journal_len() > 0 {
            assert!(up.run_once().await.unwrap(), "the upload made progress");
        }
        Follower::new(self.vfs.clone(), self.remote.clone())
            .pull_all()
            .await
            .unwrap();
    }
    /// Closes the store and opens it again, as a remount does.
    fn reopen(self) -> Dev {
        let Dev {
            vfs,
            remote,
            device,
            cache,
        } = self;
        drop(vfs);
        let vfs = open_vfs(cache.path(), device, "a", remote.clone());
        Dev {
            vfs,
            remote,
            device,
            cache,
        }
    }
    fn ino(&self, name: &str) -> u64 {
        self.vfs.lookup(ROOT_INO, name.as_bytes()).unwrap().ino
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attributes_travel_between_devices_and_removals_too() {
    let server = InProcessServer::new().await.unwrap();
    let a = device(&server, "a").await;
    let b = device(&server, "b").await;
    let f = file(&a.vfs, "f");
    set(&a.vfs, ROOT, f, "user.bin", &[0, 255, 10]).unwrap();
    set(&a.vfs, ROOT, f, "trusted.t", b"").unwrap();
    let d = a.vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap().ino;
    set(&a.vfs, ROOT, d, "user.d", b"folder").unwrap();
    let l = a.vfs.symlink(ROOT_INO, b"l", b"f").unwrap().ino;
    set(&a.vfs, ROOT, l, "security.selinux", b"ctx").unwrap();
    a.sync().await;
    b.sync().await;

    let (bf, bd, bl) = (b.ino("f"), b.ino("d"), b.ino("l"));
    assert_eq!(b.vfs.getxattr(bf, b"user.bin").unwrap(), [0, 255, 10]);
    assert_eq!(b.vfs.getxattr(bf, b"trusted.t").unwrap(), b"");
    assert_eq!(b.vfs.getxattr(bd, b"user.d").unwrap(), b"folder");
    assert_eq!(b.vfs.getxattr(bl, b"security.selinux").unwrap(), b"ctx");

    // A removal and a change on B reach A, and move A's ctime.
    let before = a.vfs.getattr(f).unwrap().ctime;
    b.vfs.removexattr_as(ROOT, bf, b"user.bin").unwrap();
    set(&b.vfs, ROOT, bd, "user.d", b"changed").unwrap();
    b.sync().await;
    a.sync().await;
    assert_eq!(errno(a.vfs.getxattr(f, b"user.bin")), libc::ENODATA);
    assert_eq!(a.vfs.listxattr_as(ROOT, f).unwrap(), vec!["trusted.t"]);
    assert_eq!(a.vfs.getxattr(d, b"user.d").unwrap(), b"changed");
    assert!(a.vfs.getattr(f).unwrap().ctime > before);
    assert!(!a.vfs.is_journaled(f), "adopting does not journal again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_moves_ctime_is_journaled_and_survives_a_reopen() {
    let server = InProcessServer::new().await.unwrap();
    let a = device(&server, "a").await;
    let f = file(&a.vfs, "f");
    let d = a.vfs.mkdir(ROOT_INO, b"d", 0o755).unwrap().ino;
    a.sync().await;
    assert!(!a.vfs.is_journaled(f));
    let before = a.vfs.getattr(f).unwrap().ctime;
    std::thread::sleep(std::time::Duration::from_millis(2));
    set(&a.vfs, ROOT, f, "user.k", b"v").unwrap();
    assert!(a.vfs.getattr(f).unwrap().ctime > before, "ctime moves");
    assert!(a.vfs.is_journaled(f), "the change is journaled for upload");
    assert_eq!(a.vfs.getxattr(f, b"user.nimbus.state").unwrap(), b"pending");
    set(&a.vfs, ROOT, d, "security.x", b"\0\x01").unwrap();
    a.vfs.removexattr_as(ROOT, d, b"security.x").unwrap();
    set(&a.vfs, ROOT, d, "trusted.y", b"").unwrap();
    assert!(a.vfs.is_journaled(d));

    let a = a.reopen();
    assert_eq!(a.vfs.getxattr(f, b"user.k").unwrap(), b"v");
    assert_eq!(a.vfs.getxattr(d, b"trusted.y").unwrap(), b"");
    assert_eq!(errno(a.vfs.getxattr(d, b"security.x")), libc::ENODATA);
    assert!(a.vfs.is_journaled(f) && a.vfs.is_journaled(d));
    a.sync().await;
    assert!(!a.vfs.is_journaled(f));
    // What the server has is what a fresh device gets.
    let fresh = device(&server, "fresh").await;
    fresh.sync().await;
    assert_eq!(fresh.vfs.getxattr(fresh.ino("f"), b"user.k").unwrap(), b"v");
    // Removing the node removes its attributes with it.
    a.vfs.unlink(ROOT_INO, b"f").unwrap();
    a.sync().await;
    if a.vfs.meta.inode(f).unwrap().is_none() {
        assert!(a.vfs.meta.xattrs(f).unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_changes_converge_on_the_last_committed_set() {
    let server = InProcessServer::new().await.unwrap();
    let a = device(&server, "a").await;
    let b = device(&server, "b").await;
    let f = file(&a.vfs, "f");
    set(&a.vfs, ROOT, f, "user.both", b"0").unwrap();
    a.sync().await;
    b.sync().await;
    let bf = b.ino("f");
    set(&a.vfs, ROOT, f, "user.both", b"from a").unwrap();
    set(&a.vfs, ROOT, f, "user.only_a", b"1").unwrap();
    set(&b.vfs, ROOT, bf, "user.both", b"from b").unwrap();
    b.vfs
        .setattr(
            bf,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            },
        )
        .ready()
        .unwrap();
    a.sync().await;
    b.sync().await;
    a.sync().await;
    let (on_a, on_b) = (a.vfs.xattrs_of(f).unwrap(), b.vfs.xattrs_of(bf).unwrap());
    assert_eq!(on_a, on_b, "both devices agree");
    assert_eq!(
        on_a.get("user.both"),
        Some(&b"from b"[..]),
        "the last commit's set"
    );
    assert_eq!(a.vfs.getattr(f).unwrap().mode & 0o7777, 0o600);
    assert!(!a.vfs.is_journaled(f) && !b.vfs.is_journaled(bf));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_keeps_a_synced_change_and_never_half_of_one() {
    use super::test_support::{open_vfs_on, CrashKv};
    let device = DeviceId::random();
    let remote: Arc<dyn Remote> = Arc::new(MemoryRemote::new(device));
    let cache = tempfile::tempdir().unwrap();
    let kv = Arc::new(CrashKv::default());
    let vfs = open_vfs_on(kv.clone(), cache.path(), device, "t", remote.clone());
    let f = file(&vfs, "f");
    set(&vfs, ROOT, f, "user.kept", b"1").unwrap();
    vfs.fsync_all().unwrap();
    let journaled = vfs.meta.journal_len();
    // Not flushed: lost whole (value, ctime and record) or kept whole.
    set(&vfs, ROOT, f, "user.maybe", b"2").unwrap();
    let after = kv.after_crash();
    drop(vfs);
    let vfs = open_vfs_on(after, cache.path(), device, "t", remote);
    assert_eq!(vfs.getxattr(f, b"user.kept").unwrap(), b"1");
    assert!(vfs.is_journaled(f));
    match vfs.getxattr(f, b"user.maybe") {
        Ok(v) => assert_eq!(v, b"2"),
        Err(VfsError::NoAttribute) => assert_eq!(vfs.meta.journal_len(), journaled),
        Err(e) => panic!("{e}"),
    }
}
