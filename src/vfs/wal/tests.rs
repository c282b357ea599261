use super::*;
use crate::vfs::test_support::{CrashKv, SimDisk};
use proptest::prelude::*;

fn put(k: &str, v: &str) -> KvWrite {
    (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec()))
}

fn del(k: &str) -> KvWrite {
    (k.as_bytes().to_vec(), None)
}

fn all(kv: &dyn Kv, limit: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut start = b"k".to_vec();
    loop {
        let page = kv.scan(b"k", &start, limit).unwrap();
        let n = page.len();
        for (k, v) in page {
            start = next_key(&k);
            out.push((String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()));
        }
        if n < limit {
            return out;
        }
    }
}

struct Setup {
    dir: tempfile::TempDir,
    inner: Arc<CrashKv>,
    disk: Arc<SimDisk>,
}

impl Setup {
    fn new() -> Self {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            inner: Arc::new(CrashKv::default()),
            disk: Arc::new(SimDisk::default()),
        }
    }
    fn open(&self, boot: &str) -> Arc<WalKv> {
        WalKv::open(
            self.inner.clone(),
            &self.dir.path().join("wal"),
            self.disk.clone(),
            boot.into(),
        )
        .unwrap()
    }
    /// The machine loses power: the inner store keeps what it flushed,
    /// the log what was synced.
    fn power_loss(&mut self) {
        self.disk.power_loss(&[&self.dir.path().join("wal")]);
        self.inner = self.inner.after_crash();
    }
}

#[test]
fn reads_merge_the_log_over_the_store_and_pages_refill() {
    let s = Setup::new();
    let wal = s.open("boot-1");
    wal.apply((0..10).map(|i| put(&format!("k{i:02}"), "old")).collect())
        .unwrap();
    wal.writeback().unwrap(); // into the inner store
    wal.apply(vec![
        del("k03"),
        put("k04", "new"),
        put("k10", "added"),
        del("k05"),
    ])
    .unwrap();
    for limit in [1, 2, 3, 100] {
        let got = all(wal.as_ref(), limit);
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["k00", "k01", "k02", "k04", "k06", "k07", "k08", "k09", "k10"],
            "limit {limit}"
        );
        assert_eq!(got[3].1, "new");
    }
    assert_eq!(wal.get(b"k03").unwrap(), None);
    assert_eq!(wal.get(b"k04").unwrap(), Some(b"new".to_vec()));
    assert_eq!(wal.get(b"k00").unwrap(), Some(b"old".to_vec()));
}

#[test]
fn a_process_crash_keeps_every_batch_written() {
    let s = Setup::new();
    let wal = s.open("boot-1");
    wal.apply(vec![put("k1", "a")]).unwrap();
    wal.flush().unwrap();
    wal.apply(vec![put("k2", "b"), del("k1")]).unwrap();
    drop(wal); // kill -9: the log file is in the page cache; the inner store
               // has only what it flushed
    let inner = s.inner.after_crash();
    let wal = WalKv::open(
        inner,
        &s.dir.path().join("wal"),
        s.disk.clone(),
        "boot-1".into(),
    )
    .unwrap();
    assert_eq!(all(wal.as_ref(), 10), [("k2".into(), "b".into())]);
}

#[test]
fn a_power_loss_keeps_what_was_synced_and_nothing_after() {
    let mut s = Setup::new();
    let wal = s.open("boot-1");
    wal.apply(vec![put("k1", "a")]).unwrap();
    wal.flush().unwrap();
    wal.apply(vec![put("k2", "b")]).unwrap();
    drop(wal);
    s.power_loss();
    let wal = s.open("boot-2");
    assert_eq!(all(wal.as_ref(), 10), [("k1".into(), "a".into())]);
    // Records written without a sync after a reboot are kept only if a
    // sync marker covers them, even if the bytes reached the disk.
    wal.apply(vec![put("k3", "c")]).unwrap();
    drop(wal);
    let wal = WalKv::open(
        s.inner.after_crash(),
        &s.dir.path().join("wal"),
        s.disk.clone(),
        "boot-3".into(),
    )
    .unwrap();
    assert_eq!(all(wal.as_ref(), 10), [("k1".into(), "a".into())]);
}

#[test]
fn a_torn_tail_is_dropped_and_what_precedes_it_kept() {
    let s = Setup::new();
    let wal = s.open("boot-1");
    wal.apply(vec![put("k1", "a")]).unwrap();
    wal.apply(vec![put("k2", "b")]).unwrap();
    let path = wal.log.lock().path.clone();
    drop(wal);
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 5).unwrap();
    let wal = WalKv::open(
        s.inner.after_crash(),
        &s.dir.path().join("wal"),
        s.disk.clone(),
        "boot-1".into(),
    )
    .unwrap();
    assert_eq!(all(wal.as_ref(), 10), [("k1".into(), "a".into())]);
}

#[test]
fn content_is_synced_before_the_log_that_refers_to_it() {
    let s = Setup::new();
    let wal = s.open("boot-1");
    let content = s.dir.path().join("work-f");
    let f = Arc::new(std::fs::File::create(&content).unwrap());
    std::fs::write(&content, b"bytes").unwrap();
    wal.order_data(&content, &f, Some(s.dir.path()));
    wal.apply(vec![put("k1", "refers to work-f")]).unwrap();
    assert!(!s.disk.synced.lock().contains_key(&content));
    wal.flush().unwrap();
    assert_eq!(s.disk.synced.lock()[&content], b"bytes");
}

#[test]
fn concurrent_flushes_share_one_sync() {
    let s = Setup::new();
    let wal = s.open("boot-1");
    wal.apply(vec![put("k1", "a")]).unwrap();
    wal.flush().unwrap();
    let (_, synced) = wal.positions();
    wal.flush().unwrap(); // nothing new: no marker, no sync
    assert_eq!(wal.positions(), (synced, synced));
}

#[test]
fn a_removal_waits_for_the_sync_and_a_new_file_cancels_it() {
    let s = Setup::new();
    let wal = s.open("boot-1");
    let a = s.dir.path().join("a");
    let b = s.dir.path().join("b");
    std::fs::write(&a, b"a").unwrap();
    std::fs::write(&b, b"b").unwrap();
    wal.apply(vec![put("k1", "a is unneeded")]).unwrap();
    wal.remove_when_durable(a.clone());
    wal.remove_when_durable(b.clone());
    assert!(a.exists() && b.exists(), "not before the sync");
    wal.keep_file(&b); // created there again
    wal.flush().unwrap();
    assert!(!a.exists());
    assert!(b.exists());
}

#[test]
fn segments_rotate_and_a_resurrected_old_segment_changes_nothing() {
    let mut s = Setup::new();
    let wal = s.open("boot-1");
    let big = "x".repeat(1 << 20);
    for i in 0..40 {
        wal.apply(vec![put(&format!("k{}", i % 3), &big)]).unwrap();
        wal.writeback().unwrap();
    }
    wal.apply(vec![put("k0", "last")]).unwrap();
    wal.writeback().unwrap();
    let segments = std::fs::read_dir(s.dir.path().join("wal")).unwrap().count();
    assert_eq!(segments, 1, "the full segment was deleted");
    drop(wal);
    // The deleted segment comes back (its removal was never synced).
    s.power_loss();
    assert!(std::fs::read_dir(s.dir.path().join("wal")).unwrap().count() > 1);
    let wal = s.open("boot-2");
    assert_eq!(wal.get(b"k0").unwrap(), Some(b"last".to_vec()));
}

#[derive(Clone, Debug)]
enum Step {
    Put(u8, u8),
    Del(u8),
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..6, any::<u8>()).prop_map(|(k, v)| Step::Put(k, v)),
        2 => (0u8..6).prop_map(Step::Del),
        1 => Just(Step::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Over random batches, syncs and crashes: a process crash keeps every
    /// batch; a power loss keeps exactly the batches up to the last sync.
    #[test]
    fn recovery_is_a_prefix_with_everything_synced(
        rounds in proptest::collection::vec((proptest::collection::vec(step(), 0..12), any::<bool>()), 1..4)
    ) {
        let mut s = Setup::new();
        let mut model: BTreeMap<String, String> = BTreeMap::new();
        let mut durable = model.clone();
        let mut boot = 0;
        let mut wal = s.open("boot-0");
        for (steps, power) in rounds {
            for st in steps {
                match st {
                    Step::Put(k, v) => {
                        let k = format!("k{k}");
                        wal.apply(vec![put(&k, &v.to_string())]).unwrap();
                        model.insert(k, v.to_string());
                    }
                    Step::Del(k) => {
                        let k = format!("k{k}");
                        wal.apply(vec![del(&k)]).unwrap();
                        model.remove(&k);
                    }
                    Step::Flush => {
                        wal.flush().unwrap();
                        durable = model.clone();
                    }
                }
            }
            drop(wal);
            if power {
                s.power_loss();
                boot += 1;
                model = durable.clone();
            } else {
                s.inner = s.inner.after_crash();
            }
            wal = s.open(&format!("boot-{boot}"));
            let got: BTreeMap<String, String> = all(wal.as_ref(), 4).into_iter().collect();
            prop_assert_eq!(&got, &model);
            // Recovery flushed it all into the inner store.
            durable = model.clone();
        }
    }
}

#[test]
fn the_writeback_moves_what_a_flush_made_durable_into_the_store() {
    let s = Setup::new();
    let wal = s.open("boot-1");
    wal.apply(vec![put("k1", "a"), put("k2", "b")]).unwrap();
    wal.flush().unwrap();
    wal.apply(vec![del("k2")]).unwrap();
    // Reads merge whatever has moved so far.
    assert_eq!(wal.get(b"k1").unwrap(), Some(b"a".to_vec()));
    assert_eq!(wal.get(b"k2").unwrap(), None);
    wal.writeback().unwrap();
    assert_eq!(s.inner.get(b"k1").unwrap(), Some(b"a".to_vec()));
    // The delete was made durable by the writeback's own sync.
    assert_eq!(s.inner.get(b"k2").unwrap(), None);
    assert!(!wal.writeback_due());
}
