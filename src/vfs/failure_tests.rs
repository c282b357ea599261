//! Upload failures never drop work (client-core issue scenarios 1 and 2):
//! the core against the server's real rules (`InProcessRemote`) behind a
//! `FaultyRemote`.

use super::test_support::{open_vfs, overwrite};
use super::*;
use crate::remote::faulty::FaultyRemote;
use crate::remote::in_process::{InProcessRemote, InProcessServer};
use crate::remote::Remote;
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;
use std::time::{Duration, Instant};

struct Dev {
    vfs: Arc<Vfs>,
    faulty: Arc<FaultyRemote>,
    remote: Arc<dyn Remote>,
    cache: tempfile::TempDir,
    device: DeviceId,
}

async fn device(server: &InProcessServer, name: &str) -> Dev {
    let remote: InProcessRemote = server.device(name).await.unwrap();
    let device = remote.device_id();
    let faulty = Arc::new(FaultyRemote::new(Arc::new(remote)));
    let cache = tempfile::tempdir().unwrap();
    let remote: Arc<dyn Remote> = faulty.clone();
    let vfs = open_vfs(cache.path(), device, name, remote.clone());
    Dev {
        vfs,
        faulty,
        remote,
        cache,
        device,
    }
}

impl Dev {
    /// Applies everything the server has (one pull).
    async fn pull(&self) {
        Follower::new(self.vfs.clone(), self.remote.clone())
            .pull_all()
            .await
            .unwrap();
    }

    fn start(
        &self,
    ) -> (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let stop = tokio_util::sync::CancellationToken::new();
        let task =
            tokio::spawn(Uploader::new(self.vfs.clone(), self.remote.clone()).run(stop.clone()));
        (stop, task)
    }
    /// Closes the store and opens it again, as a remount does.
    fn reopen(self) -> Dev {
        let Dev {
            vfs,
            faulty,
            remote,
            cache,
            device,
        } = self;
        drop(vfs);
        let vfs = open_vfs(cache.path(), device, "laptop", remote.clone());
        Dev {
            vfs,
            faulty,
            remote,
            cache,
            device,
        }
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write(vfs: &Vfs, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = vfs.create(ROOT_INO, name.as_bytes(), 0o644, true).unwrap();
    assert_eq!(vfs.write(fh, 0, data).ready().unwrap(), data.len() as u32);
    vfs.release(fh).unwrap();
    attr.ino
}

async fn read(vfs: &Vfs, ino: u64) -> Vec<u8> {
    let fh = vfs.open_file(ino, false, false).unwrap();
    let size = vfs.getattr(ino).unwrap().size;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        out.extend(vfs.read(fh, out.len() as u64, 1 << 20).await.unwrap());
    }
    vfs.release(fh).unwrap();
    out
}

fn random(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::Rng::fill(&mut rand::rng(), &mut v[..]);
    v
}

/// Random bytes of which some chunk is larger than `limit` (so a body
/// limit of `limit` refuses its upload; chunk sizes vary with the bytes).
fn random_with_chunk_over(len: usize, limit: usize) -> Vec<u8> {
    loop {
        let v = random(len);
        let largest = crate::chunking::chunk_bytes(&v)
            .iter()
            .map(|(_, r)| r.len())
            .max()
            .unwrap_or(0);
        if largest > limit {
            return v;
        }
    }
}

/// 401 (refresh refused, device revoked): uploads pause without dropping
/// anything or spinning, and resume once credentials work again.
#[tokio::test(flavor = "multi_thread")]
async fn unauthorized_pauses_without_dropping_or_spinning() {
    let server = InProcessServer::new().await.unwrap();
    let dev = device(&server, "laptop").await;
    for i in 0..3 {
        write(&dev.vfs, &format!("f{i}"), b"data");
    }
    dev.faulty.set_unauthorized_from_call(Some(1));
    let (stop, task) = dev.start();
    until("the unauthorized state", || {
        matches!(
            dev.vfs.status().snapshot().connection,
            Connection::Unauthorized(_)
        )
    })
    .await;
    let calls = dev.faulty.calls().total();
    tokio::time::sleep(Duration::from_millis(800)).await; // measures the call rate
    assert!(
        dev.faulty.calls().total() - calls <= 3,
        "paused uploads must not retry in a tight loop"
    );
    assert_eq!(
        dev.vfs.meta.journal_len(),
        3,
        "nothing may leave the journal"
    );
    assert_eq!(dev.vfs.pending_below(ROOT_INO, 10).unwrap().count, 3);
    dev.faulty.clear();
    until("the journal to drain", || dev.vfs.meta.journal_len() == 0).await;
    let other = server.device("desktop").await.unwrap();
    let names: Vec<String> = other
        .pull(0, 100)
        .await
        .unwrap()
        .changes
        .into_iter()
        .filter(|n| !n.deleted && !n.node_id.is_root())
        .map(|n| n.name)
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    stop.cancel();
    task.await.unwrap();
}

/// A proxy's 1 MiB body limit (413): uploads pause as `misconfigured`
/// with the reason, survive a remount, and drain once the limit is lifted;
/// the other device then reads every byte.
#[tokio::test(flavor = "multi_thread")]
async fn body_limit_pauses_survives_remount_and_drains_when_lifted() {
    let server = InProcessServer::new().await.unwrap();
    let dev = device(&server, "laptop").await;
    let big = random_with_chunk_over(5 << 20, 1 << 20);
    let ino = write(&dev.vfs, "big.bin", &big);
    dev.faulty.set_chunk_body_limit(Some(1 << 20));
    let (stop, task) = dev.start();
    until("the misconfigured state", || {
        matches!(&dev.vfs.status().snapshot().connection, Connection::Misconfigured(r) if r.contains("413"))
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(dev.vfs.meta.journal_len(), 1);
    let dev = dev.reopen();
    assert_eq!(
        dev.vfs.getxattr(ino, b"user.nimbus.state").unwrap(),
        b"pending"
    );
    let p = dev.vfs.pending_below(ROOT_INO, 10).unwrap();
    assert_eq!((p.count, p.bytes), (1, big.len() as u64), "{p:?}");
    dev.faulty.set_chunk_body_limit(None);
    let (stop, task) = dev.start();
    until("the journal to drain", || dev.vfs.meta.journal_len() == 0).await;
    stop.cancel();
    task.await.unwrap();
    let b = device(&server, "desktop").await;
    b.pull().await;
    let on_b = b.vfs.lookup(ROOT_INO, b"big.bin").unwrap();
    assert_eq!(
        blake3::hash(&read(&b.vfs, on_b.ino).await),
        blake3::hash(&big)
    );
}

/// Scenario 2: the refused record is exactly the one set aside, even when
/// an older record (a file open for writing) sits before it.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_op_sets_aside_exactly_its_record() {
    let server = InProcessServer::new().await.unwrap();
    let dev = device(&server, "laptop").await;
    let vfs = &dev.vfs;
    let (open_attr, open_fh) = vfs.create(ROOT_INO, b"open.log", 0o644, true).unwrap();
    vfs.write(open_fh, 0, b"first").ready().unwrap();
    write(vfs, "refused", b"r");
    dev.faulty.refuse_next_commit(0); // the round holds only `refused`
    let up = Uploader::new(vfs.clone(), dev.remote.clone());
    while up.run_once().await.unwrap() {}
    vfs.release(open_fh).unwrap();
    while up.run_once().await.unwrap() {}
    let q = vfs
        .meta
        .journal()
        .quarantined(vfs.meta.kv().as_ref())
        .unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].1.path, "refused");
    assert!(q[0].1.reason.contains("invalid_name"), "{}", q[0].1.reason);
    assert_eq!(
        vfs.getxattr(open_attr.ino, b"user.nimbus.state").unwrap(),
        b"cached"
    );
    let refused = vfs.lookup(ROOT_INO, b"refused").unwrap().ino;
    assert_eq!(
        vfs.getxattr(refused, b"user.nimbus.state").unwrap(),
        b"failed"
    );
    // The next local change of the file sends it again.
    vfs.setattr(
        refused,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .ready()
    .unwrap();
    while up.run_once().await.unwrap() {}
    assert_eq!(
        vfs.getxattr(refused, b"user.nimbus.state").unwrap(),
        b"cached"
    );
    assert_eq!(vfs.pending_below(ROOT_INO, 10).unwrap().count, 0);
}

/// Scenario 1: a later remote edit of a file whose own change was refused
/// still reaches it; the refused content lives on as a conflict copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_remote_edit_reaches_a_file_whose_change_was_refused() {
    let server = InProcessServer::new().await.unwrap();
    let a = device(&server, "laptop").await;
    let b = device(&server, "desktop").await;
    let ino = write(&a.vfs, "doc.txt", b"v1");
    let up_a = Uploader::new(a.vfs.clone(), a.remote.clone());
    while up_a.run_once().await.unwrap() {}
    // A edits; the server refuses it.
    overwrite(&a.vfs, ino, b"v2 from a");
    a.faulty.refuse_next_commit(0);
    while up_a.run_once().await.unwrap() {}
    assert_eq!(
        a.vfs.getxattr(ino, b"user.nimbus.state").unwrap(),
        b"failed"
    );
    // B edits the same file.
    b.pull().await;
    let on_b = b.vfs.lookup(ROOT_INO, b"doc.txt").unwrap().ino;
    overwrite(&b.vfs, on_b, b"v3 from b");
    let up_b = Uploader::new(b.vfs.clone(), b.remote.clone());
    while up_b.run_once().await.unwrap() {}
    // A pulls: the file shows B's edit, A's refused content is beside it.
    a.pull().await;
    assert_eq!(read(&a.vfs, ino).await, b"v3 from b");
    let names: Vec<String> = a
        .vfs
        .readdir(ROOT_INO, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let copy = names
        .iter()
        .find(|n| n.starts_with("doc (conflict laptop "))
        .unwrap_or_else(|| panic!("no conflict copy in {names:?}"));
    let copy_ino = a.vfs.lookup(ROOT_INO, copy.as_bytes()).unwrap().ino;
    assert_eq!(read(&a.vfs, copy_ino).await, b"v2 from a");
    assert!(!a.vfs.meta.journal().is_quarantined(ino));
    // The copy is an ordinary new file: it reaches the server.
    while up_a.run_once().await.unwrap() {}
    b.pull().await;
    let copy_on_b = b.vfs.lookup(ROOT_INO, copy.as_bytes()).unwrap().ino;
    assert_eq!(read(&b.vfs, copy_on_b).await, b"v2 from a");
    // Marked as a conflict copy of the file, on both devices.
    let doc = a.vfs.meta.inode(ino).unwrap().unwrap().node_id;
    for (vfs, copy) in [(&a.vfs, copy_ino), (&b.vfs, copy_on_b)] {
        let mark = vfs.conflict_of(copy).unwrap().expect("a conflict mark");
        assert_eq!((mark.of, mark.device.as_str()), (doc, "laptop"));
    }
}

/// Scenario 4: a remote change arriving while a file is open for writing
/// waits instead of dropping the working copy a write may be landing in;
/// the write then ends as a conflict copy beside the remote version.
#[tokio::test(flavor = "multi_thread")]
async fn a_remote_change_waits_while_the_file_is_open_for_writing() {
    let server = InProcessServer::new().await.unwrap();
    let a = device(&server, "laptop").await;
    let b = device(&server, "desktop").await;
    let ino = write(&a.vfs, "doc.txt", b"version one");
    let up_a = Uploader::new(a.vfs.clone(), a.remote.clone());
    while up_a.run_once().await.unwrap() {}
    b.pull().await;
    let on_b = b.vfs.lookup(ROOT_INO, b"doc.txt").unwrap().ino;
    overwrite(&b.vfs, on_b, b"version two");
    let up_b = Uploader::new(b.vfs.clone(), b.remote.clone());
    while up_b.run_once().await.unwrap() {}
    // A opens for writing and has its working copy ready...
    let fh = a.vfs.open_file(ino, true, false).unwrap();
    a.vfs.prepare_write(ino).await.unwrap();
    let rec = b.remote.pull(0, 100).await.unwrap().changes;
    let rec = rec.iter().find(|n| n.name == "doc.txt").unwrap();
    // ...when B's edit arrives: it must wait.
    assert!(!a.vfs.apply_remote(rec).unwrap(), "the record must wait");
    assert_eq!(a.vfs.write(fh, 0, b"VERSION").ready().unwrap(), 7);
    a.vfs.release(fh).unwrap();
    while up_a.run_once().await.unwrap() {}
    a.pull().await;
    assert_eq!(read(&a.vfs, ino).await, b"version two");
    let copy = a
        .vfs
        .readdir(ROOT_INO, None, 100)
        .unwrap()
        .into_iter()
        .find(|e| e.name.starts_with("doc (conflict laptop "))
        .expect("A's write kept as a conflict copy");
    assert_eq!(read(&a.vfs, copy.ino).await, b"VERSION one");
}

/// A proxy's body limit holds back only the content it refuses: a small
/// file (and a rename of an uploaded one) written after a big one reach
/// the server meanwhile, and the big one follows once the limit is lifted.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_big_file_does_not_hold_back_the_rest() {
    let server = InProcessServer::new().await.unwrap();
    let dev = device(&server, "laptop").await;
    let up = Uploader::new(dev.vfs.clone(), dev.remote.clone());
    let old = write(&dev.vfs, "old.txt", b"uploaded before");
    while up.run_once().await.unwrap() {}
    dev.faulty.set_chunk_body_limit(Some(1 << 20));
    let big = random_with_chunk_over(3 << 20, 1 << 20);
    write(&dev.vfs, "big.bin", &big);
    let fh = dev.vfs.open_file(old, true, true).unwrap();
    dev.vfs
        .write(fh, 0, &random_with_chunk_over(2 << 20, 1 << 20))
        .await
        .unwrap();
    dev.vfs.release(fh).unwrap();
    dev.vfs
        .rename(ROOT_INO, b"old.txt", ROOT_INO, b"renamed.txt", false)
        .unwrap();
    write(&dev.vfs, "small.txt", b"small");
    while up.run_once().await.unwrap_or(false) {}
    let b = device(&server, "desktop").await;
    b.pull().await;
    let names: Vec<String> = b
        .vfs
        .readdir(ROOT_INO, None, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"small.txt".to_string()), "{names:?}");
    assert!(names.contains(&"renamed.txt".to_string()), "{names:?}");
    assert!(
        !names.contains(&"big.bin".to_string()),
        "no empty stand-in: {names:?}"
    );
    assert!(matches!(
        dev.vfs.status().snapshot().connection,
        Connection::Misconfigured(_)
    ));
    assert_eq!(dev.vfs.pending_below(ROOT_INO, 10).unwrap().count, 2);
    // The limit goes; the next tries send the rest.
    dev.faulty.set_chunk_body_limit(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    while dev.vfs.meta.journal_len() > 0 {
        assert!(std::time::Instant::now() < deadline, "did not drain");
        if !up.run_once().await.unwrap_or(true) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    b.pull().await;
    let on_b = b.vfs.lookup(ROOT_INO, b"big.bin").unwrap();
    assert_eq!(
        blake3::hash(&read(&b.vfs, on_b.ino).await),
        blake3::hash(&big)
    );
    assert_eq!(dev.vfs.status().snapshot().connection, Connection::Online);
}

/// A held-back file that is deleted no longer keeps uploads paused.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_held_back_file_clears_the_pause() {
    let server = InProcessServer::new().await.unwrap();
    let dev = device(&server, "laptop").await;
    let up = Uploader::new(dev.vfs.clone(), dev.remote.clone());
    dev.faulty.set_chunk_body_limit(Some(1 << 20));
    write(
        &dev.vfs,
        "big.bin",
        &random_with_chunk_over(3 << 20, 1 << 20),
    );
    write(&dev.vfs, "small.txt", b"small");
    while up.run_once().await.unwrap_or(false) {}
    assert!(matches!(
        dev.vfs.status().snapshot().connection,
        Connection::Misconfigured(_)
    ));
    dev.vfs.unlink(ROOT_INO, b"big.bin").unwrap();
    write(&dev.vfs, "other.txt", b"more");
    while up.run_once().await.unwrap() {}
    assert_eq!(dev.vfs.status().snapshot().connection, Connection::Online);
    assert_eq!(dev.vfs.meta.journal_len(), 0);
}

/// While a large file goes up, what `sync --wait` shows as left shrinks.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_left_shrink_while_a_large_file_uploads() {
    let server = InProcessServer::new().await.unwrap();
    let dev = device(&server, "laptop").await;
    let size = 48usize << 20;
    write(&dev.vfs, "large.bin", &random(size));
    dev.faulty.set_latency(Duration::from_millis(40));
    let up = Uploader::new(dev.vfs.clone(), dev.remote.clone());
    let round = tokio::spawn(async move { up.run_once().await.unwrap() });
    let mut seen = Vec::new();
    while !round.is_finished() {
        seen.push(dev.vfs.pending_below(ROOT_INO, 1).unwrap().bytes);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    round.await.unwrap();
    assert!(
        seen.iter().any(|&left| left > 0 && left < size as u64),
        "bytes left went from all to nothing at once: {:?}",
        seen.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert_eq!(dev.vfs.pending_below(ROOT_INO, 1).unwrap().bytes, 0);
}
