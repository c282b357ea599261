//! The uploader: drains the journal in order and never drops work.
//!
//! Each round takes up to [`BATCH`] records, or [`MAX_ROUND`] while more
//! than that wait (files still open for writing wait, see
//! `plan::deferred`), and goes through three steps:
//! - `plan`: records → commit ops, in journal order;
//! - `transfer`: chunk new content, ask which chunks the server lacks,
//!   upload those;
//! - commit (one request per [`MAX_COMMIT_OPS`] ops, one server
//!   transaction each), then `outcome`: apply each answer, and the
//!   records leave the journal in one batch. The requests go in order,
//!   each once the server took the one before; it is sent before the
//!   answers to that one are applied here (all of the round's ops were
//!   planned before its first commit, so applying changes none of them).
//!
//! A round that did not fill up is followed by a short pause
//! (`COALESCE`) so that changes made close together share the next
//! round; after a full one the next starts at once.
//!
//! # Failures
//! Every failure has a class ([`crate::remote::FailureClass`]); none drops
//! a record:
//! - **transient** (network, 5xx, 429, retryable codes, local I/O errors
//!   such as ENOSPC or EMFILE): capped exponential backoff with jitter
//!   (250 ms doubling to 30 s), records stay;
//! - **needs the user** (credentials refused after a refresh, a proxy's
//!   413 body limit, an unknown route): the queue pauses, the connection
//!   state says why (`unauthorized`, `misconfigured`), and a probe round
//!   runs every 1 s doubling to 60 s, so uploads resume by themselves once
//!   the server accepts the requests; new credentials saved by
//!   `nimbus login` end the pause at once (`Remote::credentials_renewed`). When only
//!   some chunk uploads are refused (a body limit that large chunks
//!   exceed), only the files needing them wait (`held_back`, tried again
//!   on the same schedule): files the server never had keep their records,
//!   the others go with the content the server has and their content is
//!   journaled again; everything else proceeds;
//! - **refused** (an error naming one op): exactly that op's record moves
//!   to the quarantine ([`crate::vfs::journal`]), where `nimbus status`
//!   shows it and `sync --wait` counts it, and the rest proceeds at once.
//!
//! Before a round commits, the metadata store is flushed, so the server
//! never has a change this device could lose in a crash. A crash between
//! commit and the records' removal then replays ops whose vector the
//! server already has from this device, in their order — a fast-forward,
//! not a conflict.

mod outcome;
mod plan;
mod transfer;

use super::Backoff;
use crate::protocol::{CommitOp, CommitOutcome, MAX_COMMIT_OPS};
use crate::remote::{FailureClass, NeedsUser, Remote, RemoteError};
use crate::vfs::meta::Quarantined;
use crate::vfs::{Connection, Vfs, VfsError};
use plan::Origin;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Journal records per round while the backlog is small.
pub const BATCH: usize = 512;
/// Journal records per round with a larger backlog: fewer rounds (and
/// fewer metadata flushes) per file, while a round's plan stays a few
/// megabytes at most (content is streamed, not held).
pub const MAX_ROUND: usize = 4 * MAX_COMMIT_OPS;
/// Pause after a round that did not fill up, so that changes made close
/// together share the next one. A full round goes on at once: the
/// backlog has already gathered.
const COALESCE: Duration = Duration::from_millis(30);
/// Longest sleep with an empty journal (a wake-up also comes with every
/// journal append).
const IDLE: Duration = Duration::from_secs(2);

/// Records for the next round with `backlog` records in the journal.
fn round_limit(backlog: u64) -> usize {
    if backlog > BATCH as u64 {
        MAX_ROUND
    } else {
        BATCH
    }
}

/// The round's ops as commit requests of at most [`MAX_COMMIT_OPS`] each,
/// in order.
fn split_requests(mut ops: Vec<CommitOp>) -> Vec<Vec<CommitOp>> {
    let mut requests = Vec::with_capacity(ops.len().div_ceil(MAX_COMMIT_OPS));
    while ops.len() > MAX_COMMIT_OPS {
        let rest = ops.split_off(MAX_COMMIT_OPS);
        requests.push(std::mem::replace(&mut ops, rest));
    }
    if !ops.is_empty() {
        requests.push(ops);
    }
    requests
}

/// A commit request in flight.
struct PendingCommit(tokio::task::JoinHandle<Result<Vec<CommitOutcome>, RemoteError>>);

impl std::future::IntoFuture for PendingCommit {
    type Output = Result<Result<Vec<CommitOutcome>, RemoteError>, RoundError>;
    type IntoFuture = futures::future::BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.0.await {
                Ok(r) => Ok(r),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // The runtime is shutting down: the records stay.
                Err(e) => Err(RoundError::from(std::io::Error::other(e.to_string()))),
            }
        })
    }
}

pub struct Uploader {
    vfs: Arc<Vfs>,
    remote: Arc<dyn Remote>,
    /// Files whose content the server or a proxy refuses until the user
    /// acts (a 413 body limit), with when to try them again; the rest of
    /// the journal goes on meanwhile.
    held_back: parking_lot::Mutex<HashMap<u64, Instant>>,
    probe: parking_lot::Mutex<Backoff>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RoundError {
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

impl RoundError {
    /// Local failures (ENOSPC, EMFILE, EIO, a store error) are transient:
    /// the records stay and the round is tried again later.
    fn class(&self) -> FailureClass {
        match self {
            RoundError::Remote(e) => e.class(),
            RoundError::Local(_) => FailureClass::Transient,
        }
    }
}

impl Uploader {
    pub fn new(vfs: Arc<Vfs>, remote: Arc<dyn Remote>) -> Self {
        Uploader {
            vfs,
            remote,
            held_back: parking_lot::Mutex::new(HashMap::new()),
            probe: parking_lot::Mutex::new(Backoff::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
            )),
        }
    }

    /// True while `ino`'s content waits for its next try (see `held_back`).
    fn waiting_for_probe(&self, ino: u64) -> bool {
        self.held_back
            .lock()
            .get(&ino)
            .is_some_and(|at| Instant::now() < *at)
    }

    /// Files whose content was held back this round, or changed while it
    /// was read: those the server never had leave the round (their
    /// records stay; nothing depends on them), the others go with the
    /// content the server has. `Err` when nothing else is left to send.
    fn hold_back(&self, plan: &mut plan::Plan) -> Result<(), RemoteError> {
        let mut never_sent: HashSet<u64> = plan
            .held
            .iter()
            .copied()
            .filter(|ino| {
                !self
                    .vfs
                    .inode(*ino)
                    .ok()
                    .flatten()
                    .is_some_and(|i| i.on_server())
            })
            .collect();
        never_sent.extend(plan.changed_new.iter().copied());
        // Nodes this round sends, and the places they take.
        let mut sent = HashSet::new();
        let mut places = HashSet::new();
        for (_, o) in &plan.origins {
            if let Origin::Node { ino, sent: s } = o {
                if !never_sent.contains(ino) {
                    sent.insert(*ino);
                    places.extend(s.entries.iter().cloned());
                }
            }
        }
        let pairs = std::mem::take(&mut plan.ops)
            .into_iter()
            .zip(std::mem::take(&mut plan.origins));
        for (op, (seq, origin)) in pairs {
            let stays = match &origin {
                Origin::Node { ino, .. } => never_sent.contains(ino),
                // The delete of a node that a file new to the server
                // replaced (a rename over it, as editors save) goes only
                // with that file, so that other devices never see the name
                // missing meanwhile (see `plan::deferred`) — unless another
                // op of the round takes the name (it must be free by then).
                Origin::Delete(node) => {
                    let replaced = self.vfs.replacement_of(node).ok().flatten();
                    replaced.is_some_and(|(r, place)| {
                        !sent.contains(&r)
                            && !places.contains(&place)
                            && self.vfs.inode(r).ok().flatten().is_some_and(|i| {
                                i.kind == crate::protocol::NodeKind::File && !i.on_server()
                            })
                    })
                }
            };
            if stays {
                continue;
            }
            plan.ops.push(op);
            plan.origins.push((seq, origin));
        }
        if plan.ops.is_empty() && plan.settled.is_empty() && plan.blocked.is_empty() {
            if let Some(refusal) = plan.refusal.take() {
                self.note_held(&plan.held);
                return Err(refusal);
            }
        }
        Ok(())
    }

    /// Sets when the held-back files are tried again.
    fn note_held(&self, held: &[u64]) {
        let next = Instant::now() + self.probe.lock().next_delay();
        let mut map = self.held_back.lock();
        for ino in held {
            map.insert(*ino, next);
        }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut transient = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut paused = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            // The last round failed because the server did not answer, or
            // because it refused this device's credentials.
            let mut unreachable = false;
            let mut unauthorized = false;
            let limit = round_limit(self.vfs.journal_len());
            let wait = match self.round(limit).await {
                Ok(n) if n >= limit => {
                    transient.reset();
                    paused.reset();
                    if stop.is_cancelled() {
                        return;
                    }
                    continue;
                }
                Ok(n) if n > 0 => {
                    transient.reset();
                    paused.reset();
                    // Let closely spaced changes (an untar, a copy of many
                    // small files) gather into one round.
                    Some(COALESCE)
                }
                Ok(_) => {
                    transient.reset();
                    paused.reset();
                    self.vfs.notify_settled();
                    None
                }
                Err(e) => {
                    unreachable = matches!(e, RoundError::Remote(RemoteError::Unreachable(_)));
                    let delay = match e.class() {
                        FailureClass::NeedsUser(n) => {
                            tracing::warn!("uploads paused: {e}");
                            unauthorized = matches!(n, NeedsUser::Unauthorized(_));
                            self.vfs.status().set_connection(match n {
                                NeedsUser::Unauthorized(m) => Connection::Unauthorized(m),
                                NeedsUser::Misconfigured(m) => Connection::Misconfigured(m),
                            });
                            paused.next_delay()
                        }
                        _ => {
                            if matches!(e, RoundError::Remote(RemoteError::Unreachable(_))) {
                                self.vfs.status().set_connection(Connection::Offline);
                            }
                            let d = transient.next_delay();
                            tracing::info!("uploader: {e}; retrying in {d:?}");
                            d
                        }
                    };
                    self.vfs.notify_settled();
                    // New journal records do not cut a backoff short: every
                    // round would re-read pending files for nothing.
                    Some(delay)
                }
            };
            match wait {
                Some(d) => {
                    // A server that answers again ends a wait for it at
                    // once (the follower or the push socket tells).
                    let back = async {
                        match unreachable {
                            true => self.vfs.status().server_reachable().await,
                            false => std::future::pending().await,
                        }
                    };
                    // New credentials (`nimbus login`) end a pause for them.
                    let renewed = async {
                        match unauthorized {
                            true => self.remote.credentials_renewed().await,
                            false => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(d) => {}
                        _ = back => {
                            tracing::info!("uploader: the server answers again; retrying now");
                            transient.reset();
                        }
                        _ = renewed => {
                            tracing::info!("uploader: new credentials saved; retrying now");
                            paused.reset();
                        }
                    }
                }
                None => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = self.vfs.journal_grew() => {}
                        _ = tokio::time::sleep(IDLE) => {}
                    }
                    if !stop.is_cancelled() {
                        tokio::time::sleep(COALESCE).await;
                    }
                }
            }
        }
    }

    /// Runs one round; `Ok(false)` when there was nothing it could push.
    /// (Tests drive the uploader with this instead of [`Uploader::run`].)
    pub async fn run_once(&self) -> anyhow::Result<bool> {
        let limit = round_limit(self.vfs.journal_len());
        Ok(self.round(limit).await? > 0)
    }

    /// One round; the number of records it took (0: nothing it could
    /// push).
    async fn round(&self, limit: usize) -> Result<usize, RoundError> {
        let records = self.vfs.take_round(limit, |op| {
            plan::deferred(&self.vfs, op) || self.waiting_for_probe(op.ino())
        })?;
        if records.is_empty() {
            return Ok(0);
        }
        let taken = records.len();
        let mut plan = plan::build(&self.vfs, records)?;
        self.transfer(&mut plan).await?;
        self.hold_back(&mut plan)?;
        // Nothing reaches the server that a crash could still take back
        // here: the records and every metadata change before them are made
        // durable first (one flush per round). Otherwise a crash inside
        // the store's flush interval rolls this device back behind what the
        // server already has, and the replayed older records collide with
        // the newer ones (conflict copies made by one device).
        self.vfs.fsync_all()?;

        let mut done = std::mem::take(&mut plan.settled);
        let mut refused = std::mem::take(&mut plan.blocked);
        let total = plan.ops.len();
        let mut requests = split_requests(std::mem::take(&mut plan.ops)).into_iter();
        let mut in_flight = requests.next().map(|ops| self.send_commit(ops));
        let mut start = 0;
        while let Some(request) = in_flight.take() {
            let end = (start + MAX_COMMIT_OPS).min(total);
            match request.await? {
                Ok(results) => {
                    // The server took this request: the next one goes out
                    // now, in order, while these answers are applied here.
                    // (Every op of the round was planned before its first
                    // commit, so applying answers does not change them.)
                    in_flight = requests.next().map(|ops| self.send_commit(ops));
                    for (outcome, (seq, origin)) in results.iter().zip(&plan.origins[start..end]) {
                        if let Err(e) = self.apply_outcome(outcome, origin) {
                            // Nothing of the round stays in flight once it
                            // ends: the next round sends these records
                            // again, after this request.
                            if let Some(next) = in_flight.take() {
                                let _ = next.await;
                            }
                            return Err(e);
                        }
                        done.push(*seq);
                    }
                    start = end;
                }
                Err(e) => {
                    let op = match e.class() {
                        FailureClass::Refused { op } => Some(op),
                        // A parent the server has never had and nothing
                        // here will create: retrying cannot help.
                        FailureClass::Transient => match &e {
                            RemoteError::Rejected {
                                code, op: Some(op), ..
                            } if code == "parent_not_found"
                                && !self.parent_pending(&plan.origins[start + op].1) =>
                            {
                                Some(*op)
                            }
                            _ => None,
                        },
                        FailureClass::NeedsUser(_) => None,
                    };
                    let Some(op) = op.filter(|op| start + op < end) else {
                        self.vfs.finish_round(&done, refused)?;
                        self.clean_up_after_round(&plan.inos);
                        return Err(e.into());
                    };
                    // Exactly that record is set aside; the next round
                    // sends the rest (none of this request was applied).
                    let (seq, origin) = &plan.origins[start + op];
                    let path = self.origin_path(origin);
                    tracing::warn!(path = %path, "the server refused this change: {e}");
                    if let Some(rec) = self.vfs.journal_record(*seq)? {
                        refused.push((
                            *seq,
                            Quarantined {
                                op: rec,
                                path,
                                reason: e.to_string(),
                                at_unix: crate::vfs::now_ns() / 1_000_000_000,
                                blocked_by: None,
                            },
                        ));
                    }
                    self.vfs.finish_round(&done, refused)?;
                    self.clean_up_after_round(&plan.inos);
                    self.vfs.notify_settled();
                    return Ok(taken);
                }
            }
        }
        self.vfs.finish_round(&done, refused)?;
        self.clean_up_after_round(&plan.inos);
        self.after_held(&plan)?;
        self.vfs.notify_settled();
        Ok(taken)
    }

    /// Sends one commit request on its own task, so that it is on its way
    /// while the answers to the previous one are applied. (If applying
    /// fails meanwhile, the round waits for this request before it ends;
    /// its records stay held and are sent again, a fast-forward.)
    fn send_commit(&self, ops: Vec<CommitOp>) -> PendingCommit {
        let remote = self.remote.clone();
        PendingCommit(tokio::spawn(async move { remote.commit(ops).await }))
    }

    /// After a round that went through: files whose content was held back
    /// and that the server has get their content journaled again (their
    /// records were answered with the old content); files whose content
    /// got through leave the held-back set; the connection state says
    /// whether anything is still held back, and why.
    fn after_held(&self, plan: &plan::Plan) -> Result<(), RoundError> {
        for ino in &plan.held {
            // Those the server never had kept their records.
            if self.vfs.inode(*ino)?.is_some_and(|i| i.on_server()) {
                self.vfs.journal_content_again(*ino)?;
            }
        }
        self.note_held(&plan.held);
        {
            let mut map = self.held_back.lock();
            for (_, origin) in &plan.origins {
                if let Origin::Node { ino, sent } = origin {
                    if sent.content {
                        map.remove(ino);
                    }
                }
            }
            // Files removed or rewritten meanwhile no longer wait.
            map.retain(|ino, _| {
                self.vfs
                    .inode(*ino)
                    .ok()
                    .flatten()
                    .is_some_and(|i| i.dirty && !i.unlinked)
            });
            if map.is_empty() {
                self.probe.lock().reset();
            }
        }
        let still = !self.held_back.lock().is_empty();
        match (&plan.refusal, still) {
            (_, false) => self.vfs.status().note_uploaded(),
            (Some(e), true) => {
                if let FailureClass::NeedsUser(NeedsUser::Misconfigured(m)) = e.class() {
                    self.vfs
                        .status()
                        .set_connection(Connection::Misconfigured(m));
                }
            }
            (None, true) => {}
        }
        Ok(())
    }

    fn clean_up_after_round(&self, inos: &[u64]) {
        self.vfs.status().clear_upload_progress(inos);
        if let Err(e) = self.vfs.after_round(inos) {
            tracing::warn!("cleanup after an upload round: {e}");
        }
    }

    /// True when the parent of the op's node still has local records that
    /// may create it on the server.
    fn parent_pending(&self, origin: &Origin) -> bool {
        let Origin::Node { ino, .. } = origin else {
            return false;
        };
        match self.vfs.inode(*ino) {
            Ok(Some(i)) => self.vfs.is_journaled(i.parent),
            _ => false,
        }
    }

    fn origin_path(&self, origin: &Origin) -> String {
        match origin {
            Origin::Node { ino, .. } => self.vfs.path_of(*ino).unwrap_or_default(),
            Origin::Delete(id) => match self.vfs.ino_of(id) {
                Ok(Some(ino)) => self.vfs.path_of(ino).unwrap_or_default(),
                _ => id.to_string(),
            },
        }
    }
}
