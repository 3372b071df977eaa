-- Every committed cache entry (by the hex id of its cache key), from which
-- the storage index is rebuilt at start, and the references of cached
-- manifests to the blobs and manifests they name (eviction keeps an image
-- whole).
CREATE TABLE IF NOT EXISTS entries (
    id          TEXT    NOT NULL PRIMARY KEY,
    remote      TEXT    NOT NULL,
    path        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    size        BIGINT  NOT NULL,
    flags       INTEGER NOT NULL,
    last_access BIGINT  NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_remote ON entries (remote);
CREATE TABLE IF NOT EXISTS refs (
    manifest TEXT NOT NULL,
    target   TEXT NOT NULL,
    PRIMARY KEY (manifest, target)
);
