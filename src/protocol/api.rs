//! JSON bodies of the HTTP API (`/api/v1/...`). The route list and their
//! semantics are documented on `crate::server`.

use super::{ChunkId, ContentHash, DeviceId, Manifest, NodeId, VersionVector};
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
    /// registered; log in without it for that). Absent = new device.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
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

/// The synced attributes of a node (what a commit sets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub kind: NodeKind,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Files only: the content. Folders and symlinks carry `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<FileContent>,
    /// Symlinks only: the target, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symlink_target: Option<String>,
}

impl NodeMeta {
    pub fn size(&self) -> u64 {
        match (&self.content, &self.symlink_target) {
            (Some(c), _) => c.size(),
            (None, Some(t)) => t.len() as u64,
            _ => 0,
        }
    }
}

/// A node as the server has it, with its live entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: NodeId,
    /// Parent folder; `None` only for the root.
    pub parent: Option<NodeId>,
    pub name: String,
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
    pub change: NodeChange,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum NodeChange {
    /// Create the node or update it to this state (a rename is an upsert
    /// with a new parent or name). Every chunk of the content must have
    /// been uploaded by this account before.
    Upsert {
        parent: NodeId,
        name: String,
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
