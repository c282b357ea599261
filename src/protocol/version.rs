//! The protocol version that client and server exchange.
//!
//! Every request of [`crate::remote::http::HttpRemote`] (and of `nimbus
//! login`) carries [`PROTOCOL_HEADER`]`: `[`PROTOCOL_VERSION`], and every
//! answer of the server carries the server's. A request that names
//! another version is refused with 400 and the error code
//! [`PROTOCOL_VERSION_ERROR`] before any handler runs, so neither side
//! ever reads a body whose fields it does not know (serde would silently
//! drop them). A request without the header (curl, health checks, the
//! Prometheus scrape) is served as one of this version.
//!
//! The version changes whenever a request or response body, or the
//! meaning of a field, changes in a way the other side must know about.
//!
//! # History
//! - 1: nodes are files, folders and symlinks with permission bits and a
//!   modification time in nanoseconds (`mtime_ns`).
//! - 2: `NodeMeta` carries owner and group (`uid`, `gid`, `ids_from`),
//!   setuid/setgid/sticky, `rdev`, and `mtime`/`atime`/`btime` as
//!   seconds + nanoseconds; FIFOs, sockets and device nodes are kinds
//!   (see `protocol::api`).
//! - 3: `NodeMeta` carries extended attributes (`xattrs`, see
//!   `protocol::xattrs`); a protocol 2 peer would drop them silently.
//! - 4: hard links: `NodeRecord` and `NodeChange::Upsert` carry a node's
//!   other entries in `links`. A protocol-3 client would drop them (and
//!   unlink every name but one on its next upsert), so it is refused.
//! - 5: `POST /api/v1/chunks/batch` (see `protocol::chunk_batch`): the
//!   client's read path fetches the chunks of several small files in one
//!   request, so it needs a server that has the route.
//! - 6: field-by-field conflicts (see `protocol::merge`): `CommitOp` carries
//!   the state the device last saw (`seen`), `NodeMeta` the mark of a
//!   conflict copy (`conflict`), and a commit may answer `merged`. A
//!   protocol-5 client would send whole states that undo concurrent
//!   changes of other fields, and drop the conflict mark.

/// The version of the HTTP/JSON protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 6;

/// The header carrying a protocol version, on requests and on answers.
pub const PROTOCOL_HEADER: &str = "nimbus-protocol";

/// The error code (`ErrorBody::error`) of a request refused for its
/// protocol version (status 400).
pub const PROTOCOL_VERSION_ERROR: &str = "protocol_version";

/// A header value as a protocol version (decimal, surrounding spaces
/// allowed); `None` if it is not one.
pub fn parse_protocol_version(value: &str) -> Option<u32> {
    value.trim().parse().ok()
}

/// The one sentence shown when the two sides speak different versions:
/// both versions, and which side to upgrade.
pub fn protocol_mismatch_message(server: u32, client: u32) -> String {
    let upgrade = if client < server {
        format!("upgrade this client (nimbus) to a release that speaks protocol {server}")
    } else {
        format!("upgrade the server to a release that speaks protocol {client}")
    };
    format!(
        "the server speaks Nimbus protocol {server} and this client protocol {client}; {upgrade}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mismatch_names_both_versions_and_the_side_to_upgrade() {
        let old_client = protocol_mismatch_message(3, 2);
        assert!(old_client.contains("protocol 3"), "{old_client}");
        assert!(old_client.contains("protocol 2"), "{old_client}");
        assert!(old_client.contains("upgrade this client"), "{old_client}");
        let old_server = protocol_mismatch_message(2, 3);
        assert!(old_server.contains("upgrade the server"), "{old_server}");
        assert_eq!(parse_protocol_version(" 7 "), Some(7));
        assert_eq!(parse_protocol_version("v1"), None);
        assert_eq!(parse_protocol_version("-1"), None);
    }
}
