//! Conformance suite every [`ChunkStore`] engine must pass. An engine's
//! tests invoke [`chunk_store_suite!`] with a factory
//! `|dir: PathBuf| async { Arc<dyn ChunkStore> }`; it expands to one test
//! per case below, each on a fresh store.

use super::{encode_for_storage, ChunkStore, ChunkStoreError};
use crate::protocol::{ChunkId, MAX_CHUNK_LEN};
use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use std::sync::Arc;

type Store = Arc<dyn ChunkStore>;

macro_rules! chunk_store_suite {
    ($engine:ident, $make:expr) => {
        mod $engine {
            #[allow(unused_imports)]
            use super::*;

            async fn make_store(
                dir: std::path::PathBuf,
            ) -> std::sync::Arc<dyn $crate::server::chunk_store::ChunkStore> {
                ($make)(dir).await
            }

            $crate::server::chunk_store::suite::chunk_store_suite!(@case put_get_plain);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case put_get_compressed);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case empty_chunk);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case largest_chunk);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case put_is_idempotent);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case missing_chunk);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case delete_removes);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case put_refuses_wrong_bytes);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case usage_counts_chunks);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case capacity_is_consistent);
            $crate::server::chunk_store::suite::chunk_store_suite!(@case concurrent_puts_of_one_chunk);
        }
    };
    (@case $case:ident) => {
        #[tokio::test]
        async fn $case() {
            let dir = tempfile::tempdir().unwrap();
            let store = make_store(dir.path().to_path_buf()).await;
            $crate::server::chunk_store::suite::$case(store).await;
        }
    };
}
pub(crate) use chunk_store_suite;

fn random(len: usize, seed: u64) -> Bytes {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    Bytes::from(v)
}

fn compressible(len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| b"the quick brown fox "[i % 20])
            .collect::<Vec<u8>>(),
    )
}

async fn put_plain(store: &Store, data: &Bytes) -> ChunkId {
    let id = ChunkId::of(data);
    store
        .put(id, data.len() as u32, data.clone(), false)
        .await
        .unwrap();
    id
}

pub(crate) async fn put_get_plain(store: Store) {
    let data = random(300_000, 1);
    let id = put_plain(&store, &data).await;
    assert!(store.contains(id).await.unwrap());
    assert_eq!(store.get(id).await.unwrap(), data);
}

pub(crate) async fn put_get_compressed(store: Store) {
    let data = compressible(1 << 20);
    let id = ChunkId::of(&data);
    let (stored, compressed) = encode_for_storage(&data, None);
    assert!(compressed && stored.len() < data.len() / 2);
    store
        .put(id, data.len() as u32, stored, true)
        .await
        .unwrap();
    assert_eq!(store.get(id).await.unwrap(), data);
    assert!(store.usage().await.unwrap().stored_bytes < data.len() as u64 / 2);
    // Incompressible data is kept plain.
    let noise = random(100_000, 2);
    let (stored, compressed) = encode_for_storage(&noise, None);
    assert!(!compressed);
    assert_eq!(stored, noise);
}

pub(crate) async fn empty_chunk(store: Store) {
    let id = put_plain(&store, &Bytes::new()).await;
    assert_eq!(store.get(id).await.unwrap(), Bytes::new());
}

pub(crate) async fn largest_chunk(store: Store) {
    let data = random(MAX_CHUNK_LEN as usize, 3);
    let id = put_plain(&store, &data).await;
    assert_eq!(store.get(id).await.unwrap(), data);
}

pub(crate) async fn put_is_idempotent(store: Store) {
    let data = random(10_000, 4);
    let id = put_plain(&store, &data).await;
    put_plain(&store, &data).await;
    let (stored, _) = encode_for_storage(&data, None);
    store.put(id, 10_000, stored, false).await.unwrap();
    assert_eq!(store.usage().await.unwrap().chunks, 1);
    assert_eq!(store.get(id).await.unwrap(), data);
}

pub(crate) async fn missing_chunk(store: Store) {
    let id = ChunkId::of(b"never stored");
    assert!(!store.contains(id).await.unwrap());
    assert!(matches!(store.get(id).await, Err(ChunkStoreError::NotFound(x)) if x == id));
    assert!(!store.delete(id).await.unwrap());
}

pub(crate) async fn delete_removes(store: Store) {
    let data = random(5000, 5);
    let keep = random(5000, 6);
    let id = put_plain(&store, &data).await;
    let keep_id = put_plain(&store, &keep).await;
    assert!(store.delete(id).await.unwrap());
    assert!(!store.contains(id).await.unwrap());
    assert!(matches!(
        store.get(id).await,
        Err(ChunkStoreError::NotFound(_))
    ));
    assert_eq!(store.get(keep_id).await.unwrap(), keep);
    assert_eq!(store.usage().await.unwrap().chunks, 1);
}

pub(crate) async fn put_refuses_wrong_bytes(store: Store) {
    let data = random(5000, 7);
    let other = random(5000, 8);
    let id = ChunkId::of(&data);
    // Bytes of another chunk.
    let r = store.put(id, 5000, other.clone(), false).await;
    assert!(matches!(r, Err(ChunkStoreError::Invalid(..))), "{r:?}");
    // Right bytes, wrong length.
    let r = store.put(id, 4999, data.clone(), false).await;
    assert!(matches!(r, Err(ChunkStoreError::Invalid(..))), "{r:?}");
    // Plain bytes claimed to be compressed.
    let r = store.put(id, 5000, data.clone(), true).await;
    assert!(matches!(r, Err(ChunkStoreError::Invalid(..))), "{r:?}");
    // A zstd frame of other bytes.
    let z = Bytes::from(zstd::bulk::compress(&other, 3).unwrap());
    let r = store.put(id, 5000, z, true).await;
    assert!(matches!(r, Err(ChunkStoreError::Invalid(..))), "{r:?}");
    // Over the size limit.
    let r = store.put(id, MAX_CHUNK_LEN + 1, data.clone(), false).await;
    assert!(matches!(r, Err(ChunkStoreError::Invalid(..))), "{r:?}");
    assert!(!store.contains(id).await.unwrap());
    assert_eq!(store.usage().await.unwrap().chunks, 0);
}

/// A bounded store reports room that fits in itself; an unbounded one
/// (`None`) is allowed.
pub(crate) async fn capacity_is_consistent(store: Store) {
    if let Some(c) = store.capacity().await.unwrap() {
        assert!(c.total_bytes > 0, "{c:?}");
        assert!(c.free_bytes <= c.total_bytes, "{c:?}");
    }
}

pub(crate) async fn usage_counts_chunks(store: Store) {
    assert_eq!(store.usage().await.unwrap().chunks, 0);
    for seed in 10..13 {
        put_plain(&store, &random(1000, seed)).await;
    }
    let u = store.usage().await.unwrap();
    assert_eq!(u.chunks, 3);
    assert!(u.stored_bytes >= 3000);
}

pub(crate) async fn concurrent_puts_of_one_chunk(store: Store) {
    let data = random(500_000, 20);
    let id = ChunkId::of(&data);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let data = data.clone();
            tokio::spawn(async move { store.put(id, data.len() as u32, data, false).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.get(id).await.unwrap(), data);
    assert_eq!(store.usage().await.unwrap().chunks, 1);
}
