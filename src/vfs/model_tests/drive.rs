//! Driving the [`Vfs`] as the kernel would, and reading its whole tree.

use super::attrs::{Attrs, MetaSnap, XATTR_CREATE, XATTR_REPLACE};
use super::model::{op_arg, outcome, Model, ModelPath, Node, Op, Outcome, Seen, Snap, Tree};
use crate::vfs::xattr::XattrFlags;
use crate::vfs::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeMap, BTreeSet};

/// Write and read sizes the harness uses, like the kernel's 128 KiB pages.
const IO_PIECE: usize = 128 * 1024;

/// The kernel's path walk to the folder holding `path`'s last component.
fn parent_ino(vfs: &Vfs, path: &[String], looked: &mut Vec<u64>) -> VfsResult<u64> {
    let mut ino = meta::ROOT_INO;
    for name in &path[..path.len() - 1] {
        let a = vfs.lookup(ino, name.as_bytes())?;
        looked.push(a.ino);
        if a.kind != NodeKind::Dir {
            return Err(VfsError::NotDir);
        }
        ino = a.ino;
    }
    Ok(ino)
}

fn leaf(path: &[String]) -> &[u8] {
    path.last().expect("non-empty path").as_bytes()
}

fn lookup_path(vfs: &Vfs, path: &[String], looked: &mut Vec<u64>) -> VfsResult<Attr> {
    let parent = parent_ino(vfs, path, looked)?;
    let a = vfs.lookup(parent, leaf(path))?;
    looked.push(a.ino);
    Ok(a)
}

/// Writes `data` in kernel-sized pieces through the core's one write entry
/// point (awaiting it when it must first fill the working copy, as the
/// fuse adapter does).
async fn write_pieces(vfs: &Vfs, fh: u64, offset: u64, data: &[u8]) -> VfsResult<()> {
    for (i, piece) in data.chunks(IO_PIECE).enumerate() {
        let at = offset + (i * IO_PIECE) as u64;
        let n = vfs.write(fh, at, piece).await?;
        if n as usize != piece.len() {
            return Err(VfsError::Unavailable(format!("short write {n}").into()));
        }
    }
    Ok(())
}

/// Writes, then closes (flush + release) whatever happened.
async fn write_and_close(vfs: &Vfs, fh: u64, offset: u64, data: &[u8]) -> VfsResult<()> {
    let written = match write_pieces(vfs, fh, offset, data).await {
        Ok(()) => vfs.flush(fh),
        Err(e) => Err(e),
    };
    let released = vfs.release(fh);
    written.and(released)
}

async fn run_vfs_op(vfs: &Vfs, op: &Op, arg: u64, looked: &mut Vec<u64>) -> VfsResult<()> {
    match op {
        Op::Mkdir(p) => {
            let parent = parent_ino(vfs, p, looked)?;
            looked.push(vfs.mkdir(parent, leaf(p), 0o755)?.ino);
        }
        Op::Symlink(p, target) => {
            let parent = parent_ino(vfs, p, looked)?;
            looked.push(vfs.symlink(parent, leaf(p), target.as_bytes())?.ino);
        }
        Op::Create(p, content) => {
            let parent = parent_ino(vfs, p, looked)?;
            let (attr, fh) = vfs.create(parent, leaf(p), 0o644, true)?;
            looked.push(attr.ino);
            write_and_close(vfs, fh, 0, &content.bytes()).await?;
        }
        Op::WriteAt(p, _, data) => {
            let a = lookup_path(vfs, p, looked)?;
            let fh = vfs.open_file(a.ino, true, false)?;
            write_and_close(vfs, fh, arg, data).await?;
        }
        Op::Truncate(p, _, via_handle) => {
            let a = lookup_path(vfs, p, looked)?;
            // A path truncate or an ftruncate, through the core's one
            // setattr entry point (which fills the working copy first when
            // the content is not local).
            let fh = if *via_handle {
                Some(vfs.open_file(a.ino, true, false)?)
            } else {
                None
            };
            let r = async {
                let set = SetAttr {
                    size: Some(arg),
                    ..Default::default()
                };
                let after = vfs.setattr(a.ino, set).await?;
                if after.size != arg {
                    return Err(VfsError::Unavailable(
                        format!("setattr reported size {} for {arg}", after.size).into(),
                    ));
                }
                Ok(())
            }
            .await;
            let released = fh.map_or(Ok(()), |fh| vfs.release(fh));
            r.and(released)?;
        }
        Op::Rename(from, to, no_replace) => {
            let from_parent = parent_ino(vfs, from, looked)?;
            let to_parent = parent_ino(vfs, to, looked)?;
            vfs.rename(from_parent, leaf(from), to_parent, leaf(to), *no_replace)?;
        }
        Op::Exchange(a, b) => {
            let a_parent = parent_ino(vfs, a, looked)?;
            let b_parent = parent_ino(vfs, b, looked)?;
            vfs.rename_exchange(a_parent, leaf(a), b_parent, leaf(b))?;
        }
        Op::Unlink(p) => {
            let parent = parent_ino(vfs, p, looked)?;
            vfs.unlink(parent, leaf(p))?;
        }
        Op::Rmdir(p) => {
            let parent = parent_ino(vfs, p, looked)?;
            vfs.rmdir(parent, leaf(p))?;
        }
        Op::Link(from, to) => {
            let a = lookup_path(vfs, from, looked)?;
            let parent = parent_ino(vfs, to, looked)?;
            looked.push(vfs.link(a.ino, parent, leaf(to))?.ino);
        }
        Op::Mknod(p, kind, mode, rdev) => {
            let parent = parent_ino(vfs, p, looked)?;
            let ifmt = match kind {
                NodeKind::File => 0o100_000,
                NodeKind::Fifo => 0o010_000,
                NodeKind::Socket => 0o140_000,
                NodeKind::CharDevice => 0o020_000,
                NodeKind::BlockDevice => 0o060_000,
                NodeKind::Dir | NodeKind::Symlink => unreachable!("not generated"),
            };
            looked.push(vfs.mknod(parent, leaf(p), ifmt | mode, *rdev)?.ino);
        }
        Op::Chmod(p, mode) => {
            let set = SetAttr {
                mode: Some(*mode),
                ..Default::default()
            };
            let after = set_attr(vfs, p, set, looked).await?;
            expect_attr("mode", after.mode, mode & 0o7777)?;
        }
        Op::Chown(p, uid, gid) => {
            let set = SetAttr {
                uid: *uid,
                gid: *gid,
                ..Default::default()
            };
            let after = set_attr(vfs, p, set, looked).await?;
            if let Some(uid) = uid {
                expect_attr("uid", after.uid, *uid)?;
            }
            if let Some(gid) = gid {
                expect_attr("gid", after.gid, *gid)?;
            }
        }
        Op::Utimens(p, mtime, atime) => {
            let set = SetAttr {
                mtime: *mtime,
                atime: *atime,
                ..Default::default()
            };
            // atime as set shows at once (the tree checks leave it out:
            // see `snapshot`).
            let after = set_attr(vfs, p, set, looked).await?;
            if let Some(m) = mtime {
                expect_attr("mtime", after.mtime, *m)?;
            }
            if let Some(a) = atime {
                expect_attr("atime", after.atime, *a)?;
            }
        }
        Op::SetXattr(p, name, value, flags) => {
            let a = lookup_path(vfs, p, looked)?;
            let flags = XattrFlags {
                create: flags & XATTR_CREATE != 0,
                replace: flags & XATTR_REPLACE != 0,
            };
            vfs.setxattr_as(ROOT, a.ino, name.as_bytes(), value, flags)?;
        }
        Op::RemoveXattr(p, name) => {
            let a = lookup_path(vfs, p, looked)?;
            vfs.removexattr_as(ROOT, a.ino, name.as_bytes())?;
        }
        Op::Upload | Op::Reopen | Op::Crash => unreachable!("handled by the driver"),
    }
    Ok(())
}

/// The caller of the attribute ops: privileged (as the test devices'
/// mounting user, uid 0), so `trusted.*` is allowed.
const ROOT: Caller = Caller { uid: 0, gid: 0 };

/// `setattr` of the node at `path` through the core's one entry point.
async fn set_attr(
    vfs: &Vfs,
    path: &[String],
    set: SetAttr,
    looked: &mut Vec<u64>,
) -> VfsResult<Attr> {
    let a = lookup_path(vfs, path, looked)?;
    vfs.setattr(a.ino, set).await
}

/// An attribute `setattr` answered must be the one asked for.
fn expect_attr<T: std::fmt::Debug + PartialEq>(what: &str, got: T, want: T) -> VfsResult<()> {
    if got == want {
        Ok(())
    } else {
        Err(VfsError::Unavailable(
            format!("setattr answered {what} {got:?}, asked {want:?}").into(),
        ))
    }
}

/// Applies a namespace/content op to both sides and compares result kinds.
pub(super) async fn step(
    vfs: &Vfs,
    model: &mut Model,
    op: &Op,
    label: &str,
) -> Result<Outcome, TestCaseError> {
    let arg = op_arg(model, op);
    let expected = model.apply(op, arg, vfs.device_id);
    let mut looked = Vec::new();
    let got = outcome(run_vfs_op(vfs, op, arg, &mut looked).await);
    // The kernel drops its references once the call is over.
    for ino in looked {
        vfs.forget(ino, 1);
    }
    prop_assert_eq!(&got, &expected, "{}: {:?} (arg {})", label, op, arg);
    Ok(got)
}

/// Reads a whole file through a read-only handle.
pub(super) async fn read_back(vfs: &Vfs, ino: u64, size: u64) -> VfsResult<Vec<u8>> {
    let fh = vfs.open_file(ino, false, false)?;
    let mut out = Vec::new();
    let r = async {
        while (out.len() as u64) < size {
            let at = out.len() as u64;
            let part = vfs.read(fh, at, IO_PIECE as u32).await?;
            if part.is_empty() {
                break;
            }
            out.extend_from_slice(&part);
        }
        // Reading at the end returns nothing.
        let tail = vfs.read(fh, size, 16).await?;
        if !tail.is_empty() {
            return Err(VfsError::Unavailable("data past the end".into()));
        }
        Ok(())
    }
    .await;
    let released = vfs.release(fh);
    r.and(released)?;
    Ok(out)
}

/// The attributes of `ino` as the `Vfs` shows them (getattr, and the
/// stored extended attributes listed and read one by one). Reading the
/// tree is itself an access (a listing, an open for reading) that may move
/// atimes under `relatime`: the model forgets those it cannot be sure of
/// first ([`Model::forget_moved_atimes`]); `utimensat`'s atime is also
/// checked in its own answer (`run_vfs_op`).
fn meta_of(vfs: &Vfs, a: &Attr) -> VfsResult<MetaSnap> {
    let mut xattrs = std::collections::BTreeMap::new();
    for name in vfs.listxattr_as(ROOT, a.ino)? {
        let value = vfs.getxattr_as(ROOT, a.ino, name.as_bytes())?;
        xattrs.insert(name, value);
    }
    Ok(MetaSnap {
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        ids_from: None,
        mtime: Some(a.mtime),
        atime: Some(a.atime),
        xattrs,
    })
}

/// The whole tree as the `Vfs` shows it: readdir in pages of two, kinds
/// checked against getattr, paths against `path_of` (one of the names of a
/// node with several), link counts against the names found, attributes
/// ([`meta_of`]), and (with `content`) every file read back.
pub(super) async fn snapshot(vfs: &Vfs, content: bool) -> VfsResult<Tree> {
    let mut out = Tree::new();
    let mut names: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![(meta::ROOT_INO, String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut after: Option<String> = None;
        loop {
            let page = vfs.readdir(dir, after.as_deref(), 2)?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            for e in page {
                let path = if prefix.is_empty() {
                    e.name.clone()
                } else {
                    format!("{prefix}/{}", e.name)
                };
                let a = vfs.getattr(e.ino)?;
                names.entry(e.ino).or_default().push(path.clone());
                let snap = if a.kind != e.kind {
                    Snap::Inconsistent(format!("entry {:?}, inode {:?}", e.kind, a.kind))
                } else if a.nlink < 2 && vfs.path_of(e.ino)? != path {
                    Snap::Inconsistent(format!("path_of says {}", vfs.path_of(e.ino)?))
                } else {
                    match a.kind {
                        kind @ (NodeKind::Fifo
                        | NodeKind::Socket
                        | NodeKind::CharDevice
                        | NodeKind::BlockDevice) => Snap::Special {
                            kind,
                            rdev: a.rdev,
                            nlink: a.nlink,
                            same_as: None,
                        },
                        NodeKind::Dir => {
                            stack.push((e.ino, path.clone()));
                            Snap::Dir
                        }
                        NodeKind::Symlink => Snap::Symlink(vfs.readlink(e.ino)?),
                        NodeKind::File if content => {
                            let data = read_back(vfs, e.ino, a.size).await?;
                            Snap::File {
                                size: a.size,
                                hash: Some(blake3::hash(&data)),
                                nlink: a.nlink,
                                same_as: None,
                            }
                        }
                        NodeKind::File => Snap::File {
                            size: a.size,
                            hash: None,
                            nlink: a.nlink,
                            same_as: None,
                        },
                    }
                };
                let meta = meta_of(vfs, &a)?;
                out.insert(path, Seen { snap, meta });
            }
        }
    }
    // Names of one inode: each says which it is the same as, and the
    // link count is the number of names.
    for (ino, paths) in names {
        let first = paths.iter().min().expect("one name").clone();
        let several = paths.len() > 1;
        for p in &paths {
            let Some(seen) = out.get_mut(p) else { continue };
            if let Snap::File { nlink, same_as, .. } | Snap::Special { nlink, same_as, .. } =
                &mut seen.snap
            {
                if *nlink as usize != paths.len() {
                    let msg = format!("ino {ino}: nlink {nlink}, names {paths:?}");
                    out.insert(p.clone(), Seen::inconsistent(msg));
                } else if several {
                    *same_as = Some(first.clone());
                }
            }
        }
    }
    Ok(out)
}

/// The whole tree as the `Vfs` holds it, as a model (every file read
/// back; names of one inode one node; attributes as stored, folders'
/// mtimes unknown): what a device holds after a crash, when that may lack
/// changes it had not flushed.
pub(super) async fn read_model(vfs: &Vfs) -> VfsResult<Model> {
    let mut model = Model::default();
    let mut names: BTreeMap<u64, BTreeSet<ModelPath>> = BTreeMap::new();
    let mut stack = vec![(meta::ROOT_INO, ModelPath::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for e in vfs.readdir(dir, None, u32::MAX as usize)? {
            let mut path = prefix.clone();
            path.push(e.name.clone());
            let a = vfs.getattr(e.ino)?;
            let node = match e.kind {
                kind @ (NodeKind::Fifo
                | NodeKind::Socket
                | NodeKind::CharDevice
                | NodeKind::BlockDevice) => Node::Special(kind, a.rdev),
                NodeKind::Dir => {
                    stack.push((e.ino, path.clone()));
                    Node::Dir
                }
                NodeKind::Symlink => Node::Symlink(vfs.readlink(e.ino)?),
                NodeKind::File => Node::File(read_back(vfs, e.ino, a.size).await?),
            };
            if e.kind != NodeKind::Dir {
                names.entry(e.ino).or_default().insert(path.clone());
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = model.attrs.entry(e.ino) {
                let stored = vfs.meta.inode_required(e.ino)?;
                let numeric = stored.uid.is_some() || stored.gid.is_some();
                slot.insert(Attrs {
                    mode: stored.mode,
                    uid: stored.uid,
                    gid: stored.gid,
                    ids_from: numeric.then(|| stored.ids_from.unwrap_or(vfs.device_id)),
                    mtime: (e.kind != NodeKind::Dir).then_some(a.mtime),
                    atime: None,
                    xattrs: meta_of(vfs, &a)?.xattrs,
                });
            }
            model.keys.insert(path.clone(), e.ino);
            model.nodes.insert(path, node);
        }
    }
    model.next_key = model.attrs.keys().max().map_or(0, |k| k + 1);
    model.groups = names.into_values().filter(|g| g.len() > 1).collect();
    Ok(model)
}
