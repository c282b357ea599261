//! Extended attributes of the mount (DESIGN §5):
//! - `user.nimbus.status` on the root: JSON with connection state, pending
//!   operations and bytes, last sync, conflicts, cache use and limit, and
//!   the pid of the process serving the mount.
//! - `user.nimbus.pending` on any node: JSON `{count, bytes, failed,
//!   paths}` for the nodes at or below it with changes the server does not
//!   have ([`super::PendingSummary`], what `nimbus sync --wait` polls).
//! - `user.nimbus.state` on any node, the first that applies: `failed`
//!   when the server refused its change, `pending` when it has local
//!   changes not yet uploaded, `conflict` when it is a conflict copy not
//!   yet renamed, resolved or deleted, else `cached` / `partial` /
//!   `placeholder` by how much of its content is local (folders:
//!   `cached`). `failed` and `pending` come first because they say what
//!   this device still has to do for the node (and pass, or need action
//!   of their own); a conflict copy reads `conflict` again once its
//!   changes are uploaded.
//! - `user.nimbus.conflicts` on the root and `user.nimbus.conflict` on any
//!   node (read; removing the latter keeps a conflict copy as an ordinary
//!   file): see [`super::conflicts`].
//! - `user.nimbus.pull` on the root, write-only: setting it (any value)
//!   asks the change follower for a pull that starts now; the status
//!   shows the request's number in `pull_requested` and, once such a
//!   pull reached the end of the server's log, in `pull_done` (what
//!   `nimbus sync --wait --pull` waits for). Nothing is stored.
//!
//!
//! # Stored attributes
//! `user.*`, `trusted.*` and `security.*` are stored per node (the `x`
//! keys of [`super::meta`]) and synced in `NodeMeta::xattrs`, with the rules
//! of [`crate::protocol::Xattrs`] answered as ext4 answers them:
//! - names: empty or over 255 bytes → ERANGE; `system.*` (POSIX ACLs: the
//!   mount has no ACL support) and unknown prefixes → EOPNOTSUPP; not
//!   UTF-8 or nothing after the prefix → EINVAL; `user.nimbus.*` is
//!   reserved: set/remove → EPERM (removing `user.nimbus.conflict` aside),
//!   unknown ones read as ENODATA;
//! - values over 64 KiB → E2BIG; names plus values of a node over 4 KiB →
//!   ENOSPC; empty values are kept;
//! - `XATTR_CREATE` on an existing one → EEXIST, `XATTR_REPLACE` or
//!   remove of a missing one → ENODATA;
//! - `user.*` on a symlink or special node: set/remove → EPERM, get →
//!   ENODATA (the kernel's rule for every file system);
//! - `trusted.*` only for a privileged caller (uid 0): others get EPERM on
//!   set/remove, ENODATA on get, and do not see them listed. (With FUSE the
//!   kernel checks CAP_SYS_ADMIN itself before asking; listing is ours.)
//!   File permission bits (`user.*` needs write access to set, read
//!   access to get) are checked by the kernel (`default_permissions`).
//!
//! A change commits the value, the inode's new ctime and its journal
//! record in one batch, so it uploads like a chmod; a remote change is
//! adopted by `reconcile`.

use super::error::{VfsError, VfsResult};
use super::meta::ROOT_INO;
use super::{Caller, Vfs};
use crate::protocol::{
    parse_xattr_name, NodeKind, Timestamp, XattrError, XattrNamespace, Xattrs,
    XATTR_RESERVED_PREFIX, XATTR_SIZE_MAX, XATTR_TOTAL_MAX,
};

pub const STATUS: &str = "user.nimbus.status";
pub const PENDING: &str = "user.nimbus.pending";
pub const STATE: &str = "user.nimbus.state";
pub const PULL: &str = "user.nimbus.pull";
pub const CONFLICTS: &str = "user.nimbus.conflicts";
pub const CONFLICT: &str = "user.nimbus.conflict";

/// How `setxattr` may treat an existing attribute (`XATTR_CREATE`,
/// `XATTR_REPLACE`; both: create's check first, as ext4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XattrFlags {
    /// Fail with EEXIST if the attribute exists.
    pub create: bool,
    /// Fail with ENODATA if it does not.
    pub replace: bool,
}

impl XattrFlags {
    /// From the flags of `setxattr(2)`; other bits → EINVAL.
    pub fn from_bits(flags: i32) -> VfsResult<Self> {
        const CREATE: i32 = 1;
        const REPLACE: i32 = 2;
        if flags & !(CREATE | REPLACE) != 0 {
            return Err(VfsError::InvalidArgument("unknown setxattr flags"));
        }
        Ok(XattrFlags {
            create: flags & CREATE != 0,
            replace: flags & REPLACE != 0,
        })
    }
}

/// A privileged caller (what `trusted.*` needs).
fn privileged(caller: Caller) -> bool {
    caller.uid == 0
}

/// The stored name `name` is, checked against the rules that do not
/// depend on the node (see the module docs for the errno of each).
fn stored_name(name: &[u8]) -> VfsResult<(XattrNamespace, &str)> {
    parse_xattr_name(name).map_err(|e| match e {
        XattrError::NameLength => VfsError::Range,
        XattrError::InvalidName(_) => VfsError::InvalidArgument("invalid attribute name"),
        XattrError::Unsupported(_) => {
            VfsError::NotSupported("only user., trusted. and security. attributes are stored")
        }
        XattrError::Reserved(_) => VfsError::NotPermitted("this attribute is read-only"),
        XattrError::NotForKind { .. } => {
            VfsError::NotPermitted("user attributes are for files and folders only")
        }
        XattrError::ValueTooLarge { .. } => {
            VfsError::TooLarge("attribute values are at most 64 KiB")
        }
        XattrError::TotalTooLarge { .. } => {
            VfsError::NoSpace("a node holds at most 4 KiB of extended attributes")
        }
    })
}

impl Vfs {
    /// Attribute `name` of `ino` as a privileged caller sees it (tests,
    /// tools); front ends use [`Vfs::getxattr_as`].
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>> {
        self.getxattr_as(Caller { uid: 0, gid: 0 }, ino, name)
    }

    /// Attribute `name` of `ino` for `caller`: a computed `user.nimbus.*`
    /// one, else a stored one (see the module docs).
    pub fn getxattr_as(&self, caller: Caller, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>> {
        let inode = self.meta.inode_required(ino)?;
        match name {
            n if n == STATUS.as_bytes() && ino == ROOT_INO => {
                return Ok(self.status_json().into_bytes())
            }
            n if n == PENDING.as_bytes() => {
                let p = self.pending_below(ino, 50)?;
                return serde_json::to_vec(&p).map_err(|e| {
                    VfsError::Store(super::error::Cause::from_error("status JSON", e))
                });
            }
            n if n == STATE.as_bytes() => return Ok(self.state_of(&inode).as_bytes().to_vec()),
            n if n == CONFLICTS.as_bytes() && ino == ROOT_INO => return self.conflicts_json(),
            n if n == CONFLICT.as_bytes() => return self.conflict_json(ino),
            n if n.starts_with(XATTR_RESERVED_PREFIX.as_bytes()) => {
                return Err(VfsError::NoAttribute)
            }
            _ => {}
        }
        let (ns, name) = stored_name(name)?;
        if (ns == XattrNamespace::Trusted && !privileged(caller)) || !ns.allowed_on(inode.kind) {
            return Err(VfsError::NoAttribute);
        }
        self.meta.xattr(ino, name)?.ok_or(VfsError::NoAttribute)
    }

    /// The names of the attributes stored on `ino` that `caller` may see
    /// (`trusted.*` only for a privileged one). The `user.nimbus.*`
    /// attributes are computed, readable by name, and not listed, so that
    /// xattr-preserving copies (`rsync -X`, `cp -a`, `tar --xattrs`)
    /// neither fail setting them on a copy in the mount (they are
    /// read-only) nor carry stale values out of it.
    pub fn listxattr_as(&self, caller: Caller, ino: u64) -> VfsResult<Vec<String>> {
        self.meta.inode_required(ino)?;
        Ok(self
            .meta
            .xattrs(ino)?
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| privileged(caller) || !n.starts_with("trusted."))
            .collect())
    }

    /// Sets attribute `name` of `ino` to `value` for `caller`, with the
    /// checks and errno of the module docs; commits it with the inode's
    /// new ctime and a journal record (it uploads like a chmod).
    pub fn setxattr_as(
        &self,
        caller: Caller,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
    ) -> VfsResult<()> {
        if name == PULL.as_bytes() && ino == ROOT_INO {
            // A request, not a value: works on read-only mounts too.
            self.status.request_pull();
            return Ok(());
        }
        let (ns, name) = self.writable_xattr(caller, ino, name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(VfsError::TooLarge("attribute values are at most 64 KiB"));
        }
        self.writable()?;
        let ns_guard = self.meta.lock_ns();
        let mut inode = self.meta.inode_required(ino)?;
        if !ns.allowed_on(inode.kind) {
            return Err(VfsError::NotPermitted(
                "user attributes are for files and folders only",
            ));
        }
        let mut all = self.meta.xattrs(ino)?;
        let exists = all.get(name).is_some();
        if flags.create && exists {
            return Err(VfsError::Exists);
        }
        if flags.replace && !exists {
            return Err(VfsError::NoAttribute);
        }
        all.insert(name.to_string(), value.to_vec());
        if all.total_bytes() > XATTR_TOTAL_MAX {
            return Err(VfsError::NoSpace(
                "a node holds at most 4 KiB of extended attributes",
            ));
        }
        let mut t = self.meta.txn(&ns_guard);
        t.put_xattr(ino, name, value);
        self.xattrs_changed(&mut t, &mut inode)?;
        t.commit()?;
        drop(ns_guard);
        self.journal_notify.notify_one();
        Ok(())
    }

    /// Removes attribute `name` of `ino` for `caller` (ENODATA if it is
    /// not set); committed like [`Vfs::setxattr_as`].
    pub fn removexattr_as(&self, caller: Caller, ino: u64, name: &[u8]) -> VfsResult<()> {
        if name == CONFLICT.as_bytes() {
            // Keeps a conflict copy as an ordinary file (write access to
            // the node is the kernel's check, as for any user attribute).
            return self.clear_conflict(ino);
        }
        let (ns, name) = self.writable_xattr(caller, ino, name)?;
        self.writable()?;
        let ns_guard = self.meta.lock_ns();
        let mut inode = self.meta.inode_required(ino)?;
        if !ns.allowed_on(inode.kind) {
            return Err(VfsError::NotPermitted(
                "user attributes are for files and folders only",
            ));
        }
        if self.meta.xattr(ino, name)?.is_none() {
            return Err(VfsError::NoAttribute);
        }
        let mut t = self.meta.txn(&ns_guard);
        t.remove_xattr(ino, name);
        self.xattrs_changed(&mut t, &mut inode)?;
        t.commit()?;
        drop(ns_guard);
        self.journal_notify.notify_one();
        Ok(())
    }

    /// The checks of a set or remove that need no lock: the node exists,
    /// the name is a stored one, and `caller` may write its namespace.
    fn writable_xattr<'n>(
        &self,
        caller: Caller,
        ino: u64,
        name: &'n [u8],
    ) -> VfsResult<(XattrNamespace, &'n str)> {
        self.meta.inode_required(ino)?;
        let (ns, name) = stored_name(name)?;
        if ns == XattrNamespace::Trusted && !privileged(caller) {
            return Err(VfsError::NotPermitted(
                "trusted attributes need a privileged caller",
            ));
        }
        Ok((ns, name))
    }

    /// An attribute of `inode` changed in `t`: ctime moves and the node is
    /// journaled for upload (attributes travel with its other metadata).
    fn xattrs_changed(
        &self,
        t: &mut super::meta::Txn<'_>,
        inode: &mut super::meta::Inode,
    ) -> VfsResult<()> {
        inode.ctime = Timestamp::now();
        inode.local_rev += 1;
        t.put_inode(inode).journal_upsert(inode, false)?;
        Ok(())
    }

    /// The stored attributes of `ino` (what its next upload carries).
    pub fn xattrs_of(&self, ino: u64) -> VfsResult<Xattrs> {
        self.meta.xattrs(ino)
    }

    fn state_of(&self, inode: &super::meta::Inode) -> &'static str {
        if self.meta.journal().is_quarantined(inode.ino) {
            return "failed";
        }
        if inode.has_local_changes() || self.is_journaled(inode.ino) {
            return "pending";
        }
        if self.meta.conflict(inode.ino).ok().flatten().is_some() {
            return "conflict";
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
        let pulls = self.status.pulls();
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
            // Conflict copies not yet renamed, resolved or deleted.
            "conflicts": self.conflict_copies().map(|c| c.len()).unwrap_or(0),
            "waiting_remote": st.waiting_remote,
            "cache_bytes": self.chunks.used_bytes(),
            "cache_limit": self.chunks.limit(),
            "failed": failed,
            "fuse_requests": self.status.fuse_requests(),
            "cursor": self.cursor().unwrap_or(0),
            "push": st.push.as_ref().map(push_json),
            "pull_requested": pulls.0,
            "pull_done": pulls.1,
        })
        .to_string()
    }
}

/// The push channel in the status JSON: connected or not, the server's
/// announced cursor, and the last notification's time and age.
fn push_json(p: &super::PushStatus) -> serde_json::Value {
    let now_ms = super::now_ns() / 1_000_000;
    serde_json::json!({
        "connected": p.connected,
        "server_cursor": p.server_cursor,
        "last_notification": p.last_notification_unix_ms.map(|ms| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
            )
            .to_string()
        }),
        "last_notification_age_ms": p.last_notification_unix_ms.map(|ms| now_ms.saturating_sub(ms).max(0)),
        "error": p.last_error,
    })
}
