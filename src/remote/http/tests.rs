//! Tests of [`HttpRemote`](super::HttpRemote) against real and fake servers.
use super::*;
use crate::server::{self, ServerConfig};
use parking_lot::Mutex;

/// A saved login kept in memory.
#[derive(Default)]
struct Saved(Mutex<Option<Tokens>>);

impl TokenSource for Saved {
    fn load(&self) -> anyhow::Result<Option<Tokens>> {
        Ok(self.0.lock().clone())
    }
    fn save(&self, tokens: &Tokens) -> anyhow::Result<()> {
        *self.0.lock() = Some(tokens.clone());
        Ok(())
    }
}

/// A server that rotates the refresh token on every refresh.
#[tokio::test]
async fn a_rotated_refresh_token_is_saved_before_it_is_used() {
    use axum::{extract::State, http::StatusCode, routing, Json, Router};
    #[derive(Default)]
    struct Rotating {
        refresh: String,
        access: String,
        n: u32,
    }
    type St = Arc<Mutex<Rotating>>;
    let device_id = DeviceId::random();
    let state: St = Arc::new(Mutex::new(Rotating {
        refresh: "r0".into(),
        ..Default::default()
    }));
    let refresh = move |State(st): State<St>, Json(req): Json<RefreshRequest>| async move {
        let mut st = st.lock();
        if req.refresh_token != st.refresh {
            return Err(StatusCode::UNAUTHORIZED);
        }
        st.n += 1;
        st.refresh = format!("r{}", st.n);
        st.access = format!("a{}", st.n);
        Ok(Json(LoginResponse {
            access_token: st.access.clone(),
            refresh_token: st.refresh.clone(),
            expires_in: 900,
            device_id,
        }))
    };
    let pull = |State(st): State<St>, headers: axum::http::HeaderMap| async move {
        let want = format!("Bearer {}", st.lock().access);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&want) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        Ok(Json(PullResponse {
            changes: vec![],
            cursor: 0,
            has_more: false,
        }))
    };
    let app = Router::new()
        .route("/api/v1/auth/refresh", routing::post(refresh))
        .route("/api/v1/sync/pull", routing::get(pull))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let first = Tokens {
        access_token: String::new(),
        refresh_token: "r0".into(),
        device_id,
    };
    let saved = Arc::new(Saved(Mutex::new(Some(first.clone()))));
    let remote = HttpRemote::new(&url, first).with_token_source(saved.clone());
    remote.pull(0, 1).await.unwrap();
    assert_eq!(saved.0.lock().as_ref().unwrap().refresh_token, "r1");
    // The access token dies: the next refresh must use r1, not r0.
    state.lock().access = "gone".into();
    remote.pull(0, 1).await.unwrap();
    assert_eq!(saved.0.lock().as_ref().unwrap().refresh_token, "r2");
    assert_eq!(*remote.refreshing.lock().await, "r2");
    server.abort();
}

#[tokio::test]
async fn a_running_remote_adopts_a_new_login_after_its_refresh_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig::loopback(dir.path().join("data"));
    server::add_user(&cfg, "alice", "pw").await.unwrap();
    let running = server::start(cfg.clone()).await.unwrap();
    let url = format!("http://{}", running.local_addr());
    let first: Tokens = login(&url, "alice", "pw", "laptop").await.unwrap().into();
    let saved = Arc::new(Saved::default());
    *saved.0.lock() = Some(first.clone());
    let remote = HttpRemote::new(&url, first.clone()).with_token_source(saved.clone());
    remote.pull(0, 10).await.unwrap();

    // Every token of the device stops working (as if expired).
    let meta = server::meta_store::open(None, &cfg.data_dir).await.unwrap();
    meta.delete_expired_tokens(i64::MAX).await.unwrap();
    meta.close().await;
    let refused = remote.pull(0, 10).await.unwrap_err();
    assert!(
        matches!(&refused, RemoteError::Unauthorized(m) if m.contains("log in again")),
        "{refused:?}"
    );

    // A login of another device is not adopted (its cache is another).
    let other: Tokens = login(&url, "alice", "pw", "desk").await.unwrap().into();
    *saved.0.lock() = Some(other);
    let refused = remote.pull(0, 10).await.unwrap_err();
    assert!(
        matches!(&refused, RemoteError::Unauthorized(m) if m.contains("another device")),
        "{refused:?}"
    );

    // `nimbus login` again (same device) saves new tokens: the same
    // remote picks them up at its next request.
    let again: Tokens = login_with(&url, "alice", "pw", "laptop", Some(first.device_id))
        .await
        .unwrap()
        .into();
    assert_eq!(again.device_id, first.device_id);
    *saved.0.lock() = Some(again.clone());
    remote.pull(0, 10).await.unwrap();
    // The refresh rotated the adopted token, and the new one was saved.
    let now = saved.0.lock().clone().unwrap();
    assert_ne!(now.refresh_token, again.refresh_token);
    assert_eq!(*remote.refreshing.lock().await, now.refresh_token);
    running.shutdown().await.unwrap();
}

/// Another process of the device (a `nimbus devices` command) rotated the
/// refresh token twice meanwhile: the remote refreshes with the saved
/// token, not with its used-up one (which the server would take for a
/// stolen copy and end the session).
#[tokio::test]
async fn a_refresh_starts_from_the_token_another_process_saved() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig::loopback(dir.path().join("data"));
    server::add_user(&cfg, "alice", "pw").await.unwrap();
    let running = server::start(cfg.clone()).await.unwrap();
    let url = format!("http://{}", running.local_addr());
    let first: Tokens = login(&url, "alice", "pw", "laptop").await.unwrap().into();
    let saved = Arc::new(Saved::default());
    let stale = Tokens {
        access_token: String::new(),
        ..first.clone()
    };
    let remote = HttpRemote::new(&url, stale).with_token_source(saved.clone());
    let mut token = first.refresh_token.clone();
    let other = HttpRemote::new(&url, first.clone());
    for _ in 0..2 {
        other.refresh_with(&mut token).await.unwrap();
    }
    *saved.0.lock() = Some(Tokens {
        access_token: String::new(),
        refresh_token: token.clone(),
        device_id: first.device_id,
    });
    remote.pull(0, 10).await.unwrap();
    let now = saved.0.lock().clone().unwrap();
    assert_ne!(now.refresh_token, token, "rotated once more, and saved");
    assert_eq!(*remote.refreshing.lock().await, now.refresh_token);
    running.shutdown().await.unwrap();
}

/// A server whose batch answer is well framed but carries other bytes, or
/// breaks the framing: the client refuses it (`Corrupt` naming the
/// chunk, or a `Server` error), never returns unverified bytes.
#[tokio::test]
async fn a_batch_answer_is_verified_chunk_by_chunk() {
    use crate::protocol::{frame_header, ChunkBatchRequest};
    use axum::{extract::State, routing, Json, Router};
    let (good, evil) = (Bytes::from_static(b"good bytes"), b"evil bytes".as_slice());
    let (ig, ie) = (ChunkId::of(&good), ChunkId::of(b"expected"));
    // 0: right bytes for ig, wrong ones for ie; 1: ig's frame only.
    type St = Arc<Mutex<u32>>;
    let mode: St = Arc::new(Mutex::new(0));
    let batch = move |State(mode): State<St>, Json(req): Json<ChunkBatchRequest>| {
        let good = good.clone();
        async move {
            let mut body = BytesMut::new();
            for id in req.ids {
                if id == ig {
                    body.extend_from_slice(&frame_header(&id, good.len() as u32));
                    body.extend_from_slice(&good);
                } else if *mode.lock() == 0 {
                    body.extend_from_slice(&frame_header(&id, evil.len() as u32));
                    body.extend_from_slice(evil);
                }
            }
            body.freeze()
        }
    };
    let app = Router::new()
        .route("/api/v1/chunks/batch", routing::post(batch))
        .with_state(mode.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let remote = HttpRemote::new(
        &url,
        Tokens {
            access_token: "a".into(),
            refresh_token: "r".into(),
            device_id: DeviceId::random(),
        },
    );
    let got = remote.get_chunks(&[ig]).await.unwrap();
    assert_eq!(got, vec![(ig, Bytes::from_static(b"good bytes"))]);
    let e = remote.get_chunks(&[ig, ie]).await.unwrap_err();
    assert!(matches!(e, RemoteError::Corrupt(id) if id == ie), "{e:?}");
    *mode.lock() = 1;
    let e = remote.get_chunks(&[ig, ie]).await.unwrap_err();
    assert!(
        matches!(&e, RemoteError::Server { message, .. } if message.contains("lacks")),
        "{e:?}"
    );
    server.abort();
}
