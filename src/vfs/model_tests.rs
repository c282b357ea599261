//! Model-based property tests of the core (STYLE habit 7): random
//! operation sequences go to a [`Vfs`] and to a plain in-memory model (a
//! map from path to file bytes, folder or symlink target, and the groups
//! of paths that are hard links of one node), and the two must agree on
//! every result kind and on the whole tree — for a file, its link count
//! and which names are the same node included.
//!
//! The harness plays the kernel's part: it walks paths with `lookup` (a
//! missing component is `NotFound`, a non-folder one `NotDir`, symlinks are
//! not followed), calls the core's one entry point per operation (`read`,
//! `write`, `setattr` answer now or with a future, as for the fuse adapter),
//! and forgets every inode it looked up once the operation is over, so unlinked
//! inodes really get purged. "Upload" drains the journal through the
//! uploader and pulls the change log back; "reopen" drops the `Vfs` after
//! `fsync_all` and opens it again from the same directories (a crash after
//! fsync); "crash" drains, then reopens from only what the metadata store
//! had flushed (`CrashKv`), and the device's state after the crash,
//! drained again, must be the server's and a fresh device's.
//!
//! Every test case runs its own in-process server (the server's real
//! commit, conflict and possession rules over SQLite, no HTTP). After every
//! drain three views must equal the model's tree — names, kinds, sizes,
//! BLAKE3 of the content, symlink targets: the device's tree read through
//! the `Vfs` API, the server's live tree (the change log from cursor 0,
//! content fetched chunk by chunk), and a fresh device's tree after its
//! first pull. The single device never sees a `(conflict` name; in the
//! two-device test a write racing a remote change of the same file must
//! leave exactly one conflict copy, named by the racing device and
//! holding its content, beside the name holding the content that reached
//! the server first.
//!
//! Besides single ops the generator issues bursts programs really make
//! (the client-core issue's "Show" list): a deep folder chain created and
//! removed with `rm -rf` before (or right after) an upload, an editor's
//! write-temp-then-rename over an existing name, and a rename of a folder
//! whose new children are still pending.
//!
//! Result kinds follow the core's checks, which match POSIX wherever the
//! kernel lets the question reach the file system. Two orderings differ from
//! Linux but are unreachable through a mount because the kernel's own
//! rename checks answer first: `RENAME_NOREPLACE` onto the same name (core:
//! success; Linux: `EEXIST`) and a folder moved below itself onto an
//! existing name (core: `EINVAL`; Linux with `RENAME_NOREPLACE`: `EEXIST`).

mod attrs;
mod conflicts;
mod device;
mod drive;
mod model;
mod props;
