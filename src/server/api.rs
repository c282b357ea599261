//! Handlers of the JSON and chunk routes (the route table and status codes
//! are documented on the `server` module).

use super::auth::{self, Auth, ACCESS_TOKEN_TTL, MAX_PASSWORD_BYTES, REFRESH_TOKEN_TTL};
use super::chunk_store::encode_for_storage;
use super::commit::{self, CommitCtx};
use super::error::ServerError;
use super::meta_store::{AccountId, NewToken, TokenKind};
use super::{now_ns, AppState};
use crate::protocol::{
    batch_body_len, distinct_ids, frame_header, ChunkBatchRequest, ChunkId, CommitOp,
    CommitOutcome, CommitRequest, CommitResponse, DeviceId, LoginRequest, LoginResponse,
    MissingChunksRequest, MissingChunksResponse, PullResponse, SpaceReport, BATCH_CONTENT_TYPE,
    MAX_BATCH_BYTES, MAX_BATCH_CHUNKS, MAX_CHUNK_LEN, MAX_MISSING_QUERY, MAX_PULL_LIMIT,
};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::BytesMut;
use futures::StreamExt;
use serde::Deserialize;
use std::collections::HashSet;

/// `Json` whose rejections are [`ServerError`]s (413 for oversized bodies,
/// 400 for malformed ones), so every error has the same body shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ServerError))]
pub struct ApiJson<T>(pub T);

/// Default page size of a pull.
pub const DEFAULT_PULL_LIMIT: u32 = 1000;
/// Expired tokens are deleted this long after they expire (until then an
/// expired access token still gets the precise `token_expired`).
const TOKEN_GRACE_NS: i64 = 24 * 3600 * 1_000_000_000;

/// A duration in nanoseconds (saturating).
pub(crate) fn ttl_ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

async fn issue_access_token(
    st: &AppState,
    account: AccountId,
    device: DeviceId,
) -> Result<String, ServerError> {
    let (token, hash) = auth::new_token(TokenKind::Access);
    st.meta
        .insert_token(&NewToken {
            hash,
            account,
            device,
            kind: TokenKind::Access,
            expires_ns: now_ns().saturating_add(ttl_ns(ACCESS_TOKEN_TTL)),
        })
        .await?;
    Ok(token)
}

pub async fn login(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ServerError> {
    auth::validate_device_name(&req.device).map_err(ServerError::BadRequest)?;
    if req.password.len() > MAX_PASSWORD_BYTES || req.user.len() > 256 {
        st.metrics.login_failures.inc();
        return Err(ServerError::BadCredentials);
    }
    let account = st.meta.account_by_name(&req.user).await?;
    let ok = {
        let _permit = st
            .hash_permits
            .acquire()
            .await
            .map_err(ServerError::internal)?;
        auth::verify_password(
            account.as_ref().map(|a| a.password_hash.clone()),
            &req.password,
        )
        .await
    };
    let account = match account {
        Some(a) if ok => a,
        _ => {
            st.metrics.login_failures.inc();
            return Err(ServerError::BadCredentials);
        }
    };
    let now = now_ns();
    // Housekeeping, cheap with the expiry index.
    st.meta
        .delete_expired_tokens(now.saturating_sub(TOKEN_GRACE_NS))
        .await?;
    let device = match req.device_id {
        // Re-login of an existing device: checked only after the password,
        // and one answer for unknown and foreign ids, so a login reveals
        // nothing about other accounts' devices. A revoked device of the
        // account is reinstated with fresh tokens only: its old ones are
        // deleted first, so nothing issued before the revocation revives.
        Some(id) => match st.meta.device(id).await? {
            Some(d) if d.account == account.id => {
                if d.revoked {
                    st.meta.delete_device_tokens(d.id).await?;
                    st.meta.reinstate_device(account.id, d.id).await?;
                    tracing::info!(device = %d.id, "revoked device reinstated by a login");
                }
                d.id
            }
            _ => {
                st.metrics.login_failures.inc();
                return Err(ServerError::UnknownDevice(id));
            }
        },
        None => st.meta.create_device(account.id, &req.device, now).await?,
    };
    let access_token = issue_access_token(&st, account.id, device).await?;
    let (refresh_token, hash) = auth::new_token(TokenKind::Refresh);
    st.meta
        .insert_token(&NewToken {
            hash,
            account: account.id,
            device,
            kind: TokenKind::Refresh,
            expires_ns: now.saturating_add(ttl_ns(REFRESH_TOKEN_TTL)),
        })
        .await?;
    st.meta
        .touch_device(device, auth::platform_of(&headers).as_deref(), now)
        .await?;
    st.metrics.logins.inc();
    tracing::info!(
        user = %account.name,
        device = %device,
        name = %req.device,
        again = req.device_id.is_some(),
        "login"
    );
    Ok(Json(LoginResponse {
        access_token,
        refresh_token,
        expires_in: ACCESS_TOKEN_TTL.as_secs(),
        device_id: device,
    }))
}

pub async fn missing_chunks(
    auth: Auth,
    State(st): State<AppState>,
    ApiJson(req): ApiJson<MissingChunksRequest>,
) -> Result<Json<MissingChunksResponse>, ServerError> {
    let missing = missing_for(&st, auth.account, req.ids).await?;
    Ok(Json(MissingChunksResponse { missing }))
}

/// Which of `ids` `account` must still upload: every id it has not
/// uploaded itself (possession, not knowledge of a hash), and owned chunks
/// the store lost. At most [`MAX_MISSING_QUERY`] ids (else 413).
pub(crate) async fn missing_for(
    st: &AppState,
    account: AccountId,
    ids: Vec<ChunkId>,
) -> Result<Vec<ChunkId>, ServerError> {
    if ids.len() > MAX_MISSING_QUERY {
        return Err(ServerError::PayloadTooLarge(format!(
            "{} ids in one query; at most {MAX_MISSING_QUERY}",
            ids.len()
        )));
    }
    let mut seen = HashSet::new();
    let ids: Vec<ChunkId> = ids.into_iter().filter(|i| seen.insert(*i)).collect();
    let owned = st.meta.owned_chunks(account, &ids).await?;
    // An owned chunk the store lost (quarantined as corrupt) must be
    // uploaded again: report it as missing too.
    let owned_ids: Vec<ChunkId> = ids
        .iter()
        .filter(|i| owned.contains_key(i))
        .copied()
        .collect();
    let mut present = HashSet::new();
    for batch in owned_ids.chunks(64) {
        let checks = batch.iter().map(|id| st.chunks.contains(*id));
        for (id, found) in batch.iter().zip(futures::future::join_all(checks).await) {
            if found? {
                present.insert(*id);
            }
        }
    }
    Ok(ids.into_iter().filter(|i| !present.contains(i)).collect())
}

/// How an uploaded chunk body is encoded on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireEncoding {
    Identity,
    Zstd,
}

fn wire_encoding(headers: &HeaderMap) -> Result<WireEncoding, ServerError> {
    let Some(v) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(WireEncoding::Identity);
    };
    let v = v.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match v.as_str() {
        "" | "identity" => Ok(WireEncoding::Identity),
        "zstd" => Ok(WireEncoding::Zstd),
        other => Err(ServerError::UnsupportedEncoding(other.to_owned())),
    }
}

/// Decodes (with a hard output cap) and verifies an uploaded chunk body.
/// Returns the plain bytes and, for zstd uploads, the wire frame.
fn decode_upload(
    id: ChunkId,
    body: Bytes,
    encoding: WireEncoding,
) -> Result<(Bytes, Option<Bytes>), ServerError> {
    let (plain, wire) = match encoding {
        WireEncoding::Identity => (body, None),
        WireEncoding::Zstd => {
            use std::io::Read;
            let decoder = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|e| ServerError::BadEncoding(e.to_string()))?;
            let mut out = Vec::new();
            decoder
                .take(u64::from(MAX_CHUNK_LEN) + 1)
                .read_to_end(&mut out)
                .map_err(|e| ServerError::BadEncoding(e.to_string()))?;
            (Bytes::from(out), Some(body))
        }
    };
    if plain.len() > MAX_CHUNK_LEN as usize {
        return Err(ServerError::PayloadTooLarge(format!(
            "chunk is larger than {MAX_CHUNK_LEN} bytes"
        )));
    }
    if !id.verify(&plain) {
        return Err(ServerError::HashMismatch(id));
    }
    Ok((plain, wire))
}

fn parse_chunk_id(path: Result<Path<String>, PathRejection>) -> Result<ChunkId, ServerError> {
    let Path(hex) = path?;
    ChunkId::from_hex(&hex).map_err(|_| ServerError::InvalidChunkId)
}

pub async fn put_chunk(
    auth: Auth,
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ServerError> {
    let id = parse_chunk_id(path)?;
    let encoding = wire_encoding(&headers)?;
    store_chunk(&st, auth.account, id, body?, encoding).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Decodes and verifies an uploaded chunk, stores it once per server and
/// records that `account` owns it. Errors: 400 `hash_mismatch` (nothing
/// stored), 400 `bad_encoding`, 413 over `MAX_CHUNK_LEN`.
pub(crate) async fn store_chunk(
    st: &AppState,
    account: AccountId,
    id: ChunkId,
    body: Bytes,
    encoding: WireEncoding,
) -> Result<(), ServerError> {
    st.metrics.chunk_wire_bytes_in.add(body.len() as u64);
    let decoded = tokio::task::spawn_blocking(move || decode_upload(id, body, encoding))
        .await
        .map_err(ServerError::internal)?;
    let (plain, wire) = match decoded {
        Ok(d) => d,
        Err(e) => {
            if matches!(e, ServerError::HashMismatch(_)) {
                st.metrics.hash_mismatches.inc();
            }
            return Err(e);
        }
    };
    let len = plain.len() as u32;
    st.metrics.chunk_bytes_in.add(u64::from(len));
    if st.chunks.contains(id).await? {
        st.metrics.chunks_deduplicated.inc();
    } else {
        let (stored, compressed) =
            tokio::task::spawn_blocking(move || encode_for_storage(&plain, wire))
                .await
                .map_err(ServerError::internal)?;
        st.chunks.put(id, len, stored, compressed).await?;
        st.metrics.chunks_stored.inc();
    }
    st.meta
        .add_account_chunk(account, id, len, now_ns())
        .await?;
    Ok(())
}

pub async fn get_chunk(
    auth: Auth,
    State(st): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ServerError> {
    let id = parse_chunk_id(path)?;
    let data = read_chunk(&st, auth.account, id).await?;
    let mut resp = data.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(resp)
}

/// A chunk's plain bytes (checked by the store), for an account that
/// uploaded it; 404 `not_found` otherwise (knowing a hash is not enough).
pub(crate) async fn read_chunk(
    st: &AppState,
    account: AccountId,
    id: ChunkId,
) -> Result<Bytes, ServerError> {
    // Owned ⊇ referenced by a file of the account (commits only accept
    // owned chunks), so ownership is the whole read check.
    if st.meta.owned_chunks(account, &[id]).await?.is_empty() {
        return Err(ServerError::NotFound(format!("chunk {id} not found")));
    }
    let data = st.chunks.get(id).await?;
    st.metrics.chunk_bytes_out.add(data.len() as u64);
    Ok(data)
}

/// Least bytes of a batch answer's writes (but the last).
const BATCH_WRITE_BYTES: usize = 256 * 1024;

/// `POST /api/v1/chunks/batch`: several chunks in one streamed answer
/// (framing, bounds and access rules: `protocol::chunk_batch`). The
/// first chunk is read before answering, so a store failure there is a
/// proper error status; a later one cuts the body short of its
/// `Content-Length`, which the client sees. At most two chunks are read
/// ahead of the connection.
pub async fn get_chunk_batch(
    auth: Auth,
    State(st): State<AppState>,
    ApiJson(req): ApiJson<ChunkBatchRequest>,
) -> Result<Response, ServerError> {
    let plan = plan_batch(&st, auth.account, &req.ids).await?;
    let body_len = batch_body_len(plan.iter().map(|(_, len)| *len));
    let mut frames = plan.into_iter();
    let first = match frames.next() {
        Some((id, len)) => Some(read_frame(&st, id, len).await?),
        None => None,
    };
    let rest = futures::stream::iter(frames)
        .map(move |(id, len)| {
            let st = st.clone();
            async move {
                read_frame(&st, id, len).await.map_err(|e| {
                    tracing::error!(chunk = %id, error = %e, "chunk batch cut short");
                    std::io::Error::other(e.to_string())
                })
            }
        })
        .buffered(2);
    let frames = futures::stream::iter(first.map(Ok)).chain(rest).boxed();
    // Frames go out in pieces of at least BATCH_WRITE_BYTES: one small
    // write per frame would meet Nagle's algorithm and the client's
    // delayed ACK (tens of milliseconds per batch).
    let body = futures::stream::unfold(Some(frames), |frames| async move {
        let mut frames = frames?;
        let mut piece = BytesMut::new();
        while piece.len() < BATCH_WRITE_BYTES {
            match frames.next().await {
                Some(Ok((header, data))) => {
                    piece.extend_from_slice(&header);
                    piece.extend_from_slice(&data);
                }
                // The body is cut short: the client refuses the batch.
                Some(Err(e)) => return Some((Err(e), None)),
                None if piece.is_empty() => return None,
                None => return Some((Ok(piece.freeze()), None)),
            }
        }
        Some((Ok(piece.freeze()), Some(frames)))
    });
    let mut resp = Response::new(axum::body::Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(BATCH_CONTENT_TYPE),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    Ok(resp)
}

/// The chunks a batch request of `account` answers, with their lengths,
/// in first-appearance order: every distinct id must be a chunk the
/// account uploaded (as [`read_chunk`] checks: 404 `not_found` naming the
/// first that is not), at most [`MAX_BATCH_CHUNKS`] of them, together at
/// most [`MAX_BATCH_BYTES`] (413 `batch_too_large`). Reads no chunk.
pub(crate) async fn plan_batch(
    st: &AppState,
    account: AccountId,
    ids: &[ChunkId],
) -> Result<Vec<(ChunkId, u32)>, ServerError> {
    let ids = distinct_ids(ids);
    if ids.len() > MAX_BATCH_CHUNKS {
        return Err(ServerError::BatchTooLarge(format!(
            "{} chunk ids in one batch; at most {MAX_BATCH_CHUNKS}",
            ids.len()
        )));
    }
    let owned = st.meta.owned_chunks(account, &ids).await?;
    let mut plan = Vec::with_capacity(ids.len());
    let mut total = 0u64;
    for id in ids {
        let Some(&len) = owned.get(&id) else {
            return Err(ServerError::NotFound(format!("chunk {id} not found")));
        };
        total += u64::from(len);
        plan.push((id, len));
    }
    if total > MAX_BATCH_BYTES {
        return Err(ServerError::BatchTooLarge(format!(
            "the batch's chunks hold {total} bytes; at most {MAX_BATCH_BYTES} per request"
        )));
    }
    Ok(plan)
}

/// One frame of a batch answer: its header and the chunk's plain bytes
/// (checked by the store), which must be the `len` the account uploaded.
async fn read_frame(st: &AppState, id: ChunkId, len: u32) -> Result<(Bytes, Bytes), ServerError> {
    let data = st.chunks.get(id).await?;
    if data.len() != len as usize {
        return Err(ServerError::internal(format!(
            "chunk {id} holds {} bytes, recorded as {len}",
            data.len()
        )));
    }
    st.metrics.chunk_bytes_out.add(data.len() as u64);
    Ok((frame_header(&id, len), data))
}

/// The chunks of a batch request, read whole (for `InProcessRemote`: the
/// same checks as [`get_chunk_batch`] without HTTP).
pub(crate) async fn read_chunk_batch(
    st: &AppState,
    account: AccountId,
    ids: &[ChunkId],
) -> Result<Vec<(ChunkId, Bytes)>, ServerError> {
    let mut out = Vec::new();
    for (id, len) in plan_batch(st, account, ids).await? {
        out.push((id, read_frame(st, id, len).await?.1));
    }
    Ok(out)
}

pub async fn commit(
    auth: Auth,
    State(st): State<AppState>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<Json<CommitResponse>, ServerError> {
    let results = commit_ops(&st, auth, &req.ops).await?;
    Ok(Json(CommitResponse { results }))
}

/// Applies a commit request of device `auth.device` with the server's
/// rules (`server::commit`); 401 if the device is gone.
pub(crate) async fn commit_ops(
    st: &AppState,
    auth: Auth,
    ops: &[CommitOp],
) -> Result<Vec<CommitOutcome>, ServerError> {
    let device = st
        .meta
        .device(auth.device)
        .await?
        .ok_or(ServerError::Unauthorized)?;
    let ctx = CommitCtx {
        account: auth.account,
        device: auth.device,
        device_name: device.name,
        now_ns: now_ns(),
    };
    let results = commit::commit(st.meta.as_ref(), &ctx, ops).await?;
    st.metrics.record_commit(&results);
    notify_head(st, auth.account, Some(auth.device)).await;
    Ok(results)
}

/// Tells the push notifier the account's head after a transaction that
/// may have appended to its change log committed (skipped when nobody
/// listens; a failure to read the head is only logged: the devices'
/// safety-net pulls catch up).
pub(crate) async fn notify_head(st: &AppState, account: AccountId, device: Option<DeviceId>) {
    if !st.notifier.wants(account) {
        return;
    }
    match st.meta.last_seq(account).await {
        Ok(head) => st.notifier.changed(account, head, device),
        Err(e) => tracing::warn!(error = %e, "cannot read the change-log head to notify devices"),
    }
}

#[derive(Debug, Deserialize)]
pub struct PullQuery {
    #[serde(default)]
    cursor: u64,
    limit: Option<u32>,
}

pub async fn pull(
    auth: Auth,
    State(st): State<AppState>,
    query: Result<Query<PullQuery>, QueryRejection>,
) -> Result<Json<PullResponse>, ServerError> {
    let Query(q) = query?;
    Ok(Json(pull_page(&st, auth.account, q.cursor, q.limit).await?))
}

/// `GET /api/v1/account/space`: see [`SpaceReport`].
pub async fn space(
    auth: Auth,
    State(st): State<AppState>,
) -> Result<Json<SpaceReport>, ServerError> {
    Ok(Json(space_report(&st, auth.account).await?))
}

/// The account's usage, and the room left: accounts have no quota yet,
/// so that is the free space of the chunk storage (`None` for a store
/// without a bound).
pub(crate) async fn space_report(
    st: &AppState,
    account: AccountId,
) -> Result<SpaceReport, ServerError> {
    let usage = st.meta.account_usage(account).await?;
    let capacity = st.chunks.capacity().await?;
    Ok(SpaceReport {
        used_bytes: usage.file_bytes,
        nodes: usage.nodes,
        quota_bytes: None,
        free_bytes: capacity.map(|c| c.free_bytes),
    })
}

/// One page of the account's change log after `cursor` (`limit` default
/// [`DEFAULT_PULL_LIMIT`], clamped to 1..=`MAX_PULL_LIMIT`); 409
/// `cursor_ahead` when the cursor is past the log.
pub(crate) async fn pull_page(
    st: &AppState,
    account: AccountId,
    cursor: u64,
    limit: Option<u32>,
) -> Result<PullResponse, ServerError> {
    let limit = limit.unwrap_or(DEFAULT_PULL_LIMIT).clamp(1, MAX_PULL_LIMIT);
    let mut changes = st.meta.changes_since(account, cursor, limit + 1).await?;
    if changes.is_empty() && cursor > 0 {
        let last = st.meta.last_seq(account).await?;
        if cursor > last {
            return Err(ServerError::CursorAhead { cursor, last });
        }
    }
    let has_more = changes.len() > limit as usize;
    changes.truncate(limit as usize);
    let cursor = changes.last().map_or(cursor, |n| n.seq);
    Ok(PullResponse {
        changes,
        cursor,
        has_more,
    })
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn metrics(State(st): State<AppState>) -> Response {
    let counts = st.meta.counts().await.ok();
    let usage = match st.metrics.cached_usage() {
        Some(u) => Some(u),
        None => match st.chunks.usage().await {
            Ok(u) => {
                st.metrics.set_usage(u);
                Some(u)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot measure chunk store usage");
                None
            }
        },
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        st.metrics
            .render(counts, usage, st.push.sockets(), st.push.notifications()),
    )
        .into_response()
}

pub async fn not_found() -> ServerError {
    ServerError::NotFound("no such route".into())
}

pub async fn method_not_allowed() -> ServerError {
    ServerError::MethodNotAllowed
}
