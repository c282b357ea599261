//! The push channel (`GET /api/v1/sync/ws`): what the server tells a
//! connected device, as WebSocket text messages of JSON.
//!
//! The channel only says *that* the account's change log moved and to
//! which cursor, never what changed: the device then pulls since its own
//! cursor (`GET /api/v1/sync/pull`), so a lost or duplicated message
//! costs nothing. A receiver ignores messages it does not understand
//! (a later server may send new kinds).

use super::DeviceId;
use serde::{Deserialize, Serialize};

/// The route of the push channel.
pub const PUSH_PATH: &str = "/api/v1/sync/ws";

/// WebSocket close code the server uses when the session behind the
/// socket ended (token expired, device revoked, signed out); the close
/// reason is the error code (`token_expired`, `device_revoked`,
/// `unauthorized`). The client refreshes its access token and connects
/// again.
pub const PUSH_CLOSE_UNAUTHORIZED: u16 = 4401;

/// One message from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PushMessage {
    /// The account's change log is at `cursor` (sent at once on connect,
    /// then whenever it advances). `device` is the device whose commit
    /// moved it, when the server knows (informational: the cursor may
    /// also cover other devices' commits).
    Changed {
        cursor: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<DeviceId>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_is_small_json() {
        let m = PushMessage::Changed {
            cursor: 42,
            device: None,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text, r#"{"type":"changed","cursor":42}"#);
        assert_eq!(serde_json::from_str::<PushMessage>(&text).unwrap(), m);
        assert!(serde_json::from_str::<PushMessage>(r#"{"type":"later"}"#).is_err());
    }
}
