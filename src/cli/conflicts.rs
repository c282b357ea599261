//! `nimbus conflicts [--json]` and `nimbus conflicts resolve PATH --keep
//! mine|theirs|both`.
//!
//! Both read what the mount publishes (see `vfs::conflicts`): the list is
//! the root's `user.nimbus.conflicts`, a copy's mark its
//! `user.nimbus.conflict`; the CLI never walks the tree. The mount listed
//! is the one containing the current directory, else every Nimbus mount.
//!
//! Resolving acts through the mount, as the user would, so it is journaled
//! and reaches every device like any change:
//! - "theirs" (the version holding the original name) deletes the copy;
//!   refused when the original is gone, which would drop the only version;
//! - "mine" (the conflict copy's version) writes the copy's content into
//!   the original file (truncate, copy, fsync: the original keeps its node
//!   and version history), then deletes the copy; with the original gone
//!   it renames the copy to the original's name (in the copy's folder,
//!   refused if something took that name). A copy that is not a regular
//!   file (a symlink) replaces the original by a rename;
//! - "both" removes the copy's `user.nimbus.conflict` attribute: the mount
//!   clears the mark and the copy is an ordinary file.
//!
//! A folder copy (a folder brought back under a conflict name, because an
//! edit inside it beat its delete while another folder took its name) is
//! resolved only with "both": its contents are the user's to sort.
//!
//! The kernel allows `user.*` attributes on files and folders only
//! (xattr(7)): a symlink copy's mark is read from the root's list, and
//! "both" clears it by renaming the copy away and back (a rename clears a
//! mark as well).

use super::mountinfo::{absolute_no_follow, nimbus_mount_containing, nimbus_mounts, read_mounts};
use super::status::{parse_attr, read_attr};
use super::xattr::{self, ConflictInfo, ConflictList, CONFLICTS_XATTR, CONFLICT_XATTR};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Which version `resolve` keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The conflict copy's version (the losing edit).
    Mine,
    /// The version holding the original name (the first commit).
    Theirs,
    /// Both: the copy stays, as an ordinary file.
    Both,
}

/// One conflict copy as `nimbus conflicts --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// The copy (absolute).
    pub path: PathBuf,
    /// The original (absolute); `None` when it was deleted.
    pub original: Option<PathBuf>,
    /// The device whose edit the copy keeps.
    pub device: String,
    /// When the server received that edit (RFC 3339, UTC).
    pub time: String,
    /// The mount it is in.
    pub mount: PathBuf,
}

/// The mounts to list: the one containing the current directory, else
/// every Nimbus mount.
fn mounts_to_list() -> Result<Vec<PathBuf>> {
    let mounts = read_mounts()?;
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(m) = nimbus_mount_containing(&mounts, &cwd) {
            return Ok(vec![m.mount_point.clone()]);
        }
    }
    let all: Vec<PathBuf> = nimbus_mounts(&mounts)
        .into_iter()
        .map(|m| m.mount_point.clone())
        .collect();
    if all.is_empty() {
        bail!("no nimbus mount found (start one with `nimbus mount DIR`)");
    }
    Ok(all)
}

/// The conflict copies of `root`'s mount; warns on stderr when the mount
/// listed fewer than it has.
fn list_mount(root: &Path) -> Result<Vec<Listed>> {
    let raw = read_attr(root, CONFLICTS_XATTR)?;
    let list: ConflictList = parse_attr(&raw, root, CONFLICTS_XATTR)?;
    if list.count > list.copies.len() as u64 {
        eprintln!(
            "nimbus: {} more conflict copies in {} are not listed (one attribute value holds \
             64 KiB); resolve some to see the rest",
            list.count - list.copies.len() as u64,
            root.display()
        );
    }
    Ok(list
        .copies
        .into_iter()
        .map(|c| Listed {
            path: root.join(c.path.unwrap_or_default()),
            original: c.of_path.map(|p| root.join(p)),
            device: c.device,
            time: c.at,
            mount: root.to_path_buf(),
        })
        .collect())
}

/// The human form of one listed copy (one line).
pub fn render(c: &Listed) -> String {
    let original = match &c.original {
        Some(p) => p.display().to_string(),
        None => "(deleted)".to_string(),
    };
    format!(
        "{}: conflict copy of {original}, edited on {} at {}",
        c.path.display(),
        c.device,
        human_time(&c.time)
    )
}

/// `2026-12-05T12:00:00Z` as `2026-12-05 12:00:00 UTC`.
fn human_time(rfc3339: &str) -> String {
    match rfc3339.strip_suffix('Z') {
        Some(t) => format!("{} UTC", t.replacen('T', " ", 1)),
        None => rfc3339.to_string(),
    }
}

/// `nimbus conflicts [--json]`.
pub fn list(json: bool) -> Result<()> {
    let mut all = Vec::new();
    for root in mounts_to_list()? {
        all.extend(list_mount(&root)?);
    }
    if json {
        println!("{}", serde_json::to_string(&all)?);
    } else if all.is_empty() {
        println!("no conflicts");
    } else {
        for c in &all {
            println!("{}", render(c));
        }
    }
    Ok(())
}

/// A conflict copy named on the command line: where it is and its mark.
struct Copy {
    path: PathBuf,
    root: PathBuf,
    info: ConflictInfo,
}

/// Checks that `path` is a conflict copy in a Nimbus mount (one clear
/// error otherwise).
fn locate_copy(path: &Path) -> Result<Copy> {
    let abs = absolute_no_follow(path).map_err(|_| anyhow!("{} does not exist", path.display()))?;
    match std::fs::symlink_metadata(&abs) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => bail!("{} does not exist", path.display()),
        Err(e) => return Err(anyhow!(e).context(format!("cannot read {}", path.display()))),
    }
    let mounts = read_mounts()?;
    let root = nimbus_mount_containing(&mounts, &abs)
        .with_context(|| format!("{} is not inside a nimbus mount", abs.display()))?
        .mount_point
        .clone();
    let not_a_copy = || {
        anyhow!(
            "{} is not a conflict copy (see `nimbus conflicts`)",
            path.display()
        )
    };
    if !has_user_xattrs(&abs) {
        // The kernel keeps `user.*` attributes to files and folders: a
        // symlink's mark is found in the root's list.
        let rel = abs.strip_prefix(&root).unwrap_or(&abs).to_string_lossy();
        let raw = read_attr(&root, CONFLICTS_XATTR)?;
        let list: ConflictList = parse_attr(&raw, &root, CONFLICTS_XATTR)?;
        let info = list
            .copies
            .into_iter()
            .find(|c| c.path.as_deref() == Some(&*rel))
            .ok_or_else(not_a_copy)?;
        return Ok(Copy {
            path: abs,
            root,
            info,
        });
    }
    let raw = match xattr::get(&abs, CONFLICT_XATTR) {
        Ok(raw) => raw,
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Err(not_a_copy()),
        Err(_) => read_attr(&abs, CONFLICT_XATTR)?,
    };
    let info = parse_attr(&raw, &abs, CONFLICT_XATTR)?;
    Ok(Copy {
        path: abs,
        root,
        info,
    })
}

/// True when `path` (not followed) may carry `user.*` attributes: a
/// regular file or a folder (the kernel's rule, xattr(7)).
fn has_user_xattrs(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() || m.is_dir())
}

/// Clears the conflict mark of `copy`: removes its `user.nimbus.conflict`,
/// or, where the kernel allows no `user.*` attribute (a symlink), renames
/// it away and back, since a rename clears the mark too.
fn clear_mark(copy: &Path) -> Result<()> {
    let shown = copy.display();
    if has_user_xattrs(copy) {
        return xattr::remove(copy, CONFLICT_XATTR)
            .with_context(|| format!("cannot clear the conflict mark of {shown}"));
    }
    let name = copy
        .file_name()
        .ok_or_else(|| anyhow!("{shown} has no name"))?;
    let mut aside = std::ffi::OsString::from(".");
    aside.push(name);
    aside.push(".nimbus-resolve");
    let aside = copy.with_file_name(aside);
    std::fs::rename(copy, &aside)
        .with_context(|| format!("cannot clear the conflict mark of {shown} (rename)"))?;
    std::fs::rename(&aside, copy).with_context(|| {
        format!(
            "cannot rename {} back to {shown}; rename it yourself",
            aside.display()
        )
    })
}

/// `nimbus conflicts resolve PATH --keep mine|theirs|both`; prints what it
/// did in one line.
pub fn resolve(path: &Path, keep: Keep) -> Result<()> {
    let copy = locate_copy(path)?;
    let original = copy.info.of_path.as_ref().map(|p| copy.root.join(p));
    let shown = copy.path.display();
    if keep != Keep::Both && std::fs::symlink_metadata(&copy.path).is_ok_and(|m| m.is_dir()) {
        bail!(
            "{shown} is a folder: move what you want from it yourself, then resolve it with \
             --keep both (or delete it)"
        );
    }
    match (keep, original) {
        (Keep::Theirs, None) => bail!(
            "the original of {shown} was deleted: keeping theirs would drop the only version \
             (use --keep mine to give the copy the original name, or --keep both)"
        ),
        (Keep::Theirs, Some(orig)) => {
            remove(&copy.path)?;
            println!("kept {}; removed the conflict copy {shown}", orig.display());
        }
        (Keep::Mine, Some(orig)) => {
            let files = std::fs::symlink_metadata(&copy.path)?.is_file()
                && std::fs::symlink_metadata(&orig).is_ok_and(|m| m.is_file());
            if files {
                write_into(&copy.path, &orig)?;
                remove(&copy.path)?;
            } else {
                std::fs::rename(&copy.path, &orig)
                    .with_context(|| format!("cannot rename {shown} to {}", orig.display()))?;
            }
            println!(
                "{} now has the conflict copy's version; removed {shown}",
                orig.display()
            );
        }
        (Keep::Mine, None) => {
            let target = restored_path(&copy)?;
            if std::fs::symlink_metadata(&target).is_ok() {
                bail!(
                    "{} exists (something new took the original's name); rename {shown} \
                     yourself, or resolve with --keep both",
                    target.display()
                );
            }
            std::fs::rename(&copy.path, &target)
                .with_context(|| format!("cannot rename {shown} to {}", target.display()))?;
            println!(
                "the original was deleted; renamed {shown} to {}",
                target.display()
            );
        }
        (Keep::Both, orig) => {
            clear_mark(&copy.path)?;
            match orig {
                Some(o) => println!(
                    "kept both: {shown} is no longer a conflict copy of {}",
                    o.display()
                ),
                None => println!("kept {shown}; it is no longer a conflict copy"),
            }
        }
    }
    Ok(())
}

/// Where a copy whose original was deleted goes: the original's name
/// (its conflict suffix undone), in the copy's folder.
fn restored_path(copy: &Copy) -> Result<PathBuf> {
    let cannot = || {
        anyhow!(
            "cannot tell the original name of {}; rename it yourself",
            copy.path.display()
        )
    };
    let name = copy
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(cannot)?;
    let at = humantime::parse_rfc3339(&copy.info.at).map_err(|_| cannot())?;
    let at_ns = crate::protocol::Timestamp::from_system_time(at).as_ns_clamped();
    let original =
        crate::protocol::original_name(name, &copy.info.device, at_ns).ok_or_else(cannot)?;
    Ok(copy.path.with_file_name(original))
}

/// Replaces the content of `orig` with that of `copy`, in place (the file
/// keeps its identity), and waits until the mount has it durably. The copy
/// is read through once first, so content that cannot be fetched now
/// (offline, not cached) fails before the original is truncated.
fn write_into(copy: &Path, orig: &Path) -> Result<()> {
    let cannot_read = || format!("cannot read {}", copy.display());
    let mut from = std::fs::File::open(copy).with_context(cannot_read)?;
    std::io::copy(&mut from, &mut std::io::sink()).with_context(cannot_read)?;
    from.seek(SeekFrom::Start(0)).with_context(cannot_read)?;
    let mut to = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(orig)
        .with_context(|| format!("cannot write {}", orig.display()))?;
    std::io::copy(&mut from, &mut to)
        .with_context(|| format!("cannot copy {} into {}", copy.display(), orig.display()))?;
    to.sync_all()
        .with_context(|| format!("cannot sync {}", orig.display()))?;
    Ok(())
}

/// Deletes the copy.
fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_line_per_copy() {
        let c = Listed {
            path: "/m/f (conflict desk 2026-12-05 12.00.00).txt".into(),
            original: Some("/m/f.txt".into()),
            device: "desk".into(),
            time: "2026-12-05T12:00:00Z".into(),
            mount: "/m".into(),
        };
        assert_eq!(
            render(&c),
            "/m/f (conflict desk 2026-12-05 12.00.00).txt: conflict copy of /m/f.txt, \
             edited on desk at 2026-12-05 12:00:00 UTC"
        );
        let gone = Listed {
            original: None,
            ..c
        };
        assert!(render(&gone).contains("conflict copy of (deleted),"));
    }
}
