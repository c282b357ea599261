//! What the user sees of syncing: the connection state, last sync,
//! conflicts, waiting remote changes ([`SyncState`]), and the upload
//! progress of the round in flight. [`SyncStatus`] owns them behind its
//! own locks (never held when a method returns); the workers report
//! through its methods ([`Vfs::status`]). It also counts the kernel
//! requests the FUSE adapter serves ([`SyncStatus::note_fuse_request`]),
//! shown as `fuse_requests` for benchmarks that count per-file costs.
//!
//! The change follower reports the push channel here ([`PushStatus`]),
//! and `nimbus sync --wait --pull` asks it for a pull through
//! [`SyncStatus::request_pull`] (the `user.nimbus.pull` attribute): the
//! request gets a number, and once a pull that *started after* the
//! request reached the end of the server's change log, the follower
//! publishes that number as done ([`SyncStatus::pulls`]).

use super::*;

/// The device's connection to the server, as `nimbus status` and
/// `user.nimbus.status` show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Connection {
    /// Not reached yet, or unreachable: uploads retry with backoff.
    #[default]
    Offline,
    Online,
    /// Credentials refused: uploads pause until `nimbus login`.
    Unauthorized(String),
    /// The server or a proxy refuses requests of this shape (413, unknown
    /// route, ...): uploads pause until it accepts them.
    Misconfigured(String),
}

impl Connection {
    /// The state's name in the status JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Connection::Offline => "offline",
            Connection::Online => "online",
            Connection::Unauthorized(_) => "unauthorized",
            Connection::Misconfigured(_) => "misconfigured",
        }
    }
    /// Why uploads pause, for the states that pause them.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Connection::Unauthorized(r) | Connection::Misconfigured(r) => Some(r),
            Connection::Offline | Connection::Online => None,
        }
    }
}

/// Sync state shown to the user (status xattr, `nimbus status`). Failed
/// (refused) changes live in the journal's quarantine, not here.
#[derive(Clone, Debug, Default)]
pub struct SyncState {
    pub connection: Connection,
    pub last_sync_unix: Option<i64>,
    pub conflicts: u64,
    pub server: String,
    /// Pulled changes waiting for a folder this device does not have yet
    /// (kept by the change follower, retried on every pull).
    pub waiting_remote: u64,
    /// The push channel; `None` when the remote has none (the follower
    /// polls every second).
    pub push: Option<PushStatus>,
}

/// The push channel as the user sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushStatus {
    /// A socket to the server is open.
    pub connected: bool,
    /// When the last notification arrived (Unix milliseconds).
    pub last_notification_unix_ms: Option<i64>,
    /// The newest change-log cursor the server announced.
    pub server_cursor: u64,
    /// Why the last connection attempt or connection failed.
    pub last_error: Option<String>,
}

/// Pull requests of `nimbus sync --wait --pull` (see the module docs).
#[derive(Default)]
struct PullRequests {
    /// Numbers handed out so far (the last one).
    requested: AtomicU64,
    /// The highest request number a completed pull started after.
    done: AtomicU64,
    /// Wakes the follower when a pull is requested.
    wanted: tokio::sync::Notify,
}

/// The sync state and upload progress (see the module docs).
#[derive(Default)]
pub struct SyncStatus {
    state: Mutex<SyncState>,
    /// Bytes of new content uploaded per file in the round in flight.
    upload_progress: Mutex<HashMap<u64, u64>>,
    /// Kernel requests served since the mount started (the adapter counts
    /// them; the core only publishes the number).
    fuse_requests: AtomicU64,
    pulls: PullRequests,
    /// Woken when the server answers again after being unreachable.
    reachable: tokio::sync::Notify,
}

impl Vfs {
    /// What the user sees of syncing; the workers report to it.
    pub fn status(&self) -> &SyncStatus {
        &self.status
    }
}

impl SyncStatus {
    /// A snapshot of the sync state.
    pub fn snapshot(&self) -> SyncState {
        self.state.lock().clone()
    }

    /// Sets the connection state shown to the user.
    pub fn set_connection(&self, c: Connection) {
        self.state.lock().connection = c;
    }

    /// The server this mount talks to, for status displays.
    pub fn set_server(&self, url: &str) {
        self.state.lock().server = url.to_string();
    }

    /// An upload round went through: the server takes this device's
    /// requests (whatever paused uploads before is over).
    pub fn note_uploaded(&self) {
        let mut st = self.state.lock();
        st.connection = Connection::Online;
        st.last_sync_unix = Some(now_ns() / 1_000_000_000);
    }

    /// A pull went through: the server is reachable and takes the
    /// credentials, but that says nothing about upload bodies (a proxy's
    /// 413 pause stays until the uploader gets through).
    pub fn note_pulled(&self) {
        let mut st = self.state.lock();
        if matches!(
            st.connection,
            Connection::Offline | Connection::Unauthorized(_)
        ) {
            st.connection = Connection::Online;
        }
        st.last_sync_unix = Some(now_ns() / 1_000_000_000);
    }

    /// The server kept a concurrent version beside this device's.
    pub fn note_conflict(&self) {
        self.state.lock().conflicts += 1;
    }

    /// `bytes` more of file `ino`'s new content are on the server (the
    /// uploader reports it chunk group by chunk group), so what is left to
    /// upload shrinks while a large file goes up.
    pub fn note_upload_progress(&self, ino: u64, bytes: u64) {
        *self.upload_progress.lock().entry(ino).or_insert(0) += bytes;
    }

    /// Forgets the upload progress of `inos` (their round is over).
    pub fn clear_upload_progress(&self, inos: &[u64]) {
        let mut p = self.upload_progress.lock();
        for ino in inos {
            p.remove(ino);
        }
    }

    /// Bytes of `ino`'s new content already uploaded in the round in
    /// flight.
    pub fn uploaded_so_far(&self, ino: u64) -> u64 {
        self.upload_progress.lock().get(&ino).copied().unwrap_or(0)
    }

    /// The FUSE adapter received one more kernel request (any operation).
    pub fn note_fuse_request(&self) {
        self.fuse_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Kernel requests served since the mount started.
    pub fn fuse_requests(&self) -> u64 {
        self.fuse_requests.load(Ordering::Relaxed)
    }

    /// Sets the push channel's state (the follower does, on every change).
    pub fn set_push(&self, push: Option<PushStatus>) {
        self.state.lock().push = push;
    }

    /// Asks the change follower for a pull that starts after this call;
    /// returns the request's number (see the module docs).
    pub fn request_pull(&self) -> u64 {
        let n = self.pulls.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.pulls.wanted.notify_one();
        n
    }

    /// The last request number handed out, and the highest one answered
    /// by a complete pull.
    pub fn pulls(&self) -> (u64, u64) {
        (
            self.pulls.requested.load(Ordering::SeqCst),
            self.pulls.done.load(Ordering::SeqCst),
        )
    }

    /// The last request number handed out (the follower reads it before a
    /// pull starts, and passes it to [`SyncStatus::pull_done`] after).
    pub fn pull_requested(&self) -> u64 {
        self.pulls.requested.load(Ordering::SeqCst)
    }

    /// A pull that started when `requested` was the last request number
    /// reached the end of the server's log.
    pub fn pull_done(&self, requested: u64) {
        self.pulls.done.fetch_max(requested, Ordering::SeqCst);
    }

    /// Resolves when a pull is requested (one waiter: the follower; a
    /// request made while it was not waiting is kept for its next wait).
    pub async fn pull_wanted(&self) {
        self.pulls.wanted.notified().await
    }

    /// The server answers again (a pull succeeded, the push socket
    /// connected): wakes a worker waiting out a backoff for it
    /// ([`SyncStatus::server_reachable`]).
    pub fn note_server_reachable(&self) {
        self.reachable.notify_waiters();
    }

    /// Resolves at the next [`SyncStatus::note_server_reachable`].
    pub async fn server_reachable(&self) {
        self.reachable.notified().await
    }

    /// Sets how many pulled changes wait (see [`SyncState::waiting_remote`]);
    /// true when the number changed.
    pub fn set_waiting_remote(&self, count: u64) -> bool {
        let mut st = self.state.lock();
        std::mem::replace(&mut st.waiting_remote, count) != count
    }
}
