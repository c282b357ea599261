//! ext4 parity through a real mount (issue 6), as root with
//! `--allow-other`: folder link counts and sizes, name and path limits,
//! rename flags, setuid/setgid clearing (the kernel's part with
//! `default_permissions`), fallocate, SEEK_DATA/SEEK_HOLE,
//! copy_file_range, and relatime. The core's halves are in
//! `src/vfs/ext4_tests.rs`.

mod common;

use common::*;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const ALICE: u32 = 41_334;
const BOB: u32 = 41_335;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno_of(r: i64) -> i32 {
    assert_eq!(r, -1, "expected a failure");
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> i64 {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: two valid C strings and plain flags.
    unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn folders_names_and_renames_answer_like_ext4() {
    let server = Server::start();
    let mut dev = device_open_to_others(&server, "u", "pw-ext4-1");
    let m = dev.mnt.clone();

    // Link count 2 + subfolders, size 4096.
    std::fs::create_dir_all(m.join("d/a")).unwrap();
    std::fs::create_dir(m.join("d/b")).unwrap();
    std::fs::write(m.join("d/f"), b"x").unwrap();
    let d = std::fs::metadata(m.join("d")).unwrap();
    assert_eq!((d.nlink(), d.size()), (4, 4096));
    std::fs::remove_dir(m.join("d/b")).unwrap();
    assert_eq!(std::fs::metadata(m.join("d")).unwrap().nlink(), 3);

    // NAME_MAX: 255 bytes work, 256 are ENAMETOOLONG from every call.
    let max = "n".repeat(255);
    std::fs::write(m.join(&max), b"x").unwrap();
    let long = m.join("n".repeat(256));
    let code = |r: std::io::Result<()>| r.unwrap_err().raw_os_error().unwrap();
    assert_eq!(code(std::fs::write(&long, b"x")), libc::ENAMETOOLONG);
    assert_eq!(code(std::fs::create_dir(&long)), libc::ENAMETOOLONG);
    assert_eq!(
        code(std::fs::metadata(&long).map(|_| ())),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        code(std::os::unix::fs::symlink("x", &long)),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        code(std::fs::rename(m.join(&max), &long)),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        code(std::fs::hard_link(m.join(&max), &long)),
        libc::ENAMETOOLONG
    );
    // Paths near PATH_MAX: 30 levels of 120-byte names (about 3.6 KiB).
    let mut deep = m.clone();
    for i in 0..30 {
        deep.push(format!("{i:03}{}", "p".repeat(117)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), b"deep").unwrap();
    assert_eq!(std::fs::read(deep.join("leaf")).unwrap(), b"deep");

    // rename flags.
    std::fs::write(m.join("x"), b"x").unwrap();
    std::fs::write(m.join("y"), b"y").unwrap();
    let noreplace = libc::RENAME_NOREPLACE;
    assert_eq!(
        errno_of(renameat2(&m.join("x"), &m.join("y"), noreplace)),
        libc::EEXIST
    );
    assert_eq!(renameat2(&m.join("x"), &m.join("z"), noreplace), 0);
    // Exchange a file and a folder across folders.
    std::fs::create_dir(m.join("e")).unwrap();
    std::fs::write(m.join("d/a/inner"), b"i").unwrap();
    let exchange = libc::RENAME_EXCHANGE;
    assert_eq!(renameat2(&m.join("z"), &m.join("d/a"), exchange), 0);
    assert_eq!(std::fs::read(m.join("d/a")).unwrap(), b"x");
    assert_eq!(std::fs::read(m.join("z/inner")).unwrap(), b"i");
    assert_eq!(std::fs::metadata(m.join("d")).unwrap().nlink(), 2);
    assert_eq!(
        errno_of(renameat2(&m.join("z"), &m.join("z/nope"), exchange)),
        libc::ENOENT
    );
    std::fs::create_dir(m.join("z/sub")).unwrap();
    assert_eq!(
        errno_of(renameat2(&m.join("z"), &m.join("z/sub"), exchange)),
        libc::EINVAL
    );
    // rename(2) errors.
    let code = |r: std::io::Result<()>| r.unwrap_err().raw_os_error().unwrap();
    assert_eq!(
        code(std::fs::rename(m.join("z"), m.join("z/sub/in"))),
        libc::EINVAL
    );
    assert_eq!(
        code(std::fs::rename(m.join("e"), m.join("z"))),
        libc::ENOTEMPTY
    );
    assert_eq!(
        code(std::fs::rename(m.join("y"), m.join("e"))),
        libc::EISDIR
    );
    assert_eq!(
        code(std::fs::rename(m.join("e"), m.join("y"))),
        libc::ENOTDIR
    );

    // All of it reached the server: a second device sees the swap.
    dev.sync();
    let mut other = Device::login(&server, "u", "pw-ext4-1", "b");
    other.mount(&[]);
    let o = other.mnt.clone();
    wait_for(
        "the swap on the other device",
        std::time::Duration::from_secs(30),
        || (std::fs::read(o.join("z/inner")).ok()? == b"i").then_some(()),
    );
    assert_eq!(std::fs::read(o.join("d/a")).unwrap(), b"x");
    assert_eq!(std::fs::metadata(o.join("d")).unwrap().nlink(), 2);
    other.unmount();
    dev.unmount();
}

#[test]
fn setuid_and_setgid_are_cleared_like_ext4() {
    let server = Server::start();
    let mut dev = device_open_to_others(&server, "u", "pw-ext4-1");
    let m = dev.mnt.clone();
    let make = |name: &str, bits: u32| {
        let p = m.join(name);
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        std::os::unix::fs::chown(&p, Some(ALICE), Some(ALICE)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(bits)).unwrap();
        p
    };
    // A write by someone else clears setuid, and setgid with group-exec.
    let w = make("w", 0o6777);
    allowed(BOB, &m, "echo more >> w");
    assert_eq!(mode(&w), 0o777);
    // setgid without group-exec (a locking marker) stays.
    let l = make("l", 0o2666);
    allowed(BOB, &m, "echo more >> l");
    assert_eq!(mode(&l), 0o2666);
    // Root (CAP_FSETID) writing keeps them.
    let r = make("r", 0o6755);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&r)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
        .unwrap();
    assert_eq!(mode(&r), 0o6755);
    // chown of a file clears both, even by root; not setgid without
    // group-exec, and not a folder's.
    std::os::unix::fs::chown(&r, Some(BOB), None).unwrap();
    assert_eq!(mode(&r), 0o755);
    std::os::unix::fs::chown(&l, Some(BOB), None).unwrap();
    assert_eq!(mode(&l), 0o2666);
    std::fs::create_dir(m.join("sd")).unwrap();
    std::fs::set_permissions(m.join("sd"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    std::os::unix::fs::chown(m.join("sd"), Some(BOB), None).unwrap();
    assert_eq!(mode(&m.join("sd")), 0o2775);
    // Kept across a remount.
    dev.unmount();
    dev.mount(&["--allow-other"]);
    assert_eq!((mode(&w), mode(&l), mode(&r)), (0o777, 0o2666, 0o755));
    dev.unmount();
}

#[test]
fn fallocate_holes_copy_file_range_and_relatime_through_the_kernel() {
    let server = Server::start();
    let mut dev = device_open_to_others(&server, "u", "pw-ext4-1");
    let m = dev.mnt.clone();
    let p = m.join("f");
    std::fs::write(&p, vec![7u8; 10_000]).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let fd = f.as_raw_fd();
    // SAFETY: fallocate/lseek on an open descriptor, plain integers.
    unsafe {
        assert_eq!(libc::fallocate(fd, 0, 8_000, 8_000), 0);
        assert_eq!(f.metadata().unwrap().len(), 16_000);
        assert_eq!(
            libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 100_000),
            0
        );
        assert_eq!(f.metadata().unwrap().len(), 16_000);
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        assert_eq!(libc::fallocate(fd, punch, 4096, 4096), 0);
        assert_eq!(libc::lseek(fd, 0, libc::SEEK_HOLE), 4096);
        assert_eq!(libc::lseek(fd, 4096, libc::SEEK_DATA), 8192);
        assert_eq!(
            errno_of(libc::lseek(fd, 16_000, libc::SEEK_DATA)),
            libc::ENXIO
        );
    }
    drop(f);
    let mut want = vec![7u8; 10_000];
    want.resize(16_000, 0);
    want[4096..8192].fill(0);
    assert_eq!(std::fs::read(&p).unwrap(), want);

    // copy_file_range into another file, and its errors.
    let src = std::fs::File::open(&p).unwrap();
    let dst = std::fs::File::create(m.join("g")).unwrap();
    let (mut off_in, mut off_out) = (0i64, 100i64);
    // SAFETY: valid descriptors and offsets.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            5_000,
            0,
        )
    };
    assert_eq!(n, 5_000);
    let (mut a, mut b) = (0i64, 0i64);
    // SAFETY: as above; the destination is read-only.
    let bad =
        unsafe { libc::copy_file_range(src.as_raw_fd(), &mut a, src.as_raw_fd(), &mut b, 10, 0) };
    assert_eq!(errno_of(bad as i64), libc::EBADF);
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let (mut a, mut b) = (0i64, 100i64);
    // SAFETY: as above; overlapping ranges of one file.
    let overlap =
        unsafe { libc::copy_file_range(rw.as_raw_fd(), &mut a, rw.as_raw_fd(), &mut b, 200, 0) };
    assert_eq!(errno_of(overlap as i64), libc::EINVAL);
    drop((src, dst, rw));
    let mut want_g = vec![0u8; 100];
    want_g.extend_from_slice(&want[..5_000]);
    assert_eq!(std::fs::read(m.join("g")).unwrap(), want_g);

    // relatime: a read moves an atime older than mtime; a second does not.
    let old = std::fs::FileTimes::new()
        .set_accessed(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000));
    std::fs::File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_times(old)
        .unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().atime(), 1_000);
    std::fs::read(&p).unwrap();
    let atime = || {
        let m = std::fs::metadata(&p).unwrap();
        (m.atime(), m.atime_nsec())
    };
    let a1 = atime();
    assert!(a1.0 > 1_000, "atime moved: {a1:?}");
    // To the nanosecond: any move, even within the second, would show.
    std::fs::read(&p).unwrap();
    assert_eq!(atime(), a1);

    // The changed content uploads.
    dev.sync();
    let mut other = Device::login(&server, "u", "pw-ext4-1", "b");
    other.mount(&[]);
    let o = other.mnt.clone();
    wait_for(
        "g on the other device",
        std::time::Duration::from_secs(30),
        || (std::fs::read(o.join("g")).ok()? == want_g).then_some(()),
    );
    assert_eq!(std::fs::read(o.join("f")).unwrap(), want);
    other.unmount();
    dev.unmount();
}
