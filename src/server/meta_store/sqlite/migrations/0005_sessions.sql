-- Sessions (issue 13): when a device was last seen and from what client,
-- and refresh-token rotation. A rotated refresh token is kept, marked
-- used (`used_ns`), with its successor sealed under a key only the old
-- token's holder can derive (`successor`), so a retry within the grace
-- window gets the same answer and a later replay is detected as reuse.

ALTER TABLE devices ADD COLUMN last_seen_ns INTEGER;
ALTER TABLE devices ADD COLUMN platform TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN used_ns INTEGER;
ALTER TABLE tokens ADD COLUMN successor BLOB;
CREATE INDEX tokens_device ON tokens(device);
