//! The change follower: pulls the account's change log by cursor and
//! applies it to the metadata cache. Polls every second for now (push
//! notifications come later); a device that was away resumes from its
//! saved cursor and misses nothing.
//!
//! Records arrive in change-log order with each node's latest state, so a
//! child can arrive before a parent that was moved later (or in a later
//! page, or a later pull). Such records are never skipped: they wait in
//! the metadata store (`W` keys, [`crate::vfs::meta::MetaCache::waiting_records`]),
//! saved in the same batch as the cursor that moves past them, and are
//! retried at the start of every pull and after every page until their
//! parent appears — the folder of every entry of the node, its hard links
//! included (`vfs::reconcile`). Their count is in the status
//! (`waiting_remote`).

use super::Backoff;
use crate::protocol::{NodeId, NodeRecord, MAX_PULL_LIMIT};
use crate::remote::{FailureClass, NeedsUser, Remote, RemoteError};
use crate::vfs::capacity::{SPACE_REFRESH_MAX, SPACE_REFRESH_MIN};
use crate::vfs::{Connection, Vfs};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_secs(1);

/// When the account's space was last asked for, at which change cursor.
#[derive(Default)]
struct SpaceRefresh {
    last: Option<Instant>,
    cursor: u64,
}

pub struct Follower {
    vfs: Arc<Vfs>,
    remote: Arc<dyn Remote>,
}

impl Follower {
    pub fn new(vfs: Arc<Vfs>, remote: Arc<dyn Remote>) -> Self {
        Follower { vfs, remote }
    }

    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut space = SpaceRefresh::default();
        loop {
            let delay = match self.pull_all().await {
                Ok(()) => {
                    backoff.reset();
                    self.refresh_space(&mut space).await;
                    POLL
                }
                Err(e) => {
                    set_connection(&self.vfs, &e);
                    tracing::info!("change follower: {e}");
                    backoff.next_delay().max(POLL)
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Asks the server for the account's space when it is due (see
    /// [`crate::vfs::capacity`]) and saves the answer. A failure is only
    /// logged: `statfs` keeps the last answer, and the next round retries.
    async fn refresh_space(&self, space: &mut SpaceRefresh) {
        let cursor = self.vfs.cursor().unwrap_or(0);
        let due = match space.last {
            None => true,
            Some(at) => {
                let age = at.elapsed();
                age >= SPACE_REFRESH_MAX || (cursor != space.cursor && age >= SPACE_REFRESH_MIN)
            }
        };
        if !due {
            return;
        }
        space.last = Some(Instant::now());
        match self.remote.space().await {
            Ok(report) => {
                space.cursor = cursor;
                if let Err(e) = self.vfs.set_space_report(&report) {
                    tracing::warn!("cannot save the space report: {}", e.chain());
                }
            }
            Err(e) => tracing::debug!("space report: {e}"),
        }
    }

    /// Pulls and applies every change after the saved cursor. Records that
    /// cannot be applied yet (see the module docs) are kept in the
    /// metadata store, saved in the same batch as the cursor that moves
    /// past them, and retried at the start of every pull and after every
    /// page until their parent appears.
    pub async fn pull_all(&self) -> Result<(), RemoteError> {
        let mut cursor = self.vfs.cursor().map_err(store_err)?;
        let mut waiting: BTreeMap<NodeId, NodeRecord> = self
            .vfs
            .waiting_records()
            .map_err(store_err)?
            .into_iter()
            .map(|r| (r.node_id, r))
            .collect();
        let mut stored: HashSet<NodeId> = waiting.keys().copied().collect();
        if !waiting.is_empty() {
            self.retry_waiting(&mut waiting)?;
            self.save(None, &waiting, &mut stored)?;
        }
        loop {
            let page = match self.remote.pull(cursor, MAX_PULL_LIMIT.min(1000)).await {
                // The server's log is behind our cursor (restored from a
                // backup, or reset): start over; applying is idempotent.
                Err(RemoteError::Rejected { code, .. }) if code == "cursor_ahead" && cursor > 0 => {
                    tracing::warn!(
                        "server change log is behind this device; pulling it again from the start"
                    );
                    cursor = 0;
                    continue;
                }
                other => other?,
            };
            for rec in &page.changes {
                // Each record carries its node's latest state: it replaces
                // an older waiting one of the same node, applied or not.
                if self.vfs.apply_remote(rec).map_err(store_err)? {
                    waiting.remove(&rec.node_id);
                } else {
                    waiting.insert(rec.node_id, rec.clone());
                }
            }
            self.retry_waiting(&mut waiting)?;
            cursor = page.cursor;
            self.save(Some(cursor), &waiting, &mut stored)?;
            if !page.has_more {
                break;
            }
        }
        let count = waiting.len() as u64;
        if self.vfs.status().set_waiting_remote(count) && count > 0 {
            tracing::warn!(
                count,
                "changes from the server wait for a folder this device does not have yet; \
                 kept and retried on every pull"
            );
        }
        self.vfs.status().note_pulled();
        Ok(())
    }
}

impl Follower {
    /// Applies waiting records, in change-log order, while that makes
    /// progress (one may be the parent of another).
    fn retry_waiting(&self, waiting: &mut BTreeMap<NodeId, NodeRecord>) -> Result<(), RemoteError> {
        loop {
            let mut order: Vec<&NodeRecord> = waiting.values().collect();
            order.sort_by_key(|r| r.seq);
            let mut applied = Vec::new();
            for rec in order {
                if self.vfs.apply_remote(rec).map_err(store_err)? {
                    applied.push(rec.node_id);
                }
            }
            if applied.is_empty() {
                return Ok(());
            }
            for id in applied {
                waiting.remove(&id);
            }
        }
    }

    /// Saves the cursor (when given) and the waiting records in one batch;
    /// `stored` is what the store holds, updated.
    fn save(
        &self,
        cursor: Option<u64>,
        waiting: &BTreeMap<NodeId, NodeRecord>,
        stored: &mut HashSet<NodeId>,
    ) -> Result<(), RemoteError> {
        let drop: Vec<NodeId> = stored
            .iter()
            .filter(|id| !waiting.contains_key(id))
            .copied()
            .collect();
        let put: Vec<&NodeRecord> = waiting.values().collect();
        self.vfs.save_pull(cursor, &put, &drop).map_err(store_err)?;
        *stored = waiting.keys().copied().collect();
        Ok(())
    }
}

fn store_err(e: crate::vfs::VfsError) -> RemoteError {
    RemoteError::Server {
        status: 0,
        message: format!("local metadata store: {e}"),
    }
}

fn set_connection(vfs: &Vfs, e: &RemoteError) {
    match e.class() {
        FailureClass::NeedsUser(NeedsUser::Unauthorized(m)) => {
            vfs.status().set_connection(Connection::Unauthorized(m))
        }
        _ if matches!(e, RemoteError::Unreachable(_)) => {
            vfs.status().set_connection(Connection::Offline)
        }
        _ => {}
    }
}
