//! The model: a map from path to file bytes, folder or symlink target, the
//! groups of paths that are hard links of one node, the operations the
//! tests generate, and the expected result of each.

use crate::protocol::{conflict_name, NodeKind};
use crate::vfs::{VfsError, VfsResult};
use std::collections::{BTreeMap, BTreeSet};

/// Path components below the root (never empty).
pub(super) type ModelPath = Vec<String>;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    File(Vec<u8>),
    Dir,
    Symlink(String),
}

/// What an operation returned, reduced to what POSIX distinguishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    Ok,
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    Invalid,
    /// `EPERM` (a hard link of a folder).
    NotPermitted,
    /// Any other error: never expected.
    Other(String),
}

pub(super) fn outcome<T>(r: VfsResult<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(VfsError::NotFound) => Outcome::NotFound,
        Err(VfsError::Exists) => Outcome::Exists,
        Err(VfsError::NotDir) => Outcome::NotDir,
        Err(VfsError::IsDir) => Outcome::IsDir,
        Err(VfsError::NotEmpty) => Outcome::NotEmpty,
        Err(VfsError::InvalidArgument(_)) => Outcome::Invalid,
        Err(VfsError::NotPermitted(_)) => Outcome::NotPermitted,
        Err(e) => Outcome::Other(e.to_string()),
    }
}

/// File content: small literal bytes, or a large pseudo-random body
/// (several chunks) described by a seed so that shrinking stays cheap.
#[derive(Clone, Debug)]
pub(super) enum Content {
    Bytes(Vec<u8>),
    Big { seed: u8, len: usize },
}

impl Content {
    pub(super) fn bytes(&self) -> Vec<u8> {
        match self {
            Content::Bytes(b) => b.clone(),
            Content::Big { seed, len } => {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(*seed);
                (0..*len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 24) as u8
                    })
                    .collect()
            }
        }
    }
}

/// An operation on paths `P`: concrete paths ([`ModelPath`]), or as
/// generated, [`PathSel`]s resolved against the model's current tree.
#[derive(Clone, Debug)]
pub(super) enum Op<P = ModelPath> {
    Mkdir(P),
    /// `O_CREAT | O_EXCL`, write the content, close.
    Create(P, Content),
    /// Open an existing file, write at `at % (size + 64)`, close.
    WriteAt(P, u32, Vec<u8>),
    /// `truncate` to 0 when `size % 4 == 0`, else to `size % (len + 4096)`;
    /// with `true` through an open write handle (`ftruncate`).
    Truncate(P, u32, bool),
    Rename(P, P, bool),
    /// `renameat2(RENAME_EXCHANGE)`.
    Exchange(P, P),
    Unlink(P),
    Rmdir(P),
    Symlink(P, String),
    /// `link(2)`: the node at the first path gets the second as one more
    /// name.
    Link(P, P),
    /// Drain the journal to the server, pull, and compare the device, the
    /// server and a fresh device with the model.
    Upload,
    /// `fsync_all`, close, open again from the same cache.
    Reopen,
    /// Drain as [`Op::Upload`], then kill the device without `fsync_all`:
    /// it reopens from what its metadata store had flushed (with a sled
    /// store this is a reopen), and must then agree with the server.
    Crash,
}

/// How a generated op names a path, so that most ops meet existing nodes.
#[derive(Clone, Debug)]
pub(super) enum PathSel {
    /// One of the existing nodes (index modulo their number).
    Existing(usize),
    /// One of the existing folders (index modulo their number), or `a`.
    ExistingDir(usize),
    /// A name inside one of the existing folders or the root.
    Under(usize, String),
    Literal(ModelPath),
}

impl PathSel {
    pub(super) fn resolve(&self, model: &Model) -> ModelPath {
        let dirs = || -> Vec<&ModelPath> {
            model
                .nodes
                .iter()
                .filter(|(_, n)| **n == Node::Dir)
                .map(|(p, _)| p)
                .collect()
        };
        match self {
            PathSel::Existing(i) => match model.nodes.len() {
                0 => vec!["a".to_string()],
                n => model.nodes.keys().nth(i % n).expect("in range").clone(),
            },
            PathSel::ExistingDir(i) => match dirs() {
                d if d.is_empty() => vec!["a".to_string()],
                d => d[i % d.len()].clone(),
            },
            PathSel::Under(i, name) => {
                let dirs = dirs();
                let mut p = match i % (dirs.len() + 1) {
                    0 => Vec::new(),
                    k => dirs[k - 1].clone(),
                };
                p.push(name.clone());
                p
            }
            PathSel::Literal(p) => p.clone(),
        }
    }
}

impl Op<PathSel> {
    pub(super) fn resolve(&self, model: &Model) -> Op {
        let r = |p: &PathSel| p.resolve(model);
        match self {
            Op::Mkdir(p) => Op::Mkdir(r(p)),
            Op::Create(p, c) => Op::Create(r(p), c.clone()),
            Op::WriteAt(p, at, d) => Op::WriteAt(r(p), *at, d.clone()),
            Op::Truncate(p, s, h) => Op::Truncate(r(p), *s, *h),
            Op::Rename(a, b, n) => Op::Rename(r(a), r(b), *n),
            Op::Exchange(a, b) => Op::Exchange(r(a), r(b)),
            Op::Unlink(p) => Op::Unlink(r(p)),
            Op::Rmdir(p) => Op::Rmdir(r(p)),
            Op::Symlink(p, t) => Op::Symlink(r(p), t.clone()),
            Op::Link(a, b) => Op::Link(r(a), r(b)),
            Op::Upload => Op::Upload,
            Op::Reopen => Op::Reopen,
            Op::Crash => Op::Crash,
        }
    }
}

/// A generated step: one op, or a short burst of ops that real programs
/// issue together (the client-core issue's "Show" list), with no upload
/// in between unless it says so.
#[derive(Clone, Debug)]
pub(super) enum Gen {
    Op(Op<PathSel>),
    /// `mkdir -p deep/d/d/...` (`depth` folders) under an existing folder
    /// with a file on every level, then `rm -rf deep` (children first);
    /// with `true` an upload between the two, so that the removal meets
    /// nodes the server has.
    DeepChurn(PathSel, u8, Content, bool),
    /// An editor's save: write `<name>.part` beside an existing node, then
    /// rename it over that node.
    TempOver(PathSel, Content),
    /// Give an existing folder new children (a file, a folder holding a
    /// file), then rename the folder while they are still pending.
    MovePendingFolder(PathSel, PathSel, Content),
}

impl Gen {
    /// The concrete ops, resolved against the model as it is before the
    /// first of them runs.
    pub(super) fn expand(&self, model: &Model) -> Vec<Op> {
        let child = |p: &ModelPath, name: &str| {
            let mut c = p.clone();
            c.push(name.to_string());
            c
        };
        match self {
            Gen::Op(op) => vec![op.resolve(model)],
            Gen::DeepChurn(at, depth, content, drain) => {
                let mut levels = vec![at.resolve(model)];
                for _ in 1..*depth {
                    levels.push(child(levels.last().expect("one level"), "d"));
                }
                let mut ops = Vec::new();
                for (k, level) in levels.iter().enumerate() {
                    ops.push(Op::Mkdir(level.clone()));
                    let data = if k + 1 == levels.len() {
                        content.clone()
                    } else {
                        Content::Bytes(vec![k as u8; k + 1])
                    };
                    ops.push(Op::Create(child(level, "f"), data));
                }
                if *drain {
                    ops.push(Op::Upload);
                }
                for level in levels.iter().rev() {
                    ops.push(Op::Unlink(child(level, "f")));
                    ops.push(Op::Rmdir(level.clone()));
                }
                ops
            }
            Gen::TempOver(target, content) => {
                let target = target.resolve(model);
                let mut temp = target.clone();
                let leaf = temp.last_mut().expect("non-empty path");
                leaf.push_str(".part");
                vec![
                    Op::Create(temp.clone(), content.clone()),
                    Op::Rename(temp, target, false),
                ]
            }
            Gen::MovePendingFolder(folder, to, content) => {
                let folder = folder.resolve(model);
                let sub = child(&folder, "sub");
                vec![
                    Op::Create(child(&folder, "new"), content.clone()),
                    Op::Mkdir(sub.clone()),
                    Op::Create(child(&sub, "f"), Content::Bytes(b"pending".to_vec())),
                    Op::Rename(folder, to.resolve(model), false),
                ]
            }
        }
    }
}

/// The offset or size an op uses, derived from the model's current state
/// so that both sides get the same number.
pub(super) fn op_arg(model: &Model, op: &Op) -> u64 {
    let len = |p: &ModelPath| match model.nodes.get(p) {
        Some(Node::File(b)) => b.len() as u64,
        _ => 0,
    };
    match op {
        Op::WriteAt(p, at, _) => u64::from(*at) % (len(p) + 64),
        Op::Truncate(p, size, _) if size % 4 != 0 => u64::from(*size) % (len(p) + 4096),
        _ => 0,
    }
}

/// A conflict copy the model expects but cannot name in advance: the name
/// carries the commit time. It is `<prefix><YYYY-MM-DD HH.MM.SS>[ n]<suffix>`
/// in `folder`, holding `node`.
#[derive(Clone, Debug)]
pub(super) struct ExpectedConflict {
    folder: ModelPath,
    prefix: String,
    suffix: String,
    node: Node,
}

impl ExpectedConflict {
    /// The copy of file `path` that device `device` makes of its `node`.
    pub(super) fn of(path: &ModelPath, device: &str, node: Node) -> Self {
        let leaf = path.last().expect("non-empty path");
        // The name for time 0, split around its stamp.
        let zero = conflict_name(leaf, NodeKind::File, device, 0, 1);
        let stamp = " 1970-01-01 00.00.00)";
        let at = zero.find(stamp).expect("conflict names carry a stamp");
        ExpectedConflict {
            folder: path[..path.len() - 1].to_vec(),
            prefix: zero[..at + 1].to_string(),
            suffix: zero[at + stamp.len() - 1..].to_string(),
            node,
        }
    }

    fn matches(&self, name: &str) -> bool {
        let Some(middle) = name
            .strip_prefix(&self.prefix)
            .and_then(|m| m.strip_suffix(&self.suffix))
        else {
            return false;
        };
        // `YYYY-MM-DD HH.MM.SS`, then ` n` for n ≥ 2.
        let shape = "dddd-dd-dd dd.dd.dd";
        let (stamp, n) = middle.split_at(middle.len().min(shape.len()));
        let stamp_ok = stamp.len() == shape.len()
            && stamp.chars().zip(shape.chars()).all(|(c, s)| match s {
                'd' => c.is_ascii_digit(),
                s => c == s,
            });
        let n_ok = n.is_empty()
            || n.strip_prefix(' ').is_some_and(|n| {
                !n.is_empty()
                    && n.chars().all(|c| c.is_ascii_digit())
                    && n.parse::<u32>().is_ok_and(|n| n >= 2)
            });
        stamp_ok && n_ok
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Model {
    pub(super) nodes: BTreeMap<ModelPath, Node>,
    /// Paths that name one node (hard links), two or more each.
    pub(super) groups: Vec<BTreeSet<ModelPath>>,
    /// Conflict copies to name from the next tree compared (see
    /// [`Model::adopt_conflicts`]).
    pub(super) conflicts: Vec<ExpectedConflict>,
}

impl Model {
    /// Every folder on the way to `path`'s last component must exist.
    fn walk(&self, path: &[String]) -> Result<(), Outcome> {
        for i in 1..path.len() {
            match self.nodes.get(&path[..i]) {
                None => return Err(Outcome::NotFound),
                Some(Node::Dir) => {}
                Some(_) => return Err(Outcome::NotDir),
            }
        }
        Ok(())
    }

    fn below<'a>(&'a self, path: &'a [String]) -> impl Iterator<Item = &'a ModelPath> + 'a {
        self.nodes
            .keys()
            .filter(move |k| k.len() > path.len() && k.starts_with(path))
    }

    fn group_of(&self, p: &ModelPath) -> Option<usize> {
        self.groups.iter().position(|g| g.contains(p))
    }

    /// The other names of `p`'s node get `p`'s (new) content.
    fn propagate(&mut self, p: &ModelPath) {
        let Some(g) = self.group_of(p) else { return };
        let node = self.nodes[p].clone();
        for other in self.groups[g].clone() {
            self.nodes.insert(other, node.clone());
        }
    }

    /// `p` no longer names its node.
    fn drop_name(&mut self, p: &ModelPath) {
        if let Some(g) = self.group_of(p) {
            self.groups[g].remove(p);
            if self.groups[g].len() < 2 {
                self.groups.remove(g);
            }
        }
    }

    /// Every grouped path renamed by `f` (a folder move).
    fn remap(&mut self, f: impl Fn(&ModelPath) -> ModelPath) {
        for g in &mut self.groups {
            *g = g.iter().map(&f).collect();
        }
    }

    /// The files that are not hard-linked, in path order.
    pub(super) fn unlinked_files(&self) -> Vec<&ModelPath> {
        self.files()
            .into_iter()
            .filter(|p| self.group_of(p).is_none())
            .collect()
    }

    /// The files, in path order.
    pub(super) fn files(&self) -> Vec<&ModelPath> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n, Node::File(_)))
            .map(|(p, _)| p)
            .collect()
    }

    pub(super) fn apply(&mut self, op: &Op, arg: u64) -> Outcome {
        match self.try_apply(op, arg) {
            Ok(()) => Outcome::Ok,
            Err(o) => o,
        }
    }

    fn try_apply(&mut self, op: &Op, arg: u64) -> Result<(), Outcome> {
        match op {
            Op::Mkdir(p) | Op::Create(p, _) | Op::Symlink(p, _) => {
                self.walk(p)?;
                if self.nodes.contains_key(p) {
                    return Err(Outcome::Exists);
                }
                let node = match op {
                    Op::Mkdir(_) => Node::Dir,
                    Op::Create(_, c) => Node::File(c.bytes()),
                    Op::Symlink(_, t) => Node::Symlink(t.clone()),
                    _ => unreachable!(),
                };
                self.nodes.insert(p.clone(), node);
            }
            Op::WriteAt(p, ..) | Op::Truncate(p, ..) => {
                self.walk(p)?;
                let bytes = match self.nodes.get_mut(p) {
                    None => return Err(Outcome::NotFound),
                    Some(Node::Dir) => return Err(Outcome::IsDir),
                    Some(Node::Symlink(_)) => return Err(Outcome::Invalid),
                    Some(Node::File(b)) => b,
                };
                let arg = arg as usize;
                if let Op::WriteAt(_, _, data) = op {
                    if !data.is_empty() {
                        let end = arg + data.len();
                        if bytes.len() < end {
                            bytes.resize(end, 0);
                        }
                        bytes[arg..end].copy_from_slice(data);
                    }
                } else {
                    bytes.resize(arg, 0);
                }
                self.propagate(p);
            }
            Op::Unlink(p) => {
                self.walk(p)?;
                match self.nodes.get(p) {
                    None => return Err(Outcome::NotFound),
                    Some(Node::Dir) => return Err(Outcome::IsDir),
                    Some(_) => {}
                }
                self.nodes.remove(p);
                self.drop_name(p);
            }
            Op::Rmdir(p) => {
                self.walk(p)?;
                match self.nodes.get(p) {
                    None => return Err(Outcome::NotFound),
                    Some(Node::Dir) => {}
                    Some(_) => return Err(Outcome::NotDir),
                }
                if self.below(p).next().is_some() {
                    return Err(Outcome::NotEmpty);
                }
                self.nodes.remove(p);
            }
            Op::Rename(from, to, no_replace) => {
                self.walk(from)?;
                self.walk(to)?;
                let Some(src) = self.nodes.get(from) else {
                    return Err(Outcome::NotFound);
                };
                if from == to {
                    return Ok(());
                }
                let src_dir = *src == Node::Dir;
                if src_dir && to.len() > from.len() && to.starts_with(from) {
                    return Err(Outcome::Invalid);
                }
                if let Some(dst) = self.nodes.get(to) {
                    if *no_replace {
                        return Err(Outcome::Exists);
                    }
                    // Two names of one node: nothing happens (POSIX).
                    if self.group_of(from).is_some() && self.group_of(from) == self.group_of(to) {
                        return Ok(());
                    }
                    let dst_dir = *dst == Node::Dir;
                    match (src_dir, dst_dir) {
                        (true, false) => return Err(Outcome::NotDir),
                        (false, true) => return Err(Outcome::IsDir),
                        (true, true) if self.below(to).next().is_some() => {
                            return Err(Outcome::NotEmpty)
                        }
                        _ => {}
                    }
                    self.nodes.remove(to);
                    self.drop_name(to);
                }
                let moved: Vec<ModelPath> = std::iter::once(from.clone())
                    .chain(self.below(from).cloned())
                    .collect();
                for old in moved {
                    let node = self.nodes.remove(&old).expect("listed above");
                    let mut new = to.clone();
                    new.extend_from_slice(&old[from.len()..]);
                    self.nodes.insert(new, node);
                }
                self.remap(|p| {
                    if p.starts_with(from) {
                        let mut new = to.clone();
                        new.extend_from_slice(&p[from.len()..]);
                        new
                    } else {
                        p.clone()
                    }
                });
            }
            Op::Exchange(a, b) => {
                self.walk(a)?;
                self.walk(b)?;
                let (Some(na), Some(nb)) = (self.nodes.get(a), self.nodes.get(b)) else {
                    return Err(Outcome::NotFound);
                };
                if a == b || (self.group_of(a).is_some() && self.group_of(a) == self.group_of(b)) {
                    return Ok(());
                }
                let inside = |outer: &ModelPath, inner: &ModelPath| {
                    inner.len() > outer.len() && inner.starts_with(outer)
                };
                if (*na == Node::Dir && inside(a, b)) || (*nb == Node::Dir && inside(b, a)) {
                    return Err(Outcome::Invalid);
                }
                let take = |nodes: &mut BTreeMap<ModelPath, Node>, root: &ModelPath| {
                    let keys: Vec<ModelPath> = nodes
                        .keys()
                        .filter(|k| k.starts_with(root))
                        .cloned()
                        .collect();
                    keys.into_iter()
                        .map(|k| {
                            let n = nodes.remove(&k).expect("listed");
                            (k[root.len()..].to_vec(), n)
                        })
                        .collect::<Vec<_>>()
                };
                let from_a = take(&mut self.nodes, a);
                let from_b = take(&mut self.nodes, b);
                for (dest, moved) in [(b, from_a), (a, from_b)] {
                    for (rest, n) in moved {
                        let mut k = dest.clone();
                        k.extend(rest);
                        self.nodes.insert(k, n);
                    }
                }
                self.remap(|p| {
                    let swap = |from: &ModelPath, to: &ModelPath| {
                        let mut new = to.clone();
                        new.extend_from_slice(&p[from.len()..]);
                        new
                    };
                    if p.starts_with(a) {
                        swap(a, b)
                    } else if p.starts_with(b) {
                        swap(b, a)
                    } else {
                        p.clone()
                    }
                });
            }
            Op::Link(from, to) => {
                self.walk(from)?;
                let Some(node) = self.nodes.get(from).cloned() else {
                    return Err(Outcome::NotFound);
                };
                self.walk(to)?;
                if self.nodes.contains_key(to) {
                    return Err(Outcome::Exists);
                }
                if node == Node::Dir {
                    return Err(Outcome::NotPermitted);
                }
                self.nodes.insert(to.clone(), node);
                match self.group_of(from) {
                    Some(g) => {
                        self.groups[g].insert(to.clone());
                    }
                    None => self.groups.push([from.clone(), to.clone()].into()),
                }
            }
            Op::Upload | Op::Reopen | Op::Crash => {}
        }
        Ok(())
    }

    /// Names the expected conflict copies from `got` (a tree the system
    /// under test shows): each must match exactly one entry of its folder
    /// that the model does not have, and then becomes a model node under
    /// that name. Anything else about the copy (kind, size, content) is
    /// compared with the rest of the tree afterwards.
    pub(super) fn adopt_conflicts(&mut self, got: &Tree) -> Result<(), String> {
        for c in std::mem::take(&mut self.conflicts) {
            let found: Vec<ModelPath> = got
                .keys()
                .map(|p| p.split('/').map(String::from).collect::<ModelPath>())
                .filter(|p| {
                    p.len() == c.folder.len() + 1
                        && p.starts_with(&c.folder)
                        && !self.nodes.contains_key(p)
                        && c.matches(p.last().expect("non-empty"))
                })
                .collect();
            match &found[..] {
                [one] => {
                    self.nodes.insert(one.clone(), c.node.clone());
                }
                _ => {
                    return Err(format!(
                        "expected one conflict copy `{}<stamp>{}` in /{}, found {found:?}",
                        c.prefix,
                        c.suffix,
                        c.folder.join("/")
                    ))
                }
            }
        }
        Ok(())
    }

    pub(super) fn snapshot(&self, content: bool) -> Tree {
        self.nodes
            .iter()
            .map(|(p, n)| {
                let group = self.group_of(p).map(|g| &self.groups[g]);
                let snap = match n {
                    Node::Dir => Snap::Dir,
                    Node::Symlink(t) => Snap::Symlink(t.clone()),
                    Node::File(b) => Snap::File {
                        size: b.len() as u64,
                        hash: content.then(|| blake3::hash(b)),
                        nlink: group.map_or(1, |g| g.len() as u32),
                        same_as: group.and_then(|g| g.iter().map(|p| p.join("/")).min()),
                    },
                };
                (p.join("/"), snap)
            })
            .collect()
    }
}

/// One entry of a tree as seen through the `Vfs`, the server, or the
/// model.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Snap {
    Dir,
    Symlink(String),
    File {
        size: u64,
        hash: Option<blake3::Hash>,
        /// Names of the node (its link count).
        nlink: u32,
        /// With more than one name: the first of them as strings (`a.b`
        /// before `a/b`), so that names of one node are told from equal
        /// copies.
        same_as: Option<String>,
    },
    /// The `Vfs` or the server contradicted itself (entry kind vs inode,
    /// path, read; a live node under a deleted or missing parent).
    Inconsistent(String),
}

pub(super) type Tree = BTreeMap<String, Snap>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_names_match_precisely() {
        let c = ExpectedConflict::of(&vec!["d".into(), "a.txt".into()], "left", Node::Dir);
        assert!(c.matches("a (conflict left 2024-05-06 07.08.09).txt"));
        assert!(c.matches("a (conflict left 2024-05-06 07.08.09 2).txt"));
        assert!(!c.matches("a (conflict left 2024-05-06 07.08.09 1).txt"));
        assert!(!c.matches("a (conflict right 2024-05-06 07.08.09).txt"));
        assert!(!c.matches("a (conflict left 2024-05-06 07.08).txt"));
        assert!(!c.matches("a.txt (conflict left 2024-05-06 07.08.09)"));
        let c = ExpectedConflict::of(&vec!["b".into()], "left", Node::Dir);
        assert!(c.matches("b (conflict left 2024-05-06 07.08.09)"));
    }
}
