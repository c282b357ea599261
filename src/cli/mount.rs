//! `nimbus mount` (foreground or `--daemon`) and `nimbus unmount`.

use super::mountinfo::{self, absolute_no_follow, mount_at, read_mounts};
use crate::client::{FsyncMode, MountOptions};
use crate::config;
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `--daemon` and `unmount` wait for the mount table to change.
pub const MOUNT_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// Arguments of `nimbus mount`, as parsed.
#[derive(Clone, Debug)]
pub struct MountArgs {
    pub mountpoint: PathBuf,
    pub server: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub cache_size: u64,
    pub daemon: bool,
    pub allow_other: bool,
    pub read_only: bool,
    pub keep_ids: bool,
    pub suid: bool,
    pub dev: bool,
    pub fsync: FsyncMode,
}

/// `nimbus mount`: checks the mount point, then either serves the mount in
/// the foreground ([`crate::client::run_mount`]) or detaches a copy of
/// itself and waits until the folder is mounted.
pub fn mount(args: MountArgs) -> Result<()> {
    let mountpoint = check_mountpoint(&args.mountpoint)?;
    let server = args
        .server
        .as_deref()
        .map(super::server::normalize_server_url)
        .transpose()?;
    let cache_dir = args
        .cache_dir
        .as_deref()
        .map(|d| std::path::absolute(d).with_context(|| format!("cannot resolve {}", d.display())))
        .transpose()?;
    let opts = MountOptions {
        mountpoint,
        server,
        cache_dir,
        cache_size: args.cache_size,
        allow_other: args.allow_other,
        read_only: args.read_only,
        keep_ids: args.keep_ids,
        suid: args.suid,
        dev: args.dev,
        fsync: args.fsync,
    };
    if args.daemon {
        daemonize(&opts)
    } else {
        crate::client::run_mount(opts)
    }
}

/// The mount point must be an existing directory that is not already a
/// Nimbus mount. A Nimbus mount left behind by a mount process that is
/// gone (a crash, kill -9: "transport endpoint is not connected") is
/// unmounted first, with a note. Returns its canonical path.
fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let shown = path.display();
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("mount point {shown} is not a directory"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            bail!("mount point {shown} does not exist (create it first: mkdir -p {shown})")
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            clear_stale_mount(path)?;
            eprintln!(
                "nimbus: {shown} was still mounted by a nimbus mount that is gone \
                 (transport endpoint is not connected); unmounted it"
            );
            if let Err(e) = fs::metadata(path) {
                return Err(e).with_context(|| format!("cannot use mount point {shown}"));
            }
        }
        Err(e) => return Err(e).with_context(|| format!("cannot use mount point {shown}")),
    }
    let canon = path
        .canonicalize()
        .with_context(|| format!("cannot resolve mount point {shown}"))?;
    let mounts = read_mounts()?;
    if mount_at(&mounts, &canon).is_some_and(|m| m.is_nimbus()) {
        bail!("{} is already a nimbus mount", canon.display());
    }
    Ok(canon)
}

/// The arguments a detached child gets: the same mount, without
/// `--daemon`, with absolute paths (the child runs in `/`).
fn child_args(opts: &MountOptions) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = vec!["mount".into(), opts.mountpoint.clone().into()];
    if let Some(s) = &opts.server {
        a.extend(["--server".into(), s.into()]);
    }
    if let Some(d) = &opts.cache_dir {
        a.extend(["--cache-dir".into(), d.clone().into()]);
    }
    a.extend(["--cache-size".into(), opts.cache_size.to_string().into()]);
    if opts.allow_other {
        a.push("--allow-other".into());
    }
    if opts.read_only {
        a.push("--read-only".into());
    }
    for (on, flag) in [
        (opts.keep_ids, "--keep-ids"),
        (opts.suid, "--suid"),
        (opts.dev, "--dev"),
    ] {
        if on {
            a.push(flag.into());
        }
    }
    let fsync = match opts.fsync {
        FsyncMode::Local => "local",
        FsyncMode::Remote => "remote",
    };
    a.extend(["--fsync".into(), fsync.into()]);
    a
}

/// Starts the mount in a new session with its stderr appended to
/// `<cache dir>/mount.log`, then waits until the mount point shows up in
/// the mount table (success), the child exits (failure: its last log line
/// is the error), or [`MOUNT_WAIT`] passes.
fn daemonize(opts: &MountOptions) -> Result<()> {
    let cache_dir = match &opts.cache_dir {
        Some(d) => d.clone(),
        None => config::cache_dir()?,
    };
    // Before the log goes there: a refused cache dir is not created.
    crate::client::check_cache_outside_mount(&cache_dir, &opts.mountpoint)?;
    config::ensure_private_dir(&cache_dir)?;
    let log_path = cache_dir.join(config::MOUNT_LOG_FILE);
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open log file {}", log_path.display()))?;
    let start_offset = log.seek(SeekFrom::End(0)).unwrap_or(0);
    writeln!(
        log,
        "--- {} nimbus mount {} (detached)",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        opts.mountpoint.display()
    )
    .with_context(|| format!("cannot write log file {}", log_path.display()))?;
    let header_end = log.stream_position().unwrap_or(start_offset);

    let exe = std::env::current_exe().context("cannot find the nimbus executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(child_args(opts))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: setsid is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
    let mut child = cmd.spawn().context("cannot start the background mount")?;
    let pid = child.id();

    let deadline = Instant::now() + MOUNT_WAIT;
    loop {
        if is_mounted(&opts.mountpoint)? {
            println!(
                "mounted {} (background process {pid}; log: {})",
                opts.mountpoint.display(),
                log_path.display()
            );
            return Ok(());
        }
        if let Some(status) = child
            .try_wait()
            .context("cannot watch the background mount")?
        {
            let last = last_log_line(&log_path, header_end);
            return Err(match last {
                Some(line) => anyhow!("{line} (log: {})", log_path.display()),
                None => anyhow!(
                    "the background mount exited ({status}) without mounting (log: {})",
                    log_path.display()
                ),
            });
        }
        if Instant::now() >= deadline {
            // Do not leave a half-started mount behind.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            bail!(
                "{} was not mounted within {} s; stopped the background mount (log: {})",
                opts.mountpoint.display(),
                MOUNT_WAIT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// The last non-empty line written to the log after `offset`, without a
/// leading `nimbus: ` (the error printer adds its own).
fn last_log_line(path: &Path, offset: u64) -> Option<String> {
    let mut f = fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(line.strip_prefix("nimbus: ").unwrap_or(line).to_string())
}

/// Detaches the dead Nimbus mount at `path` (its serving process is gone):
/// `fusermount3 -uz` when installed, else `umount2(MNT_DETACH)`. Anything
/// else mounted there is refused with one line.
fn clear_stale_mount(path: &Path) -> Result<()> {
    let abs = absolute_no_follow(path)?;
    let shown = abs.display();
    match mount_at(&read_mounts()?, &abs) {
        Some(m) if m.is_nimbus() => {}
        Some(m) => bail!(
            "mount point {shown} is a {} mount of {} whose process is gone (transport endpoint \
             is not connected); unmount it first (fusermount3 -u {shown})",
            m.fstype,
            m.source
        ),
        None => bail!("mount point {shown} cannot be used (transport endpoint is not connected)"),
    }
    if let Some(fusermount) = find_in_path("fusermount3") {
        let out = Command::new(&fusermount)
            .arg("-uz")
            .arg(&abs)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", fusermount.display()))?;
        if out.status.success() {
            return Ok(());
        }
        tracing::debug!(
            "fusermount3 -uz failed ({}); trying umount2(2)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    nix::mount::umount2(&abs, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
        anyhow!(
            "mount point {shown} is a stale nimbus mount (transport endpoint is not connected) \
             and cannot be unmounted ({e}); run `fusermount3 -uz {shown}` or, as root, \
             `umount -l {shown}`"
        )
    })
}

fn is_mounted(path: &Path) -> Result<bool> {
    Ok(mount_at(&read_mounts()?, path).is_some())
}

/// `nimbus unmount MOUNTPOINT`: refuses anything that is not a Nimbus
/// mount, unmounts with `fusermount3 -u` when installed (else
/// `umount(2)`), waits until the mount table no longer lists it, and then
/// until the process that served it has exited (it flushes, lets uploads
/// drain briefly and releases its cache dir), so that mounting the same
/// cache dir again right away works. Both waits share [`MOUNT_WAIT`].
pub fn unmount(path: &Path) -> Result<()> {
    if let Err(e) = fs::symlink_metadata(path) {
        if e.kind() == io::ErrorKind::NotFound {
            bail!("{} does not exist", path.display());
        }
    }
    let abs = absolute_no_follow(path)?;
    let mounts = read_mounts()?;
    match mount_at(&mounts, &abs) {
        Some(m) if m.is_nimbus() => {}
        Some(m) => bail!(
            "{} is not a nimbus mount (it is a {} mount of {})",
            abs.display(),
            m.fstype,
            m.source
        ),
        None => match mountinfo::nimbus_mount_containing(&mounts, &abs) {
            Some(m) => bail!(
                "{} is not a mount point; the nimbus mount containing it is {}",
                abs.display(),
                m.mount_point.display()
            ),
            None => bail!(
                "{} is not a nimbus mount (nothing is mounted there)",
                abs.display()
            ),
        },
    }

    // Found while still mounted (the mount names its pid in its status);
    // held as a pidfd so that a recycled pid cannot fool the wait.
    let server = MountProcess::of(&abs);
    let busy = || {
        anyhow!(
            "mount point {} is busy (a program is using it; close it and try again)",
            abs.display()
        )
    };
    let mut done = false;
    if let Some(fusermount) = find_in_path("fusermount3") {
        let out = Command::new(&fusermount)
            .arg("-u")
            .arg(&abs)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", fusermount.display()))?;
        if out.status.success() {
            done = true;
        } else {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if msg.contains("busy") {
                return Err(busy());
            }
            // fusermount3 refuses mounts it did not make (e.g. made by root
            // with mount(2)); root can still unmount them directly.
            if !nix::unistd::geteuid().is_root() {
                bail!("cannot unmount {}: {}", abs.display(), msg);
            }
            tracing::debug!("fusermount3 failed ({msg}); trying umount(2)");
        }
    }
    if !done {
        match nix::mount::umount(&abs) {
            Ok(()) => {}
            Err(nix::errno::Errno::EBUSY) => return Err(busy()),
            Err(nix::errno::Errno::EPERM) => bail!(
                "cannot unmount {}: not permitted (install fuse3 for fusermount3, or run as root)",
                abs.display()
            ),
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| format!("cannot unmount {}", abs.display()))
            }
        }
    }

    let deadline = Instant::now() + MOUNT_WAIT;
    while is_mounted(&abs)? {
        if Instant::now() >= deadline {
            bail!(
                "{} is still mounted {} s after unmounting",
                abs.display(),
                MOUNT_WAIT.as_secs()
            );
        }
        std::thread::sleep(POLL);
    }
    if let Some(process) = server {
        if !process.wait_exit(deadline) {
            bail!(
                "{} is unmounted, but its mount process {} is still running after {} s \
                 (still flushing or uploading; its cache dir stays in use until it exits)",
                abs.display(),
                process.pid,
                MOUNT_WAIT.as_secs()
            );
        }
    }
    Ok(())
}

/// The process serving a mount, to wait for after unmounting it.
struct MountProcess {
    pid: u32,
    /// A pidfd (`pidfd_open(2)`), or `None` where the kernel has none
    /// (then `/proc/PID` is polled).
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl MountProcess {
    /// The process serving the mount at `mountpoint`, from the `pid` of
    /// its `user.nimbus.status`. `None` if it does not say (an older
    /// mount, or one not responding) or is already gone.
    fn of(mountpoint: &Path) -> Option<MountProcess> {
        use std::os::fd::FromRawFd;
        let raw = super::xattr::get(mountpoint, super::xattr::STATUS_XATTR).ok()?;
        let status: super::xattr::MountStatus = serde_json::from_slice(&raw).ok()?;
        let pid = status.pid?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new file
        // descriptor or -1; it touches no memory of ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd >= 0 {
            // SAFETY: `fd` was just returned to us and is owned by no one else.
            let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
            return Some(MountProcess {
                pid,
                pidfd: Some(pidfd),
            });
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => None,
            _ => Some(MountProcess { pid, pidfd: None }),
        }
    }

    /// Waits until the process has exited (a zombie counts as exited);
    /// false if `deadline` passes first.
    fn wait_exit(&self, deadline: Instant) -> bool {
        use std::os::fd::AsRawFd;
        if let Some(fd) = &self.pidfd {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
                // SAFETY: one valid pollfd for the duration of the call.
                match unsafe { libc::poll(&mut pfd, 1, ms) } {
                    n if n > 0 => return true,
                    0 => return false,
                    _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                    _ => break, // fall back to /proc
                }
            }
        }
        while process_running(self.pid) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
        true
    }
}

/// Whether `pid` names a process that has not exited (not a zombie).
fn process_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// An executable named `name` in `$PATH` (or the usual system folders).
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_args_drop_daemon_and_keep_the_rest() {
        let opts = MountOptions {
            mountpoint: "/m".into(),
            server: Some("http://h:1".into()),
            cache_dir: Some("/c".into()),
            cache_size: 1024,
            allow_other: true,
            read_only: false,
            keep_ids: true,
            suid: false,
            dev: true,
            fsync: FsyncMode::Remote,
        };
        let a: Vec<String> = child_args(&opts)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a,
            [
                "mount",
                "/m",
                "--server",
                "http://h:1",
                "--cache-dir",
                "/c",
                "--cache-size",
                "1024",
                "--allow-other",
                "--keep-ids",
                "--dev",
                "--fsync",
                "remote"
            ]
        );
    }

    #[test]
    fn mountpoint_checks() {
        let t = tempfile::tempdir().unwrap();
        let e = check_mountpoint(&t.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        fs::write(t.path().join("f"), b"").unwrap();
        let e = check_mountpoint(&t.path().join("f")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert_eq!(
            check_mountpoint(t.path()).unwrap(),
            t.path().canonicalize().unwrap()
        );
    }

    #[test]
    fn unmount_refuses_non_mounts() {
        let t = tempfile::tempdir().unwrap();
        let e = unmount(t.path()).unwrap_err();
        assert!(e.to_string().contains("is not a nimbus mount"), "{e}");
        let e = unmount(Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("is not a nimbus mount"), "{e}");
        let e = unmount(&t.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn running_processes() {
        assert!(process_running(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped yet: a zombie counts as finished.
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_running(pid) {
            assert!(Instant::now() < deadline, "true(1) did not exit");
            std::thread::sleep(POLL);
        }
        child.wait().unwrap();
        assert!(!process_running(pid));
    }

    #[test]
    fn last_line_of_log() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("log");
        fs::write(&p, "old\n--- header\nINFO x\nnimbus: mount point busy\n\n").unwrap();
        assert_eq!(last_log_line(&p, 4).unwrap(), "mount point busy");
        assert_eq!(last_log_line(&p, 1000), None);
    }
}
