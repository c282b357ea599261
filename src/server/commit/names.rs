//! Names and ancestry: free names and conflict names in a folder, the
//! folder-cycle check, and the revival of deleted ancestors.

use super::*;

/// True when `ancestor` is `start` or one of its ancestors.
pub(super) async fn is_ancestor(
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
/// name (or a conflict name if that was taken meanwhile), each with a new
/// version (the committing device's counter moves).
pub(super) async fn restore_ancestors(
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
        let name = free_name(txn, ctx, parent, &node.name, node.meta.kind, node.node_id).await?;
        if name != node.name && node.meta.conflict.is_none() {
            // Another node took the name meanwhile: the revived folder is
            // a conflict copy of it, listed like any other.
            if let Some(of) = txn.lookup(parent, &node.name).await? {
                node.meta.conflict = Some(ConflictMark {
                    of,
                    device: ctx.device_name.clone(),
                    at: Timestamp::from_ns(ctx.now_ns),
                });
            }
        }
        node.name = name;
        node.deleted = false;
        // The revival is a change of the folder by the committing device:
        // a device that deleted it keeps the delete's vector, and a revived
        // record its delete dominates would read there as old news (the
        // folder, and what the server kept in it, would stay gone there).
        node.vv.increment(ctx.device);
        node.seq = txn.next_seq().await?;
        txn.write_node(&node).await?;
    }
    Ok(())
}

/// `name` if it is free in `parent` (or held by `node_id` itself), else
/// the first free conflict name.
pub(super) async fn free_name(
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

pub(super) async fn first_free_conflict_name(
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
pub(super) async fn first_free_conflict_name_except(
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
