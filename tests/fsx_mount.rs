//! An fsx-style randomized exerciser through a real mount (issue 6):
//! random `pwrite`, `pread`, `ftruncate`, `fallocate` (mode 0,
//! `KEEP_SIZE`, `PUNCH_HOLE`, `ZERO_RANGE`), shared-`mmap` reads and
//! writes, `copy_file_range` and close/reopen on a few files, each checked
//! against an in-memory copy after every operation that reads, and in
//! full every few hundred operations. At checkpoints the files are
//! uploaded and compared byte for byte on a second device; at the end the
//! first device is remounted and compared again.
//!
//! Bounded for CI (`NIMBUS_FSX_OPS`, default 15,000 operations, about 40 s). The long
//! run, documented in README:
//! `NIMBUS_FSX_OPS=200000 cargo test --release --test fsx_mount -- --nocapture`.
//! `NIMBUS_FSX_SEED` replays a run; a failure prints its seed and the
//! last operations.

mod common;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::VecDeque;
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Duration;

/// Largest file the exerciser makes: several chunks (about 1 MiB each).
const MAX_SIZE: u64 = 5 << 20;
const FILES: usize = 3;
/// Full comparisons every this many operations.
const VERIFY_EVERY: u64 = 250;
/// Upload and compare on the second device every this many operations.
const CHECKPOINT_EVERY: u64 = 1500;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// One file under test: its path, open descriptor and expected content.
struct Subject {
    path: PathBuf,
    file: File,
    model: Vec<u8>,
}

impl Subject {
    fn open(path: PathBuf) -> File {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }
}

struct Run {
    rng: StdRng,
    seed: u64,
    subjects: Vec<Subject>,
    log: VecDeque<String>,
    ops: u64,
}

impl Run {
    fn note(&mut self, op: String) {
        if self.log.len() == 40 {
            self.log.pop_front();
        }
        self.log.push_back(format!("#{} {op}", self.ops));
    }

    fn fail(&self, what: &str) -> ! {
        let log: Vec<&str> = self.log.iter().map(String::as_str).collect();
        panic!(
            "fsx: {what}\nseed {} (replay with NIMBUS_FSX_SEED={}), last operations:\n{}",
            self.seed,
            self.seed,
            log.join("\n")
        );
    }

    fn check(&self, i: usize, off: u64, got: &[u8]) {
        let model = &self.subjects[i].model;
        let end = (off as usize + got.len()).min(model.len());
        let want = if off as usize >= model.len() {
            &[][..]
        } else {
            &model[off as usize..end]
        };
        if got != want {
            let at = got.iter().zip(want).position(|(a, b)| a != b);
            self.fail(&format!(
                "file {i}: read at {off} got {} bytes, want {}; first difference at +{at:?}",
                got.len(),
                want.len()
            ));
        }
    }

    fn verify_all(&self) {
        for (i, s) in self.subjects.iter().enumerate() {
            let size = s.file.metadata().unwrap().len();
            if size != s.model.len() as u64 {
                self.fail(&format!("file {i}: size {size}, want {}", s.model.len()));
            }
            let mut got = vec![0u8; s.model.len()];
            if let Err(e) = s.file.read_exact_at(&mut got, 0) {
                self.fail(&format!("file {i}: reading its {size} bytes: {e}"));
            }
            self.check(i, 0, &got);
        }
    }

    fn range(&mut self, within: u64) -> (u64, u64) {
        let off = self.rng.random_range(0..within.clamp(1, MAX_SIZE));
        let len = match self.rng.random_range(0..4) {
            0 => self.rng.random_range(1..64),
            1 => self.rng.random_range(1..8192),
            _ => self.rng.random_range(1..(1 << 20)),
        };
        (off, len.min(MAX_SIZE - off).max(1))
    }

    fn step(&mut self) {
        self.ops += 1;
        let i = self.rng.random_range(0..self.subjects.len());
        let size = self.subjects[i].model.len() as u64;
        match self.rng.random_range(0..100) {
            0..=29 => {
                let (off, len) = self.range(size + (64 << 10));
                let mut buf = vec![0u8; len as usize];
                self.rng.fill_bytes(&mut buf);
                self.note(format!("write file {i} {off}+{len}"));
                self.subjects[i].file.write_all_at(&buf, off).unwrap();
                let m = &mut self.subjects[i].model;
                if m.len() < (off + len) as usize {
                    m.resize((off + len) as usize, 0);
                }
                m[off as usize..(off + len) as usize].copy_from_slice(&buf);
            }
            30..=49 => {
                let (off, len) = self.range(size + 4096);
                self.note(format!("read file {i} {off}+{len}"));
                let mut buf = vec![0u8; len as usize];
                let n = self.subjects[i].file.read_at(&mut buf, off).unwrap();
                buf.truncate(n);
                // One read may come back short only at the end of file.
                if n < len as usize && off + (n as u64) < size {
                    let mut rest = vec![0u8; (len as usize) - n];
                    let m = self.subjects[i]
                        .file
                        .read_at(&mut rest, off + n as u64)
                        .unwrap();
                    buf.extend_from_slice(&rest[..m]);
                }
                self.check(i, off, &buf);
            }
            50..=59 => {
                let new = match self.rng.random_range(0..3) {
                    0 => 0,
                    1 => self.rng.random_range(0..=size),
                    _ => self.rng.random_range(0..=MAX_SIZE),
                };
                self.note(format!("truncate file {i} {size} -> {new}"));
                self.subjects[i].file.set_len(new).unwrap();
                self.subjects[i].model.resize(new as usize, 0);
            }
            60..=71 => self.fallocate(i, size),
            72..=81 => self.mapped(i, size),
            82..=89 => self.copy_range(i, size),
            90..=94 => {
                self.note(format!("reopen file {i}"));
                let path = self.subjects[i].path.clone();
                self.subjects[i].file = Subject::open(path);
            }
            _ => {
                self.note(format!("fsync file {i}"));
                self.subjects[i].file.sync_all().unwrap();
            }
        }
    }

    fn fallocate(&mut self, i: usize, size: u64) {
        let (off, len) = self.range(size + (64 << 10));
        let (mode, name) = match self.rng.random_range(0..4) {
            0 => (0, "grow"),
            1 => (libc::FALLOC_FL_KEEP_SIZE, "keep-size"),
            2 => (
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                "punch-hole",
            ),
            _ => (libc::FALLOC_FL_ZERO_RANGE, "zero-range"),
        };
        self.note(format!("fallocate {name} file {i} {off}+{len}"));
        let fd = self.subjects[i].file.as_raw_fd();
        // SAFETY: a valid descriptor; fallocate takes plain integers.
        let r = unsafe { libc::fallocate(fd, mode, off as i64, len as i64) };
        if r != 0 {
            self.fail(&format!(
                "fallocate {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let m = &mut self.subjects[i].model;
        let end = (off + len) as usize;
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        if !keep && m.len() < end {
            m.resize(end, 0);
        }
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            let stop = end.min(m.len());
            if (off as usize) < stop {
                m[off as usize..stop].fill(0);
            }
        }
    }

    /// Reads and writes a range through a shared mapping of the file (a
    /// mapping cannot grow a file: the range stays within its size).
    fn mapped(&mut self, i: usize, size: u64) {
        if size == 0 {
            return;
        }
        let (off, len) = self.range(size);
        let len = len.min(size - off);
        let write = self.rng.random_bool(0.6);
        self.note(format!(
            "mmap {} file {i} {off}+{len}",
            if write { "write" } else { "read" }
        ));
        let page = 4096u64;
        let start = off / page * page;
        let map_len = (off + len - start) as usize;
        let file = &self.subjects[i].file;
        // SAFETY: the mapping covers bytes within the file's size, is
        // used only through the slice below, and is unmapped before the
        // descriptor can change.
        let addr = unsafe {
            nix::sys::mman::mmap(
                None,
                NonZeroUsize::new(map_len).unwrap(),
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                file,
                start as i64,
            )
        }
        .unwrap_or_else(|e| self.fail(&format!("mmap: {e}")));
        let rel = (off - start) as usize;
        // SAFETY: see above; `map_len` bytes are mapped at `addr`.
        let map = unsafe { std::slice::from_raw_parts_mut(addr.as_ptr() as *mut u8, map_len) };
        let got = map[rel..].to_vec();
        let mut buf = vec![0u8; len as usize];
        if write {
            self.rng.fill_bytes(&mut buf);
            map[rel..].copy_from_slice(&buf);
        }
        // SAFETY: the mapping made above, unmapped once.
        unsafe {
            nix::sys::mman::msync(addr, map_len, nix::sys::mman::MsFlags::MS_SYNC).unwrap();
            nix::sys::mman::munmap(addr, map_len).unwrap();
        }
        self.check(i, off, &got);
        if write {
            self.subjects[i].model[off as usize..(off + len) as usize].copy_from_slice(&buf);
        }
    }

    /// `copy_file_range` between two files (or two disjoint ranges of one).
    fn copy_range(&mut self, i: usize, size: u64) {
        let j = self.rng.random_range(0..self.subjects.len());
        let (src, len) = self.range(size.max(1));
        let (dst, _) = self.range(self.subjects[j].model.len() as u64 + (64 << 10));
        let len = len.min(MAX_SIZE - dst);
        if i == j && src < dst + len && dst < src + len {
            return; // overlapping ranges of one file are EINVAL
        }
        self.note(format!(
            "copy_file_range file {i} {src}+{len} -> file {j} @{dst} (sizes {size}, {})",
            self.subjects[j].model.len()
        ));
        let (fi, fj) = (
            self.subjects[i].file.as_raw_fd(),
            self.subjects[j].file.as_raw_fd(),
        );
        let (mut oi, mut oj, mut left) = (src as i64, dst as i64, len as usize);
        while left > 0 {
            // SAFETY: valid descriptors and offsets owned here.
            let n = unsafe { libc::copy_file_range(fi, &mut oi, fj, &mut oj, left, 0) };
            if n < 0 {
                self.fail(&format!(
                    "copy_file_range: {}",
                    std::io::Error::last_os_error()
                ));
            }
            if n == 0 {
                break;
            }
            left -= n as usize;
        }
        let copied = (oi as u64 - src) as usize;
        // The model of the loop above: each call copies what the source
        // has from its offset (every length here is under the 8 MiB one
        // call takes), and a copy within one file may grow the source.
        let (mut from, mut to, mut left, mut want) = (src as usize, dst as usize, len as usize, 0);
        while left > 0 {
            let n = self.subjects[i].model.len().saturating_sub(from).min(left);
            if n == 0 {
                break;
            }
            let bytes = self.subjects[i].model[from..from + n].to_vec();
            let m = &mut self.subjects[j].model;
            if m.len() < to + n {
                m.resize(to + n, 0);
            }
            m[to..to + n].copy_from_slice(&bytes);
            (from, to, left, want) = (from + n, to + n, left - n, want + n);
        }
        if copied != want {
            self.fail(&format!("copy_file_range copied {copied}, want {want}"));
        }
    }
}

#[test]
fn random_operations_match_an_in_memory_copy() {
    let ops = env_u64("NIMBUS_FSX_OPS").unwrap_or(15_000);
    let seed = env_u64("NIMBUS_FSX_SEED").unwrap_or_else(rand::random);
    eprintln!("fsx: {ops} operations, seed {seed}");
    let server = Server::start();
    server.add_user("x", "pw-fsx-1");
    let mut a = Device::login(&server, "x", "pw-fsx-1", "a");
    let mut b = Device::login(&server, "x", "pw-fsx-1", "b");
    a.mount(&[]);
    b.mount(&[]);

    let subjects = (0..FILES)
        .map(|k| {
            let path = a.path(&format!("fsx{k}.bin"));
            Subject {
                file: Subject::open(path.clone()),
                path,
                model: Vec::new(),
            }
        })
        .collect();
    let mut run = Run {
        rng: StdRng::seed_from_u64(seed),
        seed,
        subjects,
        log: VecDeque::new(),
        ops: 0,
    };
    // A file open for writing uploads when it is closed (close-to-open):
    // the checkpoint holds read-only descriptors while it waits.
    let checkpoint = |run: &mut Run, a: &Device, b: &Device| {
        run.verify_all();
        for s in &mut run.subjects {
            s.file = File::open(&s.path).unwrap();
        }
        a.sync();
        for k in 0..FILES {
            wait_content(
                &b.path(&format!("fsx{k}.bin")),
                &run.subjects[k].model,
                Duration::from_secs(120),
            );
        }
        for s in &mut run.subjects {
            s.file = Subject::open(s.path.clone());
        }
    };
    let started = std::time::Instant::now();
    while run.ops < ops {
        run.step();
        if run.ops % VERIFY_EVERY == 0 {
            run.verify_all();
        }
        if run.ops % CHECKPOINT_EVERY == 0 {
            checkpoint(&mut run, &a, &b);
        }
    }
    checkpoint(&mut run, &a, &b);
    eprintln!(
        "fsx: {ops} operations and checkpoints in {:?}",
        started.elapsed()
    );

    // After a remount, from the cache and the server: the same bytes.
    let models: Vec<Vec<u8>> = run.subjects.iter().map(|s| s.model.clone()).collect();
    drop(run);
    a.unmount();
    a.mount(&[]);
    for (k, want) in models.iter().enumerate() {
        let got = std::fs::read(a.path(&format!("fsx{k}.bin"))).unwrap();
        assert!(
            got == *want,
            "file {k} differs after a remount (seed {seed})"
        );
    }
    eprintln!("fsx: {ops} operations match (seed {seed})");
    a.unmount();
    b.unmount();
}
