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
        meta: meta.clone(),
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

mod names;
mod validate;
use names::*;
pub use validate::*;

#[cfg(test)]
mod tests;
