//! The change follower: pulls the account's change log by cursor and
//! applies it to the metadata cache; a device that was away resumes from
//! its saved cursor and misses nothing.
//!
//! # When it pulls
//! - With push ([`Remote::subscribe`], the server's `GET /api/v1/sync/ws`):
//!   when a notification names a cursor ahead of the local one, and on
//!   every (re)connect of the socket (the server announces its head at
//!   once, so a device that was disconnected notices what it missed).
//!   Notifications that arrive during a pull coalesce into one more pull.
//!   A slow periodic pull ([`SAFETY_PULL`], 30 s) stays as a safety net.
//! - Without push (a remote that has none, a server without the route, or
//!   while the socket is down): every [`POLL`] (1 s), as before push, so
//!   nothing regresses against such servers.
//! - When `nimbus sync --wait --pull` asks ([`SyncStatus::request_pull`]):
//!   at once; the request counts as answered when a pull that started
//!   after it reached the end of the log (`has_more == false`), which
//!   covers every change the server had when the command started.
//!
//! The cursor is the truth: a notification only says "look"; a lost one
//! costs nothing but latency, and the device's own commits come back as
//! metadata only (the content is already local: applying a record whose
//! manifest matches fetches no chunk).
//!
//! [`SyncStatus::request_pull`]: crate::vfs::SyncStatus::request_pull
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
//!
//! A page is applied in change-log order but for one move: the delete of
//! a file or symlink whose name a later record of the page takes (an
//! editor's save renamed a new file over it) goes right after that record
//! (`replacements_first`), so the new node takes the name in one batch
//! and a lookup never finds it missing in between.

use super::Backoff;
use crate::protocol::{NodeId, NodeRecord, MAX_PULL_LIMIT};
use crate::remote::push::{PushState, PushSubscription};
use crate::remote::{FailureClass, NeedsUser, Remote, RemoteError};
use crate::vfs::capacity::{SPACE_REFRESH_MAX, SPACE_REFRESH_MIN};
use crate::vfs::{Connection, PushStatus, Vfs};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Poll period without push.
pub const POLL: Duration = Duration::from_secs(1);
/// Safety-net pull period while push is connected.
pub const SAFETY_PULL: Duration = Duration::from_secs(30);

/// When the account's space was last asked for, at which change cursor.
#[derive(Default)]
struct SpaceRefresh {
    last: Option<Instant>,
    cursor: u64,
}

/// Pulls the change log into the metadata cache (see the module docs).
pub struct Follower {
    vfs: Arc<Vfs>,
    remote: Arc<dyn Remote>,
}

/// The push listener as the follower follows it.
struct Push {
    sub: PushSubscription,
    /// The listener's `connects` at the last pull it caused.
    seen_connects: u64,
}

impl Follower {
    /// A follower of `remote` for `vfs`.
    pub fn new(vfs: Arc<Vfs>, remote: Arc<dyn Remote>) -> Self {
        Follower { vfs, remote }
    }

    /// Pulls until `stop` fires: on push notifications, pull requests and
    /// timers (see the module docs).
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut space = SpaceRefresh::default();
        let mut push = self.remote.clone().subscribe().map(|sub| Push {
            sub,
            seen_connects: 0,
        });
        if let Some(p) = &push {
            self.vfs.status().set_push(Some(PushStatus::default()));
            self.mirror_push_state(p.sub.state.clone(), stop.clone());
        }
        loop {
            let request = self.vfs.status().pull_requested();
            let result = self.pull_all().await;
            let mut unauthorized = false;
            let delay = match result {
                Ok(()) => {
                    backoff.reset();
                    self.vfs.status().note_server_reachable();
                    self.vfs.status().pull_done(request);
                    self.refresh_space(&mut space).await;
                    if push
                        .as_ref()
                        .is_some_and(|p| p.sub.state.borrow().connected)
                    {
                        SAFETY_PULL
                    } else {
                        POLL
                    }
                }
                Err(e) => {
                    set_connection(&self.vfs, &e);
                    tracing::info!("change follower: {e}");
                    unauthorized = matches!(
                        e.class(),
                        FailureClass::NeedsUser(NeedsUser::Unauthorized(_))
                    );
                    backoff.next_delay().max(POLL)
                }
            };
            // Refused credentials: new ones (`nimbus login`) end the wait.
            let stopped = if unauthorized {
                tokio::select! {
                    stopped = self.wait(delay, &mut push, &stop) => stopped,
                    _ = self.remote.credentials_renewed() => {
                        backoff.reset();
                        false
                    }
                }
            } else {
                self.wait(delay, &mut push, &stop).await
            };
            if stopped {
                return;
            }
        }
    }

    /// Keeps the push line of `nimbus status` current on a task of its
    /// own (the loop of [`Follower::run`] can be inside a pull for up to a
    /// request timeout while the socket changes state), and tells the
    /// other workers when a new connection shows the server answers again.
    fn mirror_push_state(
        &self,
        mut state: tokio::sync::watch::Receiver<PushState>,
        stop: CancellationToken,
    ) {
        let vfs = self.vfs.clone();
        tokio::spawn(async move {
            let mut connects = 0;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = state.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let s = state.borrow_and_update().clone();
                        vfs.status().set_push(Some(push_status(&s)));
                        if s.connected && s.connects != connects {
                            connects = s.connects;
                            vfs.status().note_server_reachable();
                        }
                    }
                }
            }
        });
    }

    /// Waits until the next pull is due: `delay` passed, a pull was
    /// requested, or push says the server is ahead or reconnected (see
    /// the module docs). True when `stop` fired.
    async fn wait(
        &self,
        delay: Duration,
        push: &mut Option<Push>,
        stop: &CancellationToken,
    ) -> bool {
        let mut deadline = tokio::time::Instant::now() + delay;
        loop {
            let state_changed = async {
                match push.as_mut() {
                    Some(p) => p.sub.state.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return true,
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = self.vfs.status().pull_wanted() => return false,
                alive = state_changed => {
                    let Some(p) = push.as_mut() else { continue };
                    if !alive {
                        // The listener is gone: poll from now on.
                        tracing::warn!("push listener stopped; polling every {}s", POLL.as_secs());
                        *push = None;
                        self.vfs.status().set_push(None);
                        return false;
                    }
                    let state = p.sub.state.borrow_and_update().clone();
                    self.vfs.status().set_push(Some(push_status(&state)));
                    if state.connected && state.connects != p.seen_connects {
                        p.seen_connects = state.connects;
                        return false;
                    }
                    if state.server_cursor > self.vfs.cursor().unwrap_or(0) {
                        return false;
                    }
                    if !state.connected {
                        // Back to polling while the socket is down.
                        deadline = deadline.min(tokio::time::Instant::now() + POLL);
                    }
                }
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
            for i in replacements_first(&page.changes) {
                let rec = &page.changes[i];
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

/// The order to apply a page of records in: the change log's, except that
/// the delete of a file or symlink goes right after the first later
/// record that takes its name (an editor's save: the old file deleted, the
/// new one renamed to its name). The new node then takes the name from
/// the old one in one batch (it displaces it, see `vfs::reconcile`), so a
/// lookup here never finds the name missing in between.
fn replacements_first(changes: &[NodeRecord]) -> Vec<usize> {
    fn place(r: &NodeRecord) -> Option<(NodeId, &str)> {
        r.parent.map(|p| (p, r.name.as_str()))
    }
    // Per place, the last record that takes it.
    let mut last_taker: HashMap<(NodeId, &str), usize> = HashMap::new();
    for (i, rec) in changes.iter().enumerate() {
        if let (false, Some(p)) = (rec.deleted, place(rec)) {
            last_taker.insert(p, i);
        }
    }
    let mut order: Vec<usize> = Vec::with_capacity(changes.len());
    // Deletes held back, each until the record that takes its place.
    let mut held: Vec<usize> = Vec::new();
    for (i, rec) in changes.iter().enumerate() {
        let replaced_later = rec.deleted
            && rec.meta.kind != crate::protocol::NodeKind::Dir
            && place(rec)
                .and_then(|p| last_taker.get(&p))
                .is_some_and(|&t| t > i);
        if replaced_later {
            held.push(i);
            continue;
        }
        order.push(i);
        if !rec.deleted {
            let here = place(rec);
            held.retain(|&h| {
                if place(&changes[h]) == here {
                    order.push(h);
                    false
                } else {
                    true
                }
            });
        }
    }
    order.extend(held);
    order
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

/// What the status shows of the listener's state.
fn push_status(s: &PushState) -> PushStatus {
    PushStatus {
        connected: s.connected,
        last_notification_unix_ms: s.last_notification.and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }),
        server_cursor: s.server_cursor,
        last_error: s.last_error.clone(),
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

#[cfg(test)]
mod tests;
