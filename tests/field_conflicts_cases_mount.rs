//! Field-by-field conflicts end to end, the harder cases (issue 9): a
//! delete against an edit or a create inside the deleted folder, two
//! renames of one node, two nodes renamed to one name, crossed folder
//! moves, and a device that comes back with hundreds of queued
//! operations. Two devices of one account change the tree while the
//! server is down (so their changes are concurrent for sure); the server
//! comes back, and both devices must converge to the same tree, the one
//! README's semantics (conflicts decided field by field) promise.
//!
//! Where the outcome depends on which device the server hears first,
//! the test sets that order ([`restart_in_order`]).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// One node of a tree as a device shows it.
#[derive(Clone, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { content: Vec<u8>, mode: u32 },
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Dir { mode } => write!(f, "dir {mode:o}"),
            Entry::File { content, mode } => {
                let text = String::from_utf8_lossy(content);
                if text.len() > 40 {
                    write!(
                        f,
                        "file {mode:o} {:?}… ({} bytes)",
                        &text[..40],
                        content.len()
                    )
                } else {
                    write!(f, "file {mode:o} {text:?}")
                }
            }
        }
    }
}

/// Every node below a mount, by path relative to it (`d/f.txt`).
type Tree = BTreeMap<String, Entry>;

fn dir() -> Entry {
    Entry::Dir { mode: 0o755 }
}

fn file(content: &str) -> Entry {
    Entry::File {
        content: content.as_bytes().to_vec(),
        mode: 0o644,
    }
}

fn tree(entries: &[(&str, Entry)]) -> Tree {
    entries
        .iter()
        .map(|(p, e)| (p.to_string(), e.clone()))
        .collect()
}

/// The whole tree below `root`: names, kinds, contents and modes (`None`
/// while something cannot be read, say a file whose bytes are on their
/// way).
fn snapshot(root: &Path) -> Option<Tree> {
    fn walk(root: &Path, rel: &str, out: &mut Tree) -> std::io::Result<()> {
        for e in fs::read_dir(root.join(rel))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = fs::symlink_metadata(root.join(&path))?;
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(path.clone(), Entry::Dir { mode });
                walk(root, &path, out)?;
            } else {
                let content = fs::read(root.join(&path))?;
                out.insert(path, Entry::File { content, mode });
            }
        }
        Ok(())
    }
    let mut out = Tree::new();
    walk(root, "", &mut out).ok()?;
    Some(out)
}

/// Waits until both devices show the same tree and `ok` accepts it, then
/// checks that it stays so once both have synced again; returns it.
fn converge(a: &Device, b: &Device, what: &str, ok: impl Fn(&Tree) -> bool) -> Tree {
    let deadline = Instant::now() + ARRIVE;
    loop {
        let (ta, tb) = (snapshot(&a.mnt), snapshot(&b.mnt));
        if let (Some(x), Some(y)) = (&ta, &tb) {
            if x == y && ok(x) {
                break;
            }
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {ARRIVE:?} waiting for both devices to show {what}\n\
                 {}: {ta:#?}\n{}: {tb:#?}",
                a.name, b.name
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing still on its way undoes it.
    a.sync();
    b.sync();
    let (ta, tb) = (snapshot(&a.mnt).unwrap(), snapshot(&b.mnt).unwrap());
    assert_eq!(ta, tb, "{what}: the devices drifted apart after converging");
    assert!(ok(&ta), "{what}: no longer so after syncing again: {ta:#?}");
    ta
}

/// Waits until both devices show exactly `want`.
fn converge_to(a: &Device, b: &Device, want: &Tree) {
    converge(a, b, &format!("{want:#?}"), |t| t == want);
}

/// True when `name` is the conflict name README documents for `stem.ext`
/// lost by `device`: `<stem> (conflict <device> <YYYY-MM-DD HH.MM.SS>)<ext>`.
fn is_conflict_name(name: &str, stem: &str, ext: &str, device: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(&format!("{stem} (conflict {device} "))
        .and_then(|r| r.strip_suffix(&format!("){ext}")))
    else {
        return false;
    };
    let shape = "dddd-dd-dd dd.dd.dd";
    stamp.len() == shape.len()
        && stamp.chars().zip(shape.chars()).all(|(c, s)| match s {
            'd' => c.is_ascii_digit(),
            _ => c == s,
        })
}

/// Two mounted devices, with the umask the expected modes assume.
fn setup() -> (Server, Device, Device) {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    two_devices()
}

/// Which device's queued changes the server hears first: a's or b's.
#[derive(Clone, Copy)]
enum First {
    A,
    B,
}

fn restart(server: &mut Server, a: &mut Device, b: &mut Device, first: First) {
    match first {
        First::A => restart_in_order(server, a, b),
        First::B => restart_in_order(server, b, a),
    }
}

/// Device a removes folder `d` with everything in it (`rm -rf`) while
/// device b edits `d/f.txt` and `d/sub/deep.txt`: the edits win, and the
/// folder chain above each comes back with it; what b did not change
/// stays deleted.
fn delete_against_edit(first: First) {
    let (mut server, mut a, mut b) = setup();
    for d in ["d", "d/sub", "d/untouched"] {
        fs::create_dir(a.path(d)).unwrap();
    }
    for f in [
        "d/f.txt",
        "d/other.txt",
        "d/sub/deep.txt",
        "d/untouched/u.txt",
    ] {
        fs::write(a.path(f), b"original").unwrap();
    }
    a.sync();
    wait_content(&b.path("d/untouched/u.txt"), b"original", ARRIVE);
    wait_content(&b.path("d/sub/deep.txt"), b"original", ARRIVE);

    server.stop();
    fs::remove_dir_all(a.path("d")).unwrap();
    assert!(!a.path("d").exists());
    fs::write(b.path("d/f.txt"), b"edited on b").unwrap();
    fs::write(b.path("d/sub/deep.txt"), b"deep edit on b").unwrap();
    restart(&mut server, &mut a, &mut b, first);

    converge_to(
        &a,
        &b,
        &tree(&[
            ("d", dir()),
            ("d/f.txt", file("edited on b")),
            ("d/sub", dir()),
            ("d/sub/deep.txt", file("deep edit on b")),
        ]),
    );
}

#[test]
fn an_edit_brings_back_its_file_and_folder_deleted_before_it() {
    delete_against_edit(First::A);
}

#[test]
fn a_delete_after_an_edit_keeps_the_edited_file_and_its_folder() {
    delete_against_edit(First::B);
}

/// Device a removes folder `d` (and the file it held) while device b
/// creates a new file in it: the folder stays with the new file only.
fn delete_against_create(first: First) {
    let (mut server, mut a, mut b) = setup();
    fs::create_dir(a.path("d")).unwrap();
    fs::write(a.path("d/old.txt"), b"old").unwrap();
    a.sync();
    wait_content(&b.path("d/old.txt"), b"old", ARRIVE);

    server.stop();
    fs::remove_dir_all(a.path("d")).unwrap();
    fs::write(b.path("d/new.txt"), b"new on b").unwrap();
    restart(&mut server, &mut a, &mut b, first);

    converge_to(
        &a,
        &b,
        &tree(&[("d", dir()), ("d/new.txt", file("new on b"))]),
    );
}

#[test]
fn a_file_created_in_a_folder_deleted_before_it_brings_the_folder_back() {
    delete_against_create(First::A);
}

#[test]
fn a_folder_deleted_after_a_file_was_created_in_it_stays_with_the_file() {
    delete_against_create(First::B);
}

#[test]
fn two_renames_of_one_file_end_at_the_name_committed_last() {
    let (mut server, a, mut b) = setup();
    fs::write(a.path("x.txt"), b"x content").unwrap();
    a.sync();
    wait_content(&b.path("x.txt"), b"x content", ARRIVE);

    server.stop();
    fs::rename(a.path("x.txt"), a.path("a.txt")).unwrap();
    fs::rename(b.path("x.txt"), b.path("b.txt")).unwrap();
    restart_in_order(&mut server, &a, &mut b);

    converge_to(&a, &b, &tree(&[("b.txt", file("x content"))]));
}

#[test]
fn two_files_renamed_to_one_name_keep_both_the_later_under_a_conflict_name() {
    let (mut server, a, mut b) = setup();
    fs::write(a.path("p.txt"), b"p content").unwrap();
    fs::write(a.path("q.txt"), b"q content").unwrap();
    a.sync();
    wait_content(&b.path("q.txt"), b"q content", ARRIVE);

    server.stop();
    fs::rename(a.path("p.txt"), a.path("same.txt")).unwrap();
    fs::rename(b.path("q.txt"), b.path("same.txt")).unwrap();
    restart_in_order(&mut server, &a, &mut b);

    // README: "Two different nodes renamed to one name: the later one
    // gets a conflict name" – b's, named after the device that lost.
    let got = converge(&a, &b, "same.txt and b's under a conflict name", |t| {
        t.len() == 2
            && t.get("same.txt") == Some(&file("p content"))
            && t.iter().any(|(name, e)| {
                is_conflict_name(name, "same", ".txt", "desktop") && *e == file("q content")
            })
    });
    assert!(!got.contains_key("p.txt") && !got.contains_key("q.txt"));
}

#[test]
fn crossed_folder_moves_keep_both_folders_with_their_files() {
    let (mut server, a, mut b) = setup();
    for d in ["x", "y"] {
        fs::create_dir(a.path(d)).unwrap();
        fs::write(a.path(&format!("{d}/in-{d}.txt")), d.as_bytes()).unwrap();
    }
    a.sync();
    wait_content(&b.path("y/in-y.txt"), b"y", ARRIVE);

    server.stop();
    fs::rename(a.path("x"), a.path("y/x")).unwrap();
    fs::rename(b.path("y"), b.path("x/y")).unwrap();
    restart_in_order(&mut server, &a, &mut b);

    // The move the server received first (a's) stands; b's is not applied.
    converge_to(
        &a,
        &b,
        &tree(&[
            ("y", dir()),
            ("y/in-y.txt", file("y")),
            ("y/x", dir()),
            ("y/x/in-x.txt", file("x")),
        ]),
    );
}

#[test]
fn crossed_folder_moves_sent_at_once_lose_no_folder() {
    let (mut server, a, b) = setup();
    for d in ["x", "y"] {
        fs::create_dir(a.path(d)).unwrap();
        fs::write(a.path(&format!("{d}/in-{d}.txt")), d.as_bytes()).unwrap();
    }
    a.sync();
    wait_content(&b.path("y/in-y.txt"), b"y", ARRIVE);

    server.stop();
    fs::rename(a.path("x"), a.path("y/x")).unwrap();
    fs::rename(b.path("y"), b.path("x/y")).unwrap();
    restart_and_sync(&mut server, &a, &b);

    let nested = |outer: &str, inner: &str| {
        tree(&[
            (outer, dir()),
            (format!("{outer}/in-{outer}.txt").as_str(), file(outer)),
            (format!("{outer}/{inner}").as_str(), dir()),
            (
                format!("{outer}/{inner}/in-{inner}.txt").as_str(),
                file(inner),
            ),
        ])
    };
    let (ax, bx) = (nested("y", "x"), nested("x", "y"));
    converge(&a, &b, "one of the two moves, both folders", |t| {
        *t == ax || *t == bx
    });
}

/// The tree one expects, kept beside the operations done on a mount.
struct Model {
    tree: Tree,
    ops: usize,
}

impl Model {
    fn mode(root: &Path, rel: &str) -> u32 {
        fs::metadata(root.join(rel)).unwrap().permissions().mode() & 0o7777
    }

    fn write(&mut self, root: &Path, rel: &str, content: &str) {
        fs::write(root.join(rel), content).unwrap();
        let mode = Self::mode(root, rel);
        let content = content.as_bytes().to_vec();
        self.tree.insert(rel.into(), Entry::File { content, mode });
        self.ops += 1;
    }

    fn mkdir(&mut self, root: &Path, rel: &str) {
        fs::create_dir(root.join(rel)).unwrap();
        let mode = Self::mode(root, rel);
        self.tree.insert(rel.into(), Entry::Dir { mode });
        self.ops += 1;
    }

    fn chmod(&mut self, root: &Path, rel: &str, mode: u32) {
        fs::set_permissions(root.join(rel), fs::Permissions::from_mode(mode)).unwrap();
        match self.tree.get_mut(rel).unwrap() {
            Entry::Dir { mode: m } | Entry::File { mode: m, .. } => *m = mode,
        }
        self.ops += 1;
    }

    /// The node at `rel` and everything below it.
    fn below(&self, rel: &str) -> Vec<String> {
        let inside = format!("{rel}/");
        self.tree
            .keys()
            .filter(|k| *k == rel || k.starts_with(&inside))
            .cloned()
            .collect()
    }

    /// `rename(2)`, replacing a file at `to`.
    fn rename(&mut self, root: &Path, from: &str, to: &str) {
        fs::rename(root.join(from), root.join(to)).unwrap();
        self.tree.remove(to);
        for old in self.below(from) {
            let e = self.tree.remove(&old).unwrap();
            self.tree.insert(format!("{to}{}", &old[from.len()..]), e);
        }
        self.ops += 1;
    }

    fn remove(&mut self, root: &Path, rel: &str) {
        fs::remove_file(root.join(rel)).unwrap();
        self.tree.remove(rel).unwrap();
        self.ops += 1;
    }

    /// `rm -rf`: one operation per node.
    fn remove_all(&mut self, root: &Path, rel: &str) {
        fs::remove_dir_all(root.join(rel)).unwrap();
        for k in self.below(rel) {
            self.tree.remove(&k);
            self.ops += 1;
        }
    }
}

/// Device a does 300+ operations offline, in an order that matters, while
/// device b changes other files and edits one file a edits too.
fn hundreds_of_operations(first: First) {
    let (mut server, mut a, mut b) = setup();
    let (ra, rb) = (a.mnt.clone(), b.mnt.clone());
    let mut m = Model {
        tree: Tree::new(),
        ops: 0,
    };
    // What both devices have before the server goes down.
    m.mkdir(&ra, "base");
    for i in 0..20 {
        m.write(&ra, &format!("base/f{i:02}.txt"), &format!("base {i}"));
    }
    m.mkdir(&ra, "other");
    for i in 0..5 {
        m.write(&ra, &format!("other/o{i}.txt"), &format!("other {i}"));
    }
    m.write(&ra, "both.txt", "original");
    a.sync();
    wait_content(&b.path("other/o4.txt"), b"other 4", ARRIVE);
    wait_content(&b.path("both.txt"), b"original", ARRIVE);
    assert_eq!(snapshot(&rb).unwrap(), m.tree);

    server.stop();
    m.ops = 0;
    // Device a, offline: new files, written again.
    m.mkdir(&ra, "new");
    for i in 0..40 {
        m.write(&ra, &format!("new/n{i:02}.txt"), &format!("new {i}"));
    }
    for i in (0..40).step_by(2) {
        m.write(&ra, &format!("new/n{i:02}.txt"), &format!("new {i} v2"));
    }
    // Rename chains n → m → k.
    for i in 0..20 {
        m.rename(
            &ra,
            &format!("new/n{i:02}.txt"),
            &format!("new/m{i:02}.txt"),
        );
        m.rename(
            &ra,
            &format!("new/m{i:02}.txt"),
            &format!("new/k{i:02}.txt"),
        );
    }
    // Folders made, then files moved into them, one then renamed.
    m.mkdir(&ra, "sorted");
    for j in 0..4 {
        m.mkdir(&ra, &format!("sorted/sub{j}"));
    }
    for i in 0..20 {
        let to = format!("sorted/sub{}/k{i:02}.txt", i % 4);
        m.rename(&ra, &format!("new/k{i:02}.txt"), &to);
    }
    m.rename(&ra, "sorted/sub3", "sorted/last");
    m.chmod(&ra, "sorted/sub0", 0o700);
    // Deletes and chmods.
    for i in 20..30 {
        m.remove(&ra, &format!("new/n{i:02}.txt"));
    }
    for i in 30..40 {
        m.chmod(&ra, &format!("new/n{i:02}.txt"), 0o600);
    }
    for i in 0..10 {
        m.chmod(&ra, &format!("base/f{i:02}.txt"), 0o640);
    }
    // Existing files moved, deleted, edited; a name freed and taken again.
    m.mkdir(&ra, "base/renamed");
    for i in 10..15 {
        let to = format!("base/renamed/r{i:02}.txt");
        m.rename(&ra, &format!("base/f{i:02}.txt"), &to);
    }
    for i in 15..18 {
        m.remove(&ra, &format!("base/f{i:02}.txt"));
    }
    m.write(&ra, "base/f18.txt", "base 18 edited on a");
    m.rename(&ra, "base/f19.txt", "base/f19.old");
    m.write(&ra, "base/f19.txt", "a new f19");
    // Saves through a temporary file (write, then rename over the file).
    for i in 30..36 {
        let tmp = format!("new/.n{i:02}.txt.tmp");
        m.write(&ra, &tmp, &format!("new {i} saved"));
        m.rename(&ra, &tmp, &format!("new/n{i:02}.txt"));
    }
    // Temporary files and a folder tree that never needed to upload.
    for i in 0..15 {
        let tmp = format!("new/tmp{i}");
        m.write(&ra, &tmp, "scratch");
        m.remove(&ra, &tmp);
    }
    m.mkdir(&ra, "junk");
    m.mkdir(&ra, "junk/deep");
    for i in 0..10 {
        m.write(&ra, &format!("junk/deep/j{i}"), "junk");
    }
    m.remove_all(&ra, "junk");
    // A project made, renamed as a whole, then rearranged.
    m.mkdir(&ra, "proj");
    m.mkdir(&ra, "proj/src");
    for i in 0..12 {
        m.write(
            &ra,
            &format!("proj/src/s{i:02}.rs"),
            &format!("fn f{i}() {{}}"),
        );
    }
    m.rename(&ra, "proj", "project");
    m.rename(&ra, "project/src/s00.rs", "project/main.rs");
    m.mkdir(&ra, "project/src/mod");
    for i in 6..12 {
        let from = format!("project/src/s{i:02}.rs");
        m.rename(&ra, &from, &format!("project/src/mod/s{i:02}.rs"));
    }
    m.chmod(&ra, "project/main.rs", 0o755);
    m.write(&ra, "project/src/s01.rs", "fn f1() { changed }");
    // Notes written twice, some made private.
    m.mkdir(&ra, "notes");
    for i in 0..20 {
        let note = format!("notes/t{i:02}.md");
        m.write(&ra, &note, &format!("# note {i}"));
        m.write(&ra, &note, &format!("# note {i}\n\nmore"));
        if i % 2 == 1 {
            m.chmod(&ra, &note, 0o600);
        }
    }
    // Folder swap through a third name, and the file both devices edit.
    m.rename(&ra, "sorted/sub1", "sorted/swap");
    m.rename(&ra, "sorted/sub2", "sorted/sub1");
    m.rename(&ra, "sorted/swap", "sorted/sub2");
    m.write(&ra, "both.txt", "edited on a");
    assert!(m.ops >= 300, "only {} operations", m.ops);

    // Device b, offline too: other files, and the content of both.txt.
    m.write(&rb, "other/o0.txt", "other 0 edited on b");
    m.write(&rb, "other/b-new.txt", "made on b");
    m.rename(&rb, "other/o1.txt", "other/o1-renamed.txt");
    m.remove(&rb, "other/o2.txt");
    m.chmod(&rb, "other/o3.txt", 0o600);
    fs::write(rb.join("both.txt"), b"edited on b").unwrap();

    // The queue the server hears first keeps the name of both.txt; the
    // other device's edit is the one conflict copy.
    restart(&mut server, &mut a, &mut b, first);
    let (kept, copied, loser) = match first {
        First::A => ("edited on a", "edited on b", "desktop"),
        First::B => ("edited on b", "edited on a", "laptop"),
    };
    let mut want = m.tree;
    want.insert("both.txt".into(), file(kept));
    converge(&a, &b, "a's end state with b's changes", |t| {
        let mut rest = t.clone();
        let copies: Vec<String> = rest
            .keys()
            .filter(|k| is_conflict_name(k, "both", ".txt", loser))
            .cloned()
            .collect();
        if copies.len() != 1 {
            return false;
        }
        let copy = rest.remove(&copies[0]).unwrap();
        matches!(copy, Entry::File { ref content, .. } if content == copied.as_bytes())
            && rest == want
    });
}

#[test]
fn a_device_back_after_hundreds_of_operations_converges_to_their_end_state() {
    hundreds_of_operations(First::A);
}

#[test]
fn hundreds_of_queued_operations_arriving_second_converge_too() {
    hundreds_of_operations(First::B);
}
