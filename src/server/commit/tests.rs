//! The commit rules, through the engine-neutral layer (on SQLite, the
//! engine at hand; they only use the `MetaStore` trait).

use super::*;
use crate::protocol::{ChunkRef, FileContent, Manifest, NameError};
use crate::server::meta_store::SqliteMetaStore;
use std::sync::Arc;

/// 2026-11-22 10:00:00 UTC.
const NOW: i64 = 1_795_341_600 * 1_000_000_000;
const STAMP: &str = "2026-11-22 10.00.00";

fn dev(n: u8) -> DeviceId {
    DeviceId(uuid::Uuid::from_bytes([n; 16]))
}

struct Fx {
    store: Arc<dyn MetaStore>,
    account: AccountId,
    other: AccountId,
    laptop: CommitCtx,
    phone: CommitCtx,
    _dir: tempfile::TempDir,
}

impl Fx {
    async fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn MetaStore> = Arc::new(
            SqliteMetaStore::open(&dir.path().join("meta.sqlite"))
                .await
                .unwrap(),
        );
        let account = store.create_account("alice", "h", NOW).await.unwrap();
        let other = store.create_account("bob", "h", NOW).await.unwrap();
        let ctx = |device, name: &str| CommitCtx {
            account,
            device,
            device_name: name.into(),
            now_ns: NOW,
        };
        Fx {
            laptop: ctx(dev(1), "laptop"),
            phone: ctx(dev(2), "phone"),
            store,
            account,
            other,
            _dir: dir,
        }
    }

    /// Content made of `parts`, uploaded (owned) by `account`.
    async fn owned(&self, account: AccountId, parts: &[&[u8]]) -> FileContent {
        let mut chunks = Vec::new();
        for p in parts {
            let id = ChunkId::of(p);
            self.store
                .add_account_chunk(account, id, p.len() as u32, NOW)
                .await
                .unwrap();
            chunks.push(ChunkRef {
                id,
                len: p.len() as u32,
            });
        }
        FileContent {
            manifest: Manifest { chunks },
        }
    }

    async fn file(&self, text: &str) -> NodeMeta {
        file_meta(self.owned(self.account, &[text.as_bytes()]).await)
    }

    async fn run(
        &self,
        ctx: &CommitCtx,
        ops: Vec<CommitOp>,
    ) -> Result<Vec<CommitOutcome>, ServerError> {
        commit(self.store.as_ref(), ctx, &ops).await
    }

    async fn one(&self, ctx: &CommitCtx, op: CommitOp) -> CommitOutcome {
        let mut r = self.run(ctx, vec![op]).await.unwrap();
        assert_eq!(r.len(), 1);
        r.pop().unwrap()
    }

    async fn node(&self, id: NodeId) -> NodeRecord {
        self.store.node(self.account, id).await.unwrap().unwrap()
    }

    async fn lookup(&self, parent: NodeId, name: &str) -> Option<NodeRecord> {
        self.store.lookup(self.account, parent, name).await.unwrap()
    }

    async fn log_len(&self) -> usize {
        self.store
            .changes_since(self.account, 0, 1000)
            .await
            .unwrap()
            .len()
    }
}

fn file_meta(content: FileContent) -> NodeMeta {
    NodeMeta {
        content: Some(content),
        ..NodeMeta::new(
            NodeKind::File,
            0o644,
            crate::protocol::Timestamp::from_ns(NOW),
        )
    }
}

fn dir_meta() -> NodeMeta {
    NodeMeta::new(
        NodeKind::Dir,
        0o755,
        crate::protocol::Timestamp::from_ns(NOW),
    )
}

fn upsert(
    node: NodeId,
    base: &VersionVector,
    parent: NodeId,
    name: &str,
    meta: NodeMeta,
) -> CommitOp {
    CommitOp {
        node_id: node,
        base: base.clone(),
        seen: None,
        change: NodeChange::Upsert {
            parent,
            name: name.into(),
            links: Vec::new(),
            meta,
        },
    }
}

fn delete(node: NodeId, base: &VersionVector) -> CommitOp {
    CommitOp {
        node_id: node,
        base: base.clone(),
        seen: None,
        change: NodeChange::Delete,
    }
}

fn applied(o: CommitOutcome) -> NodeRecord {
    match o {
        CommitOutcome::Applied { node } => node,
        other => panic!("expected applied, got {other:?}"),
    }
}

fn vv(pairs: &[(DeviceId, u64)]) -> VersionVector {
    let mut v = VersionVector::new();
    for (d, n) in pairs {
        for _ in 0..*n {
            v.increment(*d);
        }
    }
    v
}

fn err_code(e: &ServerError) -> &'static str {
    e.status_and_code().1
}

mod conflicts;
mod fields;
mod links;
mod model;
mod validation;
mod xattrs;
