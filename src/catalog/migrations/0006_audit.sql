-- Who received what (the artifact firewall's audit trail): one row per
-- release, client address, token and user agent per write batch, with how
-- many deliveries it stands for; pruned after `audit.retain`.
CREATE TABLE audit (
    at_ms BIGINT NOT NULL,
    remote TEXT NOT NULL,
    path TEXT NOT NULL,
    package TEXT,
    version TEXT,
    sha256 TEXT,
    client TEXT,
    token TEXT,
    user_agent TEXT,
    deliveries BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX audit_release ON audit (package, version);
CREATE INDEX audit_sha256 ON audit (sha256);
CREATE INDEX audit_at ON audit (at_ms);
