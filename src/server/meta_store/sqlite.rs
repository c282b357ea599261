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
    Account, AccountId, AccountUsage, Device, MetaCounts, MetaError, MetaStore, MetaTxn, NewToken,
    Rotation, TokenHash, TokenInfo, VersionRecord,
};
use crate::protocol::{
    ChunkId, DeviceId, NodeId, NodeKind, NodeMeta, NodeRecord, Timestamp, VersionVector,
};
use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

mod rows;
mod schema;
mod sessions;
mod txn;
use rows::*;

/// The SQLite [`MetaStore`] (see the module docs).
pub struct SqliteMetaStore {
    pool: SqlitePool,
    /// Queues this process's writers (see the module docs).
    write_lock: Arc<Mutex<()>>,
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
        // Two processes opening one new file at once can meet SQLITE_BUSY
        // that the busy timeout does not cover: SQLite answers it at once
        // instead of waiting where waiting could deadlock (both converting
        // the file to WAL). Its documented remedy is to retry, so the whole
        // open is retried with backoff for up to ~10 s.
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(500))
            .with_max_times(30)
            .with_jitter()
            .build();
        loop {
            let err = match Self::open_once(path).await {
                Ok(store) => return Ok(store),
                Err(e) => e,
            };
            match (&err.0, backoff.next()) {
                (MetaError::Busy(_), Some(delay)) => tokio::time::sleep(delay).await,
                _ => {
                    return Err(anyhow::Error::new(err.0).context(format!(
                        "cannot {} metadata database {}",
                        err.1,
                        path.display()
                    )))
                }
            }
        }
    }

    /// One attempt of [`Self::open`]; the error names the failed step.
    async fn open_once(path: &Path) -> Result<Self, (MetaError, &'static str)> {
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
            .map_err(|e| (backend(e), "open"))?;
        let store = SqliteMetaStore {
            pool,
            write_lock: Arc::new(Mutex::new(())),
        };
        if let Err(e) = store.migrate().await {
            store.pool.close().await;
            return Err((e, "migrate"));
        }
        Ok(store)
    }

    /// Runs the schema migrations ([`schema::migrate`]) under the write
    /// lock.
    async fn migrate(&self) -> Result<(), MetaError> {
        let _guard = self.write_lock.lock().await;
        schema::migrate(&self.pool).await
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
            links: Vec::new(),
            deleted: false,
            meta: NodeMeta::new(NodeKind::Dir, 0o755, Timestamp::from_ns(now_ns)),
            vv: VersionVector::new(),
            seq: 0,
        };
        txn::write_root(&mut tx, AccountId(id), &root).await?;
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

    async fn account(&self, id: AccountId) -> Result<Option<Account>, MetaError> {
        self.account_by_id(id).await
    }

    async fn set_password_hash(&self, id: AccountId, password_hash: &str) -> Result<(), MetaError> {
        self.update_password_hash(id, password_hash).await
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
        sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?"
        ))
        .bind(&id.0.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?
        .map(|r| device_from_row(&r))
        .transpose()
    }

    async fn list_devices(&self, account: AccountId) -> Result<Vec<Device>, MetaError> {
        sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE account = ? ORDER BY created_ns, id"
        ))
        .bind(account.0)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(device_from_row)
        .collect()
    }

    async fn revoke_device(&self, account: AccountId, id: DeviceId) -> Result<bool, MetaError> {
        self.set_device_revoked(account, id, true).await
    }

    async fn reinstate_device(&self, account: AccountId, id: DeviceId) -> Result<bool, MetaError> {
        self.set_device_revoked(account, id, false).await
    }

    async fn touch_device(
        &self,
        id: DeviceId,
        platform: Option<&str>,
        now_ns: i64,
    ) -> Result<(), MetaError> {
        self.touch_device_row(id, platform, now_ns).await
    }

    async fn delete_device_tokens(&self, id: DeviceId) -> Result<u64, MetaError> {
        self.delete_tokens_of_device(id).await
    }

    async fn delete_other_devices_tokens(
        &self,
        account: AccountId,
        keep: DeviceId,
    ) -> Result<u64, MetaError> {
        self.delete_tokens_except_device(account, keep).await
    }

    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        successor: &[u8],
        new: &[NewToken],
        now_ns: i64,
        keep_until_ns: i64,
    ) -> Result<Rotation, MetaError> {
        self.rotate(old, successor, new, now_ns, keep_until_ns)
            .await
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
        self.token_info(hash).await
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
        let mut conn = self.conn().await?;
        match q_lookup(&mut conn, account, parent, name).await? {
            Some(id) => q_node(&mut conn, account, id).await,
            None => Ok(None),
        }
    }

    async fn children(
        &self,
        account: AccountId,
        dir: NodeId,
    ) -> Result<Vec<NodeRecord>, MetaError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} {NODE_FROM} \
             WHERE n.account = ?1 AND n.id IN ( \
                 SELECT node FROM entries WHERE account = ?1 AND parent = ?2 AND live = 1 \
                 UNION SELECT node FROM links WHERE account = ?1 AND parent = ?2) \
             ORDER BY e.name"
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

    async fn account_usage(&self, account: AccountId) -> Result<AccountUsage, MetaError> {
        let (file_bytes, nodes): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN kind = 'file' THEN size ELSE 0 END), 0), COUNT(*) \
             FROM nodes WHERE account = ? AND deleted = 0",
        )
        .bind(account.0)
        .fetch_one(&self.pool)
        .await
        .map_err(backend)?;
        Ok(AccountUsage {
            file_bytes: u64::try_from(file_bytes).map_err(corrupt)?,
            nodes: u64::try_from(nodes).map_err(corrupt)?,
        })
    }

    async fn begin(&self, account: AccountId) -> Result<Box<dyn MetaTxn>, MetaError> {
        let guard = self.write_lock.clone().lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        Ok(Box::new(txn::SqliteTxn::new(tx, account, guard)))
    }

    async fn close(&self) {
        self.pool.close().await;
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
        assert_eq!(v, schema::latest_version());
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(n, schema::MIGRATOR.iter().count() as i64);
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }

    /// Openers of one new file at once (the server and `nimbus admin
    /// user add`): one migrates, the others find it done. SQLite answers
    /// some of these races with an immediate SQLITE_BUSY, so several
    /// rounds of three openers exercise the retry in `open`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn concurrent_opens_of_a_new_file_all_succeed() {
        for round in 0..8 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("meta.sqlite");
            let (a, b, c) = tokio::join!(
                SqliteMetaStore::open(&path),
                SqliteMetaStore::open(&path),
                SqliteMetaStore::open(&path)
            );
            let (a, b, c) = (
                a.unwrap_or_else(|e| panic!("round {round}: {e:#}")),
                b.unwrap_or_else(|e| panic!("round {round}: {e:#}")),
                c.unwrap_or_else(|e| panic!("round {round}: {e:#}")),
            );
            a.create_account("alice", "h", 1).await.unwrap();
            assert!(b.account_by_name("alice").await.unwrap().is_some());
            assert!(c.account_by_name("alice").await.unwrap().is_some());
            a.close().await;
            b.close().await;
            c.close().await;
        }
    }
}
