//! Planning: journal records → commit ops, in journal order.
//!
//! - `Upsert` sends the node's place *as recorded* (parent, name, and its
//!   other entries, hard links) with its
//!   current attributes: kind, mode, owner and group (numeric ids with the
//!   device that set them: this one unless adopted from another), mtime,
//!   atime, btime and, for device nodes, rdev (ctime stays local; see
//!   `protocol::api`) and its extended attributes (all of them: a change of
//!   one sends the set). Special nodes never carry content. New content goes with it when the file has a
//!   working copy and is not open for writing (an `fsync --fsync remote`
//!   waiter excepted); otherwise the op carries the content the server
//!   already has, and the file's close journals the rest.
//! - An `Upsert` of a node removed since is still sent when the server has
//!   the node or it is a folder (a rename away frees a name that a later
//!   record takes; a folder may be the parent of later records), without
//!   new content; a never-uploaded file's is dropped.
//! - Every `Upsert` carries the node's sync base as `seen` (the server
//!   state this device last adopted; `None` for a node the server has not
//!   answered for yet), so the server takes exactly the fields that differ
//!   from it as this device's changes (`protocol::merge`). Its conflict
//!   mark is the one stored here (see `vfs::conflicts`). A later op of the same node in the
//!   same round takes the state the earlier one sent as its `seen` (the
//!   base is older than what the server will have by then: a link made
//!   and removed again in one round would otherwise look unchanged).
//! - A folder named by an id that has since become a local alias (the
//!   folder was merged into another, see `vfs::rekey`) is sent as the id
//!   it has now.
//! - `Delete` carries the tombstone's current vector.
//! - A record whose parent folder neither is on the server nor comes
//!   earlier in the round waits in the quarantine when that folder's own
//!   change was refused (it returns with the folder's next change); else it
//!   is sent and the server decides.

use super::RoundError;
use crate::protocol::{
    CommitOp, FileContent, Link, Manifest, NodeChange, NodeId, NodeKind, NodeMeta, SeenState,
};
use crate::vfs::meta::{Inode, JournalOp, Quarantined, ROOT_INO};
use crate::vfs::{SentState, Vfs};
use std::collections::{HashMap, HashSet};

/// What one planned op refers to locally.
#[derive(Clone, Debug)]
pub(super) enum Origin {
    Node { ino: u64, sent: Box<SentState> },
    Delete(NodeId),
}

/// One round's work.
#[derive(Default)]
pub(super) struct Plan {
    pub ops: Vec<CommitOp>,
    /// Per op: the journal record it comes from and what it refers to.
    pub origins: Vec<(u64, Origin)>,
    /// Ops whose `seen` is the state an earlier op of the same node in
    /// this round sent (not the stored base): the transfer step puts the
    /// new content's hash in it when that op carries new content.
    pub chained: HashSet<usize>,
    /// Files whose content must be chunked and uploaded, with the indices
    /// of the ops that carry it (every op of the file in this round).
    pub files: Vec<(Vec<usize>, Inode)>,
    /// Records that need no request (nothing left to say to the server).
    pub settled: Vec<u64>,
    /// Records held back because their folder was refused.
    pub blocked: Vec<(u64, Quarantined)>,
    /// Inodes the round touched (tombstones to release afterwards).
    pub inos: Vec<u64>,
    /// Files whose new content could not be uploaded this round because
    /// the server or a proxy refuses a chunk until the user acts
    /// ([`Plan::refusal`]).
    pub held: Vec<u64>,
    pub refusal: Option<crate::remote::RemoteError>,
    /// Files the server has never had whose content changed while the
    /// round read it (a temporary file renamed over another and replaced
    /// again, as editors save): their ops leave the round and their
    /// records stay, so that no other device ever sees such a file
    /// without its content.
    pub changed_new: HashSet<u64>,
}

/// True when a record must wait: content or attribute pushes of a file
/// still open for writing (its close journals again), anything of a file
/// that never reached the server while it is open for writing (nothing
/// depends on such a file), and the delete of a node such a file replaced
/// by a rename over it (an editor's save): the two go together, so that
/// other devices never see the name missing while the new file waits.
pub(super) fn deferred(vfs: &Vfs, op: &JournalOp) -> bool {
    match op {
        JournalOp::Upsert { ino, moved, .. } => upsert_deferred(vfs, *ino, *moved),
        JournalOp::Delete { node_id, .. } => vfs
            .replacement_of(node_id)
            .ok()
            .flatten()
            .is_some_and(|(r, _)| upsert_deferred(vfs, r, true)),
    }
}

fn upsert_deferred(vfs: &Vfs, ino: u64, moved: bool) -> bool {
    if !vfs.has_writers(ino) || vfs.fsync_waiting(ino) {
        return false;
    }
    match vfs.inode(ino) {
        Ok(Some(i)) => i.kind == NodeKind::File && !i.unlinked && (!moved || !i.on_server()),
        _ => false,
    }
}

pub(super) fn build(vfs: &Vfs, records: Vec<(u64, JournalOp)>) -> Result<Plan, RoundError> {
    let mut plan = Plan::default();
    let mut planned: HashSet<NodeId> = HashSet::new();
    let mut content_planned: HashSet<u64> = HashSet::new();
    // Per node: the state its last op in this round sent, the `seen` of
    // its next op (the server has that state once the earlier op is
    // applied; the stored base is older).
    let mut last_sent: HashMap<u64, SeenState> = HashMap::new();
    for (seq, op) in records {
        plan.inos.push(op.ino());
        match op {
            JournalOp::Upsert {
                ino,
                parent,
                name,
                links,
                ..
            } => {
                // A folder merged into another since the record was
                // written is named by its new id (see `vfs::rekey`).
                let parent = vfs.resolve_alias(&parent)?;
                let links = links
                    .into_iter()
                    .map(|l| {
                        Ok(Link {
                            parent: vfs.resolve_alias(&l.parent)?,
                            name: l.name,
                        })
                    })
                    .collect::<Result<Vec<Link>, RoundError>>()?;
                let Some(inode) = vfs.inode(ino)? else {
                    tracing::warn!(ino, "journal record of a node that no longer exists");
                    plan.settled.push(seq);
                    continue;
                };
                if ino == ROOT_INO || (inode.unlinked && !inode.on_server() && !inode.is_dir()) {
                    plan.settled.push(seq);
                    continue;
                }
                if !parent.is_root() && !planned.contains(&parent) {
                    let p = vfs.ino_of(&parent)?;
                    let on_server = match p {
                        Some(p) => vfs.inode(p)?.is_some_and(|i| i.on_server()),
                        None => false,
                    };
                    if let (false, Some(p)) = (on_server, p) {
                        if vfs.is_quarantined(p) {
                            plan.blocked.push((
                                seq,
                                Quarantined {
                                    path: vfs.path_of(ino).unwrap_or_default(),
                                    reason: "its folder's change was refused (see that folder)"
                                        .into(),
                                    at_unix: crate::vfs::now_ns() / 1_000_000_000,
                                    blocked_by: Some(p),
                                    op: JournalOp::Upsert {
                                        ino,
                                        parent,
                                        name,
                                        moved: true,
                                        links,
                                    },
                                },
                            ));
                            continue;
                        }
                    }
                }
                let new_content = inode.kind == NodeKind::File
                    && inode.dirty
                    && !inode.unlinked
                    && (!vfs.has_writers(ino) || vfs.fsync_waiting(ino));
                if new_content {
                    if content_planned.insert(ino) {
                        plan.files.push((Vec::new(), inode.clone()));
                    }
                    if let Some((ops, _)) = plan.files.iter_mut().find(|(_, i)| i.ino == ino) {
                        ops.push(plan.ops.len());
                    }
                }
                let entries = std::iter::once((parent, name.clone()))
                    .chain(links.iter().map(|l| (l.parent, l.name.clone())))
                    .collect();
                let chained = last_sent.remove(&ino);
                if chained.is_some() {
                    plan.chained.insert(plan.ops.len());
                }
                let (op, state) = upsert_op(vfs, &inode, parent, &name, links, chained)?;
                last_sent.insert(ino, state.clone());
                plan.ops.push(op);
                plan.origins.push((
                    seq,
                    Origin::Node {
                        ino,
                        sent: Box::new(SentState {
                            node_id: inode.node_id,
                            rev: inode.local_rev,
                            entries,
                            content: new_content,
                            conflict: false,
                            state,
                        }),
                    },
                ));
                planned.insert(inode.node_id);
            }
            JournalOp::Delete { node_id, base, .. } => {
                let base = match vfs.ino_of(&node_id)? {
                    Some(i) => match vfs.inode(i)? {
                        Some(t) if t.unlinked && !t.vv.is_empty() => t.vv,
                        _ => base,
                    },
                    None => base,
                };
                plan.ops.push(CommitOp {
                    node_id,
                    base,
                    seen: None,
                    change: NodeChange::Delete,
                });
                plan.origins.push((seq, Origin::Delete(node_id)));
            }
        }
    }
    Ok(plan)
}

/// The op for `inode` at place (`parent`, `name`) with its other entries
/// `links`, carrying the content the server already has (the transfer step
/// fills in new content), and what it sends as a [`SeenState`] (with the
/// content as planned). `chained`: the state an earlier op of the node in
/// this round sent, its `seen` instead of the stored base.
fn upsert_op(
    vfs: &Vfs,
    inode: &Inode,
    parent: NodeId,
    name: &str,
    links: Vec<Link>,
    chained: Option<SeenState>,
) -> Result<(CommitOp, SeenState), RoundError> {
    let content = match inode.kind {
        NodeKind::File => Some(vfs.server_content(inode.ino)?.unwrap_or(FileContent {
            manifest: Manifest::default(),
        })),
        _ => None,
    };
    let seen = match chained {
        Some(s) => Some(s),
        None => vfs.sync_base(inode.ino)?,
    };
    let meta = NodeMeta {
        kind: inode.kind,
        mode: inode.mode,
        mtime: inode.mtime,
        atime: inode.atime,
        btime: inode.btime,
        uid: inode.uid,
        gid: inode.gid,
        ids_from: vfs.wire_ids_from(inode),
        rdev: if inode.kind.is_device() {
            inode.rdev
        } else {
            0
        },
        content,
        symlink_target: inode.symlink_target.clone(),
        xattrs: vfs.xattrs_of(inode.ino)?,
        // The mark as stored here: the server's, or cleared by the user
        // (a rename, `nimbus conflicts resolve`).
        conflict: vfs.conflict_of(inode.ino)?,
    };
    let state = SeenState {
        parent,
        name: name.to_string(),
        links: links.clone(),
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        ids_from: meta.ids_from,
        mtime: meta.mtime,
        atime: meta.atime,
        btime: meta.btime,
        content: meta.content.as_ref().map(|c| c.hash()),
        symlink_target: meta.symlink_target.clone(),
        xattrs: meta.xattrs.clone(),
        conflict: meta.conflict.clone(),
    };
    let op = CommitOp {
        node_id: inode.node_id,
        base: inode.vv.clone(),
        seen,
        change: NodeChange::Upsert {
            parent,
            name: name.to_string(),
            // A folder never has links; one recorded before it was a
            // folder cannot exist (kinds never change).
            links,
            meta,
        },
    };
    Ok((op, state))
}
