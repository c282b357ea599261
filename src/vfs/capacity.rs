//! What `statfs(2)` reports (`df` on the mount): the account's usage
//! and the room left on the server, never the local cache budget (the
//! cache evicts; it does not fill up).
//!
//! The change follower asks the server (`GET account/space`) after its
//! first pull, then whenever the change cursor moved (at most every
//! [`SPACE_REFRESH_MIN`]) and at least every [`SPACE_REFRESH_MAX`]; each
//! answer is saved in the metadata store, so an offline mount shows the
//! last one. `statfs` itself never waits on the network.
//!
//! Numbers, in 4 KiB blocks: used = the account's live files (server
//! side, before deduplication), free = what the server reports left (the
//! quota less the usage, or the free space of its chunk storage), total =
//! used + free. Where the server reports no bound (an object store) or
//! has never answered, free is [`UNKNOWN_FREE_BYTES`] (1 PiB, as rclone
//! mount reports for a remote without usage information). Inodes: used =
//! the account's live nodes, free = 2^32 (there is no inode table to fill).

use super::Vfs;
use crate::protocol::SpaceReport;
use crate::vfs::error::VfsResult;
use std::time::Duration;

/// Block size of the numbers `statfs` gives (`f_bsize` and `f_frsize`).
pub const BLOCK: u64 = 4096;
/// Free bytes shown when the server reports no bound or has not answered.
pub const UNKNOWN_FREE_BYTES: u64 = 1 << 50;
/// Free inodes shown (there is no fixed inode table).
const FREE_INODES: u64 = 1 << 32;
/// The shortest time between two space requests while the account changes.
pub const SPACE_REFRESH_MIN: Duration = Duration::from_secs(5);
/// The longest time between two space requests (others may fill the
/// server's disk).
pub const SPACE_REFRESH_MAX: Duration = Duration::from_secs(60);

/// Numbers for `statfs(2)`: blocks of [`BLOCK`] bytes, and inodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    /// Free blocks; also what an unprivileged caller may use (`f_bavail`).
    pub bfree: u64,
    pub files: u64,
    pub ffree: u64,
}

impl StatFs {
    /// The numbers for `report` (`None`: never answered).
    pub fn of(report: Option<&SpaceReport>) -> StatFs {
        let (used, nodes, free) = match report {
            Some(r) => (
                r.used_bytes,
                r.nodes,
                r.free_bytes.unwrap_or(UNKNOWN_FREE_BYTES),
            ),
            None => (0, 1, UNKNOWN_FREE_BYTES),
        };
        let bfree = free / BLOCK;
        StatFs {
            blocks: used.div_ceil(BLOCK).saturating_add(bfree),
            bfree,
            files: nodes.saturating_add(FREE_INODES),
            ffree: FREE_INODES,
        }
    }
}

impl Vfs {
    /// What `statfs(2)` reports (see the module docs); from the last saved
    /// report, so it never waits on the network. A store that cannot be
    /// read shows as "never answered".
    pub fn statfs(&self) -> StatFs {
        let report = self.meta.space_report().unwrap_or_else(|e| {
            tracing::warn!("statfs: {}", e.chain());
            None
        });
        StatFs::of(report.as_ref())
    }

    /// Saves the server's latest space report (the change follower calls
    /// this). Errors: the metadata store failed.
    pub fn set_space_report(&self, report: &SpaceReport) -> VfsResult<()> {
        let ns = self.meta.lock_ns();
        let mut t = self.meta.txn(&ns);
        t.put_space_report(report);
        t.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_and_free_come_from_the_report() {
        let r = SpaceReport {
            used_bytes: 10 * BLOCK + 1,
            nodes: 7,
            quota_bytes: None,
            free_bytes: Some(100 * BLOCK),
        };
        let s = StatFs::of(Some(&r));
        assert_eq!((s.blocks, s.bfree), (111, 100), "used rounds up to a block");
        assert_eq!(s.files - s.ffree, 7);
        let unbounded = StatFs::of(Some(&SpaceReport {
            free_bytes: None,
            ..r
        }));
        assert_eq!(unbounded.bfree, UNKNOWN_FREE_BYTES / BLOCK);
        let never = StatFs::of(None);
        assert_eq!(
            (never.blocks, never.bfree),
            (never.bfree, UNKNOWN_FREE_BYTES / BLOCK)
        );
    }

    #[tokio::test]
    async fn a_saved_report_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let r = SpaceReport {
            used_bytes: 5 << 20,
            nodes: 3,
            quota_bytes: None,
            free_bytes: Some(1 << 30),
        };
        let device = crate::protocol::DeviceId(uuid::Uuid::from_bytes([3; 16]));
        let remote = std::sync::Arc::new(crate::remote::memory::MemoryRemote::new(device));
        let open = || crate::vfs::test_support::open_vfs(dir.path(), device, "t", remote.clone());
        {
            let vfs = open();
            assert_eq!(vfs.statfs(), StatFs::of(None));
            vfs.set_space_report(&r).unwrap();
            assert_eq!(vfs.statfs(), StatFs::of(Some(&r)));
        }
        let vfs = open();
        assert_eq!(vfs.statfs(), StatFs::of(Some(&r)));
    }
}
