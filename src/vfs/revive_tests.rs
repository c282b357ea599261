//! Nodes that come back or move aside on the server must come back here
//! too, also on the device whose own state the server's record seems not
//! to move past: a folder this device deleted that another device's edit
//! inside brought back (edit beats delete), and this device's own node
//! that a pulled twin displaced before the server's answer renamed it.
//! Also a pulled delete that waited for a writer here: it applies when
//! the writer closes. Found by trying two devices as a user would; run on
//! the real server rules ([`two_devices`]).

use super::test_support::{
    names, overwrite, pull, read_all, sync, two_devices, write_file, TwoDevices,
};
use super::*;

/// `name` in folder `dir`, which must exist.
fn child(vfs: &Vfs, dir: u64, name: &str) -> u64 {
    vfs.lookup(dir, name.as_bytes())
        .unwrap_or_else(|e| panic!("{name} in {dir}: {e:?}; has {:?}", names(vfs, dir)))
        .ino
}

#[tokio::test(flavor = "multi_thread")]
async fn a_folder_deleted_here_and_brought_back_by_an_edit_inside_returns_here() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let t = a.mkdir(ROOT_INO, b"t", 0o755).unwrap().ino;
    write_file(&a, t, "f", b"base");
    sync(&a, &ra).await;
    pull(&b, &rb).await;
    let bt = child(&b, ROOT_INO, "t");
    let bf = child(&b, bt, "f");
    assert_eq!(read_all(&b, bf).await, b"base");

    // Concurrently: the laptop removes the whole folder, the desktop
    // edits the file in it.
    a.unlink(t, b"f").unwrap();
    a.rmdir(ROOT_INO, b"t").unwrap();
    overwrite(&b, bf, b"edited on b");
    sync(&a, &ra).await;
    sync(&b, &rb).await;
    pull(&a, &ra).await;

    for vfs in [&a, &b] {
        let t = child(vfs, ROOT_INO, "t");
        assert_eq!(names(vfs, t), vec!["f".to_string()]);
        assert_eq!(read_all(vfs, child(vfs, t, "f")).await, b"edited on b");
    }
    // And it stays a live folder here: later changes inside arrive.
    write_file(&b, bt, "later.txt", b"after");
    sync(&b, &rb).await;
    pull(&a, &ra).await;
    let at = child(&a, ROOT_INO, "t");
    assert_eq!(read_all(&a, child(&a, at, "later.txt")).await, b"after");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_folder_and_one_file_name_created_on_both_keep_both_files_on_both() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let am = a.mkdir(ROOT_INO, b"m", 0o755).unwrap().ino;
    write_file(&a, am, "x", b"from a");
    let bm = b.mkdir(ROOT_INO, b"m", 0o755).unwrap().ino;
    write_file(&b, bm, "x", b"from b");
    sync(&a, &ra).await;
    sync(&b, &rb).await;
    pull(&a, &ra).await;

    let mut seen = Vec::new();
    for vfs in [&a, &b] {
        let m = child(vfs, ROOT_INO, "m");
        let mut got = names(vfs, m);
        got.sort();
        assert_eq!(got.len(), 2, "{} has {got:?}", vfs.device_name);
        assert_eq!(got[0], "x");
        assert!(got[1].starts_with("x (conflict desktop "), "{got:?}");
        let mut contents = Vec::new();
        for n in &got {
            contents.push(read_all(vfs, child(vfs, m, n)).await);
        }
        assert_eq!(contents, vec![b"from a".to_vec(), b"from b".to_vec()]);
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1]);
}

/// A delete pulled while the file is open for writing here waits for the
/// close; the close asks for a pull at once, so the delete applies then,
/// not at the next safety pull 30 s later (found by the retest).
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_waiting_for_a_writer_is_retried_when_it_closes() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    write_file(&a, ROOT_INO, "f", b"base");
    sync(&a, &ra).await;
    pull(&b, &rb).await;
    let bf = child(&b, ROOT_INO, "f");
    let fh = b.open_file(bf, true, false).unwrap();
    a.unlink(ROOT_INO, b"f").unwrap();
    sync(&a, &ra).await;
    pull(&b, &rb).await;
    assert_eq!(
        names(&b, ROOT_INO),
        vec!["f".to_string()],
        "waits for the writer"
    );
    let before = b.status().pull_requested();
    b.release(fh).unwrap();
    assert!(
        b.status().pull_requested() > before,
        "the close asked for a pull"
    );
    pull(&b, &rb).await;
    assert!(names(&b, ROOT_INO).is_empty());
}
