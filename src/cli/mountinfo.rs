//! Reading `/proc/self/mountinfo`: which folders are mounted, and which of
//! them are Nimbus mounts.
//!
//! A Nimbus mount shows up with fstype `fuse.nimbus` (when mounted through
//! fusermount3 with subtype `nimbus`) or fstype `fuse` with source `nimbus`
//! (when mounted directly with the FUSE option `fsname=nimbus`).

use anyhow::{Context, Result};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo (the fields we use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    pub fn is_nimbus(&self) -> bool {
        self.fstype == "fuse.nimbus" || (self.fstype.starts_with("fuse") && self.source == "nimbus")
    }
}

/// The current mount table of this process's mount namespace.
pub fn read_mounts() -> Result<Vec<MountEntry>> {
    let text = std::fs::read(MOUNTINFO).with_context(|| format!("cannot read {MOUNTINFO}"))?;
    Ok(parse_mountinfo(&text))
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let sep = fields.iter().position(|f| *f == b"-")?;
            if sep < 6 || fields.len() < sep + 3 {
                return None;
            }
            Some(MountEntry {
                mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
                fstype: String::from_utf8_lossy(&unescape(fields[sep + 1])).into_owned(),
                source: String::from_utf8_lossy(&unescape(fields[sep + 2])).into_owned(),
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, ...).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') as u32 * 64
                    + (oct[1] - b'0') as u32 * 8
                    + (oct[2] - b'0') as u32;
                if v <= 255 {
                    out.push(v as u8);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// The entry mounted exactly at `path` (the last one wins, as the kernel
/// shows stacked mounts in order).
pub fn mount_at<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// The Nimbus mount that contains `path` (deepest first), if any.
pub fn nimbus_mount_containing<'a>(
    mounts: &'a [MountEntry],
    path: &Path,
) -> Option<&'a MountEntry> {
    mounts
        .iter()
        .filter(|m| m.is_nimbus() && path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
}

/// All Nimbus mounts, deduplicated by mount point.
pub fn nimbus_mounts(mounts: &[MountEntry]) -> Vec<&MountEntry> {
    let mut out: Vec<&MountEntry> = Vec::new();
    for m in mounts.iter().filter(|m| m.is_nimbus()) {
        if !out.iter().any(|o| o.mount_point == m.mount_point) {
            out.push(m);
        }
    }
    out
}

/// An absolute, normalized form of `path` that does not touch the last
/// component (so it works on a mount point whose FUSE server is gone):
/// the parent is canonicalized, the name is kept.
pub fn absolute_no_follow(path: &Path) -> Result<PathBuf> {
    let abs =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    // Lexically drop `.` and fold `..`, then canonicalize the parent.
    let mut norm = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                norm.pop();
            }
            Component::CurDir => {}
            c => norm.push(c),
        }
    }
    match (norm.parent(), norm.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = parent
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", parent.display()))?;
            Ok(parent.join(name))
        }
        _ => Ok(norm),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /root/Nimbus rw,nosuid,nodev,relatime shared:2 - fuse.nimbus nimbus rw,user_id=0,group_id=0
41 22 0:36 / /tmp/my\\040drive rw,relatime - fuse nimbus rw,user_id=0
42 22 0:37 / /mnt/other rw,relatime - fuse sshfs rw
43 22 0:38 / /mnt/odd rw - fuse.nimbus
garbage line
";

    #[test]
    fn parses_and_classifies() {
        let m = parse_mountinfo(SAMPLE);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].mount_point, PathBuf::from("/root/Nimbus"));
        assert!(m[1].is_nimbus());
        assert_eq!(m[2].mount_point, PathBuf::from("/tmp/my drive"));
        assert!(m[2].is_nimbus());
        assert!(!m[3].is_nimbus());
        assert!(!m[0].is_nimbus());
        assert_eq!(nimbus_mounts(&m).len(), 2);
    }

    #[test]
    fn finds_containing_mount() {
        let m = parse_mountinfo(SAMPLE);
        let c = nimbus_mount_containing(&m, Path::new("/root/Nimbus/a/b")).unwrap();
        assert_eq!(c.mount_point, PathBuf::from("/root/Nimbus"));
        assert!(nimbus_mount_containing(&m, Path::new("/root/Nimbus2")).is_none());
        assert!(nimbus_mount_containing(&m, Path::new("/mnt/other/x")).is_none());
        assert!(mount_at(&m, Path::new("/mnt/other")).is_some());
        assert!(mount_at(&m, Path::new("/mnt")).is_none());
    }

    #[test]
    fn unescapes() {
        assert_eq!(unescape(b"a\\040b\\134c\\0"), b"a b\\c\\0");
        assert_eq!(unescape(b"\\011"), b"\t");
    }

    #[test]
    fn absolute_without_following() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().canonicalize().unwrap();
        let p = absolute_no_follow(&t.path().join("x/../missing")).unwrap();
        assert_eq!(p, real.join("missing"));
        assert_eq!(
            absolute_no_follow(Path::new("/")).unwrap(),
            PathBuf::from("/")
        );
    }

    #[test]
    fn reads_this_machine() {
        let m = read_mounts().unwrap();
        assert!(m.iter().any(|e| e.mount_point == Path::new("/")));
    }
}
