//! How many push sockets are open, and the caps that bound them.
//!
//! A push socket costs the server a task, a watch receiver and a TCP
//! connection for as long as it lives; nothing else bounds how many one
//! client opens. So every socket is counted before its upgrade, per device,
//! per account and in all, and one over a cap is refused with 429
//! `too_many_sockets` before any upgrade (a client retries with its
//! reconnect backoff). A device needs one socket; the per-device cap leaves
//! room for a reconnect that overlaps the old socket's silence limit.

use super::super::meta_store::AccountId;
use super::ChangeHub;
use crate::protocol::DeviceId;
use std::collections::HashMap;
use std::sync::Arc;

/// The caps on open push sockets (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketLimits {
    /// Sockets one device may hold open (default 4).
    pub per_device: u32,
    /// Sockets one account may hold open, over all its devices (default 64).
    pub per_account: u32,
    /// Sockets the whole server holds open (default 10,000).
    pub total: u64,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            per_device: 4,
            per_account: 64,
            total: 10_000,
        }
    }
}

/// Which cap a socket would exceed: the message of the 429.
#[derive(Debug, PartialEq, Eq)]
pub enum OverLimit {
    /// This device has [`SocketLimits::per_device`] open.
    Device(u32),
    /// This account has [`SocketLimits::per_account`] open.
    Account(u32),
    /// The server has [`SocketLimits::total`] open.
    Server(u64),
}

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OverLimit::Device(n) => write!(
                f,
                "this device already has {n} push sockets open (the limit); close one first"
            ),
            OverLimit::Account(n) => write!(
                f,
                "this account already has {n} push sockets open (the limit)"
            ),
            OverLimit::Server(n) => {
                write!(
                    f,
                    "the server has {n} push sockets open (its limit); retry later"
                )
            }
        }
    }
}

/// The open sockets, counted (under the hub's `open` lock).
#[derive(Default)]
pub(super) struct OpenCounts {
    total: u64,
    accounts: HashMap<AccountId, u32>,
    devices: HashMap<DeviceId, u32>,
}

impl ChangeHub {
    /// Counts one socket of `device` (of `account`) as open until the guard
    /// drops, unless that would exceed a cap of [`SocketLimits`].
    pub(crate) fn open_socket(
        self: &Arc<Self>,
        account: AccountId,
        device: DeviceId,
    ) -> Result<SocketGuard, OverLimit> {
        let limits = self.limits;
        let mut open = self.open.lock();
        if open.total >= limits.total {
            return Err(OverLimit::Server(limits.total));
        }
        if open.accounts.get(&account).copied().unwrap_or(0) >= limits.per_account {
            return Err(OverLimit::Account(limits.per_account));
        }
        if open.devices.get(&device).copied().unwrap_or(0) >= limits.per_device {
            return Err(OverLimit::Device(limits.per_device));
        }
        open.total += 1;
        *open.accounts.entry(account).or_default() += 1;
        *open.devices.entry(device).or_default() += 1;
        Ok(SocketGuard {
            hub: self.clone(),
            account,
            device,
        })
    }

    /// Sockets open now.
    pub fn sockets(&self) -> u64 {
        self.open.lock().total
    }
}

/// One counted open socket; dropping it uncounts it.
pub(crate) struct SocketGuard {
    hub: Arc<ChangeHub>,
    account: AccountId,
    device: DeviceId,
}

/// Decrements `map[key]`, removing the entry at zero.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let mut open = self.hub.open.lock();
        open.total = open.total.saturating_sub(1);
        release(&mut open.accounts, &self.account);
        release(&mut open.devices, &self.device);
    }
}
