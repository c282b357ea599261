//! The chunk store: content-addressed blobs named by the BLAKE3 hash of
//! their plain bytes, stored once per server.
//!
//! The trait is object-safe (`Arc<dyn ChunkStore>`) and says nothing about
//! files, so an S3-compatible engine can implement it. The caller decides
//! the stored form (plain or zstd, see [`encode_for_storage`]); the store
//! records which, and [`ChunkStore::get`] always returns plain bytes whose
//! BLAKE3 it has checked: a chunk that fails the check is moved aside
//! (quarantined) and never served. Every engine must pass the shared
//! conformance suite (`chunk_store::suite`).

pub mod local;

#[cfg(test)]
pub(crate) mod suite;

use crate::protocol::ChunkId;
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

pub use local::LocalChunkStore;

/// Store a chunk compressed only when that saves at least this fraction.
pub const MIN_COMPRESSION_SAVING: f64 = 0.05;
/// zstd level used for storage.
pub const STORAGE_ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ChunkStoreError {
    #[error("chunk {0} not found")]
    NotFound(ChunkId),
    /// The stored bytes do not decode to bytes with the chunk's hash; the
    /// object was quarantined.
    #[error("chunk {0} is corrupt (quarantined)")]
    Corrupt(ChunkId),
    /// The caller passed bytes that do not match the id or length given.
    #[error("chunk {0}: {1}")]
    Invalid(ChunkId, String),
    #[error("chunk store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Space used by the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChunkStoreUsage {
    pub chunks: u64,
    /// Bytes as stored (after compression, with headers).
    pub stored_bytes: u64,
}

/// Room on the storage under a store, in bytes (`statvfs(3)` of a local
/// directory: `f_blocks`/`f_bavail` times `f_frsize`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    pub total_bytes: u64,
    /// What an unprivileged writer may still use.
    pub free_bytes: u64,
}

#[async_trait]
pub trait ChunkStore: Send + Sync + 'static {
    /// Stores a chunk durably (idempotent: an existing chunk is kept).
    /// `stored` is the plain bytes, or a zstd frame of them when
    /// `compressed`; `plain_len` is the plain length. The caller has
    /// verified the hash; the store re-checks cheap invariants only.
    async fn put(
        &self,
        id: ChunkId,
        plain_len: u32,
        stored: Bytes,
        compressed: bool,
    ) -> Result<(), ChunkStoreError>;
    /// The plain bytes, decompressed and checked against `id`.
    async fn get(&self, id: ChunkId) -> Result<Bytes, ChunkStoreError>;
    async fn contains(&self, id: ChunkId) -> Result<bool, ChunkStoreError>;
    /// Removes a chunk; false if it was not there.
    async fn delete(&self, id: ChunkId) -> Result<bool, ChunkStoreError>;
    /// Counts chunks and bytes (may walk the whole store: not for hot paths).
    async fn usage(&self) -> Result<ChunkStoreUsage, ChunkStoreError>;
    /// The room on the storage under the store, when it has a bound: a
    /// local directory's filesystem does; an object store that grows on
    /// demand answers `None` (the default).
    async fn capacity(&self) -> Result<Option<Capacity>, ChunkStoreError> {
        Ok(None)
    }
    /// Removes what interrupted writes left behind (temp files, unfinished
    /// multipart uploads) that is older than `max_age`; younger leftovers
    /// may belong to a write still in progress, maybe of another server
    /// sharing the store. Returns how many were removed. Engines whose
    /// writes leave nothing behind keep the default, which does nothing.
    async fn remove_stale_temp_files(
        &self,
        _max_age: std::time::Duration,
    ) -> Result<u64, ChunkStoreError> {
        Ok(0)
    }
}

/// Chooses the stored form of `plain`: a zstd frame when it saves at least
/// [`MIN_COMPRESSION_SAVING`], else the plain bytes. `wire_zstd` is a zstd
/// frame of `plain` the client already sent (already verified to decode
/// to `plain`), reused instead of compressing again. CPU-bound: call it
/// from a blocking thread. Returns `(stored, compressed)`.
pub fn encode_for_storage(plain: &Bytes, wire_zstd: Option<Bytes>) -> (Bytes, bool) {
    let limit = (plain.len() as f64 * (1.0 - MIN_COMPRESSION_SAVING)) as usize;
    if let Some(z) = wire_zstd {
        if z.len() <= limit {
            return (z, true);
        }
    }
    match zstd::bulk::compress(plain, STORAGE_ZSTD_LEVEL) {
        Ok(z) if z.len() <= limit => (Bytes::from(z), true),
        _ => (plain.clone(), false),
    }
}

/// Opens the chunk store named by `--chunks` (a directory), or the default
/// `DATA/chunks`.
pub fn open(
    spec: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> anyhow::Result<Arc<dyn ChunkStore>> {
    let dir = match spec {
        Some(p) => {
            let s = p.to_string_lossy();
            if s.starts_with("s3://") {
                anyhow::bail!(
                    "S3 chunk storage is not supported by this build yet (use a directory)"
                );
            }
            p.to_path_buf()
        }
        None => data_dir.join("chunks"),
    };
    Ok(Arc::new(LocalChunkStore::open(&dir)?))
}
