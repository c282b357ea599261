//! Extended attributes of the mount (DESIGN §5):
//! - `user.nimbus.status` on the root: JSON with connection state, pending
//!   operations and bytes, last sync, conflicts, cache use and limit, and
//!   the pid of the process serving the mount.
//! - `user.nimbus.pending` on any node: JSON `{count, bytes, failed,
//!   paths}` for the nodes at or below it with changes the server does not
//!   have ([`super::PendingSummary`], what `nimbus sync --wait` polls).
//! - `user.nimbus.state` on any node: `failed` when the server refused its
//!   change, `pending` when it has local changes not yet uploaded, else
//!   `cached` / `partial` / `placeholder` by how much of its content is
//!   local (folders: `cached`).
//!
//! Other attributes are not stored yet: setting one fails with ENOTSUP
//! rather than pretending it was kept.

use super::error::{VfsError, VfsResult};
use super::meta::ROOT_INO;
use super::Vfs;
use crate::protocol::NodeKind;

pub const STATUS: &str = "user.nimbus.status";
pub const PENDING: &str = "user.nimbus.pending";
pub const STATE: &str = "user.nimbus.state";

impl Vfs {
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>> {
        let inode = self.meta.inode_required(ino)?;
        match name {
            n if n == STATUS.as_bytes() && ino == ROOT_INO => Ok(self.status_json().into_bytes()),
            n if n == PENDING.as_bytes() => {
                let p = self.pending_below(ino, 50)?;
                Ok(serde_json::to_vec(&p).map_err(|e| {
                    VfsError::Store(super::error::Cause::from_error("status JSON", e))
                })?)
            }
            n if n == STATE.as_bytes() => Ok(self.state_of(&inode).as_bytes().to_vec()),
            _ => Err(VfsError::NoAttribute),
        }
    }

    /// The extended attributes stored on `ino`: none yet. The
    /// `user.nimbus.*` attributes are computed, readable by name, and not
    /// listed, so that xattr-preserving copies (`rsync -X`, `cp -a`, `tar
    /// --xattrs`) neither fail setting them on a copy in the mount (they
    /// are read-only) nor carry stale values out of it.
    pub fn listxattr(&self, ino: u64) -> VfsResult<Vec<&'static str>> {
        self.meta.inode_required(ino)?;
        Ok(Vec::new())
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], _value: &[u8]) -> VfsResult<()> {
        self.meta.inode_required(ino)?;
        if name.starts_with(b"user.nimbus.") {
            return Err(VfsError::NotPermitted("this attribute is read-only"));
        }
        Err(VfsError::NotSupported(
            "extended attributes are not stored yet",
        ))
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> VfsResult<()> {
        self.meta.inode_required(ino)?;
        if name.starts_with(b"user.nimbus.") {
            return Err(VfsError::NotPermitted("this attribute is read-only"));
        }
        Err(VfsError::NoAttribute)
    }

    fn state_of(&self, inode: &super::meta::Inode) -> &'static str {
        if self.meta.journal().is_quarantined(inode.ino) {
            return "failed";
        }
        if inode.has_local_changes() || self.is_journaled(inode.ino) {
            return "pending";
        }
        if inode.kind != NodeKind::File {
            return "cached";
        }
        let Ok(Some(c)) = self.meta.content(inode.ino) else {
            return "cached";
        };
        let total = c.manifest.chunks.len();
        let local = c
            .manifest
            .chunks
            .iter()
            .filter(|c| self.chunks.is_local(&c.id))
            .count();
        match local {
            0 if total > 0 => "placeholder",
            n if n == total => "cached",
            _ => "partial",
        }
    }

    /// True while a journal record of `ino` waits to be uploaded.
    pub fn is_journaled(&self, ino: u64) -> bool {
        self.meta.journal().has_records(ino)
    }

    pub fn status_json(&self) -> String {
        let pending = self.pending_below(ROOT_INO, 0).unwrap_or_default();
        let st = self.status.snapshot();
        let last_sync = st.last_sync_unix.map(|s| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.max(0) as u64),
            )
            .to_string()
        });
        let failed: Vec<serde_json::Value> = self
            .meta
            .journal()
            .quarantined(self.meta.kv().as_ref())
            .unwrap_or_default()
            .into_iter()
            .map(|(_, q)| serde_json::json!({"path": q.path, "error": q.reason}))
            .collect();
        serde_json::json!({
            // Lets `nimbus unmount` wait until this process has finished.
            "pid": std::process::id(),
            "connection": st.connection.name(),
            "connection_reason": st.connection.reason(),
            "server": st.server,
            "device": self.device_name,
            "pending_ops": pending.count,
            "pending_bytes": pending.bytes,
            "last_sync": last_sync,
            "conflicts": st.conflicts,
            "waiting_remote": st.waiting_remote,
            "cache_bytes": self.chunks.used_bytes(),
            "cache_limit": self.chunks.limit(),
            "failed": failed,
        })
        .to_string()
    }
}
