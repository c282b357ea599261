//! The thin fuser adapter: translates kernel requests into [`Vfs`] calls
//! and [`VfsError`]s into errno values. It holds no filesystem logic.
//!
//! Calls that can be answered from local state reply inline on the FUSE
//! thread; a read of a chunk that is not in memory, or a first write that
//! must fill a working copy from the server, moves to a tokio task that
//! replies when done, so the FUSE threads never wait on the network.
//!
//! # Operations the core does not implement
//! Every `Filesystem` method is implemented here, so that fuser's
//! defaults (which log a multi-line warning on every call) never run.
//! The unsupported ones answer at once, logging at debug level only, with
//! the errno that makes the kernel or the program fall back:
//! - `ioctl`: `ENOTTY` (not a terminal: `isatty`, as asked by Python's
//!   `open`, `tar`, `vim`, is simply false).
//! - `getlk`/`setlk`: `ENOSYS`, so the kernel keeps POSIX locks locally
//!   (it does not even ask while `FUSE_POSIX_LOCKS` is not negotiated).
//! - `poll`: `ENOSYS`; the kernel reports files always ready, like on a
//!   local disk.
//! - `bmap`: `ENOSYS` (there is no block device).
//!
//! Extended attributes pass through with the caller (uid 0 is privileged
//! for `trusted.*`) and the `setxattr` flags; the core answers them (see
//! `vfs::xattr`). `FUSE_POSIX_ACL` is not negotiated, so the kernel never
//! consults ACLs for permission checks or applies default ACLs, and
//! `setfacl`/`getfacl` (`system.posix_acl_*`) reach the core, which
//! answers `EOPNOTSUPP` as a file system mounted without ACL support.
//!
//! `mknod` creates FIFOs, sockets and device nodes (metadata only; see
//! `vfs::special`). The kernel opens those itself and never sends their
//! `open`, `read` or `write` here.

mod convert;

pub use convert::errno;
use convert::{file_attr, file_type};

use crate::protocol::Timestamp;
use crate::vfs::capacity::BLOCK;
use crate::vfs::xattr::XattrFlags;
use crate::vfs::{Answer, Attr, Caller, KernelNotifier, PageCache, SetAttr, Vfs, VfsError};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FopenFlags, Generation, INodeNo,
    IoctlFlags, KernelConfig, LockOwner, Notifier, OpenAccMode, OpenFlags, PollEvents, PollFlags,
    PollNotifier, RenameFlags, ReplyAttr, ReplyBmap, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLock, ReplyLseek, ReplyOpen,
    ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long the kernel may cache names and attributes. Remote changes
/// invalidate them explicitly through the notifier.
const TTL: Duration = Duration::from_secs(30);
/// Directory entries fetched from the core per step of a listing reply.
const DIR_PAGE: usize = 256;

pub struct NimbusFs {
    vfs: Arc<Vfs>,
    rt: tokio::runtime::Handle,
}

impl NimbusFs {
    pub fn new(vfs: Arc<Vfs>, rt: tokio::runtime::Handle) -> Self {
        NimbusFs { vfs, rt }
    }

    /// Counts one kernel request (every `Filesystem` method starts with
    /// it); published as `fuse_requests` in `user.nimbus.status`. A
    /// `BATCH_FORGET` counts once per inode (fuser splits it into
    /// `forget` calls).
    fn count(&self) {
        self.vfs.status().note_fuse_request();
    }

    fn attr(&self, a: &Attr) -> FileAttr {
        file_attr(a)
    }

    fn reply_entry(&self, r: Result<Attr, VfsError>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&TTL, &self.attr(&a), Generation(0)),
            Err(e) => reply.error(failed(&e)),
        }
    }

    fn reply_empty(r: Result<(), VfsError>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(failed(&e)),
        }
    }

    /// Replies with `answer` now when it is ready, else from a task once
    /// its future completes: the FUSE thread never waits on the network.
    fn answer<T: Send + 'static>(
        &self,
        answer: Answer<T>,
        reply: impl FnOnce(Result<T, VfsError>) + Send + 'static,
    ) {
        match answer {
            Answer::Ready(r) => reply(r),
            Answer::Pending(f) => {
                self.rt.spawn(async move { reply(f.await) });
            }
        }
    }
}

/// Sends invalidations to the kernel from outside FUSE threads.
pub struct FuseNotifier(pub Notifier);

impl KernelNotifier for FuseNotifier {
    fn inval_entry(&self, parent: u64, name: &str) {
        let _ = self.0.inval_entry(INodeNo(parent), OsStr::new(name));
    }
    fn inval_inode(&self, ino: u64) {
        let _ = self.0.inval_inode(INodeNo(ino), 0, 0);
    }
    fn inval_attr(&self, ino: u64) {
        // A negative offset: attributes only, the pages stay.
        let _ = self.0.inval_inode(INodeNo(ino), -1, 0);
    }
}

/// The errno to answer with, after logging the error once: failures of
/// the mount as warnings, ordinary answers (ENOENT, ...) at debug level.
fn failed(e: &VfsError) -> Errno {
    let code = errno(e);
    if e.is_failure() {
        tracing::warn!(errno = code.code(), "request failed: {}", e.chain());
    } else {
        tracing::debug!(errno = code.code(), "{e}");
    }
    code
}

/// The open flags for the core's page-cache answer.
fn fopen_flags(cache: PageCache) -> FopenFlags {
    match cache {
        PageCache::Keep => FopenFlags::FOPEN_KEEP_CACHE,
        PageCache::Drop => FopenFlags::empty(),
        PageCache::Bypass => FopenFlags::FOPEN_DIRECT_IO,
    }
}

/// The errno for an operation the core does not implement, logged at
/// debug level only (see the module docs for the choices).
fn unsupported(op: &'static str, code: i32) -> Errno {
    tracing::debug!(op, errno = code, "operation not supported");
    Errno::from_i32(code)
}

fn to_time(t: TimeOrNow) -> Timestamp {
    match t {
        TimeOrNow::SpecificTime(t) => convert::time_from_request(t),
        TimeOrNow::Now => Timestamp::now(),
    }
}

/// The process asking, as the core's caller.
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

impl fuser::Filesystem for NimbusFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.count();
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_write(1 << 20);
        let _ = config.add_capabilities(
            fuser::InitFlags::FUSE_DO_READDIRPLUS
                | fuser::InitFlags::FUSE_READDIRPLUS_AUTO
                | fuser::InitFlags::FUSE_PARALLEL_DIROPS
                | fuser::InitFlags::FUSE_CACHE_SYMLINKS,
        );
        // Shared mappings of a file opened with direct I/O (a new open
        // while a reader of an older version is open; see the core's
        // `PageCache::Bypass`); kernels before 6.6 refuse them (ENODEV).
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        Ok(())
    }

    fn destroy(&mut self) {
        self.count();
        let _ = self.vfs.fsync_all();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count();
        self.reply_entry(self.vfs.lookup(parent.0, name.as_bytes()), reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.count();
        self.vfs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count();
        match self.vfs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &self.attr(&a)),
            Err(e) => reply.error(failed(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.count();
        let set = SetAttr {
            mode,
            size,
            atime: atime.map(to_time),
            mtime: mtime.map(to_time),
            uid,
            gid,
        };
        self.answer(self.vfs.setattr(ino.0, set), move |r| match r {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(failed(&e)),
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.count();
        match self.vfs.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(failed(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.count();
        // FIFOs, sockets, device nodes, and regular files from mknod(2);
        // the umask applies to the permission bits, not the type.
        let mode = mode & !(umask & 0o7777);
        self.reply_entry(
            self.vfs
                .mknod_as(caller(req), parent.0, name.as_bytes(), mode, rdev),
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.count();
        self.reply_entry(
            self.vfs
                .mkdir_as(caller(req), parent.0, name.as_bytes(), mode & !umask),
            reply,
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count();
        Self::reply_empty(self.vfs.unlink(parent.0, name.as_bytes()), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count();
        Self::reply_empty(self.vfs.rmdir(parent.0, name.as_bytes()), reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.count();
        self.reply_entry(
            self.vfs.symlink_as(
                caller(req),
                parent.0,
                link_name.as_bytes(),
                target.as_os_str().as_bytes(),
            ),
            reply,
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.count();
        let (from, to) = (name.as_bytes(), newname.as_bytes());
        let r = if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            Err(VfsError::InvalidArgument("RENAME_WHITEOUT"))
        } else if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            self.vfs.rename_exchange(parent.0, from, newparent.0, to)
        } else {
            let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            self.vfs.rename(parent.0, from, newparent.0, to, no_replace)
        };
        Self::reply_empty(r, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.count();
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let read = flags.acc_mode() != OpenAccMode::O_WRONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let opened = self
            .vfs
            .open_access(ino.0, read, write, truncate)
            .and_then(|fh| Ok((fh, self.vfs.page_cache(fh)?)));
        match opened {
            Ok((fh, cache)) => reply.opened(FileHandle(fh), fopen_flags(cache)),
            Err(e) => reply.error(failed(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.count();
        self.answer(self.vfs.read(fh.0, offset, size), move |r| match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(failed(&e)),
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.count();
        self.answer(self.vfs.write(fh.0, offset, data), move |r| match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(failed(&e)),
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.count();
        Self::reply_empty(self.vfs.flush(fh.0), reply);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.count();
        Self::reply_empty(self.vfs.release(fh.0), reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.count();
        let vfs = self.vfs.clone();
        // fsync --remote waits for the server; do it off the FUSE thread.
        self.rt
            .spawn_blocking(move || Self::reply_empty(vfs.fsync(fh.0), reply));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count();
        match self.vfs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(failed(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.count();
        let mut offset = offset;
        loop {
            let page = match self.vfs.readdir_page(ino.0, fh.0, offset, DIR_PAGE) {
                Ok(p) => p,
                Err(e) => return reply.error(failed(&e)),
            };
            if page.is_empty() {
                break;
            }
            for (next, e) in page {
                let name = OsStr::new(&e.name);
                if reply.add(INodeNo(e.ino), next, file_type(e.kind), name) {
                    return reply.ok();
                }
                offset = next;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.count();
        let mut offset = offset;
        loop {
            let page = match self.vfs.readdir_page(ino.0, fh.0, offset, DIR_PAGE) {
                Ok(p) => p,
                Err(e) => return reply.error(failed(&e)),
            };
            if page.is_empty() {
                break;
            }
            for (next, e) in page {
                offset = next;
                let dots = e.name == "." || e.name == "..";
                // Entries other than `.` and `..` count as lookups.
                let attr = if dots {
                    self.vfs.getattr(e.ino)
                } else {
                    self.vfs.entry_attr(e.ino)
                };
                let Ok(attr) = attr else {
                    continue; // removed since the snapshot
                };
                let name = OsStr::new(&e.name);
                if reply.add(
                    INodeNo(e.ino),
                    next,
                    name,
                    &TTL,
                    &self.attr(&attr),
                    Generation(0),
                ) {
                    if !dots {
                        // Not sent: the kernel did not take the reference.
                        self.vfs.forget(e.ino, 1);
                    }
                    return reply.ok();
                }
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.count();
        self.vfs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.count();
        Self::reply_empty(self.vfs.fsync_all(), reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.count();
        let s = self.vfs.statfs();
        reply.statfs(
            s.blocks,
            s.bfree,
            s.bfree,
            s.files,
            s.ffree,
            BLOCK as u32,
            255,
            BLOCK as u32,
        );
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.count();
        match self.vfs.getxattr_as(caller(req), ino.0, name.as_bytes()) {
            Ok(v) => {
                if size == 0 {
                    reply.size(v.len() as u32);
                } else if (size as usize) < v.len() {
                    reply.error(Errno::from_i32(libc::ERANGE));
                } else {
                    reply.data(&v);
                }
            }
            Err(e) => reply.error(failed(&e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.count();
        match self.vfs.listxattr_as(caller(req), ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                if size == 0 {
                    reply.size(buf.len() as u32);
                } else if (size as usize) < buf.len() {
                    reply.error(Errno::from_i32(libc::ERANGE));
                } else {
                    reply.data(&buf);
                }
            }
            Err(e) => reply.error(failed(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.count();
        let result = XattrFlags::from_bits(flags).and_then(|flags| {
            self.vfs
                .setxattr_as(caller(req), ino.0, name.as_bytes(), value, flags)
        });
        Self::reply_empty(result, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count();
        Self::reply_empty(
            self.vfs.removexattr_as(caller(req), ino.0, name.as_bytes()),
            reply,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        self.count();
        // Permission bits are checked by the kernel (default_permissions).
        Self::reply_empty(self.vfs.getattr(ino.0).map(|_| ()), reply);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        self.count();
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        match self
            .vfs
            .create_as(caller(req), parent.0, name.as_bytes(), mode & !umask, write)
        {
            Ok((a, fh)) => reply.created(
                &TTL,
                &self.attr(&a),
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(failed(&e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.count();
        let r = self.vfs.link(ino.0, newparent.0, newname.as_bytes());
        self.reply_entry(r, reply);
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        self.count();
        reply.error(unsupported("getlk", libc::ENOSYS));
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.count();
        reply.error(unsupported("setlk", libc::ENOSYS));
    }

    fn bmap(&self, _req: &Request, _ino: INodeNo, _blocksize: u32, _idx: u64, reply: ReplyBmap) {
        self.count();
        reply.error(unsupported("bmap", libc::ENOSYS));
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.count();
        reply.error(unsupported("ioctl", libc::ENOTTY));
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        self.count();
        reply.error(unsupported("poll", libc::ENOSYS));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.count();
        let answer = self.vfs.fallocate(fh.0, offset, length, mode);
        self.answer(answer, move |r| Self::reply_empty(r, reply));
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.count();
        let offset = u64::try_from(offset).unwrap_or(u64::MAX);
        match self.vfs.lseek(fh.0, offset, whence) {
            Ok(at) => reply.offset(at as i64),
            Err(e) => reply.error(failed(&e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.count();
        let answer = self
            .vfs
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len);
        self.answer(answer, move |r| match r {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(failed(&e)),
        });
    }
}
