//! Passwords, bearer tokens and the [`Auth`] extractor.
//!
//! - Passwords are Argon2id PHC strings (argon2 crate defaults), hashed and
//!   verified on blocking threads, at most [`MAX_CONCURRENT_HASHES`] at a
//!   time (each takes ~19 MiB). A login for an unknown user verifies
//!   against a dummy hash, so both failures cost the same time and return
//!   the same 401.
//! - Tokens are 32 random bytes (base64url) with a kind prefix (`nat_`
//!   access, `nrt_` refresh). Only their BLAKE3 hash is stored; access
//!   tokens live [`ACCESS_TOKEN_TTL`], refresh tokens
//!   [`REFRESH_TOKEN_TTL`]. Revoking a device kills both (401
//!   `device_revoked`); a password login as that device reinstates it
//!   with new tokens only (the old ones are deleted then).
//! - Refresh tokens rotate (`server::sessions`): each refresh answers a
//!   new pair and marks the old refresh token used. Presented again
//!   within [`REFRESH_RETRY_GRACE`] (a client that crashed before saving
//!   the answer, or two processes of one device refreshing at once), it
//!   gets the same answer, as long as that answer's refresh token is
//!   unused; otherwise the replay means the token may have been copied,
//!   and every token of the device is deleted (401
//!   `refresh_token_reused`; the device logs in again). Used tokens are
//!   kept [`REUSE_DETECTION_WINDOW`] for that check. The same answer
//!   comes from the used row's `successor`: the new tokens' random bytes
//!   XORed with a key stream derived from the *old token itself*
//!   ([`seal_successor`]), so only its holder can open it and the
//!   database alone reveals no live token.
//! - Every authenticated request records the device's last-seen time, at
//!   most once per [`LAST_SEEN_EVERY`].

use super::error::ServerError;
use super::meta_store::{AccountId, TokenHash, TokenKind};
use super::{now_ns, AppState};
use crate::protocol::DeviceId;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use std::sync::OnceLock;
use std::time::Duration;

pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
pub const MAX_CONCURRENT_HASHES: usize = 4;
/// A rotated refresh token presented again this soon gets the same answer.
pub const REFRESH_RETRY_GRACE: Duration = Duration::from_secs(60);
/// How long a rotated refresh token is remembered to detect its reuse.
pub const REUSE_DETECTION_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// A device's last-seen time is written at most this often.
pub const LAST_SEEN_EVERY: Duration = Duration::from_secs(60);
/// Longest platform string (`User-Agent`) recorded for a device.
pub const MAX_PLATFORM_BYTES: usize = 128;
/// Longest password accepted (longer ones are refused without hashing).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest device name, in bytes.
pub const MAX_DEVICE_NAME_BYTES: usize = 64;

/// The authenticated caller of an `/api/v1` route.
#[derive(Clone, Copy, Debug)]
pub struct Auth {
    pub account: AccountId,
    pub device: DeviceId,
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ServerError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ServerError> {
        let token = bearer_token(&parts.headers).ok_or(ServerError::Unauthorized)?;
        let (auth, last_seen) = session_of(st, &hash_token(token)).await?;
        let now = now_ns();
        let every = i64::try_from(LAST_SEEN_EVERY.as_nanos()).unwrap_or(i64::MAX);
        if last_seen.is_none_or(|seen| now.saturating_sub(seen) >= every) {
            // Bookkeeping only: a busy database must not fail the request.
            if let Err(e) = st.meta.touch_device(auth.device, None, now).await {
                tracing::warn!(error = %e, "cannot record the device's last-seen time");
            }
        }
        Ok(auth)
    }
}

/// The token of an `Authorization: Bearer <token>` header, if that is
/// what the request carries.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let header = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The caller an access token (by its hash) stands for, and the device's
/// last-seen time, if the token is a live access token of a device that
/// is not revoked: what every request checks, and what a long-lived push
/// socket checks again (`push::socket`).
pub async fn session_of(
    st: &AppState,
    token_hash: &TokenHash,
) -> Result<(Auth, Option<i64>), ServerError> {
    let info = st
        .meta
        .token(token_hash)
        .await?
        .ok_or(ServerError::Unauthorized)?;
    if info.kind != TokenKind::Access {
        return Err(ServerError::Unauthorized);
    }
    if info.device_revoked {
        return Err(ServerError::DeviceRevoked);
    }
    if info.expires_ns <= now_ns() {
        return Err(ServerError::TokenExpired);
    }
    Ok((
        Auth {
            account: info.account,
            device: info.device,
        },
        info.device_last_seen_ns,
    ))
}

pub fn hash_token(token: &str) -> TokenHash {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// A fresh random token of `kind` and its hash.
pub fn new_token(kind: TokenKind) -> (String, TokenHash) {
    token_from_bytes(kind, &rand::random())
}

/// The token of `kind` made of these 32 random bytes, and its hash.
pub fn token_from_bytes(kind: TokenKind, bytes: &[u8; 32]) -> (String, TokenHash) {
    let prefix = match kind {
        TokenKind::Access => "nat_",
        TokenKind::Refresh => "nrt_",
    };
    let token = format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash_token(&token);
    (token, hash)
}

/// Seals (or, applied again, opens) the random bytes of a rotation's
/// successor tokens under a key stream derived from the rotated refresh
/// token (see the module docs).
pub fn seal_successor(old_refresh_token: &str, secret: &[u8; 64]) -> [u8; 64] {
    let mut stream = [0u8; 64];
    blake3::Hasher::new_derive_key("nimbus 2026-12 refresh token successor v1")
        .update(old_refresh_token.as_bytes())
        .finalize_xof()
        .fill(&mut stream);
    let mut out = [0u8; 64];
    for (o, (s, k)) in out.iter_mut().zip(secret.iter().zip(stream.iter())) {
        *o = s ^ k;
    }
    out
}

/// The `User-Agent` as a device's platform: printable ASCII only, at most
/// [`MAX_PLATFORM_BYTES`].
pub fn platform_of(headers: &axum::http::HeaderMap) -> Option<String> {
    let ua = headers.get(axum::http::header::USER_AGENT)?;
    let s: String = ua
        .as_bytes()
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .take(MAX_PLATFORM_BYTES)
        .map(|b| char::from(*b))
        .collect();
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Argon2id PHC string of `password` (blocking thread).
pub async fn hash_password(password: &str) -> anyhow::Result<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("cannot hash password: {e}"))
    })
    .await?
}

/// Checks `password` against a PHC string, or against a dummy hash when
/// `hash` is `None` (unknown user), so both take the same time. Returns
/// false for `None`.
pub async fn verify_password(hash: Option<String>, password: &str) -> bool {
    let password = password.to_owned();
    let known = hash.is_some();
    let ok = tokio::task::spawn_blocking(move || {
        // The dummy hash is computed on first use: on this blocking thread.
        let phc = hash.unwrap_or_else(|| dummy_hash().to_owned());
        PasswordHash::new(&phc)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false);
    known && ok
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("16 bytes is a valid salt length");
        Argon2::default()
            .hash_password(b"nimbus-dummy-password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// User names: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn validate_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!(
            "user name must be 1 to 64 characters long (got {})",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "user name may only contain letters, digits, '.', '_' and '-' (found {bad:?})"
        ));
    }
    Ok(())
}

/// Device names: 1–64 bytes, no control characters, no `/`.
pub fn validate_device_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.len() > MAX_DEVICE_NAME_BYTES {
        return Err(format!(
            "device name must be 1 to {MAX_DEVICE_NAME_BYTES} bytes long"
        ));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err("device name may not contain '/' or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_roundtrip_and_dummy() {
        let h = hash_password("s3cret").await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(Some(h.clone()), "s3cret").await);
        assert!(!verify_password(Some(h), "S3cret").await);
        assert!(!verify_password(None, "nimbus-dummy-password").await);
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let (a, ha) = new_token(TokenKind::Access);
        let (b, _) = new_token(TokenKind::Access);
        let (r, _) = new_token(TokenKind::Refresh);
        assert_ne!(a, b);
        assert!(a.starts_with("nat_") && r.starts_with("nrt_"));
        assert_eq!(hash_token(&a), ha);
        assert!(a.len() > 40);
    }

    #[test]
    fn a_sealed_successor_opens_only_with_the_old_token() {
        let secret: [u8; 64] = std::array::from_fn(|i| i as u8);
        let sealed = seal_successor("nrt_old", &secret);
        assert_ne!(sealed, secret);
        assert_eq!(seal_successor("nrt_old", &sealed), secret);
        assert_ne!(seal_successor("nrt_other", &sealed), secret);
    }

    #[test]
    fn user_and_device_names() {
        assert!(validate_user_name("alice.b-2_x").is_ok());
        assert!(validate_user_name("").is_err());
        assert!(validate_user_name(&"a".repeat(65)).is_err());
        assert!(validate_user_name("al ice").is_err());
        assert!(validate_user_name("alice/").is_err());
        assert!(validate_user_name("élise").is_err());
        assert!(validate_device_name("Ana's laptop").is_ok());
        assert!(validate_device_name(" ").is_err());
        assert!(validate_device_name("a/b").is_err());
        assert!(validate_device_name("a\nb").is_err());
    }
}
