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
use crate::chunking::chunk_stream;
use crate::protocol::{
    ChunkId, CommitOp, CommitOutcome, FileContent, Manifest, NodeChange, NodeId, NodeKind,
    NodeMeta, MAX_COMMIT_OPS,
};
use crate::remote::{Remote, RemoteError};
use crate::vfs::meta::{Inode, JournalOp, ROOT_INO};
use crate::vfs::{Vfs, VfsError};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Journal entries per round.
pub const BATCH: usize = 512;
/// Chunks per missing-chunks query / upload group.
const GROUP_CHUNKS: usize = 64;
const GROUP_BYTES: usize = 32 << 20;
const PARALLEL_PUTS: usize = 4;

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
    Node { ino: u64, rev: u64, content: bool },
    Delete,
}

impl Uploader {
    pub fn new(vfs: Arc<Vfs>, remote: Arc<dyn Remote>) -> Self {
        Uploader { vfs, remote }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        loop {
            let wait = match self.round().await {
                Ok(true) => {
                    backoff.reset();
                    None
                }
                Ok(false) => {
                    backoff.reset();
                    self.vfs.drained_notify.notify_waiters();
                    Some(Duration::from_secs(2))
                }
                Err(RoundError::Remote(e)) if e.is_transient() => {
                    set_connection(&self.vfs, &e);
                    tracing::info!("uploader: {e}; retrying");
                    Some(backoff.next_delay())
                }
                Err(e) => {
                    if let RoundError::Remote(r) = &e {
                        set_connection(&self.vfs, r);
                    }
                    tracing::warn!("uploader: {e}");
                    let mut st = self.vfs.sync_state.lock();
                    st.failed.push((String::new(), e.to_string()));
                    if st.failed.len() > 50 {
                        st.failed.remove(0);
                    }
                    drop(st);
                    Some(backoff.next_delay().max(Duration::from_secs(5)))
                }
            };
            if let Some(d) = wait {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.vfs.journal_notify.notified() => {}
                    _ = tokio::time::sleep(d) => {}
                }
            } else if stop.is_cancelled() {
                return;
            }
        }
    }

    /// Runs one round; `Ok(false)` when there was nothing it could push.
    /// (Tests drive the uploader with this instead of [`Uploader::run`].)
    pub async fn run_once(&self) -> anyhow::Result<bool> {
        Ok(self.round().await?)
    }

    /// One round; `Ok(false)` when there was nothing it could push.
    async fn round(&self) -> Result<bool, RoundError> {
        let entries = self.vfs.meta.journal(0, BATCH)?;
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
                    if inode.dirty && self.vfs.has_writers(*ino) {
                        continue; // deferred until closed
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
                            rev: pi.local_rev,
                            content: false,
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
                        rev: inode.local_rev,
                        content: inode.dirty,
                    });
                    ops.push(op);
                    done.push(*seq);
                }
                JournalOp::Delete { node_id, base, .. } => {
                    done.push(*seq);
                    if base.is_empty() {
                        continue;
                    }
                    ops.push(CommitOp {
                        node_id: *node_id,
                        base: base.clone(),
                        change: NodeChange::Delete,
                    });
                    origins.push(Origin::Delete);
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
                Origin::Node { ino, rev, content },
            ) => {
                self.vfs.commit_done(*ino, *rev, node, *content)?;
            }
            (CommitOutcome::ConflictCopy { node, copy }, Origin::Node { ino, rev, .. }) => {
                self.vfs.sync_state.lock().conflicts += 1;
                self.vfs.commit_done(*ino, *rev, node, true)?;
                self.vfs.apply_remote(copy)?;
            }
            (CommitOutcome::Superseded { node }, Origin::Node { ino, rev, .. }) => {
                self.vfs.commit_done(*ino, *rev, node, false)?;
            }
            (CommitOutcome::Superseded { node }, Origin::Delete) => {
                // The delete lost against an edit elsewhere: the node
                // comes back.
                self.vfs.apply_remote(node)?;
            }
            (
                CommitOutcome::Applied { .. }
                | CommitOutcome::Renamed { .. }
                | CommitOutcome::ConflictCopy { .. },
                Origin::Delete,
            )
            | (CommitOutcome::AlreadyGone, _) => {}
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
            let file = std::fs::File::open(&path)?;
            chunk_stream(
                std::io::BufReader::with_capacity(1 << 20, file),
                |r, data| {
                    tx.blocking_send((r.id, Bytes::from(data)))
                        .map_err(|_| std::io::Error::other("uploader stopped"))
                },
            )
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
