//! SQLite engine (the embedded default): one database file in WAL mode.
//!
//! Writers are serialized twice: an in-process async mutex queues this
//! server's writers fairly, and `BEGIN IMMEDIATE` plus a busy timeout
//! covers other processes on the same file (`nimbus admin user add` while
//! the server runs). Readers never wait for writers (WAL).
//!
//! Lock order: `write_lock`, then a pool connection. Readers take only a
//! connection and never the lock; a transaction runs every query on its
//! own connection, so it never waits for a second one.
//!
//! The SQL sticks to what PostgreSQL also accepts (partial unique index,
//! `ON CONFLICT`, `INSERT ... RETURNING`); identifiers are BLOBs (16 bytes
//! for UUIDs, 32 for hashes), JSON is stored as TEXT, times as integer
//! nanoseconds.

use super::{
    Account, AccountId, Device, MetaCounts, MetaError, MetaStore, MetaTxn, NewToken, NewVersion,
    TokenHash, TokenInfo, TokenKind, VersionRecord,
};
use crate::protocol::{
    ChunkId, DeviceId, FileContent, Manifest, NodeId, NodeKind, NodeMeta, NodeRecord, VersionVector,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many ran.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    next_seq      INTEGER NOT NULL DEFAULT 1,
    created_ns    INTEGER NOT NULL
);
CREATE TABLE devices (
    id         BLOB PRIMARY KEY,
    account    INTEGER NOT NULL REFERENCES accounts(id),
    name       TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_account ON devices(account);
CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY,
    account    INTEGER NOT NULL REFERENCES accounts(id),
    device     BLOB NOT NULL REFERENCES devices(id),
    kind       TEXT NOT NULL,
    expires_ns INTEGER NOT NULL
);
CREATE INDEX tokens_expiry ON tokens(expires_ns);
CREATE TABLE nodes (
    account        INTEGER NOT NULL REFERENCES accounts(id),
    id             BLOB NOT NULL,
    kind           TEXT NOT NULL,
    mode           INTEGER NOT NULL,
    mtime_ns       INTEGER NOT NULL,
    size           INTEGER NOT NULL,
    manifest       TEXT,
    content_hash   BLOB,
    symlink_target TEXT,
    vv             TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, id)
);
CREATE INDEX nodes_seq ON nodes(account, seq);
CREATE TABLE entries (
    account INTEGER NOT NULL,
    node    BLOB NOT NULL,
    parent  BLOB NOT NULL,
    name    TEXT NOT NULL,
    live    INTEGER NOT NULL,
    PRIMARY KEY (account, node),
    FOREIGN KEY (account, node) REFERENCES nodes(account, id)
);
CREATE UNIQUE INDEX entries_live_name ON entries(account, parent, name) WHERE live = 1;
CREATE TABLE versions (
    account      INTEGER NOT NULL,
    node         BLOB NOT NULL,
    version      INTEGER NOT NULL,
    manifest     TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_hash BLOB NOT NULL,
    device       BLOB NOT NULL,
    created_ns   INTEGER NOT NULL,
    PRIMARY KEY (account, node, version),
    FOREIGN KEY (account, node) REFERENCES nodes(account, id)
);
CREATE TABLE account_chunks (
    account    INTEGER NOT NULL REFERENCES accounts(id),
    chunk      BLOB NOT NULL,
    len        INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (account, chunk)
);
"#];

/// How many ids go into one `IN (...)` list.
const IN_BATCH: usize = 500;

const NODE_COLUMNS: &str = "n.id, n.kind, n.mode, n.mtime_ns, n.manifest, n.symlink_target, \
     n.vv, n.seq, n.deleted, e.parent, e.name";
const NODE_FROM: &str =
    "FROM nodes n LEFT JOIN entries e ON e.account = n.account AND e.node = n.id";

pub struct SqliteMetaStore {
    pool: SqlitePool,
    /// Queues this process's writers (see the module docs).
    write_lock: Arc<Mutex<()>>,
}

fn backend(e: sqlx::Error) -> MetaError {
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

fn corrupt(what: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt(what.to_string())
}

fn to_i64(v: u64, what: &str) -> Result<i64, MetaError> {
    i64::try_from(v).map_err(|_| corrupt(format!("{what} {v} out of range")))
}

fn uuid_from_blob(b: &[u8]) -> Result<uuid::Uuid, MetaError> {
    uuid::Uuid::from_slice(b).map_err(|_| corrupt("id is not 16 bytes"))
}

fn chunk_from_blob(b: &[u8]) -> Result<ChunkId, MetaError> {
    <[u8; 32]>::try_from(b)
        .map(ChunkId)
        .map_err(|_| corrupt("hash is not 32 bytes"))
}

fn kind_str(k: NodeKind) -> &'static str {
    match k {
        NodeKind::File => "file",
        NodeKind::Dir => "dir",
        NodeKind::Symlink => "symlink",
    }
}

fn kind_from_str(s: &str) -> Result<NodeKind, MetaError> {
    match s {
        "file" => Ok(NodeKind::File),
        "dir" => Ok(NodeKind::Dir),
        "symlink" => Ok(NodeKind::Symlink),
        other => Err(corrupt(format!("unknown node kind '{other}'"))),
    }
}

fn token_kind_str(k: TokenKind) -> &'static str {
    match k {
        TokenKind::Access => "access",
        TokenKind::Refresh => "refresh",
    }
}

fn node_from_row(row: &SqliteRow) -> Result<NodeRecord, MetaError> {
    let id: Vec<u8> = row.try_get("id").map_err(backend)?;
    let kind: String = row.try_get("kind").map_err(backend)?;
    let mode: i64 = row.try_get("mode").map_err(backend)?;
    let mtime_ns: i64 = row.try_get("mtime_ns").map_err(backend)?;
    let manifest: Option<String> = row.try_get("manifest").map_err(backend)?;
    let symlink_target: Option<String> = row.try_get("symlink_target").map_err(backend)?;
    let vv: String = row.try_get("vv").map_err(backend)?;
    let seq: i64 = row.try_get("seq").map_err(backend)?;
    let deleted: bool = row.try_get("deleted").map_err(backend)?;
    let parent: Option<Vec<u8>> = row.try_get("parent").map_err(backend)?;
    let name: Option<String> = row.try_get("name").map_err(backend)?;
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
        deleted,
        meta: NodeMeta {
            kind: kind_from_str(&kind)?,
            mode: u32::try_from(mode).map_err(corrupt)?,
            mtime_ns,
            content,
            symlink_target,
        },
        vv: serde_json::from_str::<VersionVector>(&vv).map_err(corrupt)?,
        seq: u64::try_from(seq).map_err(corrupt)?,
    })
}

fn device_from_row(row: &SqliteRow) -> Result<Device, MetaError> {
    let id: Vec<u8> = row.try_get("id").map_err(backend)?;
    Ok(Device {
        id: DeviceId(uuid_from_blob(&id)?),
        account: AccountId(row.try_get("account").map_err(backend)?),
        name: row.try_get("name").map_err(backend)?,
        created_ns: row.try_get("created_ns").map_err(backend)?,
        revoked: row.try_get("revoked").map_err(backend)?,
    })
}

// ---- queries shared by the pool and the transaction ----------------------

async fn q_node(
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

async fn q_lookup(
    conn: &mut SqliteConnection,
    account: AccountId,
    parent: NodeId,
    name: &str,
) -> Result<Option<NodeId>, MetaError> {
    let row: Option<(Vec<u8>,)> = sqlx::query_as(
        "SELECT node FROM entries WHERE account = ? AND parent = ? AND name = ? AND live = 1",
    )
    .bind(account.0)
    .bind(&parent.as_bytes()[..])
    .bind(name)
    .fetch_optional(conn)
    .await
    .map_err(backend)?;
    row.map(|(b,)| uuid_from_blob(&b).map(NodeId)).transpose()
}

async fn q_owned_chunks(
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

impl SqliteMetaStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit the server acknowledged survives power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open metadata database {}", path.display()))?;
        let store = SqliteMetaStore {
            pool,
            write_lock: Arc::new(Mutex::new(())),
        };
        store
            .migrate()
            .await
            .with_context(|| format!("cannot migrate metadata database {}", path.display()))?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), MetaError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let (version,): (i64,) = sqlx::query_as("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        let done = usize::try_from(version).map_err(corrupt)?;
        if done > MIGRATIONS.len() {
            return Err(corrupt(format!(
                "database schema version {done} is newer than this program ({})",
                MIGRATIONS.len()
            )));
        }
        for m in &MIGRATIONS[done..] {
            sqlx::raw_sql(m).execute(&mut *tx).await.map_err(backend)?;
        }
        if done < MIGRATIONS.len() {
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, MetaError> {
        self.pool.acquire().await.map_err(backend)
    }
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    async fn create_account(
        &self,
        name: &str,
        password_hash: &str,
        now_ns: i64,
    ) -> Result<AccountId, MetaError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let inserted: Result<(i64,), sqlx::Error> = sqlx::query_as(
            "INSERT INTO accounts (name, password_hash, next_seq, created_ns) \
             VALUES (?, ?, 1, ?) RETURNING id",
        )
        .bind(name)
        .bind(password_hash)
        .bind(now_ns)
        .fetch_one(&mut *tx)
        .await;
        let (id,) = match inserted {
            Ok(r) => r,
            Err(sqlx::Error::Database(db))
                if db.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                return Err(MetaError::AccountExists(name.to_owned()))
            }
            Err(e) => return Err(backend(e)),
        };
        let root = NodeRecord {
            node_id: NodeId::ROOT,
            parent: None,
            name: String::new(),
            deleted: false,
            meta: NodeMeta {
                kind: NodeKind::Dir,
                mode: 0o755,
                mtime_ns: now_ns,
                content: None,
                symlink_target: None,
            },
            vv: VersionVector::new(),
            seq: 0,
        };
        write_node(&mut tx, AccountId(id), &root).await?;
        tx.commit().await.map_err(backend)?;
        Ok(AccountId(id))
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, MetaError> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT id, name, password_hash FROM accounts WHERE name = ?")
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        Ok(row.map(|(id, name, password_hash)| Account {
            id: AccountId(id),
            name,
            password_hash,
        }))
    }

    async fn create_device(
        &self,
        account: AccountId,
        name: &str,
        now_ns: i64,
    ) -> Result<DeviceId, MetaError> {
        let id = DeviceId::random();
        let _guard = self.write_lock.lock().await;
        sqlx::query(
            "INSERT INTO devices (id, account, name, created_ns, revoked) VALUES (?, ?, ?, ?, 0)",
        )
        .bind(&id.0.as_bytes()[..])
        .bind(account.0)
        .bind(name)
        .bind(now_ns)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(id)
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, MetaError> {
        sqlx::query("SELECT id, account, name, created_ns, revoked FROM devices WHERE id = ?")
            .bind(&id.0.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(|r| device_from_row(&r))
            .transpose()
    }

    async fn list_devices(&self, account: AccountId) -> Result<Vec<Device>, MetaError> {
        sqlx::query(
            "SELECT id, account, name, created_ns, revoked FROM devices \
             WHERE account = ? ORDER BY created_ns, id",
        )
        .bind(account.0)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(device_from_row)
        .collect()
    }

    async fn revoke_device(&self, account: AccountId, id: DeviceId) -> Result<bool, MetaError> {
        let _guard = self.write_lock.lock().await;
        let r = sqlx::query("UPDATE devices SET revoked = 1 WHERE account = ? AND id = ?")
            .bind(account.0)
            .bind(&id.0.as_bytes()[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    async fn insert_token(&self, token: &NewToken) -> Result<(), MetaError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query(
            "INSERT INTO tokens (hash, account, device, kind, expires_ns) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&token.hash[..])
        .bind(token.account.0)
        .bind(&token.device.0.as_bytes()[..])
        .bind(token_kind_str(token.kind))
        .bind(token.expires_ns)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn token(&self, hash: &TokenHash) -> Result<Option<TokenInfo>, MetaError> {
        let row: Option<(i64, Vec<u8>, String, i64, bool)> = sqlx::query_as(
            "SELECT t.account, t.device, t.kind, t.expires_ns, d.revoked \
             FROM tokens t JOIN devices d ON d.id = t.device WHERE t.hash = ?",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some((account, device, kind, expires_ns, revoked)) = row else {
            return Ok(None);
        };
        let kind = match kind.as_str() {
            "access" => TokenKind::Access,
            "refresh" => TokenKind::Refresh,
            other => return Err(corrupt(format!("unknown token kind '{other}'"))),
        };
        Ok(Some(TokenInfo {
            account: AccountId(account),
            device: DeviceId(uuid_from_blob(&device)?),
            kind,
            expires_ns,
            device_revoked: revoked,
        }))
    }

    async fn delete_expired_tokens(&self, before_ns: i64) -> Result<u64, MetaError> {
        let _guard = self.write_lock.lock().await;
        let r = sqlx::query("DELETE FROM tokens WHERE expires_ns < ?")
            .bind(before_ns)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected())
    }

    async fn add_account_chunk(
        &self,
        account: AccountId,
        id: ChunkId,
        len: u32,
        now_ns: i64,
    ) -> Result<(), MetaError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query(
            "INSERT INTO account_chunks (account, chunk, len, created_ns) VALUES (?, ?, ?, ?) \
             ON CONFLICT (account, chunk) DO NOTHING",
        )
        .bind(account.0)
        .bind(&id.0[..])
        .bind(i64::from(len))
        .bind(now_ns)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn owned_chunks(
        &self,
        account: AccountId,
        ids: &[ChunkId],
    ) -> Result<HashMap<ChunkId, u32>, MetaError> {
        let mut conn = self.conn().await?;
        q_owned_chunks(&mut conn, account, ids).await
    }

    async fn node(&self, account: AccountId, id: NodeId) -> Result<Option<NodeRecord>, MetaError> {
        let mut conn = self.conn().await?;
        q_node(&mut conn, account, id).await
    }

    async fn lookup(
        &self,
        account: AccountId,
        parent: NodeId,
        name: &str,
    ) -> Result<Option<NodeRecord>, MetaError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} {NODE_FROM} \
             WHERE e.account = ? AND e.parent = ? AND e.name = ? AND e.live = 1"
        );
        sqlx::query(&sql)
            .bind(account.0)
            .bind(&parent.as_bytes()[..])
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?
            .map(|r| node_from_row(&r))
            .transpose()
    }

    async fn children(
        &self,
        account: AccountId,
        dir: NodeId,
    ) -> Result<Vec<NodeRecord>, MetaError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} {NODE_FROM} \
             WHERE e.account = ? AND e.parent = ? AND e.live = 1 ORDER BY e.name"
        );
        sqlx::query(&sql)
            .bind(account.0)
            .bind(&dir.as_bytes()[..])
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(node_from_row)
            .collect()
    }

    async fn changes_since(
        &self,
        account: AccountId,
        cursor: u64,
        limit: u32,
    ) -> Result<Vec<NodeRecord>, MetaError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} {NODE_FROM} \
             WHERE n.account = ? AND n.seq > ? ORDER BY n.seq LIMIT ?"
        );
        sqlx::query(&sql)
            .bind(account.0)
            .bind(to_i64(cursor, "cursor").unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?
            .iter()
            .map(node_from_row)
            .collect()
    }

    async fn last_seq(&self, account: AccountId) -> Result<u64, MetaError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT next_seq - 1 FROM accounts WHERE id = ?")
            .bind(account.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let (seq,) = row.ok_or_else(|| corrupt(format!("no account {}", account.0)))?;
        u64::try_from(seq).map_err(corrupt)
    }

    async fn versions(
        &self,
        account: AccountId,
        node: NodeId,
    ) -> Result<Vec<VersionRecord>, MetaError> {
        let rows: Vec<(i64, String, i64, Vec<u8>, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT version, manifest, size, content_hash, device, created_ns FROM versions \
             WHERE account = ? AND node = ? ORDER BY version",
        )
        .bind(account.0)
        .bind(&node.as_bytes()[..])
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter()
            .map(|(version, manifest, size, hash, device, created_ns)| {
                Ok(VersionRecord {
                    version: u64::try_from(version).map_err(corrupt)?,
                    manifest: serde_json::from_str(&manifest).map_err(corrupt)?,
                    size: u64::try_from(size).map_err(corrupt)?,
                    content_hash: chunk_from_blob(&hash)?,
                    device: DeviceId(uuid_from_blob(&device)?),
                    created_ns,
                })
            })
            .collect()
    }

    async fn counts(&self) -> Result<MetaCounts, MetaError> {
        let (accounts, devices, live_nodes): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM accounts), (SELECT COUNT(*) FROM devices), \
             (SELECT COUNT(*) FROM nodes WHERE deleted = 0)",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(MetaCounts {
            accounts: u64::try_from(accounts).map_err(corrupt)?,
            devices: u64::try_from(devices).map_err(corrupt)?,
            live_nodes: u64::try_from(live_nodes).map_err(corrupt)?,
        })
    }

    async fn begin(&self, account: AccountId) -> Result<Box<dyn MetaTxn>, MetaError> {
        let guard = self.write_lock.clone().lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        Ok(Box::new(SqliteTxn {
            tx,
            account,
            _guard: guard,
        }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

async fn write_node(
    conn: &mut SqliteConnection,
    account: AccountId,
    node: &NodeRecord,
) -> Result<(), MetaError> {
    let manifest = node
        .meta
        .content
        .as_ref()
        .map(|c| serde_json::to_string(&c.manifest))
        .transpose()
        .map_err(corrupt)?;
    let hash = node.meta.content.as_ref().map(|c| c.hash().0.to_vec());
    let vv = serde_json::to_string(&node.vv).map_err(corrupt)?;
    sqlx::query(
        "INSERT INTO nodes (account, id, kind, mode, mtime_ns, size, manifest, content_hash, \
             symlink_target, vv, seq, deleted) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (account, id) DO UPDATE SET kind = excluded.kind, mode = excluded.mode, \
             mtime_ns = excluded.mtime_ns, size = excluded.size, manifest = excluded.manifest, \
             content_hash = excluded.content_hash, symlink_target = excluded.symlink_target, \
             vv = excluded.vv, seq = excluded.seq, deleted = excluded.deleted",
    )
    .bind(account.0)
    .bind(&node.node_id.as_bytes()[..])
    .bind(kind_str(node.meta.kind))
    .bind(i64::from(node.meta.mode))
    .bind(node.meta.mtime_ns)
    .bind(to_i64(node.meta.size(), "size")?)
    .bind(manifest)
    .bind(hash)
    .bind(node.meta.symlink_target.as_deref())
    .bind(vv)
    .bind(to_i64(node.seq, "seq")?)
    .bind(node.deleted)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    match node.parent {
        // The root has no entry.
        None => Ok(()),
        Some(parent) => {
            sqlx::query(
                "INSERT INTO entries (account, node, parent, name, live) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (account, node) DO UPDATE SET parent = excluded.parent, \
                     name = excluded.name, live = excluded.live",
            )
            .bind(account.0)
            .bind(&node.node_id.as_bytes()[..])
            .bind(&parent.as_bytes()[..])
            .bind(&node.name)
            .bind(!node.deleted)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
            Ok(())
        }
    }
}

struct SqliteTxn {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    account: AccountId,
    /// Released after the transaction ends (field order: `tx` drops first).
    _guard: OwnedMutexGuard<()>,
}

#[async_trait]
impl MetaTxn for SqliteTxn {
    fn account(&self) -> AccountId {
        self.account
    }

    async fn node(&mut self, id: NodeId) -> Result<Option<NodeRecord>, MetaError> {
        q_node(&mut self.tx, self.account, id).await
    }

    async fn lookup(&mut self, parent: NodeId, name: &str) -> Result<Option<NodeId>, MetaError> {
        q_lookup(&mut self.tx, self.account, parent, name).await
    }

    async fn has_live_children(&mut self, dir: NodeId) -> Result<bool, MetaError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM entries WHERE account = ? AND parent = ? AND live = 1 LIMIT 1",
        )
        .bind(self.account.0)
        .bind(&dir.as_bytes()[..])
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(row.is_some())
    }

    async fn owned_chunks(&mut self, ids: &[ChunkId]) -> Result<HashMap<ChunkId, u32>, MetaError> {
        q_owned_chunks(&mut self.tx, self.account, ids).await
    }

    async fn next_seq(&mut self) -> Result<u64, MetaError> {
        let (seq,): (i64,) = sqlx::query_as(
            "UPDATE accounts SET next_seq = next_seq + 1 WHERE id = ? RETURNING next_seq - 1",
        )
        .bind(self.account.0)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)?;
        u64::try_from(seq).map_err(corrupt)
    }

    async fn write_node(&mut self, node: &NodeRecord) -> Result<(), MetaError> {
        write_node(&mut self.tx, self.account, node).await
    }

    async fn append_version(&mut self, v: &NewVersion) -> Result<u64, MetaError> {
        let content = FileContent {
            manifest: v.manifest.clone(),
        };
        let manifest = serde_json::to_string(&v.manifest).map_err(corrupt)?;
        let (version,): (i64,) = sqlx::query_as(
            "INSERT INTO versions (account, node, version, manifest, size, content_hash, device, \
                 created_ns) \
             SELECT ?, ?, COALESCE(MAX(version), 0) + 1, ?, ?, ?, ?, ? FROM versions \
                 WHERE account = ? AND node = ? \
             RETURNING version",
        )
        .bind(self.account.0)
        .bind(&v.node.as_bytes()[..])
        .bind(manifest)
        .bind(to_i64(content.size(), "size")?)
        .bind(&content.hash().0[..])
        .bind(&v.device.0.as_bytes()[..])
        .bind(v.created_ns)
        .bind(self.account.0)
        .bind(&v.node.as_bytes()[..])
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)?;
        u64::try_from(version).map_err(corrupt)
    }

    async fn commit(self: Box<Self>) -> Result<(), MetaError> {
        let SqliteTxn { tx, _guard, .. } = *self;
        tx.commit().await.map_err(backend)
    }

    async fn rollback(self: Box<Self>) {
        let SqliteTxn { tx, _guard, .. } = *self;
        if let Err(e) = tx.rollback().await {
            tracing::warn!(error = %e, "rollback failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::server::meta_store::suite::meta_store_suite!(
        sqlite_suite,
        |dir: std::path::PathBuf| async move {
            std::sync::Arc::new(
                SqliteMetaStore::open(&dir.join("meta.sqlite"))
                    .await
                    .unwrap(),
            ) as std::sync::Arc<dyn MetaStore>
        }
    );

    #[tokio::test]
    async fn reopen_keeps_data_and_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/meta.sqlite");
        let store = SqliteMetaStore::open(&path).await.unwrap();
        let a = store.create_account("alice", "h", 1).await.unwrap();
        store.close().await;
        let store = SqliteMetaStore::open(&path).await.unwrap();
        assert_eq!(store.account_by_name("alice").await.unwrap().unwrap().id, a);
        let (v,): (i64,) = sqlx::query_as("PRAGMA user_version")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let store = SqliteMetaStore::open(&path).await.unwrap();
        sqlx::raw_sql("PRAGMA user_version = 99")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let err = SqliteMetaStore::open(&path).await.err().unwrap();
        assert!(format!("{err:#}").contains("newer"), "{err:#}");
    }
}
