//! What the model remembers about content writes, and the checks made
//! of it once every device has synced (the rules are in the parent
//! module's docs).

use super::Contents;
use crate::protocol::{NodeId, NodeKind, NodeRecord};
use std::collections::{BTreeMap, BTreeSet};

/// One content write (a file created with content, or written) by a
/// device.
struct Write {
    device: usize,
    /// The node written, by the id the device had for it then.
    node: NodeId,
    bytes: Vec<u8>,
    /// Every write the device knew of when it wrote (itself included).
    known: BTreeSet<usize>,
}

/// The writes of a run, who knew of which, and each device's last write
/// per node that nobody has replaced since.
pub(super) struct History {
    writes: Vec<Write>,
    /// Per device, the writes it knows of (its own, and what it pulled).
    known: Vec<BTreeSet<usize>>,
    /// The writes the server has received (pushed, or replaced before a
    /// push by a later write of the same device).
    server_known: BTreeSet<usize>,
    /// The writes that must survive: each device's last write per node,
    /// write → (device, node it is in now). One device may have two in
    /// one node when the server merged two of its nodes.
    last: BTreeMap<usize, (usize, NodeId)>,
    /// Per device, the (node, bytes) it replaced by a write since its
    /// last push: the push replaces every write of those bytes there.
    replaced: Vec<BTreeSet<(NodeId, Vec<u8>)>>,
    /// Node ids the server merged into another (`Merged`).
    aliases: BTreeMap<NodeId, NodeId>,
    /// Conflict copies the server made (`ConflictCopy` answers).
    pub conflicts_made: usize,
    /// Nodes the server moved aside from a name another node holds (a
    /// conflict name and mark, but no copy of content).
    pub moved_aside: std::collections::HashSet<NodeId>,
    /// How many answers of each kind the devices got (for the report).
    pub outcomes: BTreeMap<&'static str, u64>,
}

impl History {
    pub fn new(devices: usize) -> History {
        History {
            writes: Vec::new(),
            known: vec![BTreeSet::new(); devices],
            server_known: BTreeSet::new(),
            last: BTreeMap::new(),
            replaced: vec![BTreeSet::new(); devices],
            aliases: BTreeMap::new(),
            conflicts_made: 0,
            moved_aside: Default::default(),
            outcomes: BTreeMap::new(),
        }
    }

    /// Device `device` wrote `bytes` into `node`, which held `old` (`None`
    /// for a new file) on the device: writes of `old` there are replaced
    /// by one who saw them.
    pub fn write(&mut self, device: usize, node: NodeId, old: Option<Vec<u8>>, bytes: &[u8]) {
        if let Some(old) = old {
            self.retire(node, &old);
            self.replaced[device].insert((node, old));
        }
        let id = self.writes.len();
        self.known[device].insert(id);
        self.writes.push(Write {
            device,
            node,
            bytes: bytes.to_vec(),
            known: self.known[device].clone(),
        });
        self.last.retain(|_, at| *at != (device, node));
        self.last.insert(id, (device, node));
    }

    /// Device `device` deleted file `node`, which held `old` there.
    pub fn delete(&mut self, device: usize, node: NodeId, old: Option<Vec<u8>>) {
        if let Some(old) = old {
            self.retire(node, &old);
        }
        self.last.retain(|_, at| *at != (device, node));
    }

    /// The writes of `bytes` into `node` were seen and replaced.
    fn retire(&mut self, node: NodeId, bytes: &[u8]) {
        let node = self.resolve(node);
        let gone: Vec<usize> = self
            .last
            .iter()
            .filter(|(w, (_, n))| self.resolve(*n) == node && self.writes[**w].bytes == bytes)
            .map(|(w, _)| *w)
            .collect();
        for w in gone {
            self.last.remove(&w);
        }
    }

    /// The device's content `bytes` for `node` went to the conflict copy
    /// `copy`.
    pub fn conflict_copy(&mut self, device: usize, node: NodeId, copy: NodeId, bytes: &[u8]) {
        self.conflicts_made += 1;
        for (w, at) in &mut self.last {
            if *at == (device, node) && self.writes[*w].bytes == bytes {
                at.1 = copy;
            }
        }
    }

    /// The device's node `old` was merged into `new`.
    pub fn merged(&mut self, device: usize, old: NodeId, new: NodeId) {
        self.aliases.insert(old, new);
        for at in self.last.values_mut() {
            if *at == (device, old) {
                at.1 = new;
            }
        }
    }

    /// Counts an answer of kind `kind`.
    pub fn answered(&mut self, kind: &'static str) {
        *self.outcomes.entry(kind).or_default() += 1;
    }

    /// The device pushed: the server has every write it knows of, and
    /// each content the device replaced is replaced in every write of
    /// those bytes there (the server compares content by hash, so a
    /// version written again elsewhere since is the one the device saw).
    pub fn pushed(&mut self, device: usize) {
        self.server_known.extend(self.known[device].iter().copied());
        for (node, bytes) in std::mem::take(&mut self.replaced[device]) {
            self.retire(node, &bytes);
        }
    }

    /// The device pulled: it knows every write the server has.
    pub fn pulled(&mut self, device: usize) {
        let known = &mut self.known[device];
        known.extend(self.server_known.iter().copied());
    }

    fn resolve(&self, mut node: NodeId) -> NodeId {
        while let Some(n) = self.aliases.get(&node) {
            node = *n;
        }
        node
    }

    /// Pairs of writes of different bytes into one node by two devices,
    /// neither knowing of the other's.
    pub fn concurrent_pairs(&self) -> usize {
        let mut pairs = 0;
        for (i, a) in self.writes.iter().enumerate() {
            for (j, b) in self.writes.iter().enumerate().skip(i + 1) {
                if a.device != b.device
                    && self.resolve(a.node) == self.resolve(b.node)
                    && a.bytes != b.bytes
                    && !a.known.contains(&j)
                    && !b.known.contains(&i)
                {
                    pairs += 1;
                }
            }
        }
        pairs
    }

    /// Property 2: every surviving last write is the content of its node,
    /// or of a live conflict copy of it.
    pub fn check_last_writes(
        &self,
        live: &BTreeMap<NodeId, NodeRecord>,
        contents: &Contents,
    ) -> Result<(), String> {
        let holds = |rec: &NodeRecord, bytes: &[u8]| {
            rec.meta.kind == NodeKind::File && contents.of(&rec.meta).as_deref() == Some(bytes)
        };
        for (&w, &(device, node)) in &self.last {
            let node = self.resolve(node);
            let bytes = &self.writes[w].bytes;
            let kept = live.get(&node).is_some_and(|r| holds(r, bytes))
                || live.values().any(|r| {
                    r.meta.conflict.as_ref().is_some_and(|c| c.of == node) && holds(r, bytes)
                });
            if !kept {
                return Err(format!(
                    "dev{device}'s last write {:?} into {node} (write #{w}) is lost; \
                     the node is now {:?}",
                    String::from_utf8_lossy(bytes),
                    live.get(&node)
                ));
            }
        }
        Ok(())
    }

    /// The server answered an op of `node` with a conflict name and mark
    /// because another node holds the name asked for.
    pub fn moved_aside(&mut self, node: NodeId) {
        self.moved_aside.insert(node);
    }

    /// Property 3: conflict copies only from concurrent writes, at most
    /// one per concurrent pair, and no more marked nodes than copies made
    /// and nodes moved aside from a taken name.
    pub fn check_conflicts(&self, live: &BTreeMap<NodeId, NodeRecord>) -> Result<(), String> {
        let pairs = self.concurrent_pairs();
        // Folders brought back under a conflict name (an edit inside beat
        // their delete while another folder took the name) are marked
        // too; they are no copies of content.
        let marked = live
            .values()
            .filter(|r| r.meta.conflict.is_some() && r.meta.kind != NodeKind::Dir)
            .count();
        let aside = self.moved_aside.len();
        if self.conflicts_made > pairs || marked > self.conflicts_made + aside {
            return Err(format!(
                "{} conflict copies made and {aside} nodes moved aside, {marked} marked \
                 nodes live, but {pairs} pairs of concurrent content writes",
                self.conflicts_made
            ));
        }
        Ok(())
    }
}
