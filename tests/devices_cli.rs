//! `nimbus devices`, `devices revoke`, `passwd` and `logout` against a real
//! server, and the one-line errors of each; credentials others may read
//! are refused.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one line of a failed command.
fn error_line(out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("nimbus: "), "{err}");
    err
}

#[test]
fn devices_revoke_passwd_and_logout_from_the_command_line() {
    let server = Server::start();
    server.add_user("ann", "pw");
    let laptop = Device::login(&server, "ann", "pw", "laptop");
    let phone = Device::login(&server, "ann", "pw", "phone");
    let tablet = Device::login(&server, "ann", "pw", "tablet");

    let table = stdout(&laptop.nimbus(&["devices"], ""));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("laptop *") && table.contains("phone"),
        "{table}"
    );
    assert!(table.contains("nimbus/"), "platform column: {table}");
    assert_eq!(table.matches("active").count(), 3, "{table}");

    let err = error_line(&laptop.nimbus(&["devices", "revoke", "desk"], ""));
    assert!(err.contains("no device named 'desk'"), "{err}");
    let out = stdout(&laptop.nimbus(&["devices", "revoke", "phone"], ""));
    assert!(out.contains("revoked device phone"), "{out}");
    let again = stdout(&laptop.nimbus(&["devices", "revoke", "phone"], ""));
    assert!(again.contains("already revoked"), "{again}");
    let err = error_line(&phone.nimbus(&["devices"], ""));
    assert!(err.contains("revoked") && err.contains("log in"), "{err}");

    // passwd: current password, then the new one, on standard input.
    let out = laptop.nimbus(&["passwd"], "pw\nnew-pw\n");
    assert_eq!(out.status.code(), Some(2), "--password-stdin is required");
    let err = error_line(&laptop.nimbus(&["passwd", "--password-stdin"], "wrong\nnew-pw\n"));
    assert!(err.contains("current password is wrong"), "{err}");
    let err = error_line(&laptop.nimbus(&["passwd", "--password-stdin"], "pw\n"));
    assert!(err.contains("new password on the second line"), "{err}");
    let out = stdout(&laptop.nimbus(&["passwd", "--password-stdin"], "pw\nnew-pw\n"));
    assert!(out.contains("1 other device(s) signed out"), "{out}");
    // The tablet is signed out; it logs in again with the new password
    // as the same device.
    let err = error_line(&tablet.nimbus(&["devices"], ""));
    assert!(err.contains("log in again"), "{err}");
    let id = tablet.saved_login()["device_id"].clone();
    let out = tablet.nimbus(
        &["login", &server.url, "--user", "ann", "--password-stdin"],
        "new-pw\n",
    );
    stdout(&out);
    assert_eq!(tablet.saved_login()["device_id"], id);
    stdout(&tablet.nimbus(&["devices"], ""));
    // A command with a live access token does not rotate the refresh token.
    let before = laptop.saved_login()["refresh_token"].clone();
    stdout(&laptop.nimbus(&["devices"], ""));
    assert_eq!(
        laptop.saved_login()["refresh_token"],
        before,
        "no refresh needed yet"
    );

    // Credentials others may read are refused, by commands and mounts.
    let file = tablet.config.join("login.json");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = error_line(&tablet.nimbus(&["devices"], ""));
    assert!(
        err.contains("chmod 600") && err.contains("login.json"),
        "{err}"
    );
    let out = tablet.nimbus(
        &[
            "mount",
            tablet.mnt.to_str().unwrap(),
            "--cache-dir",
            tablet.cache.to_str().unwrap(),
        ],
        "",
    );
    let err = error_line(&out);
    assert!(err.contains("chmod 600"), "{err}");
    assert!(!is_mounted(&tablet.mnt));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();

    // logout: revoked on the server, tokens gone from the file (0600 still).
    let old_refresh = tablet.saved_login()["refresh_token"].clone();
    let out = stdout(&tablet.nimbus(&["logout"], ""));
    assert!(out.contains("logged out"), "{out}");
    let saved = tablet.saved_login();
    assert_eq!(saved["refresh_token"], "");
    assert_eq!(saved["access_token"], "");
    assert_eq!(saved["device_id"], id, "the identity stays");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let err = error_line(&tablet.nimbus(&["devices"], ""));
    assert!(err.contains("not logged in (logged out of"), "{err}");
    let err = error_line(&tablet.nimbus(&["logout"], ""));
    assert!(err.contains("not logged in"), "{err}");
    let table = stdout(&laptop.nimbus(&["devices"], ""));
    assert_eq!(
        table.matches("revoked").count(),
        2,
        "phone and tablet: {table}"
    );
    // The old refresh token is dead on the server, not just forgotten.
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/auth/refresh", server.url))
        .json(&serde_json::json!({ "refresh_token": old_refresh }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // Logging in again there is the same device, reinstated.
    stdout(&tablet.nimbus(
        &["login", &server.url, "--user", "ann", "--password-stdin"],
        "new-pw\n",
    ));
    assert_eq!(tablet.saved_login()["device_id"], id);
    let table = stdout(&laptop.nimbus(&["devices"], ""));
    assert_eq!(table.matches("revoked").count(), 1, "the phone: {table}");
}
