//! The Nimbus server: an HTTP API (axum) over two storage engines, a
//! metadata store ([`meta_store`]) and a chunk store ([`chunk_store`]).
//!
//! [`start`] runs it (the CLI's `nimbus serve`, and in-process for the
//! embedded default); [`add_user`] / [`ensure_user`] create accounts.
//!
//! # Routes
//! Every error is `{"error": code, "message": sentence}`; the code list is
//! [`error::ServerError::status_and_code`], the one place errors meet HTTP.
//!
//! | Route | Body → answer | Errors |
//! |---|---|---|
//! | `GET /healthz` | `ok` | |
//! | `GET /metrics` | Prometheus text | |
//! | `GET /api/v1/openapi.json` | OpenAPI 3.0 description | |
//! | `POST /api/v1/auth/login` | `LoginRequest` → `LoginResponse`; with `device_id`, new tokens for that existing device (its name is kept; a revoked one is reinstated, its old tokens deleted) instead of a new device | 401 `invalid_credentials` (wrong password and unknown user alike), 400 bad device name, 403 `unknown_device` (`device_id` unknown or another account's: nothing registered) |
//! | `POST /api/v1/auth/refresh` | `RefreshRequest` → `LoginResponse` (same device, a **new** refresh token: the old one is used up; retried within 60 s it gets the same answer) | 401 `unauthorized`, 401 `device_revoked`, 401 `refresh_token_reused` (replayed after rotation: every token of the device is deleted) |
//! | `POST /api/v1/auth/logout` | → 204; revokes the calling device and deletes its tokens | 401 |
//! | `GET /api/v1/devices` | → `DeviceList` (name, id, platform, created, last seen, revoked, current) | 401 |
//! | `POST /api/v1/devices/{id}/revoke` | → 204; that device's next request gets 401 `device_revoked`; a password login as it reinstates it | 400 bad id, 404 not a device of this account |
//! | `POST /api/v1/account/password` | `PasswordChange` → `PasswordChanged`; every other device is signed out (tokens deleted, devices kept) | 400 empty or over 1024 bytes, 403 `wrong_password` |
//! | `POST /api/v1/chunks/missing` | `MissingChunksRequest` → `MissingChunksResponse` | 413 over [`MAX_MISSING_QUERY`](crate::protocol::MAX_MISSING_QUERY) ids |
//! | `PUT /api/v1/chunks/{hex}` | plain bytes, or zstd with `Content-Encoding: zstd` → 204 | 400 `invalid_chunk_id`, 400 `hash_mismatch` (nothing stored), 400 `bad_encoding`, 413 over `MAX_CHUNK_LEN`, 415 other encodings |
//! | `GET /api/v1/chunks/{hex}` | → plain bytes | 404 unless this account uploaded the chunk |
//! | `POST /api/v1/chunks/batch` | `ChunkBatchRequest` → frames of id, length and plain bytes per chunk (`protocol::chunk_batch`) | 404 `not_found` unless this account uploaded every chunk, 413 `batch_too_large` over [`MAX_BATCH_CHUNKS`](crate::protocol::MAX_BATCH_CHUNKS) ids or [`MAX_BATCH_BYTES`](crate::protocol::MAX_BATCH_BYTES) |
//! | `POST /api/v1/sync/commit` | `CommitRequest` → `CommitResponse` | see below |
//! | `GET /api/v1/sync/pull?cursor=N&limit=M` | → `PullResponse` (limit default 1000, capped at `MAX_PULL_LIMIT`) | 400 bad query, 409 `cursor_ahead` (cursor past the log: the server was reset; pull from 0) |
//! | `GET /api/v1/sync/ws` | WebSocket upgrade → text messages `{"type":"changed","cursor":N,"device":ID}`: the account's head at once, then whenever its change log advances (never data); pings every 10 s (see [`push`]) | 401 before the upgrade (as every route); 400 not an upgrade; 429 `too_many_sockets` over a cap of [`push::SocketLimits`]; close 4401 with the error code when the session ends, 1009/1002/1007 when the client sends a big frame or breaks the protocol |
//! | `GET /api/v1/files/content?path=/a/b` | → file bytes; `Range: bytes=a-b` → 206 | 400 `invalid_path`/`not_a_file`, 404, 416 |
//!
//! Every `/api/v1` route except login and refresh takes
//! `Authorization: Bearer <access token>`: 401 `unauthorized` when missing,
//! unknown or revoked, 401 `token_expired` after 15 minutes (refresh then).
//! A route sees only its own account: another account's node ids are
//! simply unknown. Body limits: chunk uploads `MAX_CHUNK_LEN` + 64 KiB,
//! commits 16 MiB, other JSON 1 MiB; beyond → 413 `payload_too_large`.
//! A locked database answers 503 `busy` with `Retry-After`.
//!
//! # Protocol version
//! Every answer carries `Nimbus-Protocol: N`, the version this server
//! speaks ([`PROTOCOL_VERSION`](crate::protocol::PROTOCOL_VERSION)). A
//! request with a `Nimbus-Protocol` header naming another version (or not
//! a number) gets 400 `protocol_version` on every route, before
//! authentication and before its body is read, with a message naming both
//! versions and the side to upgrade: a client and a server of different
//! versions never read each other's bodies with fields dropped. 400, not
//! 426: 426 means "switch protocols with an `Upgrade` header", which is
//! not what is asked; the stable error code carries the meaning. A
//! request without the header (curl, a browser, `/healthz` probes, the
//! Prometheus scrape) is served as one of this version.
//!
//! # Chunks
//! A chunk is stored once per server, but an account may reference it (in
//! a commit) or read it only after uploading it itself: knowing a hash is
//! not possession. `chunks/missing` therefore lists every id this account
//! has not uploaded, even if another account has, and also owned chunks
//! the store lost (quarantined as corrupt), so they get uploaded again.
//!
//! # Commit rules
//! A commit's ops are all validated first without touching the store
//! (name per `protocol::validate_name` → 400 `invalid_name`; per
//! `commit::validate_meta` → 400 `invalid_node`: mode ≤ 0o7777, every
//! time's nanoseconds below 1e9, files carry content, symlinks a target,
//! folders, FIFOs, sockets and device nodes neither, only character
//! and block devices a nonzero `rdev`, and extended attributes by the
//! rules of `protocol::Xattrs`: `user.`/`trusted.`/`security.` names of
//! 1..=255 bytes, `user.*` on files and folders only, values ≤ 64 KiB,
//! ≤ 4 KiB per node; a folder with `links`, an entry listed twice, or
//! more than `MAX_LINKS` entries → 400 `invalid_node`; root → 400
//! `root_immutable`): a
//! malformed request stores nothing. Numeric owner or group ids without
//! `ids_from` are stored as set by the committing device; no ids, no
//! `ids_from`. Then the ops are applied in order **in one transaction**.
//! A check that needs the store stops the request at that op with its
//! error (message `op N: ...`) and **nothing of the request is applied**
//! (the client retries its ops one at a time). Those checks: the parent exists in this
//! account (409 `parent_not_found`) and is a folder (409
//! `parent_not_dir`); every chunk of the manifest was uploaded by this
//! account with that length (409 `missing_chunks` listing them, 400
//! `invalid_node`); a folder does not move into its own subtree (400
//! `invalid_move`); a node keeps its kind (409 `kind_mismatch`). The server
//! computes content hashes itself.
//!
//! With S the server's version vector, B the op's base and d the committing
//! device (all ids first resolved through the account's aliases):
//! - **Upsert, unknown node**: if its first entry is held by a live node
//!   that is the same thing (same kind, and the same content hash, symlink
//!   target or device number; any two folders), the op merges into it: the
//!   op's id becomes an alias of that node, which takes the op's
//!   attributes and keeps its entries → `merged`. Otherwise created, vv
//!   `{d: 1}` → `applied`.
//! - **Upsert, known node, with `seen`** (the state the device last saw):
//!   merged field by field (`commit::merge`): a field changed only by the
//!   op takes the op's value, one changed only on the server keeps the
//!   server's, one changed on both takes the op's (the later commit wins)
//!   — except content with different bytes on both sides: the node keeps
//!   the server's content and the op's becomes a new node beside it, named
//!   `<stem> (conflict <device name> <YYYY-MM-DD HH.MM.SS>)<.ext>` (commit
//!   time, UTC; ` 2`, ` 3`... inside the parenthesis if taken) and marked
//!   (`NodeMeta::conflict`) → `conflict_copy`. A winning move that would
//!   put a folder inside itself (two crossed concurrent moves) is not
//!   applied: the move committed first stands. vv = merge(S, B) + 1 for d.
//! - **Upsert, known node, without `seen`** (a device's replay of its own
//!   create), or a node in the trash (edit beats delete): the op's whole
//!   state; if S is not `others_seen_by(B, d)` and the content differs,
//!   a conflict copy as above.
//! - **Entries (hard links)** are part of the node's state (see
//!   `protocol::api`): an upsert carries the whole set (`parent`/`name`
//!   and `links`), checked entry by entry (each parent exists and is a
//!   folder), and the set is one field of the merge. A conflict copy gets
//!   one entry, beside the node's first.
//! - If an asked `(parent, name)` (first entry or link) is held by
//!   another live node, that entry gets the conflict name instead →
//!   `renamed`.
//! - If a parent (or an ancestor) is in the trash, it is restored first
//!   (the edit wins), under a conflict name if its old one was taken.
//! - **Delete**: unknown node → `already_gone`; already in the trash →
//!   `applied` with no change; server changed concurrently (S not seen by
//!   B) → `superseded` (the edit wins, nothing deleted); a folder with
//!   live entries → `superseded`; else the node is tombstoned (kept, with
//!   its first entry's parent and name, `deleted: true`, its other entries
//!   gone) → `applied`. A delete removes the node with every entry: a
//!   device unlinking one name of several sends an upsert without it.
//! - Every change takes the next number of the account's change log
//!   (`seq`); `pull(cursor)` returns the nodes whose last change is after
//!   the cursor, ascending. Every committed file manifest that differs
//!   from the node's previous one is appended to its version history.
//!
//! # Layers
//! `api` / `content` (handlers) → `commit` and `auth` (rules, once) →
//! `MetaStore` / `ChunkStore` (engines, behind traits, each with a shared
//! conformance suite). The chunk, commit and pull handlers are thin: their
//! bodies (`api::{missing_for, store_chunk, read_chunk, read_chunk_batch,
//! commit_ops, pull_page}`) are also what `remote::in_process::InProcessRemote` calls,
//! so tests without HTTP meet the same rules.

pub mod auth;
pub mod chunk_store;
pub mod commit;
pub mod error;
pub mod meta_store;
pub mod metrics;
pub mod push;

pub(crate) mod api;
mod content;
mod openapi;
mod sessions;
pub mod tls;

pub use tls::TlsFiles;

use crate::protocol::{parse_protocol_version, PROTOCOL_HEADER, PROTOCOL_VERSION};
use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chunk_store::ChunkStore;
use meta_store::{MetaError, MetaStore};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

pub use error::ServerError;

/// Body limit of chunk uploads.
pub const CHUNK_BODY_LIMIT: usize = crate::protocol::MAX_CHUNK_LEN as usize + 64 * 1024;
/// Body limit of commits.
pub const COMMIT_BODY_LIMIT: usize = 16 << 20;
/// Body limit of the other JSON requests.
pub const JSON_BODY_LIMIT: usize = 1 << 20;
/// How long a graceful shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Age from which a chunk store's temp file counts as left by a crash. A
/// chunk write (at most 4 MiB, then fsync and rename) takes far less, so
/// a younger temp file may be a write in progress, maybe of another
/// server sharing the chunk directory, and is kept.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
/// How often housekeeping runs (the first time right at start).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

/// Where a server listens and keeps its state.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Default home of the metadata database and the chunks.
    pub data_dir: PathBuf,
    /// `sqlite:PATH`; default `DATA/meta.sqlite`.
    pub metadata: Option<String>,
    /// Chunk directory; default `DATA/chunks`.
    pub chunks: Option<PathBuf>,
    /// Serve HTTPS with these files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The push sockets' ping interval and silence limit (tests shorten
    /// them; `nimbus serve` keeps the defaults).
    pub heartbeat: push::Heartbeat,
    /// How long a client may take to send a request's head
    /// ([`HEADER_READ_TIMEOUT`]; tests shorten it).
    pub header_read_timeout: Duration,
}

impl ServerConfig {
    /// A server on a free loopback port (the embedded default, tests) with
    /// the default engines under `data_dir`.
    pub fn loopback(data_dir: PathBuf) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            metadata: None,
            chunks: None,
            tls: None,
            heartbeat: push::Heartbeat::default(),
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub meta: Arc<dyn MetaStore>,
    pub chunks: Arc<dyn ChunkStore>,
    pub metrics: metrics::Metrics,
    /// Bounds concurrent password hashing.
    pub hash_permits: Semaphore,
    /// The push sockets' fan-out (see [`push`]).
    pub push: Arc<push::ChangeHub>,
    /// Where change-log advances and session changes are reported: the
    /// in-process hub (a multi-instance notifier would feed it too).
    pub notifier: Arc<dyn push::ChangeNotifier>,
    /// The push sockets' heartbeat timing.
    pub heartbeat: push::Heartbeat,
    /// Cancelled when the server stops: push sockets close.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        meta: Arc<dyn MetaStore>,
        chunks: Arc<dyn ChunkStore>,
        heartbeat: push::Heartbeat,
    ) -> Self {
        let hub = push::ChangeHub::new();
        AppState(Arc::new(AppInner {
            meta,
            chunks,
            metrics: metrics::Metrics::default(),
            hash_permits: Semaphore::new(auth::MAX_CONCURRENT_HASHES),
            notifier: hub.clone(),
            push: hub,
            heartbeat,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }))
    }
}

/// A client gets this long to send a request's head, on a new connection
/// and between requests of a kept-alive one; then the connection closes.
/// A slowloris peer (a request head sent a byte at a time, or never ended)
/// cannot hold connections, and so file descriptors, for longer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Sets the header read timeout (see [`HEADER_READ_TIMEOUT`]) on the
/// HTTP/1 side of `builder`.
fn bound_header_reads(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The whole route table.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/openapi.json", get(openapi::openapi))
        .route("/api/v1/auth/login", post(api::login))
        .route("/api/v1/auth/refresh", post(sessions::refresh))
        .route("/api/v1/auth/logout", post(sessions::logout))
        .route("/api/v1/devices", get(sessions::list_devices))
        .route("/api/v1/devices/{id}/revoke", post(sessions::revoke_device))
        .route("/api/v1/account/password", post(sessions::change_password))
        .route("/api/v1/chunks/missing", post(api::missing_chunks))
        .route("/api/v1/chunks/batch", post(api::get_chunk_batch))
        .route(
            "/api/v1/chunks/{hex}",
            get(api::get_chunk)
                .put(api::put_chunk)
                .layer(DefaultBodyLimit::max(CHUNK_BODY_LIMIT)),
        )
        .route(
            "/api/v1/sync/commit",
            post(api::commit).layer(DefaultBodyLimit::max(COMMIT_BODY_LIMIT)),
        )
        .route("/api/v1/sync/pull", get(api::pull))
        .route(crate::protocol::PUSH_PATH, get(push::socket::sync_ws))
        .route("/api/v1/account/space", get(api::space))
        .route("/api/v1/files/content", get(content::file_content))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(middleware::from_fn(check_protocol_version))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            track_requests,
        ))
        .with_state(state)
}

/// Counts every request by method, matched route and status.
async fn track_requests(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    st.metrics
        .record_request(&method, &route, resp.status().as_u16());
    tracing::debug!(%method, %route, status = resp.status().as_u16(), "request");
    resp
}

/// Refuses a request that names another protocol version (400
/// `protocol_version`, before any handler reads it), serves one that
/// names this version or none, and tells this server's version on every
/// answer (see "Protocol version" in the module docs).
async fn check_protocol_version(req: Request, next: Next) -> Response {
    let asked = req.headers().get(PROTOCOL_HEADER).map(|v| {
        v.to_str()
            .ok()
            .and_then(parse_protocol_version)
            // At most 40 characters of a bad value go back in the message.
            .ok_or_else(|| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(40)
                    .collect()
            })
    });
    let mut resp = match asked {
        None | Some(Ok(PROTOCOL_VERSION)) => next.run(req).await,
        Some(Ok(other)) => ServerError::ProtocolMismatch(other).into_response(),
        Some(Err(raw)) => ServerError::BadProtocolHeader(raw).into_response(),
    };
    resp.headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from(PROTOCOL_VERSION));
    resp
}

/// A server accepting requests; [`RunningServer::shutdown`] stops it.
pub struct RunningServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    housekeeping: tokio::task::JoinHandle<()>,
    state: AppState,
    /// The live TLS configuration and its files, when serving HTTPS.
    tls: Option<(axum_server::tls_rustls::RustlsConfig, TlsFiles)>,
}

impl RunningServer {
    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https` when serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Reads the certificate and key files again (SIGHUP): new
    /// connections get the new certificate, the listener and open
    /// connections stay. Without TLS, nothing to do. On error the old
    /// certificate stays in use.
    pub async fn reload_tls(&self) -> anyhow::Result<()> {
        match &self.tls {
            Some((config, files)) => tls::reload(config, files).await,
            None => Ok(()),
        }
    }

    /// Stops accepting, lets requests in flight finish (up to 10 s), then
    /// closes the stores.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let RunningServer {
            stop,
            mut task,
            housekeeping,
            state,
            ..
        } = self;
        housekeeping.abort();
        // Push sockets are upgraded connections the graceful shutdown
        // does not wait for: close them, so clients notice at once.
        state.shutdown.cancel();
        let _ = stop.send(());
        let result = match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(joined) => joined
                .context("server task panicked")?
                .context("server stopped with an error"),
            Err(_) => {
                tracing::warn!(
                    "requests still running after the shutdown grace period; aborting them"
                );
                task.abort();
                Ok(())
            }
        };
        state.meta.close().await;
        result
    }
}

/// Creates the data directory, private to its owner, if it is missing.
fn create_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict data directory {}", dir.display()))?;
    }
    Ok(())
}

async fn open_meta(cfg: &ServerConfig) -> anyhow::Result<Arc<dyn MetaStore>> {
    create_data_dir(&cfg.data_dir)?;
    meta_store::open(cfg.metadata.as_deref(), &cfg.data_dir).await
}

/// Opens the stores, binds `cfg.listen` and serves in a background task.
pub async fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
    // The certificate first: a bad one must not leave a half-started server.
    let rustls = match &cfg.tls {
        Some(files) => Some((tls::load(files).await?, files.clone())),
        None => None,
    };
    let meta = open_meta(&cfg).await?;
    let chunks = chunk_store::open(cfg.chunks.as_deref(), &cfg.data_dir)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let state = AppState::new(meta, chunks, cfg.heartbeat);
    let app = router(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let std_listener = listener.into_std()?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        let _ = stopped.await;
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    let service = app.into_make_service();
    // TCP_NODELAY: a streamed answer (chunks/batch, file content) goes out
    // in several writes, and Nagle's algorithm would hold each one back
    // until the client's delayed ACK of the last.
    let nodelay = axum_server::accept::NoDelayAcceptor::new();
    let task = match &rustls {
        None => {
            let mut server = axum_server::from_tcp(std_listener)?.acceptor(nodelay);
            bound_header_reads(server.http_builder(), cfg.header_read_timeout);
            tokio::spawn(async move { server.handle(handle).serve(service).await })
        }
        Some((config, _)) => {
            let mut server = axum_server::from_tcp_rustls(std_listener, config.clone())?
                .map(|tls| tls.acceptor(nodelay));
            bound_header_reads(server.http_builder(), cfg.header_read_timeout);
            tokio::spawn(async move { server.handle(handle).serve(service).await })
        }
    };
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    tracing::info!(%addr, tls = rustls.is_some(), data = %cfg.data_dir.display(), "server listening");
    Ok(RunningServer {
        addr,
        stop,
        task,
        housekeeping,
        state,
        tls: rustls,
    })
}

/// At start (in the background, so a large chunk store does not delay
/// serving) and then hourly: remove chunk-store temp files older than
/// [`STALE_TEMP_AGE`] (left by a crash), and forget tokens that expired
/// more than a day ago.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    loop {
        tick.tick().await;
        match state.chunks.remove_stale_temp_files(STALE_TEMP_AGE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed stale chunk-store temp files"),
            Err(e) => tracing::warn!(error = %e, "chunk-store temp file cleanup failed"),
        }
        let cutoff = now_ns().saturating_sub(24 * 3600 * 1_000_000_000);
        if let Err(e) = state.meta.delete_expired_tokens(cutoff).await {
            tracing::warn!(error = %e, "token cleanup failed");
        }
    }
}

fn check_new_user(name: &str, password: &str) -> anyhow::Result<()> {
    auth::validate_user_name(name)
        .map_err(|e| anyhow::anyhow!("invalid user name '{name}': {e}"))?;
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    if password.len() > auth::MAX_PASSWORD_BYTES {
        anyhow::bail!(
            "the password is longer than {} bytes",
            auth::MAX_PASSWORD_BYTES
        );
    }
    Ok(())
}

/// Creates an account (`nimbus admin user add`). Fails with a clear error
/// if the user exists or the name is not 1–64 characters of
/// `[A-Za-z0-9._-]`.
pub async fn add_user(cfg: &ServerConfig, name: &str, password: &str) -> anyhow::Result<()> {
    check_new_user(name, password)?;
    let meta = open_meta(cfg).await?;
    let result = create_user(meta.as_ref(), name, password).await;
    meta.close().await;
    match result {
        Ok(()) => Ok(()),
        Err(MetaError::AccountExists(_)) => anyhow::bail!("user '{name}' already exists"),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot create user '{name}'"))),
    }
}

/// Creates the account if it does not exist yet (the embedded default);
/// an existing account is left as it is, password included.
pub async fn ensure_user(cfg: &ServerConfig, name: &str, password: &str) -> anyhow::Result<()> {
    check_new_user(name, password)?;
    let meta = open_meta(cfg).await?;
    let result = match meta.account_by_name(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => match create_user(meta.as_ref(), name, password).await {
            Ok(()) | Err(MetaError::AccountExists(_)) => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    meta.close().await;
    result.with_context(|| format!("cannot create user '{name}'"))
}

async fn create_user(meta: &dyn MetaStore, name: &str, password: &str) -> Result<(), MetaError> {
    let hash = auth::hash_password(password)
        .await
        .map_err(|e| MetaError::Backend(e.into()))?;
    meta.create_account(name, &hash, now_ns()).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Instant, SystemTime};

    /// A temp file left by a crash long ago is removed by a real server
    /// start; a young one (maybe a write in progress) is kept.
    #[tokio::test]
    async fn start_removes_stale_chunk_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServerConfig::loopback(dir.path().join("data"));
        let shard = cfg.data_dir.join("chunks").join("ab");
        std::fs::create_dir_all(&shard).unwrap();
        let stale = shard.join(".tmp-abcd-crashed");
        let young = shard.join(".tmp-abcd-in-progress");
        std::fs::write(&stale, b"partial").unwrap();
        std::fs::write(&young, b"partial").unwrap();
        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();

        let server = start(cfg).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while stale.exists() {
            assert!(
                Instant::now() < deadline,
                "a stale temp file survived server start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            young.exists(),
            "a young temp file may be a write in progress"
        );
        server.shutdown().await.unwrap();
    }
}
