//! Reading extended attributes (`lgetxattr(2)`), and the JSON the mount
//! publishes through them.

use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `user.nimbus.status` on the mount root.
pub const STATUS_XATTR: &str = "user.nimbus.status";
/// `user.nimbus.pending` on any file or folder of the mount.
pub const PENDING_XATTR: &str = "user.nimbus.pending";
/// `user.nimbus.pull` on the mount root (write-only): asks for a pull.
pub const PULL_XATTR: &str = "user.nimbus.pull";

/// `user.nimbus.conflicts` on the mount root: the conflict copies.
pub const CONFLICTS_XATTR: &str = "user.nimbus.conflicts";
/// `user.nimbus.conflict` on a conflict copy: its mark; removing it keeps
/// the copy as an ordinary file.
pub const CONFLICT_XATTR: &str = "user.nimbus.conflict";

/// Removes attribute `name` of `path` (not following a final symlink).
pub fn remove(path: &Path, name: &str) -> io::Result<()> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))?;
    // SAFETY: both strings are NUL-terminated.
    let r = unsafe { libc::lremovexattr(cpath.as_ptr(), cname.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets attribute `name` of `path` to `value` (not following a final
/// symlink).
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))?;
    // SAFETY: both strings are NUL-terminated; `value` is readable for
    // its length.
    let r = unsafe {
        libc::lsetxattr(
            cpath.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Reads attribute `name` of `path` (not following a final symlink).
pub fn get(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))?;
    loop {
        // SAFETY: both strings are NUL-terminated; a null buffer with size 0
        // asks for the size.
        let size =
            unsafe { libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize + 1];
        // SAFETY: `buf` is writable for `buf.len()` bytes.
        let n = unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew between the two calls
            }
            return Err(e);
        }
        buf.truncate(n as usize);
        return Ok(buf);
    }
}

/// The mount's status (`user.nimbus.status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MountStatus {
    /// `online`, `offline`, `unauthorized` or `misconfigured`.
    pub connection: String,
    /// Why uploads pause (`unauthorized`, `misconfigured`).
    pub connection_reason: Option<String>,
    pub server: String,
    pub device: String,
    pub pending_ops: u64,
    pub pending_bytes: u64,
    /// RFC 3339, or `None` before the first sync.
    pub last_sync: Option<String>,
    pub conflicts: u64,
    /// Pulled changes waiting for a folder this device does not have yet.
    pub waiting_remote: u64,
    pub cache_bytes: u64,
    pub cache_limit: u64,
    pub failed: Vec<FailedOp>,
    /// The process serving the mount (`None` from mounts older than this
    /// field).
    pub pid: Option<u32>,
    /// Kernel requests the mount has served since it started (0 from
    /// mounts older than this field); benchmarks count per-file costs
    /// with it.
    pub fuse_requests: u64,
    /// The change-log cursor this device has applied up to.
    pub cursor: u64,
    /// The push channel; `None` when the mount polls (no push, or a
    /// mount older than this field).
    pub push: Option<PushInfo>,
    /// The last `sync --wait --pull` request number handed out.
    pub pull_requested: u64,
    /// The highest request number a complete pull answered.
    pub pull_done: u64,
}

/// The push channel in [`MountStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PushInfo {
    pub connected: bool,
    /// The newest cursor the server announced.
    pub server_cursor: u64,
    /// RFC 3339, or `None` before the first notification.
    pub last_notification: Option<String>,
    /// Milliseconds since the last notification, when the status was read.
    pub last_notification_age_ms: Option<u64>,
    /// Why the last connection attempt failed.
    pub error: Option<String>,
}

/// An operation the server refused for good.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailedOp {
    pub path: String,
    pub error: String,
}

/// What is not yet uploaded below a path (`user.nimbus.pending`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pending {
    pub count: u64,
    pub bytes: u64,
    /// Of `count`, nodes whose only changes the server refused.
    #[serde(default)]
    pub failed: u64,
    /// Relative to the mount root; at most 50.
    pub paths: Vec<String>,
}

/// A conflict copy (`user.nimbus.conflict`, and each entry of
/// `user.nimbus.conflicts` with its `path`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConflictInfo {
    /// The copy, relative to the mount root (list entries only).
    pub path: Option<String>,
    /// Node id of the original.
    pub of: String,
    /// The original, relative to the mount root; `None` when deleted.
    pub of_path: Option<String>,
    /// The device whose edit the copy keeps.
    pub device: String,
    /// When the server received that edit (RFC 3339, UTC).
    pub at: String,
}

/// The conflict copies of a mount (`user.nimbus.conflicts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConflictList {
    /// How many there are.
    pub count: u64,
    /// Them, or as many as fit in one attribute value.
    pub copies: Vec<ConflictInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_attribute_is_an_os_error() {
        let t = tempfile::tempdir().unwrap();
        let e = get(t.path(), "user.nimbus.nothing-here").unwrap_err();
        // ENODATA on filesystems with user xattrs, ENOTSUP on others.
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENODATA) | Some(libc::ENOTSUP)),
            "{e}"
        );
    }

    #[test]
    fn parses_the_contract_shapes() {
        let s: MountStatus = serde_json::from_str(
            r#"{"connection":"online","server":"http://h","device":"d","pending_ops":2,
                "pending_bytes":10,"last_sync":null,"conflicts":1,"cache_bytes":5,
                "cache_limit":100,"failed":[{"path":"a/b","error":"bad name"}]}"#,
        )
        .unwrap();
        assert_eq!(s.pending_ops, 2);
        assert_eq!(s.failed[0].path, "a/b");
        let p: Pending =
            serde_json::from_str(r#"{"count":1,"bytes":3,"paths":["a.txt"]}"#).unwrap();
        assert_eq!(p.paths, vec!["a.txt".to_string()]);
    }

    #[test]
    fn fuse_requests_round_trips_and_is_zero_from_older_mounts() {
        let s = MountStatus {
            fuse_requests: 42,
            ..MountStatus::default()
        };
        let back: MountStatus = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.fuse_requests, 42);
        let old: MountStatus = serde_json::from_str(r#"{"connection":"online"}"#).unwrap();
        assert_eq!(old.fuse_requests, 0);
    }
}
