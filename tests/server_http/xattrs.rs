//! Extended attributes over HTTP: the wire form (name → base64), kept
//! across a restart and returned by pull; refused with 400 `invalid_node`
//! when a rule is broken; described by the OpenAPI document.

use super::*;

/// A commit body creating folder `name` whose meta carries `xattrs`
/// (raw JSON, as another client would write it).
fn body_with(name: &str, xattrs: serde_json::Value) -> (NodeId, serde_json::Value) {
    let id = NodeId::random();
    let op = upsert(id, &VersionVector::new(), NodeId::ROOT, name, dir_meta());
    let mut op = serde_json::to_value(op).unwrap();
    op["change"]["meta"]["xattrs"] = xattrs;
    (id, serde_json::json!({ "ops": [op] }))
}

async fn commit_raw(fx: &Fx, token: &str, body: &serde_json::Value) -> reqwest::Response {
    fx.http
        .post(fx.api("sync/commit"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn pulled_meta(fx: &Fx, token: &str, id: NodeId) -> serde_json::Value {
    let page: serde_json::Value = fx
        .http
        .get(fx.api("sync/pull"))
        .bearer_auth(token)
        .query(&[("cursor", "0")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node_id"] == serde_json::json!(id))
        .expect("the node is pulled")["meta"]
        .clone()
}

#[tokio::test]
async fn attributes_round_trip_on_the_wire_and_survive_a_restart() {
    let mut fx = Fx::new().await;
    let token = fx.token("alice").await;
    let xattrs = serde_json::json!({
        "user.bin": "AP8K",
        "user.empty": "",
        "trusted.t": "MQ==",
        "security.selinux": "dTpyAA==",
    });
    let (id, body) = body_with("d", xattrs.clone());
    let r = commit_raw(&fx, &token, &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["results"][0]["node"]["meta"]["xattrs"], xattrs);
    assert_eq!(pulled_meta(&fx, &token, id).await["xattrs"], xattrs);

    fx.restart().await;
    let token = fx.token("alice").await;
    assert_eq!(pulled_meta(&fx, &token, id).await["xattrs"], xattrs);
    // Through the client's own types: bytes, not text.
    let remote = fx.remote("alice", "phone").await;
    let page = remote.pull(0, 100).await.unwrap();
    let rec = page.changes.iter().find(|c| c.node_id == id).unwrap();
    assert_eq!(rec.meta.xattrs.get("user.bin"), Some(&[0u8, 255, 10][..]));
    // A node without attributes carries no `xattrs` field at all.
    let (plain, body) = body_with("plain", serde_json::json!({}));
    assert_eq!(
        commit_raw(&fx, &token, &body).await.status(),
        StatusCode::OK
    );
    assert!(pulled_meta(&fx, &token, plain)
        .await
        .get("xattrs")
        .is_none());
}

#[tokio::test]
async fn bad_attributes_are_400_and_nothing_is_stored() {
    let fx = Fx::new().await;
    let token = fx.token("alice").await;
    let long = format!("user.{}", "n".repeat(251));
    let big = base64_of(&vec![0u8; 65_537]);
    let over_total = base64_of(&vec![0u8; 4_096]);
    for (xattrs, code) in [
        (
            serde_json::json!({"system.posix_acl_access": ""}),
            "invalid_node",
        ),
        (
            serde_json::json!({"user.nimbus.state": "eA=="}),
            "invalid_node",
        ),
        (serde_json::json!({ long: "" }), "invalid_node"),
        (serde_json::json!({"user.big": big}), "invalid_node"),
        (serde_json::json!({"user.a": over_total}), "invalid_node"),
        (serde_json::json!({"user.a": "not base64!"}), "bad_request"),
    ] {
        let (_, body) = body_with("bad", xattrs.clone());
        let (status, error) = error_of(commit_raw(&fx, &token, &body).await).await;
        assert_eq!(
            (status, error.as_str()),
            (StatusCode::BAD_REQUEST, code),
            "{xattrs}"
        );
    }
    let page = fx
        .remote("alice", "phone")
        .await
        .pull(0, 100)
        .await
        .unwrap();
    assert!(
        page.changes.iter().all(|c| c.name != "bad"),
        "nothing stored"
    );
}

#[tokio::test]
async fn openapi_describes_the_attributes() {
    let fx = Fx::new().await;
    let doc: serde_json::Value = fx
        .http
        .get(fx.api("openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let x = &doc["components"]["schemas"]["NodeMeta"]["properties"]["xattrs"];
    assert_eq!(x["type"], "object", "{x}");
    assert_eq!(x["additionalProperties"]["format"], "byte", "{x}");
    assert_eq!(
        doc["info"]["x-nimbus-protocol"],
        nimbus::protocol::PROTOCOL_VERSION
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
