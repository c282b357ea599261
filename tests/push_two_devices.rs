//! Push end to end: one real server, two real mounts of one account.
//! Changes on A reach B within [`PUSHED`], a deadline the 30 s safety-net
//! pull could not meet (and each test first checks that B's push channel
//! is connected, so the 1 s fallback poll is not what delivers them); B
//! never serves stale attributes or pages; a server restart loses no
//! change; the device that made a change does not download it back.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

/// How long a pushed change may take from A's write to B's view.
const PUSHED: Duration = Duration::from_secs(5);
/// Mount start and reconnects (backoff after a restart).
const SLOW: Duration = Duration::from_secs(60);

fn setup() -> (Server, Device, Device) {
    let (server, a, b) = two_devices();
    for d in [&a, &b] {
        wait_for("push connected", SLOW, || d.push_connected().then_some(()));
    }
    (server, a, b)
}

/// Waits up to [`PUSHED`] for `ok` on B.
fn pushed(what: &str, ok: impl FnMut() -> Option<()>) {
    wait_for(what, PUSHED, ok);
}

#[test]
fn every_kind_of_change_arrives_within_seconds() {
    let (_server, a, b) = setup();

    fs::write(a.path("new.txt"), b"created").unwrap();
    wait_content(&b.path("new.txt"), b"created", PUSHED);

    fs::write(a.path("new.txt"), b"written again, longer").unwrap();
    wait_content(&b.path("new.txt"), b"written again, longer", PUSHED);

    fs::rename(a.path("new.txt"), a.path("renamed.txt")).unwrap();
    pushed("rename on B", || {
        (b.path("renamed.txt").exists() && !b.path("new.txt").exists()).then_some(())
    });

    fs::create_dir(a.path("dir")).unwrap();
    pushed("mkdir on B", || b.path("dir").is_dir().then_some(()));

    fs::set_permissions(a.path("renamed.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    pushed("chmod on B", || {
        let mode = fs::metadata(b.path("renamed.txt")).ok()?.mode() & 0o777;
        (mode == 0o600).then_some(())
    });

    std::os::unix::fs::symlink("renamed.txt", a.path("link")).unwrap();
    pushed("symlink on B", || {
        (fs::read_link(b.path("link")).ok()?.to_str() == Some("renamed.txt")).then_some(())
    });

    fs::remove_file(a.path("renamed.txt")).unwrap();
    pushed("delete on B", || {
        (!b.path("renamed.txt").exists()).then_some(())
    });

    // The status tells when the last notification came.
    let status = b.status_json();
    assert_eq!(status["push"]["connected"], true, "{status}");
    assert!(
        status["push"]["last_notification_age_ms"]
            .as_u64()
            .is_some(),
        "{status}"
    );
}

#[test]
fn b_never_serves_stale_attributes_or_pages() {
    let (_server, a, b) = setup();
    let first = vec![b'a'; 8192];
    let second = vec![b'b'; 8192];
    fs::write(a.path("same.txt"), &first).unwrap();
    wait_content(&b.path("same.txt"), &first, PUSHED);
    // B reads it: pages and attributes are now in B's kernel caches.
    assert_eq!(fs::read(b.path("same.txt")).unwrap(), first);
    let before = fs::metadata(b.path("same.txt")).unwrap();

    // A rewrites it with the same size: only invalidation can show it.
    fs::write(a.path("same.txt"), &second).unwrap();
    let a_mtime = fs::metadata(a.path("same.txt")).unwrap().mtime_nsec();
    pushed("B's cat shows the new bytes", || {
        (fs::read(b.path("same.txt")).ok()? == second).then_some(())
    });
    let after = fs::metadata(b.path("same.txt")).unwrap();
    assert_eq!(after.len(), before.len());
    assert_eq!(after.mtime_nsec(), a_mtime, "B's stat is A's");
    // `cat` through a new process, as a user would.
    let out = Command::new("cat")
        .arg(b.path("same.txt"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, second);
}

/// Readers busy on B while A's rewrites arrive: a read in flight at the
/// moment of a remote change must never leave the old pages in B's cache
/// for later opens (found by a break test: about one rewrite in 100 stayed
/// stale on B until the next change of that file).
#[test]
fn busy_readers_on_b_never_keep_an_old_version() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const FILES: usize = 4;
    const WRITES: usize = 240;
    let (_server, a, b) = setup();
    let name = |k: usize| format!("busy-{k}.txt");
    for k in 0..FILES {
        fs::write(a.path(&name(k)), format!("v{k}-00000")).unwrap();
        wait_content(&b.path(&name(k)), format!("v{k}-00000").as_bytes(), SLOW);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let paths: Vec<_> = (0..FILES).map(|k| b.path(&name(k))).collect();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for p in &paths {
                        if fs::read(p).is_ok() {
                            reads += 1;
                        }
                    }
                }
                reads
            })
        })
        .collect();
    for i in 1..=WRITES {
        let k = i % FILES;
        // Same size every time: only invalidation can show the change.
        let want = format!("v{k}-{i:05}");
        fs::write(a.path(&name(k)), &want).unwrap();
        let p = b.path(&name(k));
        let t0 = std::time::Instant::now();
        let mut seen = Vec::new();
        while t0.elapsed() < PUSHED {
            seen = fs::read(&p).unwrap_or_else(|e| format!("error: {e}").into_bytes());
            if seen == want.as_bytes() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if seen != want.as_bytes() {
            use std::os::unix::fs::OpenOptionsExt;
            let mut direct = vec![0u8; 4096];
            let n = {
                use std::io::Read;
                let mut f = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(0o40000)
                    .open(&p)
                    .unwrap();
                f.read(&mut direct).unwrap_or(0)
            };
            panic!(
                "write {i}: B has {:?}, want {want:?}; O_DIRECT reads {:?}; status {}",
                String::from_utf8_lossy(&seen),
                String::from_utf8_lossy(&direct[..n]),
                b.status_json()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(
        reads > WRITES as u64,
        "the readers hardly ran ({reads} reads)"
    );
}

#[test]
fn a_server_restart_loses_no_change() {
    let (mut server, a, b) = setup();
    fs::write(a.path("before.txt"), b"before").unwrap();
    wait_content(&b.path("before.txt"), b"before", PUSHED);

    server.restart();
    // Written right after the restart: A may still be reconnecting; the
    // journal keeps it until the server takes it.
    fs::write(a.path("after.txt"), b"after").unwrap();
    wait_content(&b.path("after.txt"), b"after", SLOW);
    wait_for("B's push reconnected", SLOW, || {
        b.push_connected().then_some(())
    });
    // Pushed again, not polled: within seconds.
    fs::write(a.path("later.txt"), b"later").unwrap();
    wait_content(&b.path("later.txt"), b"later", PUSHED);
}

#[test]
fn the_writer_does_not_download_its_own_change() {
    let (server, a, b) = setup();
    let bytes = data(3 << 20, 9);
    fs::write(a.path("big.bin"), &bytes).unwrap();
    a.sync();
    // B learns of it (metadata only: its content stays on the server
    // until read); A pulls its own change back as metadata.
    pushed("B sees the new file's size", || {
        (fs::metadata(b.path("big.bin")).ok()?.len() == bytes.len() as u64).then_some(())
    });
    wait_for("A applied its own change", SLOW, || {
        let s = a.status_json();
        (s["cursor"].as_u64()? >= s["push"]["server_cursor"].as_u64()?).then_some(())
    });
    assert_eq!(fs::read(a.path("big.bin")).unwrap(), bytes);
    assert_eq!(
        server.metric("nimbus_chunk_bytes_sent_total"),
        0,
        "a device downloaded content it wrote itself (or B prefetched)"
    );
    // Sanity: B reading it is what downloads.
    assert_eq!(fs::read(b.path("big.bin")).unwrap(), bytes);
    assert!(server.metric("nimbus_chunk_bytes_sent_total") >= bytes.len() as u64);
}

#[test]
fn sync_wait_pull_returns_once_b_has_what_a_uploaded() {
    let (_server, a, b) = setup();
    fs::create_dir(a.path("batch")).unwrap();
    for i in 0..50 {
        fs::write(a.path(&format!("batch/f{i}")), format!("file {i}")).unwrap();
    }
    a.sync();
    // Whatever the server had when this started is on B when it returns:
    // no polling needed after it.
    let out = b.nimbus(
        &[
            "sync",
            "--wait",
            "--pull",
            "--timeout",
            "60s",
            b.mnt.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        out.status.success(),
        "sync --wait --pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..50 {
        assert_eq!(
            fs::read_to_string(b.path(&format!("batch/f{i}"))).unwrap(),
            format!("file {i}")
        );
    }
}

#[test]
fn an_upgrade_without_a_token_is_refused_and_counted_sockets_show() {
    let (server, _a, _b) = setup();
    let resp = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/sync/ws", server.url))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(server.metric("nimbus_push_connections"), 2);
}
