//! Pure translations between the core's types and fuser's: errors to
//! errno, node kinds to file types, attributes, and timestamps.
//!
//! # Timestamps
//! The core keeps times as [`Timestamp`] (seconds and nanoseconds, like
//! the kernel's `timespec`), so any time the kernel passes is kept
//! exactly, before 1970 and after 2262 included.

use crate::protocol::{NodeKind, Timestamp};
use crate::vfs::{Attr, VfsError};
use fuser::{Errno, FileAttr, FileType, INodeNo};
use std::time::{SystemTime, UNIX_EPOCH};

/// Maps every core error to an errno. Exhaustive on purpose.
pub fn errno(e: &VfsError) -> Errno {
    use crate::protocol::NameError;
    let code = match e {
        VfsError::NotFound => libc::ENOENT,
        VfsError::Exists => libc::EEXIST,
        VfsError::NotDir => libc::ENOTDIR,
        VfsError::IsDir => libc::EISDIR,
        VfsError::NotEmpty => libc::ENOTEMPTY,
        VfsError::InvalidName(NameError::TooLong) => libc::ENAMETOOLONG,
        VfsError::InvalidName(
            NameError::Empty
            | NameError::Reserved
            | NameError::Slash
            | NameError::Nul
            | NameError::NotUtf8,
        ) => libc::EINVAL,
        VfsError::InvalidArgument(_) => libc::EINVAL,
        VfsError::NotPermitted(_) => libc::EPERM,
        VfsError::TooManyLinks => libc::EMLINK,
        VfsError::ReadOnly => libc::EROFS,
        VfsError::Busy(_) => libc::EBUSY,
        VfsError::NoAttribute => libc::ENODATA,
        VfsError::NotSupported(_) => libc::ENOTSUP,
        VfsError::Range => libc::ERANGE,
        VfsError::TooLarge(_) => libc::E2BIG,
        VfsError::NoSpace(_) => libc::ENOSPC,
        VfsError::Unavailable(_) => libc::EIO,
        VfsError::CorruptManifest(_) => libc::EIO,
        VfsError::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
        VfsError::Store(_) => libc::EIO,
    };
    Errno::from_i32(code)
}

/// The kernel's file type of a node kind.
pub fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

/// A time the kernel sent in `setattr`, exactly.
///
/// The kernel sends `(seconds, nanoseconds)` with the nanoseconds always
/// in `0..1e9`, so 1969-12-31 23:59:59.25 is `(-1, 250_000_000)`. fuser
/// 0.18 (`time::system_time_from_time`) decodes a negative pair as
/// `epoch - (1 s + 0.25 s)` instead of `epoch - 0.75 s`; this undoes that
/// (its decoding is one-to-one, so nothing is lost). The real-mount test
/// `timestamps_far_out_and_before_1970_are_exact` notices if a fuser
/// upgrade fixes it.
pub fn time_from_request(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(_) => Timestamp::from_system_time(t),
        Err(before) => {
            let d = before.duration();
            Timestamp {
                sec: -i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nsec: d.subsec_nanos(),
            }
        }
    }
}

/// The kernel's view of a node's attributes.
pub fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.allocated_bytes.div_ceil(512),
        atime: a.atime.to_system_time(),
        mtime: a.mtime.to_system_time(),
        ctime: a.ctime.to_system_time(),
        crtime: a.btime.to_system_time(),
        kind: file_type(a.kind),
        perm: a.mode as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: 4096,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_corrupt_manifest_is_eio() {
        let e = errno(&VfsError::CorruptManifest("x".into()));
        assert_eq!(e, Errno::from_i32(libc::EIO));
    }

    #[test]
    fn request_times_undo_fusers_negative_decoding() {
        // fuser 0.18 turns the kernel's (-1 s, 250 ms) into epoch - 1.25 s.
        let decoded = UNIX_EPOCH - Duration::new(1, 250_000_000);
        assert_eq!(time_from_request(decoded), Timestamp::from_ns(-750_000_000));
        let decoded = UNIX_EPOCH - Duration::new(315_619_200, 250_000_000);
        assert_eq!(
            time_from_request(decoded),
            Timestamp::from_ns(-315_619_199_750_000_000)
        );
        // Whole seconds and times after 1970 are decoded right already.
        assert_eq!(
            time_from_request(UNIX_EPOCH - Duration::from_secs(7)),
            Timestamp::from_ns(-7_000_000_000)
        );
        assert_eq!(
            time_from_request(UNIX_EPOCH + Duration::new(7, 5)),
            Timestamp::from_ns(7_000_000_005)
        );
        // 2300-01-01 and year 1000: beyond i64 nanoseconds, kept exactly.
        let far = UNIX_EPOCH + Duration::new(10_413_792_000, 3);
        assert_eq!(
            time_from_request(far),
            Timestamp {
                sec: 10_413_792_000,
                nsec: 3
            }
        );
        let past = UNIX_EPOCH - Duration::from_secs(30_610_224_000);
        assert_eq!(time_from_request(past).sec, -30_610_224_000);
    }
}
