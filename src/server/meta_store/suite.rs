//! Conformance suite every [`MetaStore`] engine must pass (in the spirit of
//! juicefs `pkg/meta/base_test.go`). An engine's tests invoke
//! [`meta_store_suite!`] with a factory
//! `|dir: PathBuf| async { Arc<dyn MetaStore> }`; it expands to one test
//! per case below, each on a fresh store. The commit rules built on top
//! are tested in `server::commit::tests`, through the same trait.

use super::{AccountId, MetaError, MetaStore, NewToken, NewVersion, TokenKind};
use crate::protocol::{
    ChunkId, ChunkRef, DeviceId, FileContent, Link, Manifest, NodeId, NodeKind, NodeMeta,
    NodeRecord, VersionVector,
};
use std::sync::Arc;

type Store = Arc<dyn MetaStore>;

mod sessions;
mod txn;
pub(crate) use sessions::sessions;
pub(crate) use txn::{txn_delete_tree_within, txn_names_move_within, txn_versions_number_on};

macro_rules! meta_store_suite {
    ($engine:ident, $make:expr) => {
        mod $engine {
            #[allow(unused_imports)]
            use super::*;

            async fn make_store(
                dir: std::path::PathBuf,
            ) -> std::sync::Arc<dyn $crate::server::meta_store::MetaStore> {
                ($make)(dir).await
            }

            $crate::server::meta_store::suite::meta_store_suite!(@case accounts);
            $crate::server::meta_store::suite::meta_store_suite!(@case devices);
            $crate::server::meta_store::suite::meta_store_suite!(@case tokens);
            $crate::server::meta_store::suite::meta_store_suite!(@case sessions);
            $crate::server::meta_store::suite::meta_store_suite!(@case chunk_ownership);
            $crate::server::meta_store::suite::meta_store_suite!(@case txn_write_read);
            $crate::server::meta_store::suite::meta_store_suite!(@case txn_rollback_on_drop);
            $crate::server::meta_store::suite::meta_store_suite!(@case txn_names_move_within);
            $crate::server::meta_store::suite::meta_store_suite!(@case txn_delete_tree_within);
            $crate::server::meta_store::suite::meta_store_suite!(@case txn_versions_number_on);
            $crate::server::meta_store::suite::meta_store_suite!(@case live_names_unique);
            $crate::server::meta_store::suite::meta_store_suite!(@case tombstone_keeps_last_entry);
            $crate::server::meta_store::suite::meta_store_suite!(@case links_are_entries);
            $crate::server::meta_store::suite::meta_store_suite!(@case changes_since_pages);
            $crate::server::meta_store::suite::meta_store_suite!(@case accounts_are_isolated);
            $crate::server::meta_store::suite::meta_store_suite!(@case versions_append);
            $crate::server::meta_store::suite::meta_store_suite!(@case concurrent_txns_serialize);
            $crate::server::meta_store::suite::meta_store_suite!(@case counts);
            $crate::server::meta_store::suite::meta_store_suite!(@case account_usage);
        }
    };
    (@case $case:ident) => {
        #[tokio::test]
        async fn $case() {
            let dir = tempfile::tempdir().unwrap();
            let store = make_store(dir.path().to_path_buf()).await;
            $crate::server::meta_store::suite::$case(store.clone()).await;
            store.close().await;
        }
    };
}
pub(crate) use meta_store_suite;

const T0: i64 = 1_700_000_000_000_000_000;

async fn account(store: &Store, name: &str) -> AccountId {
    store
        .create_account(name, "$argon2id$fake", T0)
        .await
        .unwrap()
}

fn dir_node(id: NodeId, parent: NodeId, name: &str, seq: u64) -> NodeRecord {
    NodeRecord {
        node_id: id,
        parent: Some(parent),
        name: name.into(),
        links: Vec::new(),
        deleted: false,
        meta: NodeMeta::new(
            NodeKind::Dir,
            0o755,
            crate::protocol::Timestamp::from_ns(T0),
        ),
        vv: VersionVector::new(),
        seq,
    }
}

fn file_node(id: NodeId, parent: NodeId, name: &str, seq: u64, chunks: &[&[u8]]) -> NodeRecord {
    let mut vv = VersionVector::new();
    vv.increment(DeviceId(uuid::Uuid::from_bytes([9; 16])));
    NodeRecord {
        node_id: id,
        parent: Some(parent),
        name: name.into(),
        links: Vec::new(),
        deleted: false,
        meta: NodeMeta {
            content: Some(FileContent {
                manifest: manifest(chunks),
            }),
            ..NodeMeta::new(
                NodeKind::File,
                0o644,
                crate::protocol::Timestamp::from_ns(T0 + 5),
            )
        },
        vv,
        seq,
    }
}

fn manifest(chunks: &[&[u8]]) -> Manifest {
    Manifest {
        chunks: chunks
            .iter()
            .map(|c| ChunkRef {
                id: ChunkId::of(c),
                len: c.len() as u32,
            })
            .collect(),
    }
}

/// Writes `node` in its own transaction with the next seq; returns it as
/// stored.
async fn put(store: &Store, account: AccountId, mut node: NodeRecord) -> NodeRecord {
    let mut txn = store.begin(account).await.unwrap();
    node.seq = txn.next_seq().await.unwrap();
    txn.write_node(&node).await.unwrap();
    txn.commit().await.unwrap();
    node
}

/// Whether writing `node` in its own transaction is refused, at the write
/// or at the latest at commit (an engine may buffer writes).
async fn refused(store: &Store, account: AccountId, node: &NodeRecord) -> bool {
    let mut txn = store.begin(account).await.unwrap();
    let mut node = node.clone();
    node.seq = txn.next_seq().await.unwrap();
    match txn.write_node(&node).await {
        Err(_) => true,
        Ok(()) => txn.commit().await.is_err(),
    }
}

pub(crate) async fn accounts(store: Store) {
    let a = account(&store, "alice").await;
    let got = store.account_by_name("alice").await.unwrap().unwrap();
    assert_eq!(got.id, a);
    assert_eq!(got.name, "alice");
    assert_eq!(got.password_hash, "$argon2id$fake");
    assert!(store.account_by_name("Alice").await.unwrap().is_none());
    assert!(matches!(
        store.create_account("alice", "x", T0).await,
        Err(MetaError::AccountExists(n)) if n == "alice"
    ));
    let root = store.node(a, NodeId::ROOT).await.unwrap().unwrap();
    assert_eq!(root.meta.kind, NodeKind::Dir);
    assert_eq!(root.parent, None);
    assert_eq!(root.seq, 0);
    assert!(!root.deleted);
    // The root is not a change a device has to pull.
    assert!(store.changes_since(a, 0, 10).await.unwrap().is_empty());
    let b = account(&store, "bob").await;
    assert_ne!(a, b);
}

pub(crate) async fn devices(store: Store) {
    let a = account(&store, "alice").await;
    let b = account(&store, "bob").await;
    let d1 = store.create_device(a, "laptop", T0).await.unwrap();
    let d2 = store.create_device(a, "phone", T0 + 1).await.unwrap();
    let d3 = store.create_device(b, "laptop", T0).await.unwrap();
    assert_ne!(d1, d2);
    let dev = store.device(d1).await.unwrap().unwrap();
    assert_eq!(
        (dev.account, dev.name.as_str(), dev.revoked),
        (a, "laptop", false)
    );
    assert_eq!(dev.created_ns, T0);
    let list: Vec<_> = store
        .list_devices(a)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(list, vec![d1, d2]);
    assert!(store.device(DeviceId::random()).await.unwrap().is_none());
    // Revocation is per account.
    assert!(!store.revoke_device(a, d3).await.unwrap());
    assert!(store.revoke_device(a, d2).await.unwrap());
    assert!(store.device(d2).await.unwrap().unwrap().revoked);
    assert!(!store.device(d3).await.unwrap().unwrap().revoked);
}

pub(crate) async fn tokens(store: Store) {
    let a = account(&store, "alice").await;
    let d = store.create_device(a, "laptop", T0).await.unwrap();
    let access = NewToken {
        hash: [1; 32],
        account: a,
        device: d,
        kind: TokenKind::Access,
        expires_ns: T0 + 100,
    };
    let refresh = NewToken {
        hash: [2; 32],
        kind: TokenKind::Refresh,
        expires_ns: T0 + 1000,
        ..access.clone()
    };
    store.insert_token(&access).await.unwrap();
    store.insert_token(&refresh).await.unwrap();
    let t = store.token(&[1; 32]).await.unwrap().unwrap();
    assert_eq!(
        (t.account, t.device, t.kind, t.expires_ns, t.device_revoked),
        (a, d, TokenKind::Access, T0 + 100, false)
    );
    assert_eq!(
        store.token(&[2; 32]).await.unwrap().unwrap().kind,
        TokenKind::Refresh
    );
    assert!(store.token(&[3; 32]).await.unwrap().is_none());
    store.revoke_device(a, d).await.unwrap();
    assert!(store.token(&[1; 32]).await.unwrap().unwrap().device_revoked);
    assert_eq!(store.delete_expired_tokens(T0 + 500).await.unwrap(), 1);
    assert!(store.token(&[1; 32]).await.unwrap().is_none());
    assert!(store.token(&[2; 32]).await.unwrap().is_some());
}

pub(crate) async fn chunk_ownership(store: Store) {
    let a = account(&store, "alice").await;
    let b = account(&store, "bob").await;
    let ids: Vec<ChunkId> = (0..1200u32)
        .map(|i| ChunkId::of(&i.to_le_bytes()))
        .collect();
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        store
            .add_account_chunk(a, *id, i as u32 + 1, T0)
            .await
            .unwrap();
    }
    // Idempotent, and the first length stays.
    store.add_account_chunk(a, ids[0], 1, T0).await.unwrap();
    let owned = store.owned_chunks(a, &ids).await.unwrap();
    assert_eq!(owned.len(), 600, "batched IN lists must cover every id");
    assert_eq!(owned[&ids[0]], 1);
    assert_eq!(owned[&ids[1000]], 1001);
    assert!(!owned.contains_key(&ids[1]));
    assert!(store.owned_chunks(b, &ids).await.unwrap().is_empty());
    assert!(store.owned_chunks(a, &[]).await.unwrap().is_empty());
    // Ownership is visible inside a transaction too.
    let mut txn = store.begin(a).await.unwrap();
    assert_eq!(txn.owned_chunks(&ids[..4]).await.unwrap().len(), 2);
}

pub(crate) async fn txn_write_read(store: Store) {
    let a = account(&store, "alice").await;
    let dir = NodeId::random();
    let file = NodeId::random();
    let mut txn = store.begin(a).await.unwrap();
    assert_eq!(txn.account(), a);
    assert_eq!(txn.next_seq().await.unwrap(), 1);
    assert_eq!(txn.next_seq().await.unwrap(), 2);
    let d = dir_node(dir, NodeId::ROOT, "docs", 1);
    let f = file_node(file, dir, "a.txt", 2, &[b"hello", b"world"]);
    txn.write_node(&d).await.unwrap();
    txn.write_node(&f).await.unwrap();
    // Read-your-writes inside the transaction.
    assert_eq!(txn.node(file).await.unwrap().unwrap(), f);
    assert_eq!(txn.lookup(dir, "a.txt").await.unwrap(), Some(file));
    assert!(txn.has_live_children(dir).await.unwrap());
    assert!(!txn.has_live_children(file).await.unwrap());
    txn.commit().await.unwrap();

    assert_eq!(store.node(a, dir).await.unwrap().unwrap(), d);
    assert_eq!(store.node(a, file).await.unwrap().unwrap(), f);
    assert_eq!(store.lookup(a, dir, "a.txt").await.unwrap().unwrap(), f);
    assert!(store.lookup(a, dir, "b.txt").await.unwrap().is_none());
    let kids = store.children(a, NodeId::ROOT).await.unwrap();
    assert_eq!(kids, vec![d.clone()]);
    // Rename and edit in place (same node, new entry).
    let mut f2 = f.clone();
    f2.parent = Some(NodeId::ROOT);
    f2.name = "b.txt".into();
    f2.meta.mode = 0o600;
    f2.meta.content = Some(FileContent {
        manifest: manifest(&[b"bye"]),
    });
    let f2 = put(&store, a, f2).await;
    assert_eq!(f2.seq, 3);
    assert_eq!(store.node(a, file).await.unwrap().unwrap(), f2);
    assert!(store.lookup(a, dir, "a.txt").await.unwrap().is_none());
    assert_eq!(
        store
            .lookup(a, NodeId::ROOT, "b.txt")
            .await
            .unwrap()
            .unwrap()
            .node_id,
        file
    );
    // A symlink round-trips its target.
    let link = NodeRecord {
        meta: NodeMeta {
            symlink_target: Some("../x y/z".into()),
            ..NodeMeta::new(
                NodeKind::Symlink,
                0o777,
                crate::protocol::Timestamp::from_ns(-5),
            )
        },
        ..dir_node(NodeId::random(), dir, "ln", 0)
    };
    let link = put(&store, a, link).await;
    assert_eq!(store.node(a, link.node_id).await.unwrap().unwrap(), link);
    // A device node round-trips every POSIX attribute, times far outside
    // i64 nanoseconds included.
    let t = |sec, nsec| crate::protocol::Timestamp { sec, nsec };
    let dev = NodeRecord {
        meta: NodeMeta {
            uid: Some(41_234),
            gid: Some(u32::MAX),
            ids_from: Some(DeviceId(uuid::Uuid::from_bytes([4; 16]))),
            rdev: 0x0801,
            atime: t(-30_610_224_000, 1),
            btime: t(10_413_792_000, 999_999_999),
            ..NodeMeta::new(NodeKind::BlockDevice, 0o6660, t(-1, 750_000_000))
        },
        ..dir_node(NodeId::random(), dir, "sda1", 0)
    };
    let dev = put(&store, a, dev).await;
    assert_eq!(store.node(a, dev.node_id).await.unwrap().unwrap(), dev);
    // Extended attributes round-trip byte for byte (empty values too),
    // and a later write without them clears them.
    let mut tagged = dir_node(NodeId::random(), dir, "tagged", 0);
    tagged.meta.xattrs = [
        ("user.bin".to_string(), vec![0, 255, 10]),
        ("user.empty".to_string(), vec![]),
        ("security.selinux".to_string(), b"ctx\0".to_vec()),
    ]
    .into_iter()
    .collect();
    let tagged = put(&store, a, tagged).await;
    assert_eq!(
        store.node(a, tagged.node_id).await.unwrap().unwrap(),
        tagged
    );
    let mut cleared = tagged.clone();
    cleared.meta.xattrs = Default::default();
    let cleared = put(&store, a, cleared).await;
    assert!(store
        .node(a, cleared.node_id)
        .await
        .unwrap()
        .unwrap()
        .meta
        .xattrs
        .is_empty());
}

pub(crate) async fn txn_rollback_on_drop(store: Store) {
    let a = account(&store, "alice").await;
    let id = NodeId::random();
    {
        let mut txn = store.begin(a).await.unwrap();
        let seq = txn.next_seq().await.unwrap();
        txn.write_node(&dir_node(id, NodeId::ROOT, "gone", seq))
            .await
            .unwrap();
        txn.append_version(&NewVersion {
            node: id,
            manifest: Manifest::default(),
            device: DeviceId::random(),
            created_ns: T0,
        })
        .await
        .unwrap();
        // Dropped without commit.
    }
    assert!(store.node(a, id).await.unwrap().is_none());
    assert!(store.versions(a, id).await.unwrap().is_empty());
    let mut txn = store.begin(a).await.unwrap();
    assert_eq!(
        txn.next_seq().await.unwrap(),
        1,
        "a rolled back seq is reused"
    );
}

pub(crate) async fn live_names_unique(store: Store) {
    let a = account(&store, "alice").await;
    put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "x", 0)).await;
    let clash = dir_node(NodeId::random(), NodeId::ROOT, "x", 9);
    assert!(
        refused(&store, a, &clash).await,
        "the engine must refuse two live entries with one name"
    );
    assert!(store.node(a, clash.node_id).await.unwrap().is_none());
    // Names are case-sensitive, and per folder.
    put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "X", 0)).await;
    let sub = put(
        &store,
        a,
        dir_node(NodeId::random(), NodeId::ROOT, "sub", 0),
    )
    .await;
    put(&store, a, dir_node(NodeId::random(), sub.node_id, "x", 0)).await;
    assert_eq!(store.children(a, NodeId::ROOT).await.unwrap().len(), 3);
}

pub(crate) async fn tombstone_keeps_last_entry(store: Store) {
    let a = account(&store, "alice").await;
    let dir = put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "d", 0)).await;
    let mut f = put(
        &store,
        a,
        file_node(NodeId::random(), dir.node_id, "f", 0, &[b"x"]),
    )
    .await;
    f.deleted = true;
    let f = put(&store, a, f).await;
    let got = store.node(a, f.node_id).await.unwrap().unwrap();
    assert!(got.deleted);
    assert_eq!((got.parent, got.name.as_str()), (Some(dir.node_id), "f"));
    assert!(store.lookup(a, dir.node_id, "f").await.unwrap().is_none());
    assert!(store.children(a, dir.node_id).await.unwrap().is_empty());
    let mut txn = store.begin(a).await.unwrap();
    assert!(!txn.has_live_children(dir.node_id).await.unwrap());
    assert_eq!(txn.lookup(dir.node_id, "f").await.unwrap(), None);
    drop(txn);
    // The name is free for another node, and the tombstone can come back
    // under another name.
    put(
        &store,
        a,
        file_node(NodeId::random(), dir.node_id, "f", 0, &[b"y"]),
    )
    .await;
    let mut back = got;
    back.deleted = false;
    back.name = "f (restored)".into();
    let back = put(&store, a, back).await;
    assert_eq!(store.children(a, dir.node_id).await.unwrap().len(), 2);
    assert_eq!(store.node(a, back.node_id).await.unwrap().unwrap(), back);
}

/// A node's other entries (hard links): stored and served with it, found
/// by name lookups, counted as a folder's live children, replaced as a
/// whole by the next write, and dropped with a tombstone.
pub(crate) async fn links_are_entries(store: Store) {
    let a = account(&store, "alice").await;
    let d = put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "d", 0)).await;
    let e = put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "e", 0)).await;
    let link = |parent: NodeId, name: &str| Link {
        parent,
        name: name.into(),
    };
    let mut f = file_node(NodeId::random(), NodeId::ROOT, "f", 0, &[b"x"]);
    f.links = vec![link(d.node_id, "g"), link(e.node_id, "h")];
    let f = put(&store, a, f).await;
    assert_eq!(store.node(a, f.node_id).await.unwrap().unwrap(), f);
    for (p, name) in [(NodeId::ROOT, "f"), (d.node_id, "g"), (e.node_id, "h")] {
        let found = store.lookup(a, p, name).await.unwrap().unwrap();
        assert_eq!(found, f, "{name}");
        let mut txn = store.begin(a).await.unwrap();
        assert_eq!(txn.lookup(p, name).await.unwrap(), Some(f.node_id));
        assert!(txn.has_live_children(p).await.unwrap());
    }
    let kids = store.children(a, d.node_id).await.unwrap();
    assert_eq!(kids.len(), 1);
    assert_eq!(kids[0].node_id, f.node_id);
    let log = store.changes_since(a, f.seq - 1, 10).await.unwrap();
    assert_eq!(log[0].links, f.links, "the change log serves links");
    // The next write replaces the set.
    let mut f2 = f.clone();
    f2.links = vec![link(e.node_id, "h2")];
    let f2 = put(&store, a, f2).await;
    assert!(store.lookup(a, d.node_id, "g").await.unwrap().is_none());
    assert!(store.lookup(a, e.node_id, "h").await.unwrap().is_none());
    assert_eq!(
        store.node(a, f.node_id).await.unwrap().unwrap().links,
        f2.links
    );
    let mut txn = store.begin(a).await.unwrap();
    assert!(!txn.has_live_children(d.node_id).await.unwrap());
    drop(txn);
    // Names stay unique across first entries and links.
    let clash = dir_node(NodeId::random(), e.node_id, "h2", 0);
    assert!(
        refused(&store, a, &clash).await,
        "a link's name is taken for a first entry too"
    );
    // A tombstone keeps no link.
    let mut gone = f2;
    gone.deleted = true;
    let gone = put(&store, a, gone).await;
    let got = store.node(a, gone.node_id).await.unwrap().unwrap();
    assert!(got.deleted && got.links.is_empty());
    assert!(store.lookup(a, e.node_id, "h2").await.unwrap().is_none());
}

pub(crate) async fn changes_since_pages(store: Store) {
    let a = account(&store, "alice").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let n = put(
            &store,
            a,
            dir_node(NodeId::random(), NodeId::ROOT, &format!("d{i}"), 0),
        )
        .await;
        ids.push(n.node_id);
    }
    // Touch d3 again: it moves to the end of the log.
    let d3 = store.node(a, ids[3]).await.unwrap().unwrap();
    put(&store, a, d3).await;
    let all = store.changes_since(a, 0, 100).await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all.last().unwrap().node_id, ids[3]);
    assert_eq!(all.last().unwrap().seq, 11);
    let page = store.changes_since(a, 0, 4).await.unwrap();
    assert_eq!(page.len(), 4);
    let rest = store.changes_since(a, page[3].seq, 100).await.unwrap();
    assert_eq!(rest.len(), 6);
    assert!(rest[0].seq > page[3].seq);
    assert!(store.changes_since(a, 11, 100).await.unwrap().is_empty());
    assert_eq!(store.last_seq(a).await.unwrap(), 11);
    let b = account(&store, "bob").await;
    assert_eq!(store.last_seq(b).await.unwrap(), 0);
    assert!(store
        .changes_since(a, u64::MAX, 100)
        .await
        .unwrap()
        .is_empty());
}

pub(crate) async fn accounts_are_isolated(store: Store) {
    let a = account(&store, "alice").await;
    let b = account(&store, "bob").await;
    let n = put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "x", 0)).await;
    assert!(store.node(b, n.node_id).await.unwrap().is_none());
    assert!(store.lookup(b, NodeId::ROOT, "x").await.unwrap().is_none());
    assert!(store.children(b, NodeId::ROOT).await.unwrap().is_empty());
    assert!(store.changes_since(b, 0, 10).await.unwrap().is_empty());
    // Sequences are per account.
    let m = put(&store, b, dir_node(NodeId::random(), NodeId::ROOT, "x", 0)).await;
    assert_eq!((n.seq, m.seq), (1, 1));
    let mut txn = store.begin(b).await.unwrap();
    assert!(txn.node(n.node_id).await.unwrap().is_none());
    assert_eq!(
        txn.lookup(NodeId::ROOT, "x").await.unwrap(),
        Some(m.node_id)
    );
}

pub(crate) async fn versions_append(store: Store) {
    let a = account(&store, "alice").await;
    let f = put(
        &store,
        a,
        file_node(NodeId::random(), NodeId::ROOT, "f", 0, &[b"one"]),
    )
    .await;
    let dev = DeviceId::random();
    let mut txn = store.begin(a).await.unwrap();
    let m1 = manifest(&[b"one"]);
    let m2 = manifest(&[b"two", b"three"]);
    for (i, m) in [&m1, &m2].into_iter().enumerate() {
        let v = txn
            .append_version(&NewVersion {
                node: f.node_id,
                manifest: m.clone(),
                device: dev,
                created_ns: T0 + i as i64,
            })
            .await
            .unwrap();
        assert_eq!(v, i as u64 + 1);
    }
    txn.commit().await.unwrap();
    let vs = store.versions(a, f.node_id).await.unwrap();
    assert_eq!(vs.len(), 2);
    assert_eq!(vs[0].version, 1);
    assert_eq!(vs[1].manifest, m2);
    assert_eq!(vs[1].size, 8);
    assert_eq!(
        vs[1].content_hash,
        FileContent {
            manifest: m2.clone()
        }
        .hash()
    );
    assert_eq!((vs[1].device, vs[1].created_ns), (dev, T0 + 1));
    let b = account(&store, "bob").await;
    assert!(store.versions(b, f.node_id).await.unwrap().is_empty());
}

pub(crate) async fn concurrent_txns_serialize(store: Store) {
    let a = account(&store, "alice").await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut txn = store.begin(a).await.unwrap();
                let seq = txn.next_seq().await.unwrap();
                tokio::task::yield_now().await;
                txn.write_node(&dir_node(
                    NodeId::random(),
                    NodeId::ROOT,
                    &format!("n{i}"),
                    seq,
                ))
                .await
                .unwrap();
                txn.commit().await.unwrap();
                seq
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=16).collect::<Vec<u64>>());
    assert_eq!(store.changes_since(a, 0, 100).await.unwrap().len(), 16);
}

pub(crate) async fn counts(store: Store) {
    assert_eq!(store.counts().await.unwrap().accounts, 0);
    let a = account(&store, "alice").await;
    store.create_device(a, "x", T0).await.unwrap();
    let n = put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "d", 0)).await;
    let c = store.counts().await.unwrap();
    assert_eq!((c.accounts, c.devices, c.live_nodes), (1, 1, 2));
    let mut gone = n;
    gone.deleted = true;
    put(&store, a, gone).await;
    assert_eq!(store.counts().await.unwrap().live_nodes, 1);
}

pub(crate) async fn account_usage(store: Store) {
    let a = account(&store, "alice").await;
    let b = account(&store, "bob").await;
    let fresh = store.account_usage(a).await.unwrap();
    assert_eq!((fresh.file_bytes, fresh.nodes), (0, 1), "the root only");
    let d = put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "d", 0)).await;
    let f1 = put(
        &store,
        a,
        file_node(NodeId::random(), d.node_id, "f1", 0, &[b"abc", b"de"]),
    )
    .await;
    put(
        &store,
        a,
        file_node(NodeId::random(), NodeId::ROOT, "f2", 0, &[b"0123456789"]),
    )
    .await;
    put(
        &store,
        b,
        file_node(NodeId::random(), NodeId::ROOT, "g", 0, &[b"xxxxxxx"]),
    )
    .await;
    let u = store.account_usage(a).await.unwrap();
    assert_eq!((u.file_bytes, u.nodes), (15, 4));
    let mut gone = f1;
    gone.deleted = true;
    put(&store, a, gone).await;
    let u = store.account_usage(a).await.unwrap();
    assert_eq!(
        (u.file_bytes, u.nodes),
        (10, 3),
        "a deleted file no longer counts"
    );
    assert_eq!(store.account_usage(b).await.unwrap().file_bytes, 7);
}
