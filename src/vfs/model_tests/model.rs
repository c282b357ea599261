//! The model: a map from path to file bytes, folder, symlink target or
//! special node, the groups of paths that are hard links of one node, each
//! node's attributes (`attrs`), the operations the tests generate, and the
//! expected result of each.

use super::attrs::{AttrEdit, Attrs, MetaSnap, NodeKey, Viewer};
use super::conflicts::ExpectedConflict;
use crate::protocol::{DeviceId, NodeKind, Timestamp};
use crate::vfs::{VfsError, VfsResult};
use std::collections::{BTreeMap, BTreeSet};

/// Path components below the root (never empty).
pub(super) type ModelPath = Vec<String>;

/// A node's kind and content (its attributes are in [`Model::attrs`]).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    /// A FIFO, socket or device node (metadata only) and its device
    /// number (0 but for devices).
    Special(NodeKind, u32),
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
    /// `EPERM` (a hard link of a folder, `user.*` attributes of a symlink
    /// or special node, a reserved attribute name).
    NotPermitted,
    /// `ENODATA`: no such extended attribute.
    NoAttribute,
    /// `ENOSPC`: a node's extended attributes over 4 KiB.
    NoSpace,
    /// `EOPNOTSUPP`: opening a special node through the core.
    NotSupported,
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
        Err(VfsError::NoAttribute) => Outcome::NoAttribute,
        Err(VfsError::NoSpace(_)) => Outcome::NoSpace,
        Err(VfsError::NotSupported(_)) => Outcome::NotSupported,
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
    /// `mknod(2)` of a kind (FIFO, socket, character or block device, or
    /// a regular file, created empty) with permission bits and a device
    /// number (kept for devices only).
    Mknod(P, NodeKind, u32, u32),
    /// `chmod(2)` (setattr with a mode), any of the 12 bits.
    Chmod(P, u32),
    /// `chown(2)` with numeric ids (`None`: unchanged) and no mode, so
    /// the core applies ext4's setuid/setgid clearing itself.
    Chown(P, Option<u32>, Option<u32>),
    /// `utimensat(2)`: mtime, atime (`None`: `UTIME_OMIT`).
    Utimens(P, Option<Timestamp>, Option<Timestamp>),
    /// `setxattr(2)`: name, value, flags ([`super::attrs::XATTR_CREATE`],
    /// [`super::attrs::XATTR_REPLACE`]).
    SetXattr(P, String, Vec<u8>, u8),
    /// `removexattr(2)`.
    RemoveXattr(P, String),
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
            Op::Mknod(p, k, m, d) => Op::Mknod(r(p), *k, *m, *d),
            Op::Chmod(p, m) => Op::Chmod(r(p), *m),
            Op::Chown(p, u, g) => Op::Chown(r(p), *u, *g),
            Op::Utimens(p, m, a) => Op::Utimens(r(p), *m, *a),
            Op::SetXattr(p, n, v, f) => Op::SetXattr(r(p), n.clone(), v.clone(), *f),
            Op::RemoveXattr(p, n) => Op::RemoveXattr(r(p), n.clone()),
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
    /// Several attribute changes of one node in a row, as `cp -a`,
    /// `setfattr` or `tar --xattrs` make them (so that sets meet the
    /// attributes set before: `EEXIST`, 4 KiB full, removes that find one).
    AttrBurst(PathSel, Vec<AttrEdit>),
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
            Gen::AttrBurst(at, edits) => {
                let at = at.resolve(model);
                edits.iter().map(|e| e.on(at.clone())).collect()
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

#[derive(Clone, Debug, Default)]
pub(super) struct Model {
    pub(super) nodes: BTreeMap<ModelPath, Node>,
    /// The node each path names (names of one node share it).
    pub(super) keys: BTreeMap<ModelPath, NodeKey>,
    /// Each node's attributes, kept once for all its names.
    pub(super) attrs: BTreeMap<NodeKey, Attrs>,
    /// The next unused [`NodeKey`].
    pub(super) next_key: NodeKey,
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

    /// A new node at `p` with `attrs` (a new key).
    pub(super) fn insert_new(&mut self, p: ModelPath, node: Node, attrs: Attrs) {
        let key = self.next_key;
        self.next_key += 1;
        self.attrs.insert(key, attrs);
        self.nodes.insert(p.clone(), node);
        self.keys.insert(p, key);
    }

    /// Removes the name `p` (its node and key).
    fn take(&mut self, p: &ModelPath) -> (Node, NodeKey) {
        let node = self.nodes.remove(p).expect("an existing name");
        let key = self.keys.remove(p).expect("every name has a key");
        (node, key)
    }

    /// Removes `root` and every name below it, as paths relative to `root`.
    fn take_tree(&mut self, root: &ModelPath) -> Vec<(ModelPath, Node, NodeKey)> {
        let paths: Vec<ModelPath> = self
            .nodes
            .keys()
            .filter(|k| k.starts_with(root))
            .cloned()
            .collect();
        paths
            .into_iter()
            .map(|k| {
                let (n, key) = self.take(&k);
                (k[root.len()..].to_vec(), n, key)
            })
            .collect()
    }

    /// Puts what [`Model::take_tree`] took under `dest`.
    fn put_tree(&mut self, dest: &ModelPath, moved: Vec<(ModelPath, Node, NodeKey)>) {
        for (rest, n, key) in moved {
            let mut k = dest.clone();
            k.extend(rest);
            self.nodes.insert(k.clone(), n);
            self.keys.insert(k, key);
        }
    }

    /// Applies `op` as device `by` does it; the result the core must give.
    pub(super) fn apply(&mut self, op: &Op, arg: u64, by: DeviceId) -> Outcome {
        match self.try_apply(op, arg, by) {
            Ok(()) => Outcome::Ok,
            Err(o) => o,
        }
    }

    fn try_apply(&mut self, op: &Op, arg: u64, by: DeviceId) -> Result<(), Outcome> {
        match op {
            Op::Mkdir(p) | Op::Create(p, _) | Op::Symlink(p, _) | Op::Mknod(p, ..) => {
                self.walk(p)?;
                if self.nodes.contains_key(p) {
                    return Err(Outcome::Exists);
                }
                let (node, mode) = match op {
                    Op::Mkdir(_) => (Node::Dir, 0o755),
                    Op::Create(_, c) => (Node::File(c.bytes()), 0o644),
                    Op::Symlink(_, t) => (Node::Symlink(t.clone()), 0o777),
                    Op::Mknod(_, NodeKind::File, mode, _) => (Node::File(Vec::new()), *mode),
                    Op::Mknod(_, kind, mode, rdev) => {
                        let rdev = if kind.is_device() { *rdev } else { 0 };
                        (Node::Special(*kind, rdev), *mode)
                    }
                    _ => unreachable!(),
                };
                let attrs = self.new_attrs(p, node == Node::Dir, mode & 0o7777, by);
                self.insert_new(p.clone(), node, attrs);
                self.touch_parent(p);
            }
            Op::WriteAt(p, _, _) | Op::Truncate(p, _, _) => {
                self.walk(p)?;
                let bytes = match self.nodes.get_mut(p) {
                    None => return Err(Outcome::NotFound),
                    Some(Node::Dir) => return Err(Outcome::IsDir),
                    Some(Node::Symlink(_)) => return Err(Outcome::Invalid),
                    // Opening one through the core; a path truncate is
                    // truncate(2)'s EINVAL for anything but a file.
                    Some(Node::Special(..)) => {
                        return Err(match op {
                            Op::Truncate(_, _, false) => Outcome::Invalid,
                            _ => Outcome::NotSupported,
                        })
                    }
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
                self.content_changed(p);
            }
            Op::Unlink(p) => {
                self.walk(p)?;
                match self.nodes.get(p) {
                    None => return Err(Outcome::NotFound),
                    Some(Node::Dir) => return Err(Outcome::IsDir),
                    Some(_) => {}
                }
                self.take(p);
                self.drop_name(p);
                self.touch_parent(p);
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
                self.take(p);
                self.touch_parent(p);
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
                    self.take(to);
                    self.drop_name(to);
                }
                let moved = self.take_tree(from);
                self.put_tree(to, moved);
                self.remap(|p| {
                    if p.starts_with(from) {
                        let mut new = to.clone();
                        new.extend_from_slice(&p[from.len()..]);
                        new
                    } else {
                        p.clone()
                    }
                });
                self.touch_parent(from);
                self.touch_parent(to);
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
                let from_a = self.take_tree(a);
                let from_b = self.take_tree(b);
                self.put_tree(b, from_a);
                self.put_tree(a, from_b);
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
                self.touch_parent(a);
                self.touch_parent(b);
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
                self.keys.insert(to.clone(), self.keys[from]);
                match self.group_of(from) {
                    Some(g) => {
                        self.groups[g].insert(to.clone());
                    }
                    None => self.groups.push([from.clone(), to.clone()].into()),
                }
                self.touch_parent(to);
            }
            Op::Chmod(p, ..)
            | Op::Chown(p, ..)
            | Op::Utimens(p, ..)
            | Op::SetXattr(p, ..)
            | Op::RemoveXattr(p, ..) => {
                self.walk(p)?;
                self.apply_attr_op(op, by)?;
            }
            Op::Upload | Op::Reopen | Op::Crash => {}
        }
        Ok(())
    }

    /// The tree as `viewer` must show it (with content hashes when
    /// `content`).
    pub(super) fn snapshot(&self, content: bool, viewer: Viewer) -> Tree {
        self.nodes
            .iter()
            .map(|(p, n)| {
                let group = self.group_of(p).map(|g| &self.groups[g]);
                let nlink = group.map_or(1, |g| g.len() as u32);
                let same_as = group.and_then(|g| g.iter().map(|p| p.join("/")).min());
                let snap = match n {
                    Node::Dir => Snap::Dir,
                    Node::Symlink(t) => Snap::Symlink(t.clone()),
                    Node::Special(kind, rdev) => Snap::Special {
                        kind: *kind,
                        rdev: *rdev,
                        nlink,
                        same_as,
                    },
                    Node::File(b) => Snap::File {
                        size: b.len() as u64,
                        hash: content.then(|| blake3::hash(b)),
                        nlink,
                        same_as,
                    },
                };
                let meta = self.attrs_of(p).seen_by(viewer);
                (p.join("/"), Seen { snap, meta })
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
    /// A FIFO, socket or device node: its device number, link count and
    /// first name as for a file.
    Special {
        kind: NodeKind,
        rdev: u32,
        nlink: u32,
        same_as: Option<String>,
    },
    /// The `Vfs` or the server contradicted itself (entry kind vs inode,
    /// path, read; a live node under a deleted or missing parent).
    Inconsistent(String),
}

/// An entry and its attributes.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Seen {
    pub(super) snap: Snap,
    pub(super) meta: MetaSnap,
}

impl Seen {
    /// An entry a view contradicted itself about.
    pub(super) fn inconsistent(why: String) -> Self {
        Seen {
            snap: Snap::Inconsistent(why),
            meta: MetaSnap::default(),
        }
    }
}

pub(super) type Tree = BTreeMap<String, Seen>;
