//! The `nimbus` command: parses arguments (clap), calls `nimbus::cli`,
//! prints errors as one line. No logic lives here.

use clap::{Args, Parser, Subcommand, ValueEnum};
use nimbus::cli;
use nimbus::client::FsyncMode;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Nimbus: a cloud drive mounted as an ordinary folder.
///
/// `nimbus mount ~/Nimbus` alone gives a working drive: without a login it
/// starts an embedded server in the same process, with a local account and
/// its data under ~/.local/share/nimbus.
#[derive(Parser, Debug)]
#[command(name = "nimbus", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a Nimbus server until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Administer a server's accounts, working directly on its storage.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Log in to a server and register this device (saved to login.json in
    /// the config directory).
    Login(LoginArgs),
    /// Mount the drive on a folder (stays in the foreground unless --daemon).
    Mount(MountArgs),
    /// Unmount a Nimbus mount, waiting until it is gone.
    Unmount(UnmountArgs),
    /// Show a mount's connection, pending uploads, conflicts and cache use.
    Status(StatusArgs),
    /// Wait until local changes have reached the server.
    Sync(SyncArgs),
    /// List conflict copies (of the mount containing the current
    /// directory, else of every mount), or resolve one.
    ///
    /// A conflict copy holds the version of a concurrent edit that lost
    /// the name: "mine" is the copy's version, "theirs" the one holding
    /// the original name.
    Conflicts(ConflictsArgs),
    /// List the account's devices, or revoke one.
    Devices(DevicesArgs),
    /// Sign this device out: the server revokes it, and the saved login
    /// is removed.
    Logout,
    /// Change the account's password. Every other device is signed out
    /// and logs in again with the new password.
    Passwd(PasswdArgs),
}

#[derive(Args, Debug)]
struct PasswdArgs {
    /// Read the current password from the first line of standard input
    /// and the new one from the second (required).
    #[arg(long, required = true)]
    password_stdin: bool,
}

#[derive(Args, Debug)]
struct DevicesArgs {
    #[command(subcommand)]
    command: Option<DevicesCommand>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum DevicesCommand {
    /// Cut a device off at once: its next request is refused, its mount
    /// keeps unsent changes and resumes after `nimbus login` there.
    Revoke {
        /// The device's name (or id, when several share a name).
        name: String,
    },
}

/// Where a server keeps its state.
#[derive(Args, Debug)]
struct StorageArgs {
    /// Server data directory [default: ~/.local/share/nimbus/server, which
    /// the embedded default of `nimbus mount` also uses]; metadata and
    /// chunks live below it unless --metadata / --chunks say otherwise.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Metadata store, e.g. sqlite:/var/lib/nimbus/meta.sqlite [default:
    /// DATA/meta.sqlite].
    #[arg(long, value_name = "sqlite:PATH")]
    metadata: Option<String>,
    /// Chunk store directory [default: DATA/chunks].
    #[arg(long, value_name = "DIR")]
    chunks: Option<PathBuf>,
}

impl From<StorageArgs> for cli::server::StorageArgs {
    fn from(a: StorageArgs) -> Self {
        cli::server::StorageArgs {
            data: a.data,
            metadata: a.metadata,
            chunks: a.chunks,
        }
    }
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8420")]
    listen: String,
    #[command(flatten)]
    storage: StorageArgs,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key);
    /// SIGHUP reloads both files without dropping connections.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Manage user accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account; the password is the first line of standard input.
    Add(UserAddArgs),
}

#[derive(Args, Debug)]
struct UserAddArgs {
    /// Name of the new account.
    name: String,
    /// Read the password from the first line of standard input (required).
    #[arg(long, required = true)]
    password_stdin: bool,
    #[command(flatten)]
    storage: StorageArgs,
}

#[derive(Args, Debug)]
struct LoginArgs {
    /// Server URL, e.g. http://127.0.0.1:8420.
    server_url: String,
    /// Account name.
    #[arg(long, value_name = "NAME")]
    user: String,
    /// Read the password from the first line of standard input (required).
    #[arg(long, required = true)]
    password_stdin: bool,
    /// Name for this device, shown in conflict copies [default: host name].
    #[arg(long, value_name = "NAME")]
    device: Option<String>,
    /// Trust only this private CA (PEM) for an https:// server; saved with
    /// the login, so mounts use it [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Allow plain http:// to a host other than this machine (the password
    /// and tokens then cross the network unencrypted).
    #[arg(long)]
    insecure: bool,
}

#[derive(Args, Debug)]
struct MountArgs {
    /// Existing directory to mount the drive on.
    mountpoint: PathBuf,
    /// Server URL [default: the saved login, else an embedded server].
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// This device's cached content and local state [default:
    /// ~/.cache/nimbus/<device id>]; --daemon appends its log to mount.log
    /// here (default: ~/.cache/nimbus/mount.log).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Chunk cache budget, e.g. 10GiB, 512MiB, 1G or a number of bytes.
    #[arg(long, value_name = "SIZE", default_value = "10GiB", value_parser = cli::size::parse_cache_size)]
    cache_size: u64,
    /// Run in the background; returns once the folder is mounted and logs
    /// to mount.log in the cache directory.
    #[arg(long)]
    daemon: bool,
    /// Let other users access the mount (needs user_allow_other in
    /// /etc/fuse.conf unless run as root).
    #[arg(long)]
    allow_other: bool,
    /// Mount read-only.
    #[arg(long)]
    read_only: bool,
    /// Show numeric owners and groups set on other devices as they are
    /// (for devices that share user ids); by default they show as the
    /// mounting user.
    #[arg(long)]
    keep_ids: bool,
    /// Honour setuid and setgid bits of executables (off by default, as
    /// on network filesystems: such a file made on one device must not
    /// gain rights on another).
    #[arg(long)]
    suid: bool,
    /// Honour device nodes (off by default, like --suid).
    #[arg(long)]
    dev: bool,
    /// What fsync waits for: durable in the local journal, or acknowledged
    /// by the server.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = FsyncArg::Local)]
    fsync: FsyncArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FsyncArg {
    /// Durable in the local journal.
    Local,
    /// Acknowledged by the server.
    Remote,
}

#[derive(Args, Debug)]
struct UnmountArgs {
    /// Mount point of a Nimbus mount.
    mountpoint: PathBuf,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// A path inside a mount; also shows what is pending below it
    /// [default: the mount of the current directory, or the only mount].
    path: Option<PathBuf>,
    /// Print JSON (the mount's status, plus "mount", and "path"/"pending"
    /// when PATH is given).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ConflictsArgs {
    #[command(subcommand)]
    command: Option<ConflictsCommand>,
    /// Print a JSON array of {"path", "original", "device", "time",
    /// "mount"} ("original" null when it was deleted).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ConflictsCommand {
    /// Resolve one conflict copy.
    ///
    /// "mine" is the copy's version: it is written into the original file
    /// (which keeps its identity and version history) and the copy is
    /// deleted; if the original was deleted, the copy takes its name.
    /// "theirs" is the version holding the original name: the copy is
    /// deleted. "both" keeps both: the copy becomes an ordinary file.
    Resolve {
        /// A conflict copy inside a mount.
        path: PathBuf,
        /// Which version to keep.
        #[arg(long, value_enum, value_name = "WHICH")]
        keep: KeepArg,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KeepArg {
    /// The conflict copy's version.
    Mine,
    /// The version holding the original name.
    Theirs,
    /// Both: the copy stays, as an ordinary file.
    Both,
}

#[derive(Args, Debug)]
struct SyncArgs {
    /// Wait until nothing below PATH is pending (required).
    #[arg(long, required = true)]
    wait: bool,
    /// A path inside a mount [default: the root of the mount of the current
    /// directory, or of the only mount].
    path: Option<PathBuf>,
    /// Also wait until this device has applied every change the server
    /// had when the command started (what other devices uploaded).
    #[arg(long)]
    pull: bool,
    /// Give up after this long (e.g. 60s, 5m, 1h 30m); then list what is
    /// still pending and exit 1.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => {
            cli::init_logging("info");
            let tls = match (a.tls_cert, a.tls_key) {
                (Some(cert), Some(key)) => Some(nimbus::server::TlsFiles { cert, key }),
                _ => None,
            };
            cli::server::serve(a.listen, a.storage.into(), tls)
        }
        Command::Admin {
            command:
                AdminCommand::User {
                    command: UserCommand::Add(a),
                },
        } => {
            cli::init_logging("warn");
            cli::server::admin_user_add(a.name, a.storage.into())
        }
        Command::Login(a) => {
            cli::init_logging("warn");
            cli::server::login(cli::server::LoginOptions {
                server: a.server_url,
                user: a.user,
                device: a.device,
                ca: a.ca,
                insecure: a.insecure,
            })
        }
        Command::Mount(a) => {
            cli::init_logging(if a.daemon { "warn" } else { "info" });
            cli::mount::mount(cli::mount::MountArgs {
                mountpoint: a.mountpoint,
                server: a.server,
                cache_dir: a.cache_dir,
                cache_size: a.cache_size,
                daemon: a.daemon,
                allow_other: a.allow_other,
                read_only: a.read_only,
                keep_ids: a.keep_ids,
                suid: a.suid,
                dev: a.dev,
                fsync: match a.fsync {
                    FsyncArg::Local => FsyncMode::Local,
                    FsyncArg::Remote => FsyncMode::Remote,
                },
            })
        }
        Command::Unmount(a) => {
            cli::init_logging("warn");
            cli::mount::unmount(&a.mountpoint)
        }
        Command::Status(a) => {
            cli::init_logging("warn");
            cli::status::status(a.path.as_deref(), a.json)
        }
        Command::Sync(a) => {
            cli::init_logging("warn");
            cli::status::sync_wait(a.path.as_deref(), a.pull, a.timeout)
        }
        Command::Conflicts(a) => {
            cli::init_logging("warn");
            match a.command {
                None => cli::conflicts::list(a.json),
                Some(ConflictsCommand::Resolve { path, keep }) => cli::conflicts::resolve(
                    &path,
                    match keep {
                        KeepArg::Mine => cli::conflicts::Keep::Mine,
                        KeepArg::Theirs => cli::conflicts::Keep::Theirs,
                        KeepArg::Both => cli::conflicts::Keep::Both,
                    },
                ),
            }
        }
        Command::Devices(a) => {
            cli::init_logging("warn");
            match a.command {
                None => cli::account::devices(a.json),
                Some(DevicesCommand::Revoke { name }) => cli::account::revoke(&name),
            }
        }
        Command::Logout => {
            cli::init_logging("warn");
            cli::account::logout()
        }
        Command::Passwd(_) => {
            cli::init_logging("warn");
            cli::account::passwd()
        }
    }
}

fn main() -> ExitCode {
    cli::install_panic_hook();
    let parsed = Cli::parse();
    match run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cli::status::is_already_reported(&e) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("nimbus: {}", cli::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
