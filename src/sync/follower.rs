//! The change follower: pulls the account's change log by cursor and
//! applies it to the metadata cache. Polls every second for now (push
//! notifications come later); a device that was away resumes from its
//! saved cursor and misses nothing.
//!
//! Records arrive in change-log order with each node's latest state, so a
//! child can arrive before a parent that was moved later; such records wait
//! in `deferred` until their parent has been applied, and the cursor is
//! saved only when nothing waits.

use super::Backoff;
use crate::protocol::{NodeRecord, MAX_PULL_LIMIT};
use crate::remote::{FailureClass, NeedsUser, Remote, RemoteError};
use crate::vfs::{Connection, Vfs};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const CURSOR_KEY: &str = "cursor";
const POLL: Duration = Duration::from_secs(1);

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
        loop {
            let delay = match self.pull_all().await {
                Ok(()) => {
                    backoff.reset();
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

    /// Pulls and applies every change after the saved cursor.
    pub async fn pull_all(&self) -> Result<(), RemoteError> {
        let mut cursor = self.vfs.meta.counter(CURSOR_KEY).map_err(store_err)?;
        let mut deferred: Vec<NodeRecord> = Vec::new();
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
                if !self.vfs.apply_remote(rec).map_err(store_err)? {
                    deferred.push(rec.clone());
                }
            }
            // Retry waiting records while that makes progress.
            loop {
                let before = deferred.len();
                let mut still = Vec::new();
                for rec in deferred.drain(..) {
                    if !self.vfs.apply_remote(&rec).map_err(store_err)? {
                        still.push(rec);
                    }
                }
                deferred = still;
                if deferred.len() == before || deferred.is_empty() {
                    break;
                }
            }
            cursor = page.cursor;
            if deferred.is_empty() || !page.has_more {
                for rec in &deferred {
                    tracing::warn!(node = %rec.node_id, "change for a node whose folder is unknown; skipped");
                }
                deferred.clear();
                let mut t = self.vfs.meta.txn();
                t.set_counter(CURSOR_KEY, cursor);
                t.commit().map_err(store_err)?;
            }
            if !page.has_more {
                break;
            }
        }
        let mut st = self.vfs.sync_state.lock();
        // A pull that works proves the server is reachable and takes the
        // credentials, but not that it takes upload bodies (a proxy's 413
        // pause stays until the uploader gets through).
        if matches!(
            st.connection,
            Connection::Offline | Connection::Unauthorized(_)
        ) {
            st.connection = Connection::Online;
        }
        st.last_sync_unix = Some(crate::vfs::now_ns() / 1_000_000_000);
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
            vfs.set_connection(Connection::Unauthorized(m))
        }
        _ if matches!(e, RemoteError::Unreachable(_)) => vfs.set_connection(Connection::Offline),
        _ => {}
    }
}
