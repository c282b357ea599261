//! Accounts' passwords, device sessions and refresh-token rotation on
//! SQLite (the [`MetaStore`](super::super::MetaStore) methods delegate
//! here, to keep `sqlite.rs` about nodes).

use super::super::{Account, AccountId, MetaError, NewToken, Rotation, TokenHash, TokenInfo};
use super::rows::{backend, corrupt, token_kind_str, uuid_from_blob};
use super::SqliteMetaStore;
use crate::protocol::DeviceId;
use crate::server::meta_store::TokenKind;

/// One row of `tokens` joined with its device.
type TokenRow = (
    i64,
    Vec<u8>,
    String,
    i64,
    bool,
    Option<i64>,
    Option<Vec<u8>>,
    Option<i64>,
);

impl SqliteMetaStore {
    pub(super) async fn account_by_id(&self, id: AccountId) -> Result<Option<Account>, MetaError> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT id, name, password_hash FROM accounts WHERE id = ?")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        Ok(row.map(|(id, name, password_hash)| Account {
            id: AccountId(id),
            name,
            password_hash,
        }))
    }

    pub(super) async fn update_password_hash(
        &self,
        id: AccountId,
        hash: &str,
    ) -> Result<(), MetaError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query("UPDATE accounts SET password_hash = ? WHERE id = ?")
            .bind(hash)
            .bind(id.0)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn set_device_revoked(
        &self,
        account: AccountId,
        id: DeviceId,
        revoked: bool,
    ) -> Result<bool, MetaError> {
        let _guard = self.write_lock.lock().await;
        let r = sqlx::query("UPDATE devices SET revoked = ? WHERE account = ? AND id = ?")
            .bind(revoked)
            .bind(account.0)
            .bind(&id.0.as_bytes()[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected() > 0)
    }

    pub(super) async fn touch_device_row(
        &self,
        id: DeviceId,
        platform: Option<&str>,
        now_ns: i64,
    ) -> Result<(), MetaError> {
        let _guard = self.write_lock.lock().await;
        sqlx::query(
            "UPDATE devices SET last_seen_ns = MAX(COALESCE(last_seen_ns, 0), ?), \
             platform = COALESCE(?, platform) WHERE id = ?",
        )
        .bind(now_ns)
        .bind(platform)
        .bind(&id.0.as_bytes()[..])
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn delete_tokens_of_device(&self, id: DeviceId) -> Result<u64, MetaError> {
        let _guard = self.write_lock.lock().await;
        let r = sqlx::query("DELETE FROM tokens WHERE device = ?")
            .bind(&id.0.as_bytes()[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected())
    }

    pub(super) async fn delete_tokens_except_device(
        &self,
        account: AccountId,
        keep: DeviceId,
    ) -> Result<u64, MetaError> {
        let _guard = self.write_lock.lock().await;
        let r = sqlx::query("DELETE FROM tokens WHERE account = ? AND device != ?")
            .bind(account.0)
            .bind(&keep.0.as_bytes()[..])
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(r.rows_affected())
    }

    pub(super) async fn token_info(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<TokenInfo>, MetaError> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT t.account, t.device, t.kind, t.expires_ns, d.revoked, t.used_ns, \
             t.successor, d.last_seen_ns \
             FROM tokens t JOIN devices d ON d.id = t.device WHERE t.hash = ?",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        let Some((account, device, kind, expires_ns, revoked, used_ns, successor, seen)) = row
        else {
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
            used_ns,
            successor,
            device_last_seen_ns: seen,
        }))
    }

    /// See `MetaStore::rotate_refresh_token`: one `BEGIN IMMEDIATE`
    /// transaction, so two concurrent refreshes never both rotate.
    pub(super) async fn rotate(
        &self,
        old: &TokenHash,
        successor: &[u8],
        new: &[NewToken],
        now_ns: i64,
        keep_until_ns: i64,
    ) -> Result<Rotation, MetaError> {
        let _guard = self.write_lock.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let row: Option<(Option<i64>, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT used_ns, successor FROM tokens WHERE hash = ? AND kind = ?")
                .bind(&old[..])
                .bind(token_kind_str(TokenKind::Refresh))
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
        match row {
            None => return Ok(Rotation::Unknown),
            Some((Some(used_ns), successor)) => {
                return Ok(Rotation::AlreadyUsed { used_ns, successor })
            }
            Some((None, _)) => {}
        }
        sqlx::query(
            "UPDATE tokens SET used_ns = ?, successor = ?, expires_ns = MIN(expires_ns, ?) \
             WHERE hash = ?",
        )
        .bind(now_ns)
        .bind(successor)
        .bind(keep_until_ns)
        .bind(&old[..])
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        for t in new {
            sqlx::query(
                "INSERT INTO tokens (hash, account, device, kind, expires_ns) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&t.hash[..])
            .bind(t.account.0)
            .bind(&t.device.0.as_bytes()[..])
            .bind(token_kind_str(t.kind))
            .bind(t.expires_ns)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(Rotation::Rotated)
    }
}
