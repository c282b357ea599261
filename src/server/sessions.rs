//! Handlers of the session routes: refresh-token rotation, logout,
//! devices (list, revoke) and password change. The rules are described
//! in `server::auth`; the routes in the `server` module docs.

use super::api::{ttl_ns, ApiJson};
use super::auth::{
    self, Auth, ACCESS_TOKEN_TTL, MAX_PASSWORD_BYTES, REFRESH_RETRY_GRACE, REFRESH_TOKEN_TTL,
    REUSE_DETECTION_WINDOW,
};
use super::error::ServerError;
use super::meta_store::{AccountId, NewToken, Rotation, TokenKind};
use super::{now_ns, AppState};
use crate::protocol::{
    DeviceId, DeviceInfo, DeviceList, LoginResponse, PasswordChange, PasswordChanged,
    RefreshRequest,
};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

const NS_PER_SEC: i64 = 1_000_000_000;

/// A new access + refresh pair from 64 random bytes.
fn pair_from(
    secret: &[u8; 64],
    account: AccountId,
    device: DeviceId,
    now: i64,
) -> (String, String, [NewToken; 2]) {
    let mut a = [0u8; 32];
    let mut r = [0u8; 32];
    a.copy_from_slice(&secret[..32]);
    r.copy_from_slice(&secret[32..]);
    let (access, access_hash) = auth::token_from_bytes(TokenKind::Access, &a);
    let (refresh, refresh_hash) = auth::token_from_bytes(TokenKind::Refresh, &r);
    let rows = [
        NewToken {
            hash: access_hash,
            account,
            device,
            kind: TokenKind::Access,
            expires_ns: now.saturating_add(ttl_ns(ACCESS_TOKEN_TTL)),
        },
        NewToken {
            hash: refresh_hash,
            account,
            device,
            kind: TokenKind::Refresh,
            expires_ns: now.saturating_add(ttl_ns(REFRESH_TOKEN_TTL)),
        },
    ];
    (access, refresh, rows)
}

/// `POST /api/v1/auth/refresh`: rotates the refresh token (see
/// `server::auth` for the grace window and reuse detection).
pub async fn refresh(
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<LoginResponse>, ServerError> {
    let old = req.refresh_token.trim();
    let old_hash = auth::hash_token(old);
    let now = now_ns();
    let info = st
        .meta
        .token(&old_hash)
        .await?
        .filter(|t| t.kind == TokenKind::Refresh)
        .ok_or(ServerError::BadRefreshToken)?;
    if info.device_revoked {
        return Err(ServerError::DeviceRevoked);
    }
    if info.used_ns.is_none() && info.expires_ns <= now {
        return Err(ServerError::BadRefreshToken);
    }
    let secret: [u8; 64] = std::array::from_fn(|_| rand::random());
    let (access, refresh, rows) = pair_from(&secret, info.account, info.device, now);
    let sealed = auth::seal_successor(old, &secret);
    let keep_until = now.saturating_add(ttl_ns(REUSE_DETECTION_WINDOW));
    let outcome = st
        .meta
        .rotate_refresh_token(&old_hash, &sealed, &rows, now, keep_until)
        .await?;
    let answer = match outcome {
        Rotation::Rotated => LoginResponse {
            access_token: access,
            refresh_token: refresh,
            expires_in: ACCESS_TOKEN_TTL.as_secs(),
            device_id: info.device,
        },
        Rotation::Unknown => return Err(ServerError::BadRefreshToken),
        Rotation::AlreadyUsed { used_ns, successor } => {
            match retry_answer(&st, old, used_ns, successor, info.device, now).await? {
                Some(same) => same,
                None => {
                    let n = st.meta.delete_device_tokens(info.device).await?;
                    st.notifier.sessions_changed(info.account);
                    st.metrics.refresh_reuse.inc();
                    tracing::warn!(
                        device = %info.device,
                        tokens = n,
                        "a rotated refresh token was used again: session ended"
                    );
                    return Err(ServerError::RefreshReused);
                }
            }
        }
    };
    st.meta
        .touch_device(info.device, auth::platform_of(&headers).as_deref(), now)
        .await?;
    Ok(Json(answer))
}

/// The answer a rotation gave, if `old` is retried within the grace
/// window and that answer's refresh token is still unused.
async fn retry_answer(
    st: &AppState,
    old: &str,
    used_ns: i64,
    successor: Option<Vec<u8>>,
    device: DeviceId,
    now: i64,
) -> Result<Option<LoginResponse>, ServerError> {
    let elapsed = now.saturating_sub(used_ns);
    if elapsed > ttl_ns(REFRESH_RETRY_GRACE) {
        return Ok(None);
    }
    let Some(sealed) = successor.and_then(|s| <[u8; 64]>::try_from(s).ok()) else {
        return Ok(None);
    };
    let secret = auth::seal_successor(old, &sealed);
    let mut a = [0u8; 32];
    let mut r = [0u8; 32];
    a.copy_from_slice(&secret[..32]);
    r.copy_from_slice(&secret[32..]);
    let (access, _) = auth::token_from_bytes(TokenKind::Access, &a);
    let (refresh, refresh_hash) = auth::token_from_bytes(TokenKind::Refresh, &r);
    let fresh = st
        .meta
        .token(&refresh_hash)
        .await?
        .is_some_and(|t| t.used_ns.is_none() && t.device == device && !t.device_revoked);
    if !fresh {
        return Ok(None);
    }
    let left = ttl_ns(ACCESS_TOKEN_TTL).saturating_sub(elapsed) / NS_PER_SEC;
    Ok(Some(LoginResponse {
        access_token: access,
        refresh_token: refresh,
        expires_in: u64::try_from(left).unwrap_or(0),
        device_id: device,
    }))
}

/// `POST /api/v1/auth/logout`: revokes the calling device and deletes its
/// tokens. A later password login as it reinstates it.
pub async fn logout(auth: Auth, State(st): State<AppState>) -> Result<StatusCode, ServerError> {
    st.meta.revoke_device(auth.account, auth.device).await?;
    st.meta.delete_device_tokens(auth.device).await?;
    st.notifier.sessions_changed(auth.account);
    tracing::info!(device = %auth.device, "logout");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/devices`: the account's devices, oldest first.
pub async fn list_devices(
    auth: Auth,
    State(st): State<AppState>,
) -> Result<Json<DeviceList>, ServerError> {
    let devices = st
        .meta
        .list_devices(auth.account)
        .await?
        .into_iter()
        .map(|d| DeviceInfo {
            current: d.id == auth.device,
            id: d.id,
            name: d.name,
            platform: d.platform,
            created: d.created_ns.div_euclid(NS_PER_SEC),
            last_seen: d.last_seen_ns.map(|n| n.div_euclid(NS_PER_SEC)),
            revoked: d.revoked,
        })
        .collect();
    Ok(Json(DeviceList { devices }))
}

/// `POST /api/v1/devices/{id}/revoke`: the device's next request gets 401
/// `device_revoked` (idempotent). 404 if the account has no such device.
pub async fn revoke_device(
    auth: Auth,
    State(st): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ServerError> {
    let Path(raw) = id?;
    let id = raw
        .parse::<uuid::Uuid>()
        .map(DeviceId)
        .map_err(|_| ServerError::BadRequest(format!("invalid device id {raw:?}")))?;
    if !st.meta.revoke_device(auth.account, id).await? {
        return Err(ServerError::NotFound(format!(
            "no device {id} in this account"
        )));
    }
    st.notifier.sessions_changed(auth.account);
    tracing::info!(device = %id, by = %auth.device, "device revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/account/password`: needs the current password; signs
/// every other device out (their tokens are deleted; they log in again
/// with the new password, as the same devices). This device stays in.
pub async fn change_password(
    auth: Auth,
    State(st): State<AppState>,
    ApiJson(req): ApiJson<PasswordChange>,
) -> Result<Json<PasswordChanged>, ServerError> {
    if req.new_password.is_empty() {
        return Err(ServerError::BadRequest("the new password is empty".into()));
    }
    if req.new_password.len() > MAX_PASSWORD_BYTES
        || req.current_password.len() > MAX_PASSWORD_BYTES
    {
        return Err(ServerError::BadRequest(format!(
            "passwords are at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    let account = st
        .meta
        .account(auth.account)
        .await?
        .ok_or(ServerError::Unauthorized)?;
    let hash = {
        let _permit = st
            .hash_permits
            .acquire()
            .await
            .map_err(ServerError::internal)?;
        if !auth::verify_password(Some(account.password_hash), &req.current_password).await {
            return Err(ServerError::WrongPassword);
        }
        auth::hash_password(&req.new_password)
            .await
            .map_err(ServerError::internal)?
    };
    st.meta.set_password_hash(auth.account, &hash).await?;
    let others = st
        .meta
        .list_devices(auth.account)
        .await?
        .iter()
        .filter(|d| d.id != auth.device && !d.revoked)
        .count();
    st.meta
        .delete_other_devices_tokens(auth.account, auth.device)
        .await?;
    st.notifier.sessions_changed(auth.account);
    tracing::info!(user = %account.name, signed_out = others, "password changed");
    Ok(Json(PasswordChanged {
        signed_out_devices: others as u64,
    }))
}
