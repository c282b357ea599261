//! Batched cold reads of small files, with the in-memory remote counting
//! single and batch requests.

use super::*;
use crate::remote::memory::{folder_meta, MemoryRemote};
use crate::remote::suite::file_meta;
use crate::remote::Remote;
use crate::sync::follower::Follower;
use bytes::Bytes;
use std::sync::atomic::Ordering::SeqCst;

/// A remote holding folder `d` with `files` (name, bytes; one chunk
/// each) and a subfolder `sub`, and a fresh device that has pulled it.
struct Cold {
    remote: Arc<MemoryRemote>,
    vfs: Arc<Vfs>,
    dir: u64,
    _cache: tempfile::TempDir,
}

async fn cold(files: &[(String, Bytes)]) -> Cold {
    let device = DeviceId::random();
    let remote = Arc::new(MemoryRemote::new(device));
    let d = NodeId::random();
    let record = |node_id, parent, name: &str, meta| NodeRecord {
        node_id,
        parent: Some(parent),
        name: name.into(),
        links: Vec::new(),
        deleted: false,
        meta,
        vv: Default::default(),
        seq: 0,
    };
    remote.inject(record(d, NodeId::ROOT, "d", folder_meta()));
    remote.inject(record(NodeId::random(), d, "sub", folder_meta()));
    for (name, data) in files {
        remote
            .put_chunk(ChunkId::of(data), data.clone())
            .await
            .unwrap();
        remote.inject(record(NodeId::random(), d, name, file_meta(data)));
    }
    let cache = tempfile::tempdir().unwrap();
    let vfs = super::super::test_support::open_vfs(cache.path(), device, "t", remote.clone());
    Follower::new(vfs.clone(), remote.clone())
        .pull_all()
        .await
        .unwrap();
    let dir = vfs.lookup(meta::ROOT_INO, b"d").unwrap().ino;
    Cold {
        remote,
        vfs,
        dir,
        _cache: cache,
    }
}

/// `n` files `f0000`.. of `len` distinct bytes each.
fn small_files(n: usize, len: usize) -> Vec<(String, Bytes)> {
    (0..n)
        .map(|i| {
            let line = format!("file {i:04} ");
            let data: Vec<u8> = line.bytes().cycle().take(len).collect();
            (format!("f{i:04}"), Bytes::from(data))
        })
        .collect()
}

async fn read_all(vfs: &Vfs, ino: u64) -> VfsResult<Vec<u8>> {
    let fh = vfs.open_file(ino, false, false)?;
    let size = vfs.getattr(ino)?.size;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        match vfs.read(fh, out.len() as u64, 128 * 1024).await {
            Ok(part) if !part.is_empty() => out.extend_from_slice(&part),
            Ok(_) => break,
            Err(e) => {
                vfs.release(fh)?;
                return Err(e);
            }
        }
    }
    vfs.release(fh)?;
    Ok(out)
}

/// Reads every file of `files` in name order and checks its bytes.
async fn read_in_order(c: &Cold, files: &[(String, Bytes)]) {
    let mut sorted: Vec<_> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, data) in sorted {
        let ino = c.vfs.lookup(c.dir, name.as_bytes()).unwrap().ino;
        assert_eq!(read_all(&c.vfs, ino).await.unwrap(), data[..], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_cold_small_files_cost_one_batch_and_a_large_one_its_own_path() {
    let mut files = small_files(50, 4096);
    // A file over the threshold among them, by name in the middle.
    let big: Bytes = (0..300 * 1024u32)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    assert!(big.len() as u64 > SMALL_FILE_MAX);
    files.push(("f0025-big".into(), big));
    let c = cold(&files).await;
    read_in_order(&c, &files).await;
    // 50 × 4 KiB is within one batch's bounds: the first read brings all
    // the small files; the large one is skipped by the batch and fetched
    // on its own.
    assert_eq!(c.remote.batch_gets.load(SeqCst), 1);
    assert_eq!(c.remote.gets.load(SeqCst), 1);
    assert_eq!(c.vfs.chunks.fetched.load(SeqCst), 51);
    // All local now: reading again asks nothing.
    read_in_order(&c, &files).await;
    assert_eq!(c.remote.batch_gets.load(SeqCst), 1);
    assert_eq!(c.remote.gets.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_stay_within_their_chunk_and_byte_bounds() {
    // 600 files: BATCH_MAX_CHUNKS (256) per batch → 3 batches.
    let files = small_files(600, 1000);
    let c = cold(&files).await;
    read_in_order(&c, &files).await;
    assert_eq!(
        c.remote.batch_gets.load(SeqCst),
        600usize.div_ceil(BATCH_MAX_CHUNKS) as u64
    );
    assert_eq!(c.remote.gets.load(SeqCst), 0);

    // 100 files of 60 KiB: 34 fit in BATCH_MAX_BYTES (2 MiB) → 3 batches.
    let len = 60 * 1024;
    let per_batch = (BATCH_MAX_BYTES / len as u64) as usize;
    assert_eq!(per_batch, 34);
    let files = small_files(100, len);
    let c = cold(&files).await;
    read_in_order(&c, &files).await;
    assert_eq!(
        c.remote.batch_gets.load(SeqCst),
        100usize.div_ceil(per_batch) as u64
    );
    assert_eq!(c.remote.gets.load(SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_cold_file_takes_the_single_path() {
    let files = small_files(3, 100);
    let c = cold(&files).await;
    // The last file has no neighbour after it: no batch of one.
    let last = c.vfs.lookup(c.dir, b"f0002").unwrap().ino;
    assert_eq!(read_all(&c.vfs, last).await.unwrap(), files[2].1[..]);
    assert_eq!(c.remote.batch_gets.load(SeqCst), 0);
    assert_eq!(c.remote.gets.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_batch_falls_back_to_single_fetches() {
    let files = small_files(50, 4096);
    let c = cold(&files).await;
    c.remote.fail_batches.store(true, SeqCst);
    read_in_order(&c, &files).await;
    // One failed batch, then batches pause: every file alone.
    assert_eq!(c.remote.batch_gets.load(SeqCst), 1);
    assert_eq!(c.remote.gets.load(SeqCst), 50);

    // Offline, a cold read fails promptly with the single fetch's error.
    let c = cold(&files).await;
    c.remote.offline.store(true, SeqCst);
    let ino = c.vfs.lookup(c.dir, b"f0000").unwrap().ino;
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), read_all(&c.vfs, ino));
    assert!(matches!(
        read.await.expect("no hang"),
        Err(VfsError::Unavailable(_))
    ));
    c.remote.offline.store(false, SeqCst);
    c.vfs.chunks.clear_batch_pause();
    read_in_order(&c, &files).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_readers_share_the_batch() {
    let files = small_files(40, 2048);
    let c = cold(&files).await;
    let reads = files.iter().map(|(name, _)| {
        let vfs = c.vfs.clone();
        let ino = vfs.lookup(c.dir, name.as_bytes()).unwrap().ino;
        tokio::spawn(async move { read_all(&vfs, ino).await.unwrap() })
    });
    let got = futures::future::join_all(reads).await;
    for ((name, data), got) in files.iter().zip(got) {
        assert_eq!(got.unwrap(), data[..], "{name}");
    }
    // Each chunk came from the server exactly once, by batch or alone.
    assert_eq!(c.vfs.chunks.fetched.load(SeqCst), 40);
    assert!(c.remote.batch_gets.load(SeqCst) >= 1);
}
