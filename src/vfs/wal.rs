//! The write-ahead log in front of the metadata store: every metadata batch
//! is written to a log file before its call returns, and made durable by a
//! group commit.
//!
//! # The promise (README "Durability")
//! - When [`Kv::apply`] returns, the batch is in the log file, i.e. in the
//!   kernel's page cache: it survives a crash of the Nimbus process
//!   (kill -9), not yet a crash of the machine.
//! - When [`Kv::flush`] returns, every batch applied before it survives a
//!   crash of the machine too, and so does the content it refers to: the
//!   files registered with [`Kv::order_data`] are synced **before** the log
//!   (ext4's `data=ordered`), so the journal never refers to content that
//!   is not on disk. Concurrent flushes share one sync (group commit), and
//!   a background writeback flushes on its own every
//!   [`WRITEBACK_INTERVAL`] (ext4 commits every 5 s) or sooner when many
//!   batches wait.
//! - After any crash the store is a prefix of the batches applied: a
//!   process crash keeps every batch whose log record is whole; after a
//!   restart of the machine (the boot id in the segment header differs)
//!   only the batches up to the last sync marker are kept, because later
//!   records may have reached the disk without the content they refer to.
//!
//! # Why our own log
//! sled makes batches durable only by its own `flush` (an fsync of its
//! whole log) or its 200 ms timer, so a batch lives only in sled's memory
//! until then: a kill -9 loses it, and making every `close` survive one
//! costs an fsync each (what made `tar x` 100× slower than ext4). The
//! write-ahead-log crates we looked at (okaywal, open-wal) tie a commit to
//! an fdatasync, and none orders other files' data before the log; the log
//! here is about 300 lines over `write(2)`.
//!
//! # How
//! Batches not yet durable live in a memtable (the newest value per key, a
//! tombstone for a delete) in front of the inner store; reads merge the
//! two. Only batches made durable by a sync are moved into the inner store
//! (sled), so sled never holds — and can never write out early — a batch
//! whose content might be missing after a power loss. The background
//! writeback moves them (every 250 ms when some wait), not the flush:
//! sled takes every write again, which costs far more than the sync and
//! would otherwise sit on the path of every upload round. A log segment
//! is deleted once the inner store has flushed everything in it.
//!
//! # Format
//! A segment `wal/<first lsn, 20 digits>.log` starts with [`MAGIC`] and the
//! boot id (40 bytes, zero-padded), then records: `u32` payload length,
//! `u8` kind (1 batch, 2 sync marker), `u64` lsn, payload, and the first 16
//! bytes of the BLAKE3 hash of kind + lsn + payload. A batch's payload is
//! `u32` count, then per write `u32` key length, key, `u8` 1 (put) or 0
//! (delete), and for a put `u32` value length and value; a sync marker's
//! payload is the `u64` lsn up to which batches are durable. All integers
//! little-endian. Reading stops at the first record that is short or fails
//! its hash (a torn tail).

use super::error::{VfsError, VfsResult};
use super::kv::{Kv, KvWrite};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// First bytes of every segment.
pub const MAGIC: &[u8; 8] = b"NMBWAL01";
const HEADER_LEN: usize = 8 + 40;
/// The inner store's key holding the lsn of the last batch moved into it,
/// written in the same batch (a tag no metadata key uses).
const APPLIED_KEY: &[u8] = b"\xffwal/applied";
const KIND_BATCH: u8 = 1;
const KIND_SYNCED: u8 = 2;
/// A segment is closed once it grows past this.
const SEGMENT_BYTES: u64 = 32 << 20;
/// Background writeback flushes at least this often while batches wait.
pub const WRITEBACK_INTERVAL: Duration = Duration::from_secs(5);
/// ... or as soon as this many batches wait.
const WRITEBACK_BATCHES: usize = 20_000;
/// Above this many files to sync, one `syncfs` of the cache's filesystem is
/// cheaper than an `fdatasync` each.
const SYNCFS_ABOVE: usize = 64;

/// How the log makes files durable. [`RealSync`] calls the kernel; the
/// crash tests put a layer here that remembers what was synced and, on a
/// simulated power loss, keeps only that.
pub trait SyncIo: Send + Sync + 'static {
    /// Makes the data of each file durable (`fdatasync`, or one `syncfs`
    /// for many).
    fn sync_files(&self, files: &[(PathBuf, Arc<File>)]) -> std::io::Result<()>;
    /// Makes the entries of folder `dir` durable (`fsync` of the folder).
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
}

/// The kernel's sync calls.
pub struct RealSync;

impl SyncIo for RealSync {
    fn sync_files(&self, files: &[(PathBuf, Arc<File>)]) -> std::io::Result<()> {
        if files.len() > SYNCFS_ABOVE {
            return nix::unistd::syncfs(files[0].1.as_ref()).map_err(std::io::Error::from);
        }
        for (_, f) in files {
            f.sync_data()?;
        }
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// This boot of the machine (`/proc/sys/kernel/random/boot_id`); empty if
/// unknown, which recovery treats as a different boot.
pub fn current_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The metadata store behind its write-ahead log (see the module docs).
pub struct WalKv {
    inner: Arc<dyn Kv>,
    dir: PathBuf,
    io: Arc<dyn SyncIo>,
    boot_id: String,
    log: Mutex<Log>,
    mem: Mutex<Memtable>,
    /// Serializes syncs; holds the lsn up to which batches are durable.
    synced: Mutex<u64>,
    /// Serializes moving durable batches into the inner store (see
    /// [`WalKv::writeback`]); taken without `synced`, so that a flush
    /// never waits for one.
    promoting: Mutex<()>,
    ordered: Mutex<Ordered>,
}

struct Log {
    file: Arc<File>,
    path: PathBuf,
    bytes: u64,
    /// The last lsn written.
    lsn: u64,
    /// Closed segments and their last lsn, oldest first.
    closed: Vec<(PathBuf, u64)>,
    /// An I/O error of the log: the store refuses writes from then on.
    failed: Option<String>,
}

#[derive(Default)]
struct Memtable {
    /// Newest value (`None`: deleted) and the lsn that wrote it.
    entries: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    /// Batches not yet in the inner store, in lsn order.
    pending: VecDeque<(u64, Vec<KvWrite>)>,
    last_sync: Option<Instant>,
}

#[derive(Default)]
struct Ordered {
    files: BTreeMap<PathBuf, Arc<File>>,
    dirs: Vec<PathBuf>,
    /// Files to remove once the batches before them are durable, with the
    /// number of their registration ([`Kv::keep_file`] cancels one).
    remove: BTreeMap<PathBuf, u64>,
    registrations: u64,
}

fn io_err(what: &str, e: std::io::Error) -> VfsError {
    VfsError::Store(super::error::Cause::from_error(
        format!("write-ahead log: {what}: {e}"),
        e,
    ))
}

impl WalKv {
    /// Opens the log in `dir` over `inner`: replays what a crash left (see
    /// the module docs for what is kept), moves it into `inner`, flushes
    /// `inner`, and starts an empty segment and the background writeback.
    pub fn open(
        inner: Arc<dyn Kv>,
        dir: &Path,
        io: Arc<dyn SyncIo>,
        boot_id: String,
    ) -> VfsResult<Arc<Self>> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create folder", e))?;
        let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io_err("list", e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segments.sort();
        let mut batches = Vec::new();
        let mut durable_upto = 0;
        let mut other_boot = false;
        for seg in &segments {
            let raw = std::fs::read(seg).map_err(|e| io_err("read", e))?;
            let (seg_boot, records) = parse_segment(&raw);
            other_boot |= seg_boot.is_empty() || seg_boot != boot_id;
            for r in records {
                match r {
                    Record::Batch(lsn, w) => batches.push((lsn, w)),
                    Record::Synced(upto) => durable_upto = durable_upto.max(upto),
                }
            }
        }
        if other_boot {
            batches.retain(|(lsn, _)| *lsn <= durable_upto);
        }
        // A segment deleted after its batches reached the inner store may
        // come back after a power loss (its removal was not synced): what
        // the inner store already has is skipped by lsn.
        let applied = match inner.get(APPLIED_KEY)? {
            Some(b) => u64::from_le_bytes(b.as_slice().try_into().map_err(|_| {
                VfsError::Store(super::error::Cause::from(
                    "write-ahead log: bad applied position".to_string(),
                ))
            })?),
            None => 0,
        };
        batches.retain(|(lsn, _)| *lsn > applied);
        let recovered = batches.len();
        let lsn = batches.last().map(|b| b.0).unwrap_or(0).max(applied);
        for (_, w) in batches {
            inner.apply(w)?;
        }
        inner.apply(vec![(
            APPLIED_KEY.to_vec(),
            Some(lsn.to_le_bytes().to_vec()),
        )])?;
        inner.flush()?;
        for seg in &segments {
            std::fs::remove_file(seg).map_err(|e| io_err("remove segment", e))?;
        }
        if recovered > 0 {
            tracing::info!(batches = recovered, "replayed the metadata write-ahead log");
        }
        let (file, path) = new_segment(dir, lsn + 1, &boot_id)?;
        io.sync_dir(dir).map_err(|e| io_err("sync folder", e))?;
        let wal = Arc::new(WalKv {
            inner,
            dir: dir.to_path_buf(),
            io,
            boot_id,
            log: Mutex::new(Log {
                file,
                path,
                bytes: HEADER_LEN as u64,
                lsn,
                closed: Vec::new(),
                failed: None,
            }),
            mem: Mutex::new(Memtable::default()),
            synced: Mutex::new(lsn),
            promoting: Mutex::new(()),
            ordered: Mutex::new(Ordered::default()),
        });
        spawn_writeback(Arc::downgrade(&wal));
        Ok(wal)
    }

    /// The lsn of the last batch written and the lsn up to which batches
    /// are durable (for tests and status).
    pub fn positions(&self) -> (u64, u64) {
        (self.log.lock().lsn, *self.synced.lock())
    }

    /// True when batches wait for a sync or, durable, for the inner store,
    /// and the writeback should run.
    fn writeback_due(&self) -> bool {
        let synced = *self.synced.lock();
        let waiting = {
            let m = self.mem.lock();
            let due = m
                .last_sync
                .is_none_or(|t| t.elapsed() >= WRITEBACK_INTERVAL);
            (m.pending.len() >= WRITEBACK_BATCHES)
                || (due && !m.pending.is_empty())
                || m.pending.front().is_some_and(|(lsn, _)| *lsn <= synced)
        };
        waiting || !self.ordered.lock().remove.is_empty()
    }

    /// The background writeback's pass: a sync, then the durable batches
    /// move into the inner store and segments it no longer needs go.
    fn writeback(&self) -> VfsResult<()> {
        self.sync()?;
        let _one = self.promoting.lock();
        let upto = *self.synced.lock();
        self.promote(upto)?;
        self.rotate(upto)
    }

    /// [`Kv::flush`]: makes every batch applied so far durable (the
    /// content ordered before them first), then removes the files that
    /// waited for that. Moving the batches into the inner store is left to
    /// the writeback ([`WalKv::writeback`], within its next tick): it costs
    /// far more than the sync (the inner store takes every write again),
    /// and a flush is on the path of every upload round.
    fn sync(&self) -> VfsResult<()> {
        let asked = self.log_position()?;
        let mut synced = self.synced.lock();
        // Removals first: each was registered after the batch that allows
        // it, so the target read next covers those batches.
        let remove = self.ordered.lock().remove.clone();
        if *synced >= asked && remove.is_empty() {
            return Ok(());
        }
        let target = self.log_position()?;
        // Content is registered before the batch that refers to it, so what
        // is registered now covers every batch up to `target`.
        let (files, dirs) = {
            let mut o = self.ordered.lock();
            let files: Vec<_> = std::mem::take(&mut o.files).into_iter().collect();
            (files, std::mem::take(&mut o.dirs))
        };
        if let Err(e) = self.sync_upto(target, &files, &dirs) {
            // Nothing was promised: keep it all for the next try.
            let mut o = self.ordered.lock();
            for (p, f) in files {
                o.files.entry(p).or_insert(f);
            }
            o.dirs.extend(dirs);
            return Err(e);
        }
        *synced = target;
        self.mem.lock().last_sync = Some(Instant::now());
        {
            // Under the lock, so a `keep_file` either comes first (and the
            // file stays) or finds it gone.
            let mut o = self.ordered.lock();
            for (p, id) in remove {
                if o.remove.get(&p) == Some(&id) {
                    o.remove.remove(&p);
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        Ok(())
    }

    fn log_position(&self) -> VfsResult<u64> {
        let log = self.log.lock();
        match &log.failed {
            Some(e) => Err(VfsError::Store(super::error::Cause::from(e.clone()))),
            None => Ok(log.lsn),
        }
    }

    /// Syncs the content, then a marker and the log up to `target`.
    fn sync_upto(
        &self,
        target: u64,
        files: &[(PathBuf, Arc<File>)],
        dirs: &[PathBuf],
    ) -> VfsResult<()> {
        if !files.is_empty() {
            self.io
                .sync_files(files)
                .map_err(|e| io_err("sync content", e))?;
        }
        for d in dirs {
            self.io.sync_dir(d).map_err(|e| io_err("sync folder", e))?;
        }
        let log_file = {
            let mut log = self.log.lock();
            self.append(&mut log, KIND_SYNCED, target, &target.to_le_bytes())?;
            (log.path.clone(), log.file.clone())
        };
        self.io
            .sync_files(std::slice::from_ref(&log_file))
            .map_err(|e| io_err("sync", e))
    }

    /// Moves the batches up to `upto` (durable now) into the inner store.
    /// Callers hold `promoting`. The memtable is not locked while the inner
    /// store applies them: it keeps those batches (reads find them there)
    /// until the inner store has them, and meanwhile only grows at the back.
    fn promote(&self, upto: u64) -> VfsResult<()> {
        let (n, writes) = {
            let m = self.mem.lock();
            let n = m.pending.iter().take_while(|(lsn, _)| *lsn <= upto).count();
            // Copied, and dropped from the queue only once the inner store
            // took them: a failure leaves everything as it was.
            let mut writes: Vec<KvWrite> = m
                .pending
                .iter()
                .take(n)
                .flat_map(|(_, w)| w.clone())
                .collect();
            if let Some((last, _)) = n.checked_sub(1).map(|i| &m.pending[i]) {
                writes.push((APPLIED_KEY.to_vec(), Some(last.to_le_bytes().to_vec())));
            }
            (n, writes)
        };
        if n > 0 {
            self.inner.apply(writes)?;
        }
        let mut m = self.mem.lock();
        m.pending.drain(..n);
        m.entries.retain(|_, (lsn, _)| *lsn > upto);
        Ok(())
    }

    /// Closes a large segment and deletes closed ones whose batches are all
    /// in the inner store (after flushing it).
    fn rotate(&self, promoted: u64) -> VfsResult<()> {
        let deletable = {
            let mut log = self.log.lock();
            if log.bytes > SEGMENT_BYTES {
                let (file, path) = new_segment(&self.dir, log.lsn + 1, &self.boot_id)?;
                let old = std::mem::replace(&mut log.path, path);
                log.file = file;
                log.bytes = HEADER_LEN as u64;
                let last = log.lsn;
                log.closed.push((old, last));
            }
            let n = log
                .closed
                .iter()
                .take_while(|(_, l)| *l <= promoted)
                .count();
            log.closed.drain(..n).collect::<Vec<_>>()
        };
        if deletable.is_empty() {
            return Ok(());
        }
        self.io
            .sync_dir(&self.dir)
            .map_err(|e| io_err("sync folder", e))?;
        self.inner.flush()?;
        for (p, _) in deletable {
            let _ = std::fs::remove_file(p);
        }
        Ok(())
    }

    fn append(&self, log: &mut Log, kind: u8, lsn: u64, payload: &[u8]) -> VfsResult<()> {
        let rec = encode_record(kind, lsn, payload);
        let r = (&*log.file).write_all(&rec);
        if let Err(e) = r {
            // A partly written record would hide every later one: stop.
            let msg = format!("write-ahead log: write failed: {e}");
            log.failed = Some(msg);
            return Err(io_err("write", e));
        }
        log.bytes += rec.len() as u64;
        Ok(())
    }
}

fn spawn_writeback(wal: Weak<WalKv>) {
    let _ = std::thread::Builder::new()
        .name("nimbus-writeback".into())
        .spawn(move || {
            // After a failure (a full or failing disk), try again only after
            // an interval, and say so once per failure streak.
            let mut failed_at: Option<Instant> = None;
            loop {
                std::thread::sleep(Duration::from_millis(250));
                let Some(w) = wal.upgrade() else { return };
                if failed_at.is_some_and(|t| t.elapsed() < WRITEBACK_INTERVAL) {
                    continue;
                }
                if !w.writeback_due() {
                    continue;
                }
                match w.writeback() {
                    Ok(()) => {
                        if failed_at.take().is_some() {
                            tracing::info!("background writeback works again");
                        }
                    }
                    Err(e) => {
                        if failed_at.is_none() {
                            tracing::warn!("background writeback failed: {}", e.chain());
                        }
                        failed_at = Some(Instant::now());
                    }
                }
            }
        });
}

fn new_segment(dir: &Path, first_lsn: u64, boot_id: &str) -> VfsResult<(Arc<File>, PathBuf)> {
    let path = dir.join(format!("{first_lsn:020}.log"));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| io_err("create segment", e))?;
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    let b = boot_id.as_bytes();
    let n = b.len().min(40);
    header[8..8 + n].copy_from_slice(&b[..n]);
    f.write_all(&header)
        .map_err(|e| io_err("write segment header", e))?;
    Ok((Arc::new(f), path))
}

fn encode_record(kind: u8, lsn: u64, payload: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(4 + 1 + 8 + payload.len() + 16);
    rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    rec.push(kind);
    rec.extend_from_slice(&lsn.to_le_bytes());
    rec.extend_from_slice(payload);
    let hash = blake3::hash(&rec[4..]);
    rec.extend_from_slice(&hash.as_bytes()[..16]);
    rec
}

fn encode_batch(writes: &[KvWrite]) -> Vec<u8> {
    let size: usize = writes
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| v.len()))
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for (k, v) in writes {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        match v {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }
    out
}

enum Record {
    Batch(u64, Vec<KvWrite>),
    Synced(u64),
}

/// Reads `n` bytes at `*at`, advancing it.
fn take<'a>(raw: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
    let s = raw.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(s)
}

fn take_u32(raw: &[u8], at: &mut usize) -> Option<usize> {
    Some(u32::from_le_bytes(take(raw, at, 4)?.try_into().ok()?) as usize)
}

fn decode_batch(p: &[u8]) -> Option<Vec<KvWrite>> {
    let mut at = 0;
    let n = take_u32(p, &mut at)?;
    let mut out = Vec::with_capacity(n.min(4096));
    for _ in 0..n {
        let kl = take_u32(p, &mut at)?;
        let k = take(p, &mut at, kl)?.to_vec();
        let v = match take(p, &mut at, 1)?[0] {
            1 => {
                let vl = take_u32(p, &mut at)?;
                Some(take(p, &mut at, vl)?.to_vec())
            }
            0 => None,
            _ => return None,
        };
        out.push((k, v));
    }
    (at == p.len()).then_some(out)
}

/// The boot id and the whole records of one segment, up to the first torn
/// or corrupt one.
fn parse_segment(raw: &[u8]) -> (String, Vec<Record>) {
    if raw.len() < HEADER_LEN || &raw[..8] != MAGIC {
        return (String::new(), Vec::new());
    }
    let boot = String::from_utf8_lossy(&raw[8..HEADER_LEN])
        .trim_end_matches('\0')
        .to_string();
    let mut at = HEADER_LEN;
    let mut out = Vec::new();
    while let Some(len) = take_u32(raw, &mut at) {
        let Some(body) = take(raw, &mut at, 1 + 8 + len) else {
            break;
        };
        let Some(hash) = take(raw, &mut at, 16) else {
            break;
        };
        if blake3::hash(body).as_bytes()[..16] != *hash {
            break;
        }
        let kind = body[0];
        let lsn = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
        let payload = &body[9..];
        match kind {
            KIND_BATCH => match decode_batch(payload) {
                Some(w) => out.push(Record::Batch(lsn, w)),
                None => break,
            },
            KIND_SYNCED if payload.len() == 8 => out.push(Record::Synced(u64::from_le_bytes(
                payload.try_into().expect("8 bytes"),
            ))),
            _ => break,
        }
    }
    (boot, out)
}

impl Kv for WalKv {
    fn get(&self, key: &[u8]) -> VfsResult<Option<Vec<u8>>> {
        if let Some((_, v)) = self.mem.lock().entries.get(key) {
            return Ok(v.clone());
        }
        self.inner.get(key)
    }

    fn apply(&self, writes: Vec<KvWrite>) -> VfsResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let payload = encode_batch(&writes);
        let mut log = self.log.lock();
        if let Some(e) = &log.failed {
            return Err(VfsError::Store(super::error::Cause::from(e.clone())));
        }
        let lsn = log.lsn + 1;
        self.append(&mut log, KIND_BATCH, lsn, &payload)?;
        log.lsn = lsn;
        let mut m = self.mem.lock();
        for (k, v) in &writes {
            m.entries.insert(k.clone(), (lsn, v.clone()));
        }
        m.pending.push_back((lsn, writes));
        Ok(())
    }

    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> VfsResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let m = self.mem.lock();
        let mut mem = m
            .entries
            .range(start.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut out = Vec::new();
        let mut page = self.inner.scan(prefix, start, limit.max(1))?.into_iter();
        let mut page_full = page.len() >= limit.max(1);
        let mut disk = page.next();
        // The last inner-store key consumed, where its next page starts.
        let mut last_disk: Option<Vec<u8>> = None;
        while out.len() < limit {
            // Refill the inner store's page when it runs out.
            if disk.is_none() && page_full {
                let from = match &last_disk {
                    Some(k) => next_key(k),
                    None => start.to_vec(),
                };
                let next = self.inner.scan(prefix, &from, limit.max(1))?;
                page_full = next.len() >= limit.max(1);
                page = next.into_iter();
                disk = page.next();
            }
            let take_mem = match (mem.peek(), &disk) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((mk, _)), Some((dk, _))) => mk.as_slice() <= dk.as_slice(),
            };
            if take_mem {
                let (mk, (_, v)) = mem.next().expect("peeked");
                if disk.as_ref().is_some_and(|(dk, _)| dk == mk) {
                    last_disk = disk.take().map(|(k, _)| k);
                    disk = page.next();
                }
                if let Some(v) = v {
                    out.push((mk.clone(), v.clone()));
                }
            } else {
                let (k, v) = disk.take().expect("checked");
                last_disk = Some(k.clone());
                out.push((k, v));
                disk = page.next();
            }
        }
        Ok(out)
    }

    fn flush(&self) -> VfsResult<()> {
        self.sync()
    }

    fn order_data(&self, path: &Path, file: &Arc<File>, new_in: Option<&Path>) {
        let mut o = self.ordered.lock();
        o.files.insert(path.to_path_buf(), file.clone());
        if let Some(d) = new_in {
            if !o.dirs.iter().any(|x| x == d) {
                o.dirs.push(d.to_path_buf());
            }
        }
    }

    fn remove_when_durable(&self, path: PathBuf) {
        let mut o = self.ordered.lock();
        o.files.remove(&path);
        o.registrations += 1;
        let id = o.registrations;
        o.remove.insert(path, id);
    }

    fn keep_file(&self, path: &Path) {
        self.ordered.lock().remove.remove(path);
    }
}

/// The smallest key after `k`.
fn next_key(k: &[u8]) -> Vec<u8> {
    let mut n = k.to_vec();
    n.push(0);
    n
}

#[cfg(test)]
mod tests;
