//! Suite case: passwords, last-seen, platform, reinstatement, session
//! ends and refresh-token rotation.

use super::{account, Store, T0};
use crate::server::meta_store::{NewToken, Rotation, TokenKind};

fn token(seed: u8, t: &NewToken) -> NewToken {
    NewToken {
        hash: [seed; 32],
        ..t.clone()
    }
}

pub(crate) async fn sessions(store: Store) {
    let a = account(&store, "alice").await;
    let b = account(&store, "bob").await;
    // Passwords.
    store.set_password_hash(a, "$new").await.unwrap();
    assert_eq!(
        store.account(a).await.unwrap().unwrap().password_hash,
        "$new"
    );
    assert_eq!(store.account(b).await.unwrap().unwrap().name, "bob");
    // Last seen and platform.
    let d = store.create_device(a, "laptop", T0).await.unwrap();
    let d2 = store.create_device(a, "phone", T0).await.unwrap();
    let e = store.create_device(b, "desk", T0).await.unwrap();
    let fresh = store.device(d).await.unwrap().unwrap();
    assert_eq!((fresh.last_seen_ns, fresh.platform.as_str()), (None, ""));
    store
        .touch_device(d, Some("nimbus/1 (linux)"), T0 + 5)
        .await
        .unwrap();
    store.touch_device(d, None, T0 + 3).await.unwrap();
    let seen = store.device(d).await.unwrap().unwrap();
    assert_eq!(seen.last_seen_ns, Some(T0 + 5), "last seen never goes back");
    assert_eq!(seen.platform, "nimbus/1 (linux)");
    // Reinstating.
    assert!(store.revoke_device(a, d).await.unwrap());
    assert!(!store.reinstate_device(b, d).await.unwrap());
    assert!(store.device(d).await.unwrap().unwrap().revoked);
    assert!(store.reinstate_device(a, d).await.unwrap());
    assert!(!store.device(d).await.unwrap().unwrap().revoked);
    // Rotation.
    let r1 = NewToken {
        hash: [1; 32],
        account: a,
        device: d,
        kind: TokenKind::Refresh,
        expires_ns: T0 + 1000,
    };
    store.insert_token(&r1).await.unwrap();
    let next = [
        NewToken {
            kind: TokenKind::Access,
            ..token(2, &r1)
        },
        token(3, &r1),
    ];
    let got = store
        .rotate_refresh_token(&[1; 32], b"sealed", &next, T0 + 10, T0 + 500)
        .await
        .unwrap();
    assert_eq!(got, Rotation::Rotated);
    let used = store.token(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(used.used_ns, Some(T0 + 10));
    assert_eq!(used.successor.as_deref(), Some(&b"sealed"[..]));
    assert_eq!(used.expires_ns, T0 + 500, "kept only for reuse detection");
    assert_eq!(
        store.token(&[2; 32]).await.unwrap().unwrap().kind,
        TokenKind::Access
    );
    assert_eq!(store.token(&[3; 32]).await.unwrap().unwrap().used_ns, None);
    // A second rotation of the same token changes nothing.
    let again = store
        .rotate_refresh_token(&[1; 32], b"other", &[token(4, &r1)], T0 + 20, T0 + 500)
        .await
        .unwrap();
    assert_eq!(
        again,
        Rotation::AlreadyUsed {
            used_ns: T0 + 10,
            successor: Some(b"sealed".to_vec())
        }
    );
    assert!(store.token(&[4; 32]).await.unwrap().is_none());
    assert_eq!(
        store
            .rotate_refresh_token(&[9; 32], b"x", &[], T0, T0)
            .await
            .unwrap(),
        Rotation::Unknown
    );
    // Access tokens are not refresh tokens.
    assert_eq!(
        store
            .rotate_refresh_token(&[2; 32], b"x", &[], T0, T0)
            .await
            .unwrap(),
        Rotation::Unknown
    );
    // Ending sessions: other devices of the account, then one device.
    for (seed, dev, acc) in [(5, d2, a), (6, e, b)] {
        store
            .insert_token(&NewToken {
                account: acc,
                device: dev,
                ..token(seed, &r1)
            })
            .await
            .unwrap();
    }
    assert_eq!(store.delete_other_devices_tokens(a, d).await.unwrap(), 1);
    assert!(store.token(&[5; 32]).await.unwrap().is_none());
    assert!(store.token(&[6; 32]).await.unwrap().is_some(), "bob's");
    assert!(
        store.token(&[3; 32]).await.unwrap().is_some(),
        "this device's"
    );
    assert_eq!(store.delete_device_tokens(d).await.unwrap(), 3);
    assert!(store.token(&[3; 32]).await.unwrap().is_none());
}
