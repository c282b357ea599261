-- Protocol 6 (field-by-field conflicts):
-- - `conflict`: the mark of a conflict copy (`NodeMeta::conflict`, JSON of
--   `ConflictMark`); NULL on every other node, which is every existing row.
-- - `node_aliases`: a node id a device created that the server merged into
--   an existing node (two creates of one name with the same content); later
--   ops naming the alias reach the node. Keyed by account first.

ALTER TABLE nodes ADD COLUMN conflict TEXT;

CREATE TABLE node_aliases (
    account INTEGER NOT NULL REFERENCES accounts(id),
    alias BLOB NOT NULL,
    node BLOB NOT NULL,
    PRIMARY KEY (account, alias)
);
