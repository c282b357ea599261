//! `nimbus status` and `nimbus sync --wait`: both read what the mount
//! publishes in extended attributes (see [`super::xattr`]).

use super::mountinfo::{nimbus_mount_containing, nimbus_mounts, read_mounts};
use super::progress::Progress;
use super::size::format_bytes;
use super::xattr::{self, MountStatus, Pending, PENDING_XATTR, PULL_XATTR, STATUS_XATTR};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An error whose message the command already printed; `main` exits 1
/// without printing it again.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AlreadyReported(pub String);

/// How often `sync --wait` looks.
const SYNC_POLL: Duration = Duration::from_millis(100);

/// The Nimbus mount root for `path`, and `path` made absolute. Without a
/// path: the mount containing the current directory, else the only Nimbus
/// mount there is.
pub(super) fn locate(path: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    let mounts = read_mounts()?;
    if let Some(p) = path {
        let abs = p.canonicalize().map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => anyhow!("{} does not exist", p.display()),
            Some(libc::ENOTCONN) => anyhow!(
                "{} is on a nimbus mount that is not responding (transport endpoint is not \
                 connected); run `nimbus unmount` on it",
                p.display()
            ),
            _ => anyhow!(e).context(format!("cannot resolve {}", p.display())),
        })?;
        let root = nimbus_mount_containing(&mounts, &abs)
            .with_context(|| format!("{} is not inside a nimbus mount", abs.display()))?;
        return Ok((root.mount_point.clone(), abs));
    }
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(m) = nimbus_mount_containing(&mounts, &cwd) {
            return Ok((m.mount_point.clone(), m.mount_point.clone()));
        }
    }
    match nimbus_mounts(&mounts).as_slice() {
        [] => bail!("no nimbus mount found (start one with `nimbus mount DIR`)"),
        [one] => Ok((one.mount_point.clone(), one.mount_point.clone())),
        several => bail!(
            "there are several nimbus mounts ({}); give a path inside one",
            several
                .iter()
                .map(|m| m.mount_point.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Reads one of our JSON attributes with errors that say what to do.
pub(super) fn read_attr(path: &Path, name: &str) -> Result<Vec<u8>> {
    xattr::get(path, name).map_err(|e| match e.raw_os_error() {
        Some(libc::ENODATA) => anyhow!(
            "{} has no {name} attribute (is this mount served by an older nimbus?)",
            path.display()
        ),
        Some(libc::ENOTCONN) => anyhow!(
            "the nimbus mount at {} is not responding (transport endpoint is not connected); \
             run `nimbus unmount` on it",
            path.display()
        ),
        Some(libc::ENOTSUP) => anyhow!(
            "{} does not support extended attributes (is it on a nimbus mount?)",
            path.display()
        ),
        _ => anyhow!(e).context(format!("cannot read {name} of {}", path.display())),
    })
}

pub(super) fn parse_attr<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
    name: &str,
) -> Result<T> {
    serde_json::from_slice(bytes)
        .with_context(|| format!("{name} of {} is not valid JSON", path.display()))
}

fn read_pending(path: &Path) -> Result<Pending> {
    let raw = read_attr(path, PENDING_XATTR)?;
    parse_attr(&raw, path, PENDING_XATTR)
}

/// `nimbus status [PATH] [--json]`.
pub fn status(path: Option<&Path>, json: bool) -> Result<()> {
    let (root, target) = locate(path)?;
    let raw = read_attr(&root, STATUS_XATTR)?;
    let status: MountStatus = parse_attr(&raw, &root, STATUS_XATTR)?;
    let pending = match path {
        Some(_) => Some(read_pending(&target)?),
        None => None,
    };
    if json {
        // The status attribute as published, plus where it came from.
        let mut obj: serde_json::Map<String, serde_json::Value> =
            parse_attr(&raw, &root, STATUS_XATTR)?;
        obj.insert("mount".into(), root.display().to_string().into());
        if let Some(p) = &pending {
            obj.insert("path".into(), target.display().to_string().into());
            obj.insert("pending".into(), serde_json::to_value(p)?);
        }
        println!("{}", serde_json::Value::Object(obj));
    } else {
        print!("{}", render_status(&root, &status));
        if let Some(p) = &pending {
            print!("{}", render_pending(&root, &target, p));
        }
    }
    Ok(())
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The human form of a mount's status.
pub fn render_status(root: &Path, s: &MountStatus) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<11} {v}\n"));
    line(&mut out, "mount:", root.display().to_string());
    let conn = match (s.connection.as_str(), &s.connection_reason) {
        ("", _) => "unknown".to_string(),
        (c, Some(reason)) => format!("{c}: {reason}; uploads paused"),
        ("unauthorized", None) => "unauthorized: log in again with `nimbus login`".to_string(),
        (c, None) => c.to_string(),
    };
    line(&mut out, "server:", format!("{} ({conn})", s.server));
    line(&mut out, "device:", s.device.clone());
    line(&mut out, "push:", render_push(s.push.as_ref()));
    line(
        &mut out,
        "pending:",
        format!(
            "{} ({})",
            plural(s.pending_ops, "operation", "operations"),
            format_bytes(s.pending_bytes)
        ),
    );
    line(
        &mut out,
        "last sync:",
        s.last_sync.clone().unwrap_or_else(|| "never".into()),
    );
    line(
        &mut out,
        "conflicts:",
        match s.conflicts {
            0 => "0".to_string(),
            n => format!("{n} (list them with `nimbus conflicts`)"),
        },
    );
    if s.waiting_remote > 0 {
        line(
            &mut out,
            "waiting:",
            format!(
                "{} from the server (their folder has not arrived yet)",
                plural(s.waiting_remote, "change", "changes")
            ),
        );
    }
    line(
        &mut out,
        "cache:",
        format!(
            "{} used of {}",
            format_bytes(s.cache_bytes),
            format_bytes(s.cache_limit)
        ),
    );
    if !s.failed.is_empty() {
        line(
            &mut out,
            "failed:",
            plural(s.failed.len() as u64, "operation", "operations"),
        );
        for f in &s.failed {
            out.push_str(&format!("  {}: {}\n", f.path, f.error));
        }
    }
    out
}

/// The push channel, on one line.
fn render_push(p: Option<&xattr::PushInfo>) -> String {
    let Some(p) = p else {
        return "off (polling the server every second)".into();
    };
    let last = match p.last_notification_age_ms {
        Some(ms) => format!("last notification {} ago", format_age(ms)),
        None => "no notification yet".into(),
    };
    match (p.connected, &p.error) {
        (true, _) => format!("connected ({last})"),
        (false, Some(e)) => format!("disconnected: {e}; polling every second ({last})"),
        (false, None) => format!("connecting; polling every second ({last})"),
    }
}

/// `ms` as a short age: `850 ms`, `12 s`, `5 min`, `3 h`.
fn format_age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=119_999 => format!("{} s", ms / 1000),
        120_000..=7_199_999 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

/// The human form of what is pending below `target`.
pub fn render_pending(root: &Path, target: &Path, p: &Pending) -> String {
    let rel = target.strip_prefix(root).unwrap_or(target);
    let shown = if rel.as_os_str().is_empty() {
        "the mount".to_string()
    } else {
        rel.display().to_string()
    };
    let mut out = format!(
        "pending below {shown}: {} ({})\n",
        plural(p.count, "operation", "operations"),
        format_bytes(p.bytes)
    );
    for path in &p.paths {
        out.push_str(&format!("  {path}\n"));
    }
    out
}

/// Asks the mount for a pull that starts now (`user.nimbus.pull`) and
/// returns the number to wait for in the status's `pull_done`.
fn request_pull(root: &Path) -> Result<u64> {
    xattr::set(root, PULL_XATTR, b"1").map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::ENOTSUP) => anyhow!(
            "the mount at {} cannot be asked to pull (is it served by an older nimbus?)",
            root.display()
        ),
        _ => anyhow!(e).context(format!("cannot ask {} to pull", root.display())),
    })?;
    let raw = read_attr(root, STATUS_XATTR)?;
    let status: MountStatus = parse_attr(&raw, root, STATUS_XATTR)?;
    Ok(status.pull_requested)
}

/// With `--pull`: true once a pull that started after request `ticket`
/// is complete; else a note on how far this device is.
fn pulled(root: &Path, ticket: Option<u64>) -> Result<(bool, Option<String>)> {
    let Some(ticket) = ticket else {
        return Ok((true, None));
    };
    let raw = read_attr(root, STATUS_XATTR)?;
    let s: MountStatus = parse_attr(&raw, root, STATUS_XATTR)?;
    if s.pull_done >= ticket {
        return Ok((true, None));
    }
    let mut note = format!(
        "changes from the server (this device is at cursor {}",
        s.cursor
    );
    if let Some(p) = s.push.as_ref().filter(|p| p.server_cursor > s.cursor) {
        note.push_str(&format!(", the server announced {}", p.server_cursor));
    }
    note.push(')');
    Ok((false, Some(note)))
}

/// `nimbus sync --wait [PATH] [--pull] [--timeout D]`: returns when
/// nothing below PATH is pending and, with `pull`, once this device has
/// applied every change the server had when the command started (a pull
/// that started after the command's request reached the end of the
/// server's log); on timeout prints what is missing and fails.
pub fn sync_wait(path: Option<&Path>, pull: bool, timeout: Duration) -> Result<()> {
    let (root, target) = locate(path)?;
    let ticket = if pull {
        Some(request_pull(&root)?)
    } else {
        None
    };
    let deadline = Instant::now() + timeout;
    let mut progress = Progress::default();
    loop {
        let asked = Instant::now();
        let p = read_pending(&target)?;
        let (pulled, pull_note) = pulled(&root, ticket)?;
        // The mount sums what is pending at every read (O(pending nodes)):
        // with many pending, reading often would slow the very uploads
        // this waits for. Wait at least ten times as long as the read took.
        let poll = SYNC_POLL.max(asked.elapsed() * 10);
        if p.count == 0 && pulled {
            progress.finish();
            return Ok(());
        }
        if p.count > 0 {
            progress.show(&p, connection_note(&root).as_deref());
        } else if let Some(note) = &pull_note {
            progress.show_pull(note, connection_note(&root).as_deref());
        }
        // Only refused changes left: waiting cannot help.
        if p.count > 0 && p.count == p.failed {
            progress.finish();
            let msg = format!(
                "the server refused {} (see `nimbus status`)",
                plural(p.failed, "change", "changes")
            );
            eprintln!("nimbus: {msg}");
            for path in &p.paths {
                eprintln!("  {path}");
            }
            return Err(AlreadyReported(msg).into());
        }
        if Instant::now() >= deadline {
            progress.finish();
            let mut msg = if p.count > 0 {
                format!(
                    "still pending: {} ({} bytes)",
                    plural(p.count, "operation", "operations"),
                    p.bytes
                )
            } else {
                "nothing pending here".to_string()
            };
            if let Some(note) = pull_note {
                msg.push_str(&format!("; not yet applied: {note}"));
            }
            if let Some(note) = connection_note(&root) {
                msg.push_str(&format!("; {note}"));
            }
            eprintln!("nimbus: {msg}");
            for path in &p.paths {
                eprintln!("  {path}");
            }
            return Err(AlreadyReported(msg).into());
        }
        std::thread::sleep(poll.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// Why nothing moves, when the status says so (best effort).
fn connection_note(root: &Path) -> Option<String> {
    let raw = xattr::get(root, STATUS_XATTR).ok()?;
    let s: MountStatus = serde_json::from_slice(&raw).ok()?;
    match (s.connection.as_str(), s.connection_reason) {
        ("offline", _) => Some(format!("the server {} is unreachable", s.server)),
        (_, Some(reason)) => Some(format!("uploads paused: {reason}")),
        ("unauthorized", None) => Some("the server refuses this device; log in again".into()),
        _ => None,
    }
}

/// Is `e` an [`AlreadyReported`] error?
pub fn is_already_reported(e: &anyhow::Error) -> bool {
    e.downcast_ref::<AlreadyReported>().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status() {
        let s = MountStatus {
            connection: "online".into(),
            connection_reason: None,
            server: "http://h:1".into(),
            device: "laptop".into(),
            pending_ops: 1,
            pending_bytes: 2048,
            last_sync: None,
            conflicts: 0,
            waiting_remote: 0,
            cache_bytes: 0,
            cache_limit: 10 << 30,
            failed: vec![xattr::FailedOp {
                path: "a/b".into(),
                error: "bad".into(),
            }],
            pid: Some(42),
            fuse_requests: 7,
            cursor: 3,
            push: Some(xattr::PushInfo {
                connected: true,
                server_cursor: 3,
                last_notification: Some("2026-12-05T10:00:00.000Z".into()),
                last_notification_age_ms: Some(12_500),
                error: None,
            }),
            pull_requested: 0,
            pull_done: 0,
        };
        let out = render_status(Path::new("/m"), &s);
        assert!(out.contains("server:     http://h:1 (online)"), "{out}");
        assert!(out.contains("pending:    1 operation (2 KiB)"), "{out}");
        assert!(out.contains("last sync:  never"), "{out}");
        assert!(out.contains("conflicts:  0\n"), "{out}");
        let two = MountStatus {
            conflicts: 2,
            ..s.clone()
        };
        assert!(render_status(Path::new("/m"), &two)
            .contains("conflicts:  2 (list them with `nimbus conflicts`)"));
        assert!(out.contains("0 B used of 10 GiB"), "{out}");
        assert!(out.contains("  a/b: bad"), "{out}");
        assert!(
            out.contains("push:       connected (last notification 12 s ago)"),
            "{out}"
        );
        let polling = MountStatus {
            push: None,
            ..s.clone()
        };
        assert!(render_status(Path::new("/m"), &polling).contains("push:       off"));
        let down = MountStatus {
            push: Some(xattr::PushInfo {
                error: Some("connection refused".into()),
                ..Default::default()
            }),
            ..s
        };
        let out = render_status(Path::new("/m"), &down);
        assert!(
            out.contains(
                "disconnected: connection refused; polling every second (no notification yet)"
            ),
            "{out}"
        );
    }

    #[test]
    fn renders_pending() {
        let p = Pending {
            count: 2,
            bytes: 10,
            failed: 0,
            paths: vec!["d/x".into(), "d/y".into()],
        };
        let out = render_pending(Path::new("/m"), Path::new("/m/d"), &p);
        assert_eq!(out, "pending below d: 2 operations (10 B)\n  d/x\n  d/y\n");
        let out = render_pending(Path::new("/m"), Path::new("/m"), &p);
        assert!(out.starts_with("pending below the mount:"));
    }

    #[test]
    fn status_outside_a_mount_is_clear() {
        let t = tempfile::tempdir().unwrap();
        let e = status(Some(t.path()), false).unwrap_err();
        assert!(
            e.to_string().contains("is not inside a nimbus mount"),
            "{e}"
        );
        let e = sync_wait(Some(&t.path().join("nope")), false, Duration::ZERO).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
