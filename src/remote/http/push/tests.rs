//! The push listener against a real server: notifications, reconnect
//! after a server restart, 401 without a token, no leak across accounts,
//! a revoked device's socket closed. Every wait polls with a deadline.

use super::super::{login, HttpRemote, Tokens};
use crate::protocol::PUSH_PATH;
use crate::remote::push::{PushState, PushSubscription};
use crate::remote::suite::dir_op;
use crate::remote::{Remote, RemoteError};
use crate::server::{self, RunningServer, ServerConfig};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// Waits until the listener's state satisfies `ok`, returning it.
async fn until(
    sub: &mut PushSubscription,
    what: &str,
    ok: impl Fn(&PushState) -> bool,
) -> PushState {
    let wait = async {
        loop {
            let s = sub.state.borrow_and_update().clone();
            if ok(&s) {
                return s;
            }
            if sub.state.changed().await.is_err() {
                panic!("the listener stopped while waiting for {what}");
            }
        }
    };
    match tokio::time::timeout(LIMIT, wait).await {
        Ok(s) => s,
        Err(_) => panic!("timed out waiting for {what}: {:?}", sub.state.borrow()),
    }
}

async fn remote(url: &str, user: &str, device: &str) -> Arc<HttpRemote> {
    let tokens: Tokens = login(url, user, "pw", device).await.unwrap().into();
    Arc::new(HttpRemote::new(url, tokens))
}

struct Fixture {
    _dir: tempfile::TempDir,
    cfg: ServerConfig,
    server: Option<RunningServer>,
    url: String,
}

async fn fixture(users: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig::loopback(dir.path().join("data"));
    for u in users {
        server::add_user(&cfg, u, "pw").await.unwrap();
    }
    let running = server::start(cfg.clone()).await.unwrap();
    let url = format!("http://{}", running.local_addr());
    let mut cfg = cfg;
    cfg.listen = running.local_addr();
    Fixture {
        _dir: dir,
        cfg,
        server: Some(running),
        url,
    }
}

/// Retries `commit` until the server takes it (it may be restarting).
async fn commit_dir(r: &HttpRemote, name: &str) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        match r.commit(vec![dir_op(name)]).await {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() < deadline && e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("commit {name}: {e}"),
        }
    }
}

#[tokio::test]
async fn notifications_arrive_and_a_server_restart_is_survived() {
    let mut fx = fixture(&["alice"]).await;
    let a = remote(&fx.url, "alice", "laptop").await;
    let b = remote(&fx.url, "alice", "desk").await;
    let mut sub = b.clone().subscribe().expect("HTTP remotes push");
    let first = until(&mut sub, "connected", |s| s.connected && s.connects == 1).await;
    assert_eq!(first.server_cursor, 0, "the head is announced at once");

    commit_dir(&a, "one").await;
    let s = until(&mut sub, "A's commit announced", |s| s.server_cursor >= 1).await;
    assert_eq!(s.last_device, Some(a.device_id()));

    // The server stops: the socket closes (not left hanging), and the
    // listener reconnects to its successor on the same port.
    fx.server.take().unwrap().shutdown().await.unwrap();
    until(&mut sub, "disconnected", |s| !s.connected).await;
    fx.server = Some(server::start(fx.cfg.clone()).await.unwrap());
    commit_dir(&a, "two").await;
    let s = until(&mut sub, "reconnected with the new head", |s| {
        s.connected && s.connects >= 2 && s.server_cursor >= 2
    })
    .await;
    assert!(s.last_notification.is_some());
    drop(sub);
    fx.server.take().unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn no_token_is_401_and_accounts_do_not_hear_each_other() {
    let fx = fixture(&["alice", "bob"]).await;
    let ws = fx.url.replace("http://", "ws://") + PUSH_PATH;
    match tokio_tungstenite::connect_async(&ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 401)
        }
        Err(e) => panic!("expected 401, got {e}"),
        Ok(_) => panic!("an unauthenticated upgrade was accepted"),
    }
    let a = remote(&fx.url, "alice", "laptop").await;
    let a2 = remote(&fx.url, "alice", "desk").await;
    let bob = remote(&fx.url, "bob", "phone").await;
    let mut alice_sub = a2.clone().subscribe().unwrap();
    let mut bob_sub = bob.clone().subscribe().unwrap();
    until(&mut alice_sub, "alice connected", |s| s.connected).await;
    let before = until(&mut bob_sub, "bob connected", |s| s.connected).await;
    for i in 0..5 {
        commit_dir(&a, &format!("d{i}")).await;
    }
    until(&mut alice_sub, "alice hears her commits", |s| {
        s.server_cursor >= 5
    })
    .await;
    // Bob's own commit reaches him: his socket works, and his head is
    // his own account's (1), never alice's.
    commit_dir(&bob, "mine").await;
    let s = until(&mut bob_sub, "bob hears his commit", |s| {
        s.server_cursor >= 1
    })
    .await;
    assert_eq!(s.server_cursor, 1, "bob got alice's head: {s:?}");
    assert_eq!(before.server_cursor, 0);
    fx.server.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_revoked_device_loses_its_socket() {
    let fx = fixture(&["alice"]).await;
    let a = remote(&fx.url, "alice", "laptop").await;
    let b = remote(&fx.url, "alice", "desk").await;
    let mut sub = b.clone().subscribe().unwrap();
    until(&mut sub, "connected", |s| s.connected).await;
    a.revoke_device(b.device_id()).await.unwrap();
    let s = until(&mut sub, "closed and refused", |s| {
        !s.connected && s.last_error.is_some() && s.connects == 1
    })
    .await;
    assert!(!s.connected);
    // And it stays out: the refresh is refused too.
    assert!(matches!(
        b.pull(0, 1).await,
        Err(RemoteError::Unauthorized(_))
    ));
    fx.server.unwrap().shutdown().await.unwrap();
}

/// A TCP proxy whose open connections can be cut (the listener stays).
struct Proxy {
    url: String,
    conns: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
    freeze: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn to(upstream: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let conns: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let held = conns.clone();
        let freeze = Arc::new(tokio::sync::Notify::new());
        let frozen = freeze.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let frozen = frozen.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                            // Half-open: both sockets stay open, nothing moves.
                            _ = frozen.notified() => std::future::pending::<()>().await,
                        }
                    }
                });
                held.lock().push(task);
            }
        });
        Proxy {
            url,
            conns,
            accept,
            freeze,
        }
    }

    /// Stops moving bytes on every connection open now, keeping them open
    /// (a half-open connection: only heartbeats can tell).
    fn freeze(&self) {
        self.freeze.notify_waiters();
    }

    /// Cuts every connection open now (no close frame, no FIN from the
    /// server: the sockets just die).
    fn cut(&self) {
        for t in self.conns.lock().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Device A straight to the server, and the push subscription of device B
/// connected through a [`Proxy`].
async fn through_proxy(fx: &Fixture) -> (Proxy, Arc<HttpRemote>, PushSubscription) {
    let proxy = Proxy::to(fx.cfg.listen).await;
    let a = remote(&fx.url, "alice", "laptop").await;
    let b = remote(&proxy.url, "alice", "desk").await;
    let mut sub = b.subscribe().unwrap();
    until(&mut sub, "connected through the proxy", |s| s.connected).await;
    (proxy, a, sub)
}

#[tokio::test]
async fn a_killed_connection_is_replaced_and_nothing_is_missed() {
    let fx = fixture(&["alice"]).await;
    let (proxy, a, mut sub) = through_proxy(&fx).await;
    proxy.cut();
    // A commits while B's socket is dead: the head announced on the new
    // connection tells B.
    commit_dir(&a, "while-cut").await;
    let s = until(&mut sub, "reconnected with the head", |s| {
        s.connected && s.connects >= 2 && s.server_cursor >= 1
    })
    .await;
    assert!(s.connects >= 2);
    drop(sub);
    drop(proxy);
    fx.server.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_half_open_connection_is_noticed_by_heartbeats() {
    use crate::remote::push::SILENCE_LIMIT;
    let fx = fixture(&["alice"]).await;
    let (proxy, a, mut sub) = through_proxy(&fx).await;
    let frozen_at = tokio::time::Instant::now();
    proxy.freeze();
    commit_dir(&a, "while-frozen").await;
    // Nothing closes the frozen socket: only the client's silence limit
    // ends it, and the new one announces the head.
    let wait = SILENCE_LIMIT + crate::remote::push::CLIENT_PING_EVERY + LIMIT;
    let s = tokio::time::timeout(wait, async {
        loop {
            let s = sub.state.borrow_and_update().clone();
            if s.connected && s.connects >= 2 && s.server_cursor >= 1 {
                return s;
            }
            sub.state.changed().await.unwrap();
        }
    })
    .await
    .expect("the half-open connection was never replaced");
    assert!(
        frozen_at.elapsed() >= SILENCE_LIMIT,
        "ended before the silence limit: {s:?}"
    );
    drop(sub);
    drop(proxy);
    fx.server.unwrap().shutdown().await.unwrap();
}

/// `nimbus_push_connections` from the server's `/metrics`.
async fn open_sockets(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("nimbus_push_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no nimbus_push_connections in /metrics:\n{text}"))
}

type RawSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw socket of `user`'s new device (no listener: the test decides
/// whether it reads, and so whether it answers pings).
async fn raw_socket(url: &str, user: &str, device: &str) -> RawSocket {
    let tokens = login(url, user, "pw", device).await.unwrap();
    socket_with(url, &tokens.access_token).await.unwrap()
}

/// Opens a push socket with access token `token`.
async fn socket_with(
    url: &str,
    token: &str,
) -> Result<RawSocket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = (url.replace("http://", "ws://") + PUSH_PATH)
        .into_client_request()
        .unwrap();
    let bearer = format!("Bearer {token}").parse().unwrap();
    req.headers_mut()
        .insert(reqwest::header::AUTHORIZATION, bearer);
    tokio_tungstenite::connect_async(req).await.map(|(s, _)| s)
}

/// The close frame `socket` ends with (skipping the cursor and pings).
async fn close_frame(socket: &mut RawSocket) -> Option<(u16, String)> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let read = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(f))) => {
                    return f.map(|f| (u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("the socket never ended")
}

/// Push sockets are capped per device: one over the cap is refused with
/// 429 `too_many_sockets` before the upgrade, the device's open sockets
/// and other devices are untouched, and a closed socket frees its place.
#[tokio::test]
async fn a_device_over_its_socket_cap_is_refused_before_the_upgrade() {
    use crate::server::push::SocketLimits;
    let fx = fixture(&["alice"]).await;
    let tokens = login(&fx.url, "alice", "pw", "desk").await.unwrap();
    let cap = SocketLimits::default().per_device as usize;
    let mut open = Vec::new();
    for _ in 0..cap {
        open.push(socket_with(&fx.url, &tokens.access_token).await.unwrap());
    }
    match socket_with(&fx.url, &tokens.access_token).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429);
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            assert!(body.contains("too_many_sockets"), "{body}");
        }
        other => panic!("socket {} over the cap: {:?}", cap + 1, other.map(|_| ())),
    }
    assert_eq!(open_sockets(&fx.url).await, cap as u64);
    // Another device of the account is not limited by this one's cap.
    let _other = raw_socket(&fx.url, "alice", "laptop").await;

    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    let deadline = tokio::time::Instant::now() + LIMIT;
    let again = loop {
        match socket_with(&fx.url, &tokens.access_token).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no place freed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop(again);
    drop(open);
    fx.server.unwrap().shutdown().await.unwrap();
}

/// A client that sends a big frame, or breaks the framing (an unmasked
/// frame, RFC 6455 §5.1), is told why with a close code, and the
/// server's other sockets are untouched.
#[tokio::test]
async fn a_client_breaking_the_protocol_gets_a_close_code() {
    use crate::server::push::socket::MAX_CLIENT_MESSAGE;
    use futures::SinkExt;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::Message;
    let fx = fixture(&["alice"]).await;

    let mut big = raw_socket(&fx.url, "alice", "big").await;
    let payload = vec![7u8; MAX_CLIENT_MESSAGE + 1];
    big.send(Message::Binary(payload.into())).await.unwrap();
    let (code, reason) = close_frame(&mut big).await.expect("no close frame");
    assert_eq!(code, 1009, "{reason}");

    let mut rude = raw_socket(&fx.url, "alice", "rude").await;
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = rude.get_mut() else {
        panic!("plain HTTP expected");
    };
    // FIN + text, no mask bit, "hi".
    tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let (code, reason) = close_frame(&mut rude).await.expect("no close frame");
    assert_eq!(code, 1002, "{reason}");

    let mut calm = raw_socket(&fx.url, "alice", "calm").await;
    calm.send(Message::Text("hello".into())).await.unwrap();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while open_sockets(&fx.url).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken sockets stay open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(calm);
    fx.server.unwrap().shutdown().await.unwrap();
}

/// The server's half of the heartbeat: a peer that never answers pings is
/// dropped after the silence limit (not before), while a peer that reads,
/// and so answers every ping, stays connected well past it.
#[tokio::test]
async fn the_server_drops_a_silent_socket_and_keeps_a_live_one() {
    use crate::server::push::Heartbeat;
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::loopback(dir.path().join("data"));
    let silence = Duration::from_millis(1500);
    cfg.heartbeat = Heartbeat {
        ping_every: Duration::from_millis(300),
        silence_limit: silence,
    };
    server::add_user(&cfg, "alice", "pw").await.unwrap();
    let running = server::start(cfg).await.unwrap();
    let url = format!("http://{}", running.local_addr());

    let mut live = raw_socket(&url, "alice", "desk").await;
    let silent = raw_socket(&url, "alice", "laptop").await;
    let opened = tokio::time::Instant::now();
    // Reading answers pings (tungstenite queues the pong and sends it on
    // the next read).
    let reader = tokio::spawn(async move {
        let mut frames = 0u32;
        while let Some(Ok(_)) = live.next().await {
            frames += 1;
        }
        frames
    });

    let deadline = opened + silence + LIMIT;
    let mut sockets = open_sockets(&url).await;
    while sockets != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent socket was never dropped ({sockets} open)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        sockets = open_sockets(&url).await;
    }
    assert!(
        opened.elapsed() >= silence,
        "dropped after {:?}, before the silence limit",
        opened.elapsed()
    );
    // The silent side, read now: what was queued (the cursor, pings), then
    // the end of the connection, without a close frame.
    let mut silent = silent;
    let drained = tokio::time::timeout(LIMIT, async {
        let mut pings = 0;
        loop {
            match silent.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                    panic!("a silent peer got a close frame: {f:?}")
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return pings,
            }
        }
    })
    .await
    .expect("the dropped socket's stream never ended");
    assert!(drained >= 1, "the server never pinged the silent peer");

    // The live one outlasts three silence limits. Absence needs a window:
    // this wait is the thing asserted, not a stand-in for a condition.
    tokio::time::sleep_until(opened + 3 * silence).await;
    assert!(!reader.is_finished(), "the live socket was dropped");
    assert_eq!(open_sockets(&url).await, 1);
    running.shutdown().await.unwrap();
    let frames = tokio::time::timeout(LIMIT, reader)
        .await
        .expect("the live socket outlived the server")
        .unwrap();
    assert!(frames >= 3, "only {frames} frames on the live socket");
}
