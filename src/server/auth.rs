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
//!   [`REFRESH_TOKEN_TTL`]. Revoking a device kills both.

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
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or(ServerError::Unauthorized)?
            .to_str()
            .map_err(|_| ServerError::Unauthorized)?;
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or(ServerError::Unauthorized)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ServerError::Unauthorized);
        }
        let info = st
            .meta
            .token(&hash_token(token.trim()))
            .await?
            .ok_or(ServerError::Unauthorized)?;
        if info.kind != TokenKind::Access || info.device_revoked {
            return Err(ServerError::Unauthorized);
        }
        if info.expires_ns <= now_ns() {
            return Err(ServerError::TokenExpired);
        }
        Ok(Auth {
            account: info.account,
            device: info.device,
        })
    }
}

pub fn hash_token(token: &str) -> TokenHash {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// A fresh random token of `kind` and its hash.
pub fn new_token(kind: TokenKind) -> (String, TokenHash) {
    let bytes: [u8; 32] = rand::random();
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
