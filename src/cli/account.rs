//! `nimbus devices [--json]`, `nimbus devices revoke NAME`, `nimbus
//! logout` and `nimbus passwd`: account commands that run against the
//! server of the saved login (`login.json`), refreshing and saving its
//! tokens like a mount does.

use crate::config::{self, Login};
use crate::protocol::DeviceInfo;
use crate::remote::http::HttpRemote;
use crate::remote::RemoteError;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// The saved login and a remote for it, or a clear error when there is
/// none.
fn saved() -> Result<(Login, HttpRemote, PathBuf)> {
    let dir = config::config_dir()?;
    let login = match Login::load_private(&dir)? {
        Some(l) if !l.is_signed_out() => l,
        Some(l) => bail!(
            "not logged in (logged out of {}): run `nimbus login {} --user {} --password-stdin`",
            l.server,
            l.server,
            l.user
        ),
        None => bail!("not logged in: run `nimbus login URL --user NAME --password-stdin` first"),
    };
    let remote = crate::client::saved_login_remote(&login, &dir);
    Ok((login, remote, dir))
}

/// One line for a refused or failed call.
fn failed(e: RemoteError, server: &str) -> anyhow::Error {
    match e {
        RemoteError::Unauthorized(m) => anyhow::anyhow!("{m}"),
        RemoteError::Rejected { message, .. } => anyhow::anyhow!("{message}"),
        other => anyhow::Error::new(other).context(format!("cannot reach {server}")),
    }
}

fn when(secs: Option<i64>) -> String {
    match secs.and_then(|s| u64::try_from(s).ok()) {
        Some(s) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s),
        )
        .to_string(),
        None => "never".into(),
    }
}

/// The table `nimbus devices` prints (the current device is marked `*`).
pub fn render_devices(devices: &[DeviceInfo]) -> String {
    let width = devices
        .iter()
        .map(|d| d.name.chars().count() + 2)
        .max()
        .unwrap_or(4)
        .max(6);
    let mut out = format!(
        "{:<width$} {:<36} {:<20} {:<20} {:<7} PLATFORM\n",
        "NAME", "ID", "CREATED", "LAST SEEN", "STATE"
    );
    for d in devices {
        let name = if d.current {
            format!("{} *", d.name)
        } else {
            d.name.clone()
        };
        out.push_str(&format!(
            "{:<width$} {:<36} {:<20} {:<20} {:<7} {}\n",
            name,
            d.id.to_string(),
            when(Some(d.created)),
            when(d.last_seen),
            if d.revoked { "revoked" } else { "active" },
            d.platform
        ));
    }
    out
}

/// `nimbus devices [--json]`.
pub fn devices(json: bool) -> Result<()> {
    let (login, remote, _) = saved()?;
    let rt = super::runtime()?;
    let list = rt
        .block_on(remote.devices())
        .map_err(|e| failed(e, &login.server))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print!("{}", render_devices(&list));
    }
    Ok(())
}

/// Which device `name` (a name, or an id) means: the one active device
/// of that name or id; several → a clear error listing their ids.
fn pick<'a>(devices: &'a [DeviceInfo], name: &str) -> Result<Option<&'a DeviceInfo>> {
    let matching: Vec<&DeviceInfo> = devices
        .iter()
        .filter(|d| d.name == name || d.id.to_string() == name)
        .collect();
    let active: Vec<&DeviceInfo> = matching.iter().copied().filter(|d| !d.revoked).collect();
    match (active.as_slice(), matching.is_empty()) {
        ([one], _) => Ok(Some(one)),
        ([], true) => bail!("no device named '{name}' (see `nimbus devices`)"),
        ([], false) => Ok(None),
        (many, _) => bail!(
            "{} active devices are named '{name}' ({}); revoke one by its id",
            many.len(),
            many.iter()
                .map(|d| d.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `nimbus devices revoke NAME`: the device's next request fails with
/// 401; its mount says so and keeps its journal until it logs in again.
pub fn revoke(name: &str) -> Result<()> {
    let (login, remote, _) = saved()?;
    let rt = super::runtime()?;
    let list = rt
        .block_on(remote.devices())
        .map_err(|e| failed(e, &login.server))?;
    let Some(device) = pick(&list, name)? else {
        println!("device '{name}' is already revoked");
        return Ok(());
    };
    rt.block_on(remote.revoke_device(device.id))
        .map_err(|e| failed(e, &login.server))?;
    println!(
        "revoked device {} (id {}){}",
        device.name,
        device.id,
        if device.current {
            "; this is this device: log in again to use it"
        } else {
            ""
        }
    );
    Ok(())
}

/// `nimbus logout`: the server revokes this device and deletes its tokens,
/// then the tokens are removed from `login.json`. The device's identity
/// stays there, so a later `nimbus login` (same server and user)
/// reinstates the same device and its mount can still send what it had
/// not. A device whose session already ended is logged out locally all
/// the same; an unreachable server keeps the tokens (they would still
/// work) and says so.
pub fn logout() -> Result<()> {
    let dir = config::config_dir()?;
    let login = match Login::load(&dir)? {
        Some(l) if !l.is_signed_out() => l,
        _ => bail!(
            "not logged in (no tokens in {})",
            dir.join(config::LOGIN_FILE).display()
        ),
    };
    let remote = crate::client::saved_login_remote(&login, &dir);
    let rt = super::runtime()?;
    match rt.block_on(remote.logout()) {
        Ok(()) | Err(RemoteError::Unauthorized(_)) => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot sign out at {}; the saved login is kept (retry, or run `nimbus devices \
                 revoke {}` from another device)",
                login.server, login.device_name
            )))
        }
    }
    let (server, name) = (login.server.clone(), login.device_name.clone());
    login.signed_out().save(&dir)?;
    println!(
        "logged out of {server} (device {name} revoked, its tokens deleted; `nimbus login` \
         reinstates it)"
    );
    Ok(())
}

/// `nimbus passwd --password-stdin`: reads the current password, then the new one, each
/// on its own line of standard input; every other device is signed out
/// (they log in again with the new password, as the same devices).
pub fn passwd() -> Result<()> {
    let (login, remote, _) = saved()?;
    let (current, new) = {
        let mut input = std::io::stdin().lock();
        let current = super::read_password_from(&mut input)
            .context("expected the current password on the first line of standard input")?;
        let new = super::read_password_from(&mut input)
            .context("expected the new password on the second line of standard input")?;
        (current, new)
    };
    let rt = super::runtime()?;
    let done = rt
        .block_on(remote.change_password(&current, &new))
        .map_err(|e| failed(e, &login.server))?;
    println!(
        "password changed for {}; {} other device(s) signed out (they log in again with the new \
         password)",
        login.user, done.signed_out_devices
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DeviceId;

    fn dev(name: &str, revoked: bool) -> DeviceInfo {
        DeviceInfo {
            id: DeviceId::random(),
            name: name.into(),
            platform: "nimbus/0.1.0 (linux x86_64)".into(),
            created: 1_700_000_000,
            last_seen: None,
            revoked,
            current: false,
        }
    }

    #[test]
    fn a_name_picks_one_active_device_or_says_why_not() {
        let list = vec![
            dev("laptop", true),
            dev("phone", false),
            dev("tab", false),
            dev("tab", false),
        ];
        assert_eq!(pick(&list, "phone").unwrap().unwrap().id, list[1].id);
        assert!(pick(&list, "laptop").unwrap().is_none(), "already revoked");
        let id = list[2].id.to_string();
        assert_eq!(pick(&list, &id).unwrap().unwrap().id, list[2].id);
        let err = pick(&list, "tab").unwrap_err().to_string();
        assert!(
            err.contains("2 active devices") && err.contains(&id),
            "{err}"
        );
        assert!(pick(&list, "desk")
            .unwrap_err()
            .to_string()
            .contains("no device named"));
    }

    #[test]
    fn the_table_shows_every_column() {
        let mut d = dev("laptop", false);
        d.current = true;
        d.last_seen = Some(1_700_000_060);
        let table = render_devices(&[d.clone(), dev("phone", true)]);
        assert!(table.starts_with("NAME"), "{table}");
        assert!(table.contains("laptop *"), "{table}");
        assert!(table.contains("2023-11-14T22:14:20Z"), "{table}");
        assert!(
            table.contains("revoked") && table.contains("never"),
            "{table}"
        );
        assert!(table.contains(&d.id.to_string()));
    }
}
