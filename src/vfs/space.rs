//! Space and range operations on open files: `fallocate`, `lseek` with
//! `SEEK_DATA`/`SEEK_HOLE`, and `copy_file_range` (issue 6, ext4 parity).
//!
//! All of them work on the working copy (`work/<node id>`), filled from
//! the file's chunks first when needed, exactly as `write` does; a change
//! of content or size is recorded as an unsaved write, which `flush`,
//! `fsync` and `release` make durable and journal, so it uploads.
//!
//! The kernel checks first what does not need the filesystem (Linux
//! `vfs_fallocate`, `vfs_copy_file_range`): open modes (`EBADF`), negative
//! or zero lengths and unknown mode combinations (`EINVAL`), folders
//! (`EISDIR`), and overlapping ranges of one file (`EINVAL`). The core
//! checks them again, so a front end without those checks gets the same
//! answers.

use super::*;

/// `FALLOC_FL_KEEP_SIZE` (Linux `fallocate(2)`).
pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
/// `FALLOC_FL_PUNCH_HOLE` (must come with `KEEP_SIZE`).
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
/// `FALLOC_FL_ZERO_RANGE`.
pub const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
/// `lseek` whence values the kernel passes on to a filesystem.
pub const SEEK_DATA: i32 = 3;
pub const SEEK_HOLE: i32 = 4;
/// The most `copy_file_range` copies in one call (a short copy is normal:
/// the caller loops, as `cp` does).
pub const COPY_CHUNK: u64 = 8 << 20;

/// An errno answer for which the core has no error variant of its own.
fn os_error(code: i32) -> VfsError {
    VfsError::Io(std::io::Error::from_raw_os_error(code))
}

impl Vfs {
    /// `fallocate(fd, mode, offset, len)` through handle `fh` (open for
    /// writing: else `EBADF`). Modes (Linux `fallocate(2)`, as ext4):
    /// - `0`: the file grows to at least `offset + len` bytes (zeros);
    /// - `KEEP_SIZE`: nothing visible changes (space is not reserved
    ///   on the server; a later write may still fail there);
    /// - `PUNCH_HOLE | KEEP_SIZE`: bytes `offset..offset + len` (within
    ///   the size) read as zeros afterwards; the size stays;
    /// - `ZERO_RANGE` (optionally with `KEEP_SIZE`): the range reads as
    ///   zeros, and without `KEEP_SIZE` the file grows to cover it.
    ///
    /// Other modes: `EOPNOTSUPP`; `len == 0`: `EINVAL`; an allocation past
    /// the size that the local disk or the server has no room for:
    /// `ENOSPC`.
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Answer<()> {
        let checked = self.space_check(fh, offset, len, mode);
        let ino = match checked {
            Ok(None) => return Answer::Ready(Ok(())),
            Ok(Some(ino)) => ino,
            Err(e) => return Answer::Ready(Err(e)),
        };
        match self.write_ready(ino, false) {
            Ok(true) => Answer::Ready(self.fallocate_now(fh, offset, len, mode)),
            Err(e) => Answer::Ready(Err(e)),
            Ok(false) => {
                let vfs = self.owned();
                Answer::Pending(Box::pin(async move {
                    vfs.prepare_write(ino).await?;
                    vfs.fallocate_now(fh, offset, len, mode)
                }))
            }
        }
    }

    /// The checks of `fallocate`: the inode when content may change,
    /// `None` when nothing is to be done (`KEEP_SIZE` alone).
    fn space_check(&self, fh: u64, offset: u64, len: u64, mode: i32) -> VfsResult<Option<u64>> {
        self.writable()?;
        let h = self.handle(fh)?;
        if !h.write {
            return Err(os_error(libc::EBADF));
        }
        if len == 0
            || offset
                .checked_add(len)
                .is_none_or(|end| end > i64::MAX as u64)
        {
            return Err(VfsError::InvalidArgument("fallocate range"));
        }
        if mode & FALLOC_FL_PUNCH_HOLE == 0 {
            self.check_room(h.ino, offset + len)?;
        }
        match mode {
            0 | FALLOC_FL_ZERO_RANGE => Ok(Some(h.ino)),
            m if m == FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE => Ok(Some(h.ino)),
            m if m == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE => Ok(Some(h.ino)),
            FALLOC_FL_KEEP_SIZE => Ok(None),
            FALLOC_FL_PUNCH_HOLE => Err(VfsError::InvalidArgument("PUNCH_HOLE needs KEEP_SIZE")),
            _ => Err(VfsError::NotSupported("fallocate mode")),
        }
    }

    /// `ENOSPC` when allocating up to byte `end` of file `ino` cannot fit:
    /// the bytes past its size must fit in the free space of the disk
    /// under the working copies and in the room the server last reported.
    /// (As ext4 refuses a reservation it cannot make; the working copy
    /// itself stays sparse, so later writes still need that room.)
    fn check_room(&self, ino: u64, end: u64) -> VfsResult<()> {
        let size = self.meta.inode_required(ino)?.size;
        let needed = end.saturating_sub(size);
        if needed == 0 {
            return Ok(());
        }
        let st = nix::sys::statvfs::statvfs(&self.work_dir).map_err(std::io::Error::from)?;
        let local = st.blocks_available().saturating_mul(st.fragment_size());
        let server = self
            .meta
            .space_report()?
            .and_then(|r| r.free_bytes)
            .unwrap_or(u64::MAX);
        if needed > local.min(server) {
            return Err(VfsError::NoSpace(
                "not enough free space for this allocation (here or on the server)",
            ));
        }
        Ok(())
    }

    /// `fallocate` once the working copy is there.
    fn fallocate_now(&self, fh: u64, offset: u64, len: u64, mode: i32) -> VfsResult<()> {
        let h = self.handle(fh)?;
        let o = self
            .open
            .get(h.ino)
            .ok_or(VfsError::InvalidArgument("file not open"))?;
        let file = self
            .work_file(h.ino, &o, false)?
            .ok_or_else(|| VfsError::Unavailable("the working copy went away".into()))?;
        let size = self.unsaved_size(h.ino, &o)?;
        let end = offset + len;
        let zero_end = end.min(size);
        let zeroing = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) != 0;
        if zeroing && offset < zero_end {
            zero_range(&file, offset, zero_end - offset)?;
        }
        let new_size = if mode & FALLOC_FL_KEEP_SIZE == 0 {
            size.max(end)
        } else {
            size
        };
        if new_size > size {
            file.set_len(new_size)?;
        } else if !(zeroing && offset < zero_end) {
            // Space within the size is already there: nothing changed, no
            // new mtime and nothing to upload.
            return Ok(());
        }
        o.state.lock().unsaved = Some((new_size, Timestamp::now()));
        Ok(())
    }

    /// The size a writer sees now: its unsaved size, else the stored one.
    fn unsaved_size(&self, ino: u64, o: &Arc<OpenInode>) -> VfsResult<u64> {
        if let Some((s, _)) = o.state.lock().unsaved {
            return Ok(s);
        }
        Ok(self.meta.inode_required(ino)?.size)
    }

    /// `lseek(fd, offset, SEEK_DATA | SEEK_HOLE)` through handle `fh`
    /// (Linux `lseek(2)`): the first data (or hole) at or after `offset`.
    /// The end of the file is a hole; holes inside come from the working
    /// copy (punched, or never written); content only on the server is all
    /// data. `ENXIO` when `offset` is at or past the end; `EINVAL` for
    /// another `whence` (the kernel answers `SEEK_SET`/`CUR`/`END` itself).
    pub fn lseek(&self, fh: u64, offset: u64, whence: i32) -> VfsResult<u64> {
        let h = self.handle(fh)?;
        if whence != SEEK_DATA && whence != SEEK_HOLE {
            return Err(VfsError::InvalidArgument("lseek whence"));
        }
        let o = self.open.get(h.ino);
        let (size, work) = match &o {
            Some(o) => {
                let work = o.state.lock().work.clone();
                (self.unsaved_size(h.ino, o)?, work)
            }
            None => (self.meta.inode_required(h.ino)?.size, None),
        };
        if offset >= size {
            return Err(os_error(libc::ENXIO));
        }
        let Some(work) = work else {
            return Ok(if whence == SEEK_DATA { offset } else { size });
        };
        use std::os::fd::AsRawFd;
        // SAFETY: lseek on a descriptor the Arc keeps open; it only moves
        // that descriptor's offset, which the core never uses (pread/pwrite).
        let at = unsafe { libc::lseek(work.as_raw_fd(), offset as i64, whence) };
        if at < 0 {
            let e = std::io::Error::last_os_error();
            // No data after `offset` in the copy, but the size goes on:
            // the rest up to the size is a hole.
            return match (e.raw_os_error(), whence) {
                (Some(libc::ENXIO), SEEK_DATA) => Err(os_error(libc::ENXIO)),
                _ => Err(e.into()),
            };
        }
        Ok((at as u64).min(size))
    }

    /// `copy_file_range` from handle `fh_in` at `off_in` to `fh_out` (open
    /// for writing, else `EBADF`) at `off_out`, at most `len` bytes (and
    /// at most [`COPY_CHUNK`] per call): the number copied, 0 at the
    /// input's end. Goes through the working copies: the destination is
    /// written like `write` (and uploads once closed). Overlapping ranges
    /// of one file: `EINVAL` (Linux `copy_file_range(2)`).
    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Answer<u32> {
        let checked = (|| {
            let (hi, ho) = (self.handle(fh_in)?, self.handle(fh_out)?);
            if !ho.write {
                return Err(os_error(libc::EBADF));
            }
            if self.meta.inode_required(hi.ino)?.is_dir() {
                return Err(VfsError::IsDir);
            }
            let len = len.min(COPY_CHUNK);
            if hi.ino == ho.ino && off_in < off_out + len && off_out < off_in + len {
                return Err(VfsError::InvalidArgument("overlapping ranges of one file"));
            }
            Ok(len as u32)
        })();
        let len = match checked {
            Ok(0) => return Answer::Ready(Ok(0)),
            Ok(len) => len,
            Err(e) => return Answer::Ready(Err(e)),
        };
        let vfs = self.owned();
        Answer::Pending(Box::pin(async move {
            let data = vfs.read(fh_in, off_in, len).await?;
            if data.is_empty() {
                return Ok(0);
            }
            vfs.write(fh_out, off_out, &data).await
        }))
    }
}

/// Makes `len` bytes at `offset` of `file` read as zeros: a punched hole
/// where the cache's filesystem can, else written zeros.
fn zero_range(file: &std::fs::File, offset: u64, len: u64) -> VfsResult<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on an open descriptor with plain integer arguments.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(zeros.len() as u64) as usize;
        pio::write_all_at(file, &zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}
