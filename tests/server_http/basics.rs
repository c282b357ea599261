//! Health, metrics, the API description, logins and tokens, chunks.

use super::*;

#[tokio::test]
async fn health_metrics_openapi_and_unknown_routes() {
    let fx = Fx::new().await;
    let r = fx
        .http
        .get(format!("{}/healthz", fx.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");

    let r = fx.http.get(fx.api("openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    assert!(doc["paths"]["/api/v1/sync/commit"].is_object());

    let (s, code) = error_of(fx.http.get(fx.api("nope")).send().await.unwrap()).await;
    assert_eq!((s.as_u16(), code.as_str()), (404, "not_found"));
    let (s, code) = error_of(fx.http.delete(fx.api("sync/commit")).send().await.unwrap()).await;
    assert_eq!((s.as_u16(), code.as_str()), (405, "method_not_allowed"));

    // Some traffic, then the counters show it.
    let remote = fx.remote("alice", "laptop").await;
    let data = random(10_000, 1);
    remote
        .put_chunk(ChunkId::of(&data), data.clone())
        .await
        .unwrap();
    remote.get_chunk(ChunkId::of(&data)).await.unwrap();
    let r = fx
        .http
        .get(format!("{}/metrics", fx.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let m = r.text().await.unwrap();
    assert!(
        m.contains(r#"nimbus_http_requests_total{method="GET",route="/healthz",status="200"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"route="/api/v1/chunks/{hex}",status="204"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"route="unmatched",status="404"} 1"#), "{m}");
    assert!(m.contains("nimbus_chunk_bytes_received_total 10000"), "{m}");
    assert!(m.contains("nimbus_chunk_bytes_sent_total 10000"), "{m}");
    assert!(m.contains("nimbus_chunk_store_chunks 1"), "{m}");
    assert!(m.contains("nimbus_accounts 2"), "{m}");
    assert!(m.contains("nimbus_logins_total 1"), "{m}");
}

#[tokio::test]
async fn login_refresh_and_token_checks() {
    let fx = Fx::new().await;
    let ok = login(&fx.url, "alice", "alice-pw", "laptop").await.unwrap();
    assert_eq!(ok.expires_in, 900);
    let again = login(&fx.url, "alice", "alice-pw", "laptop").await.unwrap();
    assert_ne!(
        ok.device_id, again.device_id,
        "every login registers a device"
    );

    // Wrong password and unknown user: the same 401, word for word.
    let bodies = futures::future::join_all([("alice", "wrong"), ("mallory", "alice-pw")].map(
        |(user, password)| {
            fx.http
                .post(fx.api("auth/login"))
                .json(&serde_json::json!({"user": user, "password": password, "device": "x"}))
                .send()
        },
    ))
    .await;
    let mut seen = Vec::new();
    for r in bodies {
        let r = r.unwrap();
        assert_eq!(r.status(), 401);
        seen.push(r.text().await.unwrap());
    }
    assert_eq!(seen[0], seen[1]);
    assert!(matches!(
        login(&fx.url, "alice", "wrong", "x").await,
        Err(RemoteError::Unauthorized(_))
    ));
    assert!(matches!(
        login(&fx.url, "mallory", "x", "x").await,
        Err(RemoteError::Unauthorized(_))
    ));
    // A bad device name is a 400.
    assert!(matches!(
        login(&fx.url, "alice", "alice-pw", "a/b").await,
        Err(RemoteError::Rejected { status: 400, .. })
    ));

    // Refresh: new access and refresh tokens for the same device (the
    // rotation rules are tested in `sessions`).
    let r = fx
        .http
        .post(fx.api("auth/refresh"))
        .json(&serde_json::json!({"refresh_token": ok.refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refreshed: nimbus::protocol::LoginResponse = r.json().await.unwrap();
    assert_eq!(refreshed.device_id, ok.device_id);
    assert_ne!(refreshed.refresh_token, ok.refresh_token);
    assert_ne!(refreshed.access_token, ok.access_token);
    let r = fx
        .http
        .post(fx.api("auth/refresh"))
        .json(&serde_json::json!({"refresh_token": ok.access_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );

    // Missing, garbage, refresh-as-access tokens.
    let pull = fx.api("sync/pull");
    let (s, code) = error_of(fx.http.get(&pull).send().await.unwrap()).await;
    assert_eq!((s.as_u16(), code.as_str()), (401, "unauthorized"));
    for bad in ["garbage", ok.refresh_token.as_str()] {
        let r = fx.http.get(&pull).bearer_auth(bad).send().await.unwrap();
        assert_eq!(
            error_of(r).await,
            (StatusCode::UNAUTHORIZED, "unauthorized".into())
        );
    }
    let r = fx
        .http
        .get(&pull)
        .bearer_auth(&refreshed.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // An expired access token: planted in the store, an hour old.
    let meta = server::meta_store::SqliteMetaStore::open(&fx.cfg.data_dir.join("meta.sqlite"))
        .await
        .unwrap();
    let alice = server::meta_store::MetaStore::account_by_name(&meta, "alice")
        .await
        .unwrap()
        .unwrap();
    let (expired, hash) = server::auth::new_token(server::meta_store::TokenKind::Access);
    server::meta_store::MetaStore::insert_token(
        &meta,
        &server::meta_store::NewToken {
            hash,
            account: alice.id,
            device: ok.device_id,
            kind: server::meta_store::TokenKind::Access,
            expires_ns: server::now_ns() - 3_600_000_000_000,
        },
    )
    .await
    .unwrap();
    server::meta_store::MetaStore::close(&meta).await;
    let r = fx
        .http
        .get(&pull)
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (StatusCode::UNAUTHORIZED, "token_expired".into())
    );

    // HttpRemote refreshes on its own...
    let remote = HttpRemote::new(
        &fx.url,
        Tokens {
            access_token: expired.clone(),
            refresh_token: ok.refresh_token.clone(),
            device_id: ok.device_id,
        },
    );
    assert_eq!(remote.pull(0, 10).await.unwrap().cursor, 0);
    // ...also from no access token at all...
    let remote = HttpRemote::new(
        &fx.url,
        Tokens {
            access_token: String::new(),
            refresh_token: ok.refresh_token.clone(),
            device_id: ok.device_id,
        },
    );
    assert!(remote.missing_chunks(&[ChunkId::of(b"x")]).await.is_ok());
    // ...and reports a refused refresh as Unauthorized.
    let remote = HttpRemote::new(
        &fx.url,
        Tokens {
            access_token: expired,
            refresh_token: "nrt_bogus".into(),
            device_id: ok.device_id,
        },
    );
    assert!(matches!(
        remote.pull(0, 10).await,
        Err(RemoteError::Unauthorized(_))
    ));
}

#[tokio::test]
async fn chunk_upload_download_and_verification() {
    let fx = Fx::new().await;
    let remote = fx.remote("alice", "laptop").await;
    let token = fx.token("alice").await;

    // Compressible (sent as zstd) and random (sent plain).
    let squashy = text(1 << 20);
    let noise = random(300_000, 2);
    for data in [&squashy, &noise] {
        let id = ChunkId::of(data);
        assert_eq!(remote.missing_chunks(&[id]).await.unwrap(), vec![id]);
        remote.put_chunk(id, data.clone()).await.unwrap();
        assert!(remote.missing_chunks(&[id]).await.unwrap().is_empty());
        assert_eq!(&remote.get_chunk(id).await.unwrap(), data);
        assert!(fx.chunk_path(&id).exists());
    }
    // Stored compressed: the file is much smaller than the chunk.
    let stored = std::fs::metadata(fx.chunk_path(&ChunkId::of(&squashy)))
        .unwrap()
        .len();
    assert!(stored < squashy.len() as u64 / 4, "stored {stored} bytes");
    // Uploading again is fine (idempotent).
    remote
        .put_chunk(ChunkId::of(&noise), noise.clone())
        .await
        .unwrap();

    // Raw zstd upload, as curl would send it.
    let data = text(50_000);
    let id = ChunkId::of(&data);
    let r = fx
        .http
        .put(fx.api(&format!("chunks/{id}")))
        .bearer_auth(&token)
        .header(header::CONTENT_ENCODING, "zstd")
        .body(zstd::bulk::compress(&data, 3).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(remote.get_chunk(id).await.unwrap(), data);

    // Hash mismatch: 400 and nothing stored.
    let claimed = ChunkId::of(b"what I claim");
    let r = fx
        .http
        .put(fx.api(&format!("chunks/{claimed}")))
        .bearer_auth(&token)
        .body("something else")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (StatusCode::BAD_REQUEST, "hash_mismatch".into())
    );
    assert!(!fx.chunk_path(&claimed).exists());
    assert_eq!(
        remote.missing_chunks(&[claimed]).await.unwrap(),
        vec![claimed]
    );
    assert!(matches!(
        remote.get_chunk(claimed).await,
        Err(RemoteError::NotFound(_))
    ));
    // The same through zstd.
    let r = fx
        .http
        .put(fx.api(&format!("chunks/{claimed}")))
        .bearer_auth(&token)
        .header(header::CONTENT_ENCODING, "zstd")
        .body(zstd::bulk::compress(b"something else", 3).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (StatusCode::BAD_REQUEST, "hash_mismatch".into())
    );

    // Bad ids, bad encodings.
    for bad in ["xyz", &"g".repeat(64), &"a".repeat(63)] {
        let r = fx
            .http
            .put(fx.api(&format!("chunks/{bad}")))
            .bearer_auth(&token)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(r).await,
            (StatusCode::BAD_REQUEST, "invalid_chunk_id".into())
        );
    }
    let r = fx
        .http
        .put(fx.api(&format!("chunks/{claimed}")))
        .bearer_auth(&token)
        .header(header::CONTENT_ENCODING, "zstd")
        .body("not zstd at all")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (StatusCode::BAD_REQUEST, "bad_encoding".into())
    );
    let r = fx
        .http
        .put(fx.api(&format!("chunks/{claimed}")))
        .bearer_auth(&token)
        .header(header::CONTENT_ENCODING, "br")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn corrupt_chunks_are_never_served_and_heal_on_upload() {
    let fx = Fx::new().await;
    let remote = fx.remote("alice", "laptop").await;
    let data = random(50_000, 30);
    let id = ChunkId::of(&data);
    remote.put_chunk(id, data.clone()).await.unwrap();
    remote
        .commit(vec![upsert(
            NodeId::random(),
            &VersionVector::new(),
            NodeId::ROOT,
            "f",
            file(content_of(&[&data])),
        )])
        .await
        .unwrap();
    // Bit rot on disk.
    let path = fx.chunk_path(&id);
    let mut raw = std::fs::read(&path).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x40;
    std::fs::write(&path, raw).unwrap();
    let r = fx
        .http
        .get(fx.api("files/content"))
        .query(&[("path", "/f")])
        .bearer_auth(fx.token("alice").await)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (StatusCode::INTERNAL_SERVER_ERROR, "chunk_corrupt".into())
    );
    assert!(!path.exists(), "quarantined");
    let e = remote.get_chunk(id).await.unwrap_err();
    assert!(
        matches!(e, RemoteError::Server { status: 500, .. }),
        "{e:?}"
    );
    // The account must upload it again, which heals it.
    assert_eq!(remote.missing_chunks(&[id]).await.unwrap(), vec![id]);
    remote.put_chunk(id, data.clone()).await.unwrap();
    assert_eq!(remote.get_chunk(id).await.unwrap(), data);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&fx.cfg.data_dir)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "data dir is private");
    }
}

/// Another protocol version is refused on every route, before
/// authentication and body parsing, with 400 `protocol_version`; no header
/// (curl, probes) is served; every answer names the server's version.
#[tokio::test]
async fn the_protocol_version_is_checked_and_told() {
    use nimbus::protocol::{PROTOCOL_HEADER, PROTOCOL_VERSION};
    let fx = Fx::new().await;
    let token = fx.token("alice").await;
    let pull = || {
        fx.http
            .get(fx.api("sync/pull"))
            .bearer_auth(&token)
            .query(&[("cursor", "0")])
    };
    let server_version = |r: &reqwest::Response| {
        r.headers()
            .get(PROTOCOL_HEADER)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let ours = PROTOCOL_VERSION.to_string();

    // No header, or this version: served, and told the version.
    let health = fx
        .http
        .get(format!("{}/healthz", fx.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(server_version(&health), Some(ours.clone()));
    let r = pull().send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server_version(&r), Some(ours.clone()));
    let r = pull().header(PROTOCOL_HEADER, &ours).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Another version: 400 with both versions in the message, the server's
    // version in the header.
    let newer = PROTOCOL_VERSION + 1;
    let r = pull().header(PROTOCOL_HEADER, newer).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(server_version(&r), Some(ours.clone()));
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.error, "protocol_version");
    assert!(
        body.message
            .contains(&format!("protocol {PROTOCOL_VERSION}"))
            && body.message.contains(&format!("protocol {newer}"))
            && body.message.contains("upgrade the server"),
        "{}",
        body.message
    );
    // A client of protocol 1 (mtime_ns only, no owners or special
    // nodes) is told to upgrade itself.
    let r = pull().header(PROTOCOL_HEADER, "1").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: ErrorBody = r.json().await.unwrap();
    assert!(
        body.message.contains("upgrade this client"),
        "{}",
        body.message
    );
    // Before anything else: no token, a login (nothing registered), a
    // health probe that sends one, a header that is not a number.
    let r = fx
        .http
        .get(fx.api("sync/pull"))
        .header(PROTOCOL_HEADER, newer)
        .send()
        .await
        .unwrap();
    let (s, code) = error_of(r).await;
    assert_eq!((s.as_u16(), code.as_str()), (400, "protocol_version"));
    let r = fx
        .http
        .post(fx.api("auth/login"))
        .header(PROTOCOL_HEADER, newer)
        .json(&serde_json::json!({"user": "alice", "password": "alice-pw", "device": "x"}))
        .send()
        .await
        .unwrap();
    let (s, code) = error_of(r).await;
    assert_eq!((s.as_u16(), code.as_str()), (400, "protocol_version"));
    let meta = server::meta_store::open(None, &fx.cfg.data_dir)
        .await
        .unwrap();
    let alice = meta.account_by_name("alice").await.unwrap().unwrap();
    assert_eq!(meta.list_devices(alice.id).await.unwrap().len(), 1);
    meta.close().await;
    let r = fx
        .http
        .get(format!("{}/healthz", fx.url))
        .header(PROTOCOL_HEADER, "0")
        .send()
        .await
        .unwrap();
    let (s, code) = error_of(r).await;
    assert_eq!((s.as_u16(), code.as_str()), (400, "protocol_version"));
    let r = pull().header(PROTOCOL_HEADER, "v1").send().await.unwrap();
    let body: ErrorBody = r.json().await.unwrap();
    assert_eq!(body.error, "protocol_version");
    assert!(body.message.contains("\"v1\""), "{}", body.message);

    // HttpRemote sends this version: its requests are served.
    fx.remote("alice", "laptop")
        .await
        .pull(0, 10)
        .await
        .unwrap();
}

/// A client that never finishes a request's head (slowloris) loses the
/// connection after the header read timeout; other clients are served.
#[tokio::test]
async fn a_request_head_never_finished_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::loopback(dir.path().join("data"));
    cfg.header_read_timeout = std::time::Duration::from_millis(500);
    let running = server::start(cfg).await.unwrap();
    let addr = running.local_addr();
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let opened = std::time::Instant::now();
    // Meanwhile a well-behaved client is answered.
    let ok = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert!(ok.status().is_success());
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        slow.read_to_end(&mut buf),
    )
    .await
    .expect("the unfinished request's connection stayed open");
    // Closed (with or without a 408 first), and not before the timeout.
    assert!(read.is_ok() || buf.is_empty(), "{read:?}");
    assert!(opened.elapsed() >= std::time::Duration::from_millis(400));
    running.shutdown().await.unwrap();
}
