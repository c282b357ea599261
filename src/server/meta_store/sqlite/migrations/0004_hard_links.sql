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

-- Names are unique among the live entries of a folder, first entries and
-- links alike: the engine refuses a second one, as the unique indexes do
-- within each table.
CREATE TRIGGER links_name_free BEFORE INSERT ON links
WHEN EXISTS (SELECT 1 FROM entries e WHERE e.account = NEW.account
             AND e.parent = NEW.parent AND e.name = NEW.name AND e.live = 1)
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: a live entry has this name');
END;
CREATE TRIGGER entries_name_free_insert BEFORE INSERT ON entries
WHEN NEW.live = 1 AND EXISTS (SELECT 1 FROM links l WHERE l.account = NEW.account
             AND l.parent = NEW.parent AND l.name = NEW.name)
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: a link has this name');
END;
CREATE TRIGGER entries_name_free_update BEFORE UPDATE ON entries
WHEN NEW.live = 1 AND EXISTS (SELECT 1 FROM links l WHERE l.account = NEW.account
             AND l.parent = NEW.parent AND l.name = NEW.name)
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: a link has this name');
END;
