//! Machine-crash safety of the write path, shown without a machine crash:
//! the core runs over the write-ahead log on a [`SimDisk`] that, on a
//! simulated power loss, keeps only what was synced through it (working
//! copies and log segments) and a store that keeps only what it flushed.
//! Over random operation sequences the recovered tree is always the tree
//! after some prefix of the operations, never shorter than the last
//! `fsync`; a crash of the process alone keeps every operation.

use super::test_support::{open_vfs_on, CrashKv, SimDisk};
use super::wal::WalKv;
use super::*;
use crate::remote::memory::MemoryRemote;
use proptest::prelude::*;

type Tree = BTreeMap<String, (Vec<u8>, u32)>;

#[derive(Clone, Debug)]
enum Op {
    Write(u8, Vec<u8>),
    Rename(u8, u8),
    Unlink(u8),
    Chmod(u8, u32),
    Fsync(u8),
    FsyncDir,
}

fn name(n: u8) -> String {
    format!("f{n}")
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u8..5, proptest::collection::vec(any::<u8>(), 0..3000)).prop_map(|(n, d)| Op::Write(n, d)),
        2 => (0u8..5, 0u8..5).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (0u8..5).prop_map(Op::Unlink),
        1 => (0u8..5, 0o600u32..0o700).prop_map(|(n, m)| Op::Chmod(n, m)),
        1 => (0u8..5).prop_map(Op::Fsync),
        1 => Just(Op::FsyncDir),
    ]
}

struct Device {
    dir: tempfile::TempDir,
    inner: Arc<CrashKv>,
    disk: Arc<SimDisk>,
    id: DeviceId,
}

impl Device {
    fn open(&self, boot: &str) -> Arc<Vfs> {
        let wal = WalKv::open(
            self.inner.clone(),
            &self.dir.path().join("wal"),
            self.disk.clone(),
            boot.into(),
        )
        .unwrap();
        let remote = Arc::new(MemoryRemote::new(self.id));
        open_vfs_on(wal, self.dir.path(), self.id, "laptop", remote)
    }
}

/// Applies `op` to the core and the model; `true` when it was a sync.
fn apply(vfs: &Vfs, tree: &mut Tree, op: &Op) -> bool {
    let ino = |n: u8| vfs.lookup(ROOT_INO, name(n).as_bytes()).ok().map(|a| a.ino);
    match op {
        Op::Write(n, data) => {
            let fh = match ino(*n) {
                Some(i) => vfs.open_file(i, true, true).unwrap(),
                None => {
                    vfs.create(ROOT_INO, name(*n).as_bytes(), 0o644, true)
                        .unwrap()
                        .1
                }
            };
            vfs.write(fh, 0, data).ready().unwrap();
            vfs.release(fh).unwrap();
            let mode = tree.get(&name(*n)).map_or(0o644, |e| e.1);
            tree.insert(name(*n), (data.clone(), mode));
        }
        Op::Rename(a, b) => {
            if a != b && tree.contains_key(&name(*a)) {
                vfs.rename(
                    ROOT_INO,
                    name(*a).as_bytes(),
                    ROOT_INO,
                    name(*b).as_bytes(),
                    false,
                )
                .unwrap();
                let e = tree.remove(&name(*a)).unwrap();
                tree.insert(name(*b), e);
            }
        }
        Op::Unlink(n) => {
            if tree.remove(&name(*n)).is_some() {
                vfs.unlink(ROOT_INO, name(*n).as_bytes()).unwrap();
            }
        }
        Op::Chmod(n, m) => {
            if let (Some(i), Some(e)) = (ino(*n), tree.get_mut(&name(*n))) {
                let set = SetAttr {
                    mode: Some(*m),
                    ..Default::default()
                };
                vfs.setattr(i, set).ready().unwrap();
                e.1 = *m;
            }
        }
        Op::Fsync(n) => {
            if let Some(i) = ino(*n) {
                let fh = vfs.open_file(i, false, false).unwrap();
                vfs.fsync(fh).unwrap();
                vfs.release(fh).unwrap();
                return true;
            }
        }
        Op::FsyncDir => {
            vfs.fsync_all().unwrap();
            return true;
        }
    }
    false
}

fn tree_of(vfs: &Vfs) -> Tree {
    let mut out = Tree::new();
    for e in vfs.readdir(ROOT_INO, None, 1000).unwrap() {
        let a = vfs.getattr(e.ino).unwrap();
        let fh = vfs.open_file(e.ino, false, false).unwrap();
        let data = vfs.read(fh, 0, 1 << 20).ready().unwrap();
        vfs.release(fh).unwrap();
        out.insert(e.name, (data, a.mode & 0o7777));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn after_any_crash_the_tree_is_a_prefix_with_everything_fsynced(
        ops in proptest::collection::vec(op(), 1..30),
        power_loss in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let _in_rt = rt.enter();
        let mut dev = Device {
            dir: tempfile::tempdir().unwrap(),
            inner: Arc::new(CrashKv::default()),
            disk: Arc::new(SimDisk::default()),
            id: DeviceId::random(),
        };
        let vfs = dev.open("boot-1");
        let mut tree = Tree::new();
        let mut states = vec![tree.clone()];
        let mut durable = 0;
        for op in &ops {
            let synced = apply(&vfs, &mut tree, op);
            states.push(tree.clone());
            if synced {
                durable = states.len() - 1;
            }
        }
        drop(vfs);
        let boot = if power_loss {
            let dir = dev.dir.path();
            dev.disk.power_loss(&[&dir.join("wal"), &dir.join("work")]);
            "boot-2"
        } else {
            "boot-1"
        };
        dev.inner = dev.inner.after_crash();
        let vfs = dev.open(boot);
        let got = tree_of(&vfs);
        if power_loss {
            let k = states.iter().rposition(|s| *s == got);
            prop_assert!(
                k.is_some_and(|k| k >= durable),
                "recovered {:?}\nnot a prefix at least up to op {}", got.keys().collect::<Vec<_>>(), durable
            );
        } else {
            prop_assert_eq!(&got, states.last().unwrap());
        }
    }
}
