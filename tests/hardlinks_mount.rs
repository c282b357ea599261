//! Hard links through real mounts (issue 6): `ln`, stat through every
//! name, fstat of an open file after its last name is gone, renames and
//! removals of one name, `cp -al` and `tar`, remounts, and links
//! travelling between two devices. The core's half is
//! `src/vfs/link_tests.rs`.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ARRIVE: Duration = Duration::from_secs(60);

fn ino_nlink(p: &Path) -> (u64, u64) {
    let m = fs::metadata(p).unwrap();
    (m.ino(), m.nlink())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn one_device_links_like_ext4() {
    let server = Server::start();
    server.add_user("u", "pw-links-1");
    let mut dev = Device::login(&server, "u", "pw-links-1", "a");
    dev.mount(&[]);
    let m = dev.mnt.clone();

    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("f"), b"hello").unwrap();
    fs::hard_link(m.join("f"), m.join("d/g")).unwrap();
    let (ino, nlink) = ino_nlink(&m.join("f"));
    assert_eq!(nlink, 2);
    assert_eq!(ino_nlink(&m.join("d/g")), (ino, 2));
    // A folder's link count ignores files; a folder cannot be linked.
    assert_eq!(fs::metadata(m.join("d")).unwrap().nlink(), 2);
    let code = |r: std::io::Result<()>| r.unwrap_err().raw_os_error().unwrap();
    assert_eq!(code(fs::hard_link(m.join("d"), m.join("d2"))), libc::EPERM);
    assert_eq!(
        code(fs::hard_link(m.join("f"), m.join("d/g"))),
        libc::EEXIST
    );

    // A write through one name is read through the other.
    fs::OpenOptions::new()
        .append(true)
        .open(m.join("d/g"))
        .unwrap()
        .write_all(b" world")
        .unwrap();
    assert_eq!(fs::read(m.join("f")).unwrap(), b"hello world");

    // rename(2) of one link over another of the same inode: success,
    // nothing changes (POSIX).
    fs::hard_link(m.join("f"), m.join("h")).unwrap();
    fs::rename(m.join("f"), m.join("h")).unwrap();
    assert_eq!(ino_nlink(&m.join("f")), (ino, 3));
    assert_eq!(ino_nlink(&m.join("h")), (ino, 3));
    // Renaming a link moves that name only.
    fs::rename(m.join("h"), m.join("d/h2")).unwrap();
    assert_eq!(ino_nlink(&m.join("d/h2")), (ino, 3));
    assert!(m.join("f").exists());

    // rm of one name keeps the others.
    fs::remove_file(m.join("f")).unwrap();
    assert!(!m.join("f").exists());
    assert_eq!(ino_nlink(&m.join("d/g")), (ino, 2));

    // The last name goes while a file is open: fstat says 0 links, and
    // the descriptor still reads and writes.
    let mut open = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.join("d/g"))
        .unwrap();
    fs::remove_file(m.join("d/g")).unwrap();
    assert_eq!(open.metadata().unwrap().nlink(), 1);
    fs::remove_file(m.join("d/h2")).unwrap();
    assert_eq!(open.metadata().unwrap().nlink(), 0);
    open.seek(SeekFrom::End(0)).unwrap();
    open.write_all(b"!").unwrap();
    open.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    open.read_to_string(&mut back).unwrap();
    assert_eq!(back, "hello world!");
    drop(open);

    // cp -al makes a tree of links; tar keeps them through a round trip.
    fs::create_dir_all(m.join("src/b")).unwrap();
    fs::write(m.join("src/a"), b"a").unwrap();
    fs::write(m.join("src/b/c"), b"c").unwrap();
    run(Command::new("cp")
        .arg("-al")
        .arg(m.join("src"))
        .arg(m.join("dst")));
    for rel in ["a", "b/c"] {
        let (i, n) = ino_nlink(&m.join("src").join(rel));
        assert_eq!(ino_nlink(&m.join("dst").join(rel)), (i, n));
        assert_eq!(n, 2, "{rel}");
    }
    let out = tempfile::tempdir().unwrap();
    let tar = out.path().join("t.tar");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&m)
        .args(["src", "dst"]));
    fs::create_dir(m.join("x")).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(m.join("x")));
    let (i, n) = ino_nlink(&m.join("x/src/b/c"));
    assert_eq!(ino_nlink(&m.join("x/dst/b/c")), (i, 2));
    assert_eq!(n, 2);
    assert_eq!(fs::read(m.join("x/dst/b/c")).unwrap(), b"c");

    // Everything holds across a remount.
    dev.sync();
    let a_ino = ino_nlink(&m.join("src/a")).0;
    dev.unmount();
    dev.mount(&[]);
    assert_eq!(ino_nlink(&m.join("src/a")), (a_ino, 2));
    assert_eq!(ino_nlink(&m.join("dst/a")), (a_ino, 2));
    assert_eq!(fs::read(m.join("dst/a")).unwrap(), b"a");
}

#[test]
fn links_travel_between_two_devices_and_survive_a_remount() {
    let (_server, a, mut b) = two_devices();

    fs::create_dir(a.path("d")).unwrap();
    let bytes = data(300_000, 7);
    fs::write(a.path("f.bin"), &bytes).unwrap();
    fs::hard_link(a.path("f.bin"), a.path("d/g.bin")).unwrap();
    a.sync();

    // B: two names, one inode, nlink 2, the same content.
    wait_for("the link on B", ARRIVE, || {
        let g = fs::metadata(b.path("d/g.bin")).ok()?;
        (g.nlink() == 2).then_some(())
    });
    let (ino, nlink) = ino_nlink(&b.path("f.bin"));
    assert_eq!(
        (ino, nlink),
        (fs::metadata(b.path("d/g.bin")).unwrap().ino(), 2)
    );
    wait_content(&b.path("d/g.bin"), &bytes, ARRIVE);
    assert_eq!(fs::read(b.path("f.bin")).unwrap(), bytes);

    // Unlink on B reaches A, which keeps the other name.
    fs::remove_file(b.path("f.bin")).unwrap();
    b.sync();
    wait_for("the unlink on A", ARRIVE, || {
        (!a.path("f.bin").exists()).then_some(())
    });
    wait_for("nlink 1 on A", ARRIVE, || {
        (fs::metadata(a.path("d/g.bin")).ok()?.nlink() == 1).then_some(())
    });
    assert_eq!(fs::read(a.path("d/g.bin")).unwrap(), bytes);

    // A new link on A, then B remounted: still one inode with two names.
    fs::hard_link(a.path("d/g.bin"), a.path("again.bin")).unwrap();
    a.sync();
    wait_for("the new link on B", ARRIVE, || {
        (fs::metadata(b.path("again.bin")).ok()?.nlink() == 2).then_some(())
    });
    b.unmount();
    b.mount(&[]);
    let (i1, n1) = ino_nlink(&b.path("again.bin"));
    assert_eq!(ino_nlink(&b.path("d/g.bin")), (i1, 2));
    assert_eq!(n1, 2);
    assert_eq!(fs::read(b.path("again.bin")).unwrap(), bytes);
}
