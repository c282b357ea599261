//! End to end through the kernel: one real server, two devices of one
//! account mounted side by side.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

const ARRIVE: Duration = Duration::from_secs(60);

fn setup() -> (Server, Device, Device) {
    two_devices()
}

#[test]
fn files_of_every_size_arrive_byte_exact() {
    let (_server, a, b) = setup();
    let sizes = [
        0usize,
        1,
        4095,
        4096,
        256 * 1024 - 1,
        1 << 20,
        (3 << 20) + 17,
        64 << 20,
    ];
    let mut expected = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let bytes = data(*size, i as u64);
        let name = format!("f{i}-{size}.bin");
        fs::write(a.path(&name), &bytes).unwrap();
        expected.push((name, bytes));
    }
    a.sync();
    for (name, bytes) in &expected {
        wait_content(&b.path(name), bytes, ARRIVE);
        assert_eq!(
            fs::metadata(b.path(name)).unwrap().len(),
            bytes.len() as u64
        );
    }
}

#[test]
fn nested_folders_and_renames_propagate() {
    let (_server, a, b) = setup();
    fs::create_dir_all(a.path("x/y/z")).unwrap();
    fs::write(a.path("x/y/z/deep.txt"), b"deep").unwrap();
    fs::write(a.path("x/top.txt"), b"top").unwrap();
    std::os::unix::fs::symlink("y/z/deep.txt", a.path("x/link")).unwrap();
    a.sync();
    wait_content(&b.path("x/y/z/deep.txt"), b"deep", ARRIVE);
    assert_eq!(
        fs::read_link(b.path("x/link")).unwrap().to_str(),
        Some("y/z/deep.txt")
    );
    assert_eq!(fs::read(b.path("x/link")).unwrap(), b"deep");

    // Rename on B, edit on A: both arrive on both.
    fs::rename(b.path("x/y"), b.path("x/renamed")).unwrap();
    b.sync();
    wait_content(&a.path("x/renamed/z/deep.txt"), b"deep", ARRIVE);
    wait_for("old name gone on A", ARRIVE, || {
        (!a.path("x/y").exists()).then_some(())
    });

    fs::remove_file(a.path("x/top.txt")).unwrap();
    fs::remove_file(a.path("x/link")).unwrap();
    a.sync();
    wait_for("delete arrives on B", ARRIVE, || {
        (!b.path("x/top.txt").exists() && fs::symlink_metadata(b.path("x/link")).is_err())
            .then_some(())
    });
}

#[test]
fn folder_renamed_while_its_files_upload_keeps_content() {
    let (_server, a, b) = setup();
    fs::create_dir(a.path("batch")).unwrap();
    let mut files = Vec::new();
    for i in 0..20 {
        let bytes = data(300_000 + i * 1000, 100 + i as u64);
        fs::write(a.path(&format!("batch/f{i}")), &bytes).unwrap();
        files.push(bytes);
    }
    // Immediately, before uploads can have drained.
    fs::rename(a.path("batch"), a.path("moved")).unwrap();
    for (i, bytes) in files.iter().enumerate() {
        assert_eq!(&fs::read(a.path(&format!("moved/f{i}"))).unwrap(), bytes);
    }
    a.sync();
    for (i, bytes) in files.iter().enumerate() {
        wait_content(&b.path(&format!("moved/f{i}")), bytes, ARRIVE);
    }
    assert!(!b.path("batch").exists());
}

#[test]
fn open_fd_survives_unlink() {
    let (_server, a, b) = setup();
    let bytes = data(2 << 20, 7);
    fs::write(a.path("doomed"), &bytes).unwrap();
    a.sync();
    wait_content(&b.path("doomed"), &bytes, ARRIVE);

    // Local unlink with an open fd.
    let mut f = fs::File::open(a.path("doomed")).unwrap();
    fs::remove_file(a.path("doomed")).unwrap();
    assert!(!a.path("doomed").exists());
    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(got, bytes);
    assert_eq!(f.metadata().unwrap().nlink(), 0);

    // Remote unlink while B holds an fd opened before it.
    let mut g = fs::File::open(b.path("doomed")).unwrap();
    a.sync();
    wait_for("delete arrives on B", ARRIVE, || {
        (!b.path("doomed").exists()).then_some(())
    });
    let mut got = Vec::new();
    g.seek(SeekFrom::Start(0)).unwrap();
    g.read_to_end(&mut got).unwrap();
    assert_eq!(got, bytes);
}

#[test]
fn copy_of_large_file_is_deduplicated_on_the_server() {
    let (server, a, b) = setup();
    let bytes = data(64 << 20, 42);
    fs::write(a.path("big.bin"), &bytes).unwrap();
    a.sync();
    let before = server.chunk_bytes();
    assert!(
        before >= 60 << 20,
        "server holds {before} bytes after a 64 MiB upload"
    );
    fs::copy(a.path("big.bin"), a.path("copy.bin")).unwrap();
    a.sync();
    let after = server.chunk_bytes();
    assert!(
        after - before < 4 << 20,
        "copy grew server storage by {} bytes",
        after - before
    );
    wait_content(&b.path("copy.bin"), &bytes, ARRIVE);
}

#[test]
fn edits_in_place_and_truncate_propagate() {
    let (_server, a, b) = setup();
    let mut bytes = data(5 << 20, 9);
    fs::write(a.path("edit.bin"), &bytes).unwrap();
    a.sync();
    wait_content(&b.path("edit.bin"), &bytes, ARRIVE);
    // Overwrite a range in the middle on B (needs B to fetch the file).
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(b.path("edit.bin"))
            .unwrap();
        f.seek(SeekFrom::Start(3_000_000)).unwrap();
        f.write_all(b"HELLO FROM B").unwrap();
    }
    bytes[3_000_000..3_000_012].copy_from_slice(b"HELLO FROM B");
    b.sync();
    wait_content(&a.path("edit.bin"), &bytes, ARRIVE);
    // Truncate on A.
    fs::OpenOptions::new()
        .write(true)
        .open(a.path("edit.bin"))
        .unwrap()
        .set_len(1000)
        .unwrap();
    a.sync();
    wait_content(&b.path("edit.bin"), &bytes[..1000], ARRIVE);
    // Path truncate (no open handle) of a file B has in sync, not local.
    b.sync();
    nix::unistd::truncate(&b.path("edit.bin"), 500).unwrap();
    assert_eq!(fs::read(b.path("edit.bin")).unwrap(), &bytes[..500]);
    b.sync();
    wait_content(&a.path("edit.bin"), &bytes[..500], ARRIVE);
}

#[test]
fn bad_names_are_refused_by_the_mount() {
    let (_server, a, _b) = setup();
    let long = "x".repeat(256);
    let err = fs::write(a.path(&long), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
    let err = fs::create_dir(a.path(&"y".repeat(300))).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
    // Nothing was stored.
    assert_eq!(fs::read_dir(&a.mnt).unwrap().count(), 0);
    // Errno basics.
    assert_eq!(
        fs::remove_dir(a.path("missing"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOENT)
    );
    fs::create_dir(a.path("d")).unwrap();
    fs::write(a.path("d/f"), b"1").unwrap();
    assert_eq!(
        fs::remove_dir(a.path("d")).unwrap_err().raw_os_error(),
        Some(libc::ENOTEMPTY)
    );
    assert_eq!(
        fs::create_dir(a.path("d")).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
    assert_eq!(
        fs::rename(a.path("d"), a.path("d/f/inside"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTDIR)
    );
}

#[test]
fn inode_numbers_and_content_survive_remount() {
    let (_server, mut a, _b) = setup();
    fs::create_dir(a.path("keep")).unwrap();
    let bytes = data(1 << 20, 5);
    fs::write(a.path("keep/file"), &bytes).unwrap();
    let ino_dir = fs::metadata(a.path("keep")).unwrap().ino();
    let ino_file = fs::metadata(a.path("keep/file")).unwrap().ino();
    a.unmount();
    assert!(!is_mounted(&a.mnt));
    a.mount(&[]);
    assert_eq!(fs::metadata(a.path("keep")).unwrap().ino(), ino_dir);
    assert_eq!(fs::metadata(a.path("keep/file")).unwrap().ino(), ino_file);
    assert_eq!(fs::read(a.path("keep/file")).unwrap(), bytes);
    a.sync();
}

#[test]
fn fsync_remote_returns_once_the_server_has_the_file() {
    let server = Server::start();
    server.add_user("dora", "pw-dora-123");
    let mut a = Device::login(&server, "dora", "pw-dora-123", "a");
    let mut b = Device::login(&server, "dora", "pw-dora-123", "b");
    a.mount(&["--fsync", "remote"]);
    b.mount(&[]);
    let bytes = data(1_500_000, 77);
    let mut f = fs::File::create(a.path("journal.db")).unwrap();
    f.write_all(&bytes).unwrap();
    // Still open for writing: fsync must not wait for close.
    f.sync_all().expect("fsync --remote");
    // The server has it now: B sees it while A still holds the file open.
    wait_content(&b.path("journal.db"), &bytes, ARRIVE);
    drop(f);
}

/// Client-core scenario 3: a process holding a file open through a local
/// edit and a later remote edit keeps reading the version it had (never
/// the one before the local edit), new opens read the newest, and once it
/// closes no older page is served again.
#[test]
fn an_open_reader_keeps_its_version_and_new_opens_see_the_newest() {
    let (_server, a, b) = setup();
    // Versions of one length: a file's size is one per inode, not per
    // open file (README, limits).
    fs::write(a.path("doc.txt"), b"version zero").unwrap();
    a.sync();
    wait_content(&b.path("doc.txt"), b"version zero", ARRIVE);
    let read_from_start = |f: &mut fs::File| {
        let mut out = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut out).unwrap();
        out
    };
    let mut p = fs::File::open(a.path("doc.txt")).unwrap();
    assert_eq!(read_from_start(&mut p), b"version zero");
    fs::write(a.path("doc.txt"), b"version one!").unwrap();
    assert_eq!(read_from_start(&mut p), b"version one!");
    a.sync();
    wait_content(&b.path("doc.txt"), b"version one!", ARRIVE);
    fs::write(b.path("doc.txt"), b"version two!").unwrap();
    b.sync();
    wait_content(&a.path("doc.txt"), b"version two!", ARRIVE);
    assert_eq!(read_from_start(&mut p), b"version one!");
    // A shared mapping of a new open works meanwhile and shows the newest.
    assert_eq!(map_shared(&a.path("doc.txt")), b"version two!");
    drop(p);
    for _ in 0..3 {
        assert_eq!(fs::read(a.path("doc.txt")).unwrap(), b"version two!");
    }
}

/// The bytes of `path` through a shared, read-only memory mapping.
fn map_shared(path: &std::path::Path) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: a fresh read-only shared mapping of `len` bytes of an open
    // file, read and unmapped before the file is closed.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let out = std::slice::from_raw_parts(p as *const u8, len).to_vec();
        libc::munmap(p, len);
        out
    }
}
