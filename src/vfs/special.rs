//! `mknod`: FIFOs, sockets, character and block device nodes, and (as
//! ext4 does) empty regular files.
//!
//! Special nodes are metadata only: they never have content, a working
//! copy or chunks; what syncs is their kind, mode, owner, times and, for
//! devices, the device number (`rdev`). Opening one is the kernel's
//! business (pipe buffers, sockets, device drivers): a FUSE filesystem is
//! never asked to read or write them, and [`Vfs::open_file`] refuses them
//! for any other front end. Mounts are `nodev` unless `--dev`, so device
//! nodes show (type and number) but do not open the device.
//!
//! Who may create a device node (`CAP_MKNOD`) is checked by the kernel
//! before the request reaches us, as on every filesystem.

use super::*;

/// The file-type bits of a mode (`S_IFMT`) and the types `mknod` takes;
/// POSIX values, the same on every platform that has them.
const S_IFMT: u32 = 0o170_000;
const S_IFIFO: u32 = 0o010_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFREG: u32 = 0o100_000;
const S_IFSOCK: u32 = 0o140_000;

/// The node kind `mknod` creates for the type bits of `mode` (`S_IFMT`
/// part); `None` for a folder, a symlink or an unknown type, which
/// `mknod(2)` refuses with `EINVAL`. No type bits is a regular file.
pub fn mknod_kind(mode: u32) -> Option<NodeKind> {
    match mode & S_IFMT {
        0 | S_IFREG => Some(NodeKind::File),
        S_IFIFO => Some(NodeKind::Fifo),
        S_IFSOCK => Some(NodeKind::Socket),
        S_IFCHR => Some(NodeKind::CharDevice),
        S_IFBLK => Some(NodeKind::BlockDevice),
        _ => None,
    }
}

impl Vfs {
    /// `mknod` by the mounting user.
    pub fn mknod(&self, parent: u64, name: &[u8], mode: u32, rdev: u32) -> VfsResult<Attr> {
        self.mknod_as(self.mounter(), parent, name, mode, rdev)
    }

    /// Creates node `name` in `parent`, owned by `by`, of the type in
    /// `mode`'s `S_IFMT` bits ([`mknod_kind`]) with permission bits
    /// `mode & 0o7777` (umask already applied). `rdev` (Linux `dev_t`
    /// encoding) is kept for character and block devices and ignored for
    /// the other kinds, as `mknod(2)` does. A regular file is created
    /// empty and not opened.
    ///
    /// Errors: `InvalidArgument` for a folder, symlink or unknown type;
    /// otherwise those of `mkdir` (`Exists`, `NotDir`, `NotFound`,
    /// `InvalidName`, `ReadOnly`).
    pub fn mknod_as(
        &self,
        by: Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> VfsResult<Attr> {
        let kind = mknod_kind(mode).ok_or(VfsError::InvalidArgument(
            "mknod makes regular files, FIFOs, sockets and device nodes only",
        ))?;
        let rdev = if kind.is_device() { rdev } else { 0 };
        self.create_node(by, parent, name, kind, mode & 0o7777, None, rdev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::memory::MemoryRemote;
    use crate::sync::follower::Follower;
    use crate::sync::uploader::Uploader;
    use crate::vfs::test_support::open_vfs;

    fn set(vfs: &Vfs, ino: u64, s: SetAttr) -> Attr {
        vfs.setattr(ino, s).ready().unwrap()
    }

    /// Special nodes and POSIX attributes made on device A reach device B
    /// through the uploader, the wire records and the change follower;
    /// a chmod alone is uploaded too.
    #[tokio::test]
    async fn special_nodes_and_attributes_travel_to_another_device() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (ida, idb) = (DeviceId::random(), DeviceId::random());
        let remote = Arc::new(MemoryRemote::new(ida));
        let a = open_vfs(da.path(), ida, "a", remote.clone());
        let fifo = a.mknod(ROOT_INO, b"fifo", S_IFIFO | 0o640, 77).unwrap();
        let tty = a.mknod(ROOT_INO, b"tty", S_IFCHR | 0o620, 0x0501).unwrap();
        let sock = a.mknod(ROOT_INO, b"sock", S_IFSOCK | 0o755, 0).unwrap();
        let reg = a.mknod(ROOT_INO, b"reg", 0o600, 9).unwrap();
        assert_eq!(
            (fifo.kind, fifo.rdev, fifo.mode),
            (NodeKind::Fifo, 0, 0o640)
        );
        assert_eq!((tty.kind, tty.rdev), (NodeKind::CharDevice, 0x0501));
        assert_eq!(
            (sock.kind, reg.kind, reg.size, reg.rdev),
            (NodeKind::Socket, NodeKind::File, 0, 0)
        );
        assert!(matches!(
            a.mknod(ROOT_INO, b"d", 0o040_755, 0),
            Err(VfsError::InvalidArgument(_))
        ));
        assert!(matches!(
            a.mknod(ROOT_INO, b"tty", S_IFIFO, 0),
            Err(VfsError::Exists)
        ));
        assert!(matches!(
            a.open_file(fifo.ino, false, false),
            Err(VfsError::NotSupported(_))
        ));
        let past = Timestamp {
            sec: -1,
            nsec: 250_000_000,
        };
        let later = Timestamp {
            sec: 1_700_000_000,
            nsec: 123_456_789,
        };
        set(
            &a,
            fifo.ino,
            SetAttr {
                uid: Some(41_234),
                gid: Some(41_235),
                ..Default::default()
            },
        );
        set(
            &a,
            tty.ino,
            SetAttr {
                mode: Some(0o4755),
                atime: Some(later),
                mtime: Some(past),
                ..Default::default()
            },
        );
        let up = Uploader::new(a.clone(), remote.clone());
        while up.run_once().await.unwrap() {}

        let on_server = remote.node("fifo").unwrap().meta;
        assert_eq!(
            (
                on_server.kind,
                on_server.uid,
                on_server.gid,
                on_server.ids_from
            ),
            (NodeKind::Fifo, Some(41_234), Some(41_235), Some(ida))
        );
        let t = remote.node("tty").unwrap().meta;
        assert_eq!(
            (t.rdev, t.mode, t.mtime, t.atime, t.content),
            (0x0501, 0o4755, past, later, None)
        );
        assert_eq!(remote.node("reg").unwrap().meta.kind, NodeKind::File);

        // A chmod alone (no content) is journaled and uploaded.
        set(
            &a,
            sock.ino,
            SetAttr {
                mode: Some(0o1777),
                ..Default::default()
            },
        );
        while up.run_once().await.unwrap() {}
        assert_eq!(remote.node("sock").unwrap().meta.mode, 0o1777);

        let b = open_vfs(db.path(), idb, "b", remote.clone());
        Follower::new(b.clone(), remote.clone())
            .pull_all()
            .await
            .unwrap();
        let f = b.lookup(ROOT_INO, b"fifo").unwrap();
        assert_eq!(
            (f.kind, f.uid, f.gid),
            (NodeKind::Fifo, 0, 0),
            "foreign ids show as the mounter"
        );
        let stored = b.meta.inode(f.ino).unwrap().unwrap();
        assert_eq!(
            (stored.uid, stored.gid, stored.ids_from),
            (Some(41_234), Some(41_235), Some(ida))
        );
        let t = b.lookup(ROOT_INO, b"tty").unwrap();
        assert_eq!(
            (t.kind, t.rdev, t.mode, t.mtime, t.atime),
            (NodeKind::CharDevice, 0x0501, 0o4755, past, later)
        );
        let s = b.lookup(ROOT_INO, b"sock").unwrap();
        assert_eq!((s.kind, s.mode), (NodeKind::Socket, 0o1777));

        // Back on the device that set them, the ids are its own again.
        Follower::new(a.clone(), remote.clone())
            .pull_all()
            .await
            .unwrap();
        let mine = a.meta.inode(fifo.ino).unwrap().unwrap();
        assert_eq!(mine.ids_from, None);
        assert_eq!(a.getattr(fifo.ino).unwrap().uid, 41_234);
    }

    #[test]
    fn types_are_read_from_the_mode() {
        assert_eq!(mknod_kind(S_IFIFO | 0o644), Some(NodeKind::Fifo));
        assert_eq!(mknod_kind(S_IFSOCK | 0o755), Some(NodeKind::Socket));
        assert_eq!(mknod_kind(S_IFCHR), Some(NodeKind::CharDevice));
        assert_eq!(mknod_kind(S_IFBLK), Some(NodeKind::BlockDevice));
        assert_eq!(mknod_kind(S_IFREG | 0o600), Some(NodeKind::File));
        assert_eq!(mknod_kind(0o600), Some(NodeKind::File));
        assert_eq!(mknod_kind(0o040_000 | 0o755), None, "a folder");
        assert_eq!(mknod_kind(0o120_000 | 0o777), None, "a symlink");
    }
}
