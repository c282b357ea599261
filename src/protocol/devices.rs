//! Bodies of the device and session routes (`/api/v1/devices`,
//! `/api/v1/auth/logout`, `/api/v1/account/password`).

use super::DeviceId;
use serde::{Deserialize, Serialize};

/// One registered device of the account (`GET /api/v1/devices`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: DeviceId,
    pub name: String,
    /// The client's `User-Agent` at its last login or refresh (empty when
    /// unknown).
    pub platform: String,
    /// Registration time, seconds since the Unix epoch (UTC).
    pub created: i64,
    /// Last authenticated request, seconds since the Unix epoch; `None`
    /// when never recorded. Updated at most once a minute.
    pub last_seen: Option<i64>,
    /// Revoked: its tokens are gone; a password login as it reinstates it.
    pub revoked: bool,
    /// The device making this request.
    pub current: bool,
}

/// `GET /api/v1/devices`: every device of the account, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<DeviceInfo>,
}

/// `POST /api/v1/account/password`.
#[derive(Clone, Serialize, Deserialize)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange { <redacted> }")
    }
}

/// Answer of `POST /api/v1/account/password`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordChanged {
    /// How many other devices were signed out (they log in again with the
    /// new password, as the same devices).
    pub signed_out_devices: u64,
}
