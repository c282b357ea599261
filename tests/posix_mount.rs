//! POSIX semantics only a real kernel shows, through a real mount with
//! `--allow-other`: ownership and permission bits stored per node and
//! enforced like ext4 for other users (the tests run as root and switch
//! uid in child processes), setuid/setgid/sticky, and timestamps.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

const ALICE: u32 = 41_234;
const BOB: u32 = 41_235;

/// `script` must fail as `uid` with `Operation not permitted` or
/// `Permission denied` (`want`).
fn refused(uid: u32, dir: &Path, script: &str, want: &str) {
    let out = sh_as(uid, uid, dir, script);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(want),
        "`{script}` as {uid}: {} {err}",
        out.status
    );
}

#[test]
fn ownership_and_permission_bits_are_stored_and_enforced_like_ext4() {
    let server = Server::start();
    let mut dev = device_open_to_others(&server, "u", "pw-posix-1");
    let m = dev.mnt.clone();

    // chown by root to any ids is kept.
    std::fs::write(m.join("given.txt"), b"x").unwrap();
    std::os::unix::fs::chown(m.join("given.txt"), Some(ALICE), Some(777)).unwrap();
    let md = std::fs::metadata(m.join("given.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (ALICE, 777));

    // What another user creates is theirs.
    std::fs::create_dir(m.join("shared")).unwrap();
    std::fs::set_permissions(m.join("shared"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    allowed(ALICE, &m, "echo a > shared/a.txt && mkdir shared/ad");
    for p in ["shared/a.txt", "shared/ad"] {
        let md = std::fs::metadata(m.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (ALICE, ALICE), "{p}");
    }
    assert_eq!(
        std::fs::metadata(m.join("shared")).unwrap().mode() & 0o7777,
        0o1777
    );

    // Sticky folder: Bob may not remove or rename Alice's file.
    refused(BOB, &m, "rm -f shared/a.txt", "Operation not permitted");
    refused(
        BOB,
        &m,
        "mv shared/a.txt shared/b.txt",
        "Operation not permitted",
    );
    allowed(BOB, &m, "echo b > shared/b.txt && rm shared/b.txt");
    // Not the owner: no chmod, no chown, no chgrp to a foreign group.
    refused(BOB, &m, "chmod 666 shared/a.txt", "Operation not permitted");
    refused(
        ALICE,
        &m,
        "chown 41235 shared/a.txt",
        "Operation not permitted",
    );
    refused(ALICE, &m, "chgrp 0 shared/a.txt", "Operation not permitted");
    // Mode bits decide access.
    allowed(ALICE, &m, "chmod 600 shared/a.txt");
    refused(BOB, &m, "cat shared/a.txt", "Permission denied");
    allowed(ALICE, &m, "cat shared/a.txt");

    // setuid survives chmod; chown clears it (even by root, as ext4).
    std::fs::set_permissions(m.join("given.txt"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(
        std::fs::metadata(m.join("given.txt")).unwrap().mode() & 0o7777,
        0o4755
    );
    std::os::unix::fs::chown(m.join("given.txt"), Some(BOB), None).unwrap();
    let md = std::fs::metadata(m.join("given.txt")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o7777), (BOB, 0o755));
    // A write by the owner clears setuid too.
    allowed(ALICE, &m, "echo s > shared/s.sh && chmod 4755 shared/s.sh");
    allowed(ALICE, &m, "echo more >> shared/s.sh");
    assert_eq!(
        std::fs::metadata(m.join("shared/s.sh")).unwrap().mode() & 0o7777,
        0o755
    );

    // A setgid folder gives its group to what is made in it, and its
    // setgid bit to new folders.
    std::fs::create_dir(m.join("sg")).unwrap();
    std::os::unix::fs::chown(m.join("sg"), None, Some(4242)).unwrap();
    std::fs::set_permissions(m.join("sg"), std::fs::Permissions::from_mode(0o2777)).unwrap();
    allowed(ALICE, &m, "touch sg/f && mkdir sg/d");
    let f = std::fs::metadata(m.join("sg/f")).unwrap();
    let d = std::fs::metadata(m.join("sg/d")).unwrap();
    assert_eq!((f.uid(), f.gid()), (ALICE, 4242));
    assert_eq!((d.gid(), d.mode() & 0o2000), (4242, 0o2000));

    // All of it survives a remount.
    dev.unmount();
    dev.mount(&["--allow-other"]);
    let a = std::fs::metadata(m.join("shared/a.txt")).unwrap();
    assert_eq!((a.uid(), a.gid(), a.mode() & 0o7777), (ALICE, ALICE, 0o600));
    assert_eq!(std::fs::metadata(m.join("sg/f")).unwrap().gid(), 4242);
    assert_eq!(
        std::fs::metadata(m.join("shared")).unwrap().mode() & 0o7777,
        0o1777
    );
    dev.unmount();
}

#[test]
fn times_follow_posix_and_utimensat_permission_rules() {
    let server = Server::start();
    let mut dev = device_open_to_others(&server, "u", "pw-posix-1");
    let m = dev.mnt.clone();
    std::fs::write(m.join("f"), b"x").unwrap();
    std::fs::set_permissions(m.join("f"), std::fs::Permissions::from_mode(0o666)).unwrap();
    let times = |p: &str| {
        let md = std::fs::metadata(m.join(p)).unwrap();
        (
            (md.atime(), md.atime_nsec()),
            (md.mtime(), md.mtime_nsec()),
            (md.ctime(), md.ctime_nsec()),
        )
    };

    // Explicit times: owner (or root) only; "now": anyone who may write.
    refused(
        ALICE,
        &m,
        "touch -d 2001-02-03 f",
        "Operation not permitted",
    );
    allowed(ALICE, &m, "touch f");
    std::fs::set_permissions(m.join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(ALICE, &m, "touch f", "Permission denied");

    // atime and mtime as set, exactly; ctime moves on every change.
    let (_, _, c0) = times("f");
    let out = Command::new("touch")
        .args(["-a", "-d", "1999-12-31 23:59:59.123456789 UTC"])
        .arg(m.join("f"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let (a1, m1, c1) = times("f");
    assert_eq!(a1, (946_684_799, 123_456_789));
    assert!(c1 > c0, "ctime moves on utimensat: {c0:?} -> {c1:?}");
    std::fs::set_permissions(m.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let (a2, m2, c2) = times("f");
    assert_eq!((a2, m2), (a1, m1), "chmod changes neither atime nor mtime");
    assert!(c2 > c1, "ctime moves on chmod");

    // A rename moves the node's ctime and the folders' mtime.
    std::fs::create_dir(m.join("d")).unwrap();
    let (_, dm0, _) = times("d");
    std::fs::rename(m.join("f"), m.join("d/g")).unwrap();
    let (_, dm1, _) = times("d");
    let (_, m3, c3) = times("d/g");
    assert!(dm1 > dm0, "the target folder's mtime moves");
    assert_eq!(m3, m2, "a rename keeps the file's mtime");
    assert!(c3 > c2, "and moves its ctime");
    dev.unmount();
}
