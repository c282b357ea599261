//! Faults through a real mount: corrupt cached chunks, a vanished server.

mod common;

use common::*;
use std::fs;
use std::time::{Duration, Instant};

fn chunk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for sub in fs::read_dir(dir).unwrap().flatten() {
        if sub.path().is_dir() {
            for f in fs::read_dir(sub.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
    }
    out
}

#[test]
fn corrupt_cached_chunk_is_dropped_and_refetched() {
    let server = Server::start();
    server.add_user("bob", "pw-bob-123");
    let mut a = Device::login(&server, "bob", "pw-bob-123", "a");
    let mut b = Device::login(&server, "bob", "pw-bob-123", "b");
    a.mount(&[]);
    b.mount(&[]);
    let bytes = data(3 << 20, 11);
    fs::write(a.path("photo.raw"), &bytes).unwrap();
    a.sync();
    wait_content(&b.path("photo.raw"), &bytes, Duration::from_secs(60));
    b.unmount();
    // Flip a byte in every cached chunk of B.
    let chunks = chunk_files(&b.cache.join("chunks"));
    assert!(!chunks.is_empty(), "B cached nothing");
    for c in &chunks {
        let mut d = fs::read(c).unwrap();
        d[0] ^= 0xff;
        fs::write(c, d).unwrap();
    }
    b.mount(&[]);
    assert_eq!(fs::read(b.path("photo.raw")).unwrap(), bytes);
    // The bad copies were replaced by verified ones.
    for c in chunk_files(&b.cache.join("chunks")) {
        let d = fs::read(&c).unwrap();
        let name = c.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(blake3::hash(&d).to_hex().as_str(), name);
    }
}

#[test]
fn offline_reads_of_uncached_content_fail_promptly_and_writes_queue() {
    let mut server = Server::start();
    server.add_user("carol", "pw-carol-123");
    let mut a = Device::login(&server, "carol", "pw-carol-123", "a");
    let mut b = Device::login(&server, "carol", "pw-carol-123", "b");
    a.mount(&[]);
    b.mount(&[]);
    let bytes = data(2 << 20, 12);
    fs::write(a.path("remote-only.bin"), &bytes).unwrap();
    fs::write(a.path("small.txt"), b"cached on b").unwrap();
    a.sync();
    wait_content(
        &b.path("small.txt"),
        b"cached on b",
        Duration::from_secs(60),
    );
    wait_for("listing on b", Duration::from_secs(60), || {
        b.path("remote-only.bin").exists().then_some(())
    });
    // The server goes away.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    // Cached content still reads; listings still work.
    assert_eq!(fs::read(b.path("small.txt")).unwrap(), b"cached on b");
    assert_eq!(
        fs::metadata(b.path("remote-only.bin")).unwrap().len(),
        bytes.len() as u64
    );
    // Uncached content fails with EIO, promptly.
    let t0 = Instant::now();
    let err = fs::read(b.path("remote-only.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t0.elapsed()
    );
    // Writes are accepted and stay queued.
    fs::write(b.path("offline.txt"), b"written offline").unwrap();
    assert_eq!(fs::read(b.path("offline.txt")).unwrap(), b"written offline");
    let out = std::process::Command::new(BIN)
        .args(["sync", "--wait", "--timeout", "1s"])
        .arg(&b.mnt)
        .output()
        .unwrap();
    assert!(!out.status.success(), "sync --wait cannot succeed offline");
    assert!(String::from_utf8_lossy(&out.stderr).contains("offline.txt"));
}

/// A mount whose process died (kill -9) leaves "transport endpoint is not
/// connected" behind; `nimbus mount` there cleans it up, says so in one
/// line, and mounts, with nothing written before the crash lost.
#[test]
fn a_mount_left_by_a_killed_process_is_cleaned_up_by_the_next_mount() {
    use std::process::{Command, Stdio};
    let server = Server::start();
    server.add_user("cat", "pw-cat-123");
    let mut a = Device::login(&server, "cat", "pw-cat-123", "a");
    a.mount(&[]);
    fs::write(a.path("kept.txt"), b"before the crash").unwrap();
    a.sync();
    a.crash();
    let err = fs::metadata(&a.mnt).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");

    let out = Command::new(BIN)
        .env("NIMBUS_CONFIG_DIR", &a.config)
        .arg("mount")
        .arg(&a.mnt)
        .arg("--cache-dir")
        .arg(&a.cache)
        .arg("--daemon")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("was still mounted by a nimbus mount that is gone"),
        "{stderr}"
    );
    wait_content(
        &a.path("kept.txt"),
        b"before the crash",
        Duration::from_secs(30),
    );
    let (config, mnt) = (a.config.clone(), a.mnt.clone());
    let unmount = || {
        Command::new(BIN)
            .env("NIMBUS_CONFIG_DIR", &config)
            .arg("unmount")
            .arg(&mnt)
            .output()
            .unwrap()
    };
    let out = unmount();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `nimbus unmount` clears a dead mount too.
    a.mount(&[]);
    a.crash();
    assert!(is_mounted(&a.mnt));
    let out = unmount();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&a.mnt));
}
