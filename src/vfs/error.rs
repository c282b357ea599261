//! The core's own error type. Each front end (fuse, WinFsp) maps every
//! variant with an exhaustive `match`, so a new variant does not compile
//! until each platform decides what it means.

use crate::protocol::NameError;
use std::sync::Arc;

/// Why an operation failed below the core: a message and, when the
/// failure came from elsewhere (the server, the metadata store), that
/// error as its source, so logs show the whole chain.
#[derive(Clone, Debug)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with `source` as the error it comes from.
    pub fn from_error(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Cause {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Cause {
            message,
            source: None,
        }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid name: {0}")]
    InvalidName(NameError),
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("too many links: a node has at most 65000 names")]
    TooManyLinks,
    #[error("read-only mount")]
    ReadOnly,
    #[error("busy: {0}")]
    Busy(&'static str),
    #[error("no such attribute")]
    NoAttribute,
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    #[error("buffer too small")]
    Range,
    /// An argument over a hard size limit (an extended attribute value
    /// over 64 KiB: E2BIG).
    #[error("too large: {0}")]
    TooLarge(&'static str),
    /// A per-node budget is used up (extended attributes: ENOSPC).
    #[error("no space: {0}")]
    NoSpace(&'static str),
    /// Content is needed from the server and the server cannot give it now
    /// (offline, unauthorized, corrupt): fails promptly instead of hanging.
    #[error("content unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// A file's manifest disagrees with its chunks' verified bytes (a bad
    /// server, a corrupt local record): the read fails, nothing panics.
    #[error("corrupt file record: {0}")]
    CorruptManifest(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The local metadata store failed.
    #[error("metadata store error: {0}")]
    Store(#[source] Cause),
}

impl VfsError {
    /// The error and its sources, on one line (`a: b: c`).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            let m = e.to_string();
            if !out.contains(&m) {
                out.push_str(": ");
                out.push_str(&m);
            }
            cur = e.source();
        }
        out
    }

    /// True for failures of the mount itself (local I/O, the metadata
    /// store, content the server cannot give, a corrupt record), which a
    /// front end logs as warnings; false for the ordinary answers of a file
    /// system (ENOENT, EEXIST, EINVAL, ...), logged at debug level only.
    pub fn is_failure(&self) -> bool {
        match self {
            // Answers given as an errno the core has no variant for
            // (`space`: ENXIO past the end, EBADF for a read-only handle).
            VfsError::Io(e) if matches!(e.raw_os_error(), Some(libc::ENXIO | libc::EBADF)) => false,
            VfsError::Unavailable(_)
            | VfsError::CorruptManifest(_)
            | VfsError::Io(_)
            | VfsError::Store(_) => true,
            VfsError::NotFound
            | VfsError::Exists
            | VfsError::NotDir
            | VfsError::IsDir
            | VfsError::NotEmpty
            | VfsError::InvalidName(_)
            | VfsError::InvalidArgument(_)
            | VfsError::NotPermitted(_)
            | VfsError::TooManyLinks
            | VfsError::ReadOnly
            | VfsError::Busy(_)
            | VfsError::NoAttribute
            | VfsError::NotSupported(_)
            | VfsError::Range
            | VfsError::TooLarge(_)
            | VfsError::NoSpace(_) => false,
        }
    }
}

impl From<NameError> for VfsError {
    fn from(e: NameError) -> Self {
        VfsError::InvalidName(e)
    }
}

impl From<postcard::Error> for VfsError {
    fn from(e: postcard::Error) -> Self {
        VfsError::Store(Cause::from_error("corrupt record", e))
    }
}

pub type VfsResult<T> = Result<T, VfsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_of_the_mount_are_failures() {
        assert!(!VfsError::NotFound.is_failure());
        assert!(!VfsError::InvalidName(NameError::TooLong).is_failure());
        assert!(VfsError::Unavailable("offline".into()).is_failure());
        assert!(VfsError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)).is_failure());
        assert!(VfsError::Store("x".into()).is_failure());
    }

    #[test]
    fn a_cause_keeps_its_source() {
        let io = std::io::Error::other("disk on fire");
        let e = VfsError::Unavailable(Cause::from_error("chunk ab12", io));
        assert_eq!(e.chain(), "content unavailable: chunk ab12: disk on fire");
        let source = std::error::Error::source(&e).unwrap();
        assert!(source.source().is_some(), "the io error is reachable");
    }
}
