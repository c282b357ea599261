//! [`HttpRemote`]: the [`Remote`] trait over the server's HTTP API.
//!
//! - One pooled `reqwest` client (rustls); connect timeout 3 s, whole
//!   request 60 s ([`PULL_TIMEOUT`], 15 s, for pulls); idle connections
//!   are dropped after [`POOL_IDLE`] (a silently dead one is otherwise
//!   found only by the timeout of the request that reuses it).
//! - The access token sits behind a lock. A 401 triggers one refresh
//!   (`/auth/refresh`, single-flight: concurrent requests that hit the same
//!   expired token share one refresh) and one retry; a refused refresh is
//!   [`RemoteError::Unauthorized`].
//! - With a [`TokenSource`] (the mount's saved login), a refused refresh
//!   re-reads the saved login: if the user logged in again (same device,
//!   different refresh token), the remote adopts it and refreshes once
//!   more, so a running mount resumes by itself after `nimbus login`. The
//!   server rotates refresh tokens (each refresh answers a new one and
//!   uses the old one up): the new one is saved through the token source
//!   (atomic write, fsync, 0600) before it is used. Before each refresh
//!   the saved login is read too: another process of this device (a
//!   `nimbus devices` command) may have rotated the token since, and
//!   refreshing with the used-up one would look like theft to the server.
//! - TLS: rustls, verifying the server against the system's and the
//!   bundled Mozilla roots, or only against a private CA ([`ClientTls`],
//!   `nimbus login --ca`). The user agent names the platform
//!   (`nimbus/0.1.0 (linux x86_64)`), which `nimbus devices` shows.
//! - Errors: connection failures and timeouts → `Unreachable`, 5xx →
//!   `Server`, 404 → `NotFound`, 401 → `Unauthorized`, other 4xx →
//!   `Rejected { status, code, message, op }` from the server's `ErrorBody`
//!   (a response that is not an `ErrorBody`, e.g. a proxy's HTML page, gets
//!   the code `http_<status>`).
//! - Every request carries `Nimbus-Protocol: PROTOCOL_VERSION` (login and
//!   refresh too). A server of another version answers 400
//!   `protocol_version`: `Rejected` with a message naming both versions
//!   (the server's from its answer's header) and the side to upgrade,
//!   which pauses the uploads as misconfigured (`RemoteError::class`).
//! - Chunks go up zstd-compressed (`Content-Encoding: zstd`) when that
//!   makes them smaller, and come down verified against their BLAKE3 hash
//!   (`Corrupt` otherwise), one by one or in a batch (`chunks/batch`,
//!   whose answer is read whole, at most `MAX_BATCH_BYTES` plus frame
//!   headers, and checked frame by frame: an answer that breaks the
//!   framing is a `Server` error).
//! - Lock order: `refreshing` (async, held across the refresh request and
//!   the token source's file I/O; it owns the refresh token), then
//!   `access_token` (sync, never held across an await).
//! - Push (`GET /api/v1/sync/ws`, [`Remote::subscribe`]): a listener task
//!   over tokio-tungstenite with the same TLS trust and token refresh
//!   (`http::push`, `remote::push`).
//! - Requests over the server's per-request caps (`MAX_MISSING_QUERY` ids,
//!   `MAX_COMMIT_OPS` ops) are split into several requests, in order; the
//!   `op` of an error counts ops across them (as the caller numbered them).
//!   Batches before a failing one stay applied (replaying them is
//!   harmless: a device's own commit is never a conflict).

use super::push::{spawn_listener, PushSubscription};
use super::{Remote, RemoteError};
use crate::protocol::{
    batch_body_len, decode_batch, distinct_ids, ChunkBatchRequest, MAX_BATCH_BYTES,
    MAX_BATCH_CHUNKS,
};
use crate::protocol::{
    parse_protocol_version, protocol_mismatch_message, PROTOCOL_HEADER, PROTOCOL_VERSION,
    PROTOCOL_VERSION_ERROR,
};
use crate::protocol::{
    ChunkId, CommitOp, CommitOutcome, CommitRequest, CommitResponse, DeviceId, ErrorBody,
    LoginRequest, LoginResponse, MissingChunksRequest, MissingChunksResponse, PullResponse,
    RefreshRequest, SpaceReport, MAX_CHUNK_LEN, MAX_COMMIT_OPS, MAX_MISSING_QUERY,
};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use reqwest::{header, Client, RequestBuilder, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;

mod account;
mod push;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The deadline of a pull (one page of change records, which the server
/// reads from an index): well under [`REQUEST_TIMEOUT`], so that a
/// connection that went silent (a NAT timeout, a network switch, a hung
/// server) costs the follower seconds, not a minute, and the device shows
/// `offline` meanwhile.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an idle pooled connection is kept. Short, because a pooled
/// connection that silently died is only found out by the request that
/// reuses it: a reconnect costs one handshake, a dead one a timeout.
pub const POOL_IDLE: Duration = Duration::from_secs(5);
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

/// How the client checks the server's certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM certificates of a private CA: trusted instead of the system's
    /// and the bundled roots.
    pub ca_pem: Option<String>,
}

impl ClientTls {
    /// Checks that `ca_pem` holds at least one certificate (a clear error
    /// otherwise).
    pub fn check(&self) -> Result<(), String> {
        match &self.ca_pem {
            None => Ok(()),
            Some(pem) => match reqwest::Certificate::from_pem_bundle(pem.as_bytes()) {
                Ok(certs) if !certs.is_empty() => Ok(()),
                Ok(_) => Err("the CA file holds no PEM certificate".into()),
                Err(e) => Err(format!("the CA file is not a PEM certificate: {e}")),
            },
        }
    }
}

/// The `User-Agent`: version, OS and architecture.
fn user_agent() -> String {
    format!(
        "nimbus/{} ({} {})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

fn build_client(tls: &ClientTls) -> Client {
    let mut builder = Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE)
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(user_agent())
        .default_headers(header::HeaderMap::from_iter([(
            header::HeaderName::from_static(PROTOCOL_HEADER),
            header::HeaderValue::from(PROTOCOL_VERSION),
        )]));
    if let Some(pem) = &tls.ca_pem {
        // Only the private CA: a public CA cannot vouch for this server.
        builder = builder.tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(pem.as_bytes()).unwrap_or_default() {
            builder = builder.add_root_certificate(cert);
        }
    }
    // Building only fails if the TLS backend cannot initialise; fall back
    // to the defaults rather than refusing to start (a bad CA file is
    // refused earlier, by `ClientTls::check`).
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
        RemoteError::Unreachable(tls_hint(describe(&e)))
    }
}

/// Adds what to do to a certificate failure, which reqwest reports deep
/// in a chain of sources.
fn tls_hint(message: String) -> String {
    let lower = message.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        format!(
            "{message} (the server's TLS certificate is not trusted: for a private CA, log in \
             with --ca FILE)"
        )
    } else {
        message
    }
}

/// Turns a non-success response into the matching error. A refused
/// protocol version gets the client's own sentence, from the version the
/// server's answer names.
async fn error_from(resp: Response) -> RemoteError {
    let status = resp.status();
    let server_version = resp
        .headers()
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_protocol_version);
    let text = resp.text().await.unwrap_or_default();
    let (code, message, op) = match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) if b.error == PROTOCOL_VERSION_ERROR => {
            let message = match server_version {
                Some(v) if v != PROTOCOL_VERSION => protocol_mismatch_message(v, PROTOCOL_VERSION),
                _ => b.message,
            };
            (b.error, message, b.op)
        }
        Ok(b) => (b.error, b.message, b.op),
        Err(_) => (
            format!("http_{}", status.as_u16()),
            foreign_error_message(status, &text),
            None,
        ),
    };
    RemoteError::from_status(status.as_u16(), code, message, op)
}

/// One line for an error body that is not the server's JSON (a proxy's
/// HTML page, plain text): the page's `<title>` if it has one, else its
/// first line, else the status's reason phrase; at most 200 characters.
fn foreign_error_message(status: StatusCode, text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let title = lower.find("<title>").and_then(|start| {
        let from = start + "<title>".len();
        let end = lower[from..].find("</title>")? + from;
        Some(text.get(from..end)?.trim().to_owned())
    });
    let line = match title {
        Some(t) if !t.is_empty() => t,
        _ if lower.contains('<') => String::new(),
        _ => text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned(),
    };
    let line = if line.is_empty() {
        format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("error")
        )
    } else {
        line
    };
    line.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
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
    login_with_tls(
        server_url,
        user,
        password,
        device_name,
        device_id,
        &ClientTls::default(),
    )
    .await
}

/// [`login_with`], checking the server's certificate as `tls` says.
pub async fn login_with_tls(
    server_url: &str,
    user: &str,
    password: &str,
    device_name: &str,
    device_id: Option<DeviceId>,
    tls: &ClientTls,
) -> Result<LoginResponse, RemoteError> {
    let resp = build_client(tls)
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

/// Where an [`HttpRemote`] finds a login saved after it was built (the user
/// ran `nimbus login` again while the mount kept running), and where it
/// saves tokens the server rotated. Implementations do blocking file I/O;
/// they are called on a blocking thread, only when a refresh token was
/// refused or replaced (never on the hot path).
pub trait TokenSource: Send + Sync + 'static {
    /// The tokens saved now for this remote's server, or `None` when there
    /// is no such login. An error is logged and treated as `None`.
    fn load(&self) -> anyhow::Result<Option<Tokens>>;
    /// Saves `tokens` durably (atomic replace + fsync), replacing the saved
    /// ones of the same device. Must not overwrite a login of another
    /// device or server.
    fn save(&self, tokens: &Tokens) -> anyhow::Result<()>;
}

/// The [`Remote`] over HTTP. See the module docs for tokens and errors.
pub struct HttpRemote {
    base: String,
    client: Client,
    access_token: RwLock<String>,
    device_id: DeviceId,
    /// Single-flight refresh: held across the refresh request; guards the
    /// refresh token, which only a refresh reads or replaces.
    refreshing: tokio::sync::Mutex<String>,
    token_source: Option<Arc<dyn TokenSource>>,
    /// The TLS trust, kept for the push socket (`http::push`).
    tls: ClientTls,
}

impl HttpRemote {
    /// A remote for `server_url` using `tokens` (an empty access token is
    /// refreshed on first use).
    pub fn new(server_url: &str, tokens: Tokens) -> Self {
        Self::with_tls(server_url, tokens, &ClientTls::default())
    }

    /// [`HttpRemote::new`], checking the server's certificate as `tls`
    /// says.
    pub fn with_tls(server_url: &str, tokens: Tokens, tls: &ClientTls) -> Self {
        HttpRemote {
            base: base_url(server_url),
            client: build_client(tls),
            access_token: RwLock::new(tokens.access_token),
            device_id: tokens.device_id,
            refreshing: tokio::sync::Mutex::new(tokens.refresh_token),
            token_source: None,
            tls: tls.clone(),
        }
    }

    /// Adds a [`TokenSource`]: a refused refresh then re-reads the saved
    /// login and, if it holds a different refresh token for the same
    /// device, adopts it and refreshes once more; rotated refresh tokens
    /// are saved there before they are used.
    pub fn with_token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.token_source = Some(source);
        self
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
    /// Holds `refreshing` throughout (single flight); takes `access_token`
    /// only briefly, never across an await.
    async fn refresh_after(&self, stale: &str) -> Result<String, RemoteError> {
        let mut refresh_token = self.refreshing.lock().await;
        {
            let current = self.access_token.read();
            if *current != stale && !current.is_empty() {
                return Ok(current.clone());
            }
        }
        // Another process of this device may have rotated the token since
        // (see the module docs): start from the saved one.
        if let Some(saved) = self.saved_tokens().await {
            if saved.device_id == self.device_id
                && !saved.refresh_token.is_empty()
                && saved.refresh_token != *refresh_token
            {
                tracing::debug!("using the refresh token saved by another process");
                *refresh_token = saved.refresh_token;
            }
        }
        let refused = match self.refresh_with(&mut refresh_token).await {
            Err(RemoteError::Unauthorized(m)) => m,
            other => return other,
        };
        // Refused: did the user log in again meanwhile?
        match self.saved_tokens().await {
            Some(saved) if saved.device_id != self.device_id => {
                Err(RemoteError::Unauthorized(format!(
                    "the server refused the refresh token ({refused}), and the saved login is \
                     for another device ({}, this mount is {}); mount again to use it",
                    saved.device_id, self.device_id
                )))
            }
            Some(saved) if saved.refresh_token != *refresh_token => {
                tracing::info!("adopting the login saved after the refresh token was refused");
                *refresh_token = saved.refresh_token;
                self.refresh_with(&mut refresh_token)
                    .await
                    .map_err(|e| match e {
                        RemoteError::Unauthorized(m) => RemoteError::Unauthorized(format!(
                            "the server refused the refresh token of the saved login too ({m}); \
                             log in again"
                        )),
                        other => other,
                    })
            }
            // The server's sentence already says what to do (revoked,
            // session ended): do not say it twice.
            _ if refused.contains("log in again") => Err(RemoteError::Unauthorized(format!(
                "the server refused this device: {refused}"
            ))),
            _ => Err(RemoteError::Unauthorized(format!(
                "the server refused the refresh token ({refused}); log in again"
            ))),
        }
    }

    /// The saved login of the token source, if any (errors logged).
    async fn saved_tokens(&self) -> Option<Tokens> {
        let source = self.token_source.clone()?;
        match tokio::task::spawn_blocking(move || source.load()).await {
            Ok(Ok(tokens)) => tokens,
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the saved login");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the saved login failed");
                None
            }
        }
    }

    /// One `/auth/refresh` with `refresh_token` (the guard of `refreshing`).
    /// On success stores the new access token and, if the server rotated
    /// the refresh token, saves the new one through the token source
    /// before adopting it.
    async fn refresh_with(&self, refresh_token: &mut String) -> Result<String, RemoteError> {
        let resp = self
            .client
            .post(self.url("auth/refresh"))
            .json(&RefreshRequest {
                refresh_token: refresh_token.clone(),
            })
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        let r: LoginResponse = json_of(resp).await?;
        if r.refresh_token != *refresh_token && !r.refresh_token.is_empty() {
            self.save_rotated(&r).await;
            *refresh_token = r.refresh_token;
        }
        *self.access_token.write() = r.access_token.clone();
        Ok(r.access_token)
    }

    /// Saves a rotated refresh token durably. If that fails, the new token
    /// is still used (the old one may no longer work); a crash before the
    /// next successful save then needs a `nimbus login`.
    async fn save_rotated(&self, r: &LoginResponse) {
        let Some(source) = self.token_source.clone() else {
            return;
        };
        let tokens = Tokens {
            access_token: r.access_token.clone(),
            refresh_token: r.refresh_token.clone(),
            device_id: self.device_id,
        };
        match tokio::task::spawn_blocking(move || source.save(&tokens)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "cannot save the rotated refresh token")
            }
            Err(e) => tracing::error!(error = %e, "saving the rotated refresh token failed"),
        }
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

    async fn get_chunks(&self, ids: &[ChunkId]) -> Result<Vec<(ChunkId, Bytes)>, RemoteError> {
        let ids = distinct_ids(ids);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let body = ChunkBatchRequest { ids: ids.clone() };
        let url = self.url("chunks/batch");
        let mut resp = self.send(|c| c.post(&url).json(&body)).await?;
        // The largest answer the server may send to this request.
        let cap = batch_body_len(std::iter::repeat_n(0, ids.len().min(MAX_BATCH_CHUNKS)))
            + MAX_BATCH_BYTES;
        let mut buf = BytesMut::new();
        while let Some(part) = resp.chunk().await.map_err(transport)? {
            buf.extend_from_slice(&part);
            if buf.len() as u64 > cap {
                return Err(RemoteError::Server {
                    status: 200,
                    message: format!("chunk batch answer over {cap} bytes"),
                });
            }
        }
        let frames = decode_batch(&ids, &buf.freeze()).map_err(|message| RemoteError::Server {
            status: 200,
            message,
        })?;
        tokio::task::spawn_blocking(move || {
            match frames.iter().find(|(id, data)| !id.verify(data)) {
                Some((id, _)) => Err(RemoteError::Corrupt(*id)),
                None => Ok(frames),
            }
        })
        .await
        .map_err(|e| RemoteError::Server {
            status: 200,
            message: format!("verifying a chunk batch failed: {e}"),
        })?
    }

    async fn commit(&self, ops: Vec<CommitOp>) -> Result<Vec<CommitOutcome>, RemoteError> {
        let mut results = Vec::with_capacity(ops.len());
        for (i, batch) in ops.chunks(MAX_COMMIT_OPS).enumerate() {
            // The server numbers ops per request; the caller's are global.
            let batch_results = self
                .commit_batch(batch)
                .await
                .map_err(|e| e.shift_op(i * MAX_COMMIT_OPS))?;
            results.extend(batch_results);
        }
        Ok(results)
    }

    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullResponse, RemoteError> {
        let url = self.url("sync/pull");
        let query = [("cursor", cursor.to_string()), ("limit", limit.to_string())];
        let resp = self
            .send(|c| c.get(&url).query(&query).timeout(PULL_TIMEOUT))
            .await?;
        json_of(resp).await
    }

    async fn space(&self) -> Result<SpaceReport, RemoteError> {
        let url = self.url("account/space");
        let resp = self.send(|c| c.get(&url).timeout(PULL_TIMEOUT)).await?;
        json_of(resp).await
    }

    fn subscribe(self: Arc<Self>) -> Option<PushSubscription> {
        Some(spawn_listener(push::HttpDial::new(self)))
    }

    /// Compares, every [`CREDENTIALS_POLL`], the refresh token in use at
    /// the call with the one in use now (another worker adopted new
    /// credentials) and with the token source's (a local file: no
    /// request); resolves when either differs. Without a token source:
    /// never.
    async fn credentials_renewed(&self) {
        if self.token_source.is_none() {
            return std::future::pending().await;
        }
        let at_start = self.refreshing.lock().await.clone();
        loop {
            tokio::time::sleep(CREDENTIALS_POLL).await;
            if *self.refreshing.lock().await != at_start {
                return;
            }
            if let Some(saved) = self.saved_tokens().await {
                if saved.device_id == self.device_id
                    && !saved.refresh_token.is_empty()
                    && saved.refresh_token != at_start
                {
                    return;
                }
            }
        }
    }
}

/// How often [`HttpRemote`] looks for credentials saved by `nimbus login`
/// while a worker waits for them.
pub const CREDENTIALS_POLL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod message_tests {
    use super::*;

    #[test]
    fn a_proxy_page_becomes_one_line() {
        let nginx = "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n\
                     <body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n\
                     <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        assert_eq!(
            foreign_error_message(StatusCode::PAYLOAD_TOO_LARGE, nginx),
            "413 Request Entity Too Large"
        );
        assert_eq!(
            foreign_error_message(StatusCode::BAD_GATEWAY, "<html><body>x</body></html>"),
            "502 Bad Gateway"
        );
        assert_eq!(
            foreign_error_message(StatusCode::NOT_FOUND, "\n  no such route \n more"),
            "no such route"
        );
        assert_eq!(
            foreign_error_message(StatusCode::NOT_FOUND, ""),
            "404 Not Found"
        );
    }
}

#[cfg(test)]
mod tests;
