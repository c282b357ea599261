//! `GET /api/v1/sync/ws`: one device's push socket.
//!
//! - **Auth**: the upgrade request is authenticated like every other
//!   request ([`Auth`]: bearer access token; 401 before any upgrade). The
//!   token's hash is kept, and the session is checked again on every
//!   notification, on every session change of the account and at every
//!   heartbeat: once the token expired or the device was revoked or signed
//!   out, the socket is closed with code
//!   [`PUSH_CLOSE_UNAUTHORIZED`] and the error code as reason (the client
//!   refreshes its token and connects again).
//! - **Messages**: at once on connect, the account's current cursor (so a
//!   reconnecting device notices what it missed), then one
//!   [`PushMessage::Changed`] whenever the log advances (bursts coalesce
//!   to the newest cursor). Nothing else is sent but pings; anything the
//!   client sends other than pings, pongs and close is ignored.
//! - **Bounds**: sockets are counted before the upgrade and capped per
//!   device, account and server ([`super::open`]: 429
//!   `too_many_sockets`). A client has nothing to say, so a frame or
//!   message over [`MAX_CLIENT_MESSAGE`] bytes is closed with 1009, and a
//!   protocol violation (bad framing, a text frame that is not UTF-8) with
//!   1002 or 1007 (RFC 6455 §7.4.1), each with a reason.
//! - **Heartbeats** ([`Heartbeat`]): a ping every [`PING_EVERY`]; a
//!   socket from which nothing (pong, ping, message) arrived for
//!   [`SILENCE_LIMIT`] is dropped without a close frame (a silent peer may
//!   not read one).
//! - **Shutdown**: sockets close (code 1001) when the server stops, so
//!   clients reconnect to its successor instead of hanging on.

use super::super::auth::{bearer_token, hash_token, session_of, Auth};
use super::super::meta_store::TokenHash;
use super::super::{AppState, ServerError};
use super::open::SocketGuard;
use super::Subscription;
use crate::protocol::{PushMessage, PUSH_CLOSE_UNAUTHORIZED};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::time::Instant;

/// How often the server pings each socket.
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// A socket silent this long is closed.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(30);
/// A push socket's heartbeat timing: the server's
/// [`crate::server::ServerConfig::heartbeat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often the server pings (default [`PING_EVERY`]).
    pub ping_every: Duration,
    /// Close a socket silent this long (default [`SILENCE_LIMIT`]).
    pub silence_limit: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            ping_every: PING_EVERY,
            silence_limit: SILENCE_LIMIT,
        }
    }
}

/// Close code when the server stops ("going away").
const CLOSE_GOING_AWAY: u16 = 1001;

/// The largest frame or message a client may send, in bytes: it only
/// needs control frames (at most 125 bytes each).
pub const MAX_CLIENT_MESSAGE: usize = 4096;

/// The route's handler: authenticates, then upgrades.
pub async fn sync_ws(
    auth: Auth,
    headers: HeaderMap,
    State(st): State<AppState>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ServerError> {
    let ws = ws.map_err(|e| {
        ServerError::BadRequest(format!("this route takes a WebSocket upgrade: {e}"))
    })?;
    let token_hash = hash_token(bearer_token(&headers).ok_or(ServerError::Unauthorized)?);
    let open = st
        .push
        .open_socket(auth.account, auth.device)
        .map_err(|e| ServerError::TooManySockets(e.to_string()))?;
    // Head first, then subscribe: a commit between the two is published
    // to the subscription (a newer head replaces this one).
    let head = st.meta.last_seq(auth.account).await?;
    let sub = st.push.subscribe(auth.account, head);
    Ok(ws
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| serve(socket, st, auth, token_hash, sub, open))
        .into_response())
}

/// Why a socket ends.
enum End {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer went away or the transport broke: nothing to send.
    Gone,
}

async fn serve(
    socket: WebSocket,
    st: AppState,
    auth: Auth,
    token: TokenHash,
    mut sub: Subscription,
    _open: SocketGuard,
) {
    tracing::debug!(device = %auth.device, "push socket open");
    let (mut tx, mut rx) = socket.split();
    let Heartbeat {
        ping_every,
        silence_limit,
    } = st.heartbeat;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut heard = Instant::now();
    let mut sent: Option<u64> = None;
    // The head at subscription counts as news: sent at once.
    let mut pending = true;
    let end = loop {
        if pending {
            pending = false;
            if let Err(code) = check(&st, &token).await {
                break End::Close(PUSH_CLOSE_UNAUTHORIZED, code);
            }
            let head = *sub.receiver().borrow_and_update();
            if sent != Some(head.cursor) {
                let msg = PushMessage::Changed {
                    cursor: head.cursor,
                    device: head.device,
                };
                let text = match serde_json::to_string(&msg) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot encode a push message");
                        break End::Close(1011, "internal error");
                    }
                };
                if tx.send(Message::Text(text.into())).await.is_err() {
                    break End::Gone;
                }
                st.push.note_notification();
                sent = Some(head.cursor);
            }
        }
        tokio::select! {
            _ = st.shutdown.cancelled() => break End::Close(CLOSE_GOING_AWAY, "server stopping"),
            changed = sub.receiver().changed() => match changed {
                Ok(()) => pending = true,
                // The hub dropped the channel: only at shutdown.
                Err(_) => break End::Close(CLOSE_GOING_AWAY, "server stopping"),
            },
            _ = tokio::time::sleep_until(heard + silence_limit) => {
                tracing::info!(device = %auth.device, "push socket silent too long; closing");
                // A silent peer may not read: do not wait on a close frame.
                break End::Gone;
            }
            _ = ping.tick() => {
                if let Err(code) = check(&st, &token).await {
                    break End::Close(PUSH_CLOSE_UNAUTHORIZED, code);
                }
                let ping = tx.send(Message::Ping(Default::default()));
                if !matches!(tokio::time::timeout(ping_every, ping).await, Ok(Ok(()))) {
                    break End::Gone;
                }
            }
            msg = rx.next() => match msg {
                None | Some(Ok(Message::Close(_))) => break End::Gone,
                Some(Err(e)) => break end_of_error(e),
                Some(Ok(Message::Text(t))) => {
                    heard = Instant::now();
                    tracing::debug!(device = %auth.device, len = t.len(), "ignoring a client message");
                }
                Some(Ok(_)) => heard = Instant::now(),
            },
        }
    };
    if let End::Close(code, reason) = end {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), tx.send(Message::Close(Some(frame))))
            .await;
    }
    tracing::debug!(device = %auth.device, "push socket closed");
}

/// How a socket whose read failed with `e` ends: a client that broke the
/// protocol is told why (RFC 6455 §7.4.1); a broken transport gets nothing.
fn end_of_error(e: axum::Error) -> End {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e.into_inner().downcast::<WsError>().map(|e| *e) {
        Ok(WsError::Capacity(_)) => End::Close(1009, "message too big"),
        Ok(WsError::Protocol(_)) => End::Close(1002, "protocol error"),
        Ok(WsError::Utf8(_)) => End::Close(1007, "invalid UTF-8 in a text frame"),
        Ok(other) => {
            tracing::debug!(error = %other, "push socket read failed");
            End::Gone
        }
        Err(other) => {
            tracing::debug!(error = %other, "push socket read failed");
            End::Gone
        }
    }
}

/// The session behind the socket is still valid; else the error code to
/// close with. A store error keeps the socket (the next check retries).
async fn check(st: &AppState, token: &TokenHash) -> Result<(), &'static str> {
    match session_of(st, token).await {
        Ok(_) => Ok(()),
        Err(
            e
            @ (ServerError::Unauthorized | ServerError::TokenExpired | ServerError::DeviceRevoked),
        ) => Err(e.status_and_code().1),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a push socket's session");
            Ok(())
        }
    }
}
