//! Push: telling connected devices that their account's change log moved.
//!
//! # Design
//! - [`ChangeHub`] keeps one `tokio::sync::watch` channel per account
//!   that has at least one connected socket, created lazily by
//!   [`ChangeHub::subscribe`] and dropped with its last [`Subscription`].
//!   A watch holds only the latest [`AccountHead`]: a slow socket never
//!   queues, it skips to the newest cursor, which is all a device needs
//!   (it pulls everything after its own cursor anyway).
//! - Whatever appends to an account's change log calls
//!   [`ChangeNotifier::changed`] once its transaction committed (today
//!   only `api::commit_ops`: every `next_seq` is inside
//!   `commit::commit`). Session changes (revoke, sign-out, password
//!   change) call [`ChangeNotifier::sessions_changed`], so every socket of
//!   the account checks its session at once instead of at the next
//!   heartbeat.
//! - [`ChangeNotifier`] is the seam for several server instances: a
//!   PostgreSQL LISTEN/NOTIFY bridge would implement it by `NOTIFY`ing,
//!   and its listener task would feed each instance's hub through the
//!   same [`ChangeHub::publish`].
//! - The socket side (auth, heartbeats, closing) is [`socket`]; the caps
//!   on open sockets are [`open`].
//!
//! Lock order: the hub's map lock is never held across an await, and a
//! watch's own lock is only taken inside it by `subscribe`/`publish`.

pub mod open;
pub mod socket;

pub use open::{OverLimit, SocketLimits};
pub use socket::Heartbeat;

use super::meta_store::AccountId;
use crate::protocol::DeviceId;
use open::OpenCounts;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// What an account's sockets are told: the head of its change log, and a
/// counter of session changes (each change makes every socket re-check
/// its session).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountHead {
    /// The last sequence number of the account's change log.
    pub cursor: u64,
    /// The device whose commit moved the cursor there, when known.
    pub device: Option<DeviceId>,
    /// Bumped by [`ChangeNotifier::sessions_changed`].
    pub sessions: u64,
}

/// Where change-log advances and session changes are reported (see the
/// module docs).
pub trait ChangeNotifier: Send + Sync + 'static {
    /// `account`'s change log reached `cursor` (after the transaction that
    /// appended to it committed); `device` made the change, if known.
    fn changed(&self, account: AccountId, cursor: u64, device: Option<DeviceId>);
    /// A session of `account` ended or may have (a device was revoked or
    /// signed out, the password changed).
    fn sessions_changed(&self, account: AccountId);
    /// True when someone may want [`ChangeNotifier::changed`] for this
    /// account (lets the caller skip reading the head when nobody
    /// listens).
    fn wants(&self, account: AccountId) -> bool;
}

/// The in-process fan-out (see the module docs).
#[derive(Default)]
pub struct ChangeHub {
    accounts: Mutex<HashMap<AccountId, watch::Sender<AccountHead>>>,
    /// The caps on open sockets.
    limits: SocketLimits,
    /// Sockets open now, counted against `limits` (and the `/metrics`
    /// gauge).
    open: Mutex<OpenCounts>,
    /// Messages sent to sockets (the `/metrics` counter).
    notifications: AtomicU64,
}

/// One socket's view of its account's head; dropping the last one of an
/// account drops the account's channel.
pub struct Subscription {
    hub: Arc<ChangeHub>,
    account: AccountId,
    rx: watch::Receiver<AccountHead>,
}

impl ChangeHub {
    /// A hub, shared by the handlers and the notifier.
    pub fn new() -> Arc<Self> {
        Self::with_limits(SocketLimits::default())
    }

    /// A hub whose sockets are capped by `limits`.
    pub fn with_limits(limits: SocketLimits) -> Arc<Self> {
        Arc::new(ChangeHub {
            limits,
            ..ChangeHub::default()
        })
    }

    /// Subscribes to `account`'s head; `head` is the cursor read from the
    /// store just before (a newer one already published wins).
    pub fn subscribe(self: &Arc<Self>, account: AccountId, head: u64) -> Subscription {
        let mut map = self.accounts.lock();
        let tx = map
            .entry(account)
            .or_insert_with(|| watch::channel(AccountHead::default()).0);
        let rx = tx.subscribe();
        tx.send_if_modified(|h| raise(h, head, None));
        Subscription {
            hub: self.clone(),
            account,
            rx,
        }
    }

    /// Tells `account`'s sockets that its log is at `cursor`; a cursor at
    /// or below the one already published changes nothing (commits may
    /// report out of order). Without sockets for the account: nothing.
    pub fn publish(&self, account: AccountId, cursor: u64, device: Option<DeviceId>) {
        if let Some(tx) = self.accounts.lock().get(&account) {
            tx.send_if_modified(|h| raise(h, cursor, device));
        }
    }

    /// Accounts with at least one subscription.
    pub fn accounts(&self) -> usize {
        self.accounts.lock().len()
    }

    /// Notifications sent since the server started.
    pub fn notifications(&self) -> u64 {
        self.notifications.load(Ordering::Relaxed)
    }

    pub(crate) fn note_notification(&self) {
        self.notifications.fetch_add(1, Ordering::Relaxed);
    }
}

/// Moves `h` to `cursor` if that is ahead; true when it moved.
fn raise(h: &mut AccountHead, cursor: u64, device: Option<DeviceId>) -> bool {
    if cursor > h.cursor {
        h.cursor = cursor;
        h.device = device;
        true
    } else {
        false
    }
}

impl ChangeNotifier for ChangeHub {
    fn changed(&self, account: AccountId, cursor: u64, device: Option<DeviceId>) {
        self.publish(account, cursor, device);
    }

    fn sessions_changed(&self, account: AccountId) {
        if let Some(tx) = self.accounts.lock().get(&account) {
            tx.send_modify(|h| h.sessions += 1);
        }
    }

    fn wants(&self, account: AccountId) -> bool {
        self.accounts.lock().contains_key(&account)
    }
}

impl Subscription {
    /// The receiver of the account's head (mark seen, wait for changes).
    pub fn receiver(&mut self) -> &mut watch::Receiver<AccountHead> {
        &mut self.rx
    }

    /// The account subscribed to.
    pub fn account(&self) -> AccountId {
        self.account
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Under the map lock (which every new subscription takes too):
        // drop the account's channel if this receiver, still alive, is
        // its last one.
        let mut map = self.hub.accounts.lock();
        if map
            .get(&self.account)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.account);
        }
    }
}

#[cfg(test)]
mod tests;
