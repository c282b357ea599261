//! What a commit says about concurrency: the state a device last saw of a
//! node ([`SeenState`], the base of a three-way merge), and the mark the
//! server puts on a conflict copy ([`ConflictMark`]).
//!
//! # Fields
//! A node's state is merged field by field. The fields are: content (by
//! its hash), place (first entry and hard links, as one set), mode, owner
//! (`uid`, `gid`, `ids_from` together), each of `mtime`, `atime` and
//! `btime`, the symlink target, each extended attribute by name, and the
//! conflict mark. An op **changes** exactly the fields in which its new
//! state differs from its [`SeenState`]; the server **has changed** those
//! in which its current state differs from it. The rules that follow are
//! the server's (`server::commit`), as DESIGN §4 states them.

use super::{ContentHash, Link, NodeId, NodeKind, NodeRecord, Timestamp, Xattrs};
use serde::{Deserialize, Serialize};

/// A node as this device last saw it on the server: the base of a
/// three-way merge. Carried by [`super::CommitOp::seen`] for a node the
/// device did not create itself (or whose creation the server answered).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenState {
    /// Folder of the first entry.
    pub parent: NodeId,
    /// Name of the first entry.
    pub name: String,
    /// The other entries (hard links), in (parent, name) order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids_from: Option<super::DeviceId>,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub btime: Timestamp,
    /// Files: [`super::FileContent::hash`] of the content seen; `None` for
    /// other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    #[serde(default, skip_serializing_if = "Xattrs::is_empty")]
    pub xattrs: Xattrs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ConflictMark>,
}

impl SeenState {
    /// The state of server record `rec` (a live node other than the root);
    /// `None` for the root and for a deleted node.
    pub fn of(rec: &NodeRecord) -> Option<SeenState> {
        let parent = rec.parent?;
        if rec.deleted {
            return None;
        }
        let m = &rec.meta;
        Some(SeenState {
            parent,
            name: rec.name.clone(),
            links: rec.links.clone(),
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            ids_from: m.ids_from,
            mtime: m.mtime,
            atime: m.atime,
            btime: m.btime,
            content: match m.kind {
                NodeKind::File => Some(m.content.as_ref().map(|c| c.hash()).unwrap_or_else(|| {
                    super::FileContent {
                        manifest: super::Manifest::default(),
                    }
                    .hash()
                })),
                _ => None,
            },
            symlink_target: m.symlink_target.clone(),
            xattrs: m.xattrs.clone(),
            conflict: m.conflict.clone(),
        })
    }
}

/// The server's mark on a conflict copy: which node it is a copy of, and
/// whose edit, made when, it keeps. The copy's `user.nimbus.state` reads
/// `conflict` while the mark is there; a device drops it when the user
/// renames the copy (or resolves it, `nimbus conflicts resolve`), and the
/// copy is an ordinary file from then on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictMark {
    /// The node that kept the name (the version committed first).
    pub of: NodeId,
    /// Name of the device whose edit the copy keeps.
    pub device: String,
    /// When the server received that edit (UTC; the time in the name).
    pub at: Timestamp,
}
