//! Batched reads of small files: a cold read of a small file fetches, in
//! the same single request, the missing chunks of the small files that
//! follow it in its folder, so `cat */*`, `tar c`, `rsync`, `grep -r` over
//! cold files cost about one request per batch instead of one per file.
//!
//! - **When**: a read that must wait on the network
//!   ([`Vfs::read_fetching`]) of a file of at most [`SMALL_FILE_MAX`]
//!   bytes (its manifest's total) with a chunk that is not local. Larger
//!   files keep the normal path (one request per chunk, read-ahead).
//! - **What**: the file's own missing chunks first, then those of the
//!   small files after it in its folder in name order (the order of
//!   `readdir` and of a sorted glob), scanning at most
//!   [`SIBLING_SCAN_ENTRIES`] entries; folders, symlinks, special nodes
//!   and files over [`SMALL_FILE_MAX`] are passed over. At most
//!   [`BATCH_MAX_CHUNKS`] chunks and [`BATCH_MAX_BYTES`] bytes per batch
//!   (well within the server's `MAX_BATCH_CHUNKS` / `MAX_BATCH_BYTES`).
//! - **How**: [`ChunkCache::fetch_batch`] registers the batch's chunks as
//!   in flight and fetches them in the background; the read then asks the
//!   cache for its own chunks as usual, and those loads wait for the batch
//!   (no second request). The siblings' chunks land on disk, so their
//!   first reads are local (`read_now`). A batch is only sent when it
//!   carries more than the file's own chunks; a lone cold file, or one
//!   whose neighbours are cached, takes the single-chunk path.
//! - **Failure**: a failed batch is nobody's error: each waiting read
//!   fetches its chunk alone (and gets that request's error, if any), and
//!   batches pause for a while (see `chunk_cache`).
//! - Not on `readdir`: listing a folder stays metadata only (a file
//!   manager opening a folder of small files would otherwise download
//!   them all); the first read in it starts the batch.
//!
//! Only metadata reads of the local cache (entries and manifests) are
//! added to a cold read; no lock is held across them.

use super::*;

/// Files up to this many bytes are read in batches.
pub const SMALL_FILE_MAX: u64 = 64 * 1024;
/// Most chunks of one batch.
pub const BATCH_MAX_CHUNKS: usize = 256;
/// Most bytes of one batch.
pub const BATCH_MAX_BYTES: u64 = 2 * 1024 * 1024;
/// Most folder entries looked at after the file being read.
pub const SIBLING_SCAN_ENTRIES: usize = 1024;

impl Vfs {
    /// Starts a batch for a cold read of `ino` (whose content is `c`) if
    /// it is a small file with missing chunks and small files after it
    /// are cold too (see the module docs). Errors reading the local
    /// metadata only mean no batch: the read goes on alone.
    pub(super) fn batch_small_files(&self, ino: u64, c: &ContentView) {
        if c.manifest.total_len() > SMALL_FILE_MAX {
            return;
        }
        let own: Vec<(ChunkId, u32)> = c
            .manifest
            .chunks
            .iter()
            .filter(|ch| !self.chunks.is_local(&ch.id))
            .map(|ch| (ch.id, ch.len))
            .collect();
        // A file a batch is already fetching was reached by that batch,
        // whose reader's turn to start the next one comes at the next
        // file it does not carry: so batches do not overlap into many
        // small ones while the previous batch is being stored.
        if own.is_empty() || own.iter().any(|(id, _)| self.chunks.in_batch(id)) {
            return;
        }
        let mut candidates = own.clone();
        if let Err(e) = self.cold_small_siblings(ino, &mut candidates) {
            tracing::debug!(ino, "no batch: {e}");
            return;
        }
        let n = self.chunks.fetch_batch(
            &candidates,
            own.len() + 1,
            BATCH_MAX_CHUNKS,
            BATCH_MAX_BYTES,
        );
        if n > 0 {
            tracing::debug!(ino, chunks = n, "fetching small files in one batch");
        }
    }

    /// Appends to `out` the missing chunks of the small files after
    /// `ino`'s entry in its folder, until the batch bounds are reached.
    fn cold_small_siblings(&self, ino: u64, out: &mut Vec<(ChunkId, u32)>) -> VfsResult<()> {
        let Some(inode) = self.meta.inode(ino)? else {
            return Ok(());
        };
        if inode.unlinked || inode.parent == 0 {
            return Ok(());
        }
        let mut bytes: u64 = out.iter().map(|(_, len)| u64::from(*len)).sum();
        for (_, dentry) in self
            .meta
            .list(inode.parent, Some(&inode.name), SIBLING_SCAN_ENTRIES)?
        {
            if out.len() >= BATCH_MAX_CHUNKS || bytes >= BATCH_MAX_BYTES {
                break;
            }
            if dentry.kind != NodeKind::File {
                continue;
            }
            let Some(content) = self.meta.content(dentry.ino)? else {
                continue;
            };
            let manifest = &content.manifest;
            let len = manifest.total_len();
            if len > SMALL_FILE_MAX || bytes + len > BATCH_MAX_BYTES {
                continue;
            }
            for ch in &manifest.chunks {
                if !self.chunks.is_local(&ch.id) {
                    bytes += u64::from(ch.len);
                    out.push((ch.id, ch.len));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
