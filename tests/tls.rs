//! HTTPS: `nimbus serve --tls-cert/--tls-key` with certificates made by
//! rcgen, `nimbus login --ca`, a mount over HTTPS, clear errors for an
//! untrusted certificate, SIGHUP reload, and the refusal of plain HTTP
//! beyond loopback.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A CA able to sign server certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes a certificate for 127.0.0.1 and localhost, and its key.
    fn issue(&self, cert: &Path, key: &Path) {
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
                .unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = params.signed_by(&leaf_key, &self.cert, &self.key).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
    }
}

/// A client trusting only `ca_pem`.
fn client(ca_pem: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

struct TlsServer {
    child: Child,
    url: String,
    data: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    dir: tempfile::TempDir,
}

impl TlsServer {
    fn start(ca: &Ca) -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        ca.issue(&cert, &key);
        let data = dir.path().join("data");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = format!("https://127.0.0.1:{port}");
        let http = client(&ca.pem());
        wait_for("https health", Duration::from_secs(30), || {
            http.get(format!("{url}/healthz"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        });
        TlsServer {
            child,
            url,
            data,
            cert,
            key,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    fn sighup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }

    fn add_user(&self, name: &str, password: &str) {
        use std::io::Write;
        let mut c = Command::new(BIN)
            .args(["admin", "user", "add", name, "--password-stdin", "--data"])
            .arg(&self.data)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(c.stdin.take().unwrap(), "{password}").unwrap();
        assert!(c.wait().unwrap().success());
    }

    fn ca_file(&self, ca: &Ca, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, ca.pem()).unwrap();
        p
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nimbus login` in a fresh config dir; (success, stderr).
fn try_login(url: &str, extra: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(BIN)
        .env("NIMBUS_CONFIG_DIR", dir.path())
        .args(["login", url, "--user", "ann", "--password-stdin"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    // A login refused before it reads the password closes the pipe early.
    let _ = writeln!(c.stdin.take().unwrap(), "pw");
    let out = c.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one_line(stderr: &str) -> &str {
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    stderr.trim_end()
}

#[test]
fn login_and_mount_over_https_with_a_private_ca() {
    let ca = Ca::new("Nimbus test CA");
    let server = TlsServer::start(&ca);
    server.add_user("ann", "pw");
    let ca_file = server.ca_file(&ca, "ca.pem");
    let ca_arg = ca_file.to_str().unwrap();
    let mut dev = Device::login_with(&server.url, "ann", "pw", "laptop", &["--ca", ca_arg]);
    // The CA is saved with the login, so the mount needs no flag.
    let saved = dev.saved_login();
    assert!(saved["ca_pem"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    dev.mount(&[]);
    // The push socket (wss://) trusts the same private CA.
    wait_for("push connected over TLS", Duration::from_secs(30), || {
        dev.push_connected().then_some(())
    });
    std::fs::write(dev.path("over-tls.txt"), b"sealed in transit").unwrap();
    dev.sync();
    let got = client(&ca.pem())
        .get(format!(
            "{}/api/v1/files/content?path=/over-tls.txt",
            server.url
        ))
        .bearer_auth(dev.saved_login()["access_token"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().unwrap().as_ref(), b"sealed in transit");
    // Account commands use the saved CA too.
    let out = dev.nimbus(&["devices"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("laptop *"));
    dev.unmount();
}

#[test]
fn an_untrusted_certificate_is_one_clear_error() {
    let ca = Ca::new("Nimbus test CA");
    let server = TlsServer::start(&ca);
    server.add_user("ann", "pw");
    let other = server.ca_file(&Ca::new("Someone else"), "other.pem");
    for extra in [vec!["--ca", other.to_str().unwrap()], vec![]] {
        let (ok, stderr) = try_login(&server.url, &extra);
        assert!(!ok);
        let line = one_line(&stderr);
        assert!(
            line.starts_with("nimbus: cannot log in to https://127.0.0.1")
                && line.contains("certificate")
                && line.contains("--ca FILE"),
            "{line}"
        );
    }
    // A CA file that is not PEM, one that is missing, and --ca for http.
    let junk = server.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let (ok, stderr) = try_login(&server.url, &["--ca", junk.to_str().unwrap()]);
    assert!(!ok && one_line(&stderr).contains("junk.pem"), "{stderr}");
    let (ok, stderr) = try_login(&server.url, &["--ca", "/nonexistent/ca.pem"]);
    assert!(
        !ok && one_line(&stderr).contains("cannot read the CA file"),
        "{stderr}"
    );
    let (ok, stderr) = try_login("http://127.0.0.1:1", &["--ca", junk.to_str().unwrap()]);
    assert!(
        !ok && one_line(&stderr).contains("--ca is for an https://"),
        "{stderr}"
    );
    // With the right CA it works.
    let good = server.ca_file(&ca, "ca.pem");
    let (ok, stderr) = try_login(&server.url, &["--ca", good.to_str().unwrap()]);
    assert!(ok, "{stderr}");
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_the_listener() {
    let old_ca = Ca::new("Old CA");
    let server = TlsServer::start(&old_ca);
    let new_ca = Ca::new("New CA");
    let (old_client, new_client) = (client(&old_ca.pem()), client(&new_ca.pem()));
    let health = format!("{}/healthz", server.url);
    assert!(old_client.get(&health).send().is_ok());
    assert!(new_client.get(&health).send().is_err());
    // A broken pair first: the reload fails, says why, and the old
    // certificate stays.
    std::fs::write(&server.key, "garbage").unwrap();
    server.sighup();
    wait_for("the failed reload", Duration::from_secs(20), || {
        server
            .log()
            .contains("SIGHUP: cannot reload the TLS certificate")
            .then_some(())
    });
    assert!(client(&old_ca.pem()).get(&health).send().is_ok());
    // Then a certificate of another CA: served from the next connection on.
    new_ca.issue(&server.cert, &server.key);
    server.sighup();
    wait_for("the new certificate", Duration::from_secs(20), || {
        client(&new_ca.pem())
            .get(&health)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    assert!(server.log().contains("SIGHUP: TLS certificate reloaded"));
    // A connection opened before the reload still works on the old
    // certificate (the listener and open connections stay)...
    assert!(old_client.get(&health).send().is_ok());
    // ...while a new connection gets the new one only.
    assert!(client(&old_ca.pem()).get(&health).send().is_err());
}

#[test]
fn plain_http_beyond_loopback_and_bad_tls_files_are_one_line_errors() {
    // 192.0.2.1 is TEST-NET-1: refused before any connection is tried.
    let (ok, stderr) = try_login("http://192.0.2.1:8420", &[]);
    assert!(!ok);
    let line = one_line(&stderr);
    assert!(
        line.contains("refusing plain http:// to 192.0.2.1") && line.contains("--insecure"),
        "{line}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "nope").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&bad)
        .arg("--tls-key")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or("");
    assert!(
        last.starts_with("nimbus: cannot start the server: cannot load the TLS certificate"),
        "{stderr}"
    );
    // Plain HTTP beyond loopback is served, with a warning.
    let log_path = dir.path().join("plain.log");
    let mut plain = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("plain"))
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    wait_for("the plain HTTP warning", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.contains("listening on http://").then_some(log)
    });
    let _ = plain.kill();
    let _ = plain.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("serving plain HTTP on 0.0.0.0:0") && log.contains("--tls-cert"),
        "{log}"
    );
    // --tls-cert without --tls-key is a usage error.
    let out = Command::new(BIN)
        .args(["serve", "--tls-cert"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
