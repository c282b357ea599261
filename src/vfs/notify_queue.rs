//! Kernel notifications sent from a thread of their own.
//!
//! Telling the kernel that an inode's pages are stale
//! (`FUSE_NOTIFY_INVAL_INODE`) makes the kernel lock each cached page of
//! the file; a page a read is filling stays locked until this process
//! answers that read. Dropping a name (`FUSE_NOTIFY_INVAL_ENTRY`) likewise
//! waits for the folder's lock, which a lookup in flight holds. So the
//! thread that writes a notification to `/dev/fuse` can wait on any
//! pending request of the mount, and answering those needs the tokio
//! runtime (chunk fetches) and the core's locks. The core applies remote
//! changes on runtime worker threads (the follower, the uploader): sent
//! from there, one notification parked a worker in the kernel until a
//! read it raced with was answered, and that read's chunk request, stuck
//! behind the parked worker, only ended at the HTTP timeout (60 s, then
//! `EIO`).
//!
//! [`NotifyQueue`] takes the calls of the core made on a runtime thread,
//! returns at once, and replays them in order on the
//! `nimbus-kernel-notify` thread, which holds nothing anyone waits for.
//! A call made outside the runtime — a kernel request's own thread,
//! reporting a local change (an access time moved by a read, say) — is
//! sent at once, as before: the caller's next `stat` must already see it,
//! and such a thread waits for nothing the runtime must answer.
//! Invalidations are idempotent, so one sent at once may pass queued ones. Ordering with the core's state is
//! unchanged: a notification was always sent after the change it reports
//! was committed, and a reader that raced ahead of it was always possible;
//! opens after a content change drop the old pages by themselves (their
//! `PageCache`). [`NotifyQueue::flush`] waits until what was queued
//! before it has been sent.

use super::KernelNotifier;
use std::sync::mpsc;
use std::sync::Arc;

enum Call {
    Entry(u64, String),
    Inode(u64),
    Attr(u64),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// A [`KernelNotifier`] that never blocks its caller (see the module docs).
pub struct NotifyQueue {
    tx: mpsc::Sender<Call>,
    inner: Arc<dyn KernelNotifier>,
}

impl NotifyQueue {
    /// Starts the thread that sends `inner`'s notifications. It ends when
    /// the queue is dropped, after sending what was queued.
    pub fn spawn(inner: Arc<dyn KernelNotifier>) -> std::io::Result<NotifyQueue> {
        let (tx, rx) = mpsc::channel::<Call>();
        let sender = inner.clone();
        std::thread::Builder::new()
            .name("nimbus-kernel-notify".into())
            .spawn(move || {
                for call in rx {
                    match call {
                        Call::Entry(parent, name) => sender.inval_entry(parent, &name),
                        Call::Inode(ino) => sender.inval_inode(ino),
                        Call::Attr(ino) => sender.inval_attr(ino),
                        Call::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(NotifyQueue { tx, inner })
    }

    /// True on a thread outside the tokio runtime (see the module docs).
    fn direct() -> bool {
        tokio::runtime::Handle::try_current().is_err()
    }

    fn send(&self, call: Call) {
        // The thread only ends when the queue is dropped.
        let _ = self.tx.send(call);
    }

    /// Resolves once every notification queued before it has been sent.
    pub async fn flush(&self) {
        let (done, sent) = tokio::sync::oneshot::channel();
        self.send(Call::Flush(done));
        let _ = sent.await;
    }
}

impl KernelNotifier for NotifyQueue {
    fn inval_entry(&self, parent: u64, name: &str) {
        match Self::direct() {
            true => self.inner.inval_entry(parent, name),
            false => self.send(Call::Entry(parent, name.to_owned())),
        }
    }
    fn inval_inode(&self, ino: u64) {
        match Self::direct() {
            true => self.inner.inval_inode(ino),
            false => self.send(Call::Inode(ino)),
        }
    }
    fn inval_attr(&self, ino: u64) {
        match Self::direct() {
            true => self.inner.inval_attr(ino),
            false => self.send(Call::Attr(ino)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::time::Duration;

    /// Blocks every call until `open` is sent (like the kernel waiting on
    /// a page a pending read holds), then records it.
    struct Gated {
        gate: Mutex<mpsc::Receiver<()>>,
        seen: Mutex<Vec<String>>,
    }

    impl Gated {
        fn new() -> (Arc<Gated>, mpsc::Sender<()>) {
            let (open, gate) = mpsc::channel();
            let g = Gated {
                gate: Mutex::new(gate),
                seen: Mutex::new(Vec::new()),
            };
            (Arc::new(g), open)
        }
        fn pass(&self, what: String) {
            let _ = self.gate.lock().recv();
            self.seen.lock().push(what);
        }
    }

    impl KernelNotifier for Gated {
        fn inval_entry(&self, parent: u64, name: &str) {
            self.pass(format!("entry {parent} {name}"));
        }
        fn inval_inode(&self, ino: u64) {
            self.pass(format!("inode {ino}"));
        }
        fn inval_attr(&self, ino: u64) {
            self.pass(format!("attr {ino}"));
        }
    }

    #[tokio::test]
    async fn a_blocked_kernel_never_blocks_the_caller_and_order_is_kept() {
        let (kernel, open) = Gated::new();
        let q = NotifyQueue::spawn(kernel.clone()).unwrap();
        // Each returns while the kernel side is stuck on the first.
        q.inval_inode(7);
        q.inval_entry(1, "a");
        q.inval_attr(7);
        assert!(kernel.seen.lock().is_empty());
        for _ in 0..3 {
            open.send(()).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), q.flush())
            .await
            .expect("the queue drains once the kernel answers");
        assert_eq!(*kernel.seen.lock(), ["inode 7", "entry 1 a", "attr 7"]);
    }
}
