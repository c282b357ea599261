//! The commit and conflict rules, once, above every metadata engine.
//!
//! [`commit`] validates every op of a request without touching the store
//! (names, modes, kinds, chunk lengths): a request with a malformed op
//! stores nothing. It then applies the ops in order, all in **one**
//! [`MetaTxn`] (one durable commit per request instead of one per op: a
//! round of 512 small files costs one fsync, not 512). Before applying, it
//! names everything the ops will read ([`MetaTxn::prefetch`]), so an engine
//! fetches it in a few queries instead of several per op. An op that fails a
//! check that needs the store (unknown parent, chunks not uploaded, folder
//! moved into itself, ...) stops the request with that error (its message
//! starts with `op N:`) and **nothing of the request is applied**; the
//! client then retries its ops one at a time. Replaying ops is harmless: a
//! device's own earlier commit is never a conflict
//! (`VersionVector::others_seen_by`).
//!
//! The rules themselves are listed in the `server` module docs.

use super::error::ServerError;
use super::meta_store::{AccountId, MetaError, MetaStore, MetaTxn, NewVersion};
pub use crate::protocol::{conflict_name, utc_stamp};
use crate::protocol::{
    validate_name, ChunkId, CommitOp, CommitOutcome, DeviceId, Link, NodeChange, NodeId, NodeKind,
    NodeMeta, NodeRecord, VersionVector, MAX_CHUNK_LEN, MAX_COMMIT_OPS, MAX_LINKS,
};
use std::collections::HashSet;

/// Longest symlink target accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_SYMLINK_TARGET: usize = 4096;
/// How deep a folder tree may be (guards the ancestor walks).
const MAX_DEPTH: usize = 4096;
/// How many ` 2`, ` 3`, ... suffixes are tried for a conflict name.
const MAX_CONFLICT_SUFFIX: u32 = 1000;

/// Who commits, and when.
#[derive(Clone, Debug)]
pub struct CommitCtx {
    pub account: AccountId,
    pub device: DeviceId,
    /// Human device name, used in conflict names.
    pub device_name: String,
    /// Commit time (conflict names use it, in UTC).
    pub now_ns: i64,
}

/// Validates all ops, then applies them in order (see the module docs).
pub async fn commit(
    store: &dyn MetaStore,
    ctx: &CommitCtx,
    ops: &[CommitOp],
) -> Result<Vec<CommitOutcome>, ServerError> {
    if ops.len() > MAX_COMMIT_OPS {
        return Err(ServerError::PayloadTooLarge(format!(
            "{} ops in one commit; at most {MAX_COMMIT_OPS}",
            ops.len()
        )));
    }
    for (i, op) in ops.iter().enumerate() {
        validate_op(op).map_err(|e| e.in_op(i))?;
        if let NodeChange::Upsert { meta, .. } = &op.change {
            check_ids_from(store, ctx, meta)
                .await
                .map_err(|e| e.in_op(i))?;
        }
    }
    let mut txn = store.begin(ctx.account).await?;
    if let Err(e) = prefetch(txn.as_mut(), ops).await {
        txn.rollback().await;
        return Err(e.into());
    }
    let mut results = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        match apply_in(txn.as_mut(), ctx, op).await {
            Ok(outcome) => results.push(outcome),
            Err(e) => {
                txn.rollback().await;
                return Err(e.in_op(i));
            }
        }
    }
    txn.commit().await?;
    Ok(results)
}

/// Tells the transaction everything the ops will read first: their nodes,
/// the folders and names of their entries, the chunks of their content.
async fn prefetch(txn: &mut dyn MetaTxn, ops: &[CommitOp]) -> Result<(), MetaError> {
    let mut nodes = Vec::with_capacity(ops.len() * 2);
    let mut names = Vec::with_capacity(ops.len());
    let mut chunks = Vec::new();
    for op in ops {
        nodes.push(op.node_id);
        if let NodeChange::Upsert {
            parent,
            name,
            links,
            meta,
        } = &op.change
        {
            nodes.push(*parent);
            names.push((*parent, name.as_str()));
            for l in links {
                nodes.push(l.parent);
                names.push((l.parent, l.name.as_str()));
            }
            if let Some(c) = &meta.content {
                chunks.extend(c.manifest.chunks.iter().map(|c| c.id));
            }
        }
    }
    txn.prefetch(&nodes, &names, &chunks).await
}

async fn apply_in(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    op: &CommitOp,
) -> Result<CommitOutcome, ServerError> {
    match &op.change {
        NodeChange::Upsert {
            parent,
            name,
            links,
            meta,
        } => {
            let meta = normalized(meta, ctx.device);
            let place = Place {
                parent: *parent,
                name,
                links,
            };
            upsert(txn, ctx, op.node_id, &op.base, &place, &meta).await
        }
        NodeChange::Delete => delete(txn, ctx, op.node_id, &op.base).await,
    }
}

/// Where an upsert puts a node: its first entry and its other ones.
struct Place<'a> {
    parent: NodeId,
    name: &'a str,
    links: &'a [Link],
}

impl Place<'_> {
    /// Every entry, the first one first.
    fn entries(&self) -> impl Iterator<Item = (NodeId, &str)> {
        std::iter::once((self.parent, self.name))
            .chain(self.links.iter().map(|l| (l.parent, l.name.as_str())))
    }
}

/// The checks that need no store: names, entries, then [`validate_meta`].
pub fn validate_op(op: &CommitOp) -> Result<(), ServerError> {
    if op.node_id.is_root() {
        return Err(ServerError::RootImmutable);
    }
    let NodeChange::Upsert {
        parent,
        name,
        links,
        meta,
    } = &op.change
    else {
        return Ok(());
    };
    validate_entries(*parent, name, links, meta.kind)?;
    validate_meta(meta)
}

/// Every entry name is valid; a folder has one entry, anything else at
/// most [`MAX_LINKS`], and no two entries are the same (parent, name).
fn validate_entries(
    parent: NodeId,
    name: &str,
    links: &[Link],
    kind: NodeKind,
) -> Result<(), ServerError> {
    let place = Place {
        parent,
        name,
        links,
    };
    let mut seen = HashSet::new();
    for (p, n) in place.entries() {
        validate_name(n).map_err(|reason| ServerError::InvalidName {
            name: n.to_owned(),
            reason,
        })?;
        if !seen.insert((p, n)) {
            return Err(ServerError::InvalidNode(format!(
                "the entry {n:?} is listed twice in the same folder"
            )));
        }
    }
    if kind == NodeKind::Dir && !links.is_empty() {
        return Err(ServerError::InvalidNode(
            "a folder has exactly one entry (no hard links)".into(),
        ));
    }
    if links.len() + 1 > MAX_LINKS {
        return Err(ServerError::InvalidNode(format!(
            "{} entries; a node has at most {MAX_LINKS}",
            links.len() + 1
        )));
    }
    Ok(())
}

/// The attribute rules of [`NodeMeta`] (`protocol::api` module docs):
/// mode within `0o7777`; nanoseconds below 1e9; content for files only, a
/// target for symlinks only, neither for folders and special nodes; an
/// `rdev` for character and block devices only; extended attributes by
/// the rules of [`crate::protocol::Xattrs`] (namespaces, `user.*` on
/// files and folders only, name and value lengths, 4 KiB per node).
pub fn validate_meta(meta: &NodeMeta) -> Result<(), ServerError> {
    meta.xattrs
        .validate(meta.kind)
        .map_err(|e| ServerError::InvalidNode(e.to_string()))?;
    if meta.mode > 0o7777 {
        return Err(ServerError::InvalidNode(format!(
            "mode {:o} has bits outside 0o7777",
            meta.mode
        )));
    }
    for (what, t) in [
        ("mtime", meta.mtime),
        ("atime", meta.atime),
        ("btime", meta.btime),
    ] {
        if !t.is_valid() {
            return Err(ServerError::InvalidNode(format!(
                "{what} has nsec {}; nanoseconds are 0..=999999999",
                t.nsec
            )));
        }
    }
    if meta.rdev != 0 && !meta.kind.is_device() {
        return Err(ServerError::InvalidNode(format!(
            "a {} has no device number (rdev {}); only character and block devices do",
            kind_name(meta.kind),
            meta.rdev
        )));
    }
    match (meta.kind, &meta.content, &meta.symlink_target) {
        (NodeKind::File, Some(content), None) => {
            for c in &content.manifest.chunks {
                if c.len == 0 || c.len > MAX_CHUNK_LEN {
                    return Err(ServerError::InvalidNode(format!(
                        "chunk {} has length {}; chunks are 1..={MAX_CHUNK_LEN} bytes",
                        c.id, c.len
                    )));
                }
            }
            Ok(())
        }
        (NodeKind::Dir, None, None) => Ok(()),
        (NodeKind::Symlink, None, Some(target)) => {
            if target.is_empty() || target.len() > MAX_SYMLINK_TARGET || target.contains('\0') {
                Err(ServerError::InvalidNode(format!(
                    "symlink target must be 1..={MAX_SYMLINK_TARGET} bytes without NUL"
                )))
            } else {
                Ok(())
            }
        }
        (k, None, None) if k.is_special() => Ok(()),
        (NodeKind::File, _, _) => Err(ServerError::InvalidNode(
            "a file carries content and no symlink target".into(),
        )),
        (NodeKind::Symlink, _, _) => Err(ServerError::InvalidNode(
            "a symlink carries a target and no content".into(),
        )),
        (
            k @ (NodeKind::Dir
            | NodeKind::Fifo
            | NodeKind::Socket
            | NodeKind::CharDevice
            | NodeKind::BlockDevice),
            _,
            _,
        ) => Err(ServerError::InvalidNode(format!(
            "a {} carries neither content nor a symlink target",
            kind_name(k)
        ))),
    }
}

/// `meta` as stored: numeric ids always name the device that set them
/// (the committing one when the op does not say), and no ids, no device.
fn normalized(meta: &NodeMeta, device: DeviceId) -> NodeMeta {
    let mut meta = meta.clone();
    if meta.uid.is_none() && meta.gid.is_none() {
        meta.ids_from = None;
    } else if meta.ids_from.is_none() {
        meta.ids_from = Some(device);
    }
    meta
}

/// Numeric ids set on another device must name a device of the same
/// account (revoked ones included: ids they set stay theirs), so that a
/// client can never make another account's device vouch for an owner.
/// Errors: 400 `invalid_node`.
async fn check_ids_from(
    store: &dyn MetaStore,
    ctx: &CommitCtx,
    meta: &NodeMeta,
) -> Result<(), ServerError> {
    let Some(from) = meta.ids_from else {
        return Ok(());
    };
    // Without ids the device is dropped (`normalized`), whatever it is.
    if from == ctx.device || (meta.uid.is_none() && meta.gid.is_none()) {
        return Ok(());
    }
    match store.device(from).await? {
        Some(d) if d.account == ctx.account => Ok(()),
        _ => Err(ServerError::InvalidNode(format!(
            "ids_from {from} is not a device of this account"
        ))),
    }
}

/// A kind as error messages name it.
fn kind_name(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "folder",
        NodeKind::Symlink => "symlink",
        NodeKind::Fifo => "FIFO",
        NodeKind::Socket => "socket",
        NodeKind::CharDevice => "character device",
        NodeKind::BlockDevice => "block device",
    }
}

async fn upsert(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    node_id: NodeId,
    base: &VersionVector,
    place: &Place<'_>,
    meta: &NodeMeta,
) -> Result<CommitOutcome, ServerError> {
    let (parent, name) = (place.parent, place.name);
    if node_id.is_root() {
        return Err(ServerError::RootImmutable);
    }
    let existing = txn.node(node_id).await?;
    if let Some(s) = &existing {
        if s.meta.kind != meta.kind {
            return Err(ServerError::KindMismatch {
                node: node_id,
                existing: kind_name(s.meta.kind),
                requested: kind_name(meta.kind),
            });
        }
    }
    for (parent, _) in place.entries() {
        let parent_rec = txn
            .node(parent)
            .await?
            .ok_or(ServerError::ParentNotFound(parent))?;
        if parent_rec.meta.kind != NodeKind::Dir {
            return Err(ServerError::ParentNotDir(parent));
        }
    }
    if parent == node_id {
        return Err(ServerError::InvalidMove(
            "a folder cannot be moved into itself".into(),
        ));
    }
    if meta.kind == NodeKind::Dir && existing.is_some() && is_ancestor(txn, node_id, parent).await?
    {
        return Err(ServerError::InvalidMove(
            "a folder cannot be moved into its own subtree".into(),
        ));
    }
    if let Some(content) = &meta.content {
        check_chunks_owned(txn, content).await?;
    }

    match existing {
        None => {
            let mut vv = VersionVector::new();
            vv.increment(ctx.device);
            write_state(txn, ctx, node_id, None, place, meta, vv).await
        }
        Some(s) => {
            let fast_forward = s.deleted || s.vv.others_seen_by(base, &ctx.device);
            let content_differs = match (&s.meta.content, &meta.content) {
                (Some(a), Some(b)) => a.hash() != b.hash(),
                _ => false,
            };
            if !fast_forward && content_differs {
                return conflict_copy(txn, ctx, s, parent, name, meta).await;
            }
            // Fast-forward, an edit that revives a tombstone (the edit
            // wins), or a concurrent edit without a content clash
            // (last writer wins field by field: take the incoming state).
            let mut vv = s.vv.clone();
            vv.merge(base);
            vv.increment(ctx.device);
            write_state(txn, ctx, node_id, Some(&s), place, meta, vv).await
        }
    }
}

/// Writes the node's new state under its entries — each under a conflict
/// name if it is taken by another node — reviving deleted ancestors first.
async fn write_state(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    node_id: NodeId,
    previous: Option<&NodeRecord>,
    place: &Place<'_>,
    meta: &NodeMeta,
    vv: VersionVector,
) -> Result<CommitOutcome, ServerError> {
    let mut taken = HashSet::new();
    let mut entries = Vec::new();
    let mut renamed = false;
    for (parent, name) in place.entries() {
        restore_ancestors(txn, ctx, parent).await?;
        let mut final_name = free_name(txn, ctx, parent, name, meta.kind, node_id).await?;
        if taken.contains(&(parent, final_name.clone())) {
            // Two entries of this node took the same conflict name.
            final_name =
                first_free_conflict_name_except(txn, ctx, parent, name, meta.kind, &taken).await?;
        }
        renamed |= final_name != name;
        taken.insert((parent, final_name.clone()));
        entries.push(Link {
            parent,
            name: final_name,
        });
    }
    let first = entries.remove(0);
    entries.sort();
    let node = NodeRecord {
        node_id,
        parent: Some(first.parent),
        name: first.name,
        links: entries,
        deleted: false,
        meta: meta.clone(),
        vv,
        seq: txn.next_seq().await?,
    };
    txn.write_node(&node).await?;
    let previous_hash = previous.and_then(|p| p.meta.content.as_ref().map(|c| c.hash()));
    if let Some(content) = &meta.content {
        if previous_hash != Some(content.hash()) {
            txn.append_version(&NewVersion {
                node: node_id,
                manifest: content.manifest.clone(),
                device: ctx.device,
                created_ns: ctx.now_ns,
            })
            .await?;
        }
    }
    Ok(if renamed {
        CommitOutcome::Renamed { node }
    } else {
        CommitOutcome::Applied { node }
    })
}

/// Concurrent content edit: the server's node stays as it is; the incoming
/// content becomes a new node beside it under a conflict name, in the
/// parent the committing device asked for (the first entry; the copy is a
/// new file with that one entry, whatever links the node has).
async fn conflict_copy(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    server_node: NodeRecord,
    parent: NodeId,
    name: &str,
    meta: &NodeMeta,
) -> Result<CommitOutcome, ServerError> {
    restore_ancestors(txn, ctx, parent).await?;
    let copy_id = NodeId::random();
    let copy_name = first_free_conflict_name(txn, ctx, parent, name, meta.kind).await?;
    let mut vv = VersionVector::new();
    vv.increment(ctx.device);
    let copy = NodeRecord {
        node_id: copy_id,
        parent: Some(parent),
        name: copy_name,
        links: Vec::new(),
        deleted: false,
        meta: NodeMeta {
            conflict: Some(crate::protocol::ConflictMark {
                of: server_node.node_id,
                device: ctx.device_name.clone(),
                at: crate::protocol::Timestamp::from_ns(ctx.now_ns),
            }),
            ..meta.clone()
        },
        vv,
        seq: txn.next_seq().await?,
    };
    txn.write_node(&copy).await?;
    if let Some(content) = &meta.content {
        txn.append_version(&NewVersion {
            node: copy_id,
            manifest: content.manifest.clone(),
            device: ctx.device,
            created_ns: ctx.now_ns,
        })
        .await?;
    }
    Ok(CommitOutcome::ConflictCopy {
        node: server_node,
        copy,
    })
}

async fn delete(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    node_id: NodeId,
    base: &VersionVector,
) -> Result<CommitOutcome, ServerError> {
    if node_id.is_root() {
        return Err(ServerError::RootImmutable);
    }
    let Some(s) = txn.node(node_id).await? else {
        return Ok(CommitOutcome::AlreadyGone);
    };
    if s.deleted {
        // Already in the trash: nothing changes (a replayed delete).
        return Ok(CommitOutcome::Applied { node: s });
    }
    if !s.vv.others_seen_by(base, &ctx.device) {
        // Edit vs delete: the edit wins.
        return Ok(CommitOutcome::Superseded { node: s });
    }
    if s.meta.kind == NodeKind::Dir && txn.has_live_children(node_id).await? {
        return Ok(CommitOutcome::Superseded { node: s });
    }
    let mut node = s;
    node.vv.merge(base);
    node.vv.increment(ctx.device);
    node.deleted = true;
    // The trash keeps the node under its first entry; the others go.
    node.links.clear();
    node.seq = txn.next_seq().await?;
    txn.write_node(&node).await?;
    Ok(CommitOutcome::Applied { node })
}

/// True when `ancestor` is `start` or one of its ancestors.
async fn is_ancestor(
    txn: &mut dyn MetaTxn,
    ancestor: NodeId,
    start: NodeId,
) -> Result<bool, ServerError> {
    let mut cur = Some(start);
    for _ in 0..MAX_DEPTH {
        let Some(id) = cur else {
            return Ok(false);
        };
        if id == ancestor {
            return Ok(true);
        }
        cur = match txn.node(id).await? {
            Some(n) => n.parent,
            None => None,
        };
    }
    Err(ServerError::internal(format!(
        "folder tree deeper than {MAX_DEPTH} levels (or a cycle) above {start}"
    )))
}

/// Revives `dir` and its deleted ancestors, top-down, each under its last
/// name (or a conflict name if that was taken meanwhile).
async fn restore_ancestors(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    dir: NodeId,
) -> Result<(), ServerError> {
    let mut chain = Vec::new();
    let mut cur = dir;
    loop {
        let node = txn
            .node(cur)
            .await?
            .ok_or_else(|| ServerError::internal(format!("ancestor {cur} is missing")))?;
        if !node.deleted {
            break;
        }
        let parent = node
            .parent
            .ok_or_else(|| ServerError::internal("the root folder is marked deleted"))?;
        chain.push(node);
        if chain.len() > MAX_DEPTH {
            return Err(ServerError::internal("deleted ancestors form a cycle"));
        }
        cur = parent;
    }
    while let Some(mut node) = chain.pop() {
        let parent = node.parent.unwrap_or(NodeId::ROOT);
        node.name = free_name(txn, ctx, parent, &node.name, node.meta.kind, node.node_id).await?;
        node.deleted = false;
        node.seq = txn.next_seq().await?;
        txn.write_node(&node).await?;
    }
    Ok(())
}

/// `name` if it is free in `parent` (or held by `node_id` itself), else
/// the first free conflict name.
async fn free_name(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    parent: NodeId,
    name: &str,
    kind: NodeKind,
    node_id: NodeId,
) -> Result<String, ServerError> {
    match txn.lookup(parent, name).await? {
        None => Ok(name.to_owned()),
        Some(holder) if holder == node_id => Ok(name.to_owned()),
        Some(_) => first_free_conflict_name(txn, ctx, parent, name, kind).await,
    }
}

async fn first_free_conflict_name(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    parent: NodeId,
    name: &str,
    kind: NodeKind,
) -> Result<String, ServerError> {
    first_free_conflict_name_except(txn, ctx, parent, name, kind, &HashSet::new()).await
}

/// The first conflict name free in `parent` and not in `taken` (names this
/// commit gives other entries of the same node).
async fn first_free_conflict_name_except(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    parent: NodeId,
    name: &str,
    kind: NodeKind,
    taken: &HashSet<(NodeId, String)>,
) -> Result<String, ServerError> {
    for n in 1..=MAX_CONFLICT_SUFFIX {
        let candidate = conflict_name(name, kind, &ctx.device_name, ctx.now_ns, n);
        if !taken.contains(&(parent, candidate.clone()))
            && txn.lookup(parent, &candidate).await?.is_none()
        {
            return Ok(candidate);
        }
    }
    Err(ServerError::internal(format!(
        "no free conflict name for {name:?} after {MAX_CONFLICT_SUFFIX} tries"
    )))
}

/// Every chunk of the manifest must be owned by the account, with the
/// length the account uploaded.
async fn check_chunks_owned(
    txn: &mut dyn MetaTxn,
    content: &crate::protocol::FileContent,
) -> Result<(), ServerError> {
    let mut seen = HashSet::new();
    let ids: Vec<ChunkId> = content
        .manifest
        .chunks
        .iter()
        .map(|c| c.id)
        .filter(|id| seen.insert(*id))
        .collect();
    let owned = txn.owned_chunks(&ids).await?;
    let missing: Vec<ChunkId> = ids
        .iter()
        .filter(|id| !owned.contains_key(id))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(ServerError::MissingChunks(missing));
    }
    for c in &content.manifest.chunks {
        let real = owned[&c.id];
        if real != c.len {
            return Err(ServerError::InvalidNode(format!(
                "chunk {} is {real} bytes, the manifest says {}",
                c.id, c.len
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
