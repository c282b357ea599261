//! Content-defined chunking: FastCDC (min 256 KiB, average 1 MiB, max
//! 4 MiB) with BLAKE3 chunk ids. Pure functions, no I/O beyond the reader
//! they are given.
//!
//! Boundaries depend only on nearby content, so inserting bytes early in a
//! file moves only the chunks around the insertion: later chunks keep their
//! ids and are not uploaded again.

use crate::protocol::{ChunkId, ChunkRef, Manifest};
use std::io::Read;

pub const MIN_CHUNK: u32 = 256 * 1024;
pub const AVG_CHUNK: u32 = 1024 * 1024;
pub const MAX_CHUNK: u32 = crate::protocol::MAX_CHUNK_LEN;

/// Splits an in-memory buffer; returns the manifest and the chunk ranges.
pub fn chunk_bytes(data: &[u8]) -> Vec<(ChunkRef, std::ops::Range<usize>)> {
    fastcdc::v2020::FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .map(|c| {
            let range = c.offset..c.offset + c.length;
            let r = ChunkRef {
                id: ChunkId::of(&data[range.clone()]),
                len: c.length as u32,
            };
            (r, range)
        })
        .collect()
}

/// Streams `reader` through FastCDC, calling `each` with every chunk's
/// reference and bytes in order, and returns the manifest. Memory stays at
/// about one maximum chunk.
pub fn chunk_stream<R: Read, E>(
    reader: R,
    mut each: impl FnMut(ChunkRef, Vec<u8>) -> Result<(), E>,
) -> Result<Manifest, E>
where
    E: From<std::io::Error>,
{
    let mut chunks = Vec::new();
    for c in fastcdc::v2020::StreamCDC::new(reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK) {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => E::from(io),
            other => E::from(std::io::Error::other(other.to_string())),
        })?;
        let r = ChunkRef {
            id: ChunkId::of(&c.data),
            len: c.length as u32,
        };
        chunks.push(r);
        each(r, c.data)?;
    }
    Ok(Manifest { chunks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[test]
    fn chunk_sizes_within_bounds_and_cover_input() {
        let data = random(12 << 20, 1);
        let chunks = chunk_bytes(&data);
        assert!(chunks.len() >= 3, "12 MiB should make several chunks");
        let mut pos = 0;
        for (i, (r, range)) in chunks.iter().enumerate() {
            assert_eq!(range.start, pos);
            pos = range.end;
            assert!(r.len <= MAX_CHUNK);
            if i + 1 < chunks.len() {
                assert!(r.len >= MIN_CHUNK);
            }
            assert!(r.id.verify(&data[range.clone()]));
        }
        assert_eq!(pos, data.len());
    }

    #[test]
    fn insertion_early_keeps_later_boundaries() {
        let data = random(16 << 20, 2);
        let mut edited = data.clone();
        // Insert 1000 bytes near the start.
        edited.splice(100_000..100_000, random(1000, 3));
        let before: Vec<ChunkId> = chunk_bytes(&data).iter().map(|c| c.0.id).collect();
        let after: Vec<ChunkId> = chunk_bytes(&edited).iter().map(|c| c.0.id).collect();
        let shared = after.iter().filter(|id| before.contains(id)).count();
        // Only the chunk(s) around the insertion may change.
        assert!(
            shared + 2 >= before.len(),
            "shared {shared} of {} chunks",
            before.len()
        );
        assert_ne!(before[0], after[0]);
        assert_eq!(before.last(), after.last());
    }

    #[test]
    fn stream_matches_in_memory() {
        let data = random(6 << 20, 4);
        let mut got = Vec::new();
        let m = chunk_stream::<_, std::io::Error>(&data[..], |r, bytes| {
            assert_eq!(r.len as usize, bytes.len());
            got.extend_from_slice(&bytes);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, data);
        let mem: Vec<ChunkRef> = chunk_bytes(&data).into_iter().map(|c| c.0).collect();
        assert_eq!(m.chunks, mem);
        // Empty input: empty manifest.
        let empty = chunk_stream::<_, std::io::Error>(&b""[..], |_, _| Ok(())).unwrap();
        assert!(empty.chunks.is_empty());
    }
}
