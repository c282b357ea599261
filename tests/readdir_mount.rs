//! Directory streams through a real mount: a stream opened before a rename
//! or unlink never hands the kernel a name that is gone (with readdirplus
//! the kernel would cache a dentry for it), and a rewound stream lists the
//! folder as it is now. Found by the break-it run of the client-core issue:
//! an editor's `rename(x.tmp, x)` made `mv` say "same file" and creates
//! answer ENOENT for the entry timeout.

mod common;

use common::*;
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::collections::BTreeSet;

fn names(it: impl Iterator<Item = nix::Result<nix::dir::Entry>>) -> Vec<String> {
    it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect()
}

#[test]
fn a_stream_open_across_renames_lists_no_gone_name() {
    let server = Server::start();
    server.add_user("u", "pw-readdir-1");
    let mut dev = Device::login(&server, "u", "pw-readdir-1", "a");
    dev.mount(&[]);
    let d = dev.mnt.join("d");
    std::fs::create_dir(&d).unwrap();
    // Enough entries that libc's first getdents does not take them all.
    let all: BTreeSet<String> = (0..3000).map(|i| format!("f{i:04}")).collect();
    for n in &all {
        std::fs::File::create(d.join(n)).unwrap();
    }

    let mut dir = Dir::open(&d, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    let mut it = dir.iter();
    // `.` and `..` come first.
    let first = names(it.by_ref().take(102));
    assert_eq!(first.len(), 100, "{first:?}");
    // The last names are surely not read yet: rename one away, remove one,
    // and replace one by a rename over it.
    std::fs::rename(d.join("f2999"), d.join("moved")).unwrap();
    std::fs::remove_file(d.join("f2998")).unwrap();
    std::fs::rename(d.join("f0000"), d.join("f2997")).unwrap();
    let rest = names(it);
    let listed: BTreeSet<String> = first.iter().chain(&rest).cloned().collect();
    for gone in ["f2999", "f2998"] {
        assert!(!listed.contains(gone), "{gone} listed after it was gone");
        assert!(!d.join(gone).exists(), "{gone} stat-able after listing");
    }
    assert!(listed.contains("f2997"), "a replaced name stays listed");
    assert_eq!(first.len() + rest.len(), listed.len(), "no name twice");

    // A rewound stream sees the folder as it is now.
    let now = names(dir.iter());
    let want: BTreeSet<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(want.contains("moved") && !want.contains("f0000"));
    assert_eq!(now.into_iter().collect::<BTreeSet<_>>(), want);
}
