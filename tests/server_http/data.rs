//! Body limits, account isolation, commit and pull, file content, users.

use super::*;

#[tokio::test]
async fn oversized_bodies_are_413() {
    let fx = Fx::new().await;
    let token = fx.token("alice").await;
    let id = ChunkId::of(b"x");
    // Over the body limit.
    let big = vec![0u8; MAX_CHUNK_LEN as usize + 65 * 1024];
    let r = fx
        .http
        .put(fx.api(&format!("chunks/{id}")))
        .bearer_auth(&token)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    // The largest chunk, and a commit over the generic 1 MiB JSON limit,
    // both fit their routes' limits.
    let remote = fx.remote("alice", "laptop").await;
    let largest = random(MAX_CHUNK_LEN as usize, 5);
    remote
        .put_chunk(ChunkId::of(&largest), largest.clone())
        .await
        .unwrap();
    assert_eq!(
        remote.get_chunk(ChunkId::of(&largest)).await.unwrap(),
        largest
    );
    let target = "t".repeat(4000);
    let ops: Vec<CommitOp> = (0..300)
        .map(|i| {
            let meta = NodeMeta {
                symlink_target: Some(target.clone()),
                ..NodeMeta::new(
                    NodeKind::Symlink,
                    0o777,
                    nimbus::protocol::Timestamp::from_ns(0),
                )
            };
            upsert(
                NodeId::random(),
                &VersionVector::new(),
                NodeId::ROOT,
                &format!("l{i}"),
                meta,
            )
        })
        .collect();
    assert!(serde_json::to_vec(&ops).unwrap().len() > 1 << 20);
    assert_eq!(remote.commit(ops).await.unwrap().len(), 300);
    // Within the body limit but over the chunk limit.
    let big = random(MAX_CHUNK_LEN as usize + 1, 3);
    let r = fx
        .http
        .put(fx.api(&format!("chunks/{}", ChunkId::of(&big))))
        .bearer_auth(&token)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // A zstd bomb: tiny on the wire, over the limit once decoded.
    let bomb = vec![0u8; MAX_CHUNK_LEN as usize + 1];
    let r = fx
        .http
        .put(fx.api(&format!("chunks/{}", ChunkId::of(&bomb))))
        .bearer_auth(&token)
        .header(header::CONTENT_ENCODING, "zstd")
        .body(zstd::bulk::compress(&bomb, 3).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // JSON over 1 MiB.
    let r = fx
        .http
        .post(fx.api("auth/login"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(format!(
            r#"{{"user":"alice","password":"{}","device":"x"}}"#,
            "p".repeat(2 << 20)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // Too many ids in one missing-chunks query.
    let ids: Vec<ChunkId> = (0..=MAX_MISSING_QUERY as u32)
        .map(|i| ChunkId::of(&i.to_le_bytes()))
        .collect();
    let r = fx
        .http
        .post(fx.api("chunks/missing"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "ids": ids }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // HttpRemote splits such queries itself.
    assert_eq!(remote.missing_chunks(&ids).await.unwrap().len(), ids.len());
    // Malformed JSON is a 400 with an ErrorBody.
    let r = fx
        .http
        .post(fx.api("sync/commit"))
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
}

#[tokio::test]
async fn accounts_are_isolated() {
    let fx = Fx::new().await;
    let alice = fx.remote("alice", "laptop").await;
    let bob = fx.remote("bob", "laptop").await;
    let secret = random(20_000, 4);
    let id = ChunkId::of(&secret);
    alice.put_chunk(id, secret.clone()).await.unwrap();
    let folder = NodeId::random();
    let r = alice
        .commit(vec![
            upsert(
                folder,
                &VersionVector::new(),
                NodeId::ROOT,
                "private",
                dir_meta(),
            ),
            upsert(
                NodeId::random(),
                &VersionVector::new(),
                folder,
                "s.bin",
                file(content_of(&[&secret])),
            ),
        ])
        .await
        .unwrap();
    assert_eq!(r.len(), 2);

    // Bob knows the hash, but cannot read the chunk...
    assert!(matches!(
        bob.get_chunk(id).await,
        Err(RemoteError::NotFound(_))
    ));
    // ...must upload it himself...
    assert_eq!(bob.missing_chunks(&[id]).await.unwrap(), vec![id]);
    // ...cannot reference it in a commit...
    let e = bob
        .commit(vec![upsert(
            NodeId::random(),
            &VersionVector::new(),
            NodeId::ROOT,
            "mine",
            file(content_of(&[&secret])),
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RemoteError::Rejected { status: 409, code, .. } if code == "missing_chunks"),
        "{e:?}"
    );
    // ...cannot put things in Alice's folder...
    let e = bob
        .commit(vec![upsert(
            NodeId::random(),
            &VersionVector::new(),
            folder,
            "x",
            dir_meta(),
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RemoteError::Rejected { status: 409, code, .. } if code == "parent_not_found"),
        "{e:?}"
    );
    // ...sees none of her changes or paths.
    assert!(bob.pull(0, 100).await.unwrap().changes.is_empty());
    let r = fx
        .http
        .get(fx.api("files/content"))
        .query(&[("path", "/private/s.bin")])
        .bearer_auth(fx.token("bob").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // After uploading it, Bob has it too (stored once).
    bob.put_chunk(id, secret.clone()).await.unwrap();
    assert_eq!(bob.get_chunk(id).await.unwrap(), secret);
    assert!(bob.missing_chunks(&[id]).await.unwrap().is_empty());
}

#[tokio::test]
async fn commit_pull_round_trip_and_conflicts() {
    let fx = Fx::new().await;
    let laptop = fx.remote("alice", "laptop").await;
    let phone = fx.remote("alice", "phone").await;
    let v1 = text(5000);
    laptop
        .put_chunk(ChunkId::of(&v1), v1.clone())
        .await
        .unwrap();
    let (docs, report) = (NodeId::random(), NodeId::random());
    let empty = VersionVector::new();
    let r = laptop
        .commit(vec![
            upsert(docs, &empty, NodeId::ROOT, "docs", dir_meta()),
            upsert(report, &empty, docs, "report.txt", file(content_of(&[&v1]))),
        ])
        .await
        .unwrap();
    let report_v1 = applied(&r[1]).clone();
    assert_eq!(report_v1.vv.get(&laptop.device_id()), 1);

    // The phone pulls everything, in order.
    let p = phone.pull(0, 1000).await.unwrap();
    assert_eq!(
        p.changes.iter().map(|n| n.node_id).collect::<Vec<_>>(),
        vec![docs, report]
    );
    assert!(!p.has_more);
    assert_eq!(p.cursor, report_v1.seq);
    assert_eq!(p.changes[1], report_v1);
    let p1 = phone.pull(0, 1).await.unwrap();
    assert!(p1.has_more);
    assert_eq!(p1.changes.len(), 1);
    let p2 = phone.pull(p1.cursor, 1).await.unwrap();
    assert_eq!(p2.changes[0].node_id, report);
    assert!(!p2.has_more);
    assert!(phone.pull(p.cursor, 1000).await.unwrap().changes.is_empty());
    // A cursor past the log (the server was reset) is refused.
    let e = phone.pull(p.cursor + 1, 1000).await.unwrap_err();
    assert!(
        matches!(&e, RemoteError::Rejected { status: 409, code, .. } if code == "cursor_ahead"),
        "{e:?}"
    );

    // Both edit report.txt from v1: the second is a conflict copy.
    let (pv, lv) = (text(6000), text(7000));
    phone.put_chunk(ChunkId::of(&pv), pv.clone()).await.unwrap();
    laptop
        .put_chunk(ChunkId::of(&lv), lv.clone())
        .await
        .unwrap();
    let r = phone
        .commit(vec![upsert(
            report,
            &report_v1.vv,
            docs,
            "report.txt",
            file(content_of(&[&pv])),
        )])
        .await
        .unwrap();
    applied(&r[0]);
    let r = laptop
        .commit(vec![upsert(
            report,
            &report_v1.vv,
            docs,
            "report.txt",
            file(content_of(&[&lv])),
        )])
        .await
        .unwrap();
    let CommitOutcome::ConflictCopy { node, copy } = &r[0] else {
        panic!("expected a conflict copy, got {:?}", r[0]);
    };
    assert_eq!(node.meta.content, Some(content_of(&[&pv])));
    assert!(
        copy.name.starts_with("report (conflict laptop "),
        "{}",
        copy.name
    );
    assert!(copy.name.ends_with(").txt"));
    // The phone sees the copy arrive.
    let p = phone.pull(p.cursor, 1000).await.unwrap();
    assert!(p.changes.iter().any(|n| n.node_id == copy.node_id));

    // A delete shows up as a tombstone with its last place.
    let current = phone.pull(0, 1000).await.unwrap();
    let copy_now = current
        .changes
        .iter()
        .find(|n| n.node_id == copy.node_id)
        .unwrap();
    let r = laptop
        .commit(vec![CommitOp {
            node_id: copy.node_id,
            base: copy_now.vv.clone(),
            seen: None,
            change: NodeChange::Delete,
        }])
        .await
        .unwrap();
    assert!(applied(&r[0]).deleted);
    let p = phone.pull(current.cursor, 1000).await.unwrap();
    assert_eq!(p.changes.len(), 1);
    let gone = &p.changes[0];
    assert!(gone.deleted);
    assert_eq!(
        (gone.parent, gone.name.as_str()),
        (Some(docs), copy.name.as_str())
    );
    // Deleting something unknown.
    let r = laptop
        .commit(vec![CommitOp {
            node_id: NodeId::random(),
            base: empty.clone(),
            seen: None,
            change: NodeChange::Delete,
        }])
        .await
        .unwrap();
    assert!(matches!(r[0], CommitOutcome::AlreadyGone));
    // A bad name is refused with a 400 and nothing is stored.
    let before = laptop.pull(0, 1000).await.unwrap().cursor;
    let e = laptop
        .commit(vec![
            upsert(NodeId::random(), &empty, NodeId::ROOT, "ok", dir_meta()),
            upsert(NodeId::random(), &empty, NodeId::ROOT, "a/b", dir_meta()),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, RemoteError::Rejected { status: 400, code, op: Some(1), .. } if code == "invalid_name"),
        "{e:?}"
    );
    assert_eq!(laptop.pull(0, 1000).await.unwrap().cursor, before);

    // State survives a restart.
    let mut fx = fx;
    fx.restart().await;
    let again = fx.remote("alice", "tablet").await;
    let p = again.pull(0, 1000).await.unwrap();
    assert_eq!(p.cursor, before);
    // Chunks belong to the account, not the device.
    assert_eq!(again.get_chunk(ChunkId::of(&lv)).await.unwrap(), lv);
    let laptop_again = fx.remote("alice", "laptop-2").await;
    laptop_again
        .put_chunk(ChunkId::of(&v1), v1.clone())
        .await
        .unwrap();
    assert_eq!(laptop_again.get_chunk(ChunkId::of(&v1)).await.unwrap(), v1);
}

#[tokio::test]
async fn file_content_with_and_without_range() {
    let fx = Fx::new().await;
    let remote = fx.remote("alice", "laptop").await;
    let parts = [random(1000, 10), random(1500, 11), random(700, 12)];
    for p in &parts {
        remote.put_chunk(ChunkId::of(p), p.clone()).await.unwrap();
    }
    let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let (d, f) = (NodeId::random(), NodeId::random());
    let empty = VersionVector::new();
    let content = content_of(&[&parts[0], &parts[1], &parts[2]]);
    remote
        .commit(vec![
            upsert(d, &empty, NodeId::ROOT, "my docs", dir_meta()),
            upsert(f, &empty, d, "b ü.bin", file(content.clone())),
            upsert(
                NodeId::random(),
                &empty,
                NodeId::ROOT,
                "empty",
                file(content_of(&[])),
            ),
        ])
        .await
        .unwrap();
    let token = fx.token("alice").await;
    let get = |path: &str, range: Option<&str>| {
        let mut req = fx
            .http
            .get(fx.api("files/content"))
            .query(&[("path", path)])
            .bearer_auth(&token);
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        req.send()
    };

    let r = get("/my docs/b ü.bin", None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "3200");
    assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
    assert_eq!(
        r.headers()[header::ETAG].to_str().unwrap(),
        format!("\"{}\"", content.hash().to_hex())
    );
    assert_eq!(r.bytes().await.unwrap(), whole);

    // A range across all three chunks.
    let r = get("/my docs/b ü.bin", Some("bytes=900-2600"))
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 900-2600/3200");
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "1701");
    assert_eq!(r.bytes().await.unwrap(), &whole[900..=2600]);
    // Suffix and open-ended ranges.
    let r = get("/my docs/b ü.bin", Some("bytes=-5")).await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), &whole[3195..]);
    let r = get("/my docs/b ü.bin", Some("bytes=3000-")).await.unwrap();
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 3000-3199/3200");
    assert_eq!(r.bytes().await.unwrap(), &whole[3000..]);
    // Unsatisfiable.
    let r = get("/my docs/b ü.bin", Some("bytes=3200-")).await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */3200");
    // An empty file.
    let r = get("/empty", None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());

    // Errors.
    for (path, status, code) in [
        ("/my docs/nope", 404, "not_found"),
        ("/nope/b ü.bin", 404, "not_found"),
        ("/my docs/b ü.bin/deeper", 404, "not_found"),
        ("my docs/b ü.bin", 400, "invalid_path"),
        ("/my docs/../my docs/b ü.bin", 400, "invalid_path"),
        ("/my docs//b ü.bin", 400, "invalid_path"),
        ("/my docs", 400, "not_a_file"),
        ("/", 400, "not_a_file"),
    ] {
        let r = get(path, None).await.unwrap();
        assert_eq!(
            error_of(r).await,
            (StatusCode::from_u16(status).unwrap(), code.into()),
            "{path}"
        );
    }
    let r = fx
        .http
        .get(fx.api("files/content"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(r).await,
        (StatusCode::BAD_REQUEST, "bad_request".into())
    );
}

#[tokio::test]
async fn users_and_shutdown() {
    let fx = Fx::new().await;
    let e = server::add_user(&fx.cfg, "alice", "x").await.unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    for bad in ["", "al ice", "a/b", &"a".repeat(65)] {
        let e = server::add_user(&fx.cfg, bad, "x").await.unwrap_err();
        assert!(e.to_string().contains("invalid user name"), "{e}");
    }
    // ensure_user: creates once, then leaves it (and its password) alone.
    server::ensure_user(&fx.cfg, "local", "pw1").await.unwrap();
    server::ensure_user(&fx.cfg, "local", "pw2").await.unwrap();
    assert!(login(&fx.url, "local", "pw1", "box").await.is_ok());
    assert!(login(&fx.url, "local", "pw2", "box").await.is_err());

    let remote = fx.remote("alice", "laptop").await;
    let Fx { server, .. } = fx;
    server.unwrap().shutdown().await.unwrap();
    // After shutdown the remote reports the server unreachable.
    let e = remote.pull(0, 10).await.unwrap_err();
    assert!(matches!(e, RemoteError::Unreachable(_)), "{e:?}");
    assert!(e.is_transient());
}
