//! Unit tests of the parts that own in-memory state, each on its own (no
//! metadata store, no server): `InodeTable`, `OpenFiles`, `SyncStatus`,
//! and the namespace guard's ownership check.

use super::inodes::InodeTable;
use super::open_files::{Handle, OpenFiles};
use super::*;

#[test]
fn lookup_counts_follow_remember_and_forget() {
    let t = InodeTable::new();
    assert!(!t.is_referenced(7));
    t.remember(7);
    t.remember(7);
    t.remember(7);
    assert!(!t.forget(7, 2), "one reference is left");
    assert!(t.is_referenced(7));
    assert!(t.forget(7, 1));
    assert!(!t.is_referenced(7));
    // Forgetting more than was looked up (or an unknown inode) ends at 0.
    t.remember(8);
    assert!(t.forget(8, 5));
    assert!(t.forget(9, 1));
}

#[test]
fn tombstones_wait_for_the_cursor_to_pass_their_sequence() {
    let t = InodeTable::new();
    t.wait_for_cursor(10, 100);
    t.wait_for_cursor(20, 200);
    t.wait_for_cursor(10, 101);
    assert!(t.cursor_reached(9).is_empty());
    let mut due = t.cursor_reached(10);
    due.sort();
    assert_eq!(due, [100, 101]);
    assert!(t.cursor_reached(19).is_empty(), "handed out only once");
    assert_eq!(t.cursor_reached(u64::MAX - 1), [200]);
}

fn handle(ino: u64, write: bool) -> Handle {
    Handle {
        ino,
        write,
        generation: 0,
        content: None,
        last_end: AtomicU64::new(u64::MAX),
    }
}

#[test]
fn open_state_lives_while_referenced() {
    let f = OpenFiles::new();
    assert!(!f.is_open(5));
    let a = f.acquire(5);
    let b = f.acquire(5);
    assert!(Arc::ptr_eq(&a, &b), "one open state per inode");
    a.state.lock().writers += 1;
    assert!(f.has_writers(5));
    assert!(!f.release(5, &a));
    assert!(f.is_open(5), "still referenced");
    a.state.lock().work = Some(Arc::new(tempfile::tempfile().unwrap()));
    assert!(f.release(5, &b), "last reference, with a working copy");
    assert!(!f.is_open(5));
    assert!(f.get(5).is_none());
    assert!(!f.has_writers(5));
}

#[test]
fn file_handles_are_distinct_and_removed_once() {
    let f = OpenFiles::new();
    let h1 = f.add_handle(handle(5, true));
    let h2 = f.add_handle(handle(6, false));
    assert_ne!(h1, h2);
    assert_eq!(f.handle(h1).unwrap().ino, 5);
    assert!(f.handle(h2).is_some_and(|h| !h.write));
    assert!(f.remove_handle(h1).is_some());
    assert!(f.remove_handle(h1).is_none());
    assert!(f.handle(h1).is_none());
}

#[test]
fn stale_pages_and_fsync_waiters_are_counted_per_inode() {
    let f = OpenFiles::new();
    assert!(!f.take_stale(3));
    f.mark_stale(3);
    assert!(f.take_stale(3));
    assert!(!f.take_stale(3), "dropped once");
    f.begin_fsync_wait(3);
    f.begin_fsync_wait(3);
    f.end_fsync_wait(3);
    assert!(f.fsync_waiting(3), "one waiter left");
    f.end_fsync_wait(3);
    assert!(!f.fsync_waiting(3));
    f.end_fsync_wait(3);
    assert!(!f.fsync_waiting(3));
}

#[test]
fn sync_status_keeps_a_pause_until_an_upload_goes_through() {
    let s = SyncStatus::default();
    assert_eq!(s.snapshot().connection, Connection::Offline);
    s.set_connection(Connection::Misconfigured("413 from a proxy".into()));
    s.note_pulled();
    assert!(
        matches!(s.snapshot().connection, Connection::Misconfigured(_)),
        "a pull says nothing about upload bodies"
    );
    s.note_uploaded();
    assert_eq!(s.snapshot().connection, Connection::Online);
    assert!(s.snapshot().last_sync_unix.is_some());
    s.set_connection(Connection::Unauthorized("refresh refused".into()));
    s.note_pulled();
    assert_eq!(s.snapshot().connection, Connection::Online);
    s.note_conflict();
    s.note_conflict();
    assert_eq!(s.snapshot().conflicts, 2);
    assert!(s.set_waiting_remote(3));
    assert!(!s.set_waiting_remote(3));
}

#[test]
fn upload_progress_is_per_file_and_cleared_with_its_round() {
    let s = SyncStatus::default();
    s.note_upload_progress(4, 1000);
    s.note_upload_progress(4, 24);
    s.note_upload_progress(5, 7);
    assert_eq!(s.uploaded_so_far(4), 1024);
    s.clear_upload_progress(&[4]);
    assert_eq!(s.uploaded_so_far(4), 0);
    assert_eq!(s.uploaded_so_far(5), 7);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "namespace guard of another metadata store")]
fn a_guard_of_another_store_is_refused() {
    let a = MetaCache::open(Arc::new(super::test_support::CrashKv::default())).unwrap();
    let b = MetaCache::open(Arc::new(super::test_support::CrashKv::default())).unwrap();
    let ns = a.lock_ns();
    let _ = b.txn(&ns);
}
