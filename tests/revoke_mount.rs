//! `nimbus devices revoke` against a real mount of the revoked device: its
//! next request is refused, `nimbus status` says why, its journal keeps
//! what it could not send, and after `nimbus login` there (the same
//! device, reinstated) it drains.

mod common;

use common::*;
use std::time::Duration;

fn status_json(dev: &Device) -> serde_json::Value {
    let out = dev.nimbus(&["status", "--json", dev.mnt.to_str().unwrap()], "");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn server_file(server: &Server, token: &str, path: &str) -> Option<Vec<u8>> {
    let r = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/files/content?path={path}", server.url))
        .bearer_auth(token)
        .send()
        .ok()?;
    r.status().is_success().then(|| r.bytes().unwrap().to_vec())
}

#[test]
fn a_revoked_mount_keeps_its_journal_says_so_and_drains_after_login() {
    let server = Server::start();
    server.add_user("ann", "pw");
    let laptop = Device::login(&server, "ann", "pw", "laptop");
    let mut phone = Device::login(&server, "ann", "pw", "phone");
    let phone_id = phone.saved_login()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    phone.mount(&[]);
    std::fs::write(phone.path("before.txt"), b"sent").unwrap();
    phone.sync();

    let out = laptop.nimbus(&["devices", "revoke", "phone"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked device phone"));

    // The phone keeps working locally; its upload is refused at once.
    std::fs::write(phone.path("after.txt"), b"kept in the journal").unwrap();
    let st = wait_for("the unauthorized state", Duration::from_secs(60), || {
        let s = status_json(&phone);
        (s["connection"] == "unauthorized").then_some(s)
    });
    let reason = st["connection_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("revoked") && reason.contains("log in"),
        "{st}"
    );
    assert!(st["pending_ops"].as_u64().unwrap() >= 1, "{st}");
    let human = phone.nimbus(&["status", phone.mnt.to_str().unwrap()], "");
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("unauthorized") && human.contains("revoked"),
        "{human}"
    );
    assert_eq!(
        std::fs::read(phone.path("after.txt")).unwrap(),
        b"kept in the journal"
    );
    let token = laptop.saved_login()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server_file(&server, &token, "/after.txt"), None);
    // The laptop sees it revoked; the phone's own commands are refused.
    let list = laptop.nimbus(&["devices", "--json"], "");
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let phone_row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == phone_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(phone_row["revoked"], true);
    let out = phone.nimbus(&["devices"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("revoked"), "{err}");

    // A script waiting on the phone is told why nothing moves, and fails
    // at its timeout.
    let out = phone.nimbus(
        &[
            "sync",
            "--wait",
            "--pull",
            "--timeout",
            "2s",
            phone.mnt.to_str().unwrap(),
        ],
        "",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("revoked") && err.contains("log in"), "{err}");

    // Let the paused uploader's probe interval grow past what the drain
    // below may take (1 + 2 + 4 + 8 s: the next probe is 16 s away). This
    // wait is part of what is tested, not a stand-in for a condition.
    std::thread::sleep(Duration::from_secs(16));

    // Logging in again there reinstates the same device; the mount
    // picks the new tokens up at once and drains its journal.
    let out = phone.nimbus(
        &["login", &server.url, "--user", "ann", "--password-stdin"],
        "pw\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&phone_id));
    let logged_in = std::time::Instant::now();
    // Well under the 16 s probe interval: the new login woke the mount.
    wait_for("after.txt on the server", Duration::from_secs(8), || {
        (server_file(&server, &token, "/after.txt").as_deref() == Some(&b"kept in the journal"[..]))
            .then_some(())
    });
    eprintln!("drained {:?} after the login", logged_in.elapsed());
    phone.sync();
    let st = status_json(&phone);
    assert_eq!(st["connection"], "online", "{st}");
    phone.unmount();
}
