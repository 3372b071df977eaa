CREATE TABLE IF NOT EXISTS artifacts (
    remote       TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    size         BIGINT  NOT NULL,
    sha256       TEXT    NOT NULL,
    content_type TEXT,
    fetched_at   BIGINT  NOT NULL,
    last_access  BIGINT  NOT NULL,
    local        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (remote, path)
);
CREATE INDEX IF NOT EXISTS artifacts_last_access ON artifacts (last_access);
