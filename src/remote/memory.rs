//! An in-memory [`Remote`] for core tests: keeps chunks and node records in
//! maps, applies every commit as a fast-forward (it does not implement the
//! server's conflict rules, which the server's own tests cover), and can be
//! switched offline to inject failures.

use super::{Remote, RemoteError};
use crate::protocol::{
    distinct_ids, ChunkId, CommitOp, CommitOutcome, DeviceId, NodeChange, NodeMeta, NodeRecord,
    PullResponse, SpaceReport, MAX_BATCH_BYTES, MAX_BATCH_CHUNKS,
};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Default)]
pub struct MemoryRemote {
    pub device: Mutex<Option<DeviceId>>,
    chunks: Mutex<HashMap<ChunkId, Bytes>>,
    nodes: Mutex<Vec<NodeRecord>>,
    seq: AtomicU64,
    pub offline: AtomicBool,
    /// Upserts of these names are refused (400), like a server-side rule.
    pub refuse_names: Mutex<Vec<String>>,
    pub puts: AtomicU64,
    /// Single chunk downloads (`get_chunk` calls).
    pub gets: AtomicU64,
    /// Batch downloads (`get_chunks` calls, failed ones included).
    pub batch_gets: AtomicU64,
    /// Batch downloads fail with a 500 (single ones still work), to test
    /// the fallback of the read path.
    pub fail_batches: AtomicBool,
}

impl MemoryRemote {
    pub fn new(device: DeviceId) -> Self {
        let m = MemoryRemote::default();
        *m.device.lock() = Some(device);
        m
    }
    fn check(&self) -> Result<(), RemoteError> {
        if self.offline.load(Ordering::SeqCst) {
            Err(RemoteError::Unreachable("offline (test)".into()))
        } else {
            Ok(())
        }
    }
    pub fn node(&self, name: &str) -> Option<NodeRecord> {
        self.nodes.lock().iter().find(|n| n.name == name).cloned()
    }
    pub fn chunk_count(&self) -> usize {
        self.chunks.lock().len()
    }
    /// Injects a change as if another device had committed it.
    pub fn inject(&self, mut rec: NodeRecord) {
        rec.seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let mut nodes = self.nodes.lock();
        nodes.retain(|n| n.node_id != rec.node_id);
        nodes.push(rec);
    }
}

#[async_trait]
impl Remote for MemoryRemote {
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        self.check()?;
        let c = self.chunks.lock();
        Ok(ids.iter().filter(|i| !c.contains_key(i)).copied().collect())
    }
    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<(), RemoteError> {
        self.check()?;
        if !id.verify(&data) {
            return Err(RemoteError::Rejected {
                status: 400,
                code: "hash_mismatch".into(),
                message: "hash mismatch".into(),
                op: None,
            });
        }
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.chunks.lock().insert(id, data);
        Ok(())
    }
    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, RemoteError> {
        self.check()?;
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.chunks
            .lock()
            .get(&id)
            .cloned()
            .ok_or_else(|| RemoteError::NotFound(id.to_hex()))
    }
    /// The server's rules of `chunks/batch`: at most `MAX_BATCH_CHUNKS`
    /// distinct ids and `MAX_BATCH_BYTES` (413 `batch_too_large`), every
    /// chunk known (404 otherwise).
    async fn get_chunks(&self, ids: &[ChunkId]) -> Result<Vec<(ChunkId, Bytes)>, RemoteError> {
        self.check()?;
        self.batch_gets.fetch_add(1, Ordering::SeqCst);
        if self.fail_batches.load(Ordering::SeqCst) {
            return Err(RemoteError::Server {
                status: 500,
                message: "batch refused (test)".into(),
            });
        }
        let ids = distinct_ids(ids);
        let too_large = |message: String| RemoteError::Rejected {
            status: 413,
            code: "batch_too_large".into(),
            message,
            op: None,
        };
        if ids.len() > MAX_BATCH_CHUNKS {
            return Err(too_large(format!("{} chunk ids", ids.len())));
        }
        let chunks = self.chunks.lock();
        let out = ids
            .into_iter()
            .map(|id| match chunks.get(&id) {
                Some(data) => Ok((id, data.clone())),
                None => Err(RemoteError::NotFound(format!("chunk {id} not found"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let total: u64 = out.iter().map(|(_, d)| d.len() as u64).sum();
        if total > MAX_BATCH_BYTES {
            return Err(too_large(format!("{total} bytes")));
        }
        Ok(out)
    }
    async fn commit(&self, ops: Vec<CommitOp>) -> Result<Vec<CommitOutcome>, RemoteError> {
        self.check()?;
        let device = self.device.lock().unwrap_or(DeviceId(uuid::Uuid::nil()));
        let mut out = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let mut nodes = self.nodes.lock();
            let existing = nodes.iter().position(|n| n.node_id == op.node_id);
            if let NodeChange::Upsert { name, .. } = &op.change {
                if self.refuse_names.lock().contains(name) {
                    return Err(RemoteError::Rejected {
                        status: 400,
                        code: "invalid_name".into(),
                        message: format!("name {name:?} refused (test)"),
                        op: Some(i),
                    });
                }
            }
            match op.change {
                NodeChange::Upsert {
                    parent,
                    name,
                    mut links,
                    meta,
                } => {
                    links.sort();
                    let mut vv = existing.map(|i| nodes[i].vv.clone()).unwrap_or_default();
                    vv.merge(&op.base);
                    vv.increment(device);
                    let rec = NodeRecord {
                        node_id: op.node_id,
                        parent: Some(parent),
                        name,
                        links,
                        deleted: false,
                        meta,
                        vv,
                        seq,
                    };
                    if let Some(i) = existing {
                        nodes.remove(i);
                    }
                    nodes.push(rec.clone());
                    out.push(CommitOutcome::Applied { node: rec });
                }
                NodeChange::Delete => match existing {
                    None => out.push(CommitOutcome::AlreadyGone),
                    Some(i) => {
                        let mut rec = nodes.remove(i);
                        rec.deleted = true;
                        rec.links.clear();
                        rec.seq = seq;
                        rec.vv.increment(device);
                        nodes.push(rec.clone());
                        out.push(CommitOutcome::Applied { node: rec });
                    }
                },
            }
        }
        Ok(out)
    }
    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullResponse, RemoteError> {
        self.check()?;
        let nodes = self.nodes.lock();
        let mut changes: Vec<NodeRecord> =
            nodes.iter().filter(|n| n.seq > cursor).cloned().collect();
        changes.sort_by_key(|n| n.seq);
        let has_more = changes.len() > limit as usize;
        changes.truncate(limit as usize);
        let cursor = changes.last().map(|n| n.seq).unwrap_or(cursor);
        Ok(PullResponse {
            changes,
            cursor,
            has_more,
        })
    }

    /// Live files' sizes; memory has no bound (`free_bytes: None`).
    async fn space(&self) -> Result<SpaceReport, RemoteError> {
        self.check()?;
        let nodes = self.nodes.lock();
        let live = nodes.iter().filter(|n| !n.deleted);
        Ok(SpaceReport {
            used_bytes: live.clone().map(|n| n.meta.size()).sum(),
            nodes: live.count() as u64 + 1,
            quota_bytes: None,
            free_bytes: None,
        })
    }
}

/// A plain folder record, for tests that inject remote changes.
pub fn folder_meta() -> NodeMeta {
    NodeMeta::new(
        crate::protocol::NodeKind::Dir,
        0o755,
        crate::protocol::Timestamp::EPOCH,
    )
}
