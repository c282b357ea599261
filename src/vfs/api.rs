//! One entry point per operation that may have to wait.
//!
//! `read`, `write` and `setattr` answer at once when they can (content in
//! the working copy or the chunk cache, a truncate to zero) and otherwise
//! hand back the future that completes them (chunks to fetch, a working
//! copy to fill). A front end has one helper for every such operation:
//! reply now on [`Answer::Ready`], spawn and reply later on
//! [`Answer::Pending`]; it never blocks a kernel thread on the network,
//! and no front end (nor the model tests) re-implements the two phases.
//! Awaiting an `Answer` (it is `IntoFuture`) gives the result either way.

use super::*;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

/// A boxed future of an operation's result.
pub type Pending<T> = Pin<Box<dyn Future<Output = VfsResult<T>> + Send + 'static>>;

/// An operation's result now, or the future that produces it.
pub enum Answer<T> {
    Ready(VfsResult<T>),
    Pending(Pending<T>),
}

impl<T> Answer<T> {
    /// The result if it was ready.
    pub fn now(self) -> Option<VfsResult<T>> {
        match self {
            Answer::Ready(r) => Some(r),
            Answer::Pending(_) => None,
        }
    }
}

#[cfg(test)]
impl<T> Answer<T> {
    /// The result of an operation a test knows cannot wait (a write to a
    /// new file); panics if it had to.
    pub(crate) fn ready(self) -> VfsResult<T> {
        self.now().expect("the operation had to wait")
    }
}

impl<T: Send + 'static> IntoFuture for Answer<T> {
    type Output = VfsResult<T>;
    type IntoFuture = Pending<T>;
    fn into_future(self) -> Pending<T> {
        match self {
            Answer::Ready(r) => Box::pin(std::future::ready(r)),
            Answer::Pending(f) => f,
        }
    }
}

impl Vfs {
    /// The core as an owned handle, for a future that outlives the call.
    pub(super) fn owned(&self) -> Arc<Vfs> {
        self.me
            .upgrade()
            .expect("a Vfs is only reached through its Arc")
    }

    /// Reads up to `size` bytes at `offset` through handle `fh`: the
    /// version the handle opened (see `OpenState`), empty past its end.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Answer<Vec<u8>> {
        match self.read_now(fh, offset, size) {
            Ok(Some(data)) => Answer::Ready(Ok(data)),
            Err(e) => Answer::Ready(Err(e)),
            Ok(None) => {
                let vfs = self.owned();
                Answer::Pending(Box::pin(async move {
                    vfs.read_fetching(fh, offset, size).await
                }))
            }
        }
    }

    /// Writes `data` at `offset` through handle `fh` (open for writing);
    /// the number of bytes written (all of them).
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Answer<u32> {
        match self.write_now(fh, offset, data) {
            Ok(Some(n)) => Answer::Ready(Ok(n)),
            Err(e) => Answer::Ready(Err(e)),
            Ok(None) => {
                let vfs = self.owned();
                let data = data.to_vec();
                Answer::Pending(Box::pin(async move {
                    let ino = vfs.handle(fh)?.ino;
                    vfs.prepare_write(ino).await?;
                    vfs.write_now(fh, offset, &data)?.ok_or_else(|| {
                        VfsError::Unavailable("the working copy went away; write again".into())
                    })
                }))
            }
        }
    }

    /// Changes attributes; a size change of a file whose content is not
    /// local first fills its working copy.
    pub fn setattr(&self, ino: u64, set: SetAttr) -> Answer<Attr> {
        let ready = match set.size {
            Some(size) => self.write_ready(ino, size == 0),
            None => Ok(true),
        };
        match ready {
            Ok(true) => Answer::Ready(self.setattr_now(ino, set)),
            Err(e) => Answer::Ready(Err(e)),
            Ok(false) => {
                let vfs = self.owned();
                Answer::Pending(Box::pin(async move { vfs.setattr_filling(ino, set).await }))
            }
        }
    }
}
