//! The `nimbus` binary as users and scripts see it: help texts, exit codes,
//! one-line errors, and serve → admin user add → login end to end against
//! a real server process. Every wait polls with a deadline.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nimbus");

/// Runs `nimbus args...` with `stdin` and a private config dir.
fn run(args: &[&str], stdin: &[u8], config_dir: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("NIMBUS_CONFIG_DIR", config_dir)
        .env_remove("RUST_LOG")
        .env_remove("NIMBUS_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nimbus");
    // The command may exit before reading stdin; a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// Asserts a failure with exit `code` and exactly one stderr line
/// `nimbus: ...` containing `needle`; returns that line.
fn assert_one_line_error(out: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("nimbus: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "expected '{needle}' in: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    lines[0].to_string()
}

#[test]
fn help_of_every_command_exits_0_and_names_its_flags() {
    let cfg = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--help"],
            &[
                "serve", "admin", "login", "mount", "unmount", "status", "sync",
            ],
        ),
        (
            &["serve", "--help"],
            &["--listen", "--data", "--metadata", "--chunks"],
        ),
        (&["admin", "--help"], &["user"]),
        (&["admin", "user", "--help"], &["add"]),
        (
            &["admin", "user", "add", "--help"],
            &["NAME", "--password-stdin", "--data", "--metadata"],
        ),
        (
            &["login", "--help"],
            &["SERVER_URL", "--user", "--password-stdin", "--device"],
        ),
        (
            &["mount", "--help"],
            &[
                "MOUNTPOINT",
                "--server",
                "--cache-dir",
                "--cache-size",
                "--daemon",
                "--allow-other",
                "--read-only",
                "--fsync",
            ],
        ),
        (&["unmount", "--help"], &["MOUNTPOINT"]),
        (&["status", "--help"], &["PATH", "--json"]),
        (&["sync", "--help"], &["--wait", "PATH", "--timeout"]),
    ];
    for (args, flags) in cases {
        let out = run(args, b"", cfg.path());
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {text}");
        for f in *flags {
            assert!(
                text.contains(f),
                "{args:?} help does not mention {f}: {text}"
            );
        }
    }
}

#[test]
fn admin_user_add_with_empty_stdin_fails_in_one_line() {
    let cfg = tempfile::tempdir().unwrap();
    let data = cfg.path().join("data");
    let out = run(
        &[
            "admin",
            "user",
            "add",
            "ann",
            "--password-stdin",
            "--data",
            data.to_str().unwrap(),
        ],
        b"",
        cfg.path(),
    );
    assert_one_line_error(&out, 1, "no password on standard input");
}

#[test]
fn login_to_an_unreachable_server_fails_in_one_line() {
    let cfg = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "login",
            "http://127.0.0.1:1",
            "--user",
            "ann",
            "--password-stdin",
        ],
        b"pw\n",
        cfg.path(),
    );
    assert_one_line_error(&out, 1, "cannot log in to http://127.0.0.1:1");
    assert!(!cfg.path().join("login.json").exists());
}

#[test]
fn login_with_a_bad_url_fails_in_one_line() {
    let cfg = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "login",
            "localhost:8420",
            "--user",
            "ann",
            "--password-stdin",
        ],
        b"pw\n",
        cfg.path(),
    );
    assert_one_line_error(&out, 1, "http://");
}

#[test]
fn unmount_of_a_plain_directory_fails_clearly() {
    let cfg = tempfile::tempdir().unwrap();
    let out = run(&["unmount", cfg.path().to_str().unwrap()], b"", cfg.path());
    assert_one_line_error(&out, 1, "is not a nimbus mount");
}

#[test]
fn mount_of_a_missing_directory_fails_in_one_line() {
    let cfg = tempfile::tempdir().unwrap();
    let missing = cfg.path().join("missing");
    for daemon in [false, true] {
        let mut args = vec!["mount", missing.to_str().unwrap()];
        if daemon {
            args.push("--daemon");
        }
        let out = run(&args, b"", cfg.path());
        assert_one_line_error(&out, 1, "does not exist");
    }
}

#[test]
fn bad_cache_size_is_a_usage_error() {
    let cfg = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "mount",
            cfg.path().to_str().unwrap(),
            "--cache-size",
            "10XB",
        ],
        b"",
        cfg.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown unit 'XB'"), "{stderr}");
}

#[test]
fn sync_requires_wait_and_a_valid_timeout() {
    let cfg = tempfile::tempdir().unwrap();
    let out = run(&["sync"], b"", cfg.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--wait"));
    let out = run(&["sync", "--wait", "--timeout", "soon"], b"", cfg.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn status_and_sync_outside_a_mount_fail_in_one_line() {
    let cfg = tempfile::tempdir().unwrap();
    let dir = cfg.path().to_str().unwrap();
    let out = run(&["status", dir], b"", cfg.path());
    assert_one_line_error(&out, 1, "is not inside a nimbus mount");
    let out = run(&["sync", "--wait", dir, "--timeout", "1s"], b"", cfg.path());
    assert_one_line_error(&out, 1, "is not inside a nimbus mount");
}

// ---- end to end against a real server -------------------------------------

/// A `nimbus serve` child, stopped (SIGTERM, then SIGKILL) when dropped.
struct Served {
    child: Child,
    log: std::path::PathBuf,
}

impl Served {
    fn start(addr: &str, data: &Path, cfg: &Path, log: &Path) -> Served {
        let log_file = std::fs::File::create(log).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--listen", addr, "--data", data.to_str().unwrap()])
            .env("NIMBUS_CONFIG_DIR", cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start nimbus serve");
        Served {
            child,
            log: log.to_path_buf(),
        }
    }

    /// SIGTERM, then wait (with a deadline) for a clean exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `GET /healthz` answers 200.
fn healthy(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 32];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf[..got].starts_with(b"HTTP/1.1 200")
}

fn wait_healthy(addr: &str, served: &mut Served) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(addr) {
        if let Some(st) = served.child.try_wait().unwrap() {
            let err = std::fs::read_to_string(&served.log).unwrap_or_default();
            panic!("serve exited early ({st}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "server at {addr} never became healthy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_add_user_login_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config");
    let data = tmp.path().join("data");
    let addr = free_addr();
    let url = format!("http://{addr}");
    let mut served = Served::start(&addr, &data, &cfg, &tmp.path().join("serve.log"));
    wait_healthy(&addr, &mut served);

    let data_s = data.to_str().unwrap();
    let out = run(
        &[
            "admin",
            "user",
            "add",
            "ann",
            "--password-stdin",
            "--data",
            data_s,
        ],
        b"correct horse\n",
        &cfg,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Wrong password: one line, exit 1, nothing saved.
    let out = run(
        &[
            "login",
            &url,
            "--user",
            "ann",
            "--password-stdin",
            "--device",
            "laptop",
        ],
        b"wrong\n",
        &cfg,
    );
    assert_one_line_error(&out, 1, "cannot log in");
    assert!(!cfg.join("login.json").exists());

    let out = run(
        &[
            "login",
            &format!("{url}/"),
            "--user",
            "ann",
            "--password-stdin",
            "--device",
            "laptop",
        ],
        b"correct horse\n",
        &cfg,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!("logged in as ann on {url} (device laptop, id ")),
        "{stdout}"
    );

    let login = cfg.join("login.json");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&login), 0o600);
    assert_eq!(mode(&cfg), 0o700);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&login).unwrap()).unwrap();
    assert_eq!(saved["server"], url.as_str());
    assert_eq!(saved["user"], "ann");
    assert_eq!(saved["device_name"], "laptop");
    assert!(saved["refresh_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert!(stdout.contains(saved["device_id"].as_str().unwrap()));

    // Logging in again (what `unauthorized` advises) keeps the device: same
    // id and name, new tokens, so the mount's cache stays usable.
    let login_again = |device: Option<&str>| {
        let mut args = vec!["login", url.as_str(), "--user", "ann", "--password-stdin"];
        args.extend(device.map(|d| ["--device", d]).into_iter().flatten());
        let out = run(&args, b"correct horse\n", &cfg);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&login).unwrap()).unwrap();
        (saved, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (again, stderr) = login_again(None);
    assert_eq!(again["device_id"], saved["device_id"], "{stderr}");
    assert_eq!(again["device_name"], "laptop");
    assert_ne!(again["refresh_token"], saved["refresh_token"]);
    assert!(stderr.is_empty(), "{stderr}");
    // A different --device name cannot rename the device: said, not done.
    let (again, stderr) = login_again(Some("desk"));
    assert_eq!(again["device_id"], saved["device_id"]);
    assert_eq!(again["device_name"], "laptop");
    assert!(
        stderr.contains("keeping this device's name 'laptop'"),
        "{stderr}"
    );
    // A device the server does not know: a new one is registered, and said.
    let mut forged = again.clone();
    forged["device_id"] = "6f0d3c1e-0000-4000-8000-000000000000".into();
    std::fs::write(&login, serde_json::to_vec(&forged).unwrap()).unwrap();
    let (fresh, stderr) = login_again(None);
    assert!(
        stderr.contains("no longer knows device 6f0d3c1e"),
        "{stderr}"
    );
    assert_ne!(fresh["device_id"], forged["device_id"]);
    assert_ne!(fresh["device_id"], saved["device_id"]);
    assert_eq!(fresh["device_name"], "laptop");

    // Adding the same user again is an error, not a silent overwrite.
    let out = run(
        &[
            "admin",
            "user",
            "add",
            "ann",
            "--password-stdin",
            "--data",
            data_s,
        ],
        b"other\n",
        &cfg,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    // SIGTERM shuts the server down cleanly.
    let log = served.log.clone();
    let st = served.stop();
    let log = std::fs::read_to_string(log).unwrap();
    assert!(st.success(), "serve exited with {st}: {log}");
    assert!(log.contains(&format!("listening on {url}")), "{log}");
}
