//! Through a real mount (issue 6): `statfs` reports the account's usage
//! and the server's free space (never the cache budget), `flock` and
//! `fcntl` locks hold between processes of one machine (the kernel keeps
//! them), writes through a shared `mmap` reach the file and the other
//! device, and `O_TMPFILE` is refused as on a filesystem without it.

mod common;

use common::*;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::mman::{mmap, msync, munmap, MapFlags, MsFlags, ProtFlags};
use nix::sys::statvfs::statvfs;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// (used, free) bytes of the filesystem at `path`, as `df` computes them.
fn df(path: &Path) -> (u64, u64) {
    let st = statvfs(path).unwrap();
    let f = st.fragment_size();
    (
        (st.blocks() - st.blocks_free()) * f,
        st.blocks_available() * f,
    )
}

#[test]
fn statfs_shows_the_account_usage_and_the_server_free_space() {
    let server = Server::start();
    server.add_user("s", "pw-statfs-1");
    let mut a = Device::login(&server, "s", "pw-statfs-1", "a");
    // A small cache budget: it must not be what `df` shows.
    a.mount(&["--cache-size", "64MiB"]);

    // Free space: the disk under the server's chunk directory (both are
    // on this machine's disk here), give or take what others write
    // meanwhile.
    let near = |x: u64, y: u64| x.abs_diff(y) < 256 * MIB;
    wait_for(
        "statfs to show the server's free space",
        Duration::from_secs(30),
        || {
            let (_, free) = df(&a.mnt);
            let (_, server_free) = df(&server.data);
            near(free, server_free).then_some(())
        },
    );
    let (used0, _) = df(&a.mnt);
    assert!(used0 < MIB, "a fresh account uses nothing: {used0}");

    std::fs::write(a.path("big"), data(12 * MIB as usize, 7)).unwrap();
    a.sync();
    wait_for(
        "statfs to count the 12 MiB file",
        Duration::from_secs(30),
        || {
            let (used, _) = df(&a.mnt);
            (12 * MIB..13 * MIB).contains(&used).then_some(())
        },
    );
    let st = statvfs(&a.mnt).unwrap();
    assert!(st.files() - st.files_free() >= 2, "the root and the file");
    assert_eq!(st.name_max(), 255);

    // Offline, the last report stays.
    a.unmount();
    drop(server);
    a.mount(&["--cache-size", "64MiB"]);
    let (used, free) = df(&a.mnt);
    assert!(used >= 12 * MIB && free > 256 * MIB, "{used} {free}");
    a.unmount();
}

/// Runs `flock` (util-linux) on `path` without waiting; true if it got
/// the lock.
fn other_process_flocks(path: &Path, shared: bool) -> bool {
    let mut cmd = Command::new("flock");
    cmd.arg("--nonblock");
    if shared {
        cmd.arg("--shared");
    }
    let out = cmd.arg(path).arg("true").output().unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("flock: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// In a forked child: tries an fcntl write lock on `[start, start+len)`
/// without waiting; true if it got it.
fn other_process_fcntl_locks(fd: i32, start: i64, len: i64) -> bool {
    // SAFETY: the child only calls async-signal-safe functions (fcntl,
    // _exit) before it exits.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let mut l: libc::flock = unsafe { std::mem::zeroed() };
            l.l_type = libc::F_WRLCK as i16;
            l.l_whence = libc::SEEK_SET as i16;
            l.l_start = start;
            l.l_len = len;
            let r = unsafe { libc::fcntl(fd, libc::F_SETLK, &l) };
            unsafe { libc::_exit(if r == 0 { 0 } else { 1 }) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            match nix::sys::wait::waitpid(child, None).unwrap() {
                nix::sys::wait::WaitStatus::Exited(_, code) => code == 0,
                other => panic!("child: {other:?}"),
            }
        }
    }
}

#[test]
fn flock_and_fcntl_locks_exclude_other_processes() {
    let server = Server::start();
    server.add_user("l", "pw-locks-1");
    let mut a = Device::login(&server, "l", "pw-locks-1", "a");
    a.mount(&[]);
    let p = a.path("locked");
    std::fs::write(&p, b"0123456789abcdef").unwrap();

    // flock: exclusive excludes all, shared admits shared.
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map(|held| {
            assert!(!other_process_flocks(&p, false), "exclusive flock held");
            assert!(!other_process_flocks(&p, true), "exclusive flock held");
            let f = held.unlock().unwrap();
            assert!(other_process_flocks(&p, false), "after unlock");
            let shared =
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock).unwrap();
            assert!(other_process_flocks(&p, true), "shared with shared");
            assert!(!other_process_flocks(&p, false), "exclusive against shared");
            drop(shared);
        })
        .unwrap();

    // fcntl (POSIX record locks): byte ranges, F_GETLK names the holder.
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = libc::F_WRLCK as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = 0;
    l.l_len = 8;
    fcntl(&f, FcntlArg::F_SETLK(&l)).unwrap();
    assert!(!other_process_fcntl_locks(f.as_raw_fd(), 4, 2), "overlaps");
    assert!(
        other_process_fcntl_locks(f.as_raw_fd(), 8, 8),
        "disjoint range"
    );
    // Seen from another open file description of this process: POSIX
    // locks are per process, so ask through a child instead (F_GETLK).
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let mut q: libc::flock = unsafe { std::mem::zeroed() };
            q.l_type = libc::F_WRLCK as i16;
            q.l_whence = libc::SEEK_SET as i16;
            q.l_len = 1;
            let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut q) };
            let ok =
                r == 0 && q.l_type == libc::F_WRLCK as i16 && q.l_pid == unsafe { libc::getppid() };
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0), "F_GETLK");
        }
    }
    l.l_type = libc::F_UNLCK as i16;
    fcntl(&f, FcntlArg::F_SETLK(&l)).unwrap();
    assert!(
        other_process_fcntl_locks(f.as_raw_fd(), 0, 8),
        "after F_UNLCK"
    );
    drop(f);
    a.unmount();
}

#[test]
fn shared_mmap_writes_reach_the_file_and_the_other_device() {
    let server = Server::start();
    server.add_user("m", "pw-mmap-1");
    let mut a = Device::login(&server, "m", "pw-mmap-1", "a");
    let mut b = Device::login(&server, "m", "pw-mmap-1", "b");
    a.mount(&[]);
    b.mount(&[]);
    let p = a.path("mapped.bin");
    let len = 3 * MIB as usize + 123;
    let mut want = data(len, 11);
    std::fs::write(&p, &want).unwrap();

    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let size = NonZeroUsize::new(len).unwrap();
    // SAFETY: a fresh shared mapping of a file nothing else maps; it is
    // unmapped before `f` closes and the slice does not outlive it.
    unsafe {
        let addr = mmap(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            &f,
            0,
        )
        .unwrap();
        let map = std::slice::from_raw_parts_mut(addr.as_ptr() as *mut u8, len);
        assert_eq!(&map[..4096], &want[..4096], "the mapping reads the file");
        for (i, off) in [0usize, 4095, 1 << 20, 2 * (1 << 20) + 7, len - 1]
            .into_iter()
            .enumerate()
        {
            map[off] = 0xA0 + i as u8;
            want[off] = 0xA0 + i as u8;
        }
        map[100_000..100_000 + 5000].fill(0x5A);
        want[100_000..100_000 + 5000].fill(0x5A);
        msync(addr, len, MsFlags::MS_SYNC).unwrap();
        munmap(addr, len).unwrap();
    }
    drop(f);

    // read(2) sees the mapped writes, on this device and on the other.
    assert!(std::fs::read(&p).unwrap() == want, "read after msync");
    a.sync();
    wait_content(&b.path("mapped.bin"), &want, Duration::from_secs(60));
    a.unmount();
    b.unmount();
}

/// fuser 0.18 has no `tmpfile` operation: the kernel answers `O_TMPFILE`
/// with `EOPNOTSUPP`, which programs (glibc's `tmpfile`, systemd, `cp`)
/// take as "fall back to a named temporary file".
#[test]
fn o_tmpfile_is_refused_with_eopnotsupp() {
    let server = Server::start();
    server.add_user("t", "pw-tmpfile-1");
    let mut a = Device::login(&server, "t", "pw-tmpfile-1", "a");
    a.mount(&[]);
    let dir = std::ffi::CString::new(a.mnt.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; the descriptor, if any, is closed.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
    let err = std::io::Error::last_os_error();
    if fd >= 0 {
        unsafe { libc::close(fd) };
    }
    assert_eq!((fd, err.raw_os_error()), (-1, Some(libc::EOPNOTSUPP)));
    // Nothing was left behind, and a named temporary file works.
    assert_eq!(std::fs::read_dir(&a.mnt).unwrap().count(), 0);
    std::fs::write(a.path(".tmp123"), b"x").unwrap();
    a.unmount();
}
