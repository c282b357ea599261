//! The chunk cache: verified chunk bytes on local disk under a size budget,
//! with a small in-memory layer in front, and single-flight fetches from the
//! server.
//!
//! - Disk: `chunks/<2 hex>/<64 hex>`, plain bytes. Written to a temporary
//!   name and renamed, so a crash never leaves a half chunk under a real
//!   name. Every chunk read from disk is verified against its hash; a
//!   corrupt one is deleted and fetched again.
//! - Memory: a `moka` cache of verified chunks weighted by bytes. Its
//!   `try_get_with` coalesces concurrent loads of one chunk, so readers of
//!   the same chunk share one disk read or one request.
//! - Verified on disk: a chunk file whose bytes were checked against its
//!   hash in this mount session (read back, downloaded or uploaded) is
//!   remembered, and later small reads of it that miss the memory layer
//!   read just their range with `pread` instead of loading and re-hashing
//!   the whole chunk (random 4 KiB reads of a large file). A file that
//!   fails its check is deleted and refetched.
//! - Budget: a second `moka` cache indexes the disk files by size; when it
//!   evicts an entry, the file is deleted. The budget excludes working
//!   copies of files with pending changes, which live elsewhere (`work/`).
//! - Batches ([`ChunkCache::fetch_batch`]): several missing chunks (the
//!   small files of a folder, chosen by `vfs::batch_read`) come in one
//!   request (`Remote::get_chunks`), in a background task that stores
//!   them on disk. While it runs, every chunk of it is registered in
//!   `inflight`: a `load` of one of them waits for the batch instead of
//!   sending its own request, and a batch never takes a chunk whose
//!   single fetch is running (`inflight.singles`), so no chunk is asked
//!   for twice at once. A failed batch is not an error for anyone: each
//!   waiter fetches its chunk alone, and batches pause for
//!   [`BATCH_PAUSE_AFTER_FAILURE`] so a server or proxy refusing them
//!   costs one extra request, not one per read.
//!
//! Lock order: `inflight` is a leaf (never held across an await or while
//! taking another lock).

use super::error::{VfsError, VfsResult};
use crate::protocol::ChunkId;
use crate::remote::{Remote, RemoteError};
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::StreamExt;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long batches pause after one failed (its chunks are then fetched
/// one by one).
pub const BATCH_PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// What a batch yields to the loads waiting on it: its chunks, or why it
/// failed.
type BatchResult = Arc<Result<HashMap<ChunkId, Bytes>, String>>;
type BatchFuture = Shared<BoxFuture<'static, BatchResult>>;

/// Fetches running now (see the module docs).
#[derive(Default)]
struct Inflight {
    /// Chunks of running batches, each with its batch.
    batches: HashMap<ChunkId, BatchFuture>,
    /// Chunks whose single fetch (`Remote::get_chunk`) is running.
    singles: HashSet<ChunkId>,
}

/// Takes a chunk out of `Inflight::singles` when its single fetch ends,
/// however it ends.
struct SingleFetch<'a> {
    inflight: &'a Mutex<Inflight>,
    id: ChunkId,
}

impl Drop for SingleFetch<'_> {
    fn drop(&mut self) {
        self.inflight.lock().singles.remove(&self.id);
    }
}

/// Chunks up to this size that are on disk but not verified in this session
/// are verified on the caller's thread ([`ChunkCache::read_local`]).
const SMALL_CHUNK_INLINE: u32 = 256 << 10;

pub struct ChunkCache {
    dir: PathBuf,
    mem: moka::future::Cache<ChunkId, Bytes>,
    disk: moka::sync::Cache<ChunkId, u32>,
    /// Chunk files verified in this session (see the module docs).
    verified: moka::sync::Cache<ChunkId, ()>,
    remote: Arc<dyn Remote>,
    limit: u64,
    /// Runtime for background loads started from threads without one
    /// (FUSE threads).
    rt: tokio::runtime::Handle,
    /// Chunks fetched from the server (for status and tests).
    pub fetched: AtomicU64,
    pub fetched_bytes: AtomicU64,
    /// Batch requests sent (successful or not).
    pub batches: AtomicU64,
    inflight: Mutex<Inflight>,
    /// Batches start again from this instant on (after a failure).
    batch_pause_until: Mutex<Option<Instant>>,
}

fn chunk_path(dir: &Path, id: &ChunkId) -> PathBuf {
    let hex = id.to_hex();
    dir.join(&hex[..2]).join(hex)
}

impl ChunkCache {
    /// Opens the cache in `dir`, indexing what is already there. Must be
    /// called within a tokio runtime (its handle runs read-ahead).
    pub fn open(
        dir: PathBuf,
        limit: u64,
        memory_limit: u64,
        remote: Arc<dyn Remote>,
    ) -> VfsResult<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        let evict_dir = dir.clone();
        let verified: moka::sync::Cache<ChunkId, ()> = moka::sync::Cache::new(1 << 20);
        let evict_verified = verified.clone();
        let disk = moka::sync::Cache::builder()
            .max_capacity(limit)
            .weigher(|_k: &ChunkId, len: &u32| *len)
            .eviction_listener(move |id: Arc<ChunkId>, _len, cause| {
                if cause.was_evicted() {
                    evict_verified.invalidate(&*id);
                    let _ = std::fs::remove_file(chunk_path(&evict_dir, &id));
                }
            })
            .build();
        let mem = moka::future::Cache::builder()
            .max_capacity(memory_limit)
            .weigher(|_k: &ChunkId, v: &Bytes| v.len().try_into().unwrap_or(u32::MAX))
            .build();
        let cache = Arc::new(ChunkCache {
            dir,
            mem,
            disk,
            verified,
            remote,
            limit,
            rt: tokio::runtime::Handle::try_current()
                .map_err(|_| VfsError::Store("the chunk cache needs a tokio runtime".into()))?,
            fetched: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            inflight: Mutex::new(Inflight::default()),
            batch_pause_until: Mutex::new(None),
        });
        cache.index_existing()?;
        Ok(cache)
    }

    fn index_existing(&self) -> VfsResult<()> {
        for sub in std::fs::read_dir(&self.dir)? {
            let sub = sub?;
            if !sub.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path())? {
                let f = f?;
                let name = f.file_name();
                let name = name.to_string_lossy();
                match ChunkId::from_hex(&name) {
                    Ok(id) => {
                        let len = f.metadata()?.len();
                        self.disk.insert(id, len.min(u32::MAX as u64) as u32);
                    }
                    // Leftover temporary files from a crash.
                    Err(_) => {
                        let _ = std::fs::remove_file(f.path());
                    }
                }
            }
        }
        self.disk.run_pending_tasks();
        Ok(())
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes of chunks on disk.
    pub fn used_bytes(&self) -> u64 {
        self.disk.run_pending_tasks();
        self.disk.weighted_size()
    }

    pub fn is_local(&self, id: &ChunkId) -> bool {
        self.disk.contains_key(id) || self.mem.contains_key(id)
    }

    /// The chunk if it is in memory, without waiting on anything.
    /// `len` bytes at `offset` of a chunk, if that needs no network and no
    /// hashing: from memory, or by `pread` from a chunk file verified in
    /// this session. `None` otherwise (then use [`ChunkCache::get`]),
    /// including when the chunk is not `chunk_len` bytes long as its
    /// manifest says: the slow path reports that as an error.
    pub fn read_local(
        &self,
        id: &ChunkId,
        offset: u32,
        len: u32,
        chunk_len: u32,
    ) -> Option<Vec<u8>> {
        let range = offset as usize..offset as usize + len as usize;
        if let Some(data) = self.get_in_memory(id) {
            if data.len() != chunk_len as usize {
                return None;
            }
            return data.get(range).map(|r| r.to_vec());
        }
        if self.disk.get(id) != Some(chunk_len) {
            return None;
        }
        if !self.verified.contains_key(id) {
            return self.read_small_unverified(id, chunk_len, range);
        }
        let file = std::fs::File::open(chunk_path(&self.dir, id)).ok()?;
        let mut buf = vec![0u8; len as usize];
        super::pio::read_exact_at(&file, &mut buf, offset as u64).ok()?;
        Some(buf)
    }

    /// A small chunk on disk not yet verified in this session: read and
    /// hashed right here (a 4 KiB file costs one `read` and a microsecond of
    /// BLAKE3) instead of through the async path's task and blocking-pool
    /// hops, which dominated cold reads of small cached files. `None` for
    /// larger chunks and on any failure (the slow path refetches a chunk
    /// that fails its hash).
    fn read_small_unverified(
        &self,
        id: &ChunkId,
        chunk_len: u32,
        range: std::ops::Range<usize>,
    ) -> Option<Vec<u8>> {
        if chunk_len > SMALL_CHUNK_INLINE {
            return None;
        }
        let data = std::fs::read(chunk_path(&self.dir, id)).ok()?;
        if data.len() != chunk_len as usize || !self.check_cached(id, &data) {
            return None;
        }
        data.get(range).map(|r| r.to_vec())
    }

    /// Whether `data`, read from the chunk's file, is the chunk; if so it
    /// counts as verified for the rest of this session.
    fn check_cached(&self, id: &ChunkId, data: &[u8]) -> bool {
        let ok = id.verify(data);
        if ok {
            self.verified.insert(*id, ());
        }
        ok
    }

    pub fn get_in_memory(&self, id: &ChunkId) -> Option<Bytes> {
        futures::executor::block_on(self.mem.get(id))
    }

    /// The chunk's bytes, from memory, disk or the server (verified).
    pub async fn get(&self, id: ChunkId) -> VfsResult<Bytes> {
        self.mem
            .try_get_with(id, self.load(id))
            .await
            .map_err(|e: Arc<VfsError>| match &*e {
                VfsError::Unavailable(c) => VfsError::Unavailable(c.clone()),
                other => VfsError::Unavailable(other.chain().into()),
            })
    }

    async fn load(&self, id: ChunkId) -> VfsResult<Bytes> {
        let path = chunk_path(&self.dir, &id);
        match tokio::fs::read(&path).await {
            Ok(data) => {
                if self.check_cached(&id, &data) {
                    // Touch the index so recently read chunks stay.
                    let _ = self.disk.get(&id);
                    return Ok(Bytes::from(data));
                }
                tracing::warn!(chunk = %id, "cached chunk failed its hash check; refetching");
                let _ = tokio::fs::remove_file(&path).await;
                self.disk.invalidate(&id);
                self.verified.invalidate(&id);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        // A batch carrying this chunk is running: wait for it rather than
        // ask again; else this is the chunk's one single fetch.
        let (batch, stored_meanwhile) = {
            let mut inflight = self.inflight.lock();
            let batch = inflight.batches.get(&id).cloned();
            // A batch stores its chunks before it leaves `inflight`: one
            // that ended since the disk read above left the file.
            let stored = batch.is_none() && self.disk.contains_key(&id);
            if batch.is_none() && !stored {
                inflight.singles.insert(id);
            }
            (batch, stored)
        };
        if stored_meanwhile {
            if let Ok(data) = tokio::fs::read(&path).await {
                if self.check_cached(&id, &data) {
                    return Ok(Bytes::from(data));
                }
            }
            self.inflight.lock().singles.insert(id);
        }
        if let Some(batch) = batch {
            if let Ok(chunks) = &*batch.await {
                if let Some(data) = chunks.get(&id) {
                    return Ok(data.clone());
                }
            }
            // The batch failed: fetch this one alone.
            self.inflight.lock().singles.insert(id);
        }
        let _single = SingleFetch {
            inflight: &self.inflight,
            id,
        };
        let data = self.remote.get_chunk(id).await.map_err(|e| match e {
            RemoteError::NotFound(_) => {
                VfsError::Unavailable(format!("chunk {id} is not on the server").into())
            }
            other => VfsError::Unavailable(super::error::Cause::from_error(
                format!("chunk {id}"),
                other,
            )),
        })?;
        self.fetched.fetch_add(1, Ordering::Relaxed);
        self.fetched_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.store(id, &data).await?;
        Ok(data)
    }

    /// Stores verified bytes (from a download or an upload) on disk.
    pub async fn store(&self, id: ChunkId, data: &[u8]) -> VfsResult<()> {
        if self.disk.contains_key(&id) {
            return Ok(());
        }
        let path = chunk_path(&self.dir, &id);
        let parent = path.parent().expect("chunk path has a parent");
        tokio::fs::create_dir_all(parent).await?;
        let tmp = parent.join(format!(".tmp-{}-{}", id.to_hex(), rand::random::<u32>()));
        tokio::fs::write(&tmp, data).await?;
        tokio::fs::rename(&tmp, &path).await?;
        self.disk.insert(id, data.len() as u32);
        self.verified.insert(id, ());
        Ok(())
    }

    /// Puts verified bytes in memory too (used right after an upload).
    pub async fn remember(&self, id: ChunkId, data: Bytes) {
        self.mem.insert(id, data).await;
    }

    /// Lets batches start again at once (after a failure paused them).
    pub fn clear_batch_pause(&self) {
        *self.batch_pause_until.lock() = None;
    }

    /// A running batch is fetching this chunk.
    pub fn in_batch(&self, id: &ChunkId) -> bool {
        self.inflight.lock().batches.contains_key(id)
    }

    /// Starts fetching, in one background request, those of `candidates`
    /// (chunk, length; in order of preference) that are not local and not
    /// being fetched, at most `max_chunks` of them and `max_bytes`
    /// together (candidates that would overflow are skipped). Nothing
    /// starts when fewer than `min_chunks` qualify (a batch of one is a
    /// single fetch) or while batches pause after a failure. Returns how
    /// many chunks the batch took. A `get` of any of them meanwhile waits
    /// for the batch.
    pub fn fetch_batch(
        self: &Arc<Self>,
        candidates: &[(ChunkId, u32)],
        min_chunks: usize,
        max_chunks: usize,
        max_bytes: u64,
    ) -> usize {
        {
            let mut pause = self.batch_pause_until.lock();
            match *pause {
                Some(until) if Instant::now() < until => return 0,
                Some(_) => *pause = None,
                None => {}
            }
        }
        let mut inflight = self.inflight.lock();
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        let mut bytes = 0u64;
        for &(id, len) in candidates {
            if ids.len() >= max_chunks {
                break;
            }
            if bytes + u64::from(len) > max_bytes
                || !seen.insert(id)
                || inflight.batches.contains_key(&id)
                || inflight.singles.contains(&id)
                || self.is_local(&id)
            {
                continue;
            }
            bytes += u64::from(len);
            ids.push(id);
        }
        if ids.is_empty() || ids.len() < min_chunks {
            return 0;
        }
        let remote = self.remote.clone();
        let asked = ids.clone();
        let batch: BatchFuture = async move {
            let result = remote
                .get_chunks(&asked)
                .await
                .map(|chunks| chunks.into_iter().collect::<HashMap<_, _>>())
                .map_err(|e| e.to_string());
            Arc::new(result)
        }
        .boxed()
        .shared();
        for id in &ids {
            inflight.batches.insert(*id, batch.clone());
        }
        drop(inflight);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let n = ids.len();
        let me = self.clone();
        self.rt.spawn(async move {
            let result = batch.clone().await;
            match &*result {
                Ok(chunks) => {
                    me.fetched.fetch_add(chunks.len() as u64, Ordering::Relaxed);
                    let bytes: usize = chunks.values().map(Bytes::len).sum();
                    me.fetched_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                    let owned: Vec<(ChunkId, Bytes)> =
                        chunks.iter().map(|(id, d)| (*id, d.clone())).collect();
                    let cache = me.clone();
                    futures::stream::iter(owned)
                        .for_each_concurrent(8, move |(id, data)| {
                            let cache = cache.clone();
                            async move {
                                if let Err(e) = cache.store(id, &data).await {
                                    tracing::warn!(chunk = %id, "cannot store a batch's chunk: {e}");
                                }
                            }
                        })
                        .await;
                }
                Err(e) => {
                    tracing::info!(
                        chunks = ids.len(),
                        "chunk batch failed, fetching one by one for {}s: {e}",
                        BATCH_PAUSE_AFTER_FAILURE.as_secs()
                    );
                    *me.batch_pause_until.lock() = Some(Instant::now() + BATCH_PAUSE_AFTER_FAILURE);
                }
            }
            let mut inflight = me.inflight.lock();
            for id in &ids {
                if inflight.batches.get(id).is_some_and(|b| b.ptr_eq(&batch)) {
                    inflight.batches.remove(id);
                }
            }
        });
        n
    }

    /// Starts loading chunks in the background (read-ahead).
    pub fn prefetch(self: &Arc<Self>, ids: Vec<ChunkId>) {
        // One task per chunk: the loads overlap (request latency, hashing,
        // disk write), and `get` shares each with any reader that asks too.
        for id in ids {
            if self.mem.contains_key(&id) {
                continue;
            }
            let me = self.clone();
            self.rt.spawn(async move {
                if let Err(e) = me.get(id).await {
                    tracing::debug!(chunk = %id, "read-ahead failed: {e}");
                }
            });
        }
    }
}
