//! Cutting file content out of chunks by manifest offsets, checked.
//!
//! A manifest gives each chunk's length; the chunk's bytes are verified
//! against its hash, so their length is the truth. If the two disagree (a
//! bad server, a corrupt local record), every offset after that chunk is
//! wrong: the read fails with [`VfsError::CorruptManifest`] (EIO) instead of
//! panicking on an out-of-range slice or returning shifted bytes. Each bad
//! (chunk, length) pair is logged once.

use super::error::{VfsError, VfsResult};
use crate::protocol::{ChunkId, ChunkSlice};
use parking_lot::Mutex;
use std::collections::HashSet;

/// How many distinct bad pairs are remembered for "log once".
const LOGGED_CAP: usize = 1024;

static LOGGED: Mutex<Option<HashSet<(ChunkId, u32, usize)>>> = Mutex::new(None);

/// The error for chunk `id` whose manifest entry says `manifest_len` bytes
/// while its verified bytes are `actual` long; logged once per pair.
pub fn length_mismatch(id: ChunkId, manifest_len: u32, actual: usize) -> VfsError {
    let msg = format!(
        "the file's manifest says chunk {id} is {manifest_len} bytes, but its verified \
         content is {actual} bytes"
    );
    let mut logged = LOGGED.lock();
    let set = logged.get_or_insert_with(HashSet::new);
    if set.len() < LOGGED_CAP && set.insert((id, manifest_len, actual)) {
        tracing::error!("{msg}; reads of this file fail with EIO");
    }
    VfsError::CorruptManifest(msg)
}

/// Checks that `data` (chunk `id`'s verified bytes) has the length its
/// manifest entry gives.
pub fn check_len(id: ChunkId, manifest_len: u32, data: &[u8]) -> VfsResult<()> {
    if data.len() == manifest_len as usize {
        Ok(())
    } else {
        Err(length_mismatch(id, manifest_len, data.len()))
    }
}

/// The bytes of slice `s` of a chunk whose manifest entry says
/// `manifest_len` bytes, out of the chunk's verified `data`.
pub fn slice<'a>(s: &ChunkSlice, manifest_len: u32, data: &'a [u8]) -> VfsResult<&'a [u8]> {
    check_len(s.id, manifest_len, data)?;
    let from = s.offset_in_chunk as usize;
    data.get(from..from + s.len as usize)
        .ok_or_else(|| length_mismatch(s.id, manifest_len, data.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_only_chunks_of_the_manifest_length() {
        let data = vec![7u8; 100];
        let id = ChunkId::of(&data);
        let s = ChunkSlice {
            index: 0,
            id,
            offset_in_chunk: 90,
            len: 10,
        };
        assert_eq!(slice(&s, 100, &data).unwrap(), &data[90..]);
        assert!(matches!(
            slice(&s, 120, &data),
            Err(VfsError::CorruptManifest(m)) if m.contains("120") && m.contains("100")
        ));
        assert!(matches!(
            slice(&s, 95, &data),
            Err(VfsError::CorruptManifest(_))
        ));
    }
}
