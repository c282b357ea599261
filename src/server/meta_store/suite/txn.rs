//! Conformance cases for what a write transaction sees of its own writes
//! before commit (engines may cache reads and buffer writes: see
//! `sqlite::txn`).

use super::{account, dir_node, file_node, manifest, put, Store, T0};
use crate::protocol::{ChunkId, DeviceId, Link, NodeId, NodeRecord};
use crate::server::meta_store::NewVersion;

/// Within one transaction (with and without a prefetch): a name freed by
/// a move or a dropped link is taken by another node; lookups see every
/// write at once; the committed state is the last one.
pub(crate) async fn txn_names_move_within(store: Store) {
    let a = account(&store, "alice").await;
    let d = put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "d", 0)).await;
    let x = put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "x", 0)).await;
    let link = |name: &str| Link {
        parent: d.node_id,
        name: name.into(),
    };
    let mut l = file_node(NodeId::random(), NodeId::ROOT, "l", 0, &[b"l"]);
    l.links = vec![link("g")];
    let mut l = put(&store, a, l).await;
    for (prefetch, from, to) in [(true, "x", "y"), (false, "y", "z")] {
        let newcomer = NodeId::random();
        let taker = NodeId::random();
        let mut txn = store.begin(a).await.unwrap();
        if prefetch {
            let names = [(NodeId::ROOT, from), (NodeId::ROOT, to), (d.node_id, "g")];
            let ids = [x.node_id, newcomer, l.node_id, taker, NodeId::ROOT];
            txn.prefetch(&ids, &names, &[ChunkId::of(b"l")])
                .await
                .unwrap();
        }
        assert_eq!(
            txn.lookup(NodeId::ROOT, from).await.unwrap(),
            Some(x.node_id)
        );
        let mut moved = txn.node(x.node_id).await.unwrap().unwrap();
        moved.name = to.into();
        moved.seq = txn.next_seq().await.unwrap();
        txn.write_node(&moved).await.unwrap();
        let came = dir_node(newcomer, NodeId::ROOT, from, txn.next_seq().await.unwrap());
        txn.write_node(&came).await.unwrap();
        assert_eq!(
            txn.lookup(NodeId::ROOT, from).await.unwrap(),
            Some(newcomer)
        );
        assert_eq!(txn.lookup(NodeId::ROOT, to).await.unwrap(), Some(x.node_id));
        // The link's name goes to another node in the same transaction,
        // after two writes of the linked node (unlinked, then relinked
        // under another name).
        let mut unlinked = txn.node(l.node_id).await.unwrap().unwrap();
        assert_eq!(unlinked.links, vec![link("g")]);
        unlinked.links.clear();
        unlinked.seq = txn.next_seq().await.unwrap();
        txn.write_node(&unlinked).await.unwrap();
        let mut relinked = unlinked.clone();
        relinked.links = vec![link("g2")];
        relinked.seq = txn.next_seq().await.unwrap();
        txn.write_node(&relinked).await.unwrap();
        let g = dir_node(taker, d.node_id, "g", txn.next_seq().await.unwrap());
        txn.write_node(&g).await.unwrap();
        assert_eq!(txn.lookup(d.node_id, "g").await.unwrap(), Some(taker));
        assert_eq!(txn.lookup(d.node_id, "g2").await.unwrap(), Some(l.node_id));
        assert!(
            txn.write_node(&dir_node(NodeId::random(), NodeId::ROOT, to, 0))
                .await
                .is_err(),
            "a name this transaction gave is taken"
        );
        txn.commit().await.unwrap();
        assert_eq!(
            store.lookup(a, NodeId::ROOT, from).await.unwrap().unwrap(),
            came
        );
        assert_eq!(store.node(a, x.node_id).await.unwrap().unwrap(), moved);
        assert_eq!(store.lookup(a, d.node_id, "g").await.unwrap().unwrap(), g);
        assert_eq!(store.node(a, l.node_id).await.unwrap().unwrap(), relinked);
        // Give "g" back to the linked node for the next pass.
        let mut gone = g;
        gone.deleted = true;
        put(&store, a, gone).await;
        l.links = vec![link("g")];
        l = put(&store, a, l).await;
    }
}

/// `rm -rf` in one transaction: children deleted first, then their folder,
/// whose emptiness the engine must see before commit; nothing of it
/// survives a rollback.
pub(crate) async fn txn_delete_tree_within(store: Store) {
    let a = account(&store, "alice").await;
    let d = put(&store, a, dir_node(NodeId::random(), NodeId::ROOT, "d", 0)).await;
    let kids: Vec<NodeRecord> = {
        let mut v = Vec::new();
        for i in 0..3 {
            let f = file_node(NodeId::random(), d.node_id, &format!("f{i}"), 0, &[b"z"]);
            v.push(put(&store, a, f).await);
        }
        v
    };
    for commit in [false, true] {
        let mut txn = store.begin(a).await.unwrap();
        assert!(txn.has_live_children(d.node_id).await.unwrap());
        for (i, k) in kids.iter().enumerate() {
            let mut k = k.clone();
            k.deleted = true;
            k.seq = txn.next_seq().await.unwrap();
            txn.write_node(&k).await.unwrap();
            assert_eq!(
                txn.has_live_children(d.node_id).await.unwrap(),
                i + 1 < kids.len()
            );
        }
        let mut dd = d.clone();
        dd.deleted = true;
        dd.seq = txn.next_seq().await.unwrap();
        txn.write_node(&dd).await.unwrap();
        assert_eq!(txn.lookup(NodeId::ROOT, "d").await.unwrap(), None);
        if commit {
            txn.commit().await.unwrap();
        } else {
            txn.rollback().await;
            assert_eq!(store.children(a, d.node_id).await.unwrap().len(), 3);
            assert_eq!(
                store.lookup(a, NodeId::ROOT, "d").await.unwrap().unwrap(),
                d
            );
        }
    }
    assert!(store.children(a, d.node_id).await.unwrap().is_empty());
    assert!(store.node(a, d.node_id).await.unwrap().unwrap().deleted);
    assert!(store.children(a, NodeId::ROOT).await.unwrap().is_empty());
}

/// Version numbers go on 1, 2, 3, ... per node across transactions, for a
/// node created in the same transaction, with and without a prefetch.
pub(crate) async fn txn_versions_number_on(store: Store) {
    let a = account(&store, "alice").await;
    let dev = DeviceId::random();
    let v = |node| NewVersion {
        node,
        manifest: manifest(&[b"v"]),
        device: dev,
        created_ns: T0,
    };
    let n = NodeId::random();
    let other = put(
        &store,
        a,
        file_node(NodeId::random(), NodeId::ROOT, "o", 0, &[b"o"]),
    )
    .await;
    let mut txn = store.begin(a).await.unwrap();
    txn.prefetch(&[n, other.node_id], &[], &[]).await.unwrap();
    let f = file_node(n, NodeId::ROOT, "f", txn.next_seq().await.unwrap(), &[b"v"]);
    txn.write_node(&f).await.unwrap();
    assert_eq!(txn.append_version(&v(n)).await.unwrap(), 1);
    assert_eq!(txn.append_version(&v(n)).await.unwrap(), 2);
    assert_eq!(txn.append_version(&v(other.node_id)).await.unwrap(), 1);
    txn.commit().await.unwrap();
    let mut txn = store.begin(a).await.unwrap();
    txn.prefetch(&[n], &[], &[]).await.unwrap();
    assert_eq!(txn.append_version(&v(n)).await.unwrap(), 3);
    txn.commit().await.unwrap();
    let mut txn = store.begin(a).await.unwrap();
    assert_eq!(txn.append_version(&v(n)).await.unwrap(), 4);
    assert_eq!(txn.append_version(&v(other.node_id)).await.unwrap(), 2);
    txn.commit().await.unwrap();
    let numbers: Vec<u64> = store
        .versions(a, n)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
    assert_eq!(store.versions(a, other.node_id).await.unwrap().len(), 2);
}
