//! Field-by-field conflicts end to end (issue 9): two devices of one
//! account mounted against a real server, each changing the same node
//! while the server is down (so that both changes are concurrent for
//! sure), then the server back: each field keeps the change made to it,
//! and only content against content makes a conflict copy.
//! (`conflicts_mount.rs` tests listing and resolving those copies.)

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_rename_and_an_edit_of_one_file_both_apply_without_a_copy() {
    let (mut server, a, b) = two_devices();
    fs::write(a.path("g.txt"), b"original").unwrap();
    a.sync();
    wait_content(&b.path("g.txt"), b"original", ARRIVE);

    server.stop();
    fs::rename(a.path("g.txt"), a.path("h.txt")).unwrap();
    fs::write(b.path("g.txt"), b"edited on b").unwrap();
    restart_and_sync(&mut server, &a, &b);

    for dev in [&a, &b] {
        wait_names(dev, "", &["h.txt"]);
        wait_content(&dev.path("h.txt"), b"edited on b", ARRIVE);
    }
}

#[test]
fn a_chmod_and_a_rename_of_one_file_both_apply() {
    let (mut server, a, b) = two_devices();
    fs::write(a.path("g.txt"), b"content").unwrap();
    fs::set_permissions(a.path("g.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    a.sync();
    wait_content(&b.path("g.txt"), b"content", ARRIVE);

    server.stop();
    fs::set_permissions(a.path("g.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(b.path("g.txt"), b.path("h.txt")).unwrap();
    restart_and_sync(&mut server, &a, &b);

    for dev in [&a, &b] {
        wait_names(dev, "", &["h.txt"]);
        let path = dev.path("h.txt");
        wait_for(&format!("mode 600 on {}", dev.name), ARRIVE, || {
            (mode_of(&path) == 0o600).then_some(())
        });
        assert_eq!(fs::read(&path).unwrap(), b"content");
    }
}

#[test]
fn the_same_file_created_on_both_devices_is_one_file() {
    let (mut server, a, b) = two_devices();
    server.stop();
    let bytes = data(300_000, 9);
    fs::write(a.path("same.txt"), &bytes).unwrap();
    fs::write(b.path("same.txt"), &bytes).unwrap();
    restart_and_sync(&mut server, &a, &b);

    for dev in [&a, &b] {
        wait_names(dev, "", &["same.txt"]);
        wait_content(&dev.path("same.txt"), &bytes, ARRIVE);
    }
}

#[test]
fn the_same_folder_created_on_both_devices_is_one_folder_with_both_files() {
    let (mut server, a, b) = two_devices();
    server.stop();
    fs::create_dir(a.path("photos")).unwrap();
    fs::write(a.path("photos/a.jpg"), b"from a").unwrap();
    fs::create_dir(b.path("photos")).unwrap();
    fs::write(b.path("photos/b.jpg"), b"from b").unwrap();
    restart_and_sync(&mut server, &a, &b);

    for dev in [&a, &b] {
        wait_names(dev, "", &["photos"]);
        wait_names(dev, "photos", &["a.jpg", "b.jpg"]);
        wait_content(&dev.path("photos/a.jpg"), b"from a", ARRIVE);
        wait_content(&dev.path("photos/b.jpg"), b"from b", ARRIVE);
    }
}

#[test]
fn content_against_content_keeps_the_original_and_a_conflict_copy() {
    let (mut server, a, b) = two_devices();
    fs::write(a.path("c.txt"), b"original").unwrap();
    a.sync();
    wait_content(&b.path("c.txt"), b"original", ARRIVE);

    server.stop();
    fs::write(a.path("c.txt"), b"edited on a").unwrap();
    fs::write(b.path("c.txt"), b"edited on b").unwrap();
    restart_and_sync(&mut server, &a, &b);

    let mut seen = Vec::new();
    for dev in [&a, &b] {
        let got = wait_for(&format!("a copy on {}", dev.name), ARRIVE, || {
            let got = names(&dev.mnt);
            (got.len() == 2 && got.contains(&"c.txt".to_string())).then_some(got)
        });
        let copy = got.iter().find(|n| *n != "c.txt").unwrap().clone();
        assert!(copy.starts_with("c (conflict "), "{copy}");
        let mut contents = vec![
            fs::read(dev.path("c.txt")).unwrap(),
            fs::read(dev.path(&copy)).unwrap(),
        ];
        contents.sort();
        assert_eq!(
            contents,
            vec![b"edited on a".to_vec(), b"edited on b".to_vec()],
            "both edits are kept on {}",
            dev.name
        );
        seen.push((got, fs::read(dev.path("c.txt")).unwrap()));
    }
    assert_eq!(seen[0], seen[1], "both devices show the same");
}
