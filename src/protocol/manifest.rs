//! Manifests: the ordered chunks of one version of a file, and the mapping
//! from a byte range of the file to ranges inside chunks.

use super::ChunkId;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub chunks: Vec<ChunkRef>,
}

/// One piece of a read: `len` bytes starting at `offset_in_chunk` of chunk
/// number `index` of the manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSlice {
    pub index: usize,
    pub id: ChunkId,
    pub offset_in_chunk: u32,
    pub len: u32,
}

impl Manifest {
    pub fn total_len(&self) -> u64 {
        self.chunks.iter().map(|c| c.len as u64).sum()
    }

    /// Byte offset at which each chunk starts, plus the total length last.
    pub fn offsets(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.chunks.len() + 1);
        let mut pos = 0u64;
        for c in &self.chunks {
            out.push(pos);
            pos += c.len as u64;
        }
        out.push(pos);
        out
    }

    /// The chunk slices covering `[offset, offset + len)`, clipped to the
    /// end of the file. `offsets` is what [`Manifest::offsets`] returns.
    pub fn slices(&self, offsets: &[u64], offset: u64, len: u64) -> Vec<ChunkSlice> {
        let total = *offsets.last().unwrap_or(&0);
        let end = offset.saturating_add(len).min(total);
        if offset >= end {
            return Vec::new();
        }
        // Index of the chunk containing `offset`: last start ≤ offset.
        let first = offsets[..self.chunks.len()].partition_point(|&s| s <= offset) - 1;
        let mut out = Vec::new();
        let mut pos = offset;
        let mut i = first;
        while pos < end {
            let start = offsets[i];
            let chunk = self.chunks[i];
            let within = pos - start;
            let take = (chunk.len as u64 - within).min(end - pos);
            out.push(ChunkSlice {
                index: i,
                id: chunk.id,
                offset_in_chunk: within as u32,
                len: take as u32,
            });
            pos += take;
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(lens: &[u32]) -> Manifest {
        Manifest {
            chunks: lens
                .iter()
                .enumerate()
                .map(|(i, &len)| ChunkRef {
                    id: ChunkId::of(&i.to_le_bytes()),
                    len,
                })
                .collect(),
        }
    }

    #[test]
    fn slices_cross_chunk_boundaries() {
        let m = manifest(&[10, 20, 5]);
        let off = m.offsets();
        assert_eq!(off, vec![0, 10, 30, 35]);
        let s = m.slices(&off, 8, 25);
        assert_eq!(
            s.iter()
                .map(|s| (s.index, s.offset_in_chunk, s.len))
                .collect::<Vec<_>>(),
            vec![(0, 8, 2), (1, 0, 20), (2, 0, 3)]
        );
        assert!(m.slices(&off, 35, 10).is_empty());
        assert_eq!(m.slices(&off, 30, 100).len(), 1);
        assert_eq!(m.slices(&off, 10, 1)[0].index, 1);
        let empty = Manifest::default();
        assert!(empty.slices(&empty.offsets(), 0, 10).is_empty());
    }

    proptest! {
        #[test]
        fn slices_cover_exactly_the_range(
            lens in proptest::collection::vec(1u32..50, 0..10),
            offset in 0u64..300,
            len in 0u64..300,
        ) {
            let m = manifest(&lens);
            let off = m.offsets();
            let total = m.total_len();
            let slices = m.slices(&off, offset, len);
            let want = offset.saturating_add(len).min(total).saturating_sub(offset.min(total));
            prop_assert_eq!(slices.iter().map(|s| s.len as u64).sum::<u64>(), want);
            let mut pos = offset;
            for s in &slices {
                prop_assert_eq!(off[s.index] + s.offset_in_chunk as u64, pos);
                prop_assert!(s.offset_in_chunk + s.len <= lens[s.index]);
                pos += s.len as u64;
            }
        }
    }
}
