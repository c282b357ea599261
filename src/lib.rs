//! Nimbus: a cloud drive. See README.md for users; the module docs below
//! are the design notes.
//!
//! - [`protocol`]: types shared by client and server (no I/O).
//! - [`chunking`]: FastCDC + BLAKE3 manifests.
//! - [`server`]: the HTTP API and its storage engines.
//! - [`remote`]: the client's only way to the server.
//! - [`vfs`]: the platform-neutral filesystem core.
//! - [`sync`]: background uploader and change follower.
//! - [`fuse`]: the thin kernel adapter.
//! - [`config`]: the client's config, data and cache folders and files.
//! - [`cli`]: what each `nimbus` command does (`main.rs` only parses).

pub mod chunking;
pub mod cli;
pub mod client;
pub mod config;
pub mod fuse;
pub mod protocol;
pub mod remote;
pub mod server;
pub mod sync;
pub mod vfs;
