//! The merge rules of the journal, on the metadata store without a vfs.

use super::*;
use crate::protocol::NodeKind;
use crate::vfs::kv::SledKv;
use crate::vfs::meta::{Inode, MetaCache, ROOT_INO};
use std::sync::Arc;

struct Fx {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    meta: MetaCache,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        let meta = MetaCache::open(Arc::new(SledKv::open(&path).unwrap())).unwrap();
        let root = Inode::new(ROOT_INO, NodeId::ROOT, 0, "", NodeKind::Dir, 0o755);
        let ns = meta.lock_ns();
        let mut t = meta.txn(&ns);
        t.create_inode(&root);
        t.commit().unwrap();
        drop(ns);
        Fx {
            _dir: dir,
            path,
            meta,
        }
    }
    fn reopen(self) -> Fx {
        let Fx { _dir, path, meta } = self;
        drop(meta);
        let meta = MetaCache::open(Arc::new(SledKv::open(&path).unwrap())).unwrap();
        Fx { _dir, path, meta }
    }
    fn node(&self, name: &str, kind: NodeKind) -> Inode {
        let i = Inode::new(
            self.meta.alloc_ino(&self.meta.lock_ns()),
            NodeId::random(),
            ROOT_INO,
            name,
            kind,
            0o644,
        );
        let ns = self.meta.lock_ns();
        let mut t = self.meta.txn(&ns);
        t.create_inode(&i);
        t.journal_upsert(&i, true).unwrap();
        t.commit().unwrap();
        drop(ns);
        i
    }
    fn upsert(&self, i: &Inode, moved: bool) {
        let ns = self.meta.lock_ns();
        let mut t = self.meta.txn(&ns);
        t.put_inode(i).journal_upsert(i, moved).unwrap();
        t.commit().unwrap();
        drop(ns);
    }
    fn delete(&self, i: &Inode) {
        let ns = self.meta.lock_ns();
        let mut t = self.meta.txn(&ns);
        t.journal_delete(i, i.parent, &i.name);
        t.commit().unwrap();
        drop(ns);
    }
    fn records(&self) -> Vec<JournalOp> {
        self.meta
            .journal()
            .take(self.meta.kv().as_ref(), usize::MAX, |_| false)
            .unwrap()
            .into_iter()
            .map(|(_, op)| op)
            .collect()
    }
    fn take(&self) -> Vec<(u64, JournalOp)> {
        self.meta
            .journal()
            .take(self.meta.kv().as_ref(), usize::MAX, |_| false)
            .unwrap()
    }
}

fn on_server(mut i: Inode) -> Inode {
    i.server_seq = 1;
    i
}

#[test]
fn a_new_file_is_one_record_whatever_happens_to_it() {
    let fx = Fx::new();
    let mut f = fx.node("a.lock", NodeKind::File);
    fx.upsert(&f, false); // close
    fx.upsert(&f, false); // chmod
    let other = fx.node("b", NodeKind::File);
    f.name = "a".into();
    fx.upsert(&f, true); // rename after another record: moves to the tail
    let recs = fx.records();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0].ino(), other.ino);
    assert!(matches!(&recs[1], JournalOp::Upsert { name, .. } if name == "a"));
    // Removed before it was ever sent: nothing to tell the server.
    let fx2 = Fx::new();
    let t = fx2.node("tmp", NodeKind::File);
    fx2.delete(&t);
    assert!(fx2.records().is_empty());
    assert_eq!(fx2.meta.journal_len(), 0);
}

#[test]
fn a_held_record_is_never_merged_into() {
    let fx = Fx::new();
    let f = fx.node("f", NodeKind::File);
    let taken = fx.take(); // a round is in flight with it
    assert_eq!(taken.len(), 1);
    fx.upsert(&f, false); // written meanwhile: needs its own record
    fx.delete(&f); // and deleted: the delete must follow the create
    let recs = fx.records();
    assert_eq!(recs.len(), 3, "{recs:?}");
    assert!(matches!(recs[2], JournalOp::Delete { .. }));
}

#[test]
fn places_are_replayed_in_order() {
    let fx = Fx::new();
    // `g` is on the server; it moves away, then a new file takes its name.
    let mut g = on_server(fx.node("g", NodeKind::File));
    fx.meta
        .journal()
        .finish(fx.meta.kv().as_ref(), &[fx.take()[0].0], Vec::new())
        .unwrap();
    g.name = "g.old".into();
    fx.upsert(&g, true);
    let n = fx.node("g", NodeKind::File);
    let mut recs = fx.records();
    assert_eq!(recs.len(), 2);
    assert!(
        matches!(&recs[0], JournalOp::Upsert { name, ino, .. } if name == "g.old" && *ino == g.ino)
    );
    assert!(
        matches!(&recs[1], JournalOp::Upsert { name, ino, .. } if name == "g" && *ino == n.ino)
    );
    // A folder's records are not collapsed past others: its create stays
    // first, its rename goes last.
    let mut d = fx.node("d", NodeKind::Dir);
    let child = Inode::new(
        fx.meta.alloc_ino(&fx.meta.lock_ns()),
        NodeId::random(),
        d.ino,
        "c",
        NodeKind::File,
        0o644,
    );
    let ns = fx.meta.lock_ns();
    let mut t = fx.meta.txn(&ns);
    t.put_inode(&d).create_inode(&child);
    t.journal_upsert(&child, true).unwrap();
    t.commit().unwrap();
    drop(ns);
    d.name = "e".into();
    fx.upsert(&d, true);
    recs = fx.records();
    let names: Vec<_> = recs
        .iter()
        .map(|r| match r {
            JournalOp::Upsert { name, .. } => name.clone(),
            JournalOp::Delete { name, .. } => format!("-{name}"),
        })
        .collect();
    assert_eq!(names, ["g.old", "g", "d", "c", "e"]);
}

#[test]
fn a_new_folder_chain_removed_at_once_leaves_nothing() {
    let fx = Fx::new();
    let mut chain = Vec::new();
    let mut parent = ROOT_INO;
    for i in 0..5 {
        let d = Inode::new(
            fx.meta.alloc_ino(&fx.meta.lock_ns()),
            NodeId::random(),
            parent,
            &format!("d{i}"),
            NodeKind::Dir,
            0o755,
        );
        let ns = fx.meta.lock_ns();
        let mut t = fx.meta.txn(&ns);
        t.create_inode(&d);
        t.journal_upsert(&d, true).unwrap();
        t.commit().unwrap();
        drop(ns);
        parent = d.ino;
        chain.push(d);
    }
    for d in chain.iter().rev() {
        fx.delete(d);
    }
    assert_eq!(fx.meta.journal_len(), 0, "{:?}", fx.records());
}

#[test]
fn records_found_at_open_are_held_and_counters_survive() {
    let fx = Fx::new();
    let f = fx.node("f", NodeKind::File);
    fx.meta.flush().unwrap();
    let fx = fx.reopen();
    // A round may have sent the create before the restart: its delete
    // must be sent too.
    fx.delete(&f);
    let recs = fx.records();
    assert_eq!(recs.len(), 2, "{recs:?}");
    let seqs: Vec<u64> = fx.take().into_iter().map(|(s, _)| s).collect();
    assert!(seqs[0] < seqs[1]);
    let g = fx.node("g", NodeKind::File);
    let last = fx.take().last().unwrap().0;
    assert!(last > seqs[1], "sequence numbers only grow");
    assert_eq!(g.ino, f.ino + 1);
}

#[test]
fn quarantine_holds_a_refused_record_until_the_next_change() {
    let fx = Fx::new();
    let kv = fx.meta.kv().clone();
    let d = fx.node("bad", NodeKind::Dir);
    let child = Inode::new(
        fx.meta.alloc_ino(&fx.meta.lock_ns()),
        NodeId::random(),
        d.ino,
        "c",
        NodeKind::File,
        0o644,
    );
    let ns = fx.meta.lock_ns();
    let mut t = fx.meta.txn(&ns);
    t.create_inode(&child);
    t.journal_upsert(&child, true).unwrap();
    t.commit().unwrap();
    drop(ns);
    let taken = fx.take();
    let q = |op: JournalOp, by: Option<u64>| Quarantined {
        op,
        path: "bad".into(),
        reason: "refused".into(),
        at_unix: 0,
        blocked_by: by,
    };
    fx.meta
        .journal()
        .finish(
            kv.as_ref(),
            &[],
            vec![
                (taken[0].0, q(taken[0].1.clone(), None)),
                (taken[1].0, q(taken[1].1.clone(), Some(d.ino))),
            ],
        )
        .unwrap();
    let j = fx.meta.journal();
    assert_eq!(j.len(), 0);
    assert!(j.is_quarantined(d.ino) && j.is_quarantined(child.ino));
    assert_eq!(j.pending_inos(), vec![d.ino, child.ino]);
    drop(kv);
    let fx = fx.reopen();
    assert!(
        fx.meta.journal().is_quarantined(child.ino),
        "survives a restart"
    );
    // The user renames the folder: it and its held-back child go again.
    let mut d2 = d.clone();
    d2.name = "good".into();
    fx.upsert(&d2, false);
    let j = fx.meta.journal();
    assert!(!j.is_quarantined(d.ino) && !j.is_quarantined(child.ino));
    let recs = fx.records();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(matches!(&recs[0], JournalOp::Upsert { name, moved: true, .. } if name == "good"));
    assert_eq!(recs[1].ino(), child.ino);
    assert!(fx
        .meta
        .journal()
        .quarantined(fx.meta.kv().as_ref())
        .unwrap()
        .is_empty());
}

/// Scenario 8: transactions committing at once from several threads never
/// persist a counter smaller than one already used, so after a restart no
/// inode number or journal sequence is handed out twice.
#[test]
fn concurrent_transactions_never_move_counters_back() {
    let fx = Fx::new();
    let meta = &fx.meta;
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for i in 0..150 {
                    let ino = meta.alloc_ino(&meta.lock_ns());
                    let node = Inode::new(
                        ino,
                        NodeId::random(),
                        ROOT_INO,
                        &format!("t{t}-{i}"),
                        NodeKind::Dir,
                        0o755,
                    );
                    let ns = meta.lock_ns();
                    let mut txn = meta.txn(&ns);
                    txn.create_inode(&node);
                    txn.journal_upsert(&node, true).unwrap();
                    txn.commit().unwrap();
                    drop(ns);
                }
            });
        }
    });
    let highest_ino = fx
        .meta
        .all_inodes()
        .unwrap()
        .iter()
        .map(|i| i.ino)
        .max()
        .unwrap();
    let highest_seq = fx.take().iter().map(|(s, _)| *s).max().unwrap();
    fx.meta.flush().unwrap();
    let fx = fx.reopen();
    assert!(fx.meta.alloc_ino(&fx.meta.lock_ns()) > highest_ino);
    let fresh = fx.node("after", NodeKind::Dir);
    assert!(fresh.ino > highest_ino);
    let newest = fx.take().iter().map(|(s, _)| *s).max().unwrap();
    assert!(newest > highest_seq);
    assert_eq!(fx.meta.journal_len(), 8 * 150 + 1);
}
