//! The mount-side commands against a real FUSE mount of the embedded
//! default: `mount --daemon`, `status`, `sync --wait`, `unmount` (busy and
//! not), shutdown on signals, and semantics only a real kernel shows
//! (timestamps, unsupported operations). Every wait polls with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_nimbus");

/// One isolated user: config, data and cache dirs under a temp dir.
struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn nimbus(&self, args: &[&str], cwd: Option<&Path>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("NIMBUS_CONFIG_DIR", self.path("config"))
            .env("XDG_DATA_HOME", self.path("data"))
            .env("XDG_CACHE_HOME", self.path("cache"))
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null());
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        cmd.output().unwrap()
    }
}

fn mounted(p: &Path) -> bool {
    let want = p.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Unmounts on drop if a test failed halfway.
struct MountGuard(PathBuf);
impl Drop for MountGuard {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).status();
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn daemon_mount_status_sync_unmount() {
    let env = Env::new();
    let mnt = env.path("Nimbus");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let m = mnt.to_str().unwrap();
    let _guard = MountGuard(mnt.clone());

    let out = env.nimbus(&["mount", m, "--daemon", "--cache-size", "64MiB"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(mounted(&mnt), "--daemon returned before the mount appeared");
    assert!(
        text(&out.stdout).contains("mount.log"),
        "{}",
        text(&out.stdout)
    );

    // Mounting again on the same folder is refused in one line.
    let out = env.nimbus(&["mount", m], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already a nimbus mount"));

    std::fs::create_dir(mnt.join("docs")).unwrap();
    std::fs::write(mnt.join("docs/a.txt"), b"hello nimbus").unwrap();

    let out = env.nimbus(&["sync", "--wait", m, "--timeout", "60s"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // status from inside the mount (no PATH), human and JSON.
    let out = env.nimbus(&["status"], Some(&mnt.join("docs")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let human = text(&out.stdout);
    assert!(human.contains(&format!("mount:      {m}")), "{human}");
    assert!(human.contains("pending:    0 operations"), "{human}");

    let out = env.nimbus(
        &["status", "--json", mnt.join("docs").to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mount"], m);
    assert_eq!(v["connection"], "online");
    assert_eq!(v["pending_ops"], 0);
    assert_eq!(v["pending"]["count"], 0);

    // A program inside the mount keeps it busy.
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .current_dir(&mnt)
        .spawn()
        .unwrap();
    let out = env.nimbus(&["unmount", m], None);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("is busy"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(mounted(&mnt));

    let out = env.nimbus(&["unmount", m], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!mounted(&mnt), "unmount returned before the mount was gone");

    // Nothing left to unmount.
    let out = env.nimbus(&["unmount", m], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is not a nimbus mount"));
}

/// `GET /healthz` answers 200.
fn healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = Vec::new();
    let _ = s.take(12).read_to_end(&mut head);
    head.starts_with(b"HTTP/1.1 200")
}

fn poll_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn sync_wait_times_out_listing_what_is_pending_while_offline() {
    let env = Env::new();
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let url = format!("http://{addr}");
    let data = env.path("server");
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", &addr, "--data", data.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    poll_until("server health", || healthy(&addr));

    let run_stdin = |args: &[&str], input: &[u8]| {
        use std::io::Write;
        let mut c = Command::new(BIN)
            .args(args)
            .env("NIMBUS_CONFIG_DIR", env.path("config"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    run_stdin(
        &[
            "admin",
            "user",
            "add",
            "bo",
            "--password-stdin",
            "--data",
            data.to_str().unwrap(),
        ],
        b"pw\n",
    );
    run_stdin(
        &[
            "login",
            &url,
            "--user",
            "bo",
            "--password-stdin",
            "--device",
            "desk",
        ],
        b"pw\n",
    );

    let mnt = env.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let m = mnt.to_str().unwrap();
    let _guard = MountGuard(mnt.clone());
    let cache = env.path("devcache");
    let out = env.nimbus(
        &[
            "mount",
            m,
            "--daemon",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    std::fs::create_dir(mnt.join("quiet")).unwrap();
    let out = env.nimbus(&["sync", "--wait", m, "--timeout", "60s"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The server goes away; a new file cannot be uploaded.
    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::create_dir(mnt.join("d")).unwrap();
    std::fs::write(mnt.join("d/new.txt"), b"offline bytes").unwrap();

    let out = env.nimbus(
        &[
            "sync",
            "--wait",
            mnt.join("d").to_str().unwrap(),
            "--timeout",
            "1s",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // Progress lines first (plain, not a terminal), then the verdict.
    let verdict = err
        .lines()
        .find(|l| !l.starts_with("nimbus: waiting for "))
        .unwrap_or_default();
    assert!(verdict.starts_with("nimbus: still pending: "), "{err}");
    assert!(verdict.contains("bytes)"), "{err}");
    assert!(
        err.lines()
            .next()
            .unwrap_or_default()
            .starts_with("nimbus: waiting for 2 operations"),
        "{err}"
    );
    assert!(err.lines().any(|l| l.trim() == "d/new.txt"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Nothing pending below `quiet`, but a pull cannot happen: the wait
    // says so while it waits and when it gives up.
    let out = env.nimbus(
        &[
            "sync",
            "--wait",
            "--pull",
            mnt.join("quiet").to_str().unwrap(),
            "--timeout",
            "3s",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .next()
            .unwrap_or_default()
            .starts_with("nimbus: waiting for changes from the server (this device is at cursor"),
        "{err}"
    );
    let verdict = err.lines().last().unwrap_or_default();
    assert!(
        verdict
            .starts_with("nimbus: nothing pending here; not yet applied: changes from the server"),
        "{err}"
    );
    assert!(verdict.contains("is unreachable"), "{err}");

    // Status says so too.
    let out = env.nimbus(&["status", m, "--json"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["pending_ops"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["pending"]["paths"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "d/new.txt"),
        "{v}"
    );

    let out = env.nimbus(&["unmount", m], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!mounted(&mnt));
}

/// A `--daemon` mount of the embedded default at `env/NAME` with its cache
/// (and `mount.log`) in `env/NAME-cache`. Returns the canonical mount
/// point, the cache dir and a guard that unmounts if the test fails.
fn mount_daemon(env: &Env, name: &str) -> (PathBuf, PathBuf, MountGuard) {
    let mnt = env.path(name);
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let cache = env.path(&format!("{name}-cache"));
    let guard = MountGuard(mnt.clone());
    let out = env.nimbus(
        &[
            "mount",
            mnt.to_str().unwrap(),
            "--daemon",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    (mnt, cache, guard)
}

#[test]
fn timestamps_far_out_and_before_1970_are_exact() {
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, UNIX_EPOCH};
    let env = Env::new();
    let (mnt, _cache, _guard) = mount_daemon(&env, "mnt");
    let path = mnt.join("t.txt");
    std::fs::write(&path, b"time").unwrap();
    let set_mtime = |t: std::time::SystemTime| {
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    };
    let mtime = || {
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!((m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()));
        (m.mtime(), m.mtime_nsec())
    };

    // 2300-01-01 and year 1000 are past what i64 nanoseconds hold: kept
    // exactly, not clamped or wrapped.
    set_mtime(UNIX_EPOCH + Duration::new(10_413_792_000, 5));
    assert_eq!(mtime(), (10_413_792_000, 5));
    set_mtime(UNIX_EPOCH - Duration::from_secs(30_610_224_000));
    assert_eq!(mtime(), (-30_610_224_000, 0));

    // 1960-01-01 00:00:00.25 is kept exactly.
    set_mtime(UNIX_EPOCH - Duration::from_secs(315_619_200) + Duration::from_millis(250));
    assert_eq!(mtime(), (-315_619_200, 250_000_000));
    // Whole seconds before 1970.
    set_mtime(UNIX_EPOCH - Duration::from_secs(86_400));
    assert_eq!(mtime(), (-86_400, 0));

    let m = mnt.to_str().unwrap();
    let out = env.nimbus(&["unmount", m], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The last OS error's errno.
fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

#[test]
fn unsupported_operations_answer_quietly_with_fallback_errnos() {
    use std::os::fd::AsRawFd;
    let env = Env::new();
    let (mnt, cache, _guard) = mount_daemon(&env, "mnt");
    let a = mnt.join("a.txt");
    let content = b"0123456789".repeat(1000);
    std::fs::write(&a, &content).unwrap();

    let f = std::fs::File::open(&a).unwrap();
    let fd = f.as_raw_fd();
    // isatty(3) (Python's open, tar, vim): an ioctl that must say ENOTTY.
    // SAFETY: `fd` is open; `termios` is a valid out buffer.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::ioctl(fd, libc::TCGETS, &mut termios) }, -1);
    assert_eq!(last_errno(), libc::ENOTTY);
    assert_eq!(unsafe { libc::isatty(fd) }, 0);
    // SEEK_DATA / SEEK_HOLE: a file without holes is all data, with the
    // hole at the end.
    // SAFETY: plain syscalls on an open descriptor.
    assert_eq!(unsafe { libc::lseek(fd, 0, libc::SEEK_DATA) }, 0);
    let size = content.len() as libc::off_t;
    assert_eq!(unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) }, size);
    // poll: always ready, like a local file.
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1);
    assert!(pfd.revents & libc::POLLIN != 0);
    drop(f);

    // fallocate within the size changes nothing (issue 6 made it work;
    // `tests/posix_ext4_mount.rs` tests its modes).
    let w = std::fs::File::options().write(true).open(&a).unwrap();
    // SAFETY: plain syscall on an open descriptor.
    assert_eq!(unsafe { libc::fallocate(w.as_raw_fd(), 0, 0, 4096) }, 0);
    drop(w);
    // copy_file_range (what `std::fs::copy` tries first).
    std::fs::copy(&a, mnt.join("b.txt")).unwrap();
    assert_eq!(std::fs::read(mnt.join("b.txt")).unwrap(), content);
    // Hard links (`tests/hardlinks_mount.rs` tests them in depth).
    std::fs::hard_link(&a, mnt.join("c.txt")).unwrap();
    let nlink =
        std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(mnt.join("c.txt")).unwrap());
    assert_eq!(nlink, 2);

    // None of this was logged as a warning (the log is written before the
    // reply, so it is complete now).
    let log = std::fs::read_to_string(cache.join("mount.log")).unwrap();
    let ops = [
        "ioctl",
        "lseek",
        "poll",
        "fallocate",
        "copy_file_range",
        "link",
    ];
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("Not Implemented")
                || (l.contains("WARN") && ops.iter().any(|op| l.contains(op)))
        })
        .collect();
    assert!(noisy.is_empty(), "warnings logged:\n{log}");

    let out = env.nimbus(&["unmount", mnt.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// SIGTERM at any moment of `nimbus mount` takes the clean way out: exit 0
/// and nothing left mounted. Sent while it is still starting (once the
/// embedded server has logged that it listens), it stops before mounting;
/// sent the moment the folder appears in the mount table (racing the rest
/// of the start, hence several rounds), it unmounts.
#[test]
fn sigterm_while_starting_or_right_after_mount_shuts_down_cleanly() {
    use std::time::{Duration, Instant};
    let env = Env::new();
    let mnt = env.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt = mnt.canonicalize().unwrap();
    let _guard = MountGuard(mnt.clone());
    for round in 0..7 {
        let log = env.path(&format!("mount-{round}.log"));
        let mut child = Command::new(BIN)
            .args(["mount", mnt.to_str().unwrap(), "--cache-dir"])
            .arg(env.path("cache-sig"))
            .env("NIMBUS_CONFIG_DIR", env.path("config"))
            .env("XDG_DATA_HOME", env.path("data"))
            .env("XDG_CACHE_HOME", env.path("cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let starting = round == 0;
        // Busy-poll (no sleep) so the signal lands as early as possible.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = if starting {
                std::fs::read_to_string(&log)
                    .unwrap()
                    .contains("server listening")
            } else {
                mounted(&mnt)
            };
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: never got there");
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: mount exited: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: mount did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: {status}: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(!mounted(&mnt), "round {round}: left mounted");
    }
}

/// `nimbus unmount M && nimbus mount M --cache-dir C` works every time:
/// unmount returns only once the old mount process has let go of C.
#[test]
fn unmount_then_mount_again_with_the_same_cache_dir() {
    let env = Env::new();
    let (mnt, cache, _guard) = mount_daemon(&env, "mnt");
    let m = mnt.to_str().unwrap();
    for round in 0..4u8 {
        // Something to flush on the way out.
        std::fs::write(mnt.join(format!("f{round}.txt")), [round; 100]).unwrap();
        let out = env.nimbus(&["unmount", m], None);
        assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
        assert!(!mounted(&mnt));
        let out = env.nimbus(
            &[
                "mount",
                m,
                "--daemon",
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "round {round}: mount right after unmount failed: {}",
            text(&out.stderr)
        );
        for r in 0..=round {
            assert_eq!(
                std::fs::read(mnt.join(format!("f{r}.txt"))).unwrap(),
                [r; 100]
            );
        }
    }
    let out = env.nimbus(&["unmount", m], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The embedded default logs in afresh as the same device at every start:
/// a refresh token that no longer works (expired after months offline, or
/// revoked) cannot lock the drive out of its own server or strand its
/// cache and journal.
#[test]
fn embedded_default_survives_a_dead_refresh_token() {
    let env = Env::new();
    let (mnt, cache, _guard) = mount_daemon(&env, "mnt");
    let m = mnt.to_str().unwrap();
    std::fs::write(mnt.join("kept.txt"), b"still here").unwrap();
    let out = env.nimbus(&["unmount", m], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let account = env.path("config/embedded.json");
    let mut saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&account).unwrap()).unwrap();
    let device = saved["device_id"].clone();
    saved["refresh_token"] = "no-longer-valid".into();
    std::fs::write(&account, serde_json::to_vec(&saved).unwrap()).unwrap();
    let out = env.nimbus(
        &[
            "mount",
            m,
            "--daemon",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(mnt.join("kept.txt")).unwrap(), b"still here");
    std::fs::write(mnt.join("new.txt"), b"after").unwrap();
    let out = env.nimbus(&["sync", "--wait", m, "--timeout", "30s"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&account).unwrap()).unwrap();
    assert_eq!(saved["device_id"], device, "the same device");
    let out = env.nimbus(&["unmount", m], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The mount's own attributes are read by name but not listed, so
/// xattr-preserving copies neither fail on them nor carry them out.
#[test]
fn nimbus_attributes_are_readable_but_not_listed() {
    use std::ffi::CString;
    let env = Env::new();
    let (mnt, _cache, _guard) = mount_daemon(&env, "mnt");
    std::fs::write(mnt.join("f.txt"), b"x").unwrap();
    let path = CString::new(mnt.join("f.txt").to_str().unwrap()).unwrap();
    // SAFETY: plain syscalls on a NUL-terminated path with null or owned
    // buffers of the given sizes.
    let listed = unsafe { libc::listxattr(path.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(listed, 0, "{}", std::io::Error::last_os_error());
    let name = CString::new("user.nimbus.state").unwrap();
    let mut buf = [0u8; 64];
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(n > 0, "{}", std::io::Error::last_os_error());
    let state = std::str::from_utf8(&buf[..n as usize]).unwrap();
    assert!(["pending", "cached"].contains(&state), "{state}");
    let out = env.nimbus(&["unmount", mnt.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A second mount of one device fails with one clear line, on its cache
/// dir or another one (two mounts of one device id would overwrite each
/// other's changes without a conflict copy); so does a cache dir inside
/// the mount point, which the mount would hide.
#[test]
fn a_second_mount_of_a_device_or_a_hidden_cache_is_one_clear_error() {
    let env = Env::new();
    let (mnt, cache, _guard) = mount_daemon(&env, "mnt");
    let other = env.path("other");
    std::fs::create_dir(&other).unwrap();
    let elsewhere = env.path("elsewhere-cache");
    let inside = other.join("cache");
    for (cache, want) in [
        (&cache, "already mounted by another nimbus process"),
        (&elsewhere, "already mounted by another nimbus process"),
        (&inside, "inside the mount point"),
    ] {
        let out = env.nimbus(
            &[
                "mount",
                other.to_str().unwrap(),
                "--daemon",
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            None,
        );
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
        assert!(!err.contains("Os {"), "{err}");
        assert!(!mounted(&other));
    }
    assert!(!inside.exists(), "a refused cache dir is not created");
    let out = env.nimbus(&["unmount", mnt.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
