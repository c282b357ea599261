//! Where the client keeps its state, and the small files it keeps there.
//!
//! - **Config dir** (`$NIMBUS_CONFIG_DIR`, else `$XDG_CONFIG_HOME/nimbus`,
//!   usually `~/.config/nimbus`): who this device is and how it logs in.
//!   - `login.json` ([`Login`]): written by `nimbus login`; a mount with no
//!     `--server` uses it.
//!   - `embedded.json` ([`EmbeddedAccount`]): the local account of the
//!     embedded default (a mount with neither `--server` nor a login).
//! - **Data dir** (`$XDG_DATA_HOME/nimbus`, usually `~/.local/share/nimbus`):
//!   its `server/` folder ([`server_data_dir`]) is the default `--data` of
//!   `nimbus serve` and the embedded server's storage.
//! - **Cache dir** (`$XDG_CACHE_HOME/nimbus`, usually `~/.cache/nimbus`):
//!   default `--cache-dir` of `nimbus mount` (chunk cache, metadata cache,
//!   journal, and `mount.log` of `--daemon`).
//!
//! Files hold secrets (tokens, the embedded password), so they are written
//! atomically (a temporary file in the same folder, fsynced, then renamed
//! over the old one, then the folder fsynced) with mode 0600, inside a
//! folder of mode 0700. Loading returns `Ok(None)` when a file is absent and
//! a clear error (naming the file) when it is unreadable or corrupt; it never
//! silently replaces a corrupt file.
//!
//! The functions taking a `dir` do not look at the environment, so tests can
//! point them at a temporary folder.

use crate::protocol::DeviceId;
use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Environment variable that overrides the config dir.
pub const CONFIG_DIR_ENV: &str = "NIMBUS_CONFIG_DIR";
/// File name of [`Login`] inside the config dir.
pub const LOGIN_FILE: &str = "login.json";
/// File name of [`EmbeddedAccount`] inside the config dir.
pub const EMBEDDED_FILE: &str = "embedded.json";
/// File name of the `--daemon` log inside the cache dir.
pub const MOUNT_LOG_FILE: &str = "mount.log";

/// The config dir: `$NIMBUS_CONFIG_DIR` if set and non-empty, else the XDG
/// config dir + `/nimbus`.
pub fn config_dir() -> Result<PathBuf> {
    match std::env::var_os(CONFIG_DIR_ENV) {
        Some(d) if !d.is_empty() => Ok(PathBuf::from(d)),
        _ => dirs::config_dir().map(|d| d.join("nimbus")).ok_or_else(|| {
            anyhow!("cannot find the config directory: set $HOME or ${CONFIG_DIR_ENV}")
        }),
    }
}

/// Default data dir: the XDG data dir + `/nimbus`.
pub fn data_dir() -> Result<PathBuf> {
    dirs::data_dir()
        .map(|d| d.join("nimbus"))
        .ok_or_else(|| anyhow!("cannot find the data directory: set $HOME or pass --data"))
}

/// Default server storage: [`data_dir`] + `/server`. Both `nimbus serve`
/// (without `--data`) and the embedded default keep their server data here.
pub fn server_data_dir() -> Result<PathBuf> {
    Ok(data_dir()?.join("server"))
}

/// Default cache dir: the XDG cache dir + `/nimbus`.
pub fn cache_dir() -> Result<PathBuf> {
    dirs::cache_dir()
        .map(|d| d.join("nimbus"))
        .ok_or_else(|| anyhow!("cannot find the cache directory: set $HOME or pass --cache-dir"))
}

/// A saved login (`nimbus login`): which server, which account, which
/// registered device, and its tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// Server base URL without a trailing slash (`http://host:8420`).
    pub server: String,
    pub user: String,
    pub device_id: DeviceId,
    pub device_name: String,
    pub refresh_token: String,
    pub access_token: String,
    /// PEM certificates of the private CA given to `nimbus login --ca`:
    /// the only roots trusted for this server. `None`: the system's and
    /// the bundled roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

impl Login {
    /// `dir/login.json`, or `None` when absent.
    pub fn load(dir: &Path) -> Result<Option<Login>> {
        read_json(&dir.join(LOGIN_FILE))
    }

    /// [`Login::load`], refusing a file that its group or others may
    /// read: it holds this device's tokens (a clear error naming the file
    /// and the fix).
    pub fn load_private(dir: &Path) -> Result<Option<Login>> {
        check_private_file(&dir.join(LOGIN_FILE))?;
        Login::load(dir)
    }

    /// How to check this server's certificate.
    pub fn tls(&self) -> crate::remote::http::ClientTls {
        crate::remote::http::ClientTls {
            ca_pem: self.ca_pem.clone(),
        }
    }

    /// After `nimbus logout`: the identity (server, user, device) stays,
    /// so a later login is the same device again, but no token does.
    pub fn is_signed_out(&self) -> bool {
        self.refresh_token.is_empty()
    }

    /// This login without its tokens (see [`Login::is_signed_out`]).
    pub fn signed_out(mut self) -> Login {
        self.refresh_token.clear();
        self.access_token.clear();
        self
    }

    /// Writes `dir/login.json` atomically, mode 0600 (creating `dir`, 0700).
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_json_atomic(&dir.join(LOGIN_FILE), self)
    }
}

/// Refuses a secrets file that its group or others may read or write.
/// An absent file is fine.
pub fn check_private_file(path: &Path) -> Result<()> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "{} holds this device's credentials but its group or others may access it \
             (mode {mode:04o}); run `chmod 600 {}` (and check who read it)",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// The local account of the embedded default server. Created by the first
/// `nimbus mount` without a server or login; `device_id` and
/// `refresh_token` are filled in once the device is registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddedAccount {
    pub user: String,
    pub password: String,
    #[serde(default)]
    pub device_id: Option<DeviceId>,
    pub device_name: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl EmbeddedAccount {
    /// `dir/embedded.json`, or `None` when absent.
    pub fn load(dir: &Path) -> Result<Option<EmbeddedAccount>> {
        read_json(&dir.join(EMBEDDED_FILE))
    }
    /// Writes `dir/embedded.json` atomically, mode 0600 (creating `dir`, 0700).
    pub fn save(&self, dir: &Path) -> Result<()> {
        write_json_atomic(&dir.join(EMBEDDED_FILE), self)
    }
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is corrupt (delete it, or log in again, to start over)",
            path.display()
        )
    })?;
    Ok(Some(value))
}

/// Writes `value` as JSON to `path` atomically with mode 0600, creating the
/// parent folder with mode 0700 if needed.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(value).context("cannot encode JSON")?;
    json.push(b'\n');
    write_private_atomic(path, &json)
}

/// Writes `bytes` to `path` atomically (temp file + fsync + rename + fsync
/// of the folder), mode 0600, parent folder 0700.
pub fn write_private_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_private_dir(dir)?;
    let write = || -> io::Result<()> {
        // tempfile creates the file with mode 0600 on Unix; set it anyway in
        // case a umask or a future version thinks otherwise.
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        fs::File::open(dir)?.sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

/// Creates `dir` (and missing parents) with mode 0700; an existing `dir`
/// that others can read is tightened to 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let meta =
        fs::metadata(dir).with_context(|| format!("cannot read directory {}", dir.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private (mode 0700)", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> Login {
        Login {
            server: "http://127.0.0.1:8420".into(),
            user: "ann".into(),
            device_id: DeviceId::random(),
            device_name: "laptop".into(),
            refresh_token: "r".into(),
            access_token: "a".into(),
            ca_pem: None,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn absent_files_load_as_none() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(Login::load(t.path()).unwrap(), None);
        assert_eq!(EmbeddedAccount::load(&t.path().join("nope")).unwrap(), None);
    }

    #[test]
    fn login_roundtrip_with_private_modes() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b/nimbus");
        let l = login();
        l.save(&dir).unwrap();
        assert_eq!(Login::load(&dir).unwrap(), Some(l.clone()));
        assert_eq!(mode(&dir.join(LOGIN_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // Overwrite keeps the mode and leaves no temp file behind.
        let mut l2 = l;
        l2.access_token = "a2".into();
        l2.save(&dir).unwrap();
        assert_eq!(Login::load(&dir).unwrap().unwrap().access_token, "a2");
        assert_eq!(mode(&dir.join(LOGIN_FILE)), 0o600);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(LOGIN_FILE)]);
    }

    #[test]
    fn embedded_roundtrip_and_optional_fields() {
        let t = tempfile::tempdir().unwrap();
        let e = EmbeddedAccount {
            user: "me".into(),
            password: "pw".into(),
            device_id: None,
            device_name: "host".into(),
            refresh_token: None,
        };
        e.save(t.path()).unwrap();
        assert_eq!(EmbeddedAccount::load(t.path()).unwrap(), Some(e));
        assert_eq!(mode(&t.path().join(EMBEDDED_FILE)), 0o600);
        // Older files without the optional fields still load.
        fs::write(
            t.path().join(EMBEDDED_FILE),
            r#"{"user":"me","password":"pw","device_name":"h"}"#,
        )
        .unwrap();
        let e = EmbeddedAccount::load(t.path()).unwrap().unwrap();
        assert_eq!(e.device_id, None);
        assert_eq!(e.refresh_token, None);
    }

    #[test]
    fn existing_open_dir_is_tightened() {
        let t = tempfile::tempdir().unwrap();
        fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
        login().save(t.path()).unwrap();
        assert_eq!(mode(t.path()), 0o700);
    }

    #[test]
    fn a_login_others_may_read_is_refused_and_a_signed_out_one_has_no_token() {
        let t = tempfile::tempdir().unwrap();
        login().save(t.path()).unwrap();
        assert!(Login::load_private(t.path()).unwrap().is_some());
        let path = t.path().join(LOGIN_FILE);
        for bad in [0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            let err = format!("{:#}", Login::load_private(t.path()).unwrap_err());
            assert!(
                err.contains("login.json") && err.contains("chmod 600"),
                "{err}"
            );
        }
        let out = login().signed_out();
        assert!(out.is_signed_out() && !login().is_signed_out());
        assert_eq!(
            (out.device_id, out.access_token.as_str()),
            (out.device_id, "")
        );
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join(LOGIN_FILE), b"{not json").unwrap();
        let err = format!("{:#}", Login::load(t.path()).unwrap_err());
        assert!(err.contains("login.json is corrupt"), "{err}");
    }

    #[test]
    fn unreadable_file_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        // A directory where the file should be: reading it fails for root too.
        fs::create_dir(t.path().join(LOGIN_FILE)).unwrap();
        let err = format!("{:#}", Login::load(t.path()).unwrap_err());
        assert!(
            err.contains("cannot read") && err.contains("login.json"),
            "{err}"
        );
    }
}
