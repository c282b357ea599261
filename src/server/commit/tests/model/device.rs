//! A simulated device: what a real client keeps, and how it syncs.
//!
//! It holds its local tree, per node the last server record it adopted
//! (its *base*: the `base` version vector and the `seen` state of its
//! next op), a pull cursor and a queue of pending local changes. Local
//! operations change the local tree only, with the kernel's
//! preconditions (a name taken in the folder, `rmdir` of a non-empty
//! folder, a folder moved into itself: nothing happens). A sync pushes
//! the queue, one op per commit, each with the node's **current** state,
//! adopts every answer, then pulls until the log is drained.

use super::history::History;
use super::{LocalOp, Server, DIR_NAMES, FILE_NAMES, MODES};
use crate::protocol::{
    CommitOp, CommitOutcome, NodeChange, NodeId, NodeKind, NodeMeta, NodeRecord, SeenState,
    Timestamp, VersionVector,
};
use crate::server::commit::CommitCtx;
use proptest::sample::Index;
use std::collections::BTreeMap;

/// One node of a device's local tree.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct LocalNode {
    pub parent: NodeId,
    pub name: String,
    pub meta: NodeMeta,
}

impl LocalNode {
    fn of(rec: &NodeRecord) -> LocalNode {
        LocalNode {
            parent: rec.parent.unwrap_or(NodeId::ROOT),
            name: rec.name.clone(),
            meta: rec.meta.clone(),
        }
    }
}

/// A local change not yet pushed.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Pending {
    /// The node changed (or was made): push its current state.
    Upsert(NodeId),
    /// The node was deleted; the version vector it had then.
    Delete(NodeId, VersionVector),
}

impl Pending {
    fn node(&self) -> NodeId {
        match self {
            Pending::Upsert(n) | Pending::Delete(n, _) => *n,
        }
    }
}

/// One simulated device of the account.
pub(super) struct Device {
    pub index: usize,
    pub ctx: CommitCtx,
    pub online: bool,
    pub nodes: BTreeMap<NodeId, LocalNode>,
    /// The last server record adopted, per node.
    base: BTreeMap<NodeId, NodeRecord>,
    cursor: u64,
    queue: Vec<Pending>,
    next_id: u64,
}

impl Device {
    pub fn new(index: usize, ctx: CommitCtx) -> Device {
        Device {
            index,
            ctx,
            online: true,
            nodes: BTreeMap::new(),
            base: BTreeMap::new(),
            cursor: 0,
            queue: Vec::new(),
            next_id: 0,
        }
    }

    /// A fresh node id, deterministic per device (so a shrunk case
    /// replays the same way).
    fn new_id(&mut self) -> NodeId {
        self.next_id += 1;
        NodeId(uuid::Uuid::from_u128(
            ((self.index as u128 + 1) << 64) | u128::from(self.next_id),
        ))
    }

    /// Reachable nodes by path, sorted (what the user sees).
    fn listing(&self) -> Vec<(String, NodeId)> {
        let mut children: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
        for (id, n) in &self.nodes {
            children.entry(n.parent).or_default().push(*id);
        }
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), NodeId::ROOT)];
        while let Some((path, dir)) = stack.pop() {
            for c in children.get(&dir).into_iter().flatten() {
                let p = format!("{path}/{}", self.nodes[c].name);
                out.push((p.clone(), *c));
                stack.push((p, *c));
            }
        }
        out.sort();
        out
    }

    fn pick(&self, ix: &Index, keep: impl Fn(&LocalNode) -> bool) -> Option<NodeId> {
        let found: Vec<NodeId> = self
            .listing()
            .into_iter()
            .filter(|(_, id)| keep(&self.nodes[id]))
            .map(|(_, id)| id)
            .collect();
        (!found.is_empty()).then(|| found[ix.index(found.len())])
    }

    /// A folder, the root included.
    fn pick_dir(&self, ix: &Index) -> NodeId {
        let mut dirs = vec![NodeId::ROOT];
        dirs.extend(
            self.listing()
                .into_iter()
                .filter(|(_, id)| self.nodes[id].meta.kind == NodeKind::Dir)
                .map(|(_, id)| id),
        );
        dirs[ix.index(dirs.len())]
    }

    fn holder(&self, parent: NodeId, name: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, n)| n.parent == parent && n.name == name)
            .map(|(id, _)| *id)
    }

    /// `node` is `dir` or one of its ancestors.
    fn contains(&self, node: NodeId, mut dir: NodeId) -> bool {
        loop {
            if dir == node {
                return true;
            }
            match self.nodes.get(&dir) {
                Some(n) => dir = n.parent,
                None => return false,
            }
        }
    }

    fn touch(&mut self, id: NodeId) {
        if !self.queue.contains(&Pending::Upsert(id)) {
            self.queue.push(Pending::Upsert(id));
        }
    }

    fn remove(&mut self, id: NodeId) {
        self.nodes.remove(&id);
        self.queue.retain(|p| *p != Pending::Upsert(id));
        if let Some(b) = self.base.get(&id) {
            self.queue.push(Pending::Delete(id, b.vv.clone()));
        }
    }

    /// Makes a node in `parent` at time `now`: a file of `CONTENTS[i]`
    /// for `Some(i)`, else a folder. The name must be free.
    pub fn make(
        &mut self,
        parent: NodeId,
        name: &str,
        content: Option<usize>,
        server: &Server,
        hist: &mut History,
        now: Timestamp,
    ) -> NodeId {
        let id = self.new_id();
        let meta = match content {
            Some(i) => NodeMeta {
                content: Some(server.contents.content(i)),
                ..NodeMeta::new(NodeKind::File, 0o644, now)
            },
            None => NodeMeta::new(NodeKind::Dir, 0o755, now),
        };
        self.nodes.insert(id, node(parent, name, meta));
        self.touch(id);
        if let Some(i) = content {
            hist.write(self.index, id, None, server.contents.bytes(i));
        }
        id
    }

    /// Applies one local operation at time `now` (a no-op when the kernel
    /// would refuse it); records content writes and deletes in `hist`.
    pub fn apply(&mut self, op: &LocalOp, server: &Server, hist: &mut History, now: Timestamp) {
        let is_file = |n: &LocalNode| n.meta.kind == NodeKind::File;
        let is_dir = |n: &LocalNode| n.meta.kind == NodeKind::Dir;
        match *op {
            LocalOp::Create {
                ref dir,
                name,
                content,
            } => {
                let parent = self.pick_dir(dir);
                let name = FILE_NAMES[name];
                if self.holder(parent, name).is_none() {
                    self.make(parent, name, Some(content), server, hist, now);
                }
            }
            LocalOp::Mkdir { ref dir, name } => {
                let parent = self.pick_dir(dir);
                let name = DIR_NAMES[name];
                if self.holder(parent, name).is_none() {
                    self.make(parent, name, None, server, hist, now);
                }
            }
            LocalOp::Write { ref file, content } => {
                let Some(id) = self.pick(file, is_file) else {
                    return;
                };
                let new = server.contents.content(content);
                let n = self.nodes.get_mut(&id).expect("picked");
                if n.meta.content.as_ref() == Some(&new) {
                    return;
                }
                let old = server.contents.of(&n.meta);
                n.meta.content = Some(new);
                n.meta.mtime = now;
                self.touch(id);
                hist.write(self.index, id, old, server.contents.bytes(content));
            }
            LocalOp::Rename { ref node, name } => {
                let Some(id) = self.pick(node, |_| true) else {
                    return;
                };
                let n = &self.nodes[&id];
                let name = match n.meta.kind {
                    NodeKind::Dir => DIR_NAMES[name],
                    _ => FILE_NAMES[name],
                };
                if self.holder(n.parent, name).is_some() {
                    return;
                }
                let n = self.nodes.get_mut(&id).expect("picked");
                n.name = name.to_owned();
                // Renaming a conflict copy makes it an ordinary file.
                n.meta.conflict = None;
                self.touch(id);
            }
            LocalOp::Move { ref node, ref dir } => {
                let (Some(id), to) = (self.pick(node, |_| true), self.pick_dir(dir)) else {
                    return;
                };
                let n = &self.nodes[&id];
                if n.parent == to || self.holder(to, &n.name).is_some() || self.contains(id, to) {
                    return;
                }
                self.nodes.get_mut(&id).expect("picked").parent = to;
                self.touch(id);
            }
            LocalOp::Chmod { ref node, mode } => {
                let Some(id) = self.pick(node, |_| true) else {
                    return;
                };
                let n = self.nodes.get_mut(&id).expect("picked");
                if n.meta.mode == MODES[mode] {
                    return;
                }
                n.meta.mode = MODES[mode];
                self.touch(id);
            }
            LocalOp::Delete { ref file } => {
                let Some(id) = self.pick(file, is_file) else {
                    return;
                };
                let old = server.contents.of(&self.nodes[&id].meta);
                hist.delete(self.index, id, old);
                self.remove(id);
            }
            LocalOp::Rmdir { ref dir } => {
                let Some(id) = self.pick(dir, is_dir) else {
                    return;
                };
                if self.nodes.values().any(|n| n.parent == id) {
                    return;
                }
                self.remove(id);
            }
        }
    }

    /// The order to push the queue in: the queue's, except that an entry
    /// goes after what it needs on the server first — an upsert after the
    /// creation of its folder and after the entries of the nodes that
    /// held its name there, a folder's delete after the entries of the
    /// nodes that were in it. (A cycle, two names swapped, is broken by
    /// queue order: the server then gives one a conflict name.)
    fn push_order(&self) -> Vec<Pending> {
        let mut state = vec![0u8; self.queue.len()];
        let mut out = Vec::with_capacity(self.queue.len());
        for i in 0..self.queue.len() {
            self.visit(i, &mut state, &mut out);
        }
        out
    }

    fn visit(&self, i: usize, state: &mut [u8], out: &mut Vec<Pending>) {
        if state[i] != 0 {
            return;
        }
        state[i] = 1;
        for j in self.needs(i) {
            self.visit(j, state, out);
        }
        state[i] = 2;
        out.push(self.queue[i].clone());
    }

    /// Queue positions entry `i` must be pushed after.
    fn needs(&self, i: usize) -> Vec<usize> {
        let on_server_in = |j: usize, parent: NodeId, name: Option<&str>| {
            let id = self.queue[j].node();
            j != i
                && self.base.get(&id).is_some_and(|b| {
                    b.parent == Some(parent) && name.is_none_or(|name| b.name == name)
                })
        };
        match &self.queue[i] {
            Pending::Upsert(id) => {
                let Some(n) = self.nodes.get(id) else {
                    return Vec::new();
                };
                (0..self.queue.len())
                    .filter(|&j| {
                        let other = self.queue[j].node();
                        other != *id
                            && ((self.queue[j] == Pending::Upsert(n.parent)
                                && !self.base.contains_key(&n.parent))
                                || on_server_in(j, n.parent, Some(&n.name)))
                    })
                    .collect()
            }
            Pending::Delete(id, _) => (0..self.queue.len())
                .filter(|&j| on_server_in(j, *id, None))
                .collect(),
        }
    }

    /// Pushes the queue and pulls, when online. `batched`: every op in
    /// one request (as the client sends a round), else one request per op
    /// built after the previous answer was adopted.
    pub async fn sync(
        &mut self,
        server: &Server,
        hist: &mut History,
        batched: bool,
    ) -> Result<(), String> {
        if !self.online {
            return Ok(());
        }
        hist.pushed(self.index);
        let mut order = self.push_order();
        self.queue.clear();
        if batched {
            let ops: Vec<CommitOp> = order.iter().filter_map(|e| self.op_for(e)).collect();
            let ids: Vec<NodeId> = ops.iter().map(|op| op.node_id).collect();
            let outcomes = server.commit(&self.ctx, ops).await?;
            for (id, outcome) in ids.into_iter().zip(outcomes) {
                self.take_answer(id, outcome, &mut [], server, hist);
            }
        } else {
            for k in 0..order.len() {
                let Some(op) = self.op_for(&order[k]) else {
                    continue;
                };
                let id = op.node_id;
                for outcome in server.commit(&self.ctx, vec![op]).await? {
                    self.take_answer(id, outcome, &mut order[k + 1..], server, hist);
                }
            }
        }
        self.pull(server).await?;
        hist.pulled(self.index);
        Ok(())
    }

    /// The op of a queue entry, from the node's current state (`None`
    /// for a node gone since).
    fn op_for(&self, entry: &Pending) -> Option<CommitOp> {
        Some(match entry {
            Pending::Upsert(id) => {
                let n = self.nodes.get(id)?;
                let base = self.base.get(id);
                CommitOp {
                    node_id: *id,
                    base: base.map(|b| b.vv.clone()).unwrap_or_default(),
                    seen: base.and_then(SeenState::of),
                    change: NodeChange::Upsert {
                        parent: n.parent,
                        name: n.name.clone(),
                        links: Vec::new(),
                        meta: n.meta.clone(),
                    },
                }
            }
            Pending::Delete(id, vv) => CommitOp {
                node_id: *id,
                base: vv.clone(),
                seen: None,
                change: NodeChange::Delete,
            },
        })
    }

    /// Adopts the answer to the op on node `id`; `rest` is what is still
    /// to push (re-keyed when the node was merged into another).
    fn take_answer(
        &mut self,
        id: NodeId,
        outcome: CommitOutcome,
        rest: &mut [Pending],
        server: &Server,
        hist: &mut History,
    ) {
        hist.answered(outcome_name(&outcome));
        // A node the server gave a conflict name because another holds
        // the name it asked for is marked too (also the original of a
        // content conflict whose move met a taken name).
        if let CommitOutcome::Renamed { node }
        | CommitOutcome::Merged { node }
        | CommitOutcome::ConflictCopy { node, .. } = &outcome
        {
            if node.meta.conflict.is_some() {
                hist.moved_aside(node.node_id);
            }
        }
        match outcome {
            CommitOutcome::Applied { node }
            | CommitOutcome::Renamed { node }
            | CommitOutcome::Superseded { node } => self.adopt(&node),
            CommitOutcome::ConflictCopy { node, copy } => {
                let bytes = server.contents.of(&copy.meta).unwrap_or_default();
                hist.conflict_copy(self.index, id, copy.node_id, &bytes);
                self.adopt(&node);
                self.adopt(&copy);
            }
            CommitOutcome::Merged { node } => {
                self.rekey(id, node.node_id, rest);
                hist.merged(self.index, id, node.node_id);
                self.adopt(&node);
            }
            CommitOutcome::AlreadyGone => {
                self.base.remove(&id);
            }
        }
    }

    /// Takes a server record as the node's local state and base.
    fn adopt(&mut self, rec: &NodeRecord) {
        if rec.node_id.is_root() {
            return;
        }
        if rec.deleted {
            self.nodes.remove(&rec.node_id);
            self.base.remove(&rec.node_id);
        } else {
            self.nodes.insert(rec.node_id, LocalNode::of(rec));
            self.base.insert(rec.node_id, rec.clone());
        }
    }

    /// The server merged local node `old` into `new`: `new` is its id now.
    fn rekey(&mut self, old: NodeId, new: NodeId, rest: &mut [Pending]) {
        self.nodes.remove(&old);
        self.base.remove(&old);
        for n in self.nodes.values_mut() {
            if n.parent == old {
                n.parent = new;
            }
        }
        for p in rest {
            match p {
                Pending::Upsert(n) | Pending::Delete(n, _) if *n == old => *n = new,
                _ => {}
            }
        }
    }

    /// Applies every change since the cursor. The queue is empty here (a
    /// pull follows the push in one sync), so no record meets a local
    /// change: each one is simply adopted.
    async fn pull(&mut self, server: &Server) -> Result<(), String> {
        loop {
            let page = server.changes(self.cursor).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            self.cursor = last.seq;
            for rec in &page {
                self.adopt(rec);
            }
        }
    }
}

fn node(parent: NodeId, name: &str, meta: NodeMeta) -> LocalNode {
    LocalNode {
        parent,
        name: name.to_owned(),
        meta,
    }
}

fn outcome_name(o: &CommitOutcome) -> &'static str {
    match o {
        CommitOutcome::Applied { .. } => "applied",
        CommitOutcome::Renamed { .. } => "renamed",
        CommitOutcome::ConflictCopy { .. } => "conflict_copy",
        CommitOutcome::Superseded { .. } => "superseded",
        CommitOutcome::AlreadyGone => "already_gone",
        CommitOutcome::Merged { .. } => "merged",
    }
}
