//! `GET /api/v1/openapi.json`: an OpenAPI 3.0 description of the API,
//! written by hand next to the routes it describes.

use axum::Json;
use serde_json::{json, Value};

fn json_body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn ok_json(schema: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}})
}

/// The device and session routes (a separate `json!`: one macro call
/// for the whole document exceeds the macro recursion limit).
fn session_paths() -> Value {
    json!({
            "/api/v1/auth/logout": {"post": {"summary": "Sign this device out: revoke it and delete its tokens",
                "responses": {"204": {"description": "signed out"}, "401": error("unauthorized")}}},
            "/api/v1/devices": {"get": {"summary": "The account's devices, oldest first",
                "responses": {"200": ok_json("DeviceList"), "401": error("unauthorized")}}},
            "/api/v1/devices/{id}/revoke": {"post": {"summary": "Revoke a device: its next request gets 401 device_revoked",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
                "responses": {"204": {"description": "revoked (or already revoked)"}, "400": error("bad_request: not a device id"),
                    "401": error("unauthorized"), "404": error("not_found: no such device in this account")}}},
            "/api/v1/account/password": {"post": {"summary": "Change the password; signs every other device out",
                "requestBody": json_body("PasswordChange"),
                "responses": {"200": ok_json("PasswordChanged"), "400": error("bad_request: empty or over 1024 bytes"),
                    "401": error("unauthorized"), "403": error("wrong_password")}}}
    })
}

/// `POST /api/v1/chunks/batch` (protocol 5; framing in
/// `protocol::chunk_batch`).
fn batch_paths() -> Value {
    json!({
            "/api/v1/chunks/batch": {"post": {"summary": "Download several chunks this account uploaded in one answer",
                "description": format!("Answers one frame per distinct id, in the order of first appearance: the id's 32 raw bytes, \
                    the chunk's plain length as a 4-byte big-endian integer, then that many plain bytes. At most {} distinct ids and \
                    {} bytes of chunks per request. Every id must be a chunk this account uploaded (404 not_found otherwise, \
                    as for GET /api/v1/chunks/{{hex}}).", crate::protocol::MAX_BATCH_CHUNKS, crate::protocol::MAX_BATCH_BYTES),
                "requestBody": json_body("ChunkBatchRequest"),
                "responses": {"200": {"description": "the frames", "content": {(crate::protocol::BATCH_CONTENT_TYPE): {"schema": {"type": "string", "format": "binary"}}}},
                    "401": error("unauthorized / token_expired"), "404": error("not_found: a chunk this account did not upload"),
                    "413": error("batch_too_large: too many ids or bytes")}}}
    })
}

/// `GET /api/v1/sync/ws`, the push channel (`server::push`).
fn push_paths() -> Value {
    json!({
            "/api/v1/sync/ws": {"get": {"summary": "Push channel: a WebSocket that tells when the account's change log advances",
                "description": "Upgrade to a WebSocket (authenticated like every route: the bearer token goes in the upgrade request). \
                    The server sends text messages of JSON, {\"type\": \"changed\", \"cursor\": N, \"device\": ID}: the account's \
                    change-log head at once on connect, then whenever it advances (never the changes themselves: pull them with \
                    GET /api/v1/sync/pull from your cursor; bursts coalesce to the newest cursor; device, when present, is the \
                    device whose commit moved it). Unknown message types are to be ignored. The server pings every 10 s and \
                    closes a socket silent for 30 s; when the session ends (token expired, device revoked) it closes with code \
                    4401 and the error code as reason: refresh the token and connect again. A device may hold 4 sockets open, \
                    an account 64; beyond, 429 too_many_sockets before the upgrade. The client sends only control frames: \
                    a frame over 4096 bytes is closed with 1009, a protocol violation with 1002 or 1007.",
                "parameters": [
                    {"name": "Connection", "in": "header", "required": true, "schema": {"type": "string", "example": "Upgrade"}},
                    {"name": "Upgrade", "in": "header", "required": true, "schema": {"type": "string", "example": "websocket"}}],
                "responses": {"101": {"description": "switching to the WebSocket protocol"},
                    "400": error("bad_request: not a WebSocket upgrade"), "401": error("unauthorized / token_expired / device_revoked"),
                    "429": error("too_many_sockets: this device or account has as many push sockets open as allowed")}}}
    })
}

fn session_schemas() -> Value {
    json!({
                "ChunkBatchRequest": {"type": "object", "required": ["ids"],
                    "properties": {"ids": {"type": "array", "maxItems": crate::protocol::MAX_BATCH_CHUNKS, "items": {"$ref": "#/components/schemas/ChunkId"}}}},
                "DeviceInfo": {"type": "object", "required": ["id", "name", "platform", "created", "revoked", "current"],
                    "properties": {"id": {"type": "string", "format": "uuid"}, "name": {"type": "string"},
                        "platform": {"type": "string", "description": "User-Agent at the last login or refresh"},
                        "created": {"type": "integer", "description": "seconds since the Unix epoch"},
                        "last_seen": {"type": "integer", "nullable": true, "description": "seconds since the Unix epoch, updated at most once a minute"},
                        "revoked": {"type": "boolean"}, "current": {"type": "boolean", "description": "the device making the request"}}},
                "DeviceList": {"type": "object", "required": ["devices"],
                    "properties": {"devices": {"type": "array", "items": {"$ref": "#/components/schemas/DeviceInfo"}}}},
                "PasswordChange": {"type": "object", "required": ["current_password", "new_password"],
                    "properties": {"current_password": {"type": "string"}, "new_password": {"type": "string", "minLength": 1}}},
                "PasswordChanged": {"type": "object", "required": ["signed_out_devices"],
                    "properties": {"signed_out_devices": {"type": "integer", "minimum": 0}}}
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut doc = core_document();
    for (section, extra) in [
        ("paths", session_paths()),
        ("paths", batch_paths()),
        ("paths", push_paths()),
        ("schemas", session_schemas()),
    ] {
        let target = if section == "paths" {
            &mut doc["paths"]
        } else {
            &mut doc["components"]["schemas"]
        };
        if let (Some(t), Value::Object(extra)) = (target.as_object_mut(), extra) {
            t.extend(extra);
        }
    }
    doc
}

fn core_document() -> Value {
    let hex = json!({"name": "hex", "in": "path", "required": true,
        "description": "BLAKE3 hash of the chunk's plain bytes, 64 hex digits",
        "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}});
    let xattrs = json!({"type": "object",
        "description": "extended attributes (protocol 3): name (user.*, trusted.* or security.*; not user.nimbus.*; 1..=255 bytes; user.* on files and folders only) → value in base64 (at most 65536 bytes); names plus values at most 4096 bytes per node; omitted when empty",
        "additionalProperties": {"type": "string", "format": "byte"}});
    let bytes = json!({"description": "OK", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Nimbus", "version": env!("CARGO_PKG_VERSION"),
            "description": "Cloud drive API. Every error is an ErrorBody. Commit rules: see the `nimbus::server` module documentation. Protocol version: clients send `Nimbus-Protocol: <version>` on every request, and every answer carries the server's; a request naming another version (or not a number) is refused on every route with 400 `protocol_version`; a request without the header is served as the server's version.",
            "x-nimbus-protocol": crate::protocol::PROTOCOL_VERSION},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"security": [], "summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": {"security": [], "summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain"}}}},
            "/api/v1/auth/login": {"post": {"security": [], "summary": "Log in: register a device, or new tokens for an existing one",
                "description": "Without device_id, registers a new device named `device`. With device_id (a device of this account), issues new tokens for that device, which keeps its id and name; a revoked device is reinstated and its old tokens are deleted.",
                "requestBody": json_body("LoginRequest"),
                "responses": {"200": ok_json("LoginResponse"), "400": error("bad device name"), "401": error("invalid_credentials"),
                    "403": error("unknown_device: device_id is unknown or another account's (nothing is registered)")}}},
            "/api/v1/auth/refresh": {"post": {"security": [], "summary": "Rotate: a new access token and a new refresh token for the same device",
                "description": "The refresh token sent is used up. Sent again within 60 s while the answer's refresh token is unused, it gets the same answer; otherwise the replay ends the device's session (every token deleted).",
                "requestBody": json_body("RefreshRequest"),
                "responses": {"200": ok_json("LoginResponse"), "401": error("unauthorized, device_revoked, refresh_token_reused")}}},
            "/api/v1/chunks/missing": {"post": {"summary": "Which chunks this account must still upload",
                "requestBody": json_body("MissingChunksRequest"),
                "responses": {"200": ok_json("MissingChunksResponse"), "401": error("unauthorized / token_expired"), "413": error("too many ids")}}},
            "/api/v1/chunks/{hex}": {
                "parameters": [hex],
                "put": {"summary": "Upload a chunk (plain, or zstd with Content-Encoding: zstd)",
                    "requestBody": {"required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": {"204": {"description": "stored (or already stored)"}, "400": error("invalid_chunk_id, hash_mismatch, bad_encoding"),
                        "413": error("larger than the chunk limit"), "415": error("unsupported Content-Encoding")}},
                "get": {"summary": "Download a chunk this account uploaded", "responses": {"200": bytes.clone(), "404": error("not_found")}}},
            "/api/v1/sync/commit": {"post": {"summary": "Apply changes; one outcome per op",
                "requestBody": json_body("CommitRequest"),
                "responses": {"200": ok_json("CommitResponse"),
                    "400": error("invalid_name, invalid_node, invalid_move, root_immutable"),
                    "409": error("parent_not_found, parent_not_dir, missing_chunks, kind_mismatch"),
                    "413": error("too many ops or body too large")}}},
            "/api/v1/sync/pull": {"get": {"summary": "Changes after a cursor",
                "parameters": [
                    {"name": "cursor", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": crate::protocol::MAX_PULL_LIMIT, "default": 1000}}],
                "responses": {"200": ok_json("PullResponse")}}},
            "/api/v1/account/space": {"get": {"summary": "The account's usage and the room left (what statfs on a mount reports)",
                "responses": {"200": ok_json("SpaceReport")}}},
            "/api/v1/files/content": {"get": {"summary": "A file's bytes (Range supported)",
                "parameters": [
                    {"name": "path", "in": "query", "required": true, "schema": {"type": "string"}, "example": "/photos/cat.jpg"},
                    {"name": "Range", "in": "header", "schema": {"type": "string"}, "example": "bytes=0-1023"}],
                "responses": {"200": bytes.clone(), "206": bytes, "400": error("invalid_path, not_a_file"), "404": error("not_found"), "416": error("range_not_satisfiable")}}}
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(&xattrs),
        }
    })
}

/// The body schemas (`components.schemas`); apart from [`document`] so
/// that neither `json!` grows past the macro recursion limit.
fn schemas(xattrs: &Value) -> Value {
    json!({
                "ErrorBody": {"type": "object", "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                        "op": {"type": "integer", "minimum": 0, "description": "index of the commit operation the error is about"}}},
                "LoginRequest": {"type": "object", "required": ["user", "password", "device"],
                    "properties": {"user": {"type": "string"}, "password": {"type": "string"},
                        "device": {"type": "string", "description": "name of a new device (ignored with device_id)"},
                        "device_id": {"type": "string", "format": "uuid", "description": "log in again as this existing device of the account"}}},
                "LoginResponse": {"type": "object", "required": ["access_token", "refresh_token", "expires_in", "device_id"],
                    "properties": {"access_token": {"type": "string"}, "refresh_token": {"type": "string"},
                        "expires_in": {"type": "integer"}, "device_id": {"type": "string", "format": "uuid"}}},
                "RefreshRequest": {"type": "object", "required": ["refresh_token"], "properties": {"refresh_token": {"type": "string"}}},
                "SpaceReport": {"type": "object", "required": ["used_bytes", "nodes"],
                    "properties": {"used_bytes": {"type": "integer", "minimum": 0, "description": "sum of the sizes of the account's live files"},
                        "nodes": {"type": "integer", "minimum": 0, "description": "live nodes, the root included"},
                        "quota_bytes": {"type": "integer", "minimum": 0, "description": "the account's quota; absent without one"},
                        "free_bytes": {"type": "integer", "minimum": 0, "description": "room left (quota less usage, else the chunk storage's free space); absent when unbounded"}}},
                "ChunkId": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "MissingChunksRequest": {"type": "object", "required": ["ids"],
                    "properties": {"ids": {"type": "array", "maxItems": crate::protocol::MAX_MISSING_QUERY, "items": {"$ref": "#/components/schemas/ChunkId"}}}},
                "MissingChunksResponse": {"type": "object", "required": ["missing"],
                    "properties": {"missing": {"type": "array", "items": {"$ref": "#/components/schemas/ChunkId"}}}},
                "VersionVector": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "device id → counter"},
                "Manifest": {"type": "object", "required": ["chunks"], "properties": {"chunks": {"type": "array", "items": {
                    "type": "object", "required": ["id", "len"],
                    "properties": {"id": {"$ref": "#/components/schemas/ChunkId"}, "len": {"type": "integer", "minimum": 1, "maximum": crate::protocol::MAX_CHUNK_LEN}}}}}},
                "Timestamp": {"type": "object", "required": ["sec", "nsec"], "description": "seconds since the Unix epoch (negative before 1970) and nanoseconds within that second",
                    "properties": {"sec": {"type": "integer", "format": "int64"}, "nsec": {"type": "integer", "minimum": 0, "maximum": 999_999_999}}},
                "NodeMeta": {"type": "object", "required": ["kind", "mode", "mtime"],
                    "description": "ctime is not synced (each device's own change time); fields at their default are omitted",
                    "properties": {"kind": {"type": "string", "enum": crate::protocol::NodeKind::ALL.map(|k| k.as_str())},
                        "mode": {"type": "integer", "maximum": 4095, "description": "permission bits with setuid, setgid and sticky"},
                        "mtime": {"$ref": "#/components/schemas/Timestamp"},
                        "atime": {"$ref": "#/components/schemas/Timestamp"},
                        "btime": {"$ref": "#/components/schemas/Timestamp"},
                        "uid": {"type": "integer", "minimum": 0, "description": "numeric owner set on device ids_from; absent: the account's user"},
                        "gid": {"type": "integer", "minimum": 0, "description": "numeric group set on device ids_from; absent: the account user's group"},
                        "ids_from": {"type": "string", "format": "uuid", "description": "the device that set uid/gid (the committing device if absent)"},
                        "rdev": {"type": "integer", "minimum": 0, "description": "device number; char_device and block_device only"},
                        "content": {"type": "object", "required": ["manifest"], "properties": {"manifest": {"$ref": "#/components/schemas/Manifest"}}},
                        "symlink_target": {"type": "string"},
                        "xattrs": xattrs}},
                "NodeRecord": {"type": "object", "required": ["node_id", "name", "deleted", "meta", "vv", "seq"],
                    "properties": {"node_id": {"type": "string", "format": "uuid"}, "parent": {"type": "string", "format": "uuid", "nullable": true},
                        "name": {"type": "string"},
                        "links": {"type": "array", "items": {"$ref": "#/components/schemas/Link"},
                            "description": "the node's other entries (hard links), in (parent, name) order; omitted when none; never for a folder or a deleted node"},
                        "deleted": {"type": "boolean"}, "meta": {"$ref": "#/components/schemas/NodeMeta"},
                        "vv": {"$ref": "#/components/schemas/VersionVector"}, "seq": {"type": "integer"}}},
                "Link": {"type": "object", "required": ["parent", "name"], "description": "one more directory entry of a node (a hard link)",
                    "properties": {"parent": {"type": "string", "format": "uuid"}, "name": {"type": "string"}}},
                "CommitOp": {"type": "object", "required": ["node_id", "base", "change"],
                    "properties": {"node_id": {"type": "string", "format": "uuid"}, "base": {"$ref": "#/components/schemas/VersionVector"},
                        "change": {"type": "object", "required": ["op"], "description": "{op: upsert, parent, name, links, meta} or {op: delete}. An upsert carries every entry of the node: an entry left out of links is unlinked; delete removes the node with all its entries.",
                            "properties": {"op": {"type": "string", "enum": ["upsert", "delete"]}, "parent": {"type": "string", "format": "uuid"},
                                "name": {"type": "string"},
                                "links": {"type": "array", "maxItems": crate::protocol::MAX_LINKS - 1, "items": {"$ref": "#/components/schemas/Link"}},
                                "meta": {"$ref": "#/components/schemas/NodeMeta"}}}}},
                "CommitRequest": {"type": "object", "required": ["ops"],
                    "properties": {"ops": {"type": "array", "maxItems": crate::protocol::MAX_COMMIT_OPS, "items": {"$ref": "#/components/schemas/CommitOp"}}}},
                "CommitOutcome": {"type": "object", "required": ["outcome"],
                    "description": "applied {node} | renamed {node} | conflict_copy {node, copy} | superseded {node} | already_gone",
                    "properties": {"outcome": {"type": "string", "enum": ["applied", "renamed", "conflict_copy", "superseded", "already_gone"]},
                        "node": {"$ref": "#/components/schemas/NodeRecord"}, "copy": {"$ref": "#/components/schemas/NodeRecord"}}},
                "CommitResponse": {"type": "object", "required": ["results"],
                    "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/CommitOutcome"}}}},
                "PullResponse": {"type": "object", "required": ["changes", "cursor", "has_more"],
                    "properties": {"changes": {"type": "array", "items": {"$ref": "#/components/schemas/NodeRecord"}},
                        "cursor": {"type": "integer"}, "has_more": {"type": "boolean"}}}
    })
}

pub async fn openapi() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_described_and_refs_resolve() {
        let doc = super::document();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/healthz",
            "/metrics",
            "/api/v1/auth/login",
            "/api/v1/auth/refresh",
            "/api/v1/auth/logout",
            "/api/v1/devices",
            "/api/v1/devices/{id}/revoke",
            "/api/v1/account/password",
            "/api/v1/chunks/missing",
            "/api/v1/chunks/{hex}",
            "/api/v1/chunks/batch",
            "/api/v1/sync/commit",
            "/api/v1/sync/pull",
            "/api/v1/sync/ws",
            "/api/v1/account/space",
            "/api/v1/files/content",
        ] {
            assert!(paths.contains_key(p), "{p} undocumented");
        }
        let text = doc.to_string();
        for r in text.split("#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling $ref {name}"
            );
        }
    }
}
