//! Adopting the server's answer to a commit field by field.
//!
//! Since protocol 6 the server merges an op with other devices' changes
//! per field (`protocol::merge`): the answer (`Applied`, `Renamed`,
//! `Superseded`, the node of `ConflictCopy`, `Merged`) is the merged
//! record, which may carry a rename, a chmod, new times or another
//! extended attribute made elsewhere. For each field, the node takes the
//! answer's value when it still has the value the op sent
//! ([`SentState::state`]): the user did not change that field again while
//! the commit was in flight. A field changed again keeps its local value;
//! its journal record sends it next, against the answer as its base.
//!
//! Fields, as `protocol::merge` lists them: place (first entry and links,
//! adopted by `reconcile::adopt_server_entries`), mode, owner (`uid`,
//! `gid` and `ids_from` together), each of `mtime`, `atime` and `btime`,
//! the symlink target, each extended attribute by name, and the conflict
//! mark (`vfs::conflicts`: the user may have cleared it in flight).
//! Content has its own rules (`Vfs::commit_done`).

use super::meta::{Inode, Txn};
use super::*;
use std::collections::BTreeSet;

impl Vfs {
    /// Takes into `inode` (and its extended attributes, in `t`) each field
    /// of answer `rec` whose local value is still the one `sent` sent.
    /// True when the attributes the kernel shows changed (the caller
    /// tells it).
    pub(super) fn adopt_answer_fields(
        &self,
        t: &mut Txn<'_>,
        inode: &mut Inode,
        sent: &SentState,
        rec: &NodeRecord,
    ) -> VfsResult<bool> {
        let before = self.attr_of(inode);
        let (s, m) = (&sent.state, &rec.meta);
        if inode.mode == s.mode {
            inode.mode = m.mode;
        }
        let owner = (inode.uid, inode.gid, self.wire_ids_from(inode));
        if owner == (s.uid, s.gid, s.ids_from) {
            inode.uid = m.uid;
            inode.gid = m.gid;
            inode.ids_from = m.ids_from.filter(|d| *d != self.device_id);
        }
        if inode.mtime == s.mtime {
            inode.mtime = m.mtime;
        }
        if inode.atime == s.atime {
            inode.atime = m.atime;
        }
        if inode.btime == s.btime {
            inode.btime = m.btime;
        }
        if inode.symlink_target == s.symlink_target {
            inode.symlink_target = m.symlink_target.clone();
        }
        let local = self.meta.xattrs(inode.ino)?;
        let names: BTreeSet<&str> = local
            .iter()
            .chain(s.xattrs.iter())
            .chain(m.xattrs.iter())
            .map(|(n, _)| n)
            .collect();
        let mut xattrs_changed = false;
        for name in names {
            let (here, was, now) = (local.get(name), s.xattrs.get(name), m.xattrs.get(name));
            if here != was || here == now {
                continue;
            }
            match now {
                Some(v) => t.put_xattr(inode.ino, name, v),
                None => t.remove_xattr(inode.ino, name),
            };
            xattrs_changed = true;
        }
        let mark = self.meta.conflict(inode.ino)?;
        if mark == s.conflict && mark != m.conflict {
            t.set_conflict(inode.ino, m.conflict.as_ref());
        }
        let changed = before != self.attr_of(inode);
        if changed || xattrs_changed {
            inode.ctime = Timestamp::now();
        }
        Ok(changed)
    }
}
