//! `nimbus conflicts` and `nimbus conflicts resolve` end to end: a real
//! server, two devices of one account mounted through the kernel, and
//! real conflicts (both devices edit the same files while the server is
//! down; whichever commits second gets a conflict copy).

mod common;

use common::*;
use nimbus::cli::xattr::get;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ARRIVE: Duration = Duration::from_secs(90);

/// `nimbus ARGS` as `dev`, run in folder `cwd`.
fn nimbus_in(dev: &Device, cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("NIMBUS_CONFIG_DIR", &dev.config)
        .env_remove("RUST_BACKTRACE")
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The one error line of a failed command.
fn error_line(out: &Output) -> String {
    assert!(!out.status.success(), "should have failed");
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

/// `nimbus conflicts --json` on `dev`'s mount.
fn listed(dev: &Device) -> Vec<Value> {
    let out = nimbus_in(dev, &dev.mnt, &["conflicts", "--json"]);
    serde_json::from_str::<Value>(&stdout(&out))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The listed copy of `original` (a name in the root) on `dev`.
fn copy_of(dev: &Device, original: &str) -> Option<Value> {
    let want = Value::String(dev.path(original).display().to_string());
    listed(dev).into_iter().find(|c| c["original"] == want)
}

fn state(path: &Path) -> String {
    String::from_utf8(get(path, "user.nimbus.state").unwrap()).unwrap()
}

/// The content each device wrote to `name` while the server was down.
fn edit(device: &str, name: &str) -> Vec<u8> {
    format!("{device}'s {name}").into_bytes()
}

fn other(device: &str) -> &'static str {
    if device == "laptop" {
        "desktop"
    } else {
        "laptop"
    }
}

#[test]
fn conflicts_are_listed_shown_and_resolved_on_both_devices() {
    let (mut server, a, b) = two_devices();
    let names = ["mine.txt", "theirs.txt", "both.txt", "orphan.txt"];
    for n in names {
        fs::write(a.path(n), format!("base {n}")).unwrap();
    }
    a.sync();
    for n in names {
        wait_content(&b.path(n), format!("base {n}").as_bytes(), ARRIVE);
    }
    assert_eq!(
        stdout(&nimbus_in(&a, &a.mnt, &["conflicts"])),
        "no conflicts\n"
    );

    // Concurrent edits: neither device sees the other's before uploading.
    server.stop();
    for n in names {
        fs::write(a.path(n), edit("laptop", n)).unwrap();
        fs::write(b.path(n), edit("desktop", n)).unwrap();
    }
    server.restart();
    a.sync();
    b.sync();
    for dev in [&a, &b] {
        wait_for("every copy listed", ARRIVE, || {
            (names.iter().all(|n| copy_of(dev, n).is_some())).then_some(())
        });
    }

    // Listed, with the same facts, and shown as `conflict`, on both.
    let mut losers = std::collections::HashMap::new();
    for dev in [&a, &b] {
        assert_eq!(listed(dev).len(), names.len());
        for n in names {
            let c = copy_of(dev, n).unwrap();
            let loser = c["device"].as_str().unwrap().to_string();
            assert_eq!(*losers.entry(n).or_insert(loser.clone()), loser);
            let copy = Path::new(c["path"].as_str().unwrap());
            let stem = n.trim_end_matches(".txt");
            let file = copy.file_name().unwrap().to_str().unwrap();
            assert!(
                file.starts_with(&format!("{stem} (conflict {loser} ")),
                "{file}"
            );
            assert!(c["time"].as_str().unwrap().ends_with('Z'));
            assert_eq!(c["mount"], Value::String(dev.mnt.display().to_string()));
            wait_content(copy, &edit(&loser, n), ARRIVE);
            wait_content(&dev.path(n), &edit(other(&loser), n), ARRIVE);
            assert_eq!(state(copy), "conflict");
            assert_ne!(state(&dev.path(n)), "conflict");
        }
        assert_eq!(dev.status_json()["conflicts"], names.len());
    }
    let text = stdout(&nimbus_in(&a, &a.mnt, &["conflicts"]));
    assert_eq!(text.lines().count(), names.len(), "{text}");
    let line = text.lines().find(|l| l.contains("(conflict ")).unwrap();
    assert!(line.contains(": conflict copy of "), "{line}");
    assert!(line.ends_with(" UTC"), "{line}");

    // The original of one goes: listed as deleted.
    fs::remove_file(b.path("orphan.txt")).unwrap();
    b.sync();
    wait_for("the deleted original shows", ARRIVE, || {
        copy_of(&a, "orphan.txt").is_none().then_some(())
    });
    let orphan = listed(&a)
        .into_iter()
        .find(|c| c["original"].is_null())
        .expect("the orphan copy, original deleted");
    let orphan_copy = orphan["path"].as_str().unwrap().to_string();
    let text = stdout(&nimbus_in(&a, &a.mnt, &["conflicts"]));
    assert!(text.contains("conflict copy of (deleted),"), "{text}");
    let out = nimbus_in(
        &a,
        &a.mnt,
        &["conflicts", "resolve", &orphan_copy, "--keep", "theirs"],
    );
    assert!(error_line(&out).contains("was deleted"));

    // theirs: the copy goes, the original stays as it is.
    let theirs = copy_of(&a, "theirs.txt").unwrap();
    let theirs_copy = theirs["path"].as_str().unwrap();
    stdout(&nimbus_in(
        &a,
        &a.mnt,
        &["conflicts", "resolve", theirs_copy, "--keep", "theirs"],
    ));
    assert!(fs::symlink_metadata(theirs_copy).is_err());
    let winner = edit(other(&losers["theirs.txt"]), "theirs.txt");
    assert_eq!(fs::read(a.path("theirs.txt")).unwrap(), winner);

    // mine: the copy's version goes into the original file itself.
    let mine = copy_of(&a, "mine.txt").unwrap();
    let mine_copy = mine["path"].as_str().unwrap();
    let ino = fs::metadata(a.path("mine.txt")).unwrap().ino();
    stdout(&nimbus_in(
        &a,
        &a.mnt,
        &["conflicts", "resolve", mine_copy, "--keep", "mine"],
    ));
    assert!(fs::symlink_metadata(mine_copy).is_err());
    let loser = edit(&losers["mine.txt"], "mine.txt");
    assert_eq!(fs::read(a.path("mine.txt")).unwrap(), loser);
    assert_eq!(fs::metadata(a.path("mine.txt")).unwrap().ino(), ino);

    // mine with the original deleted: the copy takes its name back.
    stdout(&nimbus_in(
        &a,
        &a.mnt,
        &["conflicts", "resolve", &orphan_copy, "--keep", "mine"],
    ));
    let orphan_loser = edit(&losers["orphan.txt"], "orphan.txt");
    assert_eq!(fs::read(a.path("orphan.txt")).unwrap(), orphan_loser);
    assert!(fs::symlink_metadata(&orphan_copy).is_err());

    // both, on the other device: the copy stays, as an ordinary file.
    let both = copy_of(&b, "both.txt").unwrap();
    let both_b = Path::new(both["path"].as_str().unwrap()).to_path_buf();
    stdout(&nimbus_in(
        &b,
        &b.mnt,
        &[
            "conflicts",
            "resolve",
            both_b.to_str().unwrap(),
            "--keep",
            "both",
        ],
    ));
    assert_ne!(state(&both_b), "conflict");
    let out = nimbus_in(
        &b,
        &b.mnt,
        &[
            "conflicts",
            "resolve",
            both_b.to_str().unwrap(),
            "--keep",
            "both",
        ],
    );
    assert!(error_line(&out).contains("is not a conflict copy"));

    // Everything reaches the other device.
    a.sync();
    b.sync();
    let both_a = a.mnt.join(both_b.strip_prefix(&b.mnt).unwrap());
    wait_for("B has A's resolutions", ARRIVE, || {
        (fs::read(b.path("mine.txt")).ok()? == loser
            && fs::read(b.path("orphan.txt")).ok()? == orphan_loser
            && fs::read(b.path("theirs.txt")).ok()? == winner
            && listed(&b).is_empty())
        .then_some(())
    });
    wait_for("A has B's resolution", ARRIVE, || {
        (state(&both_a) != "conflict" && listed(&a).is_empty()).then_some(())
    });
    assert_eq!(
        fs::read(&both_a).unwrap(),
        edit(&losers["both.txt"], "both.txt")
    );
    for dev in [&a, &b] {
        assert_eq!(
            stdout(&nimbus_in(dev, &dev.mnt, &["conflicts"])),
            "no conflicts\n"
        );
        assert_eq!(dev.status_json()["conflicts"], 0);
    }
}

#[test]
fn resolve_refuses_what_is_not_a_conflict_copy() {
    let server = Server::start();
    server.add_user("alice", "correct horse");
    let mut a = Device::login(&server, "alice", "correct horse", "laptop");
    a.mount(&[]);
    fs::write(a.path("plain.txt"), b"plain").unwrap();
    assert_eq!(
        stdout(&nimbus_in(&a, &a.mnt, &["conflicts", "--json"])),
        "[]\n"
    );

    let resolve = |path: &Path| {
        nimbus_in(
            &a,
            &a.mnt,
            &[
                "conflicts",
                "resolve",
                path.to_str().unwrap(),
                "--keep",
                "mine",
            ],
        )
    };
    let err = error_line(&resolve(&a.path("plain.txt")));
    assert!(err.contains("plain.txt is not a conflict copy"), "{err}");
    assert_eq!(fs::read(a.path("plain.txt")).unwrap(), b"plain");
    let err = error_line(&resolve(&a.path("missing.txt")));
    assert!(err.contains("missing.txt does not exist"), "{err}");
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().join("elsewhere.txt");
    fs::write(&file, b"x").unwrap();
    let err = error_line(&resolve(&file));
    assert!(err.contains("is not inside a nimbus mount"), "{err}");
    assert!(file.exists());
}

/// A node moved aside because another took its name first — two devices
/// repointing one symlink (`ln -sfn`: a new link renamed over the name),
/// two different files renamed to one name — is a conflict copy too:
/// listed on both devices and resolved like any other, symlinks included
/// (the kernel allows them no `user.*` attributes).
#[test]
fn copies_moved_aside_from_a_taken_name_are_listed_and_resolved() {
    use std::os::unix::fs::symlink;
    let (mut server, a, b) = two_devices();
    symlink("base-target", a.path("link")).unwrap();
    fs::write(a.path("p.txt"), b"p from a").unwrap();
    fs::write(a.path("q.txt"), b"q from a").unwrap();
    a.sync();
    wait_content(&b.path("q.txt"), b"q from a", ARRIVE);

    server.stop();
    for (dev, target) in [(&a, "laptop-target"), (&b, "desktop-target")] {
        symlink(target, dev.path("link.tmp")).unwrap();
        fs::rename(dev.path("link.tmp"), dev.path("link")).unwrap();
    }
    fs::rename(a.path("p.txt"), a.path("same.txt")).unwrap();
    fs::rename(b.path("q.txt"), b.path("same.txt")).unwrap();
    server.restart();
    a.sync();
    b.sync();
    a.sync();

    for dev in [&a, &b] {
        wait_for(
            &format!("both copies listed on {}", dev.name),
            ARRIVE,
            || (copy_of(dev, "link").is_some() && copy_of(dev, "same.txt").is_some()).then_some(()),
        );
    }
    // The symlink copy: kept as an ordinary link beside the original.
    let c = copy_of(&b, "link").unwrap();
    let link_copy = Path::new(c["path"].as_str().unwrap()).to_path_buf();
    assert!(fs::symlink_metadata(&link_copy).unwrap().is_symlink());
    let out = nimbus_in(
        &b,
        &b.mnt,
        &[
            "conflicts",
            "resolve",
            link_copy.to_str().unwrap(),
            "--keep",
            "both",
        ],
    );
    assert!(stdout(&out).starts_with("kept both"));
    assert!(fs::symlink_metadata(&link_copy).unwrap().is_symlink());
    // The renamed file's copy: its content takes the name.
    let c = copy_of(&b, "same.txt").unwrap();
    let file_copy = Path::new(c["path"].as_str().unwrap()).to_path_buf();
    let mine = fs::read(&file_copy).unwrap();
    let out = nimbus_in(
        &b,
        &b.mnt,
        &[
            "conflicts",
            "resolve",
            file_copy.to_str().unwrap(),
            "--keep",
            "mine",
        ],
    );
    stdout(&out);
    b.sync();
    for dev in [&a, &b] {
        wait_for(&format!("no copies left on {}", dev.name), ARRIVE, || {
            listed(dev).is_empty().then_some(())
        });
        wait_content(&dev.path("same.txt"), &mine, ARRIVE);
        let link_name = link_copy.file_name().unwrap();
        let kept = dev.mnt.join(link_name);
        wait_for(&format!("the kept link on {}", dev.name), ARRIVE, || {
            fs::symlink_metadata(&kept).is_ok().then_some(())
        });
    }
}
