//! The follower's run loop with a remote without push: it polls, shows
//! no push in the status, and answers `sync --wait --pull` requests only
//! with a pull that started after them.

use super::*;
use crate::sync::uploader::Uploader;
use crate::vfs::meta::ROOT_INO;
use crate::vfs::test_support::{two_devices, TwoDevices};

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_is_answered_once_the_server_s_changes_are_applied() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(Follower::new(b.clone(), rb.clone()).run(stop.clone()));

    // A uploads a file; the server has it before B asks.
    let (_, fh) = a.create(ROOT_INO, b"f", 0o644, true).unwrap();
    a.write(fh, 0, b"hello").ready().unwrap();
    a.release(fh).unwrap();
    let up = Uploader::new(a.clone(), ra.clone());
    while up.run_once().await.unwrap() {}

    let ticket = b.status().request_pull();
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.status().pulls().1 < ticket {
        assert!(
            Instant::now() < deadline,
            "the pull request was not answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Answered means applied: no waiting after it.
    assert!(b.lookup(ROOT_INO, b"f").is_ok());
    assert_eq!(
        b.status().snapshot().push,
        None,
        "an in-process remote has no push: the status says the mount polls"
    );
    stop.cancel();
    task.await.unwrap();
}

/// An editor's save on A (a new file renamed over the document): applied
/// on B in the order `replacements_first` gives, the document's name is
/// never missing in between, and B ends with the new content.
#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_file_never_leaves_its_name_missing_while_applied() {
    use crate::vfs::test_support::{pull, read_all, sync, write_file};
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    write_file(&a, ROOT_INO, "doc", b"version 0");
    sync(&a, &ra).await;
    pull(&b, &rb).await;
    let cursor = b.cursor().unwrap();
    for v in 1..=3 {
        write_file(&a, ROOT_INO, ".doc.tmp", format!("version {v}").as_bytes());
        a.rename(ROOT_INO, b".doc.tmp", ROOT_INO, b"doc", false)
            .unwrap();
    }
    sync(&a, &ra).await;

    let page = rb.pull(cursor, 1000).await.unwrap().changes;
    assert!(
        page.iter().any(|r| r.deleted),
        "the old document's delete is in the page"
    );
    let order = replacements_first(&page);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..page.len()).collect::<Vec<_>>(),
        "each record once"
    );
    for i in order {
        b.apply_remote(&page[i]).unwrap();
        assert!(
            b.lookup(ROOT_INO, b"doc").is_ok(),
            "doc missing after applying {:?}",
            page[i]
        );
    }
    let doc = b.lookup(ROOT_INO, b"doc").unwrap().ino;
    assert_eq!(read_all(&b, doc).await, b"version 3");
}
