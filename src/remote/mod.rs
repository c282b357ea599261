//! `Remote`: the only way from the client to the server.
//!
//! [`http::HttpRemote`] speaks the HTTP API (and refreshes access tokens on
//! its own). Tests of the core use the same trait with an in-process server
//! reached over loopback HTTP, so there is one code path for local and
//! remote.

pub mod http;
pub mod memory;

use crate::protocol::{ChunkId, CommitOp, CommitOutcome, PullResponse};
use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The server could not be reached or the connection broke: retry later.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// Credentials were refused (wrong password, revoked device, expired
    /// refresh token): retrying will not help until the user logs in again.
    #[error("not authorized: {0}")]
    Unauthorized(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// The server refused the request as invalid; `code` is the stable error
    /// code of the response body.
    #[error("rejected by server ({status} {code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// A transient server-side failure (5xx): retry later.
    #[error("server error ({status}): {message}")]
    Server { status: u16, message: String },
    /// The server sent bytes that do not match the asked chunk hash.
    #[error("chunk {0} failed its hash check")]
    Corrupt(ChunkId),
}

impl RemoteError {
    /// Worth retrying with backoff (network, 5xx).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RemoteError::Unreachable(_) | RemoteError::Server { .. } | RemoteError::Corrupt(_)
        )
    }
}

#[async_trait]
pub trait Remote: Send + Sync + 'static {
    /// Which of `ids` this account must still upload.
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError>;
    /// Uploads one chunk's plain bytes (the implementation may compress on
    /// the wire). The server verifies the hash.
    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<(), RemoteError>;
    /// Downloads one chunk and verifies it against `id` before returning.
    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, RemoteError>;
    /// Applies ops in order; one outcome per op.
    async fn commit(&self, ops: Vec<CommitOp>) -> Result<Vec<CommitOutcome>, RemoteError>;
    /// Changes after `cursor`, at most `limit`.
    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullResponse, RemoteError>;
}
