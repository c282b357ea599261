//! The model's node attributes: mode (setuid, setgid and sticky
//! included), owner and group as stored and as each device shows them,
//! mtime and atime where the model knows them, and extended attributes; the
//! attribute operations (`chmod`, `chown`, `utimensat`, `setxattr`,
//! `removexattr`) and the results the core must give for them.
//!
//! Attributes belong to a node, not to a name: every name of a hard-linked
//! node has the same [`NodeKey`], and the attributes are kept once per key.

use super::model::{Model, ModelPath, Node, Op, Outcome};
use crate::protocol::{DeviceId, Timestamp, XATTR_RESERVED_PREFIX, XATTR_TOTAL_MAX};
use std::collections::BTreeMap;

/// Which node of the model a name refers to (names of one node share it).
pub(super) type NodeKey = u64;

/// The setuid bit.
const SETUID: u32 = 0o4000;
/// The setgid bit (a folder's new children take its group; a new folder
/// inherits the bit).
const SETGID: u32 = 0o2000;

/// What the test devices' mounting user is (`open_vfs_on`: uid and gid 0).
const MOUNTER: u32 = 0;

/// Attributes of one model node.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Attrs {
    /// Permission bits with setuid, setgid and sticky.
    pub(super) mode: u32,
    /// Numeric owner as stored: `None` is the account's user (what the
    /// mounting user's id becomes).
    pub(super) uid: Option<u32>,
    /// Numeric group as stored (`None`: the account user's group).
    pub(super) gid: Option<u32>,
    /// The device that set a numeric `uid`/`gid` (`None` when both are
    /// `None`).
    pub(super) ids_from: Option<DeviceId>,
    /// The mtime, when the model knows it (set by `utimensat` and not
    /// changed since); `None` once content or a folder's entries changed
    /// at a time only the core knows. Unknown times are not compared.
    pub(super) mtime: Option<Timestamp>,
    /// The atime, when the model knows it: set by `utimensat`, and no
    /// access since could have moved it ([`Model::forget_moved_atimes`]).
    pub(super) atime: Option<Timestamp>,
    /// Stored extended attributes, full name → value.
    pub(super) xattrs: BTreeMap<String, Vec<u8>>,
}

impl Attrs {
    /// A new node with `mode`, made by `by` with group `gid` (as shown).
    pub(super) fn new(mode: u32, gid: u32, by: DeviceId) -> Self {
        let mut a = Attrs {
            mode,
            uid: None,
            gid: None,
            ids_from: None,
            mtime: None,
            atime: None,
            xattrs: BTreeMap::new(),
        };
        a.store_ids(MOUNTER, gid, by);
        a
    }

    /// The server's field-by-field merge (`protocol::merge`) of `mine`
    /// (the later commit) and `theirs` (committed first), both made from
    /// `base`: each field changed by `mine` takes its value, every other
    /// field keeps `theirs`. Owner, group and `ids_from` are one field;
    /// extended attributes merge by name, unless the merged set would pass
    /// the size limit: then `mine`'s whole set wins (the server's rule).
    /// A time the model does not know on either side stays unknown (it is
    /// not compared).
    pub(super) fn merged(base: &Attrs, mine: &Attrs, theirs: &Attrs) -> Attrs {
        fn pick<T: PartialEq>(b: T, m: T, t: T) -> T {
            if m != b {
                m
            } else {
                t
            }
        }
        let time = |b: Option<Timestamp>, m: Option<Timestamp>, t: Option<Timestamp>| match (b, m) {
            (Some(b), Some(m)) if b == m => t,
            (_, Some(m)) => Some(m),
            (_, None) => None,
        };
        let owner = |a: &Attrs| (a.uid, a.gid, a.ids_from);
        let (uid, gid, ids_from) = pick(owner(base), owner(mine), owner(theirs));
        let mode = pick(base.mode, mine.mode, theirs.mode);
        let mut xattrs = theirs.xattrs.clone();
        for name in base.xattrs.keys().chain(mine.xattrs.keys()) {
            if mine.xattrs.get(name) != base.xattrs.get(name) {
                match mine.xattrs.get(name) {
                    Some(v) => xattrs.insert(name.clone(), v.clone()),
                    None => xattrs.remove(name),
                };
            }
        }
        let total: usize = xattrs.iter().map(|(n, v)| n.len() + v.len()).sum();
        if total > XATTR_TOTAL_MAX {
            xattrs = mine.xattrs.clone();
        }
        Attrs {
            mode,
            uid,
            gid,
            ids_from,
            mtime: time(base.mtime, mine.mtime, theirs.mtime),
            atime: time(base.atime, mine.atime, theirs.atime),
            xattrs,
        }
    }

    /// The core's `store_ids`: ids as `by` shows them become stored ids;
    /// the mounting user's become the account's (`None`).
    fn store_ids(&mut self, uid: u32, gid: u32, by: DeviceId) {
        self.uid = (uid != MOUNTER).then_some(uid);
        self.gid = (gid != MOUNTER).then_some(gid);
        self.ids_from = (self.uid.is_some() || self.gid.is_some()).then_some(by);
    }

    /// Owner and group as `viewer` shows them (the core's `shown_ids`):
    /// numeric ids set on another device show as the mounting user unless
    /// the viewer keeps ids.
    pub(super) fn shown_ids(&self, viewer: Viewer) -> (u32, u32) {
        let foreign = match viewer {
            Viewer::Device(d) => self.ids_from.is_some_and(|from| from != d),
            Viewer::KeepIds | Viewer::Server => false,
        };
        if foreign {
            (MOUNTER, MOUNTER)
        } else {
            (self.uid.unwrap_or(MOUNTER), self.gid.unwrap_or(MOUNTER))
        }
    }

    /// What `viewer` shows of these attributes.
    pub(super) fn seen_by(&self, viewer: Viewer) -> MetaSnap {
        let (uid, gid) = self.shown_ids(viewer);
        MetaSnap {
            mode: self.mode,
            uid,
            gid,
            ids_from: match viewer {
                Viewer::Server => self.ids_from,
                _ => None,
            },
            mtime: self.mtime,
            atime: self.atime,
            xattrs: self.xattrs.clone(),
        }
    }
}

/// Who looks at a tree, which decides how numeric ids show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Viewer {
    /// A device without `--keep-ids`.
    Device(DeviceId),
    /// A device with `--keep-ids` (the fresh device of the checks).
    KeepIds,
    /// The server's records: stored ids and the device that set them.
    Server,
}

/// The attributes of an entry as a view shows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct MetaSnap {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    /// The server view only: who set numeric ids.
    pub(super) ids_from: Option<DeviceId>,
    /// `None` in the model where it does not know the time; a view's is
    /// masked to `None` there before comparing ([`mask_unknown`]).
    pub(super) mtime: Option<Timestamp>,
    /// As `mtime`.
    pub(super) atime: Option<Timestamp>,
    pub(super) xattrs: BTreeMap<String, Vec<u8>>,
}

/// `XATTR_CREATE` of `setxattr(2)`.
pub(super) const XATTR_CREATE: u8 = 1;
/// `XATTR_REPLACE` of `setxattr(2)`.
pub(super) const XATTR_REPLACE: u8 = 2;

impl Model {
    /// The attributes of the node at `p` (which must exist).
    pub(super) fn attrs_of(&self, p: &ModelPath) -> &Attrs {
        &self.attrs[&self.keys[p]]
    }

    fn attrs_mut(&mut self, p: &ModelPath) -> &mut Attrs {
        let key = self.keys[p];
        self.attrs.get_mut(&key).expect("every key has attributes")
    }

    /// Attributes of a node created at `p` by `by` with `mode`: its group
    /// is the folder's (as `by` shows it) when the folder has setgid, and
    /// a new folder there inherits setgid (ext4 without `grpid`).
    pub(super) fn new_attrs(&self, p: &ModelPath, dir: bool, mut mode: u32, by: DeviceId) -> Attrs {
        let parent = &p[..p.len() - 1];
        let setgid_parent =
            !parent.is_empty() && self.attrs_of(&parent.to_vec()).mode & SETGID != 0;
        let gid = if setgid_parent {
            if dir {
                mode |= SETGID;
            }
            self.attrs_of(&parent.to_vec())
                .shown_ids(Viewer::Device(by))
                .1
        } else {
            MOUNTER
        };
        Attrs::new(mode, gid, by)
    }

    /// The folder holding `p` changed entries: its mtime is now unknown.
    pub(super) fn touch_parent(&mut self, p: &ModelPath) {
        if p.len() > 1 {
            let parent = p[..p.len() - 1].to_vec();
            if self.keys.contains_key(&parent) {
                self.attrs_mut(&parent).mtime = None;
            }
        }
    }

    /// Content of `p` changed now: its mtime is unknown.
    pub(super) fn content_changed(&mut self, p: &ModelPath) {
        self.attrs_mut(p).mtime = None;
    }

    /// Applies an attribute op of `by` (the path walk already done).
    pub(super) fn apply_attr_op(&mut self, op: &Op, by: DeviceId) -> Result<(), Outcome> {
        let p = match op {
            Op::Chmod(p, _)
            | Op::Chown(p, ..)
            | Op::Utimens(p, ..)
            | Op::SetXattr(p, ..)
            | Op::RemoveXattr(p, _) => p,
            _ => unreachable!("not an attribute op: {op:?}"),
        };
        let Some(node) = self.nodes.get(p).cloned() else {
            return Err(Outcome::NotFound);
        };
        let a = self.attrs_mut(p);
        match op {
            Op::Chmod(_, mode) => a.mode = mode & 0o7777,
            // Neither id: the core changes nothing. (Through a mount the
            // kernel sends `chown(-1, -1)`'s setuid clearing as a mode.)
            Op::Chown(_, None, None) => {}
            Op::Chown(_, uid, gid) => {
                let (shown_uid, shown_gid) = a.shown_ids(Viewer::Device(by));
                a.store_ids(uid.unwrap_or(shown_uid), gid.unwrap_or(shown_gid), by);
                // No mode in the request: ext4's clearing for a non-folder.
                if node != Node::Dir {
                    a.mode &= !SETUID;
                    if a.mode & 0o010 != 0 {
                        a.mode &= !SETGID;
                    }
                }
            }
            Op::Utimens(_, mtime, atime) => {
                if let Some(m) = mtime {
                    a.mtime = Some(*m);
                }
                if let Some(t) = atime {
                    a.atime = Some(*t);
                }
            }
            Op::SetXattr(_, name, value, flags) => {
                check_xattr_name(name, &node)?;
                let exists = a.xattrs.contains_key(name);
                if flags & XATTR_CREATE != 0 && exists {
                    return Err(Outcome::Exists);
                }
                if flags & XATTR_REPLACE != 0 && !exists {
                    return Err(Outcome::NoAttribute);
                }
                let mut all = a.xattrs.clone();
                all.insert(name.clone(), value.clone());
                let total: usize = all.iter().map(|(k, v)| k.len() + v.len()).sum();
                if total > XATTR_TOTAL_MAX {
                    return Err(Outcome::NoSpace);
                }
                a.xattrs = all;
            }
            Op::RemoveXattr(_, name) => {
                check_xattr_name(name, &node)?;
                if a.xattrs.remove(name).is_none() {
                    return Err(Outcome::NoAttribute);
                }
            }
            _ => unreachable!(),
        }
        Ok(())
    }
}

/// The checks before an attribute's presence is looked at: the reserved
/// `user.nimbus.*` names are read-only, and `user.*` is for files and
/// folders only (both `EPERM`). The generator names only valid ones
/// otherwise.
fn check_xattr_name(name: &str, node: &Node) -> Result<(), Outcome> {
    if name.starts_with(XATTR_RESERVED_PREFIX) {
        return Err(Outcome::NotPermitted);
    }
    if name.starts_with("user.") && !matches!(node, Node::File(_) | Node::Dir) {
        return Err(Outcome::NotPermitted);
    }
    Ok(())
}

/// Masks in `got` the times the model does not know (`None` in
/// `expected`), so that only known times are compared.
pub(super) fn mask_unknown(got: &mut super::model::Tree, expected: &super::model::Tree) {
    for (path, seen) in got.iter_mut() {
        if let Some(e) = expected.get(path) {
            if e.meta.mtime.is_none() {
                seen.meta.mtime = None;
            }
            if e.meta.atime.is_none() {
                seen.meta.atime = None;
            }
        }
    }
}

impl Model {
    /// Before a tree is read (a listing of every folder, an open of every
    /// file): atimes that such an access may move become unknown. Under
    /// `relatime` an access moves atime unless it is after mtime and
    /// ctime and less than a day old; the model keeps only an atime more
    /// than a day ahead of now and after a known mtime (ctime is at most
    /// now), which no access moves. A moved atime stays on the device
    /// that read until its next change uploads it, so it is unknown in
    /// every view.
    pub(super) fn forget_moved_atimes(&mut self) {
        let now = Timestamp::now();
        let safe = Timestamp {
            sec: now.sec + 2 * 24 * 60 * 60,
            nsec: 0,
        };
        for a in self.attrs.values_mut() {
            if let Some(t) = a.atime {
                if !(t > safe && a.mtime.is_some_and(|m| t > m)) {
                    a.atime = None;
                }
            }
        }
    }
}

/// An attribute op on a node chosen later (the two-device attribute
/// race picks the node when it plays).
#[derive(Clone, Debug)]
pub(super) enum AttrEdit {
    Chmod(u32),
    Chown(Option<u32>, Option<u32>),
    Utimens(Option<Timestamp>, Option<Timestamp>),
    SetXattr(String, Vec<u8>, u8),
    RemoveXattr(String),
}

impl AttrEdit {
    /// The op on path `p`.
    pub(super) fn on<P>(&self, p: P) -> Op<P> {
        match self.clone() {
            AttrEdit::Chmod(m) => Op::Chmod(p, m),
            AttrEdit::Chown(u, g) => Op::Chown(p, u, g),
            AttrEdit::Utimens(m, a) => Op::Utimens(p, m, a),
            AttrEdit::SetXattr(n, v, f) => Op::SetXattr(p, n, v, f),
            AttrEdit::RemoveXattr(n) => Op::RemoveXattr(p, n),
        }
    }
}
