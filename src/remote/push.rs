//! The client side of the push channel: a listener task that keeps one
//! WebSocket to the server open and publishes what it hears as a
//! [`PushState`] (a `tokio::sync::watch`, so bursts coalesce and a slow
//! reader only ever sees the newest state).
//!
//! # Design
//! - The listener only says that the server's change log moved, and to
//!   which cursor; the change follower (`sync::follower`) pulls. The
//!   cursor stays the truth: a lost message, a duplicate or a reconnect
//!   costs at most one pull.
//! - **Keep-alive**: the server pings every 10 s (tungstenite answers
//!   them); the listener pings every [`CLIENT_PING_EVERY`] as well and
//!   treats [`SILENCE_LIMIT`] without any frame from the server as a dead
//!   connection (a half-open TCP connection after a network change or a
//!   killed server is noticed within seconds, not at the TCP timeout).
//! - **Reconnect**: after any failure or close, with capped exponential
//!   backoff with jitter ([`crate::sync::Backoff`], 250 ms doubling to
//!   30 s); the backoff starts over after a connection that lived
//!   [`HEALTHY_AFTER`]. A server without the route (404) is retried at the
//!   cap: the follower polls meanwhile.
//! - How to open a socket (URL, TLS, tokens, 401 → refresh) is the
//!   remote's business ([`PushDial`]; `remote::http::push` for HTTP).
//! - A message that is not valid JSON or of an unknown type is logged and
//!   ignored, never a crash.
//! - The task ends when the [`PushSubscription`] is dropped.

use crate::protocol::{DeviceId, PushMessage, PUSH_CLOSE_UNAUTHORIZED};
use crate::sync::Backoff;
use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::{CancellationToken, DropGuard};

/// How often the client pings the server.
pub const CLIENT_PING_EVERY: Duration = Duration::from_secs(10);
/// A socket on which nothing arrived this long is dead.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(25);
/// A connection that lived this long resets the reconnect backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);
/// First and longest reconnect delay (before jitter).
pub const RECONNECT_MIN: Duration = Duration::from_millis(250);
/// See [`RECONNECT_MIN`].
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// An open push socket.
pub type PushSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the listener knows, published on every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushState {
    /// A socket is open now.
    pub connected: bool,
    /// Sockets opened so far (a new value means "reconnected": pull).
    pub connects: u64,
    /// The newest cursor the server announced (0 before the first).
    pub server_cursor: u64,
    /// When the last message arrived.
    pub last_notification: Option<SystemTime>,
    /// The device whose commit the last message was about, if told.
    pub last_device: Option<DeviceId>,
    /// Why the last attempt or connection failed, for logs and status.
    pub last_error: Option<String>,
}

/// A running listener: its state, and the task's lifetime (dropping this
/// stops it).
pub struct PushSubscription {
    /// The listener's state (see [`PushState`]).
    pub state: watch::Receiver<PushState>,
    _stop: DropGuard,
}

/// Why opening a socket failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The server has no push route (an older server): retry at the cap.
    #[error("the server does not offer push ({0})")]
    Unsupported(String),
    /// Anything else (network, TLS, credentials refused): retry with
    /// backoff.
    #[error("{0}")]
    Failed(String),
}

/// Opens one authenticated push socket (see the module docs).
#[async_trait]
pub trait PushDial: Send + Sync + 'static {
    /// Connects and upgrades; refreshes credentials on a 401 itself.
    async fn dial(&self) -> Result<PushSocket, DialError>;
    /// Resolves when a failed dial is worth retrying at once (new
    /// credentials were saved, [`super::Remote::credentials_renewed`]);
    /// the default never resolves.
    async fn renewed(&self) {
        std::future::pending().await
    }
}

/// Starts a listener for `dial` on the current tokio runtime.
pub fn spawn_listener(dial: impl PushDial) -> PushSubscription {
    let (tx, rx) = watch::channel(PushState::default());
    let stop = CancellationToken::new();
    tokio::spawn(run_listener(dial, tx, stop.clone()));
    PushSubscription {
        state: rx,
        _stop: stop.drop_guard(),
    }
}

/// The reconnect loop (see the module docs).
async fn run_listener(dial: impl PushDial, tx: watch::Sender<PushState>, stop: CancellationToken) {
    let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    loop {
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = dial.dial() => r,
        };
        let delay = match attempt {
            Ok(socket) => {
                let opened = Instant::now();
                let why = session(socket, &tx, &stop).await;
                if stop.is_cancelled() {
                    return;
                }
                tracing::info!("push connection ended: {why}; reconnecting");
                tx.send_modify(|s| s.last_error = Some(why));
                if opened.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
                backoff.next_delay()
            }
            Err(e) => {
                tracing::debug!("push connection failed: {e}");
                let delay = match e {
                    DialError::Unsupported(_) => RECONNECT_MAX,
                    DialError::Failed(_) => backoff.next_delay(),
                };
                let message = e.to_string();
                tx.send_if_modified(|s| {
                    let changed = s.last_error.as_deref() != Some(message.as_str());
                    s.last_error = Some(message);
                    changed
                });
                delay
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = dial.renewed() => {
                tracing::info!("new credentials saved; reconnecting the push socket now");
                backoff.reset();
            }
        }
    }
}

/// Serves one open socket until it closes, breaks, goes silent or the
/// listener stops; returns why it ended.
async fn session(
    socket: PushSocket,
    tx: &watch::Sender<PushState>,
    stop: &CancellationToken,
) -> String {
    tx.send_modify(|s| {
        s.connected = true;
        s.connects += 1;
        s.last_error = None;
    });
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval_at(Instant::now() + CLIENT_PING_EVERY, CLIENT_PING_EVERY);
    let mut heard = Instant::now();
    let why = loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(None))).await;
                break "stopped".to_string();
            }
            _ = tokio::time::sleep_until(heard + SILENCE_LIMIT) => {
                break format!("nothing heard from the server for {}s", SILENCE_LIMIT.as_secs());
            }
            _ = ping.tick() => {
                let ping = sink.send(Message::Ping(Default::default()));
                match tokio::time::timeout(CLIENT_PING_EVERY, ping).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break format!("cannot ping: {e}"),
                    Err(_) => break "a ping could not be sent (connection stuck)".to_string(),
                }
            }
            msg = stream.next() => {
                heard = Instant::now();
                match msg {
                    None => break "the server closed the connection".to_string(),
                    Some(Err(e)) => break format!("connection broken: {e}"),
                    Some(Ok(Message::Text(text))) => on_text(text.as_str(), tx),
                    Some(Ok(Message::Close(frame))) => break closed_because(frame),
                    // Pings are answered by tungstenite; pongs and binary
                    // frames only prove the server is alive.
                    Some(Ok(_)) => {}
                }
            }
        }
    };
    tx.send_modify(|s| s.connected = false);
    why
}

/// Applies one text message; anything not understood is logged and
/// ignored.
fn on_text(text: &str, tx: &watch::Sender<PushState>) {
    match serde_json::from_str::<PushMessage>(text) {
        Ok(PushMessage::Changed { cursor, device }) => tx.send_modify(|s| {
            s.server_cursor = s.server_cursor.max(cursor);
            s.last_notification = Some(SystemTime::now());
            s.last_device = device;
        }),
        Err(e) => tracing::warn!(
            error = %e,
            message = %text.chars().take(200).collect::<String>(),
            "ignoring a push message this client does not understand"
        ),
    }
}

fn closed_because(frame: Option<CloseFrame>) -> String {
    match frame {
        Some(f) if f.code == CloseCode::from(PUSH_CLOSE_UNAUTHORIZED) => {
            format!("the server ended the session ({})", f.reason)
        }
        Some(f) => format!(
            "the server closed the connection ({} {})",
            u16::from(f.code),
            f.reason
        ),
        None => "the server closed the connection".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_not_understood_are_ignored() {
        let (tx, rx) = watch::channel(PushState::default());
        for bad in [
            "",
            "not json",
            r#"{"type":"later","x":1}"#,
            r#"{"type":"changed"}"#,
            r#"{"type":"changed","cursor":-1}"#,
        ] {
            on_text(bad, &tx);
        }
        assert_eq!(*rx.borrow(), PushState::default());
        on_text(r#"{"type":"changed","cursor":9}"#, &tx);
        on_text(r#"{"type":"changed","cursor":4}"#, &tx);
        let s = rx.borrow().clone();
        assert_eq!(s.server_cursor, 9, "never goes back");
        assert!(s.last_notification.is_some());
    }
}
