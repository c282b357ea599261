//! The server's one error enum and the one function that maps it to an
//! HTTP status and an [`ErrorBody`] (`{"error": code, "message": ...}`).

use super::chunk_store::ChunkStoreError;
use super::meta_store::MetaError;
use crate::protocol::{
    protocol_mismatch_message, ChunkId, DeviceId, ErrorBody, NameError, NodeId, PROTOCOL_HEADER,
    PROTOCOL_VERSION, PROTOCOL_VERSION_ERROR,
};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    // ---- 401 ----
    #[error("missing or invalid access token")]
    Unauthorized,
    #[error("access token expired")]
    TokenExpired,
    /// Wrong password and unknown user alike (no user enumeration).
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("refresh token is invalid, expired or revoked")]
    BadRefreshToken,
    /// The device was revoked (`nimbus devices revoke`); a password login
    /// as it reinstates it.
    #[error("this device was revoked; log in again (`nimbus login`) to reinstate it")]
    DeviceRevoked,
    /// A refresh token was presented again after it was rotated (outside
    /// the retry grace window): it may have been copied, so the device's
    /// session was ended.
    #[error("this refresh token was already used, so it may have been copied: the device's session was ended; log in again")]
    RefreshReused,

    // ---- 400 ----
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: NameError },
    #[error("{0}")]
    InvalidNode(String),
    #[error("{0}")]
    InvalidMove(String),
    #[error("the root folder cannot be changed or deleted")]
    RootImmutable,
    #[error("chunk id must be 64 hexadecimal digits (a BLAKE3 hash)")]
    InvalidChunkId,
    #[error("uploaded bytes do not hash to {0}")]
    HashMismatch(ChunkId),
    #[error("body is not valid zstd: {0}")]
    BadEncoding(String),
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0} is not a regular file")]
    NotAFile(String),
    /// The request names a protocol version other than this server's
    /// ([`PROTOCOL_VERSION`]).
    #[error("{}", protocol_mismatch_message(PROTOCOL_VERSION, *.0))]
    ProtocolMismatch(u32),
    /// The protocol header is not a version number.
    #[error("the {PROTOCOL_HEADER} header must be a protocol version number (this server speaks protocol {PROTOCOL_VERSION}), not {0:?}")]
    BadProtocolHeader(String),

    // ---- 403 ----
    /// A login named a device that is not a live device of the account
    /// (unknown, revoked, or another account's: one answer for all three).
    #[error("device {0} is not a registered device of this account; log in without a device id to register a new device")]
    UnknownDevice(DeviceId),
    /// `POST /account/password` with a wrong current password.
    #[error("the current password is wrong")]
    WrongPassword,

    // ---- 404 ----
    #[error("{0}")]
    NotFound(String),

    // ---- 405 ----
    #[error("method not allowed")]
    MethodNotAllowed,

    // ---- 409 ----
    #[error("parent folder {0} does not exist")]
    ParentNotFound(NodeId),
    #[error("parent {0} is not a folder")]
    ParentNotDir(NodeId),
    #[error("node {node} is a {existing}, not a {requested}")]
    KindMismatch {
        node: NodeId,
        existing: &'static str,
        requested: &'static str,
    },
    /// Chunks the manifest references that the account has not uploaded.
    #[error("{} chunk(s) not uploaded by this account: {}", .0.len(), join_ids(.0))]
    MissingChunks(Vec<ChunkId>),
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// The device's cursor is past the end of the change log (the server's
    /// data was reset or restored): pull again from 0.
    #[error("cursor {cursor} is ahead of the server's change log (last change {last}); pull again from 0")]
    CursorAhead { cursor: u64, last: u64 },

    // ---- 413 ----
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A chunk batch over `MAX_BATCH_CHUNKS` ids or `MAX_BATCH_BYTES`.
    #[error("{0}")]
    BatchTooLarge(String),

    // ---- 415 ----
    #[error("unsupported Content-Encoding '{0}' (only zstd)")]
    UnsupportedEncoding(String),

    // ---- 416 ----
    #[error("range not satisfiable (file is {size} bytes)")]
    RangeNotSatisfiable { size: u64 },

    // ---- 429 ----
    /// A push socket over a cap of `push::SocketLimits`.
    #[error("{0}")]
    TooManySockets(String),

    // ---- 500 / 503 ----
    #[error("chunk {0} failed its hash check on the server")]
    ChunkCorrupt(ChunkId),
    #[error("chunk {0} is missing from the server's storage")]
    ChunkUnavailable(ChunkId),
    #[error("server busy, retry later: {0}")]
    Busy(String),
    #[error("internal error: {0}")]
    Internal(String),

    /// An error in operation number `index` of a commit request.
    #[error("op {index}: {inner}")]
    InOp {
        index: usize,
        inner: Box<ServerError>,
    },
}

fn join_ids(ids: &[ChunkId]) -> String {
    ids.iter()
        .map(|i| i.to_hex())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ServerError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ServerError::Internal(e.to_string())
    }

    pub fn in_op(self, index: usize) -> Self {
        ServerError::InOp {
            index,
            inner: Box::new(self),
        }
    }

    /// The index of the commit op this error is about, if any (the
    /// `op` of the error body).
    pub fn op(&self) -> Option<usize> {
        match self {
            ServerError::InOp { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// Status and stable code: the ONE place errors meet HTTP.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ServerError::*;
        match self {
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            TokenExpired => (StatusCode::UNAUTHORIZED, "token_expired"),
            BadCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            BadRefreshToken => (StatusCode::UNAUTHORIZED, "unauthorized"),
            DeviceRevoked => (StatusCode::UNAUTHORIZED, "device_revoked"),
            RefreshReused => (StatusCode::UNAUTHORIZED, "refresh_token_reused"),
            WrongPassword => (StatusCode::FORBIDDEN, "wrong_password"),
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            InvalidName { .. } => (StatusCode::BAD_REQUEST, "invalid_name"),
            InvalidNode(_) => (StatusCode::BAD_REQUEST, "invalid_node"),
            InvalidMove(_) => (StatusCode::BAD_REQUEST, "invalid_move"),
            RootImmutable => (StatusCode::BAD_REQUEST, "root_immutable"),
            InvalidChunkId => (StatusCode::BAD_REQUEST, "invalid_chunk_id"),
            HashMismatch(_) => (StatusCode::BAD_REQUEST, "hash_mismatch"),
            BadEncoding(_) => (StatusCode::BAD_REQUEST, "bad_encoding"),
            InvalidPath(_) => (StatusCode::BAD_REQUEST, "invalid_path"),
            NotAFile(_) => (StatusCode::BAD_REQUEST, "not_a_file"),
            ProtocolMismatch(_) | BadProtocolHeader(_) => {
                (StatusCode::BAD_REQUEST, PROTOCOL_VERSION_ERROR)
            }
            UnknownDevice(_) => (StatusCode::FORBIDDEN, "unknown_device"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ParentNotFound(_) => (StatusCode::CONFLICT, "parent_not_found"),
            ParentNotDir(_) => (StatusCode::CONFLICT, "parent_not_dir"),
            KindMismatch { .. } => (StatusCode::CONFLICT, "kind_mismatch"),
            MissingChunks(_) => (StatusCode::CONFLICT, "missing_chunks"),
            UserExists(_) => (StatusCode::CONFLICT, "user_exists"),
            CursorAhead { .. } => (StatusCode::CONFLICT, "cursor_ahead"),
            PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            BatchTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            UnsupportedEncoding(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding"),
            TooManySockets(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_sockets"),
            RangeNotSatisfiable { .. } => {
                (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable")
            }
            ChunkCorrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "chunk_corrupt"),
            ChunkUnavailable(_) => (StatusCode::INTERNAL_SERVER_ERROR, "chunk_unavailable"),
            Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            InOp { inner, .. } => inner.status_and_code(),
        }
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: code.to_owned(),
            message: self.to_string(),
            op: self.op(),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        match &self {
            ServerError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            ServerError::Busy(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ServerError::Unauthorized
            | ServerError::TokenExpired
            | ServerError::DeviceRevoked
            | ServerError::RefreshReused => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"nimbus\""),
                );
            }
            _ => {}
        }
        resp
    }
}

impl From<MetaError> for ServerError {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::Busy(m) => ServerError::Busy(m),
            MetaError::AccountExists(name) => ServerError::UserExists(name),
            other => ServerError::internal(other),
        }
    }
}

impl From<ChunkStoreError> for ServerError {
    fn from(e: ChunkStoreError) -> Self {
        match e {
            ChunkStoreError::Corrupt(id) => ServerError::ChunkCorrupt(id),
            ChunkStoreError::NotFound(id) => ServerError::ChunkUnavailable(id),
            other => ServerError::internal(other),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ServerError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        body_rejection(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ServerError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        body_rejection(r.status(), r.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ServerError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ServerError::BadRequest(r.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ServerError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        ServerError::BadRequest(r.body_text())
    }
}

fn body_rejection(status: StatusCode, text: String) -> ServerError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ServerError::PayloadTooLarge("request body too large".into())
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        ServerError::BadRequest(format!("{text} (send Content-Type: application/json)"))
    } else {
        ServerError::BadRequest(text)
    }
}
