//! POSIX attributes and special nodes travel between devices (protocol
//! 2), through real mounts: ownership (kept with `--keep-ids`, shown as
//! the mounting user without), setuid and sticky bits, times with
//! nanoseconds and before 1970, FIFOs and device nodes.

mod common;

use common::*;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ALICE: u32 = 41_234;

fn touch(args: &[&str], path: &Path) {
    let out = Command::new("touch").args(args).arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls until `path`'s metadata satisfies `ok`.
fn wait_meta(path: &Path, what: &str, ok: impl Fn(&std::fs::Metadata) -> bool) {
    wait_for(what, Duration::from_secs(60), || {
        std::fs::symlink_metadata(path).ok().filter(|m| ok(m))
    });
}

#[test]
fn owners_modes_times_and_special_nodes_reach_the_other_device() {
    let server = Server::start();
    server.add_user("p", "pw-posix-2");
    let mut a = Device::login(&server, "p", "pw-posix-2", "a");
    let mut b = Device::login(&server, "p", "pw-posix-2", "b");
    a.mount(&[]);
    b.mount(&["--keep-ids"]);

    // On A: an owner of another uid, setuid (after the chown, which
    // clears it), a sticky folder, exact times, a FIFO and a device node.
    let f = a.path("f.sh");
    std::fs::write(&f, b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(&f, Some(ALICE), Some(ALICE)).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o4755)).unwrap();
    touch(&["-a", "-d", "1999-12-31 23:59:59.123456789 UTC"], &f);
    touch(&["-m", "-d", "1969-12-31 23:59:59.25 UTC"], &f);
    std::fs::create_dir(a.path("tmp")).unwrap();
    std::fs::set_permissions(a.path("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    nix::unistd::mkfifo(&a.path("pipe"), Mode::from_bits_truncate(0o640)).unwrap();
    // The kernel opens a FIFO itself (a local pipe): our open, which
    // refuses special nodes, is never asked.
    let mut pipe = std::fs::File::options()
        .read(true)
        .write(true)
        .open(a.path("pipe"))
        .unwrap();
    pipe.write_all(b"hi").unwrap();
    let mut got = [0u8; 2];
    pipe.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");
    drop(pipe);
    let null = makedev(1, 3);
    mknod(
        &a.path("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        null,
    )
    .unwrap();
    let md = std::fs::symlink_metadata(a.path("null")).unwrap();
    let null_mode = md.mode() & 0o7777; // 0o666 less the umask
    assert!(
        md.file_type().is_char_device() && md.rdev() == null,
        "{md:?}"
    );
    assert!(std::fs::symlink_metadata(a.path("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    a.sync();

    // On B with --keep-ids: everything as A set it.
    let bf = b.path("f.sh");
    wait_meta(&bf, "f.sh with its owner, mode and times", |m| {
        (m.uid(), m.gid(), m.mode() & 0o7777) == (ALICE, ALICE, 0o4755)
            && (m.mtime(), m.mtime_nsec()) == (-1, 250_000_000)
            && (m.atime(), m.atime_nsec()) == (946_684_799, 123_456_789)
    });
    wait_meta(&b.path("tmp"), "the sticky folder", |m| {
        m.is_dir() && m.mode() & 0o7777 == 0o1777
    });
    wait_meta(&b.path("pipe"), "the FIFO", |m| {
        m.file_type().is_fifo() && m.mode() & 0o7777 == 0o640 && m.len() == 0
    });
    wait_meta(&b.path("null"), "the character device", |m| {
        m.file_type().is_char_device() && m.rdev() == null && m.mode() & 0o7777 == null_mode
    });
    assert_eq!(std::fs::read(&bf).unwrap(), b"#!/bin/sh\n");

    // Without --keep-ids, ids set on another device show as the
    // mounting user; the rest is the same.
    b.unmount();
    b.mount(&[]);
    let me = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let m = std::fs::metadata(&bf).unwrap();
    assert_eq!((m.uid(), m.gid()), me);
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!((m.mtime(), m.mtime_nsec()), (-1, 250_000_000));
    let n = std::fs::symlink_metadata(b.path("null")).unwrap();
    assert!(n.file_type().is_char_device() && n.rdev() == null);

    // A chmod alone travels back.
    std::fs::set_permissions(b.path("pipe"), std::fs::Permissions::from_mode(0o600)).unwrap();
    b.sync();
    wait_meta(&a.path("pipe"), "the chmod from B", |m| {
        m.file_type().is_fifo() && m.mode() & 0o7777 == 0o600
    });
    a.unmount();
    b.unmount();
}
