//! The SQLite schema, as versioned migrations run by sqlx's migrator.
//!
//! # Files
//! Each schema change is one file in `sqlite/migrations/`, named
//! `NNNN_description.sql`; `NNNN` is its version (1, 2, ...). An applied
//! migration is never edited: sqlx records its checksum in the
//! `_sqlx_migrations` table and refuses a database whose applied
//! migrations changed. A change is the next file.
//!
//! # Opening a database ([`migrate`])
//! Everything runs in one `BEGIN IMMEDIATE` transaction (sqlx's own
//! migration lock is a no-op on SQLite), so two processes opening the same
//! new file (`nimbus serve` and `nimbus admin user add`) never both apply a
//! migration, and a failed migration leaves the database as it was.
//! - A database **newer** than this program (an applied migration, or a
//!   `PRAGMA user_version`, above the latest migration known here) is
//!   refused with [`MetaError::SchemaTooNew`] naming both versions; nothing
//!   is run.
//! - A database of the **hand-rolled migrations** that came before (no
//!   `_sqlx_migrations` table, `PRAGMA user_version = N` counting the steps
//!   applied) is adopted: migrations `1..=N` (the same SQL, step for step)
//!   are recorded as applied, then the later ones run.
//! - Then sqlx's migrator applies what is missing and checks the
//!   checksums of what was applied.
//! - Finally `PRAGMA user_version` is set to the latest version, so a
//!   program of the hand-rolled era (which refuses a `user_version` above
//!   its own step count) refuses a database that a later migration changed
//!   instead of running on a schema it does not know.
//!
//! # Rebuilds
//! `sqlx::migrate!` embeds the files at compile time through
//! `include_str!`, so cargo rebuilds when an existing file changes, but not
//! when a file is *added* (that would need a build script, and the top
//! level holds none). After adding a migration, touch this file (or any
//! file of the crate) before building; the test
//! `embedded_migrations_match_the_directory` fails on a stale build.

use super::super::MetaError;
use super::rows::{backend, corrupt};
use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{SqliteConnection, SqlitePool};

/// The migrations of `sqlite/migrations/`, embedded at compile time.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("src/server/meta_store/sqlite/migrations");

/// The version of the newest migration this program knows (0 if none).
pub(super) fn latest_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Brings the database up to [`latest_version`]: adopts a database of the
/// hand-rolled migrations, refuses a newer one, applies what is missing
/// (see the module docs). The caller holds the store's write lock.
pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), MetaError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    let latest = latest_version();
    let user_version = user_version(&mut tx).await?;
    let applied = applied_versions(&mut tx).await?;
    let newest = applied
        .iter()
        .flatten()
        .copied()
        .chain([user_version])
        .max()
        .unwrap_or(0);
    if newest > latest {
        return Err(MetaError::SchemaTooNew {
            found: newest,
            known: latest,
        });
    }
    if applied.is_none() && user_version > 0 {
        adopt_hand_rolled(&mut tx, user_version).await?;
    }
    MIGRATOR.run(&mut *tx).await.map_err(migrate_error)?;
    if user_version != latest {
        // PRAGMA takes no bound parameters; `latest` is an integer.
        sqlx::raw_sql(&format!("PRAGMA user_version = {latest}"))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}

async fn user_version(conn: &mut SqliteConnection) -> Result<i64, MetaError> {
    let (v,): (i64,) = sqlx::query_as("PRAGMA user_version")
        .fetch_one(conn)
        .await
        .map_err(backend)?;
    Ok(v)
}

/// The versions recorded in `_sqlx_migrations`, or `None` when the table
/// does not exist (a new database, or one of the hand-rolled migrations).
async fn applied_versions(conn: &mut SqliteConnection) -> Result<Option<Vec<i64>>, MetaError> {
    let exists: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows: Vec<(i64,)> = sqlx::query_as("SELECT version FROM _sqlx_migrations")
        .fetch_all(conn)
        .await
        .map_err(backend)?;
    Ok(Some(rows.into_iter().map(|(v,)| v).collect()))
}

/// Records migrations `1..=steps` as applied: the hand-rolled migration
/// number `i` is the file with version `i`, the same SQL.
async fn adopt_hand_rolled(conn: &mut SqliteConnection, steps: i64) -> Result<(), MetaError> {
    conn.ensure_migrations_table()
        .await
        .map_err(migrate_error)?;
    for m in MIGRATOR.iter().filter(|m| m.version <= steps) {
        sqlx::query(
            "INSERT INTO _sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
             VALUES (?, ?, TRUE, ?, 0)",
        )
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    }
    tracing::info!(
        steps,
        "adopted a metadata database of the hand-rolled migrations"
    );
    Ok(())
}

fn migrate_error(e: MigrateError) -> MetaError {
    match e {
        MigrateError::Execute(e) => backend(e),
        MigrateError::VersionMissing(v) => corrupt(format!(
            "the database has migration {v} applied, which this program does not know \
             (it knows 1 to {}): it was written by another build of nimbus",
            latest_version()
        )),
        other => MetaError::Backend(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::SqliteMetaStore;
    use super::*;
    use crate::server::meta_store::MetaStore;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection};
    use std::path::Path;

    /// A new file like the program before sqlx migrations made it.
    async fn create_hand_rolled(path: &Path) -> SqliteConnection {
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        // The old `MIGRATIONS[0]`, which 0001 holds unchanged.
        sqlx::raw_sql(include_str!("migrations/0001_initial.sql"))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql("PRAGMA user_version = 1")
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }

    #[test]
    fn embedded_migrations_match_the_directory() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server/meta_store/sqlite/migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let embedded: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(
            files.len(),
            embedded.len(),
            "migration files {files:?}, embedded versions {embedded:?}: a stale build \
             (touch src/server/meta_store/sqlite/schema.rs and rebuild)"
        );
        // Versions are the files' numbers: 1, 2, 3, … without a gap (the
        // hand-rolled step count maps onto the first ones).
        let numbers: Vec<i64> = files
            .iter()
            .map(|f| f.split('_').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(embedded, numbers);
        assert_eq!(embedded, (1..=embedded.len() as i64).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_database_of_the_hand_rolled_migrations_is_adopted_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let mut old = create_hand_rolled(&path).await;
        sqlx::raw_sql(
            "INSERT INTO accounts (id, name, password_hash, next_seq, created_ns) \
                 VALUES (7, 'alice', 'phc', 5, 1); \
             INSERT INTO devices (id, account, name, created_ns, revoked) \
                 VALUES (x'00112233445566778899aabbccddeeff', 7, 'laptop', 2, 0);",
        )
        .execute(&mut old)
        .await
        .unwrap();
        old.close().await.unwrap();

        let store = SqliteMetaStore::open(&path).await.unwrap();
        let alice = store.account_by_name("alice").await.unwrap().unwrap();
        assert_eq!(alice.password_hash, "phc");
        let devices = store.list_devices(alice.id).await.unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].name, "laptop");
        // The store works on it: a new account gets its root folder.
        store.create_account("bob", "h", 3).await.unwrap();
        let applied: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let latest = latest_version();
        let known: Vec<(i64, bool)> = MIGRATOR.iter().map(|m| (m.version, true)).collect();
        assert_eq!(applied, known);
        assert_eq!(
            user_version(&mut store.pool.acquire().await.unwrap())
                .await
                .unwrap(),
            latest
        );
        store.close().await;

        // Opening it again is a no-op that keeps everything.
        let store = SqliteMetaStore::open(&path).await.unwrap();
        assert!(store.account_by_name("bob").await.unwrap().is_some());
        assert_eq!(
            store.account_by_name("alice").await.unwrap().unwrap().id,
            alice.id
        );
        store.close().await;
    }

    #[tokio::test]
    async fn a_database_with_an_unknown_later_migration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let store = SqliteMetaStore::open(&path).await.unwrap();
        let next = latest_version() + 1;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                 execution_time) VALUES (?, 'from the future', TRUE, x'00', 0)",
        )
        .bind(next)
        .execute(&store.pool)
        .await
        .unwrap();
        store.close().await;
        let err = SqliteMetaStore::open(&path).await.err().unwrap();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("version {next}"))
                && msg.contains(&format!("up to version {}", next - 1)),
            "{msg}"
        );
        assert!(msg.contains("newer"), "{msg}");
    }

    #[tokio::test]
    async fn a_hand_rolled_database_newer_than_the_migrations_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let mut old = create_hand_rolled(&path).await;
        sqlx::raw_sql(&format!("PRAGMA user_version = {}", latest_version() + 1))
            .execute(&mut old)
            .await
            .unwrap();
        old.close().await.unwrap();
        let err = SqliteMetaStore::open(&path).await.err().unwrap();
        assert!(
            matches!(
                err.downcast_ref::<MetaError>(),
                Some(MetaError::SchemaTooNew { .. })
            ),
            "{err:#}"
        );
        // Nothing was run: no sqlx table appeared.
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        assert_eq!(applied_versions(&mut conn).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_version_1_database_keeps_every_mtime_exactly() {
        use crate::protocol::{NodeId, Timestamp};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.sqlite");
        let mut old = create_hand_rolled(&path).await;
        sqlx::raw_sql(
            "INSERT INTO accounts (id, name, password_hash, next_seq, created_ns) \
                 VALUES (7, 'alice', 'phc', 9, 1);",
        )
        .execute(&mut old)
        .await
        .unwrap();
        let times = [
            -250_000_000,
            -1,
            -2_208_988_800_000_000_000,
            0,
            1_700_000_000_123_456_789,
            i64::MIN,
            i64::MAX,
        ];
        let mut ids = Vec::new();
        for (i, ns) in times.iter().enumerate() {
            let id = NodeId::random();
            ids.push(id);
            sqlx::query(
                "INSERT INTO nodes (account, id, kind, mode, mtime_ns, size, vv, seq) \
                 VALUES (7, ?, 'dir', 493, ?, 0, '{}', ?)",
            )
            .bind(&id.as_bytes()[..])
            .bind(ns)
            .bind(i as i64 + 1)
            .execute(&mut old)
            .await
            .unwrap();
        }
        old.close().await.unwrap();

        let store = SqliteMetaStore::open(&path).await.unwrap();
        let alice = store.account_by_name("alice").await.unwrap().unwrap();
        for (id, ns) in ids.iter().zip(times) {
            let meta = store.node(alice.id, *id).await.unwrap().unwrap().meta;
            let want = Timestamp::from_ns(ns);
            assert_eq!(meta.mtime, want, "{ns}");
            assert_eq!(meta.mtime.as_ns_clamped(), ns);
            assert_eq!((meta.atime, meta.btime), (want, want), "{ns}");
            assert_eq!(
                (meta.uid, meta.gid, meta.ids_from, meta.rdev),
                (None, None, None, 0)
            );
        }
        assert_eq!(
            store
                .node(alice.id, ids[0])
                .await
                .unwrap()
                .unwrap()
                .meta
                .mtime,
            Timestamp {
                sec: -1,
                nsec: 750_000_000
            }
        );
        store.close().await;
    }
}
