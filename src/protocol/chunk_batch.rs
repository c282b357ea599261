//! `POST /api/v1/chunks/batch` (protocol 5): several chunks in one request.
//!
//! Reading many small files cold costs one round trip per file when every
//! chunk is its own `GET /api/v1/chunks/{hex}`; the client's read path
//! (`vfs::read`) asks for the chunks of the next small files of a folder in
//! one batch instead.
//!
//! - **Request**: JSON [`ChunkBatchRequest`] `{"ids": ["<64 hex>", ...]}`,
//!   at most [`MAX_BATCH_CHUNKS`] ids. Repeated ids are answered once.
//! - **Answer** (200, `Content-Type: `[`BATCH_CONTENT_TYPE`], with a
//!   `Content-Length`): one frame per distinct id, in the order of their
//!   first appearance in the request. A frame is the 32 raw bytes of the
//!   id, the chunk's plain length as a 4-byte big-endian integer, then
//!   that many plain bytes (no compression, like the single `GET`). An
//!   empty request gets an empty body.
//! - **Bounds**: more than [`MAX_BATCH_CHUNKS`] distinct ids, or chunks
//!   whose plain lengths add up to more than [`MAX_BATCH_BYTES`], are
//!   refused with 413 `batch_too_large` (nothing is read). One chunk is at
//!   most `MAX_CHUNK_LEN` (4 MiB), so a batch of one always fits.
//! - **Access**: exactly the single `GET`'s: every id must be a chunk this
//!   account uploaded, else the whole request is 404 `not_found` naming
//!   the first such id, whether the chunk is unknown or another
//!   account's (knowing a hash is not possession; no answer tells them
//!   apart). A chunk the store lost fails as the single `GET` does (500
//!   `chunk_unavailable`/`chunk_corrupt` when it is the first; later, the
//!   body is cut short of its `Content-Length`).
//! - The client verifies every frame: only asked ids, none twice, each
//!   length within `MAX_CHUNK_LEN`, every asked id present, and each
//!   chunk's BLAKE3 hash ([`decode_batch`] checks the framing; the hash
//!   check is the caller's).

use super::{ChunkId, MAX_CHUNK_LEN};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Most distinct chunk ids one batch request may name.
pub const MAX_BATCH_CHUNKS: usize = 256;
/// Most plain bytes (the sum of the chunks' lengths) one batch may answer.
pub const MAX_BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes of a frame header: 32 bytes of id and a 4-byte length.
pub const BATCH_FRAME_HEADER: usize = 36;
/// The media type of a batch answer.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.nimbus.chunk-batch";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChunkBatchRequest {
    pub ids: Vec<ChunkId>,
}

/// The ids of a request without repeats, in first-appearance order.
pub fn distinct_ids(ids: &[ChunkId]) -> Vec<ChunkId> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|i| seen.insert(*i)).collect()
}

/// The header of the frame carrying chunk `id` of `len` bytes.
pub fn frame_header(id: &ChunkId, len: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(BATCH_FRAME_HEADER);
    b.put_slice(&id.0);
    b.put_u32(len);
    b.freeze()
}

/// The body length of an answer with chunks of these lengths.
pub fn batch_body_len(lens: impl IntoIterator<Item = u32>) -> u64 {
    lens.into_iter()
        .map(|l| BATCH_FRAME_HEADER as u64 + u64::from(l))
        .sum()
}

/// Splits a batch answer to a request for `asked` (distinct ids) into its
/// chunks, in the answer's order, without copying. Errors (one line) when
/// the framing is broken: a truncated frame, a length over
/// `MAX_CHUNK_LEN`, an id not asked for or answered twice, or an asked id
/// missing. Hashes are not checked here.
pub fn decode_batch(asked: &[ChunkId], body: &Bytes) -> Result<Vec<(ChunkId, Bytes)>, String> {
    let mut wanted: HashSet<ChunkId> = asked.iter().copied().collect();
    let mut out = Vec::with_capacity(wanted.len());
    let mut pos = 0usize;
    while pos < body.len() {
        let Some(header) = body.get(pos..pos + BATCH_FRAME_HEADER) else {
            return Err(format!(
                "batch answer cut short in a frame header at byte {pos}"
            ));
        };
        let mut id = [0u8; 32];
        id.copy_from_slice(&header[..32]);
        let id = ChunkId(id);
        let len = u32::from_be_bytes(header[32..].try_into().expect("4 bytes"));
        if len > MAX_CHUNK_LEN {
            return Err(format!("batch frame of chunk {id} claims {len} bytes"));
        }
        if !wanted.remove(&id) {
            return Err(format!("batch answer has chunk {id}, not asked or twice"));
        }
        let start = pos + BATCH_FRAME_HEADER;
        let end = start + len as usize;
        if end > body.len() {
            return Err(format!("batch answer cut short in chunk {id}"));
        }
        out.push((id, body.slice(start..end)));
        pos = end;
    }
    match wanted.into_iter().next() {
        Some(id) => Err(format!("batch answer lacks chunk {id}")),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(chunks: &[(ChunkId, &[u8])]) -> Bytes {
        let mut b = BytesMut::new();
        for (id, data) in chunks {
            b.put_slice(&frame_header(id, data.len() as u32));
            b.put_slice(data);
        }
        b.freeze()
    }

    #[test]
    fn frames_round_trip_and_broken_ones_are_refused() {
        let (a, b) = (b"alpha".as_slice(), b"".as_slice());
        let (ia, ib) = (ChunkId::of(a), ChunkId::of(b));
        let body = encode(&[(ia, a), (ib, b)]);
        assert_eq!(body.len() as u64, batch_body_len([5, 0]));
        let got = decode_batch(&[ia, ib], &body).unwrap();
        assert_eq!(got, vec![(ia, Bytes::from_static(a)), (ib, Bytes::new())]);
        assert_eq!(decode_batch(&[], &Bytes::new()).unwrap(), vec![]);
        // Cut short, an id missing, one not asked, one twice.
        let cut = body.slice(..body.len() - 1 - BATCH_FRAME_HEADER);
        assert!(decode_batch(&[ia, ib], &cut)
            .unwrap_err()
            .contains("cut short"));
        let e = decode_batch(&[ia, ib], &encode(&[(ia, a)])).unwrap_err();
        assert!(e.contains("lacks"), "{e}");
        let e = decode_batch(&[ia], &body).unwrap_err();
        assert!(e.contains("not asked"), "{e}");
        let e = decode_batch(&[ia, ib], &encode(&[(ia, a), (ia, a)])).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        let mut huge = BytesMut::from(&frame_header(&ia, MAX_CHUNK_LEN + 1)[..]);
        huge.put_slice(a);
        assert!(decode_batch(&[ia], &huge.freeze())
            .unwrap_err()
            .contains("claims"));
        assert_eq!(distinct_ids(&[ib, ia, ib]), vec![ib, ia]);
    }
}
