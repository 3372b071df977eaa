-- Who received what: one row per artifact served (the artifact firewall's
-- audit trail), pruned after `audit.retain`.
CREATE TABLE audit (
    at_ms BIGINT NOT NULL,
    remote TEXT NOT NULL,
    path TEXT NOT NULL,
    package TEXT,
    version TEXT,
    sha256 TEXT,
    client TEXT,
    token TEXT,
    user_agent TEXT
);
CREATE INDEX audit_release ON audit (package, version);
CREATE INDEX audit_sha256 ON audit (sha256);
CREATE INDEX audit_at ON audit (at_ms);
