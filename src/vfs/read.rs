//! The read path: a handle reads the working copy when the inode has one,
//! else its manifest's chunks from the chunk cache (fetching what is
//! missing), with read-ahead on sequential reads, and cold small files in
//! batches (`batch_read`).

use super::*;

impl Vfs {
    /// Read without waiting: `None` when some chunk must be loaded first
    /// (then [`Vfs::read_fetching`]).
    pub(super) fn read_now(&self, fh: u64, offset: u64, size: u32) -> VfsResult<Option<Vec<u8>>> {
        let h = self.handle(fh)?;
        if let Some(r) = self.read_work(&h, offset, size)? {
            return Ok(Some(r));
        }
        let Some(c) = &h.content else {
            return Ok(Some(Vec::new()));
        };
        let slices = c.manifest.slices(&c.offsets, offset, size as u64);
        let mut out = Vec::with_capacity(slices.iter().map(|s| s.len as usize).sum());
        for s in &slices {
            let chunk_len = c.manifest.chunks[s.index].len;
            match self
                .chunks
                .read_local(&s.id, s.offset_in_chunk, s.len, chunk_len)
            {
                Some(data) => out.extend_from_slice(&data),
                None => return Ok(None),
            }
        }
        self.read_ahead(&h, c, offset, out.len() as u64);
        Ok(Some(out))
    }

    pub(super) fn read_work(
        &self,
        h: &Handle,
        offset: u64,
        size: u32,
    ) -> VfsResult<Option<Vec<u8>>> {
        let Some(o) = self.open.get(h.ino) else {
            return Ok(None);
        };
        // The handle's generation: the current working copy, or the one
        // its generation had when a remote change retired it.
        let (file, current, unsaved) = {
            let st = o.state.lock();
            if h.generation == st.generation {
                (st.work.clone(), true, st.unsaved)
            } else {
                (st.retired.get(&h.generation).cloned(), false, None)
            }
        };
        let Some(file) = file else { return Ok(None) };
        let len = match (current, unsaved) {
            (false, _) => file.metadata()?.len(),
            (true, Some((s, _))) => s,
            (true, None) => self.meta.inode_required(h.ino)?.size,
        };
        if offset >= len {
            return Ok(Some(Vec::new()));
        }
        let n = (size as u64).min(len - offset) as usize;
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            let r = pio::read_at(&file, &mut buf[done..], offset + done as u64)?;
            if r == 0 {
                break; // sparse tail past the working copy's end reads as zeros
            }
            done += r;
        }
        Ok(Some(buf))
    }

    /// Read that may wait on the chunk cache and the server.
    pub(super) async fn read_fetching(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> VfsResult<Vec<u8>> {
        let h = self.handle(fh)?;
        if let Some(r) = self.read_work(&h, offset, size)? {
            return Ok(r);
        }
        let Some(c) = h.content.clone() else {
            return Ok(Vec::new());
        };
        // A cold small file brings the cold small files after it along.
        self.batch_small_files(h.ino, &c);
        let slices = c.manifest.slices(&c.offsets, offset, size as u64);
        let mut out = Vec::with_capacity(slices.iter().map(|s| s.len as usize).sum());
        // Fetch all needed chunks concurrently (one request each, shared
        // with any other reader of the same chunk).
        let datas =
            futures::future::try_join_all(slices.iter().map(|s| self.chunks.get(s.id))).await?;
        for (s, data) in slices.iter().zip(datas) {
            let chunk_len = c.manifest.chunks[s.index].len;
            out.extend_from_slice(chunk_slice::slice(s, chunk_len, &data)?);
        }
        self.read_ahead(&h, &c, offset, out.len() as u64);
        Ok(out)
    }

    /// Sequential reads prefetch the next [`READ_AHEAD_CHUNKS`] chunks.
    pub(super) fn read_ahead(&self, h: &Handle, c: &ContentView, offset: u64, len: u64) {
        let prev = h.last_end.swap(offset + len, Ordering::Relaxed);
        if prev != offset && offset != 0 {
            return;
        }
        let end = offset + len;
        let next = c.offsets[..c.manifest.chunks.len()].partition_point(|&s| s < end);
        let ids: Vec<ChunkId> = c
            .manifest
            .chunks
            .iter()
            .skip(next)
            .take(READ_AHEAD_CHUNKS)
            .map(|c| c.id)
            .filter(|id| !self.chunks.is_local(id) || self.chunks.get_in_memory(id).is_none())
            .collect();
        if !ids.is_empty() {
            self.chunks.prefetch(ids);
        }
    }
}
