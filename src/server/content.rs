//! `GET /api/v1/files/content?path=/a/b.txt`: a file's bytes, streamed
//! chunk by chunk (one chunk read ahead; never the whole file in memory),
//! with single-range `Range: bytes=` support so `curl` is a client too.

use super::auth::Auth;
use super::chunk_store::ChunkStore;
use super::error::ServerError;
use super::meta_store::{AccountId, MetaStore};
use super::AppState;
use crate::protocol::{validate_name, ChunkSlice, NodeId, NodeKind, NodeRecord};
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde::Deserialize;

/// Longest path accepted, in bytes.
const MAX_PATH_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
pub struct ContentQuery {
    path: String,
}

/// Walks `/a/b/c` from the root through live entries.
pub async fn resolve_path(
    meta: &dyn MetaStore,
    account: AccountId,
    path: &str,
) -> Result<NodeRecord, ServerError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(ServerError::InvalidPath(format!(
            "path longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ServerError::InvalidPath(format!(
            "path {path:?} must start with '/'"
        )));
    };
    let mut node = meta
        .node(account, NodeId::ROOT)
        .await?
        .ok_or_else(|| ServerError::internal("account has no root folder"))?;
    if rest.is_empty() {
        return Ok(node);
    }
    for component in rest.split('/') {
        validate_name(component).map_err(|e| {
            ServerError::InvalidPath(format!("path {path:?}: component {component:?}: {e}"))
        })?;
        if node.meta.kind != NodeKind::Dir {
            return Err(ServerError::NotFound(format!("{path} not found")));
        }
        node = meta
            .lookup(account, node.node_id, component)
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("{path} not found")))?;
    }
    Ok(node)
}

/// A satisfiable byte range, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// Parses a `Range` header for a file of `size` bytes. `Ok(None)`: serve
/// the whole file (no header, another unit, several ranges or an invalid
/// spec, which RFC 9110 lets a server ignore). `Err`: 416.
pub fn parse_range(
    value: Option<&HeaderValue>,
    size: u64,
) -> Result<Option<ByteRange>, ServerError> {
    let Some(spec) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = ServerError::RangeNotSatisfiable { size };
    if a.is_empty() {
        // Suffix range: the last `n` bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(unsatisfiable);
        }
        return Ok(Some(ByteRange {
            start: size.saturating_sub(n),
            end: size - 1,
        }));
    }
    let Ok(start) = a.parse::<u64>() else {
        return Ok(None);
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return Ok(None),
        }
    };
    if start >= size {
        return Err(unsatisfiable);
    }
    Ok(Some(ByteRange {
        start,
        end: end.min(size - 1),
    }))
}

/// The bytes of one slice of a chunk.
async fn read_slice(
    chunks: std::sync::Arc<dyn ChunkStore>,
    s: ChunkSlice,
) -> Result<Bytes, ServerError> {
    let data = chunks.get(s.id).await?;
    let from = s.offset_in_chunk as usize;
    let to = from + s.len as usize;
    if data.len() < to {
        return Err(ServerError::internal(format!(
            "chunk {} is shorter than its manifest entry",
            s.id
        )));
    }
    Ok(data.slice(from..to))
}

pub async fn file_content(
    auth: Auth,
    State(st): State<AppState>,
    query: Result<Query<ContentQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ServerError> {
    let Query(q) = query?;
    let node = resolve_path(st.meta.as_ref(), auth.account, &q.path).await?;
    let content = match (node.meta.kind, node.meta.content) {
        (NodeKind::File, Some(c)) => c,
        _ => return Err(ServerError::NotAFile(q.path)),
    };
    let size = content.size();
    let range = parse_range(headers.get(header::RANGE), size)?;
    let (start, len) = match range {
        Some(r) => (r.start, r.end - r.start + 1),
        None => (0, size),
    };
    let offsets = content.manifest.offsets();
    let mut slices = content.manifest.slices(&offsets, start, len).into_iter();
    // The first piece is read before answering, so a missing or corrupt
    // chunk there is a proper 500; later failures can only cut the body
    // short (the client sees fewer bytes than Content-Length).
    let first = match slices.next() {
        Some(s) => Some(read_slice(st.chunks.clone(), s).await?),
        None => None,
    };
    let chunks = st.chunks.clone();
    let counter = st.clone();
    let rest = futures::stream::iter(slices)
        .map(move |s| {
            let chunks = chunks.clone();
            async move {
                read_slice(chunks, s).await.map_err(|e| {
                    tracing::error!(chunk = %s.id, error = %e, "file download cut short");
                    std::io::Error::other(e.to_string())
                })
            }
        })
        .buffered(2);
    let stream = futures::stream::iter(first.map(Ok))
        .chain(rest)
        .inspect(move |r| {
            if let Ok(b) = r {
                counter.metrics.chunk_bytes_out.add(b.len() as u64);
            }
        });

    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", content.hash().to_hex())) {
        h.insert(header::ETAG, etag);
    }
    if let Some(r) = range {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end)) {
            h.insert(header::CONTENT_RANGE, v);
        }
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &str, size: u64) -> Result<Option<(u64, u64)>, u16> {
        parse_range(Some(&HeaderValue::from_str(v).unwrap()), size)
            .map(|o| o.map(|r| (r.start, r.end)))
            .map_err(|e| e.status_and_code().0.as_u16())
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10).unwrap(), None);
        assert_eq!(r("bytes=0-4", 10), Ok(Some((0, 4))));
        assert_eq!(r("bytes=5-", 10), Ok(Some((5, 9))));
        assert_eq!(r("bytes=5-100", 10), Ok(Some((5, 9))));
        assert_eq!(r("bytes=-3", 10), Ok(Some((7, 9))));
        assert_eq!(r("bytes=-30", 10), Ok(Some((0, 9))));
        assert_eq!(r("bytes=9-9", 10), Ok(Some((9, 9))));
        assert_eq!(r("bytes=10-", 10), Err(416));
        assert_eq!(r("bytes=10-20", 10), Err(416));
        assert_eq!(r("bytes=-0", 10), Err(416));
        assert_eq!(r("bytes=0-", 0), Err(416));
        // Ignored: other units, several ranges, garbage, reversed.
        assert_eq!(r("items=0-4", 10), Ok(None));
        assert_eq!(r("bytes=0-1,3-4", 10), Ok(None));
        assert_eq!(r("bytes=a-b", 10), Ok(None));
        assert_eq!(r("bytes=5-2", 10), Ok(None));
        assert_eq!(r("bytes=", 10), Ok(None));
    }
}
