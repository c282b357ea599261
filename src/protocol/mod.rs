//! Types shared by client and server: ids, manifests, version vectors, names
//! and the JSON bodies of the HTTP API. No I/O lives here.
//!
//! # Wire model
//! The server keeps *nodes* (files, folders, symlinks, special files)
//! apart from *entries* (`parent, name → node`). On the wire a node travels as a
//! [`NodeRecord`] that carries its single live entry (`parent`, `name`);
//! a deleted node carries `deleted = true` and keeps its last entry so a
//! client can find it. Hard links (several entries per node) will extend
//! this record, not replace it.
//!
//! Node ids are chosen by the client that creates the node (UUID v4), so a
//! device can create folders and files offline and refer to them in later
//! journal entries before the server has seen them. The root folder of
//! every account is [`NodeId::ROOT`] (the nil UUID).
//!
//! # Versions
//! Client and server exchange [`PROTOCOL_VERSION`] in the
//! [`PROTOCOL_HEADER`] of every request and answer; a mismatch is a clear
//! error, never a body read with fields dropped (see `version`).

mod api;
mod chunk_batch;
mod devices;
mod ids;
mod manifest;
mod merge;
mod names;
mod push;
mod time;
mod version;
mod version_vector;
mod xattrs;

pub use api::*;
pub use chunk_batch::*;
pub use devices::*;
pub use ids::*;
pub use manifest::*;
pub use merge::*;
pub use names::*;
pub use push::*;
pub use time::Timestamp;
pub use version::*;
pub use version_vector::*;
pub use xattrs::*;
