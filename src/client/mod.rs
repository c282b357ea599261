//! Running a mount: resolves the login (or starts the embedded server),
//! opens the core, spawns the background workers and serves FUSE until
//! unmounted or signalled.
//!
//! Where things live for one device (`--cache-dir`, default
//! `~/.cache/nimbus/<device id>`): `meta/` (sled: metadata cache and
//! journal), `chunks/` (verified chunk cache), `work/` (working copies of
//! files with local changes) and `identity.json` (which server and device
//! the cache belongs to, so one cache is never mixed with another account).
//!
//! SIGINT/SIGTERM are handled from the start of [`run_mount`], before the
//! folder is mounted: a signal at any moment leads to the clean shutdown
//! (one that arrives before the mount skips mounting).
//!
//! The FUSE session runs on its own thread, which cancels a token the
//! moment it ends, so an unmount from elsewhere (`nimbus unmount`,
//! `fusermount3 -u`) is noticed at once rather than by polling.
//!
//! Shutdown (SIGINT/SIGTERM or `nimbus unmount`): the journal is flushed to
//! disk, the uploader gets a few seconds to drain what it can, the folder
//! is unmounted, and the embedded server (if any) stops gracefully.
//! Whatever was not uploaded stays in the journal for the next mount.

use crate::config::{self, EmbeddedAccount, Login};
use crate::protocol::DeviceId;
use crate::remote::http::{HttpRemote, TokenSource, Tokens};
use crate::remote::{Remote, RemoteError};
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;
use crate::vfs::chunk_cache::ChunkCache;
use crate::vfs::kv::SledKv;
use crate::vfs::wal::{current_boot_id, RealSync, WalKv};
use crate::vfs::{Vfs, VfsConfig, VfsError};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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
    /// Numeric ids from other devices are shown as they are.
    pub keep_ids: bool,
    /// setuid/setgid bits take effect (mount without `nosuid`).
    pub suid: bool,
    /// Device nodes work (mount without `nodev`).
    pub dev: bool,
    pub fsync: FsyncMode,
}

/// In-memory layer of the chunk cache.
const MEMORY_CACHE: u64 = 256 << 20;
/// How long shutdown lets the uploader drain.
const DRAIN_ON_EXIT: Duration = Duration::from_secs(10);

/// A connected account: how to reach it and who this device is.
struct Connection {
    remote: Arc<dyn Remote>,
    server: String,
    device_id: DeviceId,
    device_name: String,
    embedded: Option<crate::server::RunningServer>,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Identity {
    server: String,
    device_id: DeviceId,
}

/// Refuses a cache dir inside the mount point: the mount would hide it
/// (and the log in it) and every write would go through the mount itself.
/// Errors: one line naming both.
pub fn check_cache_outside_mount(
    cache_dir: &std::path::Path,
    mountpoint: &std::path::Path,
) -> Result<()> {
    let abs = |p: &std::path::Path| std::fs::canonicalize(p).or_else(|_| std::path::absolute(p));
    let (cache, mnt) = (abs(cache_dir)?, abs(mountpoint)?);
    if cache.starts_with(&mnt) {
        anyhow::bail!(
            "the cache dir {} is inside the mount point {}, which would hide it: give a \
             --cache-dir outside the mount",
            cache_dir.display(),
            mountpoint.display()
        );
    }
    Ok(())
}

/// Takes this device's mount lock (`flock` on a file in the config
/// directory), so one device is never mounted twice: two processes with
/// one device id would each upload over the other's changes without a
/// conflict (their version vectors look like one device's). Errors: the
/// device is mounted by another process, or the lock file cannot be made.
fn lock_device(conn: &Connection) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let dir = config::config_dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("mounted-{}.lock", conn.device_id));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            anyhow::anyhow!(
                "device '{}' is already mounted by another nimbus process; two mounts of one \
                 device would overwrite each other's changes: unmount it first, or log in as \
                 another device for a second mount",
                conn.device_name
            )
        } else {
            anyhow::anyhow!("cannot lock {}: {e}", path.display())
        }
    })
}

/// Mounts and serves in the foreground until the folder is unmounted or the
/// process gets SIGINT/SIGTERM.
pub fn run_mount(opts: MountOptions) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .thread_name("nimbus-worker")
        .build()
        .context("cannot start the async runtime")?;
    // Lets the core capture the runtime for work started on FUSE threads.
    let _rt_guard = rt.enter();
    // Before anything else: from here on SIGINT/SIGTERM are recorded
    // instead of killing the process, so one that arrives while starting
    // or right after the folder appears still takes the clean way out.
    let signalled = watch_shutdown_signals(&rt)?;
    let conn = rt.block_on(connect(&opts))?;
    let cache_dir = match &opts.cache_dir {
        Some(d) => d.clone(),
        None => config::cache_dir()?.join(conn.device_id.to_string()),
    };
    check_cache_outside_mount(&cache_dir, &opts.mountpoint)?;
    check_identity(&cache_dir, &conn)?;
    // Held until the process exits: the kernel drops it with the process.
    let _device_lock = lock_device(&conn)?;

    let kv = SledKv::open(&cache_dir.join("meta")).map_err(|e| match e {
        VfsError::Busy(_) => anyhow::anyhow!(
            "the cache dir {} is in use by another nimbus mount (unmount it first, or give \
             this mount its own --cache-dir)",
            cache_dir.display()
        ),
        e => anyhow::anyhow!(
            "cannot open the metadata cache in {}: {}",
            cache_dir.display(),
            e.chain()
        ),
    })?;
    // Every metadata batch goes through the write-ahead log (see
    // `vfs::wal` for the durability promise).
    let kv = WalKv::open(
        Arc::new(kv),
        &cache_dir.join("wal"),
        Arc::new(RealSync),
        current_boot_id(),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot open the metadata log in {}: {}",
            cache_dir.display(),
            e.chain()
        )
    })?;
    let chunks = ChunkCache::open(
        cache_dir.join("chunks"),
        opts.cache_size,
        MEMORY_CACHE,
        conn.remote.clone(),
    )
    .with_context(|| format!("cannot open the chunk cache in {}", cache_dir.display()))?;
    let vfs = Vfs::open(
        VfsConfig {
            cache_dir: cache_dir.clone(),
            device_id: conn.device_id,
            device_name: conn.device_name.clone(),
            read_only: opts.read_only,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            fsync_remote: opts.fsync == FsyncMode::Remote,
            keep_ids: opts.keep_ids,
        },
        kv,
        chunks,
    )
    .context("cannot open the local state")?;
    vfs.status().set_server(&conn.server);

    // First listing before the folder appears, so `ls` right after mount
    // shows the account (best effort: offline mounts show the cache).
    let follower = Follower::new(vfs.clone(), conn.remote.clone());
    if let Err(e) = rt.block_on(async {
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(20), follower.pull_all()) => {
                r.unwrap_or(Err(RemoteError::Unreachable(
                    "initial listing timed out".into(),
                )))
            }
            _ = signalled.cancelled() => Ok(()),
        }
    }) {
        tracing::warn!("starting offline: {e}");
    }
    if signalled.is_cancelled() {
        tracing::info!("signalled before mounting; not mounting");
        return finish(&rt, &vfs, conn.embedded);
    }
    let stop = CancellationToken::new();
    rt.spawn(follower.run(stop.clone()));
    let uploader_stop = CancellationToken::new();
    rt.spawn(Uploader::new(vfs.clone(), conn.remote.clone()).run(uploader_stop.clone()));

    let mut options = vec![
        fuser::MountOption::FSName("nimbus".into()),
        fuser::MountOption::Subtype("nimbus".into()),
        fuser::MountOption::DefaultPermissions,
        if opts.dev {
            fuser::MountOption::Dev
        } else {
            fuser::MountOption::NoDev
        },
        if opts.suid {
            fuser::MountOption::Suid
        } else {
            fuser::MountOption::NoSuid
        },
    ];
    if opts.read_only {
        options.push(fuser::MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(4);
    let fs = crate::fuse::NimbusFs::new(vfs.clone(), rt.handle().clone());
    let mut session = fuser::Session::new(fs, &opts.mountpoint, &config).map_err(|e| {
        anyhow::anyhow!(
            "cannot mount {}: {}",
            opts.mountpoint.display(),
            match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENODEV) =>
                    "FUSE is not available (is /dev/fuse present and the fuse module loaded?)"
                        .to_string(),
                Some(libc::EBUSY) => "mount point is busy".to_string(),
                Some(libc::EPERM) | Some(libc::EACCES) => format!("permission denied ({e})"),
                _ => e.to_string(),
            }
        )
    })?;
    vfs.set_notifier(Arc::new(crate::fuse::FuseNotifier(session.notifier())))
        .context("starting the kernel notification thread")?;
    let mut unmounter = session.unmount_callable();
    // The session runs on its own thread; `ended` is cancelled the moment it
    // stops (the folder was unmounted, here or elsewhere), even by a panic.
    let ended = CancellationToken::new();
    let serving = {
        let ended = ended.clone();
        std::thread::Builder::new()
            .name("fuse-session".into())
            .spawn(move || {
                let _ended = ended.drop_guard();
                session.run()
            })
            .context("cannot start the FUSE session thread")?
    };
    tracing::info!(
        "mounted {} (server {}, device {})",
        opts.mountpoint.display(),
        conn.server,
        conn.device_name
    );

    // Serve until a signal arrives (maybe already during the mount) or the
    // folder is unmounted elsewhere.
    let by_signal = rt.block_on(async {
        tokio::select! {
            _ = signalled.cancelled() => true,
            _ = ended.cancelled() => false,
        }
    });

    // Shutdown: make the journal durable, let the uploader drain briefly.
    let _ = vfs.fsync_all();
    stop.cancel();
    rt.block_on(async {
        let deadline = Instant::now() + DRAIN_ON_EXIT;
        while vfs.journal_len() > 0
            && Instant::now() < deadline
            && vfs.status().snapshot().connection == crate::vfs::Connection::Online
        {
            tokio::select! {
                _ = vfs.journal_settled() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    uploader_stop.cancel();
    let unmounted = if by_signal {
        unmounter
            .unmount()
            .inspect_err(|e| tracing::warn!("unmount: {e}"))
            .is_ok()
    } else {
        true
    };
    if unmounted {
        // Returns at once: the session ends when the folder is unmounted.
        match serving.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("FUSE session ended with an error: {e}"),
            Err(_) => tracing::warn!("the FUSE session thread panicked"),
        }
    }
    finish(&rt, &vfs, conn.embedded)
}

/// Installs the SIGTERM and SIGINT handlers (replacing the default action,
/// which kills the process) and returns a token cancelled by the first
/// signal. Call it inside the runtime.
fn watch_shutdown_signals(rt: &tokio::runtime::Runtime) -> Result<CancellationToken> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let signalled = CancellationToken::new();
    let token = signalled.clone();
    rt.spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
    Ok(signalled)
}

/// The end of every run once the folder is no longer served: makes the
/// journal durable, stops the embedded server, says what stays queued.
fn finish(
    rt: &tokio::runtime::Runtime,
    vfs: &Vfs,
    embedded: Option<crate::server::RunningServer>,
) -> Result<()> {
    let _ = vfs.fsync_all();
    if let Some(server) = embedded {
        if let Err(e) = rt.block_on(server.shutdown()) {
            tracing::warn!("embedded server shutdown: {e}");
        }
    }
    let left = vfs.journal_len();
    if left > 0 {
        eprintln!(
            "nimbus: unmounted; {left} change(s) not yet uploaded stay queued for the next mount"
        );
    }
    Ok(())
}

fn check_identity(cache_dir: &Path, conn: &Connection) -> Result<()> {
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create cache dir {}", cache_dir.display()))?;
    let path = cache_dir.join("identity.json");
    let want = Identity {
        server: if conn.embedded.is_some() {
            "embedded".into()
        } else {
            conn.server.clone()
        },
        device_id: conn.device_id,
    };
    match config::read_json::<Identity>(&path)? {
        Some(have) if have == want => Ok(()),
        Some(have) => bail!(
            "cache dir {} belongs to another device ({} on {}); use another --cache-dir",
            cache_dir.display(),
            have.device_id,
            have.server
        ),
        None => config::write_json_atomic(&path, &want),
    }
}

async fn connect(opts: &MountOptions) -> Result<Connection> {
    let cfg_dir = config::config_dir()?;
    // Credentials others may read are refused, not used (see `config`).
    let login = Login::load_private(&cfg_dir)?;
    config::check_private_file(&cfg_dir.join(config::EMBEDDED_FILE))?;
    match (&opts.server, login) {
        (Some(url), Some(l)) if &l.server == url => Ok(from_login(l, &cfg_dir)),
        (Some(url), _) => bail!(
            "not logged in to {url}: run `nimbus login {url} --user NAME --password-stdin` first"
        ),
        (None, Some(l)) => Ok(from_login(l, &cfg_dir)),
        (None, None) => embedded(&cfg_dir).await,
    }
}

/// The remote of the saved login `l` (config dir `cfg_dir`): it checks
/// the server's certificate as the login says, and reads and saves its
/// tokens there (rotation, a new `nimbus login`).
pub fn saved_login_remote(l: &Login, cfg_dir: &Path) -> HttpRemote {
    HttpRemote::with_tls(
        &l.server,
        Tokens {
            access_token: l.access_token.clone(),
            refresh_token: l.refresh_token.clone(),
            device_id: l.device_id,
        },
        &l.tls(),
    )
    .with_token_source(Arc::new(SavedLogin {
        dir: cfg_dir.to_path_buf(),
        server: l.server.clone(),
    }))
}

fn from_login(l: Login, cfg_dir: &Path) -> Connection {
    let remote = saved_login_remote(&l, cfg_dir);
    Connection {
        remote: Arc::new(remote),
        server: l.server,
        device_id: l.device_id,
        device_name: l.device_name,
        embedded: None,
    }
}

/// The mount's [`TokenSource`]: `login.json` in the config dir, as long as
/// it is a login to the same server. `nimbus login` run while the mount is
/// up (same server and user: same device) writes new tokens there, and the
/// mount's [`HttpRemote`] adopts them when its own refresh token is refused.
struct SavedLogin {
    dir: PathBuf,
    server: String,
}

impl TokenSource for SavedLogin {
    fn load(&self) -> Result<Option<Tokens>> {
        Ok(Login::load(&self.dir)?
            .filter(|l| l.server == self.server)
            .map(|l| Tokens {
                access_token: l.access_token,
                refresh_token: l.refresh_token,
                device_id: l.device_id,
            }))
    }

    /// Replaces the tokens of the saved login of this server and device
    /// (atomic write, fsynced); a login of another server or device is
    /// left alone.
    fn save(&self, tokens: &Tokens) -> Result<()> {
        match Login::load(&self.dir)? {
            Some(mut l) if l.server == self.server && l.device_id == tokens.device_id => {
                l.access_token = tokens.access_token.clone();
                l.refresh_token = tokens.refresh_token.clone();
                l.save(&self.dir)
            }
            _ => Ok(()),
        }
    }
}

/// The embedded default: a server inside this process on a loopback port,
/// with its data under the user's data dir and a local account.
async fn embedded(cfg_dir: &Path) -> Result<Connection> {
    let data_dir = config::data_dir()?.join("server");
    let cfg = crate::server::ServerConfig::loopback(data_dir);
    let mut account = match EmbeddedAccount::load(cfg_dir)? {
        Some(a) => a,
        None => {
            let a = EmbeddedAccount {
                user: "local".into(),
                password: random_password(),
                device_id: None,
                device_name: hostname(),
                refresh_token: None,
            };
            a.save(cfg_dir)?;
            a
        }
    };
    crate::server::ensure_user(&cfg, &account.user, &account.password).await?;
    let server = crate::server::start(cfg).await?;
    let url = format!("http://{}", server.local_addr());
    // The password is saved, so every start logs in afresh as the same
    // device: an expired or revoked refresh token cannot lock the
    // embedded drive out of its own server (nor strand its journal).
    let login = |device_id| {
        crate::remote::http::login_with(
            &url,
            &account.user,
            &account.password,
            &account.device_name,
            device_id,
        )
    };
    let r = match login(account.device_id).await {
        Err(RemoteError::Rejected { code, .. }) if code == "unknown_device" => {
            tracing::warn!("the embedded server no longer knows this device; registering it anew");
            login(None).await
        }
        other => other,
    }
    .context("cannot log in to the embedded server")?;
    account.device_id = Some(r.device_id);
    account.refresh_token = Some(r.refresh_token.clone());
    account.save(cfg_dir)?;
    let tokens = Tokens {
        access_token: r.access_token,
        refresh_token: r.refresh_token,
        device_id: r.device_id,
    };
    let device_id = tokens.device_id;
    Ok(Connection {
        remote: Arc::new(HttpRemote::new(&url, tokens)),
        server: url,
        device_id,
        device_name: account.device_name,
        embedded: Some(server),
    })
}

fn random_password() -> String {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    hex::encode(bytes)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this device".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saved_login_source_reads_and_updates_only_its_server_and_device() {
        let dir = tempfile::tempdir().unwrap();
        let source = SavedLogin {
            dir: dir.path().to_path_buf(),
            server: "http://h:1".into(),
        };
        assert!(source.load().unwrap().is_none());
        let login = Login {
            server: "http://h:1".into(),
            user: "ann".into(),
            device_id: DeviceId::random(),
            device_name: "laptop".into(),
            refresh_token: "r1".into(),
            access_token: "a1".into(),
            ca_pem: None,
        };
        login.save(dir.path()).unwrap();
        let loaded = source.load().unwrap().unwrap();
        assert_eq!(
            (loaded.refresh_token.as_str(), loaded.device_id),
            ("r1", login.device_id)
        );
        let rotated = Tokens {
            access_token: "a2".into(),
            refresh_token: "r2".into(),
            device_id: login.device_id,
        };
        source.save(&rotated).unwrap();
        let now = Login::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            (now.refresh_token.as_str(), now.user.as_str()),
            ("r2", "ann")
        );
        // Another device's tokens never overwrite this login...
        source
            .save(&Tokens {
                device_id: DeviceId::random(),
                ..rotated.clone()
            })
            .unwrap();
        assert_eq!(Login::load(dir.path()).unwrap().unwrap(), now);
        // ...and a login to another server is not this mount's.
        let other = SavedLogin {
            dir: dir.path().to_path_buf(),
            server: "http://h:2".into(),
        };
        assert!(other.load().unwrap().is_none());
        other.save(&rotated).unwrap();
        assert_eq!(Login::load(dir.path()).unwrap().unwrap(), now);
    }
}
