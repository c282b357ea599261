//! Chunks as files in a directory (the default engine):
//! `ROOT/ab/<64 hex digits>`, `ab` being the first byte of the hash.
//!
//! # File format
//! A 12-byte header, then the stored bytes:
//! `b"NCK1"`, codec (`0` plain, `1` zstd), three zero bytes, plain length
//! (u32 little endian). The header makes a file self-describing, so a
//! truncated or foreign file is detected before any decoding.
//!
//! # Durability (garage-style)
//! A chunk is written to a temporary file `.tmp-…` in its final directory,
//! fsynced, renamed into place, and the directory is fsynced: after `put`
//! returns the chunk survives a crash, and a reader never sees a partial
//! file. Temporary files left by a crash are removed by
//! [`ChunkStore::remove_stale_temp_files`]: the server runs it in the
//! background as soon as it starts and then hourly, with
//! [`STALE_TEMP_AGE`](crate::server::STALE_TEMP_AGE) as the age below
//! which a temp file may still be a write in progress (several servers
//! may share one chunk directory, so "every temp file at start" would not
//! be safe).
//!
//! # Corruption
//! Every read decodes and checks the BLAKE3 hash. A file that fails is
//! moved to `ROOT/corrupt/<hex>.<unix-ns>` and an error returned; the chunk
//! then counts as absent, so the next upload of it stores a good copy.

use super::{Capacity, ChunkStore, ChunkStoreError, ChunkStoreUsage};
use crate::protocol::{ChunkId, MAX_CHUNK_LEN};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const MAGIC: &[u8; 4] = b"NCK1";
const HEADER_LEN: usize = 12;
const CODEC_PLAIN: u8 = 0;
const CODEC_ZSTD: u8 = 1;
const TEMP_PREFIX: &str = ".tmp-";

#[derive(Clone, Debug)]
pub struct LocalChunkStore {
    root: PathBuf,
}

impl LocalChunkStore {
    /// Opens (creating) the store rooted at `root`.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        fs::create_dir_all(root.join("corrupt"))
            .with_context(|| format!("cannot create chunk directory {}", root.display()))?;
        Ok(LocalChunkStore {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir_of(&self, id: &ChunkId) -> PathBuf {
        self.root.join(hex::encode(&id.0[..1]))
    }

    fn path_of(&self, id: &ChunkId) -> PathBuf {
        self.dir_of(id).join(id.to_hex())
    }

    /// Deletes `.tmp-*` files older than `max_age` (left by a crash; younger
    /// ones may belong to a write in progress). Returns how many.
    fn remove_stale_temp_files_blocking(&self, max_age: Duration) -> io::Result<u64> {
        let mut removed = 0;
        for dir in shard_dirs(&self.root)? {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name();
                if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
                    continue;
                }
                let age = entry
                    .metadata()?
                    .modified()?
                    .elapsed()
                    .unwrap_or(Duration::ZERO);
                if age >= max_age && fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn put_blocking(
        &self,
        id: ChunkId,
        plain_len: u32,
        stored: &[u8],
        compressed: bool,
    ) -> Result<(), ChunkStoreError> {
        check_stored(id, plain_len, stored, compressed)?;
        let path = self.path_of(&id);
        if path.exists() {
            return Ok(());
        }
        let dir = self.dir_of(&id);
        if !dir.exists() {
            fs::create_dir_all(&dir)?;
            sync_dir(&self.root)?;
        }
        let tmp = dir.join(format!(
            "{TEMP_PREFIX}{}-{:016x}",
            id.to_hex(),
            rand::random::<u64>()
        ));
        let result = (|| -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            let mut header = [0u8; HEADER_LEN];
            header[..4].copy_from_slice(MAGIC);
            header[4] = if compressed { CODEC_ZSTD } else { CODEC_PLAIN };
            header[8..].copy_from_slice(&plain_len.to_le_bytes());
            f.write_all(&header)?;
            f.write_all(stored)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            sync_dir(&dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        Ok(result?)
    }

    fn get_blocking(&self, id: ChunkId) -> Result<Bytes, ChunkStoreError> {
        let path = self.path_of(&id);
        let raw = match fs::read(&path) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ChunkStoreError::NotFound(id))
            }
            Err(e) => return Err(e.into()),
        };
        match decode(id, &raw) {
            Some(plain) => Ok(Bytes::from(plain)),
            None => {
                self.quarantine(id, &path);
                Err(ChunkStoreError::Corrupt(id))
            }
        }
    }

    fn quarantine(&self, id: ChunkId, path: &Path) {
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dest = self
            .root
            .join("corrupt")
            .join(format!("{}.{stamp}", id.to_hex()));
        match fs::rename(path, &dest) {
            Ok(()) => {
                tracing::error!(chunk = %id, to = %dest.display(), "chunk failed its hash check; quarantined");
                if let Some(dir) = path.parent() {
                    let _ = sync_dir(dir);
                }
            }
            Err(e) => {
                tracing::error!(chunk = %id, error = %e, "chunk failed its hash check; could not quarantine it");
            }
        }
    }

    fn delete_blocking(&self, id: ChunkId) -> Result<bool, ChunkStoreError> {
        match fs::remove_file(self.path_of(&id)) {
            Ok(()) => {
                sync_dir(&self.dir_of(&id))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn usage_blocking(&self) -> Result<ChunkStoreUsage, ChunkStoreError> {
        let mut usage = ChunkStoreUsage::default();
        for dir in shard_dirs(&self.root)? {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                usage.chunks += 1;
                usage.stored_bytes += entry.metadata()?.len();
            }
        }
        Ok(usage)
    }
}

/// The two-hex-digit shard directories under `root`.
fn shard_dirs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.len() == 2
            && name.bytes().all(|b| b.is_ascii_hexdigit())
            && entry.file_type()?.is_dir()
        {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Refuses bytes that do not decode to `plain_len` bytes hashing to `id`.
fn check_stored(
    id: ChunkId,
    plain_len: u32,
    stored: &[u8],
    compressed: bool,
) -> Result<(), ChunkStoreError> {
    if plain_len > MAX_CHUNK_LEN {
        return Err(ChunkStoreError::Invalid(
            id,
            format!("plain length {plain_len} exceeds {MAX_CHUNK_LEN}"),
        ));
    }
    let ok = if compressed {
        decompress_exact(stored, plain_len).is_some_and(|p| id.verify(&p))
    } else {
        stored.len() == plain_len as usize && id.verify(stored)
    };
    if ok {
        Ok(())
    } else {
        Err(ChunkStoreError::Invalid(
            id,
            "stored bytes do not match the chunk id and length".into(),
        ))
    }
}

/// Decodes a zstd stream that must yield exactly `plain_len` bytes.
fn decompress_exact(stored: &[u8], plain_len: u32) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::with_capacity(plain_len as usize);
    let decoder = zstd::stream::read::Decoder::new(stored).ok()?;
    decoder
        .take(u64::from(plain_len) + 1)
        .read_to_end(&mut out)
        .ok()?;
    (out.len() == plain_len as usize).then_some(out)
}

/// Header + body → plain bytes, or `None` if anything does not check out.
fn decode(id: ChunkId, raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < HEADER_LEN || &raw[..4] != MAGIC || raw[5..8] != [0, 0, 0] {
        return None;
    }
    let plain_len = u32::from_le_bytes(raw[8..12].try_into().ok()?);
    if plain_len > MAX_CHUNK_LEN {
        return None;
    }
    let body = &raw[HEADER_LEN..];
    let plain = match raw[4] {
        CODEC_PLAIN if body.len() == plain_len as usize => body.to_vec(),
        CODEC_ZSTD => decompress_exact(body, plain_len)?,
        _ => return None,
    };
    id.verify(&plain).then_some(plain)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ChunkStoreError> + Send + 'static,
) -> Result<T, ChunkStoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ChunkStoreError::Io(io::Error::other(e)))?
}

#[async_trait]
impl ChunkStore for LocalChunkStore {
    async fn put(
        &self,
        id: ChunkId,
        plain_len: u32,
        stored: Bytes,
        compressed: bool,
    ) -> Result<(), ChunkStoreError> {
        let this = self.clone();
        blocking(move || this.put_blocking(id, plain_len, &stored, compressed)).await
    }

    async fn get(&self, id: ChunkId) -> Result<Bytes, ChunkStoreError> {
        let this = self.clone();
        blocking(move || this.get_blocking(id)).await
    }

    async fn contains(&self, id: ChunkId) -> Result<bool, ChunkStoreError> {
        Ok(tokio::fs::try_exists(self.path_of(&id)).await?)
    }

    async fn delete(&self, id: ChunkId) -> Result<bool, ChunkStoreError> {
        let this = self.clone();
        blocking(move || this.delete_blocking(id)).await
    }

    async fn usage(&self) -> Result<ChunkStoreUsage, ChunkStoreError> {
        let this = self.clone();
        blocking(move || this.usage_blocking()).await
    }

    async fn capacity(&self) -> Result<Option<Capacity>, ChunkStoreError> {
        let root = self.root.clone();
        blocking(move || {
            let st = nix::sys::statvfs::statvfs(&root).map_err(io::Error::from)?;
            let frsize = st.fragment_size();
            Ok(Some(Capacity {
                total_bytes: st.blocks().saturating_mul(frsize),
                free_bytes: st.blocks_available().saturating_mul(frsize),
            }))
        })
        .await
    }

    async fn remove_stale_temp_files(&self, max_age: Duration) -> Result<u64, ChunkStoreError> {
        let this = self.clone();
        blocking(move || Ok(this.remove_stale_temp_files_blocking(max_age)?)).await
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn capacity_is_the_filesystem_under_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalChunkStore::open(dir.path()).unwrap();
        let c = store
            .capacity()
            .await
            .unwrap()
            .expect("a directory is bounded");
        let st = nix::sys::statvfs::statvfs(dir.path()).unwrap();
        assert_eq!(c.total_bytes, st.blocks() * st.fragment_size());
        assert!(c.free_bytes > 0 && c.free_bytes <= c.total_bytes, "{c:?}");
    }

    use super::*;

    crate::server::chunk_store::suite::chunk_store_suite!(
        local_suite,
        |dir: std::path::PathBuf| async move {
            std::sync::Arc::new(LocalChunkStore::open(&dir).unwrap())
                as std::sync::Arc<dyn ChunkStore>
        }
    );

    #[tokio::test]
    async fn flipped_byte_on_disk_is_quarantined_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalChunkStore::open(dir.path()).unwrap();
        let data = Bytes::from(vec![7u8; 1000]);
        let id = ChunkId::of(&data);
        store.put(id, 1000, data.clone(), false).await.unwrap();
        let path = store.path_of(&id);
        let mut raw = fs::read(&path).unwrap();
        raw[HEADER_LEN + 10] ^= 1;
        fs::write(&path, raw).unwrap();
        assert!(matches!(store.get(id).await, Err(ChunkStoreError::Corrupt(c)) if c == id));
        assert!(!path.exists(), "corrupt file must be moved aside");
        assert_eq!(fs::read_dir(dir.path().join("corrupt")).unwrap().count(), 1);
        assert!(!store.contains(id).await.unwrap());
        // A fresh upload heals it.
        store.put(id, 1000, data.clone(), false).await.unwrap();
        assert_eq!(store.get(id).await.unwrap(), data);
    }

    #[tokio::test]
    async fn truncated_file_and_bad_header_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalChunkStore::open(dir.path()).unwrap();
        let data = Bytes::from(vec![1u8; 100_000]);
        let id = ChunkId::of(&data);
        let (stored, compressed) = super::super::encode_for_storage(&data, None);
        assert!(compressed, "a run of equal bytes compresses");
        store.put(id, 100_000, stored, true).await.unwrap();
        let path = store.path_of(&id);
        let raw = fs::read(&path).unwrap();
        fs::write(&path, &raw[..raw.len() - 3]).unwrap();
        assert!(matches!(
            store.get(id).await,
            Err(ChunkStoreError::Corrupt(_))
        ));
        store.put(id, 100_000, data.clone(), false).await.unwrap();
        let mut raw = fs::read(&path).unwrap();
        raw[0] = b'X';
        fs::write(&path, raw).unwrap();
        assert!(matches!(
            store.get(id).await,
            Err(ChunkStoreError::Corrupt(_))
        ));
    }

    #[tokio::test]
    async fn stale_temp_files_are_removed_and_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalChunkStore::open(dir.path()).unwrap();
        let data = Bytes::from_static(b"hello");
        let id = ChunkId::of(&data);
        store.put(id, 5, data, false).await.unwrap();
        let tmp = store.dir_of(&id).join(format!("{TEMP_PREFIX}leftover"));
        fs::write(&tmp, b"partial").unwrap();
        assert_eq!(store.usage().await.unwrap().chunks, 1);
        assert_eq!(
            store
                .remove_stale_temp_files(Duration::from_secs(3600))
                .await
                .unwrap(),
            0
        );
        assert!(tmp.exists(), "a young temp file may be a write in progress");
        assert_eq!(
            store.remove_stale_temp_files(Duration::ZERO).await.unwrap(),
            1
        );
        assert!(!tmp.exists());
        assert!(store.contains(id).await.unwrap());
    }
}
