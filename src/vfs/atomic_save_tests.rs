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

/// A remote that records every op sent and, while `hold` is set, keeps a
/// commit in flight until it is cleared.
struct Recording {
    inner: Arc<dyn Remote>,
    ops: parking_lot::Mutex<Vec<crate::protocol::CommitOp>>,
    hold: std::sync::atomic::AtomicBool,
    in_flight: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Remote for Recording {
    async fn missing_chunks(
        &self,
        ids: &[crate::protocol::ChunkId],
    ) -> Result<Vec<crate::protocol::ChunkId>, crate::remote::RemoteError> {
        self.inner.missing_chunks(ids).await
    }
    async fn put_chunk(
        &self,
        id: crate::protocol::ChunkId,
        data: bytes::Bytes,
    ) -> Result<(), crate::remote::RemoteError> {
        self.inner.put_chunk(id, data).await
    }
    async fn get_chunk(
        &self,
        id: crate::protocol::ChunkId,
    ) -> Result<bytes::Bytes, crate::remote::RemoteError> {
        self.inner.get_chunk(id).await
    }
    async fn get_chunks(
        &self,
        ids: &[crate::protocol::ChunkId],
    ) -> Result<Vec<(crate::protocol::ChunkId, bytes::Bytes)>, crate::remote::RemoteError> {
        self.inner.get_chunks(ids).await
    }
    async fn commit(
        &self,
        ops: Vec<crate::protocol::CommitOp>,
    ) -> Result<Vec<crate::protocol::CommitOutcome>, crate::remote::RemoteError> {
        use std::sync::atomic::Ordering;
        self.ops.lock().extend(ops.iter().cloned());
        self.in_flight.store(true, Ordering::SeqCst);
        while self.hold.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = self.inner.commit(ops).await;
        self.in_flight.store(false, Ordering::SeqCst);
        r
    }
    async fn pull(
        &self,
        cursor: u64,
        limit: u32,
    ) -> Result<crate::protocol::PullResponse, crate::remote::RemoteError> {
        self.inner.pull(cursor, limit).await
    }
    async fn space(&self) -> Result<crate::protocol::SpaceReport, crate::remote::RemoteError> {
        self.inner.space().await
    }
}

/// A new file renamed, then replaced, while its create is in flight: the
/// later op of it (its rename, sent before its delete) carries the content
/// the server has, never an empty file (found with 10 ms saves: one
/// version of size 0 on the server).
#[tokio::test(flavor = "multi_thread")]
async fn a_file_replaced_while_its_create_is_in_flight_is_never_sent_empty() {
    use std::sync::atomic::Ordering;
    let (TwoDevices { ra, a, .. }, _held) = two_devices().await;
    let rec = Arc::new(Recording {
        inner: ra.clone(),
        ops: Default::default(),
        hold: true.into(),
        in_flight: false.into(),
    });
    let remote: Arc<dyn Remote> = rec.clone();
    write_file(&a, ROOT_INO, "doc", b"version 0");
    sync(&a, &ra).await;
    write_file(&a, ROOT_INO, ".doc.tmp", b"version 1");
    let up = Uploader::new(a.clone(), remote.clone());
    let round = tokio::spawn(async move { up.run_once().await.unwrap() });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !rec.in_flight.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "no commit was sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // While its create is in flight: renamed over the document, then
    // replaced by the next save.
    a.rename(ROOT_INO, b".doc.tmp", ROOT_INO, b"doc", false)
        .unwrap();
    write_file(&a, ROOT_INO, ".doc.tmp", b"version 2");
    a.rename(ROOT_INO, b".doc.tmp", ROOT_INO, b"doc", false)
        .unwrap();
    rec.hold.store(false, Ordering::SeqCst);
    round.await.unwrap();
    sync(&a, &remote).await;
    for op in rec.ops.lock().iter() {
        if let crate::protocol::NodeChange::Upsert { name, meta, .. } = &op.change {
            if meta.kind == crate::protocol::NodeKind::File {
                assert!(
                    meta.content.as_ref().is_some_and(|c| c.size() > 0),
                    "{name} sent without its content: {op:?}"
                );
            }
        }
    }
    let doc = a.lookup(ROOT_INO, b"doc").unwrap().ino;
    assert_eq!(read_all(&a, doc).await, b"version 2");
}
