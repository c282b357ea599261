//! Harness for integration tests: a real `nimbus serve` on a loopback port
//! and real mounts through the kernel, each device with its own config and
//! cache dir. Every wait polls with a deadline.

#![allow(dead_code)]

pub mod offline;
// Not every test crate that includes `common` uses these.
#[allow(unused_imports)]
pub use offline::*;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_nimbus");

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let child = spawn_serve(&port.to_string(), &data);
        let health = format!("{url}/healthz");
        wait_for("server health", Duration::from_secs(30), || {
            reqwest::blocking::get(&health)
                .ok()
                .filter(|r| r.status().is_success())
        });
        Server {
            child,
            url,
            data,
            _dir: dir,
        }
    }

    /// Kills the server (SIGKILL) until [`Server::restart`]: devices go
    /// offline and journal what they do.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (SIGKILL) and starts it again on the same port
    /// with the same data, waiting until it answers.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let port = self.url.rsplit(':').next().unwrap().to_owned();
        let data = self.data.clone();
        let health = format!("{}/healthz", self.url);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut child = spawn_serve(&port, &data);
            // Up until it answers, or until it exits (port not free yet).
            let up = loop {
                if reqwest::blocking::get(&health).is_ok_and(|r| r.status().is_success()) {
                    break true;
                }
                if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if up {
                self.child = child;
                return;
            }
            let _ = child.kill();
            let _ = child.wait();
            assert!(Instant::now() < deadline, "the server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The value of metric `name` (no labels) from `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = reqwest::blocking::get(format!("{}/metrics", self.url))
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    pub fn add_user(&self, name: &str, password: &str) {
        let mut c = Command::new(BIN)
            .args(["admin", "user", "add", name, "--password-stdin", "--data"])
            .arg(&self.data)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(c.stdin.take().unwrap(), "{password}").unwrap();
        assert!(c.wait().unwrap().success(), "admin user add failed");
    }

    /// Bytes stored in the server's chunk directory.
    pub fn chunk_bytes(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        walk(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        }
        walk(&self.data.join("chunks"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running server with user `alice` and two of her devices mounted:
/// `laptop` and `desktop` (the usual two-device setup).
pub fn two_devices() -> (Server, Device, Device) {
    let server = Server::start();
    server.add_user("alice", "correct horse");
    let mut a = Device::login(&server, "alice", "correct horse", "laptop");
    let mut b = Device::login(&server, "alice", "correct horse", "desktop");
    a.mount(&[]);
    b.mount(&[]);
    (server, a, b)
}

/// One device: its own config dir, cache dir and mount point.
pub struct Device {
    pub name: String,
    pub mnt: PathBuf,
    pub config: PathBuf,
    pub cache: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Device {
    pub fn login(server: &Server, user: &str, password: &str, name: &str) -> Device {
        Device::login_url(&server.url, user, password, name)
    }

    /// Logs in against any URL (a proxy in front of the server, say).
    pub fn login_url(url: &str, user: &str, password: &str, name: &str) -> Device {
        Device::login_with(url, user, password, name, &[])
    }

    /// Logs in against any URL with extra `nimbus login` arguments
    /// (`--ca FILE`, say).
    pub fn login_with(url: &str, user: &str, password: &str, name: &str, extra: &[&str]) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        let mut c = Command::new(BIN)
            .env("NIMBUS_CONFIG_DIR", &config)
            .args([
                "login",
                url,
                "--user",
                user,
                "--password-stdin",
                "--device",
                name,
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(c.stdin.take().unwrap(), "{password}").unwrap();
        assert!(c.wait().unwrap().success(), "login failed");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        Device {
            name: name.into(),
            mnt,
            config,
            cache: dir.path().join("cache"),
            child: None,
            _dir: dir,
        }
    }

    pub fn mount(&mut self, extra: &[&str]) {
        let child = Command::new(BIN)
            .env("NIMBUS_CONFIG_DIR", &self.config)
            .arg("mount")
            .arg(&self.mnt)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let mnt = self.mnt.clone();
        wait_for("mount", Duration::from_secs(30), || {
            is_mounted(&mnt).then_some(())
        });
    }

    /// Runs `nimbus ARGS` as this device (its config dir), with `stdin`.
    pub fn nimbus(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut c = Command::new(BIN)
            .env("NIMBUS_CONFIG_DIR", &self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that fails before reading its input closes the pipe.
        let _ = c.stdin.take().unwrap().write_all(stdin.as_bytes());
        c.wait_with_output().unwrap()
    }

    /// The saved login (`login.json`) as JSON.
    pub fn saved_login(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.config.join("login.json")).unwrap()).unwrap()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// `nimbus status --json` of this mount, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.nimbus(&["status", "--json", self.mnt.to_str().unwrap()], "");
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// True when the mount's push channel is connected.
    pub fn push_connected(&self) -> bool {
        self.status_json()["push"]["connected"] == serde_json::Value::Bool(true)
    }

    /// `nimbus sync --wait` on the mount root.
    pub fn sync(&self) {
        let out = Command::new(BIN)
            .env("NIMBUS_CONFIG_DIR", &self.config)
            .args(["sync", "--wait", "--timeout", "120s"])
            .arg(&self.mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sync --wait failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills the mount process with SIGKILL (a crash of the process, no
    /// clean shutdown) and detaches the dead mount it leaves.
    /// Kills the mount process (SIGKILL) and leaves its dead mount in
    /// place, as a crash does ("transport endpoint is not connected").
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("mounted");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("mounted");
        child.kill().unwrap();
        child.wait().unwrap();
        if is_mounted(&self.mnt) {
            nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH).unwrap();
        }
    }

    pub fn unmount(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new(BIN)
                .arg("unmount")
                .arg(&self.mnt)
                .status()
                .unwrap();
            assert!(status.success(), "nimbus unmount failed");
            let st = wait_for("mount process exit", Duration::from_secs(60), || {
                child.try_wait().unwrap()
            });
            assert!(st.success(), "mount exited with {st}");
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if is_mounted(&self.mnt) {
                let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Waits until `path` exists with exactly `want` as content.
pub fn wait_content(path: &Path, want: &[u8], limit: Duration) {
    wait_for(
        &format!("{} to arrive", path.display()),
        limit,
        || match std::fs::read(path) {
            Ok(got) if got == want => Some(()),
            _ => None,
        },
    );
}

/// Logs in device "a" of a new user `user` (password `password`) and
/// mounts it with `--allow-other`, the mount and the folder holding it open
/// to other users (the temp dir holding the mount is 0700), for tests that
/// act as a second uid.
pub fn device_open_to_others(server: &Server, user: &str, password: &str) -> Device {
    use std::os::unix::fs::PermissionsExt;
    server.add_user(user, password);
    let mut dev = Device::login(server, user, password, "a");
    let holder = dev.mnt.parent().unwrap();
    std::fs::set_permissions(holder, std::fs::Permissions::from_mode(0o755)).unwrap();
    dev.mount(&["--allow-other"]);
    std::fs::set_permissions(&dev.mnt, std::fs::Permissions::from_mode(0o777)).unwrap();
    dev
}

/// Runs `sh -c script` as `uid:gid` (no supplementary groups), in `dir`.
pub fn sh_as(uid: u32, gid: u32, dir: &Path, script: &str) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap()
}

/// `script` must succeed as `uid:uid` in `dir`.
pub fn allowed(uid: u32, dir: &Path, script: &str) {
    let out = sh_as(uid, uid, dir, script);
    assert!(
        out.status.success(),
        "`{script}` as {uid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `nimbus serve` on loopback `port` with data directory `data`
/// (server stderr passes through to the test's).
fn spawn_serve(port: &str, data: &Path) -> Child {
    Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nimbus serve")
}
