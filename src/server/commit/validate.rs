//! The checks of an op that need no store (names, entries, attributes),
//! and the one that needs only the device table (`ids_from`).

use super::*;

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
pub(super) fn validate_entries(
    parent: NodeId,
    name: &str,
    links: &[Link],
    kind: NodeKind,
) -> Result<(), ServerError> {
    let entries =
        std::iter::once((parent, name)).chain(links.iter().map(|l| (l.parent, l.name.as_str())));
    let mut seen = HashSet::new();
    for (p, n) in entries {
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
pub(super) fn normalized(meta: &NodeMeta, device: DeviceId) -> NodeMeta {
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
pub(super) async fn check_ids_from(
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
pub(super) fn kind_name(k: NodeKind) -> &'static str {
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
