//! Editors save by writing a temporary file and renaming it over the
//! document, often many times a second. A temporary file the server has
//! never had, replaced again while its content was being uploaded, must
//! never reach the server (and so other devices) without its content: the
//! break test saw another device read the document empty after such saves,
//! or not find it while the new file waited for its upload.

use super::test_support::{names, pull, read_all, sync, two_devices, write_file, TwoDevices};
use super::*;
use crate::remote::faulty::FaultyRemote;
use crate::remote::Remote;
use crate::sync::uploader::Uploader;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_file_replaced_during_its_first_upload_never_reaches_the_server_empty() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let slow = Arc::new(FaultyRemote::new(ra.clone()));
    let slow_dyn: Arc<dyn Remote> = slow.clone();
    write_file(&a, ROOT_INO, "doc", b"version 0");
    sync(&a, &ra).await;

    // Save 1: a temporary file renamed over the document.
    write_file(&a, ROOT_INO, ".doc.tmp", b"version 1");
    a.rename(ROOT_INO, b".doc.tmp", ROOT_INO, b"doc", false)
        .unwrap();
    slow.set_latency(Duration::from_millis(400));
    let up = Uploader::new(a.clone(), slow_dyn.clone());
    let round = tokio::spawn(async move { up.run_once().await.unwrap() });
    // While save 1's chunks are on their way, save 2 replaces it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while slow.calls().missing_chunks == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the round never uploaded"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    write_file(&a, ROOT_INO, ".doc.tmp", b"version 2");
    a.rename(ROOT_INO, b".doc.tmp", ROOT_INO, b"doc", false)
        .unwrap();
    round.await.unwrap();
    slow.clear();

    // The other device has the document all along, never empty.
    pull(&b, &rb).await;
    let doc = b.lookup(ROOT_INO, b"doc").unwrap().ino;
    let mid = read_all(&b, doc).await;
    assert!(mid.starts_with(b"version "), "{mid:?}");

    // Whatever the server has now, no file of it lacks its content.
    let records = rb.pull(0, 1000).await.unwrap().changes;
    for r in records.iter().filter(|r| !r.deleted) {
        if r.meta.kind == crate::protocol::NodeKind::File {
            assert!(
                r.meta.content.as_ref().is_some_and(|c| c.size() > 0),
                "{} reached the server without its content: {r:?}",
                r.name
            );
        }
    }
    sync(&a, &ra).await;
    pull(&b, &rb).await;
    let doc = b.lookup(ROOT_INO, b"doc").unwrap().ino;
    assert_eq!(read_all(&b, doc).await, b"version 2");
    // One document: no save was taken for a concurrent one.
    for vfs in [&a, &b] {
        assert_eq!(names(vfs, ROOT_INO), vec!["doc".to_string()]);
    }
}
