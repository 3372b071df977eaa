-- Hits per cache entry, reported with its accesses, for the cache API
-- (GET /api/v1/cache); and the entries of one artifact path, which that
-- API lists and deletes by.
ALTER TABLE entries ADD COLUMN hits BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS entries_remote_path ON entries (remote, path);
