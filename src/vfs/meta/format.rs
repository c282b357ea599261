//! The store's format version, and the upgrade of stores written by older
//! versions of the client (records are postcard, which has no field names:
//! a new field means a new format and an upgrade here).
//!
//! - Format 1: inodes without ownership, device numbers or access and
//!   birth times; times as `i64` nanoseconds.
//! - Format 2: [`Inode`] as it is. Upgrading from 1 keeps every field,
//!   takes the owner and group to be the account's user (what format 1
//!   showed), and sets access and birth time to the modification time.
//! - Format 3: as 2, plus each folder's subfolder count (`s` keys, see
//!   [`super`]). Upgrading counts the folder entries once.
//! - Format 4: as 3, plus stored extended attributes (`x` keys).
//!   Upgrading writes nothing (a format 3 store has none); the number
//!   changes so that an older client, which would upload its nodes without
//!   their attributes, refuses the store instead.
//! - Format 5 (current): hard links. [`Inode`] ends with `links` (its
//!   other entries) and a journal `Upsert` record (also inside a
//!   quarantined one) with the node's other entries. Upgrading gives every
//!   inode and record an empty list (every node had one entry); an older
//!   client refuses the store instead of misreading a node with links.
//!
//! Waiting records (`W`) are JSON as on the wire; one saved by a client of
//! protocol 1 (`mtime_ns`) is read as protocol 2 by
//! [`waiting_record`], so an upgrade never strands it.
//!
//! The upgrade rewrites every inode (and count) in one batch, then records
//! the format
//! (counter `format`), so an interrupted upgrade runs again from the
//! start. A store of a newer format than this client knows is refused
//! with a clear error, never read as garbage.

use super::{dec, enc, ino_key, key, Dentry, Inode, JournalOp, Quarantined};
use crate::protocol::{
    ContentHash, DeviceId, NodeId, NodeKind, NodeRecord, Timestamp, VersionVector,
};
use crate::vfs::error::{Cause, VfsError, VfsResult};
use crate::vfs::kv::Kv;
use serde::Deserialize;

/// The format this client writes.
pub(super) const CURRENT: u64 = 5;
const FORMAT_KEY: &[u8] = b"format";

/// An inode as format 1 stored it.
// Tests write old stores with the same layout.
#[cfg_attr(test, derive(serde::Serialize))]
#[derive(Deserialize)]
struct InodeV1 {
    ino: u64,
    node_id: NodeId,
    parent: u64,
    name: String,
    kind: NodeKind,
    mode: u32,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    content_hash: Option<ContentHash>,
    symlink_target: Option<String>,
    vv: VersionVector,
    server_seq: u64,
    dirty: bool,
    local_rev: u64,
    synced_rev: u64,
    unlinked: bool,
}

impl From<InodeV1> for Inode {
    fn from(o: InodeV1) -> Inode {
        let mtime = Timestamp::from_ns(o.mtime_ns);
        Inode {
            ino: o.ino,
            node_id: o.node_id,
            parent: o.parent,
            name: o.name,
            kind: o.kind,
            mode: o.mode,
            uid: None,
            gid: None,
            ids_from: None,
            rdev: 0,
            size: o.size,
            atime: mtime,
            mtime,
            ctime: Timestamp::from_ns(o.ctime_ns),
            btime: mtime,
            content_hash: o.content_hash,
            symlink_target: o.symlink_target,
            vv: o.vv,
            server_seq: o.server_seq,
            dirty: o.dirty,
            local_rev: o.local_rev,
            synced_rev: o.synced_rev,
            unlinked: o.unlinked,
            links: Vec::new(),
        }
    }
}

/// An inode as formats 2 and 3 stored it (no `links`).
// Tests write old stores with the same layout.
#[cfg_attr(test, derive(serde::Serialize))]
#[derive(Deserialize)]
struct InodeV3 {
    ino: u64,
    node_id: NodeId,
    parent: u64,
    name: String,
    kind: NodeKind,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
    ids_from: Option<DeviceId>,
    rdev: u32,
    size: u64,
    atime: Timestamp,
    mtime: Timestamp,
    ctime: Timestamp,
    btime: Timestamp,
    content_hash: Option<ContentHash>,
    symlink_target: Option<String>,
    vv: VersionVector,
    server_seq: u64,
    dirty: bool,
    local_rev: u64,
    synced_rev: u64,
    unlinked: bool,
}

impl From<InodeV3> for Inode {
    fn from(o: InodeV3) -> Inode {
        Inode {
            ino: o.ino,
            node_id: o.node_id,
            parent: o.parent,
            name: o.name,
            kind: o.kind,
            mode: o.mode,
            uid: o.uid,
            gid: o.gid,
            ids_from: o.ids_from,
            rdev: o.rdev,
            size: o.size,
            atime: o.atime,
            mtime: o.mtime,
            ctime: o.ctime,
            btime: o.btime,
            content_hash: o.content_hash,
            symlink_target: o.symlink_target,
            vv: o.vv,
            server_seq: o.server_seq,
            dirty: o.dirty,
            local_rev: o.local_rev,
            synced_rev: o.synced_rev,
            unlinked: o.unlinked,
            links: Vec::new(),
        }
    }
}

/// A journal record as formats up to 3 stored it (`Upsert` without links).
// Tests write old stores with the same layout.
#[cfg_attr(test, derive(serde::Serialize))]
#[derive(Deserialize)]
enum JournalOpV3 {
    Upsert {
        ino: u64,
        parent: NodeId,
        name: String,
        moved: bool,
    },
    Delete {
        ino: u64,
        node_id: NodeId,
        base: VersionVector,
        parent: u64,
        name: String,
    },
}

impl From<JournalOpV3> for JournalOp {
    fn from(o: JournalOpV3) -> JournalOp {
        match o {
            JournalOpV3::Upsert {
                ino,
                parent,
                name,
                moved,
            } => JournalOp::Upsert {
                ino,
                parent,
                name,
                moved,
                links: Vec::new(),
            },
            JournalOpV3::Delete {
                ino,
                node_id,
                base,
                parent,
                name,
            } => JournalOp::Delete {
                ino,
                node_id,
                base,
                parent,
                name,
            },
        }
    }
}

/// A quarantined record as formats up to 3 stored it.
// Tests write old stores with the same layout.
#[cfg_attr(test, derive(serde::Serialize))]
#[derive(Deserialize)]
struct QuarantinedV3 {
    op: JournalOpV3,
    path: String,
    reason: String,
    at_unix: i64,
    blocked_by: Option<u64>,
}

/// Every value under `tag`, re-encoded by `convert` (format 4 upgrade).
fn convert_all<Old: serde::de::DeserializeOwned, New: serde::Serialize>(
    kv: &dyn Kv,
    tag: u8,
    convert: impl Fn(Old) -> New,
) -> VfsResult<Vec<crate::vfs::kv::KvWrite>> {
    let mut writes = Vec::new();
    let mut start = vec![tag];
    loop {
        let page = kv.scan(&[tag], &start, 4096)?;
        let Some((last, _)) = page.last() else { break };
        start = last.clone();
        start.push(0);
        for (k, v) in &page {
            writes.push((k.clone(), Some(enc(&convert(dec::<Old>(v)?)))));
        }
    }
    Ok(writes)
}

/// A pulled record saved in the `W` keyspace: protocol 2 JSON, or
/// protocol 1's (`meta.mtime_ns` nanoseconds, no owner, atime and btime
/// taken as the mtime).
pub(super) fn waiting_record(bytes: &[u8]) -> VfsResult<NodeRecord> {
    let corrupt = |e| VfsError::Store(Cause::from_error("corrupt waiting record", e));
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(corrupt)?;
    if let Some(meta) = v.get_mut("meta").and_then(|m| m.as_object_mut()) {
        if let Some(ns) = meta.remove("mtime_ns").and_then(|n| n.as_i64()) {
            let t = serde_json::to_value(Timestamp::from_ns(ns)).map_err(corrupt)?;
            for k in ["mtime", "atime", "btime"] {
                meta.entry(k).or_insert_with(|| t.clone());
            }
        }
    }
    serde_json::from_value(v).map_err(corrupt)
}

/// Brings the store in `kv` to [`CURRENT`]. A new (empty) store is
/// stamped with it.
pub(super) fn upgrade(kv: &dyn Kv) -> VfsResult<()> {
    let format_key = key(b'm', FORMAT_KEY);
    let format: u64 = match kv.get(&format_key)? {
        Some(b) => dec(&b)?,
        // Unstamped: format 1 if it holds inodes, else new.
        None if kv.scan(b"i", b"i", 1)?.is_empty() => CURRENT,
        None => 1,
    };
    if format > CURRENT {
        return Err(VfsError::Store(Cause::from(format!(
            "the metadata cache was written by a newer Nimbus (format {format}; this one \
             reads up to {CURRENT}): upgrade nimbus, or mount with another --cache-dir"
        ))));
    }
    let mut writes = Vec::new();
    if format == 1 {
        let mut start = vec![b'i'];
        loop {
            let page = kv.scan(b"i", &start, 4096)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (_, v) in &page {
                let old: InodeV1 = dec(v)?;
                let inode = Inode::from(old);
                writes.push((ino_key(b'i', inode.ino), Some(enc(&inode))));
            }
        }
        tracing::info!(
            inodes = writes.len(),
            "metadata cache upgraded to format {CURRENT}"
        );
    }
    if format < 3 {
        writes.extend(count_subdirs(kv)?);
    }
    if (2..5).contains(&format) {
        writes.extend(convert_all(kv, b'i', |o: InodeV3| Inode::from(o))?);
    }
    if format < 5 {
        writes.extend(convert_all(kv, b'J', |o: JournalOpV3| JournalOp::from(o))?);
        writes.extend(convert_all(kv, b'Q', |q: QuarantinedV3| Quarantined {
            op: q.op.into(),
            path: q.path,
            reason: q.reason,
            at_unix: q.at_unix,
            blocked_by: q.blocked_by,
        })?);
    }
    if format != CURRENT || kv.get(&format_key)?.is_none() {
        writes.push((format_key, Some(enc(&CURRENT))));
        kv.apply(writes)?;
        kv.flush()?;
    }
    Ok(())
}

/// The `s` key of every folder with subfolders, counted from the entries
/// (format 3).
fn count_subdirs(kv: &dyn Kv) -> VfsResult<Vec<crate::vfs::kv::KvWrite>> {
    let mut counts = std::collections::BTreeMap::<u64, u64>::new();
    let mut start = vec![b'd'];
    loop {
        let page = kv.scan(b"d", &start, 4096)?;
        let Some((last, _)) = page.last() else { break };
        start = last.clone();
        start.push(0);
        for (k, v) in &page {
            let d: Dentry = dec(v)?;
            if d.kind == NodeKind::Dir && k.len() >= 9 {
                let parent = u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"));
                *counts.entry(parent).or_insert(0) += 1;
            }
        }
    }
    Ok(counts
        .into_iter()
        .map(|(ino, n)| (ino_key(b's', ino), Some(enc(&n))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::test_support::CrashKv;

    #[test]
    fn a_format_1_store_is_upgraded_keeping_every_field() {
        let kv = CrashKv::default();
        let node = NodeId::random();
        let old = InodeV1 {
            ino: 7,
            node_id: node,
            parent: 1,
            name: "a.txt".into(),
            kind: NodeKind::File,
            mode: 0o640,
            size: 12,
            mtime_ns: -250_000_000,
            ctime_ns: 5_000_000_001,
            content_hash: None,
            symlink_target: None,
            vv: VersionVector::default(),
            server_seq: 9,
            dirty: true,
            local_rev: 3,
            synced_rev: 2,
            unlinked: false,
        };
        kv.apply(vec![(
            ino_key(b'i', 7),
            Some(postcard::to_allocvec(&old).unwrap()),
        )])
        .unwrap();
        upgrade(&kv).unwrap();
        let new: Inode = dec(&kv.get(&ino_key(b'i', 7)).unwrap().unwrap()).unwrap();
        assert_eq!((new.ino, new.node_id, new.parent), (7, node, 1));
        assert_eq!(
            (new.name.as_str(), new.mode, new.size),
            ("a.txt", 0o640, 12)
        );
        assert_eq!(
            new.mtime,
            Timestamp {
                sec: -1,
                nsec: 750_000_000
            }
        );
        assert_eq!(new.ctime, Timestamp { sec: 5, nsec: 1 });
        assert_eq!((new.atime, new.btime), (new.mtime, new.mtime));
        assert_eq!((new.uid, new.gid, new.rdev), (None, None, 0));
        assert_eq!(
            (new.server_seq, new.dirty, new.local_rev, new.synced_rev),
            (9, true, 3, 2)
        );
        // Stamped: a second open does nothing.
        let stamped = kv.get(&key(b'm', FORMAT_KEY)).unwrap().unwrap();
        assert_eq!(dec::<u64>(&stamped).unwrap(), CURRENT);
        upgrade(&kv).unwrap();
        let again: Inode = dec(&kv.get(&ino_key(b'i', 7)).unwrap().unwrap()).unwrap();
        assert_eq!(again, new);
    }

    #[test]
    fn a_format_2_store_gets_its_subfolder_counts() {
        let kv = CrashKv::default();
        let entry = |parent: u64, name: &str, ino: u64, kind: NodeKind| {
            let mut k = ino_key(b'd', parent);
            k.extend_from_slice(name.as_bytes());
            (k, Some(enc(&Dentry { ino, kind })))
        };
        kv.apply(vec![
            (key(b'm', FORMAT_KEY), Some(enc(&2u64))),
            entry(1, "a", 2, NodeKind::Dir),
            entry(1, "b", 3, NodeKind::Dir),
            entry(1, "f", 4, NodeKind::File),
            entry(2, "c", 5, NodeKind::Dir),
            entry(3, "g", 6, NodeKind::Symlink),
        ])
        .unwrap();
        upgrade(&kv).unwrap();
        let count = |ino| {
            kv.get(&ino_key(b's', ino))
                .unwrap()
                .map(|b| dec::<u64>(&b).unwrap())
        };
        assert_eq!((count(1), count(2), count(3)), (Some(2), Some(1), None));
        let stamped = kv.get(&key(b'm', FORMAT_KEY)).unwrap().unwrap();
        assert_eq!(dec::<u64>(&stamped).unwrap(), CURRENT);
    }

    #[test]
    fn a_format_3_or_4_store_gets_empty_links_on_inodes_and_journal_records() {
        for format in [3u64, 4] {
            links_upgrade_from(format);
        }
    }

    fn links_upgrade_from(format: u64) {
        let kv = CrashKv::default();
        let node = NodeId::random();
        let t = Timestamp { sec: 7, nsec: 9 };
        let old = InodeV3 {
            ino: 5,
            node_id: node,
            parent: 1,
            name: "f".into(),
            kind: NodeKind::File,
            mode: 0o600,
            uid: Some(1000),
            gid: None,
            ids_from: None,
            rdev: 0,
            size: 3,
            atime: t,
            mtime: t,
            ctime: t,
            btime: t,
            content_hash: None,
            symlink_target: None,
            vv: VersionVector::default(),
            server_seq: 4,
            dirty: true,
            local_rev: 2,
            synced_rev: 1,
            unlinked: false,
        };
        let op = || JournalOpV3::Upsert {
            ino: 5,
            parent: NodeId::ROOT,
            name: "f".into(),
            moved: true,
        };
        kv.apply(vec![
            (key(b'm', FORMAT_KEY), Some(enc(&format))),
            (ino_key(b'i', 5), Some(old_bytes(&old))),
            (ino_key(b'J', 1), Some(old_bytes(&op()))),
            (
                ino_key(b'Q', 2),
                Some(old_bytes(&QuarantinedV3 {
                    op: op(),
                    path: "f".into(),
                    reason: "no".into(),
                    at_unix: 1,
                    blocked_by: None,
                })),
            ),
        ])
        .unwrap();
        upgrade(&kv).unwrap();
        let new: Inode = dec(&kv.get(&ino_key(b'i', 5)).unwrap().unwrap()).unwrap();
        assert_eq!(
            (new.node_id, new.name.as_str(), new.uid),
            (node, "f", Some(1000))
        );
        assert_eq!((new.size, new.local_rev, new.mtime), (3, 2, t));
        assert!(new.links.is_empty());
        let want = JournalOp::Upsert {
            ino: 5,
            parent: NodeId::ROOT,
            name: "f".into(),
            moved: true,
            links: Vec::new(),
        };
        let rec: JournalOp = dec(&kv.get(&ino_key(b'J', 1)).unwrap().unwrap()).unwrap();
        assert_eq!(rec, want);
        let q: Quarantined = dec(&kv.get(&ino_key(b'Q', 2)).unwrap().unwrap()).unwrap();
        assert_eq!((q.op, q.reason.as_str()), (want, "no"));
        let stamped = kv.get(&key(b'm', FORMAT_KEY)).unwrap().unwrap();
        assert_eq!(dec::<u64>(&stamped).unwrap(), CURRENT);
    }

    /// Postcard bytes of a record in an old layout.
    fn old_bytes<T: serde::Serialize>(v: &T) -> Vec<u8> {
        postcard::to_allocvec(v).unwrap()
    }

    #[test]
    fn a_format_3_store_is_stamped_current_and_keeps_everything() {
        let kv = CrashKv::default();
        let entry = (
            ino_key(b'd', 1),
            Some(enc(&Dentry {
                ino: 2,
                kind: NodeKind::Dir,
            })),
        );
        kv.apply(vec![
            (key(b'm', FORMAT_KEY), Some(enc(&3u64))),
            entry.clone(),
            (ino_key(b's', 1), Some(enc(&1u64))),
        ])
        .unwrap();
        upgrade(&kv).unwrap();
        let stamped = kv.get(&key(b'm', FORMAT_KEY)).unwrap().unwrap();
        assert_eq!((CURRENT, dec::<u64>(&stamped).unwrap()), (5, 5));
        assert_eq!(kv.get(&entry.0).unwrap(), entry.1);
        assert_eq!(kv.get(&ino_key(b's', 1)).unwrap(), Some(enc(&1u64)));
        assert!(kv.scan(b"x", b"x", 1).unwrap().is_empty(), "no attributes");
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused_clearly() {
        let kv = CrashKv::default();
        kv.apply(vec![(key(b'm', FORMAT_KEY), Some(enc(&(CURRENT + 1))))])
            .unwrap();
        let e = upgrade(&kv).unwrap_err().to_string();
        assert!(e.contains("newer Nimbus"), "{e}");
    }

    #[test]
    fn a_new_store_is_stamped_current() {
        let kv = CrashKv::default();
        upgrade(&kv).unwrap();
        let stamped = kv.get(&key(b'm', FORMAT_KEY)).unwrap().unwrap();
        assert_eq!(dec::<u64>(&stamped).unwrap(), CURRENT);
    }

    #[test]
    fn a_waiting_record_of_protocol_1_reads_as_protocol_2() {
        let old = br#"{"node_id":"00000000-0000-0000-0000-000000000001","parent":null,
            "name":"a","deleted":false,"vv":{},"seq":3,
            "meta":{"kind":"dir","mode":493,"mtime_ns":-250000000}}"#;
        let rec = waiting_record(old).unwrap();
        let t = Timestamp::from_ns(-250_000_000);
        assert_eq!((rec.meta.mtime, rec.meta.atime, rec.meta.btime), (t, t, t));
        let new = serde_json::to_vec(&rec).unwrap();
        assert_eq!(waiting_record(&new).unwrap(), rec);
    }
}
