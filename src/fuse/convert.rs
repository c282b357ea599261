//! Pure translations between the core's types and fuser's: errors to
//! errno, node kinds to file types, attributes, and timestamps.
//!
//! # Timestamps
//! The core (and the server) store times as `i64` nanoseconds since the
//! Unix epoch, which covers 1677-09-21 00:12:43.145224192 to
//! 2262-04-11 23:47:16.854775807 UTC. A time set outside that range (say
//! `touch -d 2300-01-01`) is clamped to the nearest end, as ext4 clamps
//! times beyond its own range, instead of wrapping into some other date
//! that would then sync to every device. Times before 1970 are negative
//! and kept exactly, in both directions.

use crate::protocol::NodeKind;
use crate::vfs::{Attr, VfsError};
use fuser::{Errno, FileAttr, FileType, INodeNo};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i128 = 1_000_000_000;

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
        VfsError::ReadOnly => libc::EROFS,
        VfsError::Busy(_) => libc::EBUSY,
        VfsError::NoAttribute => libc::ENODATA,
        VfsError::NotSupported(_) => libc::ENOTSUP,
        VfsError::Range => libc::ERANGE,
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
    }
}

/// Nanoseconds since the epoch (negative before 1970) as a `SystemTime`.
pub fn system_time_from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// A `SystemTime` as nanoseconds since the epoch, clamped to what `i64`
/// holds (see the module docs) instead of wrapping.
pub fn ns_from_system_time(t: SystemTime) -> i64 {
    let ns = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).unwrap_or(i128::MAX),
        Err(before) => -i128::try_from(before.duration().as_nanos()).unwrap_or(i128::MAX),
    };
    clamp_ns(ns)
}

/// A time the kernel sent in `setattr`, as nanoseconds since the epoch,
/// clamped like [`ns_from_system_time`].
///
/// The kernel sends `(seconds, nanoseconds)` with the nanoseconds always
/// in `0..1e9`, so 1969-12-31 23:59:59.25 is `(-1, 250_000_000)`. fuser
/// 0.18 (`time::system_time_from_time`) decodes a negative pair as
/// `epoch - (1 s + 0.25 s)` instead of `epoch - 0.75 s`; this undoes that
/// (its decoding is one-to-one, so nothing is lost). The real-mount test
/// `timestamps_out_of_range_clamp_and_before_1970_are_exact` notices if a
/// fuser upgrade fixes it.
pub fn ns_from_request_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(_) => ns_from_system_time(t),
        Err(before) => {
            let d = before.duration();
            clamp_ns(-i128::from(d.as_secs()) * NANOS_PER_SEC + i128::from(d.subsec_nanos()))
        }
    }
}

fn clamp_ns(ns: i128) -> i64 {
    ns.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The kernel's view of a node's attributes.
pub fn file_attr(a: &Attr, uid: u32, gid: u32) -> FileAttr {
    let t = system_time_from_ns(a.mtime_ns);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.local_bytes.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: system_time_from_ns(a.ctime_ns),
        crtime: t,
        kind: file_type(a.kind),
        perm: a.mode as u16,
        nlink: a.nlink,
        uid,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nanos)
        } else {
            UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nanos)
        }
    }

    #[test]
    fn a_corrupt_manifest_is_eio() {
        let e = errno(&VfsError::CorruptManifest("x".into()));
        assert_eq!(e, Errno::from_i32(libc::EIO));
    }

    #[test]
    fn far_future_clamps_instead_of_wrapping() {
        // 2300-01-01: beyond i64 nanoseconds.
        assert_eq!(ns_from_system_time(at(10_413_792_000, 0)), i64::MAX);
        assert_eq!(ns_from_request_time(at(10_413_792_000, 0)), i64::MAX);
        // The largest representable time is exact.
        let max = system_time_from_ns(i64::MAX);
        assert_eq!(ns_from_system_time(max), i64::MAX);
        assert_eq!(ns_from_system_time(max + Duration::from_nanos(1)), i64::MAX);
    }

    #[test]
    fn far_past_clamps() {
        let min = system_time_from_ns(i64::MIN);
        assert_eq!(ns_from_system_time(min), i64::MIN);
        assert_eq!(ns_from_system_time(min - Duration::from_secs(1)), i64::MIN);
        // Year 1000.
        assert_eq!(ns_from_system_time(at(-30_610_224_000, 0)), i64::MIN);
        assert_eq!(
            ns_from_request_time(UNIX_EPOCH - Duration::from_secs(30_610_224_000)),
            i64::MIN
        );
    }

    #[test]
    fn before_1970_round_trips() {
        for ns in [
            -1,
            -250_000_000,
            -1_000_000_000,
            -315_619_199_750_000_000, // 1960-01-01 00:00:00.25
            i64::MIN,
            0,
            1,
            i64::MAX,
        ] {
            assert_eq!(ns_from_system_time(system_time_from_ns(ns)), ns, "{ns}");
        }
        assert_eq!(
            ns_from_system_time(at(-315_619_200, 250_000_000)),
            -315_619_199_750_000_000
        );
    }

    #[test]
    fn request_times_undo_fusers_negative_decoding() {
        // fuser 0.18 turns the kernel's (-1 s, 250 ms) into epoch - 1.25 s.
        let decoded = UNIX_EPOCH - Duration::new(1, 250_000_000);
        assert_eq!(ns_from_request_time(decoded), -750_000_000);
        let decoded = UNIX_EPOCH - Duration::new(315_619_200, 250_000_000);
        assert_eq!(ns_from_request_time(decoded), -315_619_199_750_000_000);
        // Whole seconds and times after 1970 are decoded right already.
        assert_eq!(
            ns_from_request_time(UNIX_EPOCH - Duration::from_secs(7)),
            -7_000_000_000
        );
        assert_eq!(
            ns_from_request_time(UNIX_EPOCH + Duration::new(7, 5)),
            7_000_000_005
        );
    }
}
