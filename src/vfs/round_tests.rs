//! Upload rounds with a large backlog (many small files at once): the
//! uploader takes [`MAX_ROUND`] records per round, sends them as ordered
//! commit requests of [`MAX_COMMIT_OPS`], each only once the server took
//! the one before, and a refusal still sets aside exactly one record.
//! The core against the server's real rules (`InProcessRemote`) behind a
//! `FaultyRemote` that counts the calls.

use super::test_support::open_vfs;
use super::*;
use crate::protocol::MAX_COMMIT_OPS;
use crate::remote::faulty::FaultyRemote;
use crate::remote::in_process::InProcessServer;
use crate::remote::Remote;
use crate::sync::uploader::{Uploader, BATCH, MAX_ROUND};

struct Dev {
    vfs: Arc<Vfs>,
    faulty: Arc<FaultyRemote>,
    remote: Arc<dyn Remote>,
    _cache: tempfile::TempDir,
}

async fn device(server: &InProcessServer) -> Dev {
    let remote = server.device("laptop").await.unwrap();
    let device = remote.device_id();
    let faulty = Arc::new(FaultyRemote::new(Arc::new(remote)));
    let cache = tempfile::tempdir().unwrap();
    let remote: Arc<dyn Remote> = faulty.clone();
    let vfs = open_vfs(cache.path(), device, "laptop", remote.clone());
    Dev {
        vfs,
        faulty,
        remote,
        _cache: cache,
    }
}

/// Creates `n` empty files in the root; their inodes.
fn create_empty(vfs: &Vfs, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let name = format!("f{i:05}");
            let (attr, fh) = vfs.create(ROOT_INO, name.as_bytes(), 0o644, true).unwrap();
            vfs.release(fh).unwrap();
            attr.ino
        })
        .collect()
}

fn quarantined(vfs: &Vfs) -> Vec<(u64, meta::Quarantined)> {
    vfs.meta
        .journal()
        .quarantined(vfs.meta.kv().as_ref())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_goes_in_large_rounds_of_ordered_requests() {
    let server = InProcessServer::new().await.unwrap();
    let dev = device(&server).await;
    let inos = create_empty(&dev.vfs, MAX_ROUND + BATCH / 2);
    let before = dev.vfs.journal_len();
    assert!(before >= inos.len() as u64);
    let up = Uploader::new(dev.vfs.clone(), dev.remote.clone());

    assert!(up.run_once().await.unwrap());
    // One round of MAX_ROUND records, in requests of MAX_COMMIT_OPS.
    assert_eq!(dev.vfs.journal_len(), before - MAX_ROUND as u64);
    assert_eq!(
        dev.faulty.calls().commit,
        MAX_ROUND.div_ceil(MAX_COMMIT_OPS) as u64
    );
    // What is left is a small backlog: one round takes it all.
    assert!(dev.vfs.journal_len() <= BATCH as u64);
    assert!(up.run_once().await.unwrap());
    assert_eq!(dev.vfs.journal_len(), 0);
    assert!(!up.run_once().await.unwrap());
    for ino in inos {
        let i = dev.vfs.inode(ino).unwrap().unwrap();
        assert!(i.on_server() && !i.dirty, "{ino} not uploaded");
    }
}

/// A refused op in the first request of a full round: no later request of
/// the round goes out (the next is sent only once the server took the one
/// before), exactly that record is set aside, and the next rounds send
/// the rest.
#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_stops_the_round_before_its_later_requests() {
    let server = InProcessServer::new().await.unwrap();
    let dev = device(&server).await;
    let inos = create_empty(&dev.vfs, MAX_ROUND);
    let before = dev.vfs.journal_len();
    let up = Uploader::new(dev.vfs.clone(), dev.remote.clone());

    dev.faulty.refuse_next_commit(3);
    assert!(up.run_once().await.unwrap());
    assert_eq!(dev.faulty.calls().commit, 1);
    let q = quarantined(&dev.vfs);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].1.op.ino(), inos[3]);
    // None of the refused request was applied; everything else stays.
    assert_eq!(dev.vfs.journal_len(), before - 1);
    assert!(!dev.vfs.inode(inos[0]).unwrap().unwrap().on_server());

    while up.run_once().await.unwrap() {}
    assert_eq!(dev.vfs.journal_len(), 0);
    assert_eq!(quarantined(&dev.vfs).len(), 1);
    for (i, ino) in inos.iter().enumerate() {
        let on_server = dev.vfs.inode(*ino).unwrap().unwrap().on_server();
        assert_eq!(on_server, i != 3, "file {i}");
    }
}
