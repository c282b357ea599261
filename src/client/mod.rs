//! Running a mount: resolves the login (or starts the embedded server),
//! opens the core, spawns the background workers and serves FUSE until
//! unmounted or signalled.

use std::path::PathBuf;

/// What `fsync` promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// Durable in the local journal (default).
    #[default]
    Local,
    /// Acknowledged by the server.
    Remote,
}

#[derive(Clone, Debug)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
    /// Server URL; `None` means the saved login, or the embedded server
    /// when there is no login.
    pub server: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// Chunk cache budget in bytes.
    pub cache_size: u64,
    pub allow_other: bool,
    pub read_only: bool,
    pub fsync: FsyncMode,
}

/// Mounts and serves in the foreground until the folder is unmounted or the
/// process gets SIGINT/SIGTERM.
pub fn run_mount(_opts: MountOptions) -> anyhow::Result<()> {
    anyhow::bail!("mount is being written")
}
