//! Extended attributes through a real mount, with the system calls
//! themselves (`lsetxattr`, `lgetxattr`, `llistxattr`, `lremovexattr`):
//! ext4's answers for files, folders, symlinks and FIFOs, sizes and
//! buffers, POSIX ACLs refused as on a mount without ACL support, what
//! another user may do (a forked child that drops root), survival across a
//! remount, and two devices of one account seeing each other's changes.

mod common;

use common::*;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

const ALICE: u32 = 41_236;
const ARRIVE: Duration = Duration::from_secs(60);
const XATTR_CREATE: i32 = libc::XATTR_CREATE;
const XATTR_REPLACE: i32 = libc::XATTR_REPLACE;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn set(p: &Path, name: &str, value: &[u8], flags: i32) -> Result<(), i32> {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings and a buffer of `value.len()` bytes.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// `lgetxattr` with a buffer of `size` bytes (0: ask for the size).
fn get_sized(p: &Path, name: &str, size: usize) -> Result<(usize, Vec<u8>), i32> {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: valid C strings and a buffer of `size` bytes (or none).
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), ptr, size) };
    if r < 0 {
        return Err(last_errno());
    }
    buf.truncate(r as usize);
    Ok((r as usize, buf))
}

fn get(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (len, _) = get_sized(p, name, 0)?;
    Ok(get_sized(p, name, len.max(1))?.1)
}

/// `llistxattr` with a buffer of `size` bytes (0: ask for the size).
fn list_sized(p: &Path, size: usize) -> Result<(usize, Vec<String>), i32> {
    let p = cpath(p);
    let mut buf = vec![0u8; size];
    let ptr = if size == 0 {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    // SAFETY: a valid C string and a buffer of `size` bytes (or none).
    let r = unsafe { libc::llistxattr(p.as_ptr(), ptr, size) };
    if r < 0 {
        return Err(last_errno());
    }
    buf.truncate(r as usize);
    let names = buf
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect();
    Ok((r as usize, names))
}

fn list(p: &Path) -> Vec<String> {
    let (len, _) = list_sized(p, 0).unwrap();
    list_sized(p, len.max(1)).unwrap().1
}

fn remove(p: &Path, name: &str) -> Result<(), i32> {
    let (p, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid C strings.
    let r = unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// Runs `f` in a forked child that drops root for `uid` (group `uid`, no
/// supplementary groups, no capabilities); `f`'s answer is the child's
/// exit code (0 = success, else an errno).
fn as_user(uid: u32, f: impl FnOnce() -> i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::ForkResult;
    // SAFETY: the child only makes system calls and allocates (glibc's
    // fork keeps malloc usable), then exits without unwinding.
    match unsafe { nix::unistd::fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: plain system calls; `_exit` never returns.
            unsafe {
                let code = if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    255
                } else {
                    f()
                };
                libc::_exit(code)
            }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, code) => code,
            other => panic!("child ended with {other:?}"),
        },
    }
}

fn code(r: Result<impl Sized, i32>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e,
    }
}

#[test]
fn attributes_answer_like_ext4_and_survive_a_remount() {
    let server = Server::start();
    let mut dev = device_open_to_others(&server, "u", "pw-xattr-1");
    let m = dev.mnt.clone();
    let (f, d, l, p) = (m.join("f"), m.join("d"), m.join("l"), m.join("p"));
    std::fs::write(&f, b"x").unwrap();
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::symlink("f", &l).unwrap();
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();

    // Files and folders: stored, listed, read with size queries.
    for x in [&f, &d] {
        set(x, "user.colour", b"blue", 0).unwrap();
        set(x, "user.empty", b"", 0).unwrap();
        assert_eq!(get(x, "user.colour").unwrap(), b"blue");
        assert_eq!(get(x, "user.empty").unwrap(), b"");
        assert_eq!(list(x), ["user.colour", "user.empty"]);
    }
    assert_eq!(get_sized(&f, "user.colour", 0).unwrap().0, 4);
    assert_eq!(get_sized(&f, "user.colour", 3), Err(libc::ERANGE));
    let (len, _) = list_sized(&f, 0).unwrap();
    assert_eq!(len, "user.colour\0user.empty\0".len());
    assert_eq!(list_sized(&f, len - 1), Err(libc::ERANGE));
    // The computed attributes are readable, not listed, and read-only.
    assert!(get(&f, "user.nimbus.state").is_ok());
    assert_eq!(set(&f, "user.nimbus.state", b"x", 0), Err(libc::EPERM));
    assert_eq!(get(&f, "user.nimbus.other"), Err(libc::ENODATA));

    // Symlinks and FIFOs take no user.* (EPERM; reads ENODATA), but hold
    // trusted.* and security.*.
    for x in [&l, &p] {
        assert_eq!(set(x, "user.a", b"1", 0), Err(libc::EPERM), "{x:?}");
        assert_eq!(get(x, "user.a"), Err(libc::ENODATA), "{x:?}");
        set(x, "trusted.t", b"1", 0).unwrap();
        set(x, "security.selinux", b"ctx", 0).unwrap();
        assert_eq!(get(x, "trusted.t").unwrap(), b"1");
        assert_eq!(list(x), ["security.selinux", "trusted.t"]);
    }
    // The link's attributes are its own, not its target's.
    assert_eq!(code(get(&f, "trusted.t")), libc::ENODATA);

    // Names, sizes and flags.
    let long = format!("user.{}", "n".repeat(251));
    assert_eq!(set(&f, &long, b"", 0), Err(libc::ERANGE));
    set(&f, &long[..255], b"", 0).unwrap();
    remove(&f, &long[..255]).unwrap();
    assert_eq!(set(&f, "user.big", &vec![0; 65_537], 0), Err(libc::E2BIG));
    assert_eq!(set(&f, "user.big", &vec![0; 4_096], 0), Err(libc::ENOSPC));
    let g = m.join("g");
    std::fs::write(&g, b"").unwrap();
    set(&g, "user.big", &vec![7; 4_096 - 8], 0).unwrap();
    assert_eq!(get(&g, "user.big").unwrap(), vec![7; 4_096 - 8]);
    assert_eq!(set(&g, "user.b", b"", 0), Err(libc::ENOSPC));
    assert_eq!(
        set(&f, "user.colour", b"red", XATTR_CREATE),
        Err(libc::EEXIST)
    );
    assert_eq!(
        set(&f, "user.new", b"red", XATTR_REPLACE),
        Err(libc::ENODATA)
    );
    set(&f, "user.colour", b"red", XATTR_REPLACE).unwrap();
    assert_eq!(get(&f, "user.colour").unwrap(), b"red");
    assert_eq!(remove(&f, "user.new"), Err(libc::ENODATA));
    assert_eq!(set(&f, "other.x", b"", 0), Err(libc::EOPNOTSUPP));

    // POSIX ACLs: refused as on a file system mounted without ACL support
    // (a valid ACL: user::rw-, group::r--, other::r--).
    let acl: Vec<u8> = [2u32.to_le_bytes().to_vec()]
        .into_iter()
        .chain([(0x01u16, 6u16), (0x04, 4), (0x20, 4)].map(|(tag, perm)| {
            [tag.to_le_bytes(), perm.to_le_bytes()]
                .concat()
                .into_iter()
                .chain(u32::MAX.to_le_bytes())
                .collect()
        }))
        .flatten()
        .collect();
    for name in ["system.posix_acl_access", "system.posix_acl_default"] {
        assert_eq!(set(&d, name, &acl, 0), Err(libc::EOPNOTSUPP), "{name}");
        assert_eq!(get(&d, name), Err(libc::EOPNOTSUPP), "{name}");
    }

    // Another user: trusted.* is neither writable, readable nor listed;
    // user.* needs write access to set and read access to get.
    set(&f, "trusted.secret", b"s", 0).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mine = m.join("alice.txt");
    std::fs::write(&mine, b"").unwrap();
    std::os::unix::fs::chown(&mine, Some(ALICE), Some(ALICE)).unwrap();
    let private = m.join("private.txt");
    std::fs::write(&private, b"").unwrap();
    set(&private, "user.p", b"1", 0).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (f2, mine2, private2) = (f.clone(), mine.clone(), private.clone());
    assert_eq!(
        as_user(ALICE, || code(set(&mine2, "trusted.x", b"1", 0))),
        libc::EPERM
    );
    assert_eq!(
        as_user(ALICE, || code(get(&f2, "trusted.secret"))),
        libc::ENODATA
    );
    assert_eq!(
        as_user(ALICE, || i32::from(
            list(&f2).iter().any(|n| n.starts_with("trusted."))
        )),
        0,
        "trusted.* is not listed for another user"
    );
    assert!(list(&f).contains(&"trusted.secret".to_string()));
    assert_eq!(
        as_user(ALICE, || code(set(&f2, "user.colour", b"green", 0))),
        libc::EACCES
    );
    assert_eq!(
        as_user(ALICE, || code(get(&private2, "user.p"))),
        libc::EACCES
    );
    assert_eq!(as_user(ALICE, || code(get(&f2, "user.colour"))), 0);
    // security.* takes privilege to write (the kernel's capability
    // module), and a sticky folder's user.* only its owner.
    assert_eq!(
        as_user(ALICE, || code(set(&mine2, "security.x", b"1", 0))),
        libc::EPERM
    );
    let sticky = m.join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let sticky2 = sticky.clone();
    assert_eq!(
        as_user(ALICE, || code(set(&sticky2, "user.s", b"1", 0))),
        libc::EPERM
    );
    assert_eq!(
        as_user(ALICE, || code(set(&mine2, "user.mine", b"1", 0))),
        0
    );
    assert_eq!(get(&mine, "user.mine").unwrap(), b"1");

    // Everything survives a remount.
    dev.unmount();
    dev.mount(&["--allow-other"]);
    assert_eq!(get(&f, "user.colour").unwrap(), b"red");
    assert_eq!(get(&d, "user.colour").unwrap(), b"blue");
    assert_eq!(get(&l, "security.selinux").unwrap(), b"ctx");
    assert_eq!(get(&p, "trusted.t").unwrap(), b"1");
    assert_eq!(get(&g, "user.big").unwrap(), vec![7; 4_096 - 8]);
    assert_eq!(get(&f, "trusted.secret").unwrap(), b"s");
}

#[test]
fn attributes_travel_between_two_devices() {
    let server = Server::start();
    server.add_user("alice", "pw-xattr-2");
    let mut a = Device::login(&server, "alice", "pw-xattr-2", "laptop");
    let mut b = Device::login(&server, "alice", "pw-xattr-2", "desktop");
    a.mount(&[]);
    b.mount(&[]);
    std::fs::write(a.path("f"), b"content").unwrap();
    std::fs::create_dir(a.path("d")).unwrap();
    std::os::unix::fs::symlink("f", a.path("l")).unwrap();
    set(&a.path("f"), "user.bin", &[0, 255, 10], 0).unwrap();
    set(&a.path("f"), "user.empty", b"", 0).unwrap();
    set(&a.path("d"), "user.tag", b"folder", 0).unwrap();
    set(&a.path("l"), "trusted.t", b"link", 0).unwrap();
    a.sync();

    let arrived = |p: &Path, name: &str, want: &[u8]| {
        wait_for(&format!("{name} of {p:?}"), ARRIVE, || {
            (get(p, name).ok().as_deref() == Some(want)).then_some(())
        })
    };
    arrived(&b.path("f"), "user.bin", &[0, 255, 10]);
    arrived(&b.path("f"), "user.empty", b"");
    arrived(&b.path("d"), "user.tag", b"folder");
    arrived(&b.path("l"), "trusted.t", b"link");

    // A removal and a change on B reach A.
    remove(&b.path("f"), "user.bin").unwrap();
    set(&b.path("d"), "user.tag", b"changed", XATTR_REPLACE).unwrap();
    b.sync();
    wait_for("the removal on A", ARRIVE, || {
        (get(&a.path("f"), "user.bin") == Err(libc::ENODATA)).then_some(())
    });
    arrived(&a.path("d"), "user.tag", b"changed");
    assert_eq!(list(&a.path("f")), ["user.empty"]);

    // cp -a keeps them on a copy inside the mount (a file's are set while
    // cp holds it open for writing), and the copy travels.
    std::fs::write(b.path("d/inner"), b"inner").unwrap();
    set(&b.path("d/inner"), "user.i", b"file", 0).unwrap();
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(b.path("d"))
        .arg(b.path("d2"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&b.path("d2"), "user.tag").unwrap(), b"changed");
    assert_eq!(get(&b.path("d2/inner"), "user.i").unwrap(), b"file");
    b.sync();
    arrived(&a.path("d2"), "user.tag", b"changed");
    arrived(&a.path("d2/inner"), "user.i", b"file");
    wait_content(&a.path("d2/inner"), b"inner", ARRIVE);

    // And they survive a remount of the receiving device.
    a.unmount();
    a.mount(&[]);
    assert_eq!(get(&a.path("d"), "user.tag").unwrap(), b"changed");
    assert_eq!(get(&a.path("l"), "trusted.t").unwrap(), b"link");
}
