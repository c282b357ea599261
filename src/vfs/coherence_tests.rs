//! Scenario 3 of the client-core issue: a reader never goes back in time.
//! An open file keeps reading the version it opened (with this device's
//! own writes) until it is closed; a new open reads the newest; the kernel
//! is told which pages are stale.

use super::test_support::{overwrite, two_devices, TwoDevices};
use super::*;
use crate::sync::follower::Follower;
use crate::sync::uploader::Uploader;

#[derive(Default)]
struct Recorder(Mutex<Vec<u64>>);

impl KernelNotifier for Recorder {
    fn inval_entry(&self, _parent: u64, _name: &str) {}
    fn inval_inode(&self, ino: u64) {
        self.0.lock().push(ino);
    }
}

async fn read(vfs: &Vfs, fh: u64) -> Vec<u8> {
    vfs.read(fh, 0, 1 << 20).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_file_keeps_its_version_and_new_opens_see_the_newest() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let kernel = Arc::new(Recorder::default());
    a.set_notifier(kernel.clone()).unwrap();
    let (up_a, up_b) = (
        Uploader::new(a.clone(), ra.clone()),
        Uploader::new(b.clone(), rb.clone()),
    );

    let (attr, fh) = a.create(ROOT_INO, b"f", 0o644, true).unwrap();
    a.write(fh, 0, b"v0").ready().unwrap();
    a.release(fh).unwrap();
    let ino = attr.ino;
    while up_a.run_once().await.unwrap() {}

    // P opens v0; a local edit (v1) is visible to it, as on a local disk.
    let p = a.open_file(ino, false, false).unwrap();
    assert_eq!(read(&a, p).await, b"v0");
    overwrite(&a, ino, b"v1");
    assert_eq!(read(&a, p).await, b"v1");
    while up_a.run_once().await.unwrap() {}

    // Another device saves v2; it arrives here while P is open.
    Follower::new(b.clone(), rb.clone())
        .pull_all()
        .await
        .unwrap();
    let on_b = b.lookup(ROOT_INO, b"f").unwrap().ino;
    overwrite(&b, on_b, b"v2");
    while up_b.run_once().await.unwrap() {}
    kernel.0.lock().clear();
    Follower::new(a.clone(), ra.clone())
        .pull_all()
        .await
        .unwrap();
    a.kernel_notified().await;
    assert!(
        kernel.0.lock().contains(&ino),
        "the kernel must drop the pages"
    );

    // P keeps reading v1, never v0; a new open reads v2, past the pages P
    // may still fill.
    assert_eq!(read(&a, p).await, b"v1");
    let q = a.open_file(ino, false, false).unwrap();
    assert_eq!(a.page_cache(q).unwrap(), PageCache::Bypass);
    assert_eq!(read(&a, q).await, b"v2");
    assert_eq!(read(&a, p).await, b"v1");
    a.release(p).unwrap();
    a.release(q).unwrap();

    // Once the old reader is gone, the next open drops the old pages once.
    let r = a.open_file(ino, false, false).unwrap();
    assert_eq!(a.page_cache(r).unwrap(), PageCache::Drop);
    assert_eq!(read(&a, r).await, b"v2");
    a.release(r).unwrap();
    let s = a.open_file(ino, false, false).unwrap();
    assert_eq!(a.page_cache(s).unwrap(), PageCache::Keep);
    assert_eq!(read(&a, s).await, b"v2");
    a.release(s).unwrap();
}

/// Like the kernel invalidating a page a pending read holds locked: every
/// notification waits until `open` is dropped (or `WATCHDOG` passes, so a
/// test that breaks this fails instead of hanging).
struct PageLocked {
    gate: Mutex<std::sync::mpsc::Receiver<()>>,
    timed_out: std::sync::atomic::AtomicBool,
    seen: Mutex<Vec<u64>>,
}

const WATCHDOG: std::time::Duration = std::time::Duration::from_secs(20);

impl KernelNotifier for PageLocked {
    fn inval_entry(&self, _parent: u64, _name: &str) {}
    fn inval_inode(&self, ino: u64) {
        let waited = self.gate.lock().recv_timeout(WATCHDOG);
        if waited == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            self.timed_out.store(true, Ordering::SeqCst);
        }
        self.seen.lock().push(ino);
    }
}

/// The hang of busy readers: a remote change applied on a runtime thread
/// told the kernel in place, and the kernel made that thread wait for a
/// read the runtime had to answer. Applying a change never waits on the
/// kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_remote_change_never_waits_for_the_kernel() {
    let (TwoDevices { ra, rb, a, b, .. }, _held) = two_devices().await;
    let (open, gate) = std::sync::mpsc::channel();
    let kernel = Arc::new(PageLocked {
        gate: Mutex::new(gate),
        timed_out: Default::default(),
        seen: Mutex::new(Vec::new()),
    });
    a.set_notifier(kernel.clone()).unwrap();
    let (up_a, up_b) = (
        Uploader::new(a.clone(), ra.clone()),
        Uploader::new(b.clone(), rb.clone()),
    );
    let (attr, fh) = a.create(ROOT_INO, b"f", 0o644, true).unwrap();
    a.write(fh, 0, b"v0").ready().unwrap();
    a.release(fh).unwrap();
    while up_a.run_once().await.unwrap() {}
    Follower::new(b.clone(), rb.clone())
        .pull_all()
        .await
        .unwrap();
    let on_b = b.lookup(ROOT_INO, b"f").unwrap().ino;
    overwrite(&b, on_b, b"v1");
    while up_b.run_once().await.unwrap() {}

    Follower::new(a.clone(), ra.clone())
        .pull_all()
        .await
        .unwrap();
    assert!(
        !kernel.timed_out.load(Ordering::SeqCst),
        "applying the change waited for the kernel"
    );
    // The kernel answers; the notification arrives.
    drop(open);
    a.kernel_notified().await;
    assert!(kernel.seen.lock().contains(&attr.ino));
}
