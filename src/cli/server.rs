//! `nimbus serve`, `nimbus admin user add` and `nimbus login`.

use crate::config::{self, Login};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Where a server keeps its state (`serve` and `admin` share these flags).
#[derive(Clone, Debug, Default)]
pub struct StorageArgs {
    /// `--data`; default: [`config::server_data_dir`].
    pub data: Option<PathBuf>,
    /// `--metadata`, e.g. `sqlite:/var/lib/nimbus/meta.sqlite`.
    pub metadata: Option<String>,
    /// `--chunks`, a directory.
    pub chunks: Option<PathBuf>,
}

fn server_config(
    listen: String,
    storage: StorageArgs,
    tls: Option<crate::server::TlsFiles>,
) -> Result<crate::server::ServerConfig> {
    let data_dir = match storage.data {
        Some(d) => d,
        None => config::server_data_dir()?,
    };
    let listen = resolve_listen(&listen)?;
    Ok(crate::server::ServerConfig {
        listen,
        data_dir,
        metadata: storage.metadata,
        chunks: storage.chunks,
        tls,
        heartbeat: Default::default(),
        header_read_timeout: crate::server::HEADER_READ_TIMEOUT,
    })
}

/// `HOST:PORT` → one socket address (`localhost:8420` is allowed).
fn resolve_listen(listen: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let mut addrs = listen.to_socket_addrs().with_context(|| {
        format!("invalid --listen address '{listen}' (expected HOST:PORT, e.g. 127.0.0.1:8420)")
    })?;
    addrs
        .next()
        .with_context(|| format!("--listen address '{listen}' resolves to nothing"))
}

/// `nimbus serve`: runs the server until SIGINT or SIGTERM, then shuts it
/// down gracefully (in-flight requests finish). With TLS files, serves
/// HTTPS and reloads them on SIGHUP (a failed reload keeps the old
/// certificate and logs why).
pub fn serve(
    listen: String,
    storage: StorageArgs,
    tls: Option<crate::server::TlsFiles>,
) -> Result<()> {
    let cfg = server_config(listen, storage, tls)?;
    if cfg.tls.is_none() && !cfg.listen.ip().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on {}: passwords, tokens and files cross the network \
             unencrypted; serve HTTPS with --tls-cert and --tls-key (clients refuse plain \
             HTTP beyond loopback unless given --insecure)",
            cfg.listen
        );
    }
    let rt = super::runtime()?;
    rt.block_on(async move {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        let running = crate::server::start(cfg)
            .await
            .context("cannot start the server")?;
        let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        eprintln!(
            "listening on {}://{}",
            running.scheme(),
            running.local_addr()
        );
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => {
                    r.context("cannot listen for SIGINT")?;
                    break;
                }
                _ = sigterm.recv() => break,
                _ = sighup.recv() => match running.reload_tls().await {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::error!("SIGHUP: {e:#}"),
                },
            }
        }
        tracing::info!("signal received; shutting down");
        running.shutdown().await.context("shutting down")?;
        Ok(())
    })
}

/// `nimbus admin user add NAME --password-stdin`, working directly on the
/// server's storage (no server needs to run).
pub fn admin_user_add(name: String, storage: StorageArgs) -> Result<()> {
    if name.trim().is_empty() {
        bail!("the user name must not be empty");
    }
    let password = super::read_password_stdin()?;
    let cfg = server_config("127.0.0.1:0".into(), storage, None)?;
    let rt = super::runtime()?;
    rt.block_on(crate::server::add_user(&cfg, &name, &password))?;
    eprintln!("added user {name}");
    Ok(())
}

/// Checks and normalizes a server URL: `http(s)://host[:port][/prefix]`,
/// without a trailing slash.
pub fn normalize_server_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(trimmed)
        .with_context(|| format!("invalid server URL '{url}' (expected e.g. http://host:8420)"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        bail!("invalid server URL '{url}': it must start with http:// or https:// and name a host");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        bail!("invalid server URL '{url}': it must not have a query or fragment");
    }
    Ok(trimmed.to_string())
}

/// Who to log in as: a fresh device, or the device of the saved login.
#[derive(Debug, PartialEq, Eq)]
struct LoginPlan {
    device_name: String,
    /// The saved login's device, reused when server and user match.
    device_id: Option<crate::protocol::DeviceId>,
    /// Printed on stderr (an ignored `--device`).
    note: Option<String>,
}

/// A login to the same server as the same user keeps the saved device id
/// and name, so the mount keeps its cache and unsent changes (a device
/// cannot be renamed: a different `--device` is noted and ignored).
/// Anything else registers a new device named `--device` or the host name.
fn plan_login(
    saved: Option<&Login>,
    server: &str,
    user: &str,
    device: Option<String>,
) -> LoginPlan {
    match saved.filter(|l| l.server == server && l.user == user) {
        Some(l) => LoginPlan {
            note: device.filter(|d| *d != l.device_name).map(|d| {
                format!(
                    "keeping this device's name '{}' (id {}), not '{d}': remove {} from the config dir \
                     first to register a new device",
                    l.device_name,
                    l.device_id,
                    config::LOGIN_FILE
                )
            }),
            device_name: l.device_name.clone(),
            device_id: Some(l.device_id),
        },
        None => LoginPlan {
            device_name: device.unwrap_or_else(super::hostname),
            device_id: None,
            note: None,
        },
    }
}

/// Refuses plain `http://` to a host that is not this machine, unless
/// `insecure`: the password and tokens would cross the network readable.
pub fn check_transport(server: &str, insecure: bool) -> Result<()> {
    let url =
        reqwest::Url::parse(server).with_context(|| format!("invalid server URL '{server}'"))?;
    if url.scheme() != "http" || insecure {
        return Ok(());
    }
    let host = url.host_str().unwrap_or("");
    let loopback = match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    if !loopback {
        bail!(
            "refusing plain http:// to {}: the password and tokens would cross the network \
             unencrypted; use https://, or pass --insecure if this network is trusted",
            url.host_str().unwrap_or("the server")
        );
    }
    Ok(())
}

/// Reads a `--ca` file: PEM certificates of a private CA.
fn read_ca(path: &std::path::Path) -> Result<String> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the CA file {}", path.display()))?;
    let tls = crate::remote::http::ClientTls {
        ca_pem: Some(pem.clone()),
    };
    tls.check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(pem)
}

/// The options of `nimbus login`.
#[derive(Clone, Debug, Default)]
pub struct LoginOptions {
    pub server: String,
    pub user: String,
    /// `--device NAME`.
    pub device: Option<String>,
    /// `--ca FILE`: trust only this private CA for the server (saved in
    /// the login, so mounts use it).
    pub ca: Option<PathBuf>,
    /// `--insecure`: allow plain `http://` to a host that is not loopback.
    pub insecure: bool,
}

/// `nimbus login URL --user NAME --password-stdin [--device NAME]`:
/// registers this device and saves `login.json` in the config dir. Logging
/// in again (same server and user, e.g. after `unauthorized`) keeps the
/// device id, so a mount's cache and unsent changes stay usable and a
/// running mount picks the new tokens up by itself; if the server no longer
/// knows that device (revoked, or its data was reset), a new device is
/// registered and a line says so.
pub fn login(opts: LoginOptions) -> Result<()> {
    let LoginOptions {
        server,
        user,
        device,
        ca,
        insecure,
    } = opts;
    let server = normalize_server_url(&server)?;
    check_transport(&server, insecure)?;
    let ca_pem = match &ca {
        Some(_) if !server.starts_with("https://") => {
            bail!("--ca is for an https:// server; {server} is plain http")
        }
        Some(path) => Some(read_ca(path)?),
        None => None,
    };
    if user.trim().is_empty() {
        bail!("the user name must not be empty");
    }
    if device.as_deref().is_some_and(|d| d.trim().is_empty()) {
        bail!("the device name must not be empty");
    }
    let dir = config::config_dir()?;
    // A corrupt login.json must not block logging in again.
    let saved = Login::load(&dir).unwrap_or_else(|e| {
        eprintln!("nimbus: ignoring the saved login: {e:#}");
        None
    });
    let plan = plan_login(saved.as_ref(), &server, &user, device);
    // A login again to the same server keeps its CA unless --ca replaces it.
    let ca_pem = ca_pem.or_else(|| {
        saved
            .as_ref()
            .filter(|l| l.server == server)
            .and_then(|l| l.ca_pem.clone())
    });
    let tls = crate::remote::http::ClientTls {
        ca_pem: ca_pem.clone(),
    };
    if plan.device_name.trim().is_empty() {
        bail!("the device name must not be empty");
    }
    if let Some(note) = &plan.note {
        eprintln!("nimbus: {note}");
    }
    let password = super::read_password_stdin()?;
    let rt = super::runtime()?;
    let login_as = |id| {
        rt.block_on(crate::remote::http::login_with_tls(
            &server,
            &user,
            &password,
            &plan.device_name,
            id,
            &tls,
        ))
    };
    let resp = match login_as(plan.device_id) {
        Err(crate::remote::RemoteError::Rejected { code, .. })
            if code == "unknown_device" && plan.device_id.is_some() =>
        {
            eprintln!(
                "nimbus: the server no longer knows device {} (revoked, or its data was reset); \
                 registering a new device (changes the old one had not uploaded stay in its cache)",
                plan.device_id.map(|d| d.to_string()).unwrap_or_default()
            );
            login_as(None)
        }
        other => other,
    }
    .map_err(|e| match e {
        // Its message already says both versions and what to upgrade.
        crate::remote::RemoteError::Rejected { code, message, .. }
            if code == crate::protocol::PROTOCOL_VERSION_ERROR =>
        {
            anyhow::anyhow!(message)
        }
        other => anyhow::Error::new(other),
    })
    .with_context(|| format!("cannot log in to {server}"))?;
    let login = Login {
        server: server.clone(),
        user: user.clone(),
        device_id: resp.device_id,
        device_name: plan.device_name.clone(),
        refresh_token: resp.refresh_token,
        access_token: resp.access_token,
        ca_pem,
    };
    login.save(&dir)?;
    println!(
        "logged in as {user} on {server} (device {}, id {})",
        login.device_name, login.device_id
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(normalize_server_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(
            normalize_server_url(" https://h/x/ ").unwrap(),
            "https://h/x"
        );
        for bad in ["h:8420", "ftp://h", "http://", "http://h/?a=1", ""] {
            assert!(normalize_server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_login_to_the_same_server_and_user_keeps_the_device() {
        let saved = Login {
            server: "http://h:1".into(),
            user: "ann".into(),
            device_id: crate::protocol::DeviceId::random(),
            device_name: "laptop".into(),
            refresh_token: "r".into(),
            access_token: "a".into(),
            ca_pem: None,
        };
        let again = plan_login(Some(&saved), "http://h:1", "ann", None);
        assert_eq!(again.device_id, Some(saved.device_id));
        assert_eq!(again.device_name, "laptop");
        assert!(again.note.is_none());
        let renamed = plan_login(Some(&saved), "http://h:1", "ann", Some("desk".into()));
        assert_eq!(renamed.device_id, Some(saved.device_id));
        assert_eq!(renamed.device_name, "laptop");
        assert!(renamed.note.unwrap().contains("'desk'"));
        for (server, user) in [("http://h:2", "ann"), ("http://h:1", "bob")] {
            let other = plan_login(Some(&saved), server, user, Some("desk".into()));
            assert_eq!(other.device_id, None);
            assert_eq!(other.device_name, "desk");
        }
        assert_eq!(plan_login(None, "http://h:1", "ann", None).device_id, None);
    }

    #[test]
    fn plain_http_is_refused_beyond_loopback_unless_insecure() {
        for ok in [
            "http://127.0.0.1:8420",
            "http://localhost:1",
            "http://[::1]:1",
            "https://example.com",
        ] {
            assert!(check_transport(ok, false).is_ok(), "{ok}");
        }
        let err = check_transport("http://192.0.2.1:8420", false).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        assert!(check_transport("http://nimbus.example", false).is_err());
        assert!(check_transport("http://192.0.2.1:8420", true).is_ok());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(resolve_listen("127.0.0.1:8420").unwrap().port(), 8420);
        assert!(resolve_listen("localhost:1").is_ok());
        assert!(resolve_listen("nonsense").is_err());
    }
}
