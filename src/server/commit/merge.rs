//! The three-way merge of one node's fields: what the committing device
//! last saw ([`SeenState`]), what the server has, what the op brings.
//!
//! For every field (listed in `protocol::merge`): the op **changed** it
//! when its value differs from the seen one; the server **changed** it
//! when its value differs from the seen one.
//! - Changed by the op only: the op's value.
//! - Changed by the server only, or by neither: the server's value.
//! - Changed by both: for **content** with different bytes, a conflict —
//!   the server keeps its content (and the mtime that goes with it), the
//!   op's content becomes a conflict copy ([`Merge::content_conflict`]);
//!   equal bytes merge. For **every other field** the op's value: the
//!   change the server accepts last wins, by server commit order, never
//!   by a clock.
//!
//! Extended attributes are a field each (by name), so different
//! attributes set on two devices both stay. The place — the node's first
//! entry and its hard links — is one field: a rename on one device and an
//! edit on another both apply, two renames of one node end at the later
//! one. Whether the winning place is possible (a folder moved into its own
//! subtree by two concurrent moves) is the caller's to check.

use crate::protocol::{
    ContentHash, FileContent, Manifest, NodeId, NodeMeta, NodeRecord, SeenState,
};
use crate::protocol::{Link, NodeKind, Xattrs};

/// A node's entries, the first one first, then its links in order.
pub(super) type Entries = Vec<(NodeId, String)>;

/// The merged state of a node.
#[derive(Debug, PartialEq)]
pub(super) struct Merge {
    /// Where the node ends up, the first entry first.
    pub entries: Entries,
    /// Its attributes and content.
    pub meta: NodeMeta,
    /// The op changed the place (so `entries` are the op's).
    pub moved: bool,
    /// Both sides changed the content to different bytes: `meta` keeps
    /// the server's, and the op's content goes to a conflict copy.
    pub content_conflict: bool,
}

/// The entries of a server record (first, then links in order).
pub(super) fn record_entries(rec: &NodeRecord) -> Entries {
    entries_of(rec.parent.map(|p| (p, rec.name.clone())), &rec.links)
}

/// The entries of a seen state (first, then links in order).
fn seen_entries(seen: &SeenState) -> Entries {
    entries_of(Some((seen.parent, seen.name.clone())), &seen.links)
}

/// `first`, then `links` in (parent, name) order.
fn entries_of(first: Option<(NodeId, String)>, links: &[Link]) -> Entries {
    let mut links: Vec<_> = links.iter().map(|l| (l.parent, l.name.clone())).collect();
    links.sort();
    first.into_iter().chain(links).collect()
}

/// `entries` with the links (all but the first) sorted, for comparing.
fn canonical(entries: &[(NodeId, String)]) -> Entries {
    let mut e = entries.to_vec();
    if e.len() > 2 {
        e[1..].sort();
    }
    e
}

/// The hash of a file's content (an absent manifest is the empty file);
/// `None` for other kinds.
pub(super) fn content_hash(meta: &NodeMeta) -> Option<ContentHash> {
    match meta.kind {
        NodeKind::File => Some(match &meta.content {
            Some(c) => c.hash(),
            None => FileContent {
                manifest: Manifest::default(),
            }
            .hash(),
        }),
        _ => None,
    }
}

/// The op's value if it changed the field, else the server's.
fn pick<T: PartialEq + Clone>(seen: &T, server: &T, op: &T) -> T {
    if op != seen {
        op.clone()
    } else {
        server.clone()
    }
}

/// Merges the op (`entries`, `meta`) into the server's `server` record
/// from the base `seen` (see the module docs). `meta` is already
/// validated; the merged extended attributes are re-validated, and should
/// the union of both sides break a limit (4 KiB per node), the op's set
/// is taken whole.
pub(super) fn merge(
    seen: &SeenState,
    server: &NodeRecord,
    entries: &[(NodeId, String)],
    meta: &NodeMeta,
) -> Merge {
    let s = &server.meta;
    let seen_place = seen_entries(seen);
    let op_place = canonical(entries);
    let moved = op_place != seen_place;
    let entries = if moved {
        op_place
    } else {
        record_entries(server)
    };

    let (seen_c, server_c, op_c) = (seen.content, content_hash(s), content_hash(meta));
    let content_conflict = op_c != seen_c && server_c != seen_c && op_c != server_c;
    let (content, mtime) = if content_conflict {
        (s.content.clone(), s.mtime)
    } else if op_c != seen_c {
        (
            meta.content.clone(),
            pick(&seen.mtime, &s.mtime, &meta.mtime),
        )
    } else {
        (s.content.clone(), pick(&seen.mtime, &s.mtime, &meta.mtime))
    };

    let (uid, gid, ids_from) = pick(
        &(seen.uid, seen.gid, seen.ids_from),
        &(s.uid, s.gid, s.ids_from),
        &(meta.uid, meta.gid, meta.ids_from),
    );
    let merged = NodeMeta {
        kind: s.kind,
        mode: pick(&seen.mode, &s.mode, &meta.mode),
        mtime,
        atime: pick(&seen.atime, &s.atime, &meta.atime),
        btime: pick(&seen.btime, &s.btime, &meta.btime),
        uid,
        gid,
        ids_from,
        // Set when the node is made (mknod) and never changed.
        rdev: s.rdev,
        content,
        symlink_target: pick(
            &seen.symlink_target,
            &s.symlink_target,
            &meta.symlink_target,
        ),
        xattrs: merge_xattrs(&seen.xattrs, &s.xattrs, &meta.xattrs, s.kind),
        conflict: pick(&seen.conflict, &s.conflict, &meta.conflict),
    };
    Merge {
        entries,
        meta: merged,
        moved,
        content_conflict,
    }
}

/// Extended attributes merged name by name (see [`merge`] for the limit).
fn merge_xattrs(seen: &Xattrs, server: &Xattrs, op: &Xattrs, kind: NodeKind) -> Xattrs {
    let mut names: Vec<&str> = seen
        .iter()
        .chain(server.iter())
        .chain(op.iter())
        .map(|(n, _)| n)
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Xattrs::new();
    for n in names {
        if let Some(v) = pick(&seen.get(n), &server.get(n), &op.get(n)) {
            out.insert(n.to_owned(), v.to_vec());
        }
    }
    if out.validate(kind).is_ok() {
        out
    } else {
        op.clone()
    }
}

/// True when an op creating `meta` and a node holding the same name with
/// `existing` are the same thing made twice: same kind, and the same
/// content (files), target (symlinks) or device number; any two folders.
pub(super) fn same_thing(existing: &NodeMeta, meta: &NodeMeta) -> bool {
    existing.kind == meta.kind
        && match meta.kind {
            NodeKind::File => content_hash(existing) == content_hash(meta),
            NodeKind::Symlink => existing.symlink_target == meta.symlink_target,
            NodeKind::Dir | NodeKind::Fifo | NodeKind::Socket => true,
            NodeKind::CharDevice | NodeKind::BlockDevice => existing.rdev == meta.rdev,
        }
}

#[cfg(test)]
mod tests;
