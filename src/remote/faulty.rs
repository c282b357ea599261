//! [`FaultyRemote`]: any [`Remote`] with switchable faults and call
//! counters, for fault tests of the uploader, the follower and the read
//! path.
//!
//! Every call is counted first (also calls that then fail), then waits the
//! configured latency, then meets the faults in this order:
//! 1. offline → [`RemoteError::Unreachable`];
//! 2. 401 from the Nth call on (N counts every call, from 1) →
//!    [`RemoteError::Unauthorized`] (as after a refused refresh);
//! 3. a server error → [`RemoteError::Server`] with the configured 5xx;
//! 4. a proxy body limit: a chunk upload over `chunk_body_limit` bytes, or
//!    a commit of more than `commit_op_limit` ops →
//!    `Rejected { status: 413, code: "http_413", op: None }`, what
//!    [`HttpRemote`](super::http::HttpRemote) makes of a proxy's HTML 413;
//! 5. "refuse the next commit at op k" (one shot) → `Rejected { status:
//!    400, code: "invalid_name", op: Some(k) }`, the server's refusal of
//!    one op (class `Refused { op: k }`); nothing of that commit is
//!    applied, as on the server.
//!
//! Otherwise the call goes to the wrapped remote. Faults can be switched
//! at any time, from any thread; [`FaultyRemote::clear`] removes them all.

use super::{Remote, RemoteError};
use crate::protocol::{ChunkId, CommitOp, CommitOutcome, PullResponse, SpaceReport};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

/// The faults a [`FaultyRemote`] injects now. `Default` is none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every call fails as unreachable.
    pub offline: bool,
    /// Calls number `n` and later (counting every call from 1) fail as
    /// unauthorized.
    pub unauthorized_from_call: Option<u64>,
    /// Every call fails with this status (500..=599).
    pub server_error: Option<u16>,
    /// Chunk uploads larger than this many bytes fail with 413.
    pub chunk_body_limit: Option<usize>,
    /// Commits of more than this many ops fail with 413.
    pub commit_op_limit: Option<usize>,
    /// The next commit fails, refusing this op index (clamped to the last
    /// op of that commit); then this is cleared.
    pub refuse_next_commit_op: Option<usize>,
    /// Added before every call.
    pub latency: Duration,
}

/// How many calls of each kind a [`FaultyRemote`] received (counting calls
/// that failed by an injected fault, which `injected` counts again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub missing_chunks: u64,
    pub put_chunk: u64,
    pub get_chunk: u64,
    /// Batch downloads (`get_chunks`).
    pub get_chunks: u64,
    pub commit: u64,
    pub pull: u64,
    pub space: u64,
    /// Calls that an injected fault failed.
    pub injected: u64,
}

impl CallCounts {
    /// All calls of every kind.
    pub fn total(&self) -> u64 {
        self.missing_chunks
            + self.put_chunk
            + self.get_chunk
            + self.get_chunks
            + self.commit
            + self.pull
            + self.space
    }
}

#[derive(Clone, Copy)]
enum Call<'a> {
    MissingChunks,
    PutChunk(usize),
    GetChunk,
    GetChunks,
    Commit(&'a [CommitOp]),
    Pull,
    Space,
}

/// A [`Remote`] that forwards to another one unless a fault is switched on
/// (see the module docs for the order in which faults apply).
pub struct FaultyRemote {
    inner: Arc<dyn Remote>,
    faults: Mutex<Faults>,
    counts: Mutex<CallCounts>,
}

impl FaultyRemote {
    /// Wraps `inner`, with no faults.
    pub fn new(inner: Arc<dyn Remote>) -> Self {
        FaultyRemote {
            inner,
            faults: Mutex::new(Faults::default()),
            counts: Mutex::new(CallCounts::default()),
        }
    }

    /// The wrapped remote.
    pub fn inner(&self) -> &Arc<dyn Remote> {
        &self.inner
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.faults.lock().clone()
    }

    /// Replaces all faults at once.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock() = faults;
    }

    /// Removes every fault (counters are kept).
    pub fn clear(&self) {
        self.set_faults(Faults::default());
    }

    /// Offline (`Unreachable`) or back online.
    pub fn set_offline(&self, offline: bool) {
        self.faults.lock().offline = offline;
    }

    /// From call number `n` on (every call counts, from 1; `Some(1)` = all
    /// calls, counting continues from [`CallCounts::total`]), calls fail
    /// `Unauthorized`; `None` stops it.
    pub fn set_unauthorized_from_call(&self, n: Option<u64>) {
        self.faults.lock().unauthorized_from_call = n;
    }

    /// Every call fails with this 5xx status (`Server`); `None` stops it.
    /// Panics if the status is not 500..=599.
    pub fn set_server_error(&self, status: Option<u16>) {
        assert!(
            status.is_none_or(|s| (500..=599).contains(&s)),
            "not a 5xx status: {status:?}"
        );
        self.faults.lock().server_error = status;
    }

    /// A proxy's body limit for chunk uploads, in bytes (plain length).
    pub fn set_chunk_body_limit(&self, bytes: Option<usize>) {
        self.faults.lock().chunk_body_limit = bytes;
    }

    /// A proxy's body limit for commits, in ops.
    pub fn set_commit_op_limit(&self, ops: Option<usize>) {
        self.faults.lock().commit_op_limit = ops;
    }

    /// Latency added before every call.
    pub fn set_latency(&self, latency: Duration) {
        self.faults.lock().latency = latency;
    }

    /// The next commit (only that one) fails refusing op `op`.
    pub fn refuse_next_commit(&self, op: usize) {
        self.faults.lock().refuse_next_commit_op = Some(op);
    }

    /// Calls received so far.
    pub fn calls(&self) -> CallCounts {
        *self.counts.lock()
    }

    /// Counts the call, waits the latency, and returns the injected error
    /// if a fault applies.
    async fn before(&self, call: Call<'_>) -> Result<(), RemoteError> {
        let number = {
            let mut c = self.counts.lock();
            match call {
                Call::MissingChunks => c.missing_chunks += 1,
                Call::PutChunk(_) => c.put_chunk += 1,
                Call::GetChunk => c.get_chunk += 1,
                Call::GetChunks => c.get_chunks += 1,
                Call::Commit(_) => c.commit += 1,
                Call::Pull => c.pull += 1,
                Call::Space => c.space += 1,
            }
            c.total()
        };
        let latency = self.faults.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let injected = self.fault_for(call, number);
        if injected.is_some() {
            self.counts.lock().injected += 1;
        }
        injected.map_or(Ok(()), Err)
    }

    fn fault_for(&self, call: Call<'_>, number: u64) -> Option<RemoteError> {
        let mut f = self.faults.lock();
        if f.offline {
            return Some(RemoteError::Unreachable(
                "connection refused (injected: offline)".into(),
            ));
        }
        if f.unauthorized_from_call.is_some_and(|n| number >= n) {
            return Some(RemoteError::Unauthorized(
                "the server refused the refresh token (injected); log in again".into(),
            ));
        }
        if let Some(status) = f.server_error {
            return Some(RemoteError::Server {
                status,
                message: "internal error (injected)".into(),
            });
        }
        let too_large = match call {
            Call::PutChunk(len) => f.chunk_body_limit.is_some_and(|limit| len > limit),
            Call::Commit(ops) => f.commit_op_limit.is_some_and(|limit| ops.len() > limit),
            _ => false,
        };
        if too_large {
            return Some(RemoteError::Rejected {
                status: 413,
                code: "http_413".into(),
                // What HttpRemote makes of nginx's HTML page: its title.
                message: "413 Request Entity Too Large".into(),
                op: None,
            });
        }
        if let Call::Commit(ops) = call {
            if !ops.is_empty() {
                if let Some(k) = f.refuse_next_commit_op.take() {
                    let op = k.min(ops.len() - 1);
                    return Some(RemoteError::Rejected {
                        status: 400,
                        code: "invalid_name".into(),
                        message: format!("op {op}: invalid name (injected)"),
                        op: Some(op),
                    });
                }
            }
        }
        None
    }
}

impl std::fmt::Debug for FaultyRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyRemote")
            .field("faults", &self.faults())
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Remote for FaultyRemote {
    async fn missing_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>, RemoteError> {
        self.before(Call::MissingChunks).await?;
        self.inner.missing_chunks(ids).await
    }

    async fn put_chunk(&self, id: ChunkId, data: Bytes) -> Result<(), RemoteError> {
        self.before(Call::PutChunk(data.len())).await?;
        self.inner.put_chunk(id, data).await
    }

    async fn get_chunk(&self, id: ChunkId) -> Result<Bytes, RemoteError> {
        self.before(Call::GetChunk).await?;
        self.inner.get_chunk(id).await
    }

    async fn get_chunks(&self, ids: &[ChunkId]) -> Result<Vec<(ChunkId, Bytes)>, RemoteError> {
        self.before(Call::GetChunks).await?;
        self.inner.get_chunks(ids).await
    }

    async fn commit(&self, ops: Vec<CommitOp>) -> Result<Vec<CommitOutcome>, RemoteError> {
        self.before(Call::Commit(&ops)).await?;
        self.inner.commit(ops).await
    }

    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullResponse, RemoteError> {
        self.before(Call::Pull).await?;
        self.inner.pull(cursor, limit).await
    }

    async fn space(&self) -> Result<SpaceReport, RemoteError> {
        self.before(Call::Space).await?;
        self.inner.space().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::suite::{dir_op, file_op};
    use crate::remote::{FailureClass, NeedsUser};

    crate::remote_conformance_suite!(conformance, crate::remote::suite::FaultyFixture::new());

    async fn faulty() -> FaultyRemote {
        let server = crate::remote::in_process::InProcessServer::new()
            .await
            .unwrap();
        FaultyRemote::new(Arc::new(server.device("laptop").await.unwrap()))
    }

    #[tokio::test]
    async fn each_fault_gives_the_error_http_would_and_then_clears() {
        let r = faulty().await;
        r.pull(0, 10).await.unwrap();

        r.set_offline(true);
        let e = r.pull(0, 10).await.unwrap_err();
        assert!(matches!(e, RemoteError::Unreachable(_)) && e.is_transient());
        r.set_offline(false);

        r.set_server_error(Some(503));
        let e = r.missing_chunks(&[]).await.unwrap_err();
        assert!(matches!(e, RemoteError::Server { status: 503, .. }) && e.is_transient());
        r.set_server_error(None);

        // 401 from the 5th call on: calls 1-3 happened, the 4th passes.
        assert_eq!(r.calls().total(), 3);
        r.set_unauthorized_from_call(Some(5));
        r.pull(0, 10).await.unwrap();
        for _ in 0..2 {
            assert!(matches!(
                r.pull(0, 10).await.unwrap_err().class(),
                FailureClass::NeedsUser(NeedsUser::Unauthorized(_))
            ));
        }
        r.set_unauthorized_from_call(None);

        // A proxy's body limits: 413, a request shape to fix, not an op.
        let small = Bytes::from_static(b"small");
        let big = Bytes::from(vec![7u8; 2048]);
        r.set_chunk_body_limit(Some(1024));
        r.put_chunk(ChunkId::of(&small), small.clone())
            .await
            .unwrap();
        let e = r
            .put_chunk(ChunkId::of(&big), big.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, RemoteError::Rejected { status: 413, code, op: None, .. } if code == "http_413")
        );
        assert!(matches!(
            e.class(),
            FailureClass::NeedsUser(NeedsUser::Misconfigured(m)) if m.contains("413")
        ));
        r.set_commit_op_limit(Some(1));
        let two = vec![dir_op("a"), dir_op("b")];
        assert!(matches!(
            r.commit(two.clone()).await,
            Err(RemoteError::Rejected { status: 413, .. })
        ));
        r.clear();
        r.put_chunk(ChunkId::of(&big), big).await.unwrap();

        // A refused op: one commit only, nothing of it applied.
        let cursor = r.pull(0, 1000).await.unwrap().cursor;
        r.refuse_next_commit(1);
        let e = r.commit(two.clone()).await.unwrap_err();
        assert_eq!(e.class(), FailureClass::Refused { op: 1 });
        assert!(r.pull(cursor, 10).await.unwrap().changes.is_empty());
        assert_eq!(r.commit(two).await.unwrap().len(), 2);
        // Clamped to the commit's last op.
        r.refuse_next_commit(9);
        let e = r.commit(vec![file_op("f", &small)]).await.unwrap_err();
        assert_eq!(e.class(), FailureClass::Refused { op: 0 });

        let c = r.calls();
        assert_eq!(c.injected, 8);
        assert_eq!(
            (c.missing_chunks, c.put_chunk, c.commit),
            (1, 3, 4),
            "{c:?}"
        );
        assert_eq!(
            c.total(),
            c.missing_chunks + c.put_chunk + c.get_chunk + c.commit + c.pull
        );
    }

    #[tokio::test]
    async fn latency_is_added_to_every_call() {
        let r = faulty().await;
        r.set_latency(Duration::from_millis(150));
        let started = std::time::Instant::now();
        r.pull(0, 10).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(r.calls().pull, 1);
    }
}
