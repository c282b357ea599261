//! [`HttpRemote`]: the [`Remote`] trait over the server's HTTP API.
//!
//! - One pooled `reqwest` client (rustls); connect timeout 3 s, whole
//!   request 60 s.
//! - The access token sits behind a lock. A 401 triggers one refresh
//!   (`/auth/refresh`, single-flight: concurrent requests that hit the same
//!   expired token share one refresh) and one retry; a refused refresh is
//!   [`RemoteError::Unauthorized`].
//! - Errors: connection failures and timeouts → `Unreachable`, 5xx →
//!   `Server`, 404 → `NotFound`, 401 → `Unauthorized`, other 4xx →
//!   `Rejected { status, code, message, op }` from the server's `ErrorBody`
//!   (a response that is not an `ErrorBody`, e.g. a proxy's HTML page, gets
//!   the code `http_<status>`).
//! - Chunks go up zstd-compressed (`Content-Encoding: zstd`) when that
//!   makes them smaller, and come down verified against their BLAKE3 hash
//!   (`Corrupt` otherwise).
//! - Lock order: `refreshing` (async, held across the refresh request),
//!   then `access_token` (sync, never held across an await).
//! - Requests over the server's per-request caps (`MAX_MISSING_QUERY` ids,
//!   `MAX_COMMIT_OPS` ops) are split into several requests, in order.

use super::{Remote, RemoteError};
use crate::protocol::{
    ChunkId, CommitOp, CommitOutcome, CommitRequest, CommitResponse, DeviceId, ErrorBody,
    LoginRequest, LoginResponse, MissingChunksRequest, MissingChunksResponse, PullResponse,
    RefreshRequest, MAX_CHUNK_LEN, MAX_COMMIT_OPS, MAX_MISSING_QUERY,
};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use reqwest::{header, Client, RequestBuilder, Response, StatusCode};
use std::time::Duration;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// zstd level for uploads.
const UPLOAD_ZSTD_LEVEL: i32 = 3;

/// What a login yields, and all [`HttpRemote`] needs.
#[derive(Clone)]
pub struct Tokens {
    /// May be empty: the first request then refreshes it.
    pub access_token: String,
    pub refresh_token: String,
    pub device_id: DeviceId,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("device_id", &self.device_id)
            .finish()
    }
}

impl From<LoginResponse> for Tokens {
    fn from(r: LoginResponse) -> Self {
        Tokens {
            access_token: r.access_token,
            refresh_token: r.refresh_token,
            device_id: r.device_id,
        }
    }
}

fn build_client() -> Client {
    let builder = Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(concat!("nimbus/", env!("CARGO_PKG_VERSION")));
    // Building only fails if the TLS backend cannot initialise; fall back
    // to the defaults rather than refusing to start.
    builder.build().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "HTTP client with custom settings failed; using defaults");
        Client::new()
    })
}

fn base_url(server_url: &str) -> String {
    server_url.trim().trim_end_matches('/').to_owned()
}

/// The error and its sources, on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let m = src.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = src.source();
    }
    s
}

fn transport(e: reqwest::Error) -> RemoteError {
    if e.is_decode() {
        RemoteError::Server {
            status: e.status().map_or(200, |s| s.as_u16()),
            message: format!("invalid response: {}", describe(&e)),
        }
    } else {
        RemoteError::Unreachable(describe(&e))
    }
}

/// Turns a non-success response into the matching error.
async fn error_from(resp: Response) -> RemoteError {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let (code, message, op) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => (b.error, b.message, b.op),
        Err(_) => (
            format!("http_{}", status.as_u16()),
            if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text.chars().take(200).collect()
            },
            None,
        ),
    };
    match status.as_u16() {
        401 => RemoteError::Unauthorized(message),
        404 => RemoteError::NotFound(message),
        s @ 500..=599 => RemoteError::Server { status: s, message },
        s => RemoteError::Rejected {
            status: s,
            code,
            message,
            op,
        },
    }
}

async fn json_of<T: serde::de::DeserializeOwned>(resp: Response) -> Result<T, RemoteError> {
    resp.json::<T>().await.map_err(transport)
}

/// Logs in and registers a new device named `device_name`.
pub async fn login(
    server_url: &str,
    user: &str,
    password: &str,
    device_name: &str,
) -> Result<LoginResponse, RemoteError> {
    login_with(server_url, user, password, device_name, None).await
}

/// Logs in; with `device_id`, as that existing device of the account (new
/// tokens, same device id and name), else as a new device named
/// `device_name`. A `device_id` the server does not accept (unknown,
/// revoked, another account's) is `Rejected { status: 403, code:
/// "unknown_device", .. }`; wrong credentials are `Unauthorized`.
pub async fn login_with(
    server_url: &str,
    user: &str,
    password: &str,
    device_name: &str,
    device_id: Option<DeviceId>,
) -> Result<LoginResponse, RemoteError> {
    let resp = build_client()
        .post(format!("{}/api/v1/auth/login", base_url(server_url)))
        .json(&LoginRequest {
            user: user.to_owned(),
            password: password.to_owned(),
            device: device_name.to_owned(),
            device_id,
        })
        .send()
        .await
        .map_err(transport)?;
    if !resp.status().is_success() {
        return Err(error_from(resp).await);
    }
    json_of(resp).await
}

pub struct HttpRemote {
    base: String,
    client: Client,
    access_token: RwLock<String>,
    refresh_token: String,
    device_id: DeviceId,
    /// Single-flight refresh.
    refreshing: tokio::sync::Mutex<()>,
}

impl HttpRemote {
    pub fn new(server_url: &str, tokens: Tokens) -> Self {
        HttpRemote {
            base: base_url(server_url),
            client: build_client(),
            access_token: RwLock::new(tokens.access_token),
            refresh_token: tokens.refresh_token,
            device_id: tokens.device_id,
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    pub fn server_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.base)
    }

    /// Gets a new access token unless someone already replaced `stale`.
    async fn refresh_after(&self, stale: &str) -> Result<String, RemoteError> {
        let _flight = self.refreshing.lock().await;
        {
            let current = self.access_token.read();
            if *current != stale && !current.is_empty() {
                return Ok(current.clone());
            }
        }
        let resp = self
            .client
            .post(self.url("auth/refresh"))
            .json(&RefreshRequest {
                refresh_token: self.refresh_token.clone(),
            })
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(match error_from(resp).await {
                RemoteError::Unauthorized(m) => RemoteError::Unauthorized(format!(
                    "the server refused the refresh token ({m}); log in again"
                )),
                other => other,
            });
        }
        let r: LoginResponse = json_of(resp).await?;
        *self.access_token.write() = r.access_token.clone();
        Ok(r.access_token)
    }

    /// Sends the request `build` makes, with the access token; on a 401
    /// refreshes once and sends it again. Non-2xx answers become errors.
    async fn send(
        &self,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response, RemoteError> {
        let mut token = self.access_token.read().clone();
        if token.is_empty() {
            token = self.refresh_after(&token).await?;
        }
        let resp = build(&self.client)
            .bearer_auth(&token)
            .send()
            .await
            .map_err(transport)?;
        let resp = if resp.status() == StatusCode::UNAUTHORIZED {
            let token = self.refresh_after(&token).await?;
            build(&self.client)
                .bearer_auth(&token)
                .send()
                .await
                .map_err(transport)?
        } else {
            resp
        };
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(error_from(resp).await)
        }
    }

    async fn missing_batch(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        let body = MissingChunksRequest { ids: ids.to_vec() };
        let resp = self
            .send(|c| c.post(self.url("chunks/missing")).json(&body))
            .await?;
        Ok(json_of::<MissingChunksResponse>(resp).await?.missing)
    }

    async fn commit_batch(&self, ops: &[CommitOp]) -> Result<Vec<CommitOutcome>, RemoteError> {
        let body = CommitRequest { ops: ops.to_vec() };
        let resp = self
            .send(|c| c.post(self.url("sync/commit")).json(&body))
            .await?;
        Ok(json_of::<CommitResponse>(resp).await?.results)
    }
}

impl std::fmt::Debug for HttpRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRemote")
            .field("server", &self.base)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Remote for HttpRemote {
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        let mut missing = Vec::new();
        for batch in ids.chunks(MAX_MISSING_QUERY) {
            missing.extend(self.missing_batch(batch).await?);
        }
        Ok(missing)
    }

    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<(), RemoteError> {
        let plain = data.clone();
        let compressed = tokio::task::spawn_blocking(move || {
            zstd::bulk::compress(&plain, UPLOAD_ZSTD_LEVEL)
                .ok()
                .filter(|z| z.len() < plain.len())
                .map(Bytes::from)
        })
        .await
        .ok()
        .flatten();
        let url = self.url(&format!("chunks/{}", id.to_hex()));
        self.send(|c| {
            let req = c
                .put(&url)
                .header(header::CONTENT_TYPE, "application/octet-stream");
            match &compressed {
                Some(z) => req.header(header::CONTENT_ENCODING, "zstd").body(z.clone()),
                None => req.body(data.clone()),
            }
        })
        .await?;
        Ok(())
    }

    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, RemoteError> {
        let url = self.url(&format!("chunks/{}", id.to_hex()));
        let mut resp = self.send(|c| c.get(&url)).await?;
        let mut buf = BytesMut::new();
        while let Some(part) = resp.chunk().await.map_err(transport)? {
            buf.extend_from_slice(&part);
            if buf.len() > MAX_CHUNK_LEN as usize {
                return Err(RemoteError::Corrupt(id));
            }
        }
        let data = buf.freeze();
        let checked = data.clone();
        let ok = tokio::task::spawn_blocking(move || id.verify(&checked))
            .await
            .unwrap_or(false);
        if ok {
            Ok(data)
        } else {
            Err(RemoteError::Corrupt(id))
        }
    }

    async fn commit(&self, ops: Vec<CommitOp>) -> Result<Vec<CommitOutcome>, RemoteError> {
        let mut results = Vec::with_capacity(ops.len());
        for batch in ops.chunks(MAX_COMMIT_OPS) {
            results.extend(self.commit_batch(batch).await?);
        }
        Ok(results)
    }

    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullResponse, RemoteError> {
        let url = self.url("sync/pull");
        let query = [("cursor", cursor.to_string()), ("limit", limit.to_string())];
        let resp = self.send(|c| c.get(&url).query(&query)).await?;
        json_of(resp).await
    }
}
