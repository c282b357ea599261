//! The journal: durable, ordered records of local work the server does not
//! have yet, with an in-memory per-node index, and the quarantine of
//! changes the server refused.
//!
//! # Order is data
//! A record carries the node's **place** (parent, name) as of the change
//! that wrote it, and the uploader replays records in journal order; the
//! node's attributes and content are read when the record is sent (the
//! newest content is never wrong to send early). Replaying places in order
//! is what keeps a sequence of operations on one device an exact end state
//! on the server: a delete or a rename away of `f` always reaches the server
//! before the create that reuses the name `f` (editors, package managers
//! and `git` write a temp file and rename it over the old one), and a
//! folder's children are deleted before the folder.
//!
//! Keeping only one record per node (its latest state) cannot keep that
//! order: pushing the node's latest place at its first record's position
//! can take a name another node vacates only later in the journal, and
//! pushing it at its last position can delete a folder before a child moves
//! out of it. So a node may have several records, and records are merged
//! only where no order can be broken:
//! - an attribute or content change of a node that already has a record not
//!   yet sent adds nothing (that record sends the current state);
//! - a move (create, rename) of a node whose last record is the journal's
//!   tail rewrites that record in place;
//! - a file or symlink that never reached the server holds no name there and
//!   is nobody's parent: its records collapse into one at the tail, and its
//!   delete removes them all (a temp file created and removed costs no
//!   request);
//! - a folder that never reached the server and whose only record is the
//!   tail disappears with its delete (`mkdir -p a/b/c && rm -rf a`).
//!
//! Records that may already have reached the server are **held**: never
//! rewritten or removed by a local change, only by the uploader when the
//! server has answered. Those of the round in flight are held, and so is
//! every record found at open (a round may have sent them before a crash)
//! and every record of a round that failed without a clear answer.
//!
//! # Quarantine
//! A record the server refused for good (an error naming that op) moves to
//! the quarantine (`Q` keys) with the reason: `nimbus status` lists it,
//! `user.nimbus.state` reads `failed`, `nimbus sync --wait` keeps counting it
//! as not uploaded. The next local change of the node supersedes it (the
//! new record carries the node's current state), and records held back
//! because their folder was refused go back to the journal with it.
//!
//! # Keys (in the metadata store's [`Kv`])
//! - `J` seq → [`JournalOp`] (`j` held the records of the first format;
//!   they are converted at open)
//! - `Q` seq → [`Quarantined`]
//! - `m next_jseq` → the next sequence number
//!
//! # Locking
//! The index's mutex is taken by [`super::meta::Txn::commit`] around the
//! store write, so the index, the persisted counters and the records always
//! change together; it is the innermost lock of the core.

use super::error::{VfsError, VfsResult};
use super::kv::{Kv, KvWrite};
use crate::protocol::{Link, NodeId, VersionVector};
use parking_lot::{Mutex, MutexGuard};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One durable record of local work.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum JournalOp {
    /// Push node `ino`: its place as of this record — first entry
    /// (`parent`, `name`) and other entries (`links`, hard links) — and its
    /// attributes and content as they are when the record is sent.
    /// `moved`: the record gives the node a new place (create, rename,
    /// link, unlink of one of several entries); `false` for attribute and
    /// content changes.
    Upsert {
        ino: u64,
        parent: NodeId,
        name: String,
        moved: bool,
        links: Vec<Link>,
    },
    /// Node `ino` was removed locally. `base` is its version vector then;
    /// the tombstone's vector, kept up to date by earlier commits, wins
    /// when the tombstone still exists. `parent` (an ino) and `name` are for
    /// status displays.
    Delete {
        ino: u64,
        node_id: NodeId,
        base: VersionVector,
        parent: u64,
        name: String,
    },
}

impl JournalOp {
    /// The inode the record is about.
    pub fn ino(&self) -> u64 {
        match self {
            JournalOp::Upsert { ino, .. } | JournalOp::Delete { ino, .. } => *ino,
        }
    }
}

/// A change the server refused, set aside where the user sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Quarantined {
    /// The record as it was in the journal (its sequence number is its key).
    pub op: JournalOp,
    /// Path of the node when it was refused ("" for the root).
    pub path: String,
    /// The server's reason, one line.
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at_unix: i64,
    /// Set when the record was held back because the record of its parent
    /// folder `ino` was refused: it returns to the journal with that one.
    pub blocked_by: Option<u64>,
}

/// A journal change collected by a [`super::meta::Txn`], resolved against
/// the index when the transaction commits.
#[derive(Clone, Debug)]
pub(super) enum Intent {
    /// Journal `op` (an `Upsert` carries the node's place now); `on_server`:
    /// the server has (had) the node; `is_dir`: it is a folder.
    Record {
        op: JournalOp,
        on_server: bool,
        is_dir: bool,
    },
    /// The node's quarantined records are superseded; nothing to journal.
    Settle { ino: u64 },
}

const REC: u8 = b'J';
const LEGACY_REC: u8 = b'j';
const QUAR: u8 = b'Q';
const NEXT_SEQ: &[u8] = b"mnext_jseq";

fn rec_key(tag: u8, seq: u64) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}
fn seq_of(key: &[u8]) -> VfsResult<u64> {
    key.get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| VfsError::Store("malformed journal key".into()))
}
fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("postcard encoding of an in-memory value cannot fail")
}
fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> VfsResult<T> {
    Ok(postcard::from_bytes(b)?)
}

/// The in-memory index: which records exist, of which node, which are
/// held, and which nodes have quarantined changes.
#[derive(Default)]
pub(super) struct Index {
    next_seq: u64,
    /// seq → ino, every record in the journal.
    records: BTreeMap<u64, u64>,
    by_ino: HashMap<u64, BTreeSet<u64>>,
    held: HashSet<u64>,
    /// seq → (ino, blocked_by) of quarantined records.
    quarantine: BTreeMap<u64, (u64, Option<u64>)>,
}

/// How to take an index change back when the store write fails.
pub(super) enum Undo {
    Inserted(u64),
    Removed(u64, u64),
    Unquarantined(u64, u64, Option<u64>),
    NextSeq(u64),
}

impl Index {
    fn tail(&self) -> Option<u64> {
        self.records.keys().next_back().copied()
    }
    fn insert(&mut self, seq: u64, ino: u64, undo: &mut Vec<Undo>) {
        self.records.insert(seq, ino);
        self.by_ino.entry(ino).or_default().insert(seq);
        undo.push(Undo::Inserted(seq));
    }
    fn remove(&mut self, seq: u64, undo: &mut Vec<Undo>) {
        if let Some(ino) = self.records.remove(&seq) {
            if let Some(s) = self.by_ino.get_mut(&ino) {
                s.remove(&seq);
                if s.is_empty() {
                    self.by_ino.remove(&ino);
                }
            }
            self.held.remove(&seq);
            undo.push(Undo::Removed(seq, ino));
        }
    }
    fn alloc(&mut self, undo: &mut Vec<Undo>) -> u64 {
        undo.push(Undo::NextSeq(self.next_seq));
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }
    /// Takes back changes made for a store write that failed.
    pub(super) fn undo(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Inserted(seq) => {
                    let mut sink = Vec::new();
                    self.remove(seq, &mut sink);
                }
                Undo::Removed(seq, ino) => {
                    self.records.insert(seq, ino);
                    self.by_ino.entry(ino).or_default().insert(seq);
                }
                Undo::Unquarantined(seq, ino, by) => {
                    self.quarantine.insert(seq, (ino, by));
                }
                Undo::NextSeq(n) => self.next_seq = n,
            }
        }
    }

    /// Resolves one intent into store writes, changing the index (see the
    /// module docs for the merge rules). `kv` is read for quarantined
    /// records that return to the journal.
    pub(super) fn resolve(
        &mut self,
        kv: &dyn Kv,
        intent: Intent,
        writes: &mut Vec<KvWrite>,
        undo: &mut Vec<Undo>,
    ) -> VfsResult<()> {
        let ino = match &intent {
            Intent::Record { op, .. } => op.ino(),
            Intent::Settle { ino } => *ino,
        };
        // A new local change supersedes the node's refused ones.
        let superseded = self.unquarantine(ino, writes, undo);
        let seqs: Vec<u64> = self
            .by_ino
            .get(&ino)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let any_held = seqs.iter().any(|s| self.held.contains(s));
        let last = seqs.last().copied();
        let Intent::Record {
            mut op,
            on_server,
            is_dir,
        } = intent
        else {
            return self.release_blocked(kv, ino, writes, undo);
        };
        match &mut op {
            JournalOp::Upsert { moved, .. } => {
                *moved |= superseded;
                let moved = *moved;
                let last_free = last.filter(|s| !self.held.contains(s));
                if !moved && last_free.is_some() {
                    // The pending record sends the current attributes.
                } else if moved && !on_server && !is_dir && !any_held && !seqs.is_empty() {
                    self.remove_all(&seqs, writes, undo);
                    self.append(op, writes, undo);
                } else if let Some(s) = last_free.filter(|_| moved && last == self.tail()) {
                    writes.push((rec_key(REC, s), Some(enc(&op))));
                } else {
                    self.append(op, writes, undo);
                }
            }
            JournalOp::Delete { .. } => {
                let never_sent = !on_server && !any_held;
                let only_tail = seqs.len() == 1 && last == self.tail();
                if never_sent && (seqs.is_empty() || !is_dir || only_tail) {
                    self.remove_all(&seqs, writes, undo);
                } else {
                    self.append(op, writes, undo);
                }
            }
        }
        self.release_blocked(kv, ino, writes, undo)
    }

    fn remove_all(&mut self, seqs: &[u64], writes: &mut Vec<KvWrite>, undo: &mut Vec<Undo>) {
        for s in seqs {
            writes.push((rec_key(REC, *s), None));
            self.remove(*s, undo);
        }
    }

    fn append(&mut self, op: JournalOp, writes: &mut Vec<KvWrite>, undo: &mut Vec<Undo>) {
        let seq = self.alloc(undo);
        let ino = op.ino();
        writes.push((rec_key(REC, seq), Some(enc(&op))));
        writes.push((NEXT_SEQ.to_vec(), Some(enc(&self.next_seq))));
        self.insert(seq, ino, undo);
    }

    /// Drops the node's own quarantined records; true if there were any.
    fn unquarantine(&mut self, ino: u64, writes: &mut Vec<KvWrite>, undo: &mut Vec<Undo>) -> bool {
        let mine: Vec<(u64, Option<u64>)> = self
            .quarantine
            .iter()
            .filter(|(_, (i, _))| *i == ino)
            .map(|(s, (_, by))| (*s, *by))
            .collect();
        for (s, by) in &mine {
            self.quarantine.remove(s);
            writes.push((rec_key(QUAR, *s), None));
            undo.push(Undo::Unquarantined(*s, ino, *by));
        }
        !mine.is_empty()
    }

    /// Records held back because folder `ino` was refused go back to the
    /// journal's tail, in their order.
    fn release_blocked(
        &mut self,
        kv: &dyn Kv,
        ino: u64,
        writes: &mut Vec<KvWrite>,
        undo: &mut Vec<Undo>,
    ) -> VfsResult<()> {
        let blocked: Vec<(u64, u64)> = self
            .quarantine
            .iter()
            .filter(|(_, (_, by))| *by == Some(ino))
            .map(|(s, (i, _))| (*s, *i))
            .collect();
        for (s, child) in blocked {
            let Some(bytes) = kv.get(&rec_key(QUAR, s))? else {
                continue;
            };
            let q: Quarantined = dec(&bytes)?;
            self.quarantine.remove(&s);
            writes.push((rec_key(QUAR, s), None));
            undo.push(Undo::Unquarantined(s, child, Some(ino)));
            self.append(q.op, writes, undo);
        }
        Ok(())
    }
}

/// The journal's index and the operations the uploader and status queries
/// use. The records themselves live in the store.
pub struct Journal {
    index: Mutex<Index>,
}

impl Journal {
    /// Loads the index from the store, converting records of the first
    /// format (`j` keys: `Sync { ino }` / `Delete`) on the way. Every record
    /// found is held: a round may have sent it before the last shutdown.
    pub fn open(
        kv: &dyn Kv,
        place_of: impl Fn(u64) -> Option<(NodeId, String)>,
    ) -> VfsResult<Self> {
        migrate_legacy(kv, &place_of)?;
        let mut idx = Index {
            next_seq: match kv.get(NEXT_SEQ)? {
                Some(b) => dec::<u64>(&b)?.max(1),
                None => 1,
            },
            ..Default::default()
        };
        let mut sink = Vec::new();
        for (k, v) in scan_all(kv, REC)? {
            let seq = seq_of(&k)?;
            let op: JournalOp = dec(&v)?;
            idx.insert(seq, op.ino(), &mut sink);
            idx.held.insert(seq);
            idx.next_seq = idx.next_seq.max(seq + 1);
        }
        for (k, v) in scan_all(kv, QUAR)? {
            let seq = seq_of(&k)?;
            let q: Quarantined = dec(&v)?;
            idx.quarantine.insert(seq, (q.op.ino(), q.blocked_by));
            idx.next_seq = idx.next_seq.max(seq + 1);
        }
        Ok(Journal {
            index: Mutex::new(idx),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock()
    }

    /// Number of records in the journal (quarantined ones excluded).
    pub fn len(&self) -> u64 {
        self.index.lock().records.len() as u64
    }

    /// True when the journal holds no record.
    pub fn is_empty(&self) -> bool {
        self.index.lock().records.is_empty()
    }

    /// True while a record of `ino` waits in the journal.
    pub fn has_records(&self, ino: u64) -> bool {
        self.index.lock().by_ino.contains_key(&ino)
    }

    /// True while a refused change of `ino` sits in the quarantine.
    pub fn is_quarantined(&self, ino: u64) -> bool {
        self.index
            .lock()
            .quarantine
            .values()
            .any(|(i, _)| *i == ino)
    }

    /// The inodes with records in the journal, and those with quarantined
    /// records, without duplicates.
    pub fn pending_inos(&self) -> Vec<u64> {
        let idx = self.index.lock();
        let mut set: BTreeSet<u64> = idx.by_ino.keys().copied().collect();
        set.extend(idx.quarantine.values().map(|(i, _)| *i));
        set.into_iter().collect()
    }

    /// Up to `limit` records in order, skipping those `skip` says must wait
    /// (files still open for writing); the records taken are held:
    /// [`Journal::finish`] removes them once the server answered; after a round that failed they stay
    /// held (it may have reached the server).
    pub fn take(
        &self,
        kv: &dyn Kv,
        limit: usize,
        mut skip: impl FnMut(&JournalOp) -> bool,
    ) -> VfsResult<Vec<(u64, JournalOp)>> {
        let mut out = Vec::new();
        let mut from = 0;
        'pages: while out.len() < limit {
            // A page of sequence numbers at a time: `skip` takes other
            // locks, so the index's lock is not held while it runs.
            let page: Vec<u64> = self
                .index
                .lock()
                .records
                .range(from..)
                .take(1024)
                .map(|(s, _)| *s)
                .collect();
            let Some(&last) = page.last() else { break };
            from = last + 1;
            for seq in page {
                if out.len() >= limit {
                    break 'pages;
                }
                // Held before it is read: a held record is never rewritten,
                // so what is read is what will be sent. (Transactions write
                // records under this lock, so store and index agree here.)
                let (op, was_held) = {
                    let mut idx = self.index.lock();
                    if !idx.records.contains_key(&seq) {
                        continue;
                    }
                    let Some(bytes) = kv.get(&rec_key(REC, seq))? else {
                        continue;
                    };
                    (dec::<JournalOp>(&bytes)?, !idx.held.insert(seq))
                };
                if skip(&op) {
                    if !was_held {
                        self.index.lock().held.remove(&seq);
                    }
                    continue;
                }
                out.push((seq, op));
            }
        }
        Ok(out)
    }

    /// The server has answered for `done`: they leave the journal, and
    /// `refused` move to the quarantine, in one atomic batch.
    pub fn finish(
        &self,
        kv: &dyn Kv,
        done: &[u64],
        refused: Vec<(u64, Quarantined)>,
    ) -> VfsResult<()> {
        let mut idx = self.index.lock();
        let mut writes = Vec::new();
        let mut undo = Vec::new();
        for s in done {
            writes.push((rec_key(REC, *s), None));
            idx.remove(*s, &mut undo);
        }
        for (s, q) in &refused {
            writes.push((rec_key(REC, *s), None));
            writes.push((rec_key(QUAR, *s), Some(enc(q))));
            idx.remove(*s, &mut undo);
            idx.quarantine.insert(*s, (q.op.ino(), q.blocked_by));
        }
        if let Err(e) = kv.apply(writes) {
            for (s, _) in &refused {
                idx.quarantine.remove(s);
            }
            idx.undo(undo);
            return Err(e);
        }
        Ok(())
    }

    /// Puts `q` in the quarantine under a new sequence number: a change
    /// that was never journaled but must be shown (lost local content).
    pub fn report(&self, kv: &dyn Kv, q: Quarantined) -> VfsResult<()> {
        let mut idx = self.index.lock();
        let mut undo = Vec::new();
        let seq = idx.alloc(&mut undo);
        let writes = vec![
            (rec_key(QUAR, seq), Some(enc(&q))),
            (NEXT_SEQ.to_vec(), Some(enc(&idx.next_seq))),
        ];
        if let Err(e) = kv.apply(writes) {
            idx.undo(undo);
            return Err(e);
        }
        idx.quarantine.insert(seq, (q.op.ino(), q.blocked_by));
        Ok(())
    }

    /// The record with sequence number `seq`, if it is still in the journal.
    pub fn record(&self, kv: &dyn Kv, seq: u64) -> VfsResult<Option<JournalOp>> {
        kv.get(&rec_key(REC, seq))?.map(|b| dec(&b)).transpose()
    }

    /// Every quarantined record with its sequence number, oldest first.
    pub fn quarantined(&self, kv: &dyn Kv) -> VfsResult<Vec<(u64, Quarantined)>> {
        scan_all(kv, QUAR)?
            .into_iter()
            .map(|(k, v)| Ok((seq_of(&k)?, dec(&v)?)))
            .collect()
    }
}

fn scan_all(kv: &dyn Kv, tag: u8) -> VfsResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut start = vec![tag];
    loop {
        let page = kv.scan(&[tag], &start, 4096)?;
        let Some((last, _)) = page.last() else { break };
        start = rec_key(tag, seq_of(last)? + 1);
        out.extend(page);
    }
    Ok(out)
}

/// The record format before the journal carried places.
#[derive(Deserialize)]
enum LegacyOp {
    Sync {
        ino: u64,
    },
    Delete {
        node_id: NodeId,
        base: VersionVector,
        parent: u64,
        name: String,
    },
}

/// The `n` key of the metadata layout: node id → ino.
fn legacy_ino_of(kv: &dyn Kv, node: &NodeId) -> VfsResult<Option<u64>> {
    let mut k = vec![b'n'];
    k.extend_from_slice(node.as_bytes());
    kv.get(&k)?.map(|b| dec(&b)).transpose()
}

fn migrate_legacy(
    kv: &dyn Kv,
    place_of: &impl Fn(u64) -> Option<(NodeId, String)>,
) -> VfsResult<()> {
    let legacy = scan_all(kv, LEGACY_REC)?;
    if legacy.is_empty() {
        return Ok(());
    }
    let mut writes = Vec::new();
    for (k, v) in legacy {
        let seq = seq_of(&k)?;
        writes.push((k, None));
        let op = match dec::<LegacyOp>(&v)? {
            LegacyOp::Sync { ino } => match place_of(ino) {
                Some((parent, name)) => JournalOp::Upsert {
                    ino,
                    parent,
                    name,
                    moved: true,
                    links: Vec::new(),
                },
                None => continue,
            },
            LegacyOp::Delete {
                node_id,
                base,
                parent,
                name,
            } => JournalOp::Delete {
                ino: legacy_ino_of(kv, &node_id)?.unwrap_or(0),
                node_id,
                base,
                parent,
                name,
            },
        };
        writes.push((rec_key(REC, seq), Some(enc(&op))));
    }
    tracing::info!("journal: converted records of the first format");
    kv.apply(writes)
}

#[cfg(test)]
mod tests;
