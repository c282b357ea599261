//! Transfer: chunk working copies (FastCDC), ask the server which chunks
//! it lacks, upload only those (zstd on the wire), [`PARALLEL_PUTS`] at a
//! time; uploaded chunks also enter the local chunk cache.
//!
//! A file that changed while it was being chunked (its `local_rev` moved)
//! is not sent with that content: the op keeps the content the server has,
//! and the change's own journal record sends the new one.
//!
//! Progress is reported to the core chunk group by chunk group
//! (`SyncStatus::note_upload_progress`), so what `sync --wait` shows as left
//! shrinks while a large file goes up.
//!
//! A chunk upload refused in a way only the user can fix (a proxy's 413
//! body limit) holds back the content of the files that need that chunk,
//! not the round: they are listed in [`Plan::held`] with the refusal, and
//! everything else goes on.

use super::plan::{Origin, Plan};
use super::{RoundError, Uploader};
use crate::chunking::{chunk_bytes, chunk_stream};
use crate::protocol::{ChunkId, FileContent, Manifest, NodeChange};
use crate::remote::{FailureClass, RemoteError};
use crate::vfs::meta::Inode;
use crate::vfs::VfsError;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashSet;

/// Chunks per missing-chunks query / upload group.
const GROUP_CHUNKS: usize = 64;
const GROUP_BYTES: usize = 32 << 20;
/// Chunk uploads in flight at once.
pub const PARALLEL_PUTS: usize = 4;
/// Files up to this size are read whole and chunked in memory.
const IN_MEMORY_CHUNKING: u64 = 8 << 20;

impl Uploader {
    /// Uploads the content of every file of the plan and puts the new
    /// manifests into their ops.
    pub(super) async fn transfer(&self, plan: &mut Plan) -> Result<(), RoundError> {
        let mut group = ChunkGroup::default();
        let mut chunked = Vec::new();
        let inos: Vec<u64> = plan.files.iter().map(|(_, i)| i.ino).collect();
        self.vfs.status().clear_upload_progress(&inos);
        for (op_indices, inode) in std::mem::take(&mut plan.files) {
            let path = self.vfs.work_path_of(&inode);
            let manifest = match self.upload_file(path, inode.ino, &mut group).await {
                Ok(m) => m,
                // Removed or rewritten since it was planned (its working
                // copy went with it): sent without new content, like any
                // file that changed during its upload.
                Err(RoundError::Local(VfsError::Io(e)))
                    if e.kind() == std::io::ErrorKind::NotFound
                        && self.changed_since_planned(&inode)? =>
                {
                    self.without_new_content(plan, &inode, op_indices);
                    continue;
                }
                Err(e) => return Err(e),
            };
            chunked.push((op_indices, inode, manifest));
        }
        self.flush_group(&mut group).await?;
        for (op_indices, inode, manifest) in chunked {
            let refused = manifest
                .chunks
                .iter()
                .any(|c| group.refused.contains(&c.id));
            let now = self.vfs.inode(inode.ino)?;
            // Renamed, chmodded or even deleted since it was planned, but
            // not written (a write moves mtime): what was read is a whole
            // version, and goes. (An editor's temporary file renamed over
            // the document and replaced again is such a version: sending
            // it without content would show other devices an empty file.)
            let unchanged = now.is_some_and(|n| n.mtime == inode.mtime && n.size == inode.size);
            if refused {
                plan.held.push(inode.ino);
            }
            let hash = FileContent {
                manifest: manifest.clone(),
            }
            .hash();
            if !unchanged {
                self.without_new_content(plan, &inode, op_indices);
                continue;
            }
            for i in op_indices {
                if refused {
                    if let (_, Origin::Node { sent, .. }) = &mut plan.origins[i] {
                        sent.content = false;
                    }
                } else {
                    if let NodeChange::Upsert { meta, .. } = &mut plan.ops[i].change {
                        meta.content = Some(FileContent {
                            manifest: manifest.clone(),
                        });
                    }
                    // An earlier op of the file sends that content too.
                    if plan.chained.contains(&i) {
                        if let Some(seen) = &mut plan.ops[i].seen {
                            seen.content = Some(hash);
                        }
                    }
                    if let (_, Origin::Node { sent, .. }) = &mut plan.origins[i] {
                        sent.state.content = Some(hash);
                    }
                }
            }
        }
        plan.refusal = group.refusal.take();
        Ok(())
    }

    /// The ops `op_indices` of file `inode` go without the new content
    /// planned: with the content the server has — or, for a file the server
    /// has never had, not at all this round ([`Plan::changed_new`]; a
    /// refused chunk is handled by [`Plan::held`]).
    fn without_new_content(&self, plan: &mut Plan, inode: &Inode, op_indices: Vec<usize>) {
        for i in op_indices {
            if let (_, Origin::Node { sent, .. }) = &mut plan.origins[i] {
                sent.content = false;
            }
        }
        if !inode.on_server() {
            plan.changed_new.insert(inode.ino);
        }
    }

    /// True when `planned` was removed or changed after the round planned
    /// it.
    fn changed_since_planned(&self, planned: &Inode) -> Result<bool, RoundError> {
        Ok(match self.vfs.inode(planned.ino)? {
            Some(now) => now.unlinked || now.local_rev != planned.local_rev,
            None => true,
        })
    }

    /// Chunks one working copy and queues its chunks for upload.
    async fn upload_file(
        &self,
        path: std::path::PathBuf,
        ino: u64,
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
            group.push(id, data, ino);
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
        let ids: Vec<ChunkId> = chunks.iter().map(|(id, _, _)| *id).collect();
        let missing: HashSet<ChunkId> = self
            .remote
            .missing_chunks(&ids)
            .await?
            .into_iter()
            .collect();
        let remote = self.remote.clone();
        let uploads: Vec<_> = chunks
            .iter()
            .filter(|(id, _, _)| missing.contains(id))
            .map(|(id, data, _)| {
                let (remote, id, data) = (remote.clone(), *id, data.clone());
                async move { (id, remote.put_chunk(id, data).await) }
            })
            .collect();
        let results: Vec<(ChunkId, Result<(), RemoteError>)> = futures::stream::iter(uploads)
            .buffer_unordered(PARALLEL_PUTS)
            .collect()
            .await;
        for (id, r) in results {
            match r {
                Ok(()) => {}
                Err(e) if matches!(e.class(), FailureClass::NeedsUser(_)) => {
                    group.refused.insert(id);
                    group.refusal = Some(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (id, data, ino) in &chunks {
            if !group.refused.contains(id) {
                self.vfs.keep_uploaded_chunk(*id, data).await?;
                self.vfs
                    .status()
                    .note_upload_progress(*ino, data.len() as u64);
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct ChunkGroup {
    /// Chunk, bytes, and the file it is counted for in upload progress.
    chunks: Vec<(ChunkId, Bytes, u64)>,
    bytes: usize,
    /// Chunks whose upload was refused until the user acts, this round.
    refused: HashSet<ChunkId>,
    /// The last such refusal.
    refusal: Option<RemoteError>,
}

impl ChunkGroup {
    /// Queues chunk `id` of file `ino` (a chunk already queued counts for
    /// the file that queued it first).
    fn push(&mut self, id: ChunkId, data: Bytes, ino: u64) {
        if self.chunks.iter().any(|(c, _, _)| *c == id) {
            return;
        }
        self.bytes += data.len();
        self.chunks.push((id, data, ino));
    }
    fn is_full(&self) -> bool {
        self.chunks.len() >= GROUP_CHUNKS || self.bytes >= GROUP_BYTES
    }
}
