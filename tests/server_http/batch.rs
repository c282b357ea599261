//! `POST /api/v1/chunks/batch` on the wire: framing, bounds, access.

use super::*;
use nimbus::protocol::{decode_batch, BATCH_CONTENT_TYPE, MAX_BATCH_CHUNKS};

#[tokio::test]
async fn a_batch_answers_frames_with_the_single_get_access_rules() {
    let fx = Fx::new().await;
    let alice = fx.remote("alice", "laptop").await;
    let (a, b) = (text(5000), random(300_000, 7));
    let (ia, ib) = (ChunkId::of(&a), ChunkId::of(&b));
    alice.put_chunk(ia, a.clone()).await.unwrap();
    alice.put_chunk(ib, b.clone()).await.unwrap();
    let token = fx.token("alice").await;
    let post = |token: &str, ids: Vec<String>| {
        fx.http
            .post(fx.api("chunks/batch"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "ids": ids }))
            .send()
    };

    // Frames in first-appearance order, repeats once, plain bytes.
    let resp = post(&token, vec![ib.to_hex(), ia.to_hex(), ib.to_hex()])
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], BATCH_CONTENT_TYPE);
    assert_eq!(
        resp.headers()[header::CONTENT_LENGTH],
        (36 * 2 + a.len() + b.len()).to_string().as_str()
    );
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..32], &ib.0);
    assert_eq!(
        decode_batch(&[ib, ia], &body).unwrap(),
        vec![(ib, b.clone()), (ia, a.clone())]
    );
    let empty = post(&token, vec![]).await.unwrap();
    assert_eq!(empty.status(), StatusCode::OK);
    assert!(empty.bytes().await.unwrap().is_empty());

    // Unknown and another account's chunks: the single GET's answer.
    let unknown = ChunkId::of(b"nobody uploaded this");
    let single = fx
        .http
        .get(fx.api(&format!("chunks/{}", unknown.to_hex())))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let single = error_of(single).await;
    let resp = post(&token, vec![ia.to_hex(), unknown.to_hex()])
        .await
        .unwrap();
    assert_eq!(error_of(resp).await, single);
    let bob = fx.token("bob").await;
    let resp = post(&bob, vec![ia.to_hex()]).await.unwrap();
    assert_eq!(
        error_of(resp).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let resp = post("not-a-token", vec![ia.to_hex()]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = post(&token, vec!["xyz".into()]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Too many ids: 413 with its own code.
    let many = (0..=MAX_BATCH_CHUNKS)
        .map(|i| ChunkId::of(&i.to_le_bytes()).to_hex())
        .collect();
    let resp = post(&token, many).await.unwrap();
    assert_eq!(
        error_of(resp).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large".into())
    );

    // A chunk the store lost is the single GET's 500, not a short answer.
    std::fs::remove_file(fx.chunk_path(&ia)).unwrap();
    let resp = post(&token, vec![ia.to_hex(), ib.to_hex()]).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(matches!(
        alice.get_chunks(&[ia, ib]).await,
        Err(RemoteError::Server { status: 500, .. })
    ));
    assert_eq!(alice.get_chunks(&[ib]).await.unwrap(), vec![(ib, b)]);

    // Requests are counted under their route.
    let metrics = fx
        .http
        .get(format!("{}/metrics", fx.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("nimbus_http_requests_total")
                && l.contains("route=\"/api/v1/chunks/batch\"")
                && l.contains("status=\"200\"")),
        "{metrics}"
    );
}
