//! The hub alone: fan-out per account, no leak across accounts, cleanup
//! of an account's channel with its last subscription.

use super::*;
use std::time::Duration;

const A: AccountId = AccountId(1);
const B: AccountId = AccountId(2);

/// The next head a subscription sees, or `None` within a short wait.
async fn next(sub: &mut Subscription) -> Option<AccountHead> {
    match tokio::time::timeout(Duration::from_millis(200), sub.receiver().changed()).await {
        Ok(Ok(())) => Some(*sub.receiver().borrow_and_update()),
        _ => None,
    }
}

#[tokio::test]
async fn every_subscriber_of_the_account_hears_and_no_other() {
    let hub = ChangeHub::new();
    let mut a1 = hub.subscribe(A, 5);
    let mut a2 = hub.subscribe(A, 3);
    let mut b1 = hub.subscribe(B, 9);
    // The head at subscription is there at once, as seen or not.
    assert_eq!(a1.receiver().borrow_and_update().cursor, 5);
    assert_eq!(a2.receiver().borrow_and_update().cursor, 5, "newest wins");
    assert_eq!(b1.receiver().borrow_and_update().cursor, 9);

    let dev = DeviceId::random();
    hub.changed(A, 6, Some(dev));
    for sub in [&mut a1, &mut a2] {
        let h = next(sub).await.expect("a subscriber of A hears A's change");
        assert_eq!((h.cursor, h.device), (6, Some(dev)));
    }
    assert_eq!(next(&mut b1).await, None, "B hears nothing of A");

    // Older or equal cursors (commits reporting out of order) are not news.
    hub.changed(A, 6, None);
    hub.changed(A, 4, None);
    assert_eq!(next(&mut a1).await, None);

    // A burst coalesces to the newest head.
    for c in 7..=50 {
        hub.changed(A, c, None);
    }
    assert_eq!(next(&mut a1).await.map(|h| h.cursor), Some(50));
    assert_eq!(next(&mut a1).await, None);
}

#[tokio::test]
async fn session_changes_wake_the_account_only() {
    let hub = ChangeHub::new();
    let mut a = hub.subscribe(A, 1);
    let mut b = hub.subscribe(B, 1);
    a.receiver().borrow_and_update();
    b.receiver().borrow_and_update();
    hub.sessions_changed(A);
    let h = next(&mut a).await.expect("woken");
    assert_eq!((h.cursor, h.sessions), (1, 1));
    assert_eq!(next(&mut b).await, None);
}

#[tokio::test]
async fn the_last_subscription_drops_the_channel() {
    let hub = ChangeHub::new();
    assert!(!hub.wants(A));
    let a1 = hub.subscribe(A, 0);
    let a2 = hub.subscribe(A, 0);
    let b1 = hub.subscribe(B, 0);
    assert_eq!(hub.accounts(), 2);
    assert!(hub.wants(A));
    drop(a1);
    assert!(hub.wants(A), "a2 still listens");
    drop(a2);
    assert!(!hub.wants(A));
    assert_eq!(hub.accounts(), 1);
    // Publishing to an account nobody listens to is a no-op, and a new
    // subscription starts from the head it is given.
    hub.changed(A, 100, None);
    let mut a3 = hub.subscribe(A, 7);
    assert_eq!(a3.receiver().borrow_and_update().cursor, 7);
    drop(b1);
    drop(a3);
    assert_eq!(hub.accounts(), 0);
}

#[tokio::test]
async fn concurrent_subscribe_and_drop_leave_no_channel_behind() {
    let hub = ChangeHub::new();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let hub = hub.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..200u64 {
                let sub = hub.subscribe(AccountId(i % 3), j);
                hub.changed(AccountId(i % 3), j + 1, None);
                drop(sub);
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(hub.accounts(), 0);
}
