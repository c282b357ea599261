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

fn server_config(listen: String, storage: StorageArgs) -> Result<crate::server::ServerConfig> {
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
/// down gracefully (in-flight requests finish).
pub fn serve(listen: String, storage: StorageArgs) -> Result<()> {
    let cfg = server_config(listen, storage)?;
    let rt = super::runtime()?;
    rt.block_on(async move {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        let running = crate::server::start(cfg)
            .await
            .context("cannot start the server")?;
        eprintln!("listening on http://{}", running.local_addr());
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
            _ = sigterm.recv() => {}
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
    let cfg = server_config("127.0.0.1:0".into(), storage)?;
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

/// `nimbus login URL --user NAME --password-stdin [--device NAME]`:
/// registers this device and saves `login.json` in the config dir.
pub fn login(server: String, user: String, device: Option<String>) -> Result<()> {
    let server = normalize_server_url(&server)?;
    if user.trim().is_empty() {
        bail!("the user name must not be empty");
    }
    let device_name = device.unwrap_or_else(super::hostname);
    if device_name.trim().is_empty() {
        bail!("the device name must not be empty");
    }
    let password = super::read_password_stdin()?;
    let dir = config::config_dir()?;
    let rt = super::runtime()?;
    let resp = rt
        .block_on(crate::remote::http::login(
            &server,
            &user,
            &password,
            &device_name,
        ))
        .with_context(|| format!("cannot log in to {server}"))?;
    let login = Login {
        server: server.clone(),
        user: user.clone(),
        device_id: resp.device_id,
        device_name: device_name.clone(),
        refresh_token: resp.refresh_token,
        access_token: resp.access_token,
    };
    login.save(&dir)?;
    println!(
        "logged in as {user} on {server} (device {device_name}, id {})",
        login.device_id
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
    fn listen_addresses() {
        assert_eq!(resolve_listen("127.0.0.1:8420").unwrap().port(), 8420);
        assert!(resolve_listen("localhost:1").is_ok());
        assert!(resolve_listen("nonsense").is_err());
    }
}
