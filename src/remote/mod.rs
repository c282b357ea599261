//! `Remote`: the only way from the client to the server.
//!
//! [`http::HttpRemote`] speaks the HTTP API (and refreshes access tokens on
//! its own). For tests of the core: [`in_process::InProcessRemote`] runs
//! the server's real rules without HTTP (several devices of one account
//! share one [`in_process::InProcessServer`]), [`faulty::FaultyRemote`]
//! wraps any remote with switchable faults (offline, 5xx, 401, 413,
//! latency, a refused op), and [`memory::MemoryRemote`] is a map with no
//! conflict rules. Every implementation passes one conformance suite
//! ([`suite`], run by `remote_conformance_suite!`), so they answer the
//! same requests with the same values and errors.
//!
//! Push is an optional capability ([`Remote::subscribe`], [`push`]): a
//! remote without it leaves the follower polling.

pub mod faulty;
pub mod http;
pub mod in_process;
pub mod memory;
pub mod push;
#[doc(hidden)]
pub mod suite;

use crate::protocol::{
    ChunkId, CommitOp, CommitOutcome, PullResponse, SpaceReport, PROTOCOL_VERSION_ERROR,
};
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
    /// The server (or a proxy in front of it) refused the request; `code`
    /// is the stable error code of the response body (`http_<status>` when
    /// the body was not the server's JSON), `op` the index of the commit
    /// operation the error is about, when it is about one.
    #[error("rejected by server ({status} {code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
        op: Option<usize>,
    },
    /// A transient server-side failure (5xx): retry later.
    #[error("server error ({status}): {message}")]
    Server { status: u16, message: String },
    /// The server sent bytes that do not match the asked chunk hash.
    #[error("chunk {0} failed its hash check")]
    Corrupt(ChunkId),
}

/// What a failed request means for queued work. "Give up and drop" is
/// never a class: every failure either waits, pauses, or sets exactly one
/// change aside where the user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Retry with capped exponential backoff: network, 5xx, 408/429, and
    /// the server's retryable conflict codes (see [`RETRYABLE_CODES`]).
    Transient,
    /// Retrying as is cannot help until something outside changes: pause
    /// the queue and say why.
    NeedsUser(NeedsUser),
    /// The server refused operation `op` of a commit request for good
    /// (invalid name, foreign node, kind mismatch, ...): set exactly that
    /// change aside.
    Refused { op: usize },
}

/// Why uploads are paused; shown as the connection state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeedsUser {
    /// Credentials refused after a refresh (expired refresh token, revoked
    /// device): resumes after `nimbus login`.
    Unauthorized(String),
    /// The server or a proxy in front of it refuses requests of this shape
    /// (413 body limit, unknown route, another protocol version, ...):
    /// resumes once it accepts them.
    Misconfigured(String),
}

/// Error codes of 4xx answers that describe a state retrying can resolve
/// (a parent folder that a later request creates, chunks to upload again,
/// a busy store).
pub const RETRYABLE_CODES: &[&str] = &["parent_not_found", "missing_chunks", "busy"];

impl RemoteError {
    /// The failure class (see [`FailureClass`]); decided by the error code
    /// of the server's JSON body, not by the HTTP status alone.
    pub fn class(&self) -> FailureClass {
        match self {
            RemoteError::Unreachable(_) | RemoteError::Server { .. } | RemoteError::Corrupt(_) => {
                FailureClass::Transient
            }
            RemoteError::Unauthorized(m) => FailureClass::NeedsUser(NeedsUser::Unauthorized(
                format!("the server refused this device's credentials ({m}); run `nimbus login`"),
            )),
            RemoteError::NotFound(m) => FailureClass::NeedsUser(NeedsUser::Misconfigured(format!(
                "the server answered 404 ({m}): is the server URL right?"
            ))),
            // Another protocol version: nothing works until one side is
            // upgraded, whatever the op or status.
            RemoteError::Rejected { code, message, .. } if code == PROTOCOL_VERSION_ERROR => {
                FailureClass::NeedsUser(NeedsUser::Misconfigured(message.clone()))
            }
            RemoteError::Rejected { status, code, .. }
                if RETRYABLE_CODES.contains(&code.as_str()) || matches!(status, 408 | 429) =>
            {
                FailureClass::Transient
            }
            RemoteError::Rejected {
                op: Some(op),
                status: 400 | 409,
                ..
            } => FailureClass::Refused { op: *op },
            RemoteError::Rejected {
                status,
                code,
                message,
                ..
            } => FailureClass::NeedsUser(NeedsUser::Misconfigured(match status {
                413 => format!(
                    "the server or a proxy in front of it refuses request bodies this large \
                     ({}); raise its body size limit (nginx: client_max_body_size 8m)",
                    if message.starts_with("413") {
                        message.clone()
                    } else {
                        format!("413: {message}")
                    }
                ),
                _ => format!("the server refused a request ({status} {code}: {message})"),
            })),
        }
    }

    /// The error for a non-success answer with this status and error body
    /// (code, message, op): 401 → `Unauthorized`, 404 → `NotFound`, 5xx →
    /// `Server`, any other → `Rejected`. Every [`Remote`] maps server
    /// answers through this, so one server error is one `RemoteError`.
    pub fn from_status(status: u16, code: String, message: String, op: Option<usize>) -> Self {
        match status {
            401 => RemoteError::Unauthorized(message),
            404 => RemoteError::NotFound(message),
            500..=599 => RemoteError::Server { status, message },
            _ => RemoteError::Rejected {
                status,
                code,
                message,
                op,
            },
        }
    }

    /// The same error with its op index moved by `by`: for a commit split
    /// into several requests, where the server counts ops per request.
    pub fn shift_op(self, by: usize) -> Self {
        match self {
            RemoteError::Rejected {
                status,
                code,
                message,
                op,
            } => RemoteError::Rejected {
                status,
                code,
                message,
                op: op.map(|i| i + by),
            },
            other => other,
        }
    }

    /// Worth retrying with backoff (network, 5xx, retryable codes).
    pub fn is_transient(&self) -> bool {
        self.class() == FailureClass::Transient
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
    /// Downloads several chunks in one request (`POST chunks/batch`, see
    /// `protocol::chunk_batch`): every distinct id of `ids` once, in
    /// first-appearance order, each verified against its id (`Corrupt`
    /// otherwise). All or nothing: an id this account cannot read is
    /// `NotFound` (as [`Remote::get_chunk`]); more than
    /// [`MAX_BATCH_CHUNKS`](crate::protocol::MAX_BATCH_CHUNKS) distinct ids
    /// or more than [`MAX_BATCH_BYTES`](crate::protocol::MAX_BATCH_BYTES)
    /// of chunks is `Rejected { status: 413, code: "batch_too_large" }`:
    /// the caller keeps a batch within both (it knows the lengths from
    /// the manifests).
    async fn get_chunks(&self, ids: &[ChunkId]) -> Result<Vec<(ChunkId, Bytes)>, RemoteError>;
    /// Applies ops in order; one outcome per op.
    async fn commit(&self, ops: Vec<CommitOp>) -> Result<Vec<CommitOutcome>, RemoteError>;
    /// Changes after `cursor`, at most `limit`.
    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullResponse, RemoteError>;
    /// The account's usage and the room left (`GET account/space`).
    async fn space(&self) -> Result<SpaceReport, RemoteError>;
    /// Starts listening for the server's change notifications, if this
    /// remote can (`GET sync/ws` for [`http::HttpRemote`]); `None` (the
    /// default) means the follower polls. Must be called inside a tokio
    /// runtime; the listener stops when the subscription is dropped.
    fn subscribe(self: std::sync::Arc<Self>) -> Option<push::PushSubscription> {
        None
    }
    /// Resolves once this remote has credentials other than the ones it
    /// uses now (`nimbus login` saved new ones for this device), so that a
    /// worker paused because the server refused this device retries at
    /// once instead of at its next probe. The default never resolves.
    async fn credentials_renewed(&self) {
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, code: &str, op: Option<usize>) -> RemoteError {
        RemoteError::Rejected {
            status,
            code: code.into(),
            message: "m".into(),
            op,
        }
    }

    #[test]
    fn failure_classes_follow_the_error_code() {
        use FailureClass::*;
        assert_eq!(RemoteError::Unreachable("x".into()).class(), Transient);
        let server = RemoteError::Server {
            status: 503,
            message: "m".into(),
        };
        assert_eq!(server.class(), Transient);
        // 409 carries retryable states as well as refusals.
        assert_eq!(
            rejected(409, "parent_not_found", Some(3)).class(),
            Transient
        );
        assert_eq!(rejected(409, "missing_chunks", Some(0)).class(), Transient);
        assert_eq!(rejected(429, "http_429", None).class(), Transient);
        assert_eq!(
            rejected(400, "invalid_name", Some(7)).class(),
            Refused { op: 7 }
        );
        assert_eq!(
            rejected(409, "kind_mismatch", Some(2)).class(),
            Refused { op: 2 }
        );
        // Nothing names an op: the request shape is refused, pause.
        assert!(matches!(
            rejected(413, "http_413", None).class(),
            NeedsUser(super::NeedsUser::Misconfigured(m)) if m.contains("413")
        ));
        assert!(matches!(
            rejected(400, "hash_mismatch", None).class(),
            NeedsUser(super::NeedsUser::Misconfigured(_))
        ));
        assert!(matches!(
            RemoteError::Unauthorized("revoked".into()).class(),
            NeedsUser(super::NeedsUser::Unauthorized(m)) if m.contains("nimbus login")
        ));
        // Another protocol version pauses, even when an op is named.
        for op in [None, Some(0)] {
            assert!(matches!(
                rejected(400, "protocol_version", op).class(),
                NeedsUser(super::NeedsUser::Misconfigured(m)) if m == "m"
            ));
        }
        assert!(matches!(
            RemoteError::NotFound("no route".into()).class(),
            NeedsUser(super::NeedsUser::Misconfigured(_))
        ));
    }
}
