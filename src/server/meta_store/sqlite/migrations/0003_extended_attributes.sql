-- Protocol 3: a node's extended attributes (`user.*`, `trusted.*`,
-- `security.*`), as the JSON object of `NodeMeta::xattrs` (name → base64
-- value); NULL when the node has none, which is every existing row. A
-- node holds at most 4 KiB of them (validated before they are stored), so
-- one column read with the node is enough.

ALTER TABLE nodes ADD COLUMN xattrs TEXT;
