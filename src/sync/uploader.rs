//! The uploader: drains the journal in order.
//!
//! Each round takes up to [`BATCH`] journal entries and turns them into
//! commit ops:
//! - `Sync` pushes the node's *current* local state. When the same node
//!   appears again later in the round, only the last entry is pushed; when
//!   its parent folder has never reached the server, the parent is pushed
//!   first (a file created in a folder that was renamed meanwhile).
//! - Files with local content are chunked (FastCDC) from their working
//!   copy; the chunk ids of the whole round go to the server in groups to
//!   learn which are missing, and only those are uploaded (zstd on the
//!   wire), four at a time. Uploaded chunks also enter the chunk cache.
//! - `Delete` of a node the server never had is dropped locally.
//!
//! Files open for writing are deferred (their entries stay) until closed.
//! The round's ops go to the server in one commit request; outcomes are
//! applied, then the round's entries leave the journal in one batch. A
//! crash between commit and removal replays ops whose vector the server
//! already has from this device — a fast-forward, not a conflict.

use super::follower::set_connection;
use super::Backoff;
use crate::chunking::{chunk_bytes, chunk_stream};
use crate::protocol::{
    ChunkId, CommitOp, CommitOutcome, FileContent, Manifest, NodeChange, NodeId, NodeKind,
    NodeMeta, MAX_COMMIT_OPS,
};
use crate::remote::{Remote, RemoteError};
use crate::vfs::meta::{Inode, JournalOp, ROOT_INO};
use crate::vfs::{SentState, Vfs, VfsError};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Journal entries per round.
pub const BATCH: usize = 512;
/// Pause after a round, so that changes made close together share one.
const COALESCE: Duration = Duration::from_millis(30);
/// Longest sleep with an empty journal (a wake-up also comes with every
/// journal append).
const IDLE: Duration = Duration::from_secs(2);
/// Chunks per missing-chunks query / upload group.
const GROUP_CHUNKS: usize = 64;
const GROUP_BYTES: usize = 32 << 20;
const PARALLEL_PUTS: usize = 4;
/// Files up to this size are read whole and chunked in memory.
const IN_MEMORY_CHUNKING: u64 = 8 << 20;

pub struct Uploader {
    vfs: Arc<Vfs>,
    remote: Arc<dyn Remote>,
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Local(#[from] VfsError),
}

impl From<std::io::Error> for RoundError {
    fn from(e: std::io::Error) -> Self {
        RoundError::Local(VfsError::Io(e))
    }
}

/// What one planned op refers to locally.
enum Origin {
    Node { ino: u64, sent: SentState },
    Delete(NodeId),
}

impl Uploader {
    pub fn new(vfs: Arc<Vfs>, remote: Arc<dyn Remote>) -> Self {
        Uploader { vfs, remote }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        // After a permanent failure, rounds shrink to one entry so a single
        // bad entry cannot hold back the rest of the journal.
        let mut limit = BATCH;
        loop {
            let wait = match self.round(limit).await {
                Ok(true) => {
                    backoff.reset();
                    limit = BATCH;
                    // Let closely spaced changes (an untar, a copy of many
                    // small files) gather into one round.
                    Some(COALESCE)
                }
                Ok(false) => {
                    backoff.reset();
                    self.vfs.drained_notify.notify_waiters();
                    Some(IDLE)
                }
                Err(RoundError::Remote(e)) if e.is_transient() => {
                    set_connection(&self.vfs, &e);
                    let delay = backoff.next_delay();
                    tracing::info!("uploader: {e}; retrying in {delay:?}");
                    // New journal entries do not cut a backoff short: every
                    // round would re-read pending files for nothing.
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    None
                }
                Err(e) if limit > 1 => {
                    tracing::info!("uploader: {e}; retrying entries one at a time");
                    limit = 1;
                    None
                }
                Err(e) => {
                    if let RoundError::Remote(r) = &e {
                        set_connection(&self.vfs, r);
                    }
                    self.give_up_first(&e);
                    limit = BATCH;
                    None
                }
            };
            if let Some(d) = wait {
                if d == COALESCE {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(d) => {}
                    }
                } else {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.vfs.journal_notify.notified() => {}
                        _ = tokio::time::sleep(d) => {}
                    }
                    if !stop.is_cancelled() {
                        tokio::time::sleep(COALESCE).await;
                    }
                }
            } else if stop.is_cancelled() {
                return;
            }
        }
    }

    /// The first journal entry failed for a reason retrying cannot fix
    /// (the server refused it). It leaves the journal so the rest can
    /// proceed; the error and path are shown in `nimbus status`. The local
    /// content stays (the node keeps its local changes and is pushed again
    /// with its next change).
    fn give_up_first(&self, e: &RoundError) {
        // The same entry the failed one-entry round took.
        let Ok(first) = self.next_entries(1) else {
            return;
        };
        let Some((seq, op)) = first.into_iter().next() else {
            return;
        };
        let path = match &op {
            JournalOp::Sync { ino } => self.vfs.path_of(*ino).unwrap_or_default(),
            JournalOp::Delete { name, .. } => name.clone(),
        };
        tracing::warn!(path = %path, "uploader: giving up on this change: {e}");
        let mut t = self.vfs.meta.txn();
        t.journal_done(seq);
        // The node's other pending pushes would fail the same way.
        if let JournalOp::Sync { ino } = &op {
            let mut from = seq + 1;
            while let Ok(page) = self.vfs.meta.journal(from, 1024) {
                let Some((last, _)) = page.last() else { break };
                from = last + 1;
                for (s, o) in page {
                    if matches!(o, JournalOp::Sync { ino: i } if i == *ino) {
                        t.journal_done(s);
                    }
                }
            }
        }
        if t.commit().is_err() {
            return;
        }
        let mut st = self.vfs.sync_state.lock();
        st.failed.push((path, e.to_string()));
        if st.failed.len() > 50 {
            st.failed.remove(0);
        }
    }

    /// Runs one round; `Ok(false)` when there was nothing it could push.
    /// (Tests drive the uploader with this instead of [`Uploader::run`].)
    pub async fn run_once(&self) -> anyhow::Result<bool> {
        Ok(self.round(BATCH).await?)
    }

    /// One round; `Ok(false)` when there was nothing it could push.
    async fn round(&self, limit: usize) -> Result<bool, RoundError> {
        let entries = self.next_entries(limit)?;
        if entries.is_empty() {
            return Ok(false);
        }
        // Last position of each node in this round.
        let mut last_pos: HashMap<u64, usize> = HashMap::new();
        for (i, (_, op)) in entries.iter().enumerate() {
            if let JournalOp::Sync { ino } = op {
                last_pos.insert(*ino, i);
            }
        }
        let mut done: Vec<u64> = Vec::new();
        let mut ops: Vec<CommitOp> = Vec::new();
        let mut origins: Vec<Origin> = Vec::new();
        let mut planned: HashSet<u64> = HashSet::new();
        let mut files: Vec<(usize, Inode)> = Vec::new();
        for (i, (seq, op)) in entries.iter().enumerate() {
            match op {
                JournalOp::Sync { ino } => {
                    let Some(inode) = self.vfs.meta.inode(*ino)? else {
                        done.push(*seq);
                        continue;
                    };
                    if inode.unlinked || inode.ino == ROOT_INO {
                        done.push(*seq);
                        continue;
                    }
                    if self.deferred(*ino)? {
                        continue; // opened for writing since: close journals it again
                    }
                    if last_pos.get(ino) != Some(&i) || planned.contains(ino) {
                        done.push(*seq);
                        continue;
                    }
                    // Parents the server has never seen go first.
                    let mut chain = Vec::new();
                    let mut p = inode.parent;
                    while p != ROOT_INO && p != 0 && !planned.contains(&p) {
                        let Some(pi) = self.vfs.meta.inode(p)? else {
                            break;
                        };
                        if pi.server_seq > 0 || pi.unlinked {
                            break;
                        }
                        p = pi.parent;
                        chain.push(pi);
                    }
                    for pi in chain.into_iter().rev() {
                        planned.insert(pi.ino);
                        let op = self.upsert(&pi, None)?;
                        origins.push(Origin::Node {
                            ino: pi.ino,
                            sent: SentState {
                                rev: pi.local_rev,
                                name: pi.name.clone(),
                                content: false,
                                conflict: false,
                            },
                        });
                        ops.push(op);
                    }
                    planned.insert(*ino);
                    if inode.kind == NodeKind::File && inode.dirty {
                        files.push((ops.len(), inode.clone()));
                    }
                    let op = self.upsert(&inode, None)?;
                    origins.push(Origin::Node {
                        ino: inode.ino,
                        sent: SentState {
                            rev: inode.local_rev,
                            name: inode.name.clone(),
                            content: inode.dirty,
                            conflict: false,
                        },
                    });
                    ops.push(op);
                    done.push(*seq);
                }
                JournalOp::Delete { node_id, base, .. } => {
                    done.push(*seq);
                    if base.is_empty() {
                        self.vfs.delete_done(node_id)?;
                        continue;
                    }
                    ops.push(CommitOp {
                        node_id: *node_id,
                        base: base.clone(),
                        change: NodeChange::Delete,
                    });
                    origins.push(Origin::Delete(*node_id));
                }
            }
        }
        if done.is_empty() {
            return Ok(false);
        }
        // Content: chunk and upload what the server lacks.
        let mut group = ChunkGroup::default();
        for (op_index, inode) in &files {
            let path = self.vfs.work_path_of(inode);
            let manifest = self.upload_file(path, &mut group).await?;
            if let NodeChange::Upsert { meta, .. } = &mut ops[*op_index].change {
                meta.content = Some(FileContent { manifest });
            }
        }
        self.flush_group(&mut group).await?;

        for (ops_part, origins_part) in ops
            .chunks(MAX_COMMIT_OPS)
            .zip(origins.chunks(MAX_COMMIT_OPS))
        {
            let results = self.remote.commit(ops_part.to_vec()).await?;
            for (outcome, origin) in results.iter().zip(origins_part) {
                self.apply_outcome(outcome, origin)?;
            }
        }
        let mut t = self.vfs.meta.txn();
        for seq in &done {
            t.journal_done(*seq);
        }
        t.commit()?;
        {
            let mut st = self.vfs.sync_state.lock();
            st.connection = "online";
            st.last_sync_unix = Some(crate::vfs::now_ns() / 1_000_000_000);
        }
        self.vfs.drained_notify.notify_waiters();
        Ok(true)
    }

    /// Up to `limit` journal entries in order, skipping those of files
    /// open for writing (deferred until closed), so a file that stays open
    /// and is fsynced often cannot hold back the rest of the journal.
    fn next_entries(&self, limit: usize) -> Result<Vec<(u64, JournalOp)>, RoundError> {
        let mut out = Vec::new();
        let mut from = 0;
        while out.len() < limit {
            let page = self.vfs.meta.journal(from, limit)?;
            let Some((last, _)) = page.last() else { break };
            from = last + 1;
            for (seq, op) in page {
                if let JournalOp::Sync { ino } = &op {
                    if self.deferred(*ino)? {
                        continue;
                    }
                }
                out.push((seq, op));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn deferred(&self, ino: u64) -> Result<bool, RoundError> {
        Ok(self.vfs.has_writers(ino)
            && !self.vfs.fsync_waiting(ino)
            && self
                .vfs
                .meta
                .inode(ino)?
                .is_some_and(|i| i.kind == NodeKind::File && !i.unlinked))
    }

    fn upsert(&self, inode: &Inode, content: Option<FileContent>) -> Result<CommitOp, RoundError> {
        let parent_id = if inode.parent == ROOT_INO || inode.parent == 0 {
            NodeId::ROOT
        } else {
            self.vfs.meta.inode_required(inode.parent)?.node_id
        };
        let content = match inode.kind {
            NodeKind::File => Some(match content {
                Some(c) => c,
                None => self.vfs.meta.content(inode.ino)?.unwrap_or(FileContent {
                    manifest: Manifest::default(),
                }),
            }),
            _ => None,
        };
        Ok(CommitOp {
            node_id: inode.node_id,
            base: inode.vv.clone(),
            change: NodeChange::Upsert {
                parent: parent_id,
                name: inode.name.clone(),
                meta: NodeMeta {
                    kind: inode.kind,
                    mode: inode.mode,
                    mtime_ns: inode.mtime_ns,
                    content,
                    symlink_target: inode.symlink_target.clone(),
                },
            },
        })
    }

    fn apply_outcome(&self, outcome: &CommitOutcome, origin: &Origin) -> Result<(), RoundError> {
        match (outcome, origin) {
            (
                CommitOutcome::Applied { node } | CommitOutcome::Renamed { node },
                Origin::Node { ino, sent },
            ) => {
                self.vfs.commit_done(*ino, sent, node)?;
            }
            (CommitOutcome::ConflictCopy { node, copy }, Origin::Node { ino, sent }) => {
                self.vfs.sync_state.lock().conflicts += 1;
                let sent = SentState {
                    conflict: true,
                    content: true,
                    ..sent.clone()
                };
                self.vfs.commit_done(*ino, &sent, node)?;
                self.vfs.apply_remote(copy)?;
            }
            (CommitOutcome::Superseded { node }, Origin::Node { ino, sent }) => {
                let sent = SentState {
                    content: false,
                    ..sent.clone()
                };
                self.vfs.commit_done(*ino, &sent, node)?;
            }
            (CommitOutcome::Superseded { node }, Origin::Delete(id)) => {
                // The delete lost against an edit elsewhere: the node
                // comes back.
                self.vfs.delete_done(id)?;
                self.vfs.apply_remote(node)?;
            }
            (
                CommitOutcome::Applied { .. }
                | CommitOutcome::Renamed { .. }
                | CommitOutcome::ConflictCopy { .. }
                | CommitOutcome::AlreadyGone,
                Origin::Delete(id),
            ) => {
                self.vfs.delete_done(id)?;
            }
            (CommitOutcome::AlreadyGone, Origin::Node { .. }) => {}
        }
        Ok(())
    }

    /// Chunks one working copy and queues its chunks for upload.
    async fn upload_file(
        &self,
        path: std::path::PathBuf,
        group: &mut ChunkGroup,
    ) -> Result<Manifest, RoundError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(ChunkId, Bytes)>(4);
        let chunker = tokio::task::spawn_blocking(move || -> std::io::Result<Manifest> {
            let mut file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            if len <= IN_MEMORY_CHUNKING {
                // Small files: one read, chunked in place. (The streaming
                // chunker allocates and zeroes a max-chunk buffer per file,
                // which dominated the cost of many small files.)
                let mut data = Vec::with_capacity(len as usize);
                std::io::Read::read_to_end(&mut file, &mut data)?;
                let data = Bytes::from(data);
                let mut chunks = Vec::new();
                for (r, range) in chunk_bytes(&data) {
                    chunks.push(r);
                    tx.blocking_send((r.id, data.slice(range)))
                        .map_err(|_| std::io::Error::other("uploader stopped"))?;
                }
                return Ok(Manifest { chunks });
            }
            chunk_stream(file, |r, data| {
                tx.blocking_send((r.id, Bytes::from(data)))
                    .map_err(|_| std::io::Error::other("uploader stopped"))
            })
        });
        while let Some((id, data)) = rx.recv().await {
            group.push(id, data);
            if group.is_full() {
                self.flush_group(group).await?;
            }
        }
        let manifest = chunker
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(manifest)
    }

    async fn flush_group(&self, group: &mut ChunkGroup) -> Result<(), RoundError> {
        if group.chunks.is_empty() {
            return Ok(());
        }
        let chunks = std::mem::take(&mut group.chunks);
        group.bytes = 0;
        let ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
        let missing: HashSet<ChunkId> = self
            .remote
            .missing_chunks(&ids)
            .await?
            .into_iter()
            .collect();
        let remote = self.remote.clone();
        let uploads: Vec<_> = chunks
            .iter()
            .filter(|(id, _)| missing.contains(id))
            .map(|(id, data)| {
                let (remote, id, data) = (remote.clone(), *id, data.clone());
                async move { remote.put_chunk(id, data).await }
            })
            .collect();
        let results: Vec<Result<(), RemoteError>> = futures::stream::iter(uploads)
            .buffer_unordered(PARALLEL_PUTS)
            .collect()
            .await;
        for r in results {
            r?;
        }
        for (id, data) in &chunks {
            self.vfs.chunks.store(*id, data).await?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct ChunkGroup {
    chunks: Vec<(ChunkId, Bytes)>,
    bytes: usize,
}

impl ChunkGroup {
    fn push(&mut self, id: ChunkId, data: Bytes) {
        if self.chunks.iter().any(|(c, _)| *c == id) {
            return;
        }
        self.bytes += data.len();
        self.chunks.push((id, data));
    }
    fn is_full(&self) -> bool {
        self.chunks.len() >= GROUP_CHUNKS || self.bytes >= GROUP_BYTES
    }
}
