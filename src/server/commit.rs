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
    validate_name, ChunkId, CommitOp, CommitOutcome, ConflictMark, DeviceId, Link, NodeChange,
    NodeId, NodeKind, NodeMeta, NodeRecord, SeenState, Timestamp, VersionVector, MAX_CHUNK_LEN,
    MAX_COMMIT_OPS, MAX_LINKS,
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
            // Ids a device made that were merged into another node reach
            // that node.
            let node_id = txn.resolve_alias(op.node_id).await?;
            let mut entries = Vec::with_capacity(1 + links.len());
            entries.push((txn.resolve_alias(*parent).await?, name.clone()));
            for l in links {
                entries.push((txn.resolve_alias(l.parent).await?, l.name.clone()));
            }
            let op = Upsert {
                node_id,
                base: &op.base,
                seen: op.seen.as_ref(),
                entries,
                meta: &meta,
            };
            upsert(txn, ctx, op).await
        }
        NodeChange::Delete => {
            let node_id = txn.resolve_alias(op.node_id).await?;
            delete(txn, ctx, node_id, &op.base).await
        }
    }
}

/// One upsert, its ids resolved.
struct Upsert<'a> {
    node_id: NodeId,
    base: &'a VersionVector,
    seen: Option<&'a SeenState>,
    /// Where the op puts the node, the first entry first.
    entries: Entries,
    meta: &'a NodeMeta,
}

async fn upsert(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    op: Upsert<'_>,
) -> Result<CommitOutcome, ServerError> {
    let Upsert {
        node_id,
        base,
        seen,
        entries,
        meta,
    } = op;
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
    for (parent, _) in &entries {
        let parent_rec = txn
            .node(*parent)
            .await?
            .ok_or(ServerError::ParentNotFound(*parent))?;
        if parent_rec.meta.kind != NodeKind::Dir {
            return Err(ServerError::ParentNotDir(*parent));
        }
    }
    if let Some(content) = &meta.content {
        check_chunks_owned(txn, content).await?;
    }
    let mut vv = existing.as_ref().map(|s| s.vv.clone()).unwrap_or_default();
    vv.merge(base);
    vv.increment(ctx.device);

    let s = match existing {
        None => {
            if let Some(holder) = same_thing_at(txn, &entries[0], meta).await? {
                return merge_create(txn, ctx, node_id, holder, &entries, meta, vv).await;
            }
            return write_state(txn, ctx, node_id, None, &entries, meta, vv).await;
        }
        Some(s) => s,
    };
    let Some(seen) = seen else {
        // A device without a base (its own create, replayed), or an edit
        // without a base reviving a tombstone (the edit wins): the op's
        // whole state. An edit with a base that revives a tombstone merges
        // like any other, against the node's last state: it brings back
        // the node, not the fields its device had not seen change.
        let fast_forward = s.deleted || s.vv.others_seen_by(base, &ctx.device);
        check_move(txn, node_id, &entries, meta).await?;
        if !fast_forward && content_hash(&s.meta) != content_hash(meta) {
            let (parent, name) = entries[0].clone();
            return conflict_copy(txn, ctx, s, parent, &name, meta).await;
        }
        return write_state(txn, ctx, node_id, Some(&s), &entries, meta, vv).await;
    };
    let mut m = merge(seen, &s, &entries, meta);
    if m.moved && meta.kind == NodeKind::Dir && moves_into_itself(txn, node_id, &m.entries).await? {
        // Two concurrent moves that together would make a cycle (A moves
        // x into y, B moves y into x): the move committed first stands,
        // this one is not applied; both folders stay.
        tracing::info!(node = %node_id, "a concurrent move would make a cycle; keeping the node where it is");
        m.entries = record_entries(&s);
    }
    if m.content_conflict {
        let node = if m.meta != s.meta || m.entries != record_entries(&s) {
            match write_state(txn, ctx, node_id, Some(&s), &m.entries, &m.meta, vv).await? {
                CommitOutcome::Applied { node } | CommitOutcome::Renamed { node } => node,
                other => return Ok(other),
            }
        } else {
            s
        };
        let (parent, name) = (node.parent.unwrap_or(NodeId::ROOT), node.name.clone());
        return conflict_copy(txn, ctx, node, parent, &name, meta).await;
    }
    write_state(txn, ctx, node_id, Some(&s), &m.entries, &m.meta, vv).await
}

/// A folder moved to `entries[0]` would sit inside itself.
async fn moves_into_itself(
    txn: &mut dyn MetaTxn,
    node_id: NodeId,
    entries: &[(NodeId, String)],
) -> Result<bool, ServerError> {
    let parent = entries[0].0;
    Ok(parent == node_id || is_ancestor(txn, node_id, parent).await?)
}

/// A move without a base that would put a folder inside itself is a bad
/// request (a device never asks for it by itself).
async fn check_move(
    txn: &mut dyn MetaTxn,
    node_id: NodeId,
    entries: &[(NodeId, String)],
    meta: &NodeMeta,
) -> Result<(), ServerError> {
    if entries[0].0 == node_id {
        return Err(ServerError::InvalidMove(
            "a folder cannot be moved into itself".into(),
        ));
    }
    if meta.kind == NodeKind::Dir && moves_into_itself(txn, node_id, entries).await? {
        return Err(ServerError::InvalidMove(
            "a folder cannot be moved into its own subtree".into(),
        ));
    }
    Ok(())
}

/// The live node holding `entry` when it is the same thing as a new node
/// of `meta` ([`same_thing`]): two devices made it each.
async fn same_thing_at(
    txn: &mut dyn MetaTxn,
    entry: &(NodeId, String),
    meta: &NodeMeta,
) -> Result<Option<NodeRecord>, ServerError> {
    let Some(holder) = txn.lookup(entry.0, &entry.1).await? else {
        return Ok(None);
    };
    // Only a node nobody changed since it was made (one change in its
    // vector) can be a twin made elsewhere at the same time: a node moved
    // or edited since may be one the creating device already had under
    // another name (found by the commit model).
    let untouched = |h: &NodeRecord| h.vv.iter().map(|(_, n)| *n).sum::<u64>() == 1;
    Ok(txn
        .node(holder)
        .await?
        .filter(|h| !h.deleted && untouched(h) && same_thing(&h.meta, meta)))
}

/// A create that meets the same thing under its name: no copy. The op's
/// id becomes an alias of the holder, which takes the op's attributes
/// (the later commit wins them) and keeps all of its own entries plus the
/// op's others.
async fn merge_create(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    alias: NodeId,
    holder: NodeRecord,
    entries: &[(NodeId, String)],
    meta: &NodeMeta,
    op_vv: VersionVector,
) -> Result<CommitOutcome, ServerError> {
    txn.add_alias(alias, holder.node_id).await?;
    let mut merged_entries = record_entries(&holder);
    for e in entries {
        if !merged_entries.contains(e) && txn.lookup(e.0, &e.1).await?.is_none() {
            merged_entries.push(e.clone());
        }
    }
    let mut meta = meta.clone();
    meta.content = holder.meta.content.clone();
    let mut vv = holder.vv.clone();
    vv.merge(&op_vv);
    match write_state(
        txn,
        ctx,
        holder.node_id,
        Some(&holder),
        &merged_entries,
        &meta,
        vv,
    )
    .await?
    {
        CommitOutcome::Applied { node } | CommitOutcome::Renamed { node } => {
            Ok(CommitOutcome::Merged { node })
        }
        other => Ok(other),
    }
}

/// Writes the node's new state under its entries — each under a conflict
/// name if it is taken by another node — reviving deleted ancestors first.
async fn write_state(
    txn: &mut dyn MetaTxn,
    ctx: &CommitCtx,
    node_id: NodeId,
    previous: Option<&NodeRecord>,
    place: &[(NodeId, String)],
    meta: &NodeMeta,
    vv: VersionVector,
) -> Result<CommitOutcome, ServerError> {
    let mut taken = HashSet::new();
    let mut entries = Vec::new();
    let mut renamed = false;
    // The node that holds the name the first entry asked for, when this
    // node gets a conflict name instead.
    let mut kept_name_by = None;
    for (parent, name) in place {
        let (parent, name) = (*parent, name.as_str());
        restore_ancestors(txn, ctx, parent).await?;
        let mut final_name = free_name(txn, ctx, parent, name, meta.kind, node_id).await?;
        if entries.is_empty() && final_name != name {
            kept_name_by = txn.lookup(parent, name).await?;
        }
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
    let mut meta = meta.clone();
    if let (Some(of), None) = (kept_name_by, &meta.conflict) {
        // Moved aside from a name another node holds: a conflict copy
        // like that of a content conflict, listed and resolved the same.
        meta.conflict = Some(ConflictMark {
            of,
            device: ctx.device_name.clone(),
            at: Timestamp::from_ns(ctx.now_ns),
        });
    }
    let node = NodeRecord {
        node_id,
        parent: Some(first.parent),
        name: first.name,
        links: entries,
        deleted: false,
        meta,
        vv,
        seq: txn.next_seq().await?,
    };
    txn.write_node(&node).await?;
    let previous_hash = previous.and_then(|p| p.meta.content.as_ref().map(|c| c.hash()));
    if let Some(content) = &node.meta.content {
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
            conflict: Some(ConflictMark {
                of: server_node.node_id,
                device: ctx.device_name.clone(),
                at: Timestamp::from_ns(ctx.now_ns),
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

mod merge;
mod names;
mod validate;
use merge::*;
use names::*;
pub use validate::*;

#[cfg(test)]
mod tests;
