//! JSON bodies of the HTTP API (`/api/v1/...`). The route list and their
//! semantics are documented on `crate::server`.
//!
//! # Node attributes on the wire (protocol 2; extended attributes: 3)
//! [`NodeMeta`] carries what a node *is* on every device: its kind (files,
//! folders, symlinks, FIFOs, sockets, character and block devices), full
//! mode (permission bits with setuid, setgid and sticky), owner and group,
//! device number, and modification, access and birth times as
//! [`Timestamp`] (seconds and nanoseconds: any time, before 1970 and after
//! 2262 included, exactly).
//! - **Owner and group**: `None` is the account's own user, which every
//!   device shows as its mounting user. A number is a numeric id set on
//!   device `ids_from`; only that device shows it as it is (elsewhere the
//!   same number may be another person), others show the mounting user
//!   unless mounted with `--keep-ids`.
//! - **ctime is not synced.** It is each device's own "inode changed"
//!   time, as POSIX defines it: applying a remote change *is* a change of
//!   the local inode, so a device sets ctime to when it applied it, and
//!   `find -cnewer`, backup tools and `make` on that device see the change.
//!   Sending it would only let one device's clock move another's ctime
//!   backwards.
//! - **atime** travels as set (`touch -a`, `utimensat`); reads do not
//!   change it, so reading never causes an upload.
//! - **Special nodes** (FIFO, socket, devices) are metadata only: no
//!   content, no symlink target, size 0. `rdev` is meaningful for
//!   character and block devices only (0 for every other kind).
//!
//! - **Extended attributes** (protocol 3): `xattrs`, name → base64 value,
//!   validated by the rules of [`Xattrs`] on both sides; ctime moves on
//!   every device that applies a change of them.
//!
//! # Directory entries (hard links, protocol 4)
//! A node's entries travel **with the node**: a [`NodeRecord`] (and an
//! upsert) names its first entry in `parent`/`name` and every other one in
//! `links`. A folder has exactly one entry; a file, symlink or special node
//! one or more (at most [`MAX_LINKS`]); a deleted node none that is live.
//! Entries are thus part of the node's state, under its version vector:
//! `link`/`unlink` of one name of a node with several is an upsert carrying
//! the new set, only the removal of the last entry is a `Delete`. This keeps
//! every commit rule as it was (see `server` module docs): a concurrent
//! edit of another field merges (the set is taken as a whole, like the
//! name), a taken name becomes a conflict name (for any entry), an edit
//! beats a delete (the node comes back with all its entries), and the
//! trash keeps the node under its first entry.
//!
//! Fields at their default (no owner, device 0, a time at the epoch for
//! atime and btime, no extended attributes) are left out of the JSON, so
//! bodies stay small.

use super::{ChunkId, ContentHash, DeviceId, Manifest, NodeId, Timestamp, VersionVector, Xattrs};
use serde::{Deserialize, Serialize};

/// Largest chunk FastCDC may emit (and the server accepts), in bytes.
pub const MAX_CHUNK_LEN: u32 = 4 * 1024 * 1024;
/// How many chunk ids one `chunks/missing` request may carry.
pub const MAX_MISSING_QUERY: usize = 10_000;
/// How many operations one commit request may carry.
pub const MAX_COMMIT_OPS: usize = 1_000;
/// Largest page of a pull.
pub const MAX_PULL_LIMIT: u32 = 5_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
    /// Human name of the device being registered ("laptop"). Ignored when
    /// `device_id` names an existing device: that device keeps its name.
    pub device: String,
    /// Log in again as this already registered device of the account (a
    /// re-login after its refresh token was refused), instead of
    /// registering a new one, so the device keeps its identity and its
    /// local cache. A device id that is unknown, revoked, or another
    /// account's is refused with 403 `unknown_device` (no new device is
    /// registered; log in without it for that); a revoked device of the
    /// account is reinstated by this login (the password proves the
    /// owner). Absent = new device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until `access_token` expires.
    pub expires_in: u64,
    pub device_id: DeviceId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Every error response carries this body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code (`invalid_name`, `hash_mismatch`, ...).
    pub error: String,
    /// One human sentence.
    pub message: String,
    /// For an error in one operation of a commit request: its index in
    /// `ops` (0-based), so the client can set exactly that change aside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<usize>,
}

/// What a node is. JSON: the lowercase name (`"file"`, `"char_device"`).
/// New kinds go at the end (the client's cache stores the variant index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A regular file: has content.
    File,
    /// A folder.
    Dir,
    /// A symbolic link: has a target.
    Symlink,
    /// A named pipe (`mkfifo`); metadata only.
    Fifo,
    /// A Unix domain socket's name; metadata only.
    Socket,
    /// A character device node (`mknod c`); metadata and `rdev`.
    CharDevice,
    /// A block device node (`mknod b`); metadata and `rdev`.
    BlockDevice,
}

impl NodeKind {
    /// Every kind, in wire order.
    pub const ALL: [NodeKind; 7] = [
        NodeKind::File,
        NodeKind::Dir,
        NodeKind::Symlink,
        NodeKind::Fifo,
        NodeKind::Socket,
        NodeKind::CharDevice,
        NodeKind::BlockDevice,
    ];

    /// A FIFO, socket or device node: no content and no target.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            NodeKind::Fifo | NodeKind::Socket | NodeKind::CharDevice | NodeKind::BlockDevice
        )
    }

    /// A character or block device: the only kinds with an `rdev`.
    pub fn is_device(self) -> bool {
        matches!(self, NodeKind::CharDevice | NodeKind::BlockDevice)
    }

    /// The name used on the wire and in the server's database.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::File => "file",
            NodeKind::Dir => "dir",
            NodeKind::Symlink => "symlink",
            NodeKind::Fifo => "fifo",
            NodeKind::Socket => "socket",
            NodeKind::CharDevice => "char_device",
            NodeKind::BlockDevice => "block_device",
        }
    }

    /// The kind named `s` (see [`NodeKind::as_str`]).
    pub fn from_name(s: &str) -> Option<NodeKind> {
        NodeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Content of one version of a regular file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileContent {
    pub manifest: Manifest,
}

impl FileContent {
    pub fn size(&self) -> u64 {
        self.manifest.total_len()
    }
    /// Identity of the content: BLAKE3 over the manifest's (id, len) list.
    /// FastCDC is deterministic, so equal bytes give equal manifests and
    /// equal hashes; the server computes it itself instead of trusting one.
    pub fn hash(&self) -> ContentHash {
        let mut h = blake3::Hasher::new();
        for c in &self.manifest.chunks {
            h.update(&c.id.0);
            h.update(&c.len.to_le_bytes());
        }
        ChunkId(*h.finalize().as_bytes())
    }
}

/// The synced attributes of a node (what a commit sets); see the module
/// docs for what each means across devices and why ctime is not here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub kind: NodeKind,
    /// Permission bits with setuid (`0o4000`), setgid (`0o2000`) and
    /// sticky (`0o1000`): `0o7777` at most.
    pub mode: u32,
    /// Last modification (content change, or as set by `utimensat`).
    pub mtime: Timestamp,
    /// Last access as set explicitly; omitted at the epoch.
    #[serde(default, skip_serializing_if = "is_epoch")]
    pub atime: Timestamp,
    /// Creation (birth) time; omitted at the epoch.
    #[serde(default, skip_serializing_if = "is_epoch")]
    pub btime: Timestamp,
    /// Numeric owner set on device `ids_from`; `None` (omitted) is the
    /// account's own user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Numeric group set on device `ids_from`; `None` (omitted) is the
    /// account user's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// The device that set the numeric `uid`/`gid`; `None` when both are
    /// `None`. The server fills in the committing device when a numeric id
    /// comes without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids_from: Option<DeviceId>,
    /// Device number (Linux `dev_t` encoding, `makedev`) of a character or
    /// block device; 0 (omitted) for every other kind.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u32,
    /// Files only: the content. Every other kind carries `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<FileContent>,
    /// Symlinks only: the target, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
    /// Extended attributes (`user.*`, `trusted.*`, `security.*`), values
    /// in base64; omitted when there are none. Rules: [`Xattrs`].
    #[serde(default, skip_serializing_if = "Xattrs::is_empty")]
    pub xattrs: Xattrs,
    /// Set by the server on a conflict copy it made (see
    /// [`super::ConflictMark`]); a device clears it when the user renames
    /// or resolves the copy. Omitted on every other node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<super::ConflictMark>,
}

fn is_epoch(t: &Timestamp) -> bool {
    *t == Timestamp::EPOCH
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl NodeMeta {
    /// A node of `kind` with `mode`, modified (and born and accessed) at
    /// `mtime`, owned by the account's user, without content or target.
    pub fn new(kind: NodeKind, mode: u32, mtime: Timestamp) -> Self {
        NodeMeta {
            kind,
            mode,
            mtime,
            atime: mtime,
            btime: mtime,
            uid: None,
            gid: None,
            ids_from: None,
            rdev: 0,
            content: None,
            symlink_target: None,
            xattrs: Xattrs::new(),
            conflict: None,
        }
    }

    /// Size in bytes: the content's, the target's length, else 0.
    pub fn size(&self) -> u64 {
        match (&self.content, &self.symlink_target) {
            (Some(c), _) => c.size(),
            (None, Some(t)) => t.len() as u64,
            _ => 0,
        }
    }
}

/// One more directory entry of a node: a hard link (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Link {
    /// The folder holding the entry.
    pub parent: NodeId,
    /// The entry's name in it.
    pub name: String,
}

/// How many directory entries (hard links) one node may have, as ext4
/// (`EMLINK` beyond).
pub const MAX_LINKS: usize = 65_000;

/// A node as the server has it, with its live entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: NodeId,
    /// Parent folder of the node's first entry; `None` only for the root.
    pub parent: Option<NodeId>,
    /// The first entry's name.
    pub name: String,
    /// The node's other entries (hard links; never for a folder), in
    /// (parent, name) order; empty (omitted) for most nodes, and for a
    /// deleted one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    pub deleted: bool,
    pub meta: NodeMeta,
    pub vv: VersionVector,
    /// Position in the account's change log of this node's last change.
    pub seq: u64,
}

/// One change a device pushes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitOp {
    pub node_id: NodeId,
    /// The version vector this device last saw for the node (empty for a
    /// node it created).
    pub base: VersionVector,
    /// The node's state as this device last saw it on the server, the base
    /// of the field-by-field merge (see [`super::SeenState`]): the op
    /// changes the fields in which its state differs from this one, and
    /// only those. `None` (omitted) for a node this device created and
    /// has no answer for yet: the op then changes every field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<super::SeenState>,
    pub change: NodeChange,
}

/// One change of a node.
// `Upsert` is the usual case and `Delete` empty: a body decoded once per op,
// not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NodeChange {
    /// Create the node or update it to this state (a rename is an upsert
    /// with a new parent or name). Every chunk of the content must have
    /// been uploaded by this account before.
    Upsert {
        parent: NodeId,
        name: String,
        /// Every other entry the node has (hard links), as a whole: an
        /// entry left out is unlinked. Folders carry none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        links: Vec<Link>,
        meta: NodeMeta,
    },
    /// Move the node to the trash (tombstone). A folder must have no live
    /// entries.
    Delete,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitRequest {
    pub ops: Vec<CommitOp>,
}

/// What happened to one op. Ops are applied in order, each in its own
/// transaction; the results come in the same order.
// `ConflictCopy` holds two records, the others one: a body decoded once
// per op and matched at once, not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommitOutcome {
    /// Applied as asked (fast-forward). `node` is the new server state.
    Applied { node: NodeRecord },
    /// Applied, but the entry got another name because the asked one was
    /// taken by a different node (`<stem> (conflict <device> <time>)<.ext>`).
    Renamed { node: NodeRecord },
    /// Concurrent content edit: the server kept its version under the
    /// node, and stored this commit's content as a new node beside it.
    ConflictCopy { node: NodeRecord, copy: NodeRecord },
    /// Not applied; `node` is the server state the device should adopt
    /// (e.g. a delete lost against a concurrent edit: the edit wins).
    Superseded { node: NodeRecord },
    /// Deleting a node the server never had: nothing to do.
    AlreadyGone,
    /// The op created a node the server already had in another form: the
    /// same name in the same folder, the same kind and the same content
    /// (equal content hash for files, equal target for symlinks, any
    /// folder). No copy is made: the op's node id becomes an alias of
    /// `node` (later ops naming either id reach `node`), and the device
    /// should take `node.node_id` for its node.
    Merged { node: NodeRecord },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitResponse {
    pub results: Vec<CommitOutcome>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingChunksRequest {
    pub ids: Vec<ChunkId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingChunksResponse {
    /// The ids this account must still upload (a chunk another account
    /// stored still has to be proven by upload: knowing a hash is not
    /// possession).
    pub missing: Vec<ChunkId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PullResponse {
    /// Changed nodes with `seq > cursor`, ascending by `seq`.
    pub changes: Vec<NodeRecord>,
    /// Cursor to pass next time.
    pub cursor: u64,
    pub has_more: bool,
}

/// `GET /api/v1/account/space`: room for the account, what `statfs(2)`
/// on a mount reports (`df`). Bytes throughout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceReport {
    /// Sum of the sizes of the account's live files (before
    /// deduplication; trash and old versions not counted).
    pub used_bytes: u64,
    /// Live nodes of the account, the root folder included.
    pub nodes: u64,
    /// The account's quota; `None` (omitted) when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
    /// Room left for the account: its quota less what it uses, or, without
    /// a quota, the free space of the server's chunk storage; `None`
    /// (omitted) when unbounded (an object store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_meta_round_trips_every_attribute_and_omits_defaults() {
        let t = |sec, nsec| Timestamp { sec, nsec };
        let full = NodeMeta {
            kind: NodeKind::CharDevice,
            mode: 0o4755,
            mtime: t(-1, 250_000_000),
            atime: t(10_413_792_000, 7),
            btime: t(1_700_000_000, 999_999_999),
            uid: Some(41_234),
            gid: Some(0),
            ids_from: Some(DeviceId(uuid::Uuid::from_bytes([3; 16]))),
            rdev: 0x0103,
            content: None,
            symlink_target: None,
            conflict: None,
            xattrs: [("security.selinux".to_string(), b"u:r\0".to_vec())]
                .into_iter()
                .collect(),
        };
        let json = serde_json::to_string(&full).unwrap();
        assert!(json.contains(r#""kind":"char_device""#), "{json}");
        assert!(
            json.contains(r#""xattrs":{"security.selinux":"dTpyAA=="}"#),
            "{json}"
        );
        assert!(
            json.contains(r#""mtime":{"sec":-1,"nsec":250000000}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<NodeMeta>(&json).unwrap(), full);

        let mut plain = NodeMeta::new(NodeKind::Dir, 0o755, t(5, 0));
        plain.atime = Timestamp::EPOCH;
        plain.btime = Timestamp::EPOCH;
        let json = serde_json::to_string(&plain).unwrap();
        assert_eq!(
            json, r#"{"kind":"dir","mode":493,"mtime":{"sec":5,"nsec":0}}"#,
            "defaults are left out"
        );
        assert_eq!(serde_json::from_str::<NodeMeta>(&json).unwrap(), plain);
    }

    #[test]
    fn links_travel_in_records_and_upserts_and_are_omitted_when_none() {
        let node = NodeId::random();
        let mut rec = NodeRecord {
            node_id: node,
            parent: Some(NodeId::ROOT),
            name: "f".into(),
            links: Vec::new(),
            deleted: false,
            meta: NodeMeta::new(NodeKind::File, 0o644, Timestamp::EPOCH),
            vv: VersionVector::default(),
            seq: 1,
        };
        let json = serde_json::to_string(&rec).unwrap();
        assert!(!json.contains("links"), "{json}");
        rec.links = vec![Link {
            parent: NodeId::ROOT,
            name: "g".into(),
        }];
        let json = serde_json::to_string(&rec).unwrap();
        assert!(
            json.contains(&format!(
                r#""links":[{{"parent":"{}","name":"g"}}]"#,
                NodeId::ROOT
            )),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<NodeRecord>(&json).unwrap(), rec);
        let op = r#"{"op":"upsert","parent":"00000000-0000-0000-0000-000000000000",
            "name":"f","links":[{"parent":"00000000-0000-0000-0000-000000000000","name":"g"}],
            "meta":{"kind":"file","mode":420,"mtime":{"sec":0,"nsec":0}}}"#;
        let NodeChange::Upsert { links, .. } = serde_json::from_str(op).unwrap() else {
            panic!("an upsert");
        };
        assert_eq!(links.len(), 1);
    }

    #[test]
    fn kind_names_are_the_wire_names() {
        for k in NodeKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(NodeKind::from_name(k.as_str()), Some(k));
            assert_eq!(k.is_device(), k.as_str().ends_with("_device"));
        }
        assert_eq!(NodeKind::from_name("pipe"), None);
        assert!(NodeKind::Fifo.is_special() && !NodeKind::Symlink.is_special());
    }
}
