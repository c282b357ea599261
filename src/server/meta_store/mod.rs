//! The metadata store: accounts, devices, tokens, nodes, entries, file
//! versions, per-account chunk ownership and the change log.
//!
//! # Two layers (juicefs-style)
//! [`MetaStore`] is the *engine* interface: small, storage-shaped
//! operations with no policy. Everything that decides something — the
//! commit and conflict rules, validation, token expiry — lives once above it
//! (`server::commit`, `server::auth`) and reaches the engine only through
//! this trait, so a new engine (PostgreSQL) implements storage, not rules.
//! Every engine must pass the shared conformance suite
//! (`meta_store::suite`).
//!
//! # Atomicity
//! Commit operations run inside a [`MetaTxn`] opened by [`MetaStore::begin`]
//! for one account. A transaction holds that account's write lock until it
//! is committed or dropped (dropped = rolled back), so sequence numbers are
//! handed out and made visible in order: a reader never sees seq `n + 1`
//! committed while seq `n` is still pending. SQLite gets this from
//! `BEGIN IMMEDIATE` (one writer per database); PostgreSQL will lock the
//! account row (`SELECT ... FOR UPDATE`).
//!
//! # Data model
//! - *nodes* hold a node's attributes (kind, mode, mtime, size, manifest,
//!   content hash, symlink target, extended attributes, version vector,
//!   seq, tombstone);
//! - *entries* map `(parent, name)` to a node, separately from the node.
//!   A node has one first entry (`NodeRecord::parent`/`name`); a
//!   tombstoned node keeps it marked *not live*, so a pull can report
//!   where it was. A live non-folder may have more entries (hard links,
//!   `NodeRecord::links`), which go with its tombstone. Names are unique
//!   among the live entries (first or not) of a folder.
//! - *versions* keep every committed manifest of every file.
//! - *account chunks* record the chunks an account proved it has by
//!   uploading them, with their plain length. A commit may only reference
//!   owned chunks, so "owned by the account" is a superset of "referenced
//!   by a file of the account": the chunk read check only needs ownership.
//!
//! Times are nanoseconds since the Unix epoch (`i64`).

pub mod sqlite;

#[cfg(test)]
pub(crate) mod suite;

use crate::protocol::{ChunkId, ContentHash, DeviceId, Manifest, NodeId, NodeRecord};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;

pub use sqlite::SqliteMetaStore;

/// Internal id of an account (never sent to clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(pub i64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    /// Argon2 PHC string.
    pub password_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub id: DeviceId,
    pub account: AccountId,
    pub name: String,
    pub created_ns: i64,
    pub revoked: bool,
    /// Last authenticated request or login (at most a minute stale); `None`
    /// before the first one after the upgrade that added it.
    pub last_seen_ns: Option<i64>,
    /// The client's `User-Agent` at its last login or refresh (e.g.
    /// `nimbus/0.1.0 (linux x86_64)`); empty when unknown.
    pub platform: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    Refresh,
}

/// BLAKE3 of a bearer token: the store never sees the token itself.
pub type TokenHash = [u8; 32];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    pub hash: TokenHash,
    pub account: AccountId,
    pub device: DeviceId,
    pub kind: TokenKind,
    pub expires_ns: i64,
}

/// A stored token joined with the state of its device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub account: AccountId,
    pub device: DeviceId,
    pub kind: TokenKind,
    pub expires_ns: i64,
    pub device_revoked: bool,
    /// When a refresh token was rotated (replaced by its successor).
    pub used_ns: Option<i64>,
    /// The sealed successor of a rotated refresh token (see
    /// `server::auth`); opaque to the store.
    pub successor: Option<Vec<u8>>,
    pub device_last_seen_ns: Option<i64>,
}

/// What [`MetaStore::rotate_refresh_token`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is now marked used and the new tokens are stored.
    Rotated,
    /// The old token was already used (nothing changed): when, and the
    /// successor sealed then.
    AlreadyUsed {
        used_ns: i64,
        successor: Option<Vec<u8>>,
    },
    /// No such token (expired and removed, or its session ended).
    Unknown,
}

/// One committed version of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    /// 1, 2, 3, ... per node.
    pub version: u64,
    pub manifest: Manifest,
    pub size: u64,
    pub content_hash: ContentHash,
    pub device: DeviceId,
    pub created_ns: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewVersion {
    pub node: NodeId,
    pub manifest: Manifest,
    pub device: DeviceId,
    pub created_ns: i64,
}

/// Totals for the metrics gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetaCounts {
    pub accounts: u64,
    pub devices: u64,
    pub live_nodes: u64,
}

/// What one account holds (live nodes only; trash and old versions are
/// not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountUsage {
    /// Sum of the sizes of the account's live files, in bytes (what its
    /// users see, before deduplication).
    pub file_bytes: u64,
    /// Live nodes of every kind, the root folder included.
    pub nodes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("user '{0}' already exists")]
    AccountExists(String),
    /// The database is locked by another writer for longer than the busy
    /// timeout: retry later.
    #[error("metadata store busy: {0}")]
    Busy(String),
    /// A stored value does not decode (bad JSON, wrong blob length...).
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// The database was migrated by a newer program: its schema version
    /// `found` is above the newest one this program knows (`known`).
    /// Nothing was changed; run a release at least as new.
    #[error(
        "the metadata database has schema version {found}, newer than this program \
         knows (up to version {known}): it was written by a newer nimbus; run that \
         release or a later one (a database cannot be downgraded)"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("metadata store: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The storage engine for metadata. Object-safe: used as
/// `Arc<dyn MetaStore>`.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Creates an account and its root folder ([`NodeId::ROOT`], seq 0).
    async fn create_account(
        &self,
        name: &str,
        password_hash: &str,
        now_ns: i64,
    ) -> Result<AccountId, MetaError>;
    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, MetaError>;
    async fn account(&self, id: AccountId) -> Result<Option<Account>, MetaError>;
    /// Replaces the account's password hash.
    async fn set_password_hash(&self, id: AccountId, password_hash: &str) -> Result<(), MetaError>;

    /// Registers a new device with a fresh random id.
    async fn create_device(
        &self,
        account: AccountId,
        name: &str,
        now_ns: i64,
    ) -> Result<DeviceId, MetaError>;
    async fn device(&self, id: DeviceId) -> Result<Option<Device>, MetaError>;
    async fn list_devices(&self, account: AccountId) -> Result<Vec<Device>, MetaError>;
    /// Marks the device revoked; its tokens stop working. False if the
    /// account has no such device.
    async fn revoke_device(&self, account: AccountId, id: DeviceId) -> Result<bool, MetaError>;
    /// Clears the revoked mark (a password login as that device). False
    /// if the account has no such device.
    async fn reinstate_device(&self, account: AccountId, id: DeviceId) -> Result<bool, MetaError>;
    /// Records that the device was seen at `now_ns`, and its platform when
    /// given.
    async fn touch_device(
        &self,
        id: DeviceId,
        platform: Option<&str>,
        now_ns: i64,
    ) -> Result<(), MetaError>;
    /// Deletes every token of the device (ends its session); returns how many.
    async fn delete_device_tokens(&self, id: DeviceId) -> Result<u64, MetaError>;
    /// Deletes every token of the account's devices other than `keep`.
    async fn delete_other_devices_tokens(
        &self,
        account: AccountId,
        keep: DeviceId,
    ) -> Result<u64, MetaError>;
    /// Atomically: if the refresh token `old` is unused, marks it used at
    /// `now_ns` with `successor`, caps its expiry at `keep_until_ns` and
    /// inserts `new`; if it was used already, changes nothing and says
    /// when and with what successor.
    async fn rotate_refresh_token(
        &self,
        old: &TokenHash,
        successor: &[u8],
        new: &[NewToken],
        now_ns: i64,
        keep_until_ns: i64,
    ) -> Result<Rotation, MetaError>;

    async fn insert_token(&self, token: &NewToken) -> Result<(), MetaError>;
    async fn token(&self, hash: &TokenHash) -> Result<Option<TokenInfo>, MetaError>;
    /// Removes tokens that expired before `before_ns`; returns how many.
    async fn delete_expired_tokens(&self, before_ns: i64) -> Result<u64, MetaError>;

    /// Records that `account` uploaded chunk `id` (idempotent).
    async fn add_account_chunk(
        &self,
        account: AccountId,
        id: ChunkId,
        len: u32,
        now_ns: i64,
    ) -> Result<(), MetaError>;
    /// The plain lengths of those of `ids` the account owns.
    async fn owned_chunks(
        &self,
        account: AccountId,
        ids: &[ChunkId],
    ) -> Result<HashMap<ChunkId, u32>, MetaError>;

    /// A node with its (last) first entry, live or tombstoned, and its
    /// other live entries.
    async fn node(&self, account: AccountId, id: NodeId) -> Result<Option<NodeRecord>, MetaError>;
    /// The node behind the live entry `name` of folder `parent` (its first
    /// entry or a link).
    async fn lookup(
        &self,
        account: AccountId,
        parent: NodeId,
        name: &str,
    ) -> Result<Option<NodeRecord>, MetaError>;
    /// Live nodes with an entry in a folder (once each), by first name.
    async fn children(&self, account: AccountId, dir: NodeId)
        -> Result<Vec<NodeRecord>, MetaError>;
    /// Nodes with `seq > cursor`, ascending by seq, at most `limit`.
    async fn changes_since(
        &self,
        account: AccountId,
        cursor: u64,
        limit: u32,
    ) -> Result<Vec<NodeRecord>, MetaError>;
    /// The account's latest change-log number (0 before any change).
    async fn last_seq(&self, account: AccountId) -> Result<u64, MetaError>;
    /// Every committed version of a file, oldest first.
    async fn versions(
        &self,
        account: AccountId,
        node: NodeId,
    ) -> Result<Vec<VersionRecord>, MetaError>;
    async fn counts(&self) -> Result<MetaCounts, MetaError>;
    /// What `account` holds (see [`AccountUsage`]).
    async fn account_usage(&self, account: AccountId) -> Result<AccountUsage, MetaError>;

    /// Opens a write transaction on one account (see the module docs).
    async fn begin(&self, account: AccountId) -> Result<Box<dyn MetaTxn>, MetaError>;

    /// Closes connections (graceful shutdown).
    async fn close(&self);
}

/// A write transaction on one account. Dropping it without
/// [`MetaTxn::commit`] rolls everything back.
#[async_trait]
pub trait MetaTxn: Send {
    fn account(&self) -> AccountId;
    /// Warms the transaction's caches with what the coming calls will
    /// read — node records, live names `(parent, name)`, chunk ownership —
    /// in as few round trips as the engine can (duplicates allowed). A
    /// hint: the answers of later calls are the same with or without it,
    /// and an engine without caches ignores it.
    async fn prefetch(
        &mut self,
        _nodes: &[NodeId],
        _names: &[(NodeId, &str)],
        _chunks: &[ChunkId],
    ) -> Result<(), MetaError> {
        Ok(())
    }
    async fn node(&mut self, id: NodeId) -> Result<Option<NodeRecord>, MetaError>;
    /// The node that `id` stands for: the node it was merged into when it
    /// is an alias (see `CommitOutcome::Merged`), else `id` itself. An
    /// alias never names another alias.
    async fn resolve_alias(&mut self, id: NodeId) -> Result<NodeId, MetaError>;
    /// Records `alias` (an id the account never stored a node under) as
    /// another id of `node`, with the transaction.
    async fn add_alias(&mut self, alias: NodeId, node: NodeId) -> Result<(), MetaError>;
    /// The node id behind a live entry (first or link).
    async fn lookup(&mut self, parent: NodeId, name: &str) -> Result<Option<NodeId>, MetaError>;
    async fn has_live_children(&mut self, dir: NodeId) -> Result<bool, MetaError>;
    /// The plain lengths of those of `ids` the account owns.
    async fn owned_chunks(&mut self, ids: &[ChunkId]) -> Result<HashMap<ChunkId, u32>, MetaError>;
    /// Takes the next number of the account's change log.
    async fn next_seq(&mut self) -> Result<u64, MetaError>;
    /// Inserts or replaces the node and its entries (live unless
    /// `node.deleted`; the links of a deleted node are dropped). The engine
    /// derives size and content hash from `node.meta`. The caller
    /// guarantees every live name is free; an engine may buffer the write
    /// and report a clash it cannot see yet at [`MetaTxn::commit`].
    async fn write_node(&mut self, node: &NodeRecord) -> Result<(), MetaError>;
    /// Appends a version to the node's history; returns its number.
    async fn append_version(&mut self, version: &NewVersion) -> Result<u64, MetaError>;
    async fn commit(self: Box<Self>) -> Result<(), MetaError>;
    /// Rolls back now (dropping also rolls back, but possibly later).
    async fn rollback(self: Box<Self>);
}

/// Opens the metadata store named by `--metadata` (`sqlite:PATH`), or the
/// default `DATA/meta.sqlite`.
pub async fn open(
    spec: Option<&str>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn MetaStore>> {
    let path = match spec {
        None => data_dir.join("meta.sqlite"),
        Some(s) => {
            if let Some(p) = s
                .strip_prefix("sqlite://")
                .or_else(|| s.strip_prefix("sqlite:"))
            {
                if p.is_empty() {
                    anyhow::bail!(
                        "--metadata sqlite: needs a path, e.g. sqlite:/var/lib/nimbus/meta.sqlite"
                    );
                }
                std::path::PathBuf::from(p)
            } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
                anyhow::bail!(
                    "PostgreSQL metadata is not supported by this build yet (use sqlite:PATH)"
                );
            } else {
                anyhow::bail!("unsupported --metadata '{s}' (expected sqlite:PATH)");
            }
        }
    };
    Ok(Arc::new(SqliteMetaStore::open(&path).await?))
}
