//! The SQLite write transaction: reads through caches, writes buffered.
//!
//! Every statement is a round trip to sqlx's SQLite worker thread, a
//! futex handoff each way. Measured during the upload of 100,000 empty
//! files (one commit of 1,000 ops per request, ~5 statements per op): 61%
//! of the server's CPU went to that context switching and 1.4% to SQLite
//! itself. The cost of a commit is its number of statements, so a
//! transaction keeps it independent of the number of ops:
//! - **Prefetch** ([`MetaTxn::prefetch`]): the commit engine names, before
//!   applying, the nodes, names and chunks its ops will read; they are
//!   fetched in a few `IN (...)` / `VALUES` queries of up to [`IN_BATCH`]
//!   keys. Absent keys are remembered as absent.
//! - **Read-your-writes caches**: under the write lock nothing else changes
//!   the account, so what the transaction read or wrote stays true: node
//!   records, live names (first entries and links), owned chunks, the next
//!   version number per node and the change sequence.
//! - **Buffered writes**: [`MetaTxn::write_node`] and
//!   [`MetaTxn::append_version`] only update the caches and mark the node
//!   dirty; [`SqliteTxn::flush`] writes every dirty node's latest state in
//!   at most six multi-row statements per [`IN_BATCH`] nodes. It runs at
//!   commit, and before [`MetaTxn::has_live_children`], the one question
//!   answered by the database rather than the caches.
//!
//! Invariant that makes a cache miss safe to answer from the database:
//! every name a dirty node holds in the database is in the name cache
//! (`write_node` reads the node's old state first and marks its old names
//! free), so the database is only ever asked about keys whose stored
//! answer is still true.
//!
//! Flush order keeps the unique live-name index satisfied at every
//! statement: the dirty nodes' entries are first all marked not live and
//! their links dropped, then nodes, entries and links are written in their
//! final state. A clash the caches can see (a name another live node
//! holds) fails in `write_node` at once; one only the database can see
//! fails at the flush, at the latest at commit, and rolls everything back.

use super::super::{AccountId, MetaError, MetaTxn, NewVersion};
use super::rows::*;
use crate::protocol::{ChunkId, FileContent, Link, NodeId, NodeKind, NodeRecord};
use async_trait::async_trait;
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row, Sqlite};
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::sync::OwnedMutexGuard;

/// A write transaction on one account (see the module docs).
pub(super) struct SqliteTxn {
    tx: sqlx::Transaction<'static, Sqlite>,
    account: AccountId,
    /// Node records as they are now in this transaction (`None`: absent).
    nodes: HashMap<NodeId, Option<NodeRecord>>,
    /// Live names, `(parent, name)` → holder (`None`: free).
    names: HashMap<(NodeId, String), Option<NodeId>>,
    /// Node ids merged into another node (`Some(node)`) or not (`None`).
    aliases: HashMap<NodeId, Option<NodeId>>,
    /// Chunks the account owns (`Some(len)`) or not (`None`).
    owned: HashMap<ChunkId, Option<u32>>,
    /// The number the node's next version gets.
    next_version: HashMap<NodeId, u64>,
    /// Nodes written since the last flush, each with whether the database
    /// may hold links of it (decided from its stored state).
    dirty: BTreeMap<NodeId, bool>,
    /// Versions appended since the last flush, with their numbers.
    versions: Vec<(NewVersion, u64)>,
    /// The next sequence number to hand out, once read; and whether the
    /// account row is behind it.
    seq: Option<(u64, bool)>,
    /// Released after the transaction ends (field order: `tx` drops first).
    _guard: OwnedMutexGuard<()>,
}

impl SqliteTxn {
    pub(super) fn new(
        tx: sqlx::Transaction<'static, Sqlite>,
        account: AccountId,
        guard: OwnedMutexGuard<()>,
    ) -> Self {
        SqliteTxn {
            tx,
            account,
            nodes: HashMap::new(),
            names: HashMap::new(),
            aliases: HashMap::new(),
            owned: HashMap::new(),
            next_version: HashMap::new(),
            dirty: BTreeMap::new(),
            versions: Vec::new(),
            seq: None,
            _guard: guard,
        }
    }

    /// Fetches the records of those of `ids` not cached yet; remembers the
    /// absent ones as absent (and so without versions) and, with
    /// `versions`, the next version number of the files found.
    async fn fetch_nodes(&mut self, ids: &[NodeId], versions: bool) -> Result<(), MetaError> {
        let missing = uncached(ids.iter().copied(), &self.nodes);
        for batch in missing.chunks(IN_BATCH) {
            let mut qb = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {NODE_COLUMNS} {NODE_FROM} WHERE n.account = "
            ));
            qb.push_bind(self.account.0).push(" AND n.id IN (");
            push_list(&mut qb, batch.iter().map(|id| id.as_bytes().to_vec()));
            let rows = qb.build().fetch_all(&mut *self.tx).await.map_err(backend)?;
            let mut files = Vec::new();
            for row in &rows {
                let n = node_from_row(row)?;
                if n.meta.kind == NodeKind::File {
                    files.push(n.node_id);
                }
                self.nodes.insert(n.node_id, Some(n));
            }
            for id in batch {
                if !self.nodes.contains_key(id) {
                    self.nodes.insert(*id, None);
                    self.next_version.insert(*id, 1);
                }
            }
            if versions {
                self.fetch_next_versions(&files).await?;
            }
        }
        Ok(())
    }

    /// The next version numbers of `files` (at most [`IN_BATCH`]).
    async fn fetch_next_versions(&mut self, files: &[NodeId]) -> Result<(), MetaError> {
        if files.is_empty() {
            return Ok(());
        }
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT node, MAX(version) FROM versions ");
        qb.push("WHERE account = ")
            .push_bind(self.account.0)
            .push(" AND node IN (");
        push_list(&mut qb, files.iter().map(|id| id.as_bytes().to_vec()));
        qb.push(" GROUP BY node");
        let rows = qb.build().fetch_all(&mut *self.tx).await.map_err(backend)?;
        for id in files {
            self.next_version.insert(*id, 1);
        }
        for row in rows {
            let node: Vec<u8> = row.try_get(0).map_err(backend)?;
            let max: i64 = row.try_get(1).map_err(backend)?;
            let next = u64::try_from(max).map_err(corrupt)? + 1;
            self.next_version
                .insert(NodeId(uuid_from_blob(&node)?), next);
        }
        Ok(())
    }

    /// Fetches the holders of those of `names` not cached yet: per folder,
    /// one `name IN (...)` over live entries and links, up to [`IN_BATCH`]
    /// names per statement. (A join against a `VALUES` list was planned
    /// as a scan of the folder by the bundled SQLite: 200 ms per statement
    /// in a folder of 20,000 files.)
    async fn fetch_names(&mut self, names: &[(NodeId, &str)]) -> Result<(), MetaError> {
        let mut missing = uncached(
            names.iter().map(|(p, n)| (*p, (*n).to_owned())),
            &self.names,
        );
        missing.sort();
        for batch in missing.chunks(IN_BATCH) {
            let mut qb = QueryBuilder::<Sqlite>::new("");
            let mut first = true;
            for group in batch.chunk_by(|a, b| a.0 == b.0) {
                let parent = group[0].0.as_bytes().to_vec();
                for (table, live) in [("entries", " AND live = 1"), ("links", "")] {
                    if !first {
                        qb.push(" UNION ALL ");
                    }
                    first = false;
                    qb.push(format!(
                        "SELECT parent, name, node FROM {table} WHERE account = "
                    ))
                    .push_bind(self.account.0)
                    .push(live)
                    .push(" AND parent = ")
                    .push_bind(parent.clone())
                    .push(" AND name IN (");
                    let mut list = qb.separated(", ");
                    for (_, name) in group {
                        list.push_bind(name.clone());
                    }
                    list.push_unseparated(")");
                }
            }
            let rows = qb.build().fetch_all(&mut *self.tx).await.map_err(backend)?;
            for key in batch {
                self.names.insert(key.clone(), None);
            }
            for row in rows {
                let parent: Vec<u8> = row.try_get(0).map_err(backend)?;
                let name: String = row.try_get(1).map_err(backend)?;
                let node: Vec<u8> = row.try_get(2).map_err(backend)?;
                self.names.insert(
                    (NodeId(uuid_from_blob(&parent)?), name),
                    Some(NodeId(uuid_from_blob(&node)?)),
                );
            }
        }
        Ok(())
    }

    /// Fetches the ownership of those of `ids` not cached yet.
    async fn fetch_owned(&mut self, ids: &[ChunkId]) -> Result<(), MetaError> {
        let missing = uncached(ids.iter().copied(), &self.owned);
        if missing.is_empty() {
            return Ok(());
        }
        let found = q_owned_chunks(&mut self.tx, self.account, &missing).await?;
        for id in missing {
            self.owned.insert(id, found.get(&id).copied());
        }
        Ok(())
    }

    /// Writes every dirty node's current state and the appended versions
    /// (see the module docs for the order).
    async fn flush(&mut self) -> Result<(), MetaError> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut records = Vec::with_capacity(dirty.len());
        for id in dirty.keys() {
            match self.nodes.get(id) {
                Some(Some(n)) => records.push(n),
                _ => return Err(corrupt(format!("written node {id} is not cached"))),
            }
        }
        let ids: Vec<Vec<u8>> = dirty.keys().map(|id| id.as_bytes().to_vec()).collect();
        for batch in ids.chunks(IN_BATCH) {
            let mut qb =
                QueryBuilder::<Sqlite>::new("UPDATE entries SET live = 0 WHERE account = ");
            qb.push_bind(self.account.0)
                .push(" AND live = 1 AND node IN (");
            push_list(&mut qb, batch.iter().cloned());
            qb.build().execute(&mut *self.tx).await.map_err(backend)?;
        }
        let linked: Vec<Vec<u8>> = dirty
            .iter()
            .filter(|(_, may_have_links)| **may_have_links)
            .map(|(id, _)| id.as_bytes().to_vec())
            .collect();
        for batch in linked.chunks(IN_BATCH) {
            let mut qb = QueryBuilder::<Sqlite>::new("DELETE FROM links WHERE account = ");
            qb.push_bind(self.account.0).push(" AND node IN (");
            push_list(&mut qb, batch.iter().cloned());
            qb.build().execute(&mut *self.tx).await.map_err(backend)?;
        }
        let rows = records
            .iter()
            .map(|n| NodeRow::encode(n))
            .collect::<Result<Vec<_>, _>>()?;
        for batch in rows.chunks(IN_BATCH) {
            insert_nodes(&mut self.tx, self.account, batch).await?;
        }
        let entries: Vec<(Vec<u8>, Vec<u8>, String, bool)> = records
            .iter()
            .filter_map(|n| {
                n.parent.map(|p| {
                    let id = n.node_id.as_bytes().to_vec();
                    (id, p.as_bytes().to_vec(), n.name.clone(), !n.deleted)
                })
            })
            .collect();
        for batch in entries.chunks(IN_BATCH) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO entries (account, node, parent, name, live) ",
            );
            qb.push_values(batch, |mut row, (node, parent, name, live)| {
                row.push_bind(self.account.0)
                    .push_bind(node.clone())
                    .push_bind(parent.clone())
                    .push_bind(name.clone())
                    .push_bind(*live);
            });
            qb.push(
                " ON CONFLICT (account, node) DO UPDATE SET parent = excluded.parent, \
                 name = excluded.name, live = excluded.live",
            );
            qb.build().execute(&mut *self.tx).await.map_err(backend)?;
        }
        // A deleted node keeps no links (protocol::api module docs).
        let links: Vec<(Vec<u8>, &Link)> = records
            .iter()
            .filter(|n| !n.deleted)
            .flat_map(|n| n.links.iter().map(|l| (n.node_id.as_bytes().to_vec(), l)))
            .collect();
        for batch in links.chunks(IN_BATCH) {
            let mut qb =
                QueryBuilder::<Sqlite>::new("INSERT INTO links (account, node, parent, name) ");
            qb.push_values(batch, |mut row, (node, link)| {
                row.push_bind(self.account.0)
                    .push_bind(node.clone())
                    .push_bind(link.parent.as_bytes().to_vec())
                    .push_bind(link.name.clone());
            });
            qb.build().execute(&mut *self.tx).await.map_err(backend)?;
        }
        let versions = std::mem::take(&mut self.versions);
        let rows = versions
            .iter()
            .map(|(v, number)| VersionRow::encode(v, *number))
            .collect::<Result<Vec<_>, _>>()?;
        for batch in rows.chunks(IN_BATCH) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO versions (account, node, version, manifest, size, content_hash, \
                 device, created_ns) ",
            );
            qb.push_values(batch, |mut row, v| {
                row.push_bind(self.account.0)
                    .push_bind(v.node.clone())
                    .push_bind(v.version)
                    .push_bind(v.manifest.clone())
                    .push_bind(v.size)
                    .push_bind(v.hash.clone())
                    .push_bind(v.device.clone())
                    .push_bind(v.created_ns);
            });
            qb.build().execute(&mut *self.tx).await.map_err(backend)?;
        }
        Ok(())
    }
}

/// Appends `?, ?, ...)` binding each id.
fn push_list(qb: &mut QueryBuilder<'_, Sqlite>, ids: impl IntoIterator<Item = Vec<u8>>) {
    let mut list = qb.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    list.push_unseparated(")");
}

/// Reads which of `ids` (not cached yet) are aliases into `cache`; the
/// others are remembered as not.
async fn fetch_aliases(
    conn: &mut SqliteConnection,
    account: AccountId,
    ids: &[NodeId],
    cache: &mut HashMap<NodeId, Option<NodeId>>,
) -> Result<(), MetaError> {
    let missing = uncached(ids.iter().copied(), cache);
    for batch in missing.chunks(IN_BATCH) {
        let mut qb =
            QueryBuilder::<Sqlite>::new("SELECT alias, node FROM node_aliases WHERE account = ");
        qb.push_bind(account.0).push(" AND alias IN (");
        push_list(&mut qb, batch.iter().map(|id| id.as_bytes().to_vec()));
        for row in qb.build().fetch_all(&mut *conn).await.map_err(backend)? {
            let alias: Vec<u8> = row.try_get("alias").map_err(backend)?;
            let node: Vec<u8> = row.try_get("node").map_err(backend)?;
            cache.insert(
                NodeId(uuid_from_blob(&alias)?),
                Some(NodeId(uuid_from_blob(&node)?)),
            );
        }
        for id in batch {
            cache.entry(*id).or_insert(None);
        }
    }
    Ok(())
}

/// Those of `keys` that `cache` does not hold, each once, in order.
fn uncached<K: Eq + std::hash::Hash + Clone, V>(
    keys: impl Iterator<Item = K>,
    cache: &HashMap<K, V>,
) -> Vec<K> {
    let mut seen = HashSet::new();
    keys.filter(|k| !cache.contains_key(k) && seen.insert(k.clone()))
        .collect()
}

/// Every live name `node` holds: its first entry (none for the root) and
/// its links; none when deleted.
fn live_names(node: &NodeRecord) -> Vec<(NodeId, String)> {
    if node.deleted {
        return Vec::new();
    }
    node.parent
        .map(|p| (p, node.name.clone()))
        .into_iter()
        .chain(node.links.iter().map(|l| (l.parent, l.name.clone())))
        .collect()
}

/// A `nodes` row, encoded.
struct NodeRow {
    id: Vec<u8>,
    kind: &'static str,
    mode: i64,
    uid: Option<i64>,
    gid: Option<i64>,
    ids_from: Option<Vec<u8>>,
    rdev: i64,
    times: [(i64, i64); 3],
    size: i64,
    manifest: Option<String>,
    hash: Option<Vec<u8>>,
    symlink_target: Option<String>,
    xattrs: Option<String>,
    conflict: Option<String>,
    vv: String,
    seq: i64,
    deleted: bool,
    links: Option<String>,
}

impl NodeRow {
    fn encode(node: &NodeRecord) -> Result<Self, MetaError> {
        let m = &node.meta;
        let links: &[Link] = if node.deleted { &[] } else { &node.links };
        Ok(NodeRow {
            id: node.node_id.as_bytes().to_vec(),
            kind: kind_str(m.kind),
            mode: i64::from(m.mode),
            uid: m.uid.map(i64::from),
            gid: m.gid.map(i64::from),
            ids_from: m.ids_from.map(|d| d.0.as_bytes().to_vec()),
            rdev: i64::from(m.rdev),
            times: [m.mtime, m.atime, m.btime].map(|t| (t.sec, i64::from(t.nsec))),
            size: to_i64(m.size(), "size")?,
            manifest: m
                .content
                .as_ref()
                .map(|c| serde_json::to_string(&c.manifest))
                .transpose()
                .map_err(corrupt)?,
            hash: m.content.as_ref().map(|c| c.hash().0.to_vec()),
            symlink_target: m.symlink_target.clone(),
            xattrs: match m.xattrs.is_empty() {
                true => None,
                false => Some(serde_json::to_string(&m.xattrs).map_err(corrupt)?),
            },
            conflict: m
                .conflict
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(corrupt)?,
            vv: serde_json::to_string(&node.vv).map_err(corrupt)?,
            seq: to_i64(node.seq, "seq")?,
            deleted: node.deleted,
            links: (!links.is_empty())
                .then(|| serde_json::to_string(links))
                .transpose()
                .map_err(corrupt)?,
        })
    }
}

/// Inserts or replaces `rows` (at most [`IN_BATCH`]) in one statement.
async fn insert_nodes(
    conn: &mut SqliteConnection,
    account: AccountId,
    rows: &[NodeRow],
) -> Result<(), MetaError> {
    let mut qb = QueryBuilder::<Sqlite>::new(
        "INSERT INTO nodes (account, id, kind, mode, uid, gid, ids_from, rdev, \
             mtime_sec, mtime_nsec, atime_sec, atime_nsec, btime_sec, btime_nsec, \
             size, manifest, content_hash, symlink_target, xattrs, conflict, vv, seq, deleted, \
             links) ",
    );
    qb.push_values(rows, |mut b, r| {
        b.push_bind(account.0)
            .push_bind(r.id.clone())
            .push_bind(r.kind)
            .push_bind(r.mode)
            .push_bind(r.uid)
            .push_bind(r.gid)
            .push_bind(r.ids_from.clone())
            .push_bind(r.rdev);
        for (sec, nsec) in r.times {
            b.push_bind(sec).push_bind(nsec);
        }
        b.push_bind(r.size)
            .push_bind(r.manifest.clone())
            .push_bind(r.hash.clone())
            .push_bind(r.symlink_target.clone())
            .push_bind(r.xattrs.clone())
            .push_bind(r.conflict.clone())
            .push_bind(r.vv.clone())
            .push_bind(r.seq)
            .push_bind(r.deleted)
            .push_bind(r.links.clone());
    });
    qb.push(
        " ON CONFLICT (account, id) DO UPDATE SET kind = excluded.kind, mode = excluded.mode, \
             uid = excluded.uid, gid = excluded.gid, ids_from = excluded.ids_from, \
             rdev = excluded.rdev, mtime_sec = excluded.mtime_sec, \
             mtime_nsec = excluded.mtime_nsec, atime_sec = excluded.atime_sec, \
             atime_nsec = excluded.atime_nsec, btime_sec = excluded.btime_sec, \
             btime_nsec = excluded.btime_nsec, size = excluded.size, \
             manifest = excluded.manifest, content_hash = excluded.content_hash, \
             symlink_target = excluded.symlink_target, xattrs = excluded.xattrs, \
             conflict = excluded.conflict, \
             vv = excluded.vv, seq = excluded.seq, \
             deleted = excluded.deleted, links = excluded.links",
    );
    qb.build().execute(conn).await.map_err(backend)?;
    Ok(())
}

/// Writes the root folder of a new account (it has no entry).
pub(super) async fn write_root(
    conn: &mut SqliteConnection,
    account: AccountId,
    root: &NodeRecord,
) -> Result<(), MetaError> {
    insert_nodes(conn, account, &[NodeRow::encode(root)?]).await
}

/// A `versions` row, encoded.
struct VersionRow {
    node: Vec<u8>,
    version: i64,
    manifest: String,
    size: i64,
    hash: Vec<u8>,
    device: Vec<u8>,
    created_ns: i64,
}

impl VersionRow {
    fn encode(v: &NewVersion, number: u64) -> Result<Self, MetaError> {
        let content = FileContent {
            manifest: v.manifest.clone(),
        };
        Ok(VersionRow {
            node: v.node.as_bytes().to_vec(),
            version: to_i64(number, "version")?,
            manifest: serde_json::to_string(&v.manifest).map_err(corrupt)?,
            size: to_i64(content.size(), "size")?,
            hash: content.hash().0.to_vec(),
            device: v.device.0.as_bytes().to_vec(),
            created_ns: v.created_ns,
        })
    }
}

#[async_trait]
impl MetaTxn for SqliteTxn {
    fn account(&self) -> AccountId {
        self.account
    }

    async fn prefetch(
        &mut self,
        nodes: &[NodeId],
        names: &[(NodeId, &str)],
        chunks: &[ChunkId],
    ) -> Result<(), MetaError> {
        self.fetch_nodes(nodes, true).await?;
        // Only an id without a node can be an alias.
        let absent: Vec<NodeId> = nodes
            .iter()
            .filter(|id| matches!(self.nodes.get(id), Some(None)))
            .copied()
            .collect();
        fetch_aliases(&mut self.tx, self.account, &absent, &mut self.aliases).await?;
        self.fetch_names(names).await?;
        self.fetch_owned(chunks).await
    }

    async fn node(&mut self, id: NodeId) -> Result<Option<NodeRecord>, MetaError> {
        if !self.nodes.contains_key(&id) {
            self.fetch_nodes(&[id], false).await?;
        }
        Ok(self.nodes.get(&id).cloned().flatten())
    }

    async fn resolve_alias(&mut self, id: NodeId) -> Result<NodeId, MetaError> {
        if !self.aliases.contains_key(&id) {
            if matches!(self.nodes.get(&id), Some(Some(_))) {
                return Ok(id);
            }
            fetch_aliases(&mut self.tx, self.account, &[id], &mut self.aliases).await?;
        }
        Ok(self.aliases.get(&id).copied().flatten().unwrap_or(id))
    }

    async fn add_alias(&mut self, alias: NodeId, node: NodeId) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO node_aliases (account, alias, node) VALUES (?, ?, ?) \
             ON CONFLICT (account, alias) DO UPDATE SET node = excluded.node",
        )
        .bind(self.account.0)
        .bind(&alias.as_bytes()[..])
        .bind(&node.as_bytes()[..])
        .execute(&mut *self.tx)
        .await
        .map_err(backend)?;
        self.aliases.insert(alias, Some(node));
        Ok(())
    }

    async fn lookup(&mut self, parent: NodeId, name: &str) -> Result<Option<NodeId>, MetaError> {
        let key = (parent, name.to_owned());
        if let Some(holder) = self.names.get(&key) {
            return Ok(*holder);
        }
        let holder = q_lookup(&mut self.tx, self.account, parent, name).await?;
        self.names.insert(key, holder);
        Ok(holder)
    }

    async fn has_live_children(&mut self, dir: NodeId) -> Result<bool, MetaError> {
        self.flush().await?;
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM entries WHERE account = ?1 AND parent = ?2 AND live = 1 \
             UNION ALL SELECT 1 FROM links WHERE account = ?1 AND parent = ?2 LIMIT 1",
        )
        .bind(self.account.0)
        .bind(&dir.as_bytes()[..])
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(backend)?;
        Ok(row.is_some())
    }

    async fn owned_chunks(&mut self, ids: &[ChunkId]) -> Result<HashMap<ChunkId, u32>, MetaError> {
        self.fetch_owned(ids).await?;
        Ok(ids
            .iter()
            .filter_map(|id| self.owned.get(id).copied().flatten().map(|len| (*id, len)))
            .collect())
    }

    async fn next_seq(&mut self) -> Result<u64, MetaError> {
        if let Some((next, behind)) = &mut self.seq {
            let seq = *next;
            *next += 1;
            *behind = true;
            return Ok(seq);
        }
        let (seq,): (i64,) = sqlx::query_as(
            "UPDATE accounts SET next_seq = next_seq + 1 WHERE id = ? RETURNING next_seq - 1",
        )
        .bind(self.account.0)
        .fetch_one(&mut *self.tx)
        .await
        .map_err(backend)?;
        let seq = u64::try_from(seq).map_err(corrupt)?;
        self.seq = Some((seq + 1, false));
        Ok(seq)
    }

    async fn write_node(&mut self, node: &NodeRecord) -> Result<(), MetaError> {
        let old = self.node(node.node_id).await?;
        let new_names = live_names(node);
        for key in &new_names {
            if let Some(Some(holder)) = self.names.get(key) {
                if *holder != node.node_id {
                    return Err(MetaError::Backend(
                        format!(
                            "UNIQUE constraint failed: {:?} in folder {} is held by node {holder}",
                            key.1, key.0
                        )
                        .into(),
                    ));
                }
            }
        }
        if let Some(old) = &old {
            for key in live_names(old) {
                self.names.insert(key, None);
            }
        }
        for key in new_names {
            self.names.insert(key, Some(node.node_id));
        }
        let may_have_links = old.as_ref().is_some_and(|o| !o.links.is_empty());
        self.dirty.entry(node.node_id).or_insert(may_have_links);
        let mut stored = node.clone();
        if stored.deleted {
            stored.links.clear();
        }
        self.nodes.insert(node.node_id, Some(stored));
        Ok(())
    }

    async fn append_version(&mut self, v: &NewVersion) -> Result<u64, MetaError> {
        let number = match self.next_version.get(&v.node) {
            Some(n) => *n,
            None => {
                let (max,): (Option<i64>,) = sqlx::query_as(
                    "SELECT MAX(version) FROM versions WHERE account = ? AND node = ?",
                )
                .bind(self.account.0)
                .bind(&v.node.as_bytes()[..])
                .fetch_one(&mut *self.tx)
                .await
                .map_err(backend)?;
                u64::try_from(max.unwrap_or(0)).map_err(corrupt)? + 1
            }
        };
        self.next_version.insert(v.node, number + 1);
        self.versions.push((v.clone(), number));
        Ok(number)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), MetaError> {
        self.flush().await?;
        let SqliteTxn {
            mut tx,
            seq,
            account,
            _guard,
            ..
        } = *self;
        if let Some((next, true)) = seq {
            sqlx::query("UPDATE accounts SET next_seq = ? WHERE id = ?")
                .bind(to_i64(next, "seq")?)
                .bind(account.0)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn rollback(self: Box<Self>) {
        let SqliteTxn { tx, _guard, .. } = *self;
        if let Err(e) = tx.rollback().await {
            tracing::warn!(error = %e, "rollback failed");
        }
    }
}
