//! WinFsp front end for Windows (planned). It will translate WinFsp
//! callbacks into `nimbus::vfs::Vfs` calls and map every `VfsError` to an
//! NTSTATUS with an exhaustive `match`, exactly as `nimbus::fuse` maps them
//! to errno values; it will hold no filesystem logic of its own. Until then
//! this member only checks that the core builds as a library dependency.

pub use nimbus::vfs::{Vfs, VfsError};
