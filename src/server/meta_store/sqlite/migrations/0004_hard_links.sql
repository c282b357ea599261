-- Protocol 3: hard links. A node's entries beyond its first (`entries`)
-- live in `links`, one row per live entry, so that a name lookup or an
-- emptiness check of a folder sees every entry; `nodes.links` holds the
-- same set as the record serves it (JSON `[{"parent", "name"}]`, in
-- (parent, name) order; NULL when empty). Both are written together by
-- `write_node`; a deleted node has none.
--
-- Existing rows: no links (every node had one entry).

ALTER TABLE nodes ADD COLUMN links TEXT;
CREATE TABLE links (
    account INTEGER NOT NULL,
    node    BLOB NOT NULL,
    parent  BLOB NOT NULL,
    name    TEXT NOT NULL,
    PRIMARY KEY (account, parent, name),
    FOREIGN KEY (account, node) REFERENCES nodes(account, id)
);
CREATE INDEX links_node ON links(account, node);
