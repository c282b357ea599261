//! Refresh-token rotation (grace window, reuse detection), devices
//! (list, revoke, reinstate), logout and password change, over HTTP.

use super::*;
use nimbus::protocol::{DeviceList, LoginResponse, PasswordChanged};
use nimbus::server::meta_store::{MetaStore, NewToken, SqliteMetaStore, TokenKind};

impl Fx {
    async fn refresh(&self, token: &str) -> reqwest::Response {
        self.http
            .post(self.api("auth/refresh"))
            .json(&serde_json::json!({ "refresh_token": token }))
            .send()
            .await
            .unwrap()
    }

    async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.api(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn post_as(&self, token: &str, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.api(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn devices(&self, token: &str) -> DeviceList {
        let r = self.get_as(token, "devices").await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }
}

async fn refreshed(r: reqwest::Response) -> LoginResponse {
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn refresh_rotates_a_retry_gets_the_same_answer_and_a_replay_ends_the_session() {
    let fx = Fx::new().await;
    let first = login(&fx.url, "alice", "alice-pw", "laptop").await.unwrap();
    let r1 = refreshed(fx.refresh(&first.refresh_token).await).await;
    assert_ne!(r1.refresh_token, first.refresh_token);
    assert_ne!(r1.access_token, first.access_token);
    // The same refresh again within the grace window (a client that
    // crashed before saving r1): the very same answer.
    let retry = refreshed(fx.refresh(&first.refresh_token).await).await;
    assert_eq!(
        (&retry.access_token, &retry.refresh_token, retry.device_id),
        (&r1.access_token, &r1.refresh_token, r1.device_id)
    );
    assert!(retry.expires_in <= 900 && retry.expires_in >= 890);
    assert_eq!(fx.get_as(&r1.access_token, "sync/pull").await.status(), 200);
    // r1 is used: now the first token is a replay, not a retry.
    let r2 = refreshed(fx.refresh(&r1.refresh_token).await).await;
    let (s, code) = error_of(fx.refresh(&first.refresh_token).await).await;
    assert_eq!((s.as_u16(), code.as_str()), (401, "refresh_token_reused"));
    // The whole session of the device ended, the newest tokens included.
    let (s, _) = error_of(fx.refresh(&r2.refresh_token).await).await;
    assert_eq!(s, 401);
    let (s, _) = error_of(fx.get_as(&r2.access_token, "sync/pull").await).await;
    assert_eq!(s, 401);
    // A password login as the same device starts a new session.
    let again = nimbus::remote::http::login_with(
        &fx.url,
        "alice",
        "alice-pw",
        "laptop",
        Some(first.device_id),
    )
    .await
    .unwrap();
    assert_eq!(again.device_id, first.device_id);
    assert_eq!(
        fx.get_as(&again.access_token, "sync/pull").await.status(),
        200
    );

    // A rotated token replayed after the grace window is reuse, even if
    // its successor was never used: planted as rotated two minutes ago.
    let (old, hash) = server::auth::new_token(TokenKind::Refresh);
    let meta = SqliteMetaStore::open(&fx.cfg.data_dir.join("meta.sqlite"))
        .await
        .unwrap();
    let alice = meta.account_by_name("alice").await.unwrap().unwrap();
    let now = server::now_ns();
    meta.insert_token(&NewToken {
        hash,
        account: alice.id,
        device: again.device_id,
        kind: TokenKind::Refresh,
        expires_ns: now + 3_600_000_000_000,
    })
    .await
    .unwrap();
    meta.rotate_refresh_token(
        &hash,
        &[0; 64],
        &[],
        now - 120_000_000_000,
        now + 3_600_000_000_000,
    )
    .await
    .unwrap();
    meta.close().await;
    let (s, code) = error_of(fx.refresh(&old).await).await;
    assert_eq!((s.as_u16(), code.as_str()), (401, "refresh_token_reused"));
    let (s, _) = error_of(fx.get_as(&again.access_token, "sync/pull").await).await;
    assert_eq!(s, 401, "the replay ended the session");
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
        metrics.contains("nimbus_refresh_token_reuse_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn devices_are_listed_revoked_at_once_and_reinstated_by_a_login() {
    let fx = Fx::new().await;
    let laptop = login(&fx.url, "alice", "alice-pw", "laptop").await.unwrap();
    let phone = login(&fx.url, "alice", "alice-pw", "phone").await.unwrap();
    let bob = login(&fx.url, "bob", "bob-pw", "desk").await.unwrap();

    let list = fx.devices(&laptop.access_token).await.devices;
    let names: Vec<_> = list
        .iter()
        .map(|d| (d.name.as_str(), d.current, d.revoked))
        .collect();
    assert_eq!(names, [("laptop", true, false), ("phone", false, false)]);
    assert!(list[0].platform.starts_with("nimbus/"), "{:?}", list[0]);
    let now = server::now_ns() / 1_000_000_000;
    assert!(list
        .iter()
        .all(|d| d.last_seen.is_some_and(|t| (now - t).abs() < 60)));
    assert!(list.iter().all(|d| (now - d.created).abs() < 60));

    // Another account's device is not found; a bad id is a 400.
    let path = format!("devices/{}/revoke", phone.device_id);
    let (s, _) = error_of(
        fx.post_as(&bob.access_token, &path, serde_json::json!({}))
            .await,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = error_of(
        fx.post_as(
            &laptop.access_token,
            "devices/nope/revoke",
            serde_json::json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);

    let r = fx
        .post_as(&laptop.access_token, &path, serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 204);
    // Its next request and its refresh: 401 device_revoked.
    let (s, code) = error_of(fx.get_as(&phone.access_token, "sync/pull").await).await;
    assert_eq!((s.as_u16(), code.as_str()), (401, "device_revoked"));
    let (s, code) = error_of(fx.refresh(&phone.refresh_token).await).await;
    assert_eq!((s.as_u16(), code.as_str()), (401, "device_revoked"));
    let list = fx.devices(&laptop.access_token).await.devices;
    assert!(list[1].revoked && !list[0].revoked);
    assert_eq!(fx.devices(&bob.access_token).await.devices.len(), 1);

    // A password login as that device reinstates it, with new tokens
    // only: nothing issued before the revocation works again.
    let back = nimbus::remote::http::login_with(
        &fx.url,
        "alice",
        "alice-pw",
        "ignored",
        Some(phone.device_id),
    )
    .await
    .unwrap();
    assert_eq!(back.device_id, phone.device_id);
    assert_eq!(
        fx.get_as(&back.access_token, "sync/pull").await.status(),
        200
    );
    let (s, code) = error_of(fx.get_as(&phone.access_token, "sync/pull").await).await;
    assert_eq!((s.as_u16(), code.as_str()), (401, "unauthorized"));
    let list = fx.devices(&laptop.access_token).await.devices;
    assert_eq!((list[1].name.as_str(), list[1].revoked), ("phone", false));
    // Bob cannot take the device over by naming it.
    let stolen =
        nimbus::remote::http::login_with(&fx.url, "bob", "bob-pw", "x", Some(phone.device_id))
            .await;
    assert!(
        matches!(stolen, Err(RemoteError::Rejected { status: 403, .. })),
        "{stolen:?}"
    );
}

#[tokio::test]
async fn logout_and_password_change_end_sessions() {
    let fx = Fx::new().await;
    let laptop = login(&fx.url, "alice", "alice-pw", "laptop").await.unwrap();
    let phone = login(&fx.url, "alice", "alice-pw", "phone").await.unwrap();
    let tablet = login(&fx.url, "alice", "alice-pw", "tablet").await.unwrap();
    let bob = login(&fx.url, "bob", "bob-pw", "desk").await.unwrap();

    // Logout: the tablet's tokens die, and it shows as revoked.
    let r = fx
        .post_as(&tablet.access_token, "auth/logout", serde_json::json!({}))
        .await;
    assert_eq!(r.status(), 204);
    let (s, _) = error_of(fx.get_as(&tablet.access_token, "sync/pull").await).await;
    assert_eq!(s, 401);
    let (s, _) = error_of(fx.refresh(&tablet.refresh_token).await).await;
    assert_eq!(s, 401);
    assert!(fx.devices(&laptop.access_token).await.devices[2].revoked);

    // Password change: needs the current password.
    let change = |current: &str, new: &str| serde_json::json!({"current_password": current, "new_password": new});
    let (s, code) = error_of(
        fx.post_as(
            &laptop.access_token,
            "account/password",
            change("wrong", "n3w"),
        )
        .await,
    )
    .await;
    assert_eq!((s.as_u16(), code.as_str()), (403, "wrong_password"));
    let (s, _) = error_of(
        fx.post_as(
            &laptop.access_token,
            "account/password",
            change("alice-pw", ""),
        )
        .await,
    )
    .await;
    assert_eq!(s, 400);
    let r = fx
        .post_as(
            &laptop.access_token,
            "account/password",
            change("alice-pw", "n3w"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let done: PasswordChanged = r.json().await.unwrap();
    assert_eq!(
        done.signed_out_devices, 1,
        "the phone (the tablet was revoked)"
    );
    // Other devices are signed out; this one and other accounts are not.
    let (s, _) = error_of(fx.get_as(&phone.access_token, "sync/pull").await).await;
    assert_eq!(s, 401);
    let (s, _) = error_of(fx.refresh(&phone.refresh_token).await).await;
    assert_eq!(s, 401);
    assert_eq!(
        fx.get_as(&laptop.access_token, "sync/pull").await.status(),
        200
    );
    assert_eq!(
        fx.get_as(&bob.access_token, "sync/pull").await.status(),
        200
    );
    assert!(matches!(
        login(&fx.url, "alice", "alice-pw", "x").await,
        Err(RemoteError::Unauthorized(_))
    ));
    let back =
        nimbus::remote::http::login_with(&fx.url, "alice", "n3w", "x", Some(phone.device_id))
            .await
            .unwrap();
    assert_eq!(back.device_id, phone.device_id);
}
