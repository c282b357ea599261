-- Protocol 2: owner, group, the device that set numeric ids, device
-- number, and modification/access/birth times as seconds + nanoseconds
-- (any time, exactly), replacing the clamped `mtime_ns`.
--
-- Existing rows: no numeric owner (the account's user), rdev 0, and
-- mtime split with floor semantics (-250 ms is sec -1, nsec 750000000);
-- the expressions use only `/` and `%` on `mtime_ns` itself, so even
-- i64::MIN and i64::MAX convert without overflow. Access and birth time
-- start as the modification time (what the client cache's own upgrade
-- does).

ALTER TABLE nodes ADD COLUMN uid INTEGER;
ALTER TABLE nodes ADD COLUMN gid INTEGER;
ALTER TABLE nodes ADD COLUMN ids_from BLOB;
ALTER TABLE nodes ADD COLUMN rdev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN mtime_sec INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN mtime_nsec INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN atime_sec INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN atime_nsec INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN btime_sec INTEGER NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN btime_nsec INTEGER NOT NULL DEFAULT 0;

UPDATE nodes SET
    mtime_sec = mtime_ns / 1000000000
        - (CASE WHEN mtime_ns % 1000000000 < 0 THEN 1 ELSE 0 END),
    mtime_nsec = ((mtime_ns % 1000000000) + 1000000000) % 1000000000;
UPDATE nodes SET
    atime_sec = mtime_sec, atime_nsec = mtime_nsec,
    btime_sec = mtime_sec, btime_nsec = mtime_nsec;

ALTER TABLE nodes DROP COLUMN mtime_ns;
