//! [`InProcessServer`] and [`InProcessRemote`]: the server's real rules,
//! called directly instead of over HTTP, for tests of the core that should
//! meet the true conflict, possession and validation rules at unit-test
//! speed.
//!
//! - The server is a SQLite metadata store and a local chunk directory in
//!   a folder (a temporary one that is removed when the last handle is
//!   dropped, or one the caller names), with the same `AppState` the HTTP
//!   server uses.
//! - Each [`InProcessRemote`] is one registered device of one account;
//!   several devices (and several accounts) share one server:
//!   `server.device("laptop")`, `server.device_of("bob", "phone")`.
//! - Every call runs the code of the matching HTTP handler
//!   (`server::api::{missing_for, store_chunk, read_chunk,
//!   read_chunk_batch, commit_ops, pull_page}`), so possession (an account reads and references only
//!   chunks it uploaded), hash checks and commit rules are the server's
//!   own. Like the HTTP authentication, a revoked or deleted device gets
//!   `Unauthorized` on every call.
//! - Errors go through [`remote_error_of`]: the same [`RemoteError`] that
//!   [`HttpRemote`](super::http::HttpRemote) builds from the HTTP answer
//!   of the same `ServerError` (status, code, message, op).
//! - Like `HttpRemote`, requests over the per-request caps are split
//!   (`MAX_MISSING_QUERY` ids, `MAX_COMMIT_OPS` ops; op indexes of errors
//!   count across the parts). Not modelled: HTTP body size limits, wire
//!   compression, token expiry.

use super::{Remote, RemoteError};
use crate::protocol::{
    ChunkId, CommitOp, CommitOutcome, DeviceId, PullResponse, SpaceReport, MAX_COMMIT_OPS,
    MAX_MISSING_QUERY,
};
use crate::server::api::{self, WireEncoding};
use crate::server::auth::Auth;
use crate::server::chunk_store::{self, ChunkStore};
use crate::server::meta_store::{self, AccountId, MetaError, MetaStore};
use crate::server::{now_ns, AppState, ServerError};
use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;

/// The account [`InProcessServer::device`] registers devices in.
pub const DEFAULT_USER: &str = "user";

/// What the server and its devices share. Field order matters: the stores
/// close before the temporary folder is removed.
struct Shared {
    state: AppState,
    _dir: Option<tempfile::TempDir>,
}

/// A server without HTTP: a metadata store and a chunk store in one
/// folder, with accounts and devices. Cheap to clone (one shared state).
#[derive(Clone)]
pub struct InProcessServer {
    shared: Arc<Shared>,
}

impl InProcessServer {
    /// A fresh server in a new temporary folder, removed when the server
    /// and every device made from it are dropped. Errors: the folder or
    /// the stores cannot be created.
    pub async fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("nimbus-in-process-")
            .tempdir()
            .context("cannot create a temporary folder for the in-process server")?;
        let state = open_state(dir.path()).await?;
        Ok(InProcessServer {
            shared: Arc::new(Shared {
                state,
                _dir: Some(dir),
            }),
        })
    }

    /// A server over the stores in `dir` (`meta.sqlite` and `chunks/`, as
    /// `nimbus serve --data DIR`), created if missing and kept afterwards.
    pub async fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let state = open_state(dir).await?;
        Ok(InProcessServer {
            shared: Arc::new(Shared { state, _dir: None }),
        })
    }

    /// Registers a new device named `name` in the account [`DEFAULT_USER`]
    /// (created on first use). Errors: the store failed or the name is not
    /// a valid device name.
    pub async fn device(&self, name: &str) -> anyhow::Result<InProcessRemote> {
        self.device_of(DEFAULT_USER, name).await
    }

    /// Registers a new device named `name` in the account `user` (created
    /// on first use, with no password: nobody can log in to it over HTTP).
    pub async fn device_of(&self, user: &str, name: &str) -> anyhow::Result<InProcessRemote> {
        crate::server::auth::validate_device_name(name).map_err(anyhow::Error::msg)?;
        let meta = &self.shared.state.meta;
        let account = self.account(user).await?;
        let device = meta.create_device(account, name, now_ns()).await?;
        Ok(InProcessRemote {
            shared: self.shared.clone(),
            account,
            device,
            device_name: name.to_owned(),
        })
    }

    /// The id of account `user`, created (without a password) if missing.
    async fn account(&self, user: &str) -> anyhow::Result<AccountId> {
        let meta = &self.shared.state.meta;
        if let Some(a) = meta.account_by_name(user).await? {
            return Ok(a.id);
        }
        match meta.create_account(user, "!", now_ns()).await {
            Ok(id) => Ok(id),
            // Another device of the same account raced us.
            Err(MetaError::AccountExists(_)) => Ok(meta
                .account_by_name(user)
                .await?
                .context("account vanished after it was created")?
                .id),
            Err(e) => Err(e.into()),
        }
    }

    /// The metadata store, to look at or change the server's state in a
    /// test (revoke a device, read version history, ...).
    pub fn meta(&self) -> &Arc<dyn MetaStore> {
        &self.shared.state.meta
    }

    /// The chunk store, to look at or damage stored chunks in a test.
    pub fn chunks(&self) -> &Arc<dyn ChunkStore> {
        &self.shared.state.chunks
    }
}

impl std::fmt::Debug for InProcessServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessServer").finish_non_exhaustive()
    }
}

async fn open_state(dir: &Path) -> anyhow::Result<AppState> {
    let meta = meta_store::open(None, dir).await?;
    let chunks = chunk_store::open(None, dir)?;
    Ok(AppState::new(
        meta,
        chunks,
        crate::server::push::Heartbeat::default(),
    ))
}

/// One device of an [`InProcessServer`], as a [`Remote`].
pub struct InProcessRemote {
    shared: Arc<Shared>,
    account: AccountId,
    device: DeviceId,
    device_name: String,
}

impl InProcessRemote {
    /// This device's id (what a login would have returned).
    pub fn device_id(&self) -> DeviceId {
        self.device
    }

    /// The name the device was registered with (used in conflict names).
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// The server this device belongs to.
    pub fn server(&self) -> InProcessServer {
        InProcessServer {
            shared: self.shared.clone(),
        }
    }

    fn state(&self) -> &AppState {
        &self.shared.state
    }

    /// The authentication an access token of this device would give:
    /// refused once the device is revoked or gone.
    async fn auth(&self) -> Result<Auth, RemoteError> {
        match self.state().meta.device(self.device).await {
            Ok(Some(d)) if !d.revoked && d.account == self.account => Ok(Auth {
                account: self.account,
                device: self.device,
            }),
            Ok(_) => Err(remote_error_of(&ServerError::Unauthorized)),
            Err(e) => Err(remote_error_of(&e.into())),
        }
    }
}

impl std::fmt::Debug for InProcessRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessRemote")
            .field("device_id", &self.device)
            .field("device_name", &self.device_name)
            .finish_non_exhaustive()
    }
}

/// The [`RemoteError`] a client gets for `e`: what
/// [`HttpRemote`](super::http::HttpRemote) builds from the HTTP answer the
/// server sends for `e` (its `status_and_code`, message and op index).
pub fn remote_error_of(e: &ServerError) -> RemoteError {
    let (status, code) = e.status_and_code();
    RemoteError::from_status(status.as_u16(), code.to_owned(), e.to_string(), e.op())
}

fn mapped<T>(r: Result<T, ServerError>) -> Result<T, RemoteError> {
    r.map_err(|e| remote_error_of(&e))
}

#[async_trait]
impl Remote for InProcessRemote {
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        let auth = self.auth().await?;
        let mut missing = Vec::new();
        for batch in ids.chunks(MAX_MISSING_QUERY) {
            missing.extend(mapped(
                api::missing_for(self.state(), auth.account, batch.to_vec()).await,
            )?);
        }
        Ok(missing)
    }

    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<(), RemoteError> {
        let auth = self.auth().await?;
        mapped(api::store_chunk(self.state(), auth.account, id, data, WireEncoding::Identity).await)
    }

    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, RemoteError> {
        let auth = self.auth().await?;
        let data = mapped(api::read_chunk(self.state(), auth.account, id).await)?;
        // The store checked it; check again as every client does.
        if id.verify(&data) {
            Ok(data)
        } else {
            Err(RemoteError::Corrupt(id))
        }
    }

    async fn get_chunks(&self, ids: &[ChunkId]) -> Result<Vec<(ChunkId, Bytes)>, RemoteError> {
        let auth = self.auth().await?;
        let chunks = mapped(api::read_chunk_batch(self.state(), auth.account, ids).await)?;
        match chunks.iter().find(|(id, data)| !id.verify(data)) {
            Some((id, _)) => Err(RemoteError::Corrupt(*id)),
            None => Ok(chunks),
        }
    }

    async fn commit(&self, ops: Vec<CommitOp>) -> Result<Vec<CommitOutcome>, RemoteError> {
        let auth = self.auth().await?;
        let mut results = Vec::with_capacity(ops.len());
        for (i, batch) in ops.chunks(MAX_COMMIT_OPS).enumerate() {
            let batch_results = mapped(api::commit_ops(self.state(), auth, batch).await)
                .map_err(|e| e.shift_op(i * MAX_COMMIT_OPS))?;
            results.extend(batch_results);
        }
        Ok(results)
    }

    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullResponse, RemoteError> {
        let auth = self.auth().await?;
        mapped(api::pull_page(self.state(), auth.account, cursor, Some(limit)).await)
    }

    async fn space(&self) -> Result<SpaceReport, RemoteError> {
        let auth = self.auth().await?;
        mapped(api::space_report(self.state(), auth.account).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::NodeId;

    crate::remote_conformance_suite!(conformance, crate::remote::suite::InProcessFixture::new());

    #[tokio::test]
    async fn a_revoked_device_is_unauthorized_and_errors_match_http() {
        let server = InProcessServer::new().await.unwrap();
        let laptop = server.device("laptop").await.unwrap();
        assert_eq!(laptop.device_name(), "laptop");
        laptop.pull(0, 10).await.unwrap();
        let account = server
            .meta()
            .account_by_name(DEFAULT_USER)
            .await
            .unwrap()
            .unwrap();
        assert!(server
            .meta()
            .revoke_device(account.id, laptop.device_id())
            .await
            .unwrap());
        assert!(matches!(
            laptop.pull(0, 10).await,
            Err(RemoteError::Unauthorized(_))
        ));
        // The same mapping as an HTTP answer of the same error.
        let e = remote_error_of(&ServerError::ParentNotFound(NodeId::ROOT).in_op(4));
        assert!(matches!(
            e,
            RemoteError::Rejected { status: 409, ref code, op: Some(4), .. }
                if code == "parent_not_found"
        ));
        assert!(e.is_transient());
        assert!(matches!(
            remote_error_of(&ServerError::Busy("x".into())),
            RemoteError::Server { status: 503, .. }
        ));
        assert!(server.device("a/b").await.is_err());
    }
}
