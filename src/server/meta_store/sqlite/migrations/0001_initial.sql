-- The first schema: exactly the hand-rolled migration 1 of the code before
-- sqlx migrations (a database at `PRAGMA user_version = 1`). Never edit an
-- applied migration (sqlx checks its checksum): add the next file instead.

CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    next_seq      INTEGER NOT NULL DEFAULT 1,
    created_ns    INTEGER NOT NULL
);
CREATE TABLE devices (
    id         BLOB PRIMARY KEY,
    account    INTEGER NOT NULL REFERENCES accounts(id),
    name       TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    revoked    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX devices_account ON devices(account);
CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY,
    account    INTEGER NOT NULL REFERENCES accounts(id),
    device     BLOB NOT NULL REFERENCES devices(id),
    kind       TEXT NOT NULL,
    expires_ns INTEGER NOT NULL
);
CREATE INDEX tokens_expiry ON tokens(expires_ns);
CREATE TABLE nodes (
    account        INTEGER NOT NULL REFERENCES accounts(id),
    id             BLOB NOT NULL,
    kind           TEXT NOT NULL,
    mode           INTEGER NOT NULL,
    mtime_ns       INTEGER NOT NULL,
    size           INTEGER NOT NULL,
    manifest       TEXT,
    content_hash   BLOB,
    symlink_target TEXT,
    vv             TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, id)
);
CREATE INDEX nodes_seq ON nodes(account, seq);
CREATE TABLE entries (
    account INTEGER NOT NULL,
    node    BLOB NOT NULL,
    parent  BLOB NOT NULL,
    name    TEXT NOT NULL,
    live    INTEGER NOT NULL,
    PRIMARY KEY (account, node),
    FOREIGN KEY (account, node) REFERENCES nodes(account, id)
);
CREATE UNIQUE INDEX entries_live_name ON entries(account, parent, name) WHERE live = 1;
CREATE TABLE versions (
    account      INTEGER NOT NULL,
    node         BLOB NOT NULL,
    version      INTEGER NOT NULL,
    manifest     TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_hash BLOB NOT NULL,
    device       BLOB NOT NULL,
    created_ns   INTEGER NOT NULL,
    PRIMARY KEY (account, node, version),
    FOREIGN KEY (account, node) REFERENCES nodes(account, id)
);
CREATE TABLE account_chunks (
    account    INTEGER NOT NULL REFERENCES accounts(id),
    chunk      BLOB NOT NULL,
    len        INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    PRIMARY KEY (account, chunk)
);
