//! Between SQLite rows and the store's types: error mapping, blob and
//! enum conversions, and the shared node queries.

use super::super::{AccountId, Device, MetaError, TokenKind};
use crate::protocol::{
    ChunkId, DeviceId, FileContent, Link, Manifest, NodeId, NodeKind, NodeMeta, NodeRecord,
    Timestamp, VersionVector,
};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::Row;
use std::collections::HashMap;

/// How many ids go into one `IN (...)` list.
pub(super) const IN_BATCH: usize = 500;

pub(super) const NODE_COLUMNS: &str =
    "n.id, n.kind, n.mode, n.uid, n.gid, n.ids_from, n.rdev, n.mtime_sec, n.mtime_nsec, \
     n.atime_sec, n.atime_nsec, n.btime_sec, n.btime_nsec, n.manifest, n.symlink_target, \
     n.xattrs, n.conflict, n.vv, n.seq, n.deleted, n.links, e.parent, e.name";
pub(super) const NODE_FROM: &str =
    "FROM nodes n LEFT JOIN entries e ON e.account = n.account AND e.node = n.id";

pub(super) fn backend(e: sqlx::Error) -> MetaError {
    match &e {
        sqlx::Error::Database(db) => {
            let primary = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            // SQLITE_BUSY = 5, SQLITE_LOCKED = 6.
            if matches!(primary, Some(5) | Some(6)) {
                return MetaError::Busy(db.message().to_owned());
            }
            MetaError::Backend(Box::new(e))
        }
        sqlx::Error::PoolTimedOut => MetaError::Busy("no database connection free".into()),
        _ => MetaError::Backend(Box::new(e)),
    }
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt(what.to_string())
}

pub(super) fn to_i64(v: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(v).map_err(|_| corrupt(format!("{what} {v} out of range")))
}

pub(super) fn uuid_from_blob(b: &[u8]) -> Result<uuid::Uuid, MetaError> {
    uuid::Uuid::from_slice(b).map_err(|_| corrupt("id is not 16 bytes"))
}

pub(super) fn chunk_from_blob(b: &[u8]) -> Result<ChunkId, MetaError> {
    <[u8; 32]>::try_from(b)
        .map(ChunkId)
        .map_err(|_| corrupt("hash is not 32 bytes"))
}

/// The `kind` column: the wire name ([`NodeKind::as_str`]).
pub(super) fn kind_str(k: NodeKind) -> &'static str {
    k.as_str()
}

pub(super) fn kind_from_str(s: &str) -> Result<NodeKind, MetaError> {
    NodeKind::from_name(s).ok_or_else(|| corrupt(format!("unknown node kind '{s}'")))
}

/// A time stored as `<prefix>_sec`, `<prefix>_nsec`.
fn time_from_row(row: &SqliteRow, sec: &str, nsec: &str) -> Result<Timestamp, MetaError> {
    let t = Timestamp {
        sec: row.try_get(sec).map_err(backend)?,
        nsec: u32::try_from(row.try_get::<i64, _>(nsec).map_err(backend)?).map_err(corrupt)?,
    };
    if t.is_valid() {
        Ok(t)
    } else {
        Err(corrupt(format!("{nsec} {} out of range", t.nsec)))
    }
}

fn id_from_row(row: &SqliteRow, col: &str) -> Result<Option<u32>, MetaError> {
    let v: Option<i64> = row.try_get(col).map_err(backend)?;
    v.map(|v| u32::try_from(v).map_err(corrupt)).transpose()
}

pub(super) fn token_kind_str(k: TokenKind) -> &'static str {
    match k {
        TokenKind::Access => "access",
        TokenKind::Refresh => "refresh",
    }
}

pub(super) fn node_from_row(row: &SqliteRow) -> Result<NodeRecord, MetaError> {
    let id: Vec<u8> = row.try_get("id").map_err(backend)?;
    let kind: String = row.try_get("kind").map_err(backend)?;
    let mode: i64 = row.try_get("mode").map_err(backend)?;
    let ids_from: Option<Vec<u8>> = row.try_get("ids_from").map_err(backend)?;
    let rdev: i64 = row.try_get("rdev").map_err(backend)?;
    let manifest: Option<String> = row.try_get("manifest").map_err(backend)?;
    let symlink_target: Option<String> = row.try_get("symlink_target").map_err(backend)?;
    let xattrs: Option<String> = row.try_get("xattrs").map_err(backend)?;
    let conflict: Option<String> = row.try_get("conflict").map_err(backend)?;
    let vv: String = row.try_get("vv").map_err(backend)?;
    let seq: i64 = row.try_get("seq").map_err(backend)?;
    let deleted: bool = row.try_get("deleted").map_err(backend)?;
    let parent: Option<Vec<u8>> = row.try_get("parent").map_err(backend)?;
    let name: Option<String> = row.try_get("name").map_err(backend)?;
    let links: Option<String> = row.try_get("links").map_err(backend)?;
    let links = match links {
        Some(l) => serde_json::from_str::<Vec<Link>>(&l).map_err(corrupt)?,
        None => Vec::new(),
    };
    let content = match manifest {
        Some(m) => Some(FileContent {
            manifest: serde_json::from_str::<Manifest>(&m).map_err(corrupt)?,
        }),
        None => None,
    };
    Ok(NodeRecord {
        node_id: NodeId(uuid_from_blob(&id)?),
        parent: parent.map(|p| uuid_from_blob(&p).map(NodeId)).transpose()?,
        name: name.unwrap_or_default(),
        links,
        deleted,
        meta: NodeMeta {
            kind: kind_from_str(&kind)?,
            mode: u32::try_from(mode).map_err(corrupt)?,
            mtime: time_from_row(row, "mtime_sec", "mtime_nsec")?,
            atime: time_from_row(row, "atime_sec", "atime_nsec")?,
            btime: time_from_row(row, "btime_sec", "btime_nsec")?,
            uid: id_from_row(row, "uid")?,
            gid: id_from_row(row, "gid")?,
            ids_from: ids_from
                .map(|b| uuid_from_blob(&b).map(DeviceId))
                .transpose()?,
            rdev: u32::try_from(rdev).map_err(corrupt)?,
            content,
            symlink_target,
            xattrs: match xattrs {
                Some(x) => serde_json::from_str(&x).map_err(corrupt)?,
                None => Default::default(),
            },
            conflict: conflict
                .map(|c| serde_json::from_str(&c).map_err(corrupt))
                .transpose()?,
        },
        vv: serde_json::from_str::<VersionVector>(&vv).map_err(corrupt)?,
        seq: u64::try_from(seq).map_err(corrupt)?,
    })
}

/// The columns [`device_from_row`] reads.
pub(super) const DEVICE_COLUMNS: &str =
    "id, account, name, created_ns, revoked, last_seen_ns, platform";

pub(super) fn device_from_row(row: &SqliteRow) -> Result<Device, MetaError> {
    let id: Vec<u8> = row.try_get("id").map_err(backend)?;
    Ok(Device {
        id: DeviceId(uuid_from_blob(&id)?),
        account: AccountId(row.try_get("account").map_err(backend)?),
        name: row.try_get("name").map_err(backend)?,
        created_ns: row.try_get("created_ns").map_err(backend)?,
        revoked: row.try_get("revoked").map_err(backend)?,
        last_seen_ns: row.try_get("last_seen_ns").map_err(backend)?,
        platform: row.try_get("platform").map_err(backend)?,
    })
}

// ---- queries shared by the pool and the transaction ----------------------

pub(super) async fn q_node(
    conn: &mut SqliteConnection,
    account: AccountId,
    id: NodeId,
) -> Result<Option<NodeRecord>, MetaError> {
    let sql = format!("SELECT {NODE_COLUMNS} {NODE_FROM} WHERE n.account = ? AND n.id = ?");
    sqlx::query(&sql)
        .bind(account.0)
        .bind(&id.as_bytes()[..])
        .fetch_optional(conn)
        .await
        .map_err(backend)?
        .map(|r| node_from_row(&r))
        .transpose()
}

pub(super) async fn q_lookup(
    conn: &mut SqliteConnection,
    account: AccountId,
    parent: NodeId,
    name: &str,
) -> Result<Option<NodeId>, MetaError> {
    let row: Option<(Vec<u8>,)> = sqlx::query_as(
        "SELECT node FROM entries WHERE account = ?1 AND parent = ?2 AND name = ?3 AND live = 1 \
         UNION ALL SELECT node FROM links WHERE account = ?1 AND parent = ?2 AND name = ?3 \
         LIMIT 1",
    )
    .bind(account.0)
    .bind(&parent.as_bytes()[..])
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(backend)?;
    row.map(|(b,)| uuid_from_blob(&b).map(NodeId)).transpose()
}

pub(super) async fn q_owned_chunks(
    conn: &mut SqliteConnection,
    account: AccountId,
    ids: &[ChunkId],
) -> Result<HashMap<ChunkId, u32>, MetaError> {
    let mut out = HashMap::new();
    for batch in ids.chunks(IN_BATCH) {
        let marks = vec!["?"; batch.len()].join(",");
        let sql = format!(
            "SELECT chunk, len FROM account_chunks WHERE account = ? AND chunk IN ({marks})"
        );
        let mut q = sqlx::query_as::<_, (Vec<u8>, i64)>(&sql).bind(account.0);
        for id in batch {
            q = q.bind(&id.0[..]);
        }
        for (chunk, len) in q.fetch_all(&mut *conn).await.map_err(backend)? {
            out.insert(
                chunk_from_blob(&chunk)?,
                u32::try_from(len).map_err(corrupt)?,
            );
        }
    }
    Ok(out)
}
